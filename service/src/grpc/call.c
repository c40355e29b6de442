/*
 * Call lifetime and the batch helpers every RPC family builds on.
 */
#include "call.h"
#include "proto_event.h"
#include "rpc.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__thread int rpc_in_cq_thread;

call *call_new(hd_server *srv, grpc_completion_queue *cq, size_t i) {
  call *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  c->srv = srv;
  c->cq = cq;
  c->method = i < srv->n_methods ? srv->methods[i] : NULL;
  c->m_index = c->method ? i : srv->n_methods;
  pthread_mutex_init(&c->lock, NULL);
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->md);
  return c;
}

void call_free(call *c) {
  if (c->call)
    grpc_call_unref(c->call);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->md);
  if (c->recv_buf)
    grpc_byte_buffer_destroy(c->recv_buf);
  if (c->send_buf)
    grpc_byte_buffer_destroy(c->send_buf);
  if (c->method && c->method->secret)
    hd_arena_wipe(c->arena);
  hd_arena_free(c->arena);
  call_release_slot(c);
  hd_server *srv = c->srv;
  int counted = c->counted;
  if (c->counted_watch)
    atomic_fetch_sub(&srv->watches, 1);
  pthread_mutex_destroy(&c->lock);
  free(c);
  /* hd_server_free waits for the last call before stopping the queues. */
  if (counted && atomic_fetch_sub(&srv->in_flight, 1) == 1 &&
      atomic_load(&srv->shutting_down)) {
    pthread_mutex_lock(&srv->lock);
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
  }
}

void call_ref(call *c) {
  atomic_fetch_add(&c->refs, 1);
}

void call_unref(call *c) {
  if (atomic_fetch_sub(&c->refs, 1) == 1)
    call_free(c);
}

void rpc_tag_publish(rpc_tag *t) {
  __atomic_store_n(&t->fn, t->fn, __ATOMIC_RELEASE);
}

int call_start_batch(call *c, const grpc_op *ops, size_t n, rpc_tag *t) {
  call_ref(c);
  rpc_tag_publish(t);
  if (grpc_call_start_batch(c->call, ops, n, t, NULL) != GRPC_CALL_OK) {
    hd_log(HD_LOG_WARN, "grpc_call_start_batch refused a batch");
    call_unref(c);
    return -1;
  }
  return 0;
}

void call_on_batch_done(void *owner, int ok) {
  (void)ok;
  call_unref(owner);
}

static void on_send_done(void *owner, int ok) {
  call *c = owner;
  (void)ok;
  grpc_byte_buffer_destroy(c->send_buf);
  c->send_buf = NULL;
  call_unref(c);
}

void call_add_initial_metadata(call *c, grpc_op *ops, size_t *n) {
  if (c->md_sent)
    return;
  c->md_sent = 1;
  memset(&ops[*n], 0, sizeof(ops[*n]));
  ops[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
  (*n)++;
}

void call_add_close(call *c, grpc_op *ops, size_t *n) {
  if (c->close_started)
    return;
  c->close_started = 1;
  memset(&ops[*n], 0, sizeof(ops[*n]));
  ops[*n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[*n].data.recv_close_on_server.cancelled = &c->cancelled;
  (*n)++;
}

void call_release_slot(call *c) {
  if (atomic_exchange(&c->holds_slot, 0))
    atomic_fetch_sub(&c->srv->holding_slots, 1);
}

void call_count(call *c, int code) {
  call_release_slot(c);
  hd_metrics_call(c->method ? (int)c->m_index : HD_METRICS_METHODS - 1, code);
}

void call_finish(call *c, grpc_status_code code, const char *fmt, ...) {
  char msg[RPC_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  call_count(c, code);
  grpc_slice details = grpc_slice_from_copied_string(msg);
  grpc_op ops[3];
  size_t n = 0;
  call_add_initial_metadata(c, ops, &n);
  call_add_close(c, ops, &n);
  memset(&ops[n], 0, sizeof(ops[n]));
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = code;
  ops[n].data.send_status_from_server.status_details = &details;
  n++;
  c->t_status = (rpc_tag){call_on_batch_done, c};
  call_start_batch(c, ops, n, &c->t_status);
  grpc_slice_unref(details);
  if (code != GRPC_STATUS_OK)
    hd_log(HD_LOG_DEBUG, "call ended with status %d: %s", code, msg);
}

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  grpc_slice s = grpc_slice_malloc(len);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

void call_send_reply(call *c, const ProtobufCMessage *msg) {
  grpc_op ops[4];
  size_t n = 0;
  call_count(c, GRPC_STATUS_OK);
  c->send_buf = rpc_pack(msg);
  call_add_initial_metadata(c, ops, &n);
  call_add_close(c, ops, &n);
  memset(&ops[n], 0, 2 * sizeof(ops[0]));
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = c->send_buf;
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n++].data.send_status_from_server.status = GRPC_STATUS_OK;
  c->t_send = (rpc_tag){on_send_done, c};
  if (call_start_batch(c, ops, n, &c->t_send) != 0) {
    grpc_byte_buffer_destroy(c->send_buf);
    c->send_buf = NULL;
  }
}

void call_answer(call *c, hd_err err, const char *msg,
                 const ProtobufCMessage *reply) {
  if (err != HD_OK)
    call_finish(c, hd_proto_status_of(err), "%s",
                msg[0] ? msg : hd_strerror(err));
  else
    call_send_reply(c, reply);
}

int call_start_recv(call *c, rpc_tag_fn *on_recv) {
  grpc_op ops[2];
  size_t n = 0;
  call_add_initial_metadata(c, ops, &n);
  memset(&ops[n], 0, sizeof(ops[n]));
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &c->recv_buf;
  c->t_recv = (rpc_tag){on_recv, c};
  return call_start_batch(c, ops, n, &c->t_recv);
}

void *call_unpack(call *c, grpc_slice body,
                  const ProtobufCMessageDescriptor *desc) {
  void *req = protobuf_c_message_unpack(desc, hd_arena_pb_allocator(c->arena),
                                        GRPC_SLICE_LENGTH(body),
                                        GRPC_SLICE_START_PTR(body));
  if (!req) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                "request is not a valid %s (%zu bytes)", desc->name,
                (size_t)GRPC_SLICE_LENGTH(body));
    return NULL;
  }
  /* No string with a NUL byte (protobuf-c would have cut it there) or, but
   * for the keys RemoveHandler and ListHandlers look up (the control plane
   * checks those), that is not UTF-8: refused naming the field. */
  char msg[RPC_MSG_MAX];
  if (hd_proto_check_request(desc, GRPC_SLICE_START_PTR(body),
                             GRPC_SLICE_LENGTH(body), msg,
                             sizeof(msg)) != HD_OK) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", msg);
    return NULL;
  }
  return req;
}

int64_t call_deadline_ns(const call *c) {
  gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_REALTIME);
  if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_REALTIME)) == 0)
    return 0;
  return (int64_t)d.tv_sec * 1000000000 + d.tv_nsec;
}

grpc_slice rpc_read_all(grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return grpc_empty_slice();
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  return s;
}
