/*
 * DispatchStream sessions.
 *
 * Design: one completion queue (next-type) per stream and no threads. The
 * stream keeps exactly one RECV_MESSAGE batch outstanding from open to the
 * end of the call. Every blocking operation (send, recv, close_send, finish)
 * "pumps" the queue: it handles whatever completes - a finished send, a
 * received reply (queued in memory, and the next receive started at once),
 * the status - until the thing it waits for is done. Because replies are
 * always being read, the server is never blocked writing to us, so a caller
 * that sends 10 000 events before reading any reply cannot deadlock against
 * HTTP/2 flow control; unread replies cost memory until hc_stream_recv takes
 * them.
 *
 * gRPC allows one outstanding batch per op type: sends are synchronous
 * (send_message, close) and receives chain one after another, so that holds.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/support/time.h>

enum stream_tag { TAG_META = 1, TAG_SEND, TAG_RECV, TAG_CLOSE, TAG_STATUS };
#define TAG(t) ((void *)(uintptr_t)(t))

struct hc_stream {
  hc_conn *conn;
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_metadata auth; /* a private copy of the connection's metadata */
  grpc_metadata_array md_in;
  grpc_metadata_array md_trailing;
  grpc_status_code code;
  grpc_slice details;

  /* Outstanding batches. */
  int meta_pending, send_pending, recv_pending, close_pending, status_pending;
  int first_recv;  /* the next receive also takes the initial metadata */
  int send_ok;     /* outcome of the last send */
  int half_closed; /* SEND_CLOSE_FROM_CLIENT was started */
  int eof;         /* no more messages will arrive */
  int oom;         /* a received reply was dropped for lack of memory */
  int finished;    /* hc_stream_finish was called */

  grpc_byte_buffer *send_bb;
  grpc_byte_buffer *recv_bb;

  /* Received replies not yet taken: q[head .. head+len). */
  grpc_byte_buffer **q;
  size_t head, len, cap;
};

static int pending(const hc_stream *s) {
  return s->meta_pending + s->send_pending + s->recv_pending +
         s->close_pending + s->status_pending;
}

static void queue_push(hc_stream *s, grpc_byte_buffer *bb) {
  if (s->head + s->len == s->cap) {
    if (s->head > 0) {
      memmove(s->q, s->q + s->head, s->len * sizeof *s->q);
      s->head = 0;
    } else {
      size_t cap = s->cap > 0 ? s->cap * 2 : 64;
      grpc_byte_buffer **q = realloc(s->q, cap * sizeof *q);
      if (q == NULL) {
        grpc_byte_buffer_destroy(bb);
        s->oom = 1;
        return;
      }
      s->q = q;
      s->cap = cap;
    }
  }
  s->q[s->head + s->len++] = bb;
}

static grpc_byte_buffer *queue_pop(hc_stream *s) {
  if (s->len == 0)
    return NULL;
  grpc_byte_buffer *bb = s->q[s->head++];
  if (--s->len == 0)
    s->head = 0;
  return bb;
}

static void queue_clear(hc_stream *s) {
  grpc_byte_buffer *bb;
  while ((bb = queue_pop(s)) != NULL)
    grpc_byte_buffer_destroy(bb);
}

/* Starts the next receive unless one is outstanding or the stream ended. */
static void start_recv(hc_stream *s) {
  if (s->recv_pending || s->eof)
    return;
  grpc_op ops[2];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  if (s->first_recv) {
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n].data.recv_initial_metadata.recv_initial_metadata = &s->md_in;
    n++;
  }
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n].data.recv_message.recv_message = &s->recv_bb;
  n++;
  s->recv_bb = NULL;
  if (grpc_call_start_batch(s->call, ops, n, TAG(TAG_RECV), NULL) ==
      GRPC_CALL_OK) {
    s->recv_pending = 1;
    s->first_recv = 0;
  } else {
    s->eof = 1;
  }
}

/* Waits for one completion and records it. Only called with something
 * pending, so it cannot wait forever (the call's deadline ends them all). */
static void pump(hc_stream *s) {
  grpc_event ev = grpc_completion_queue_next(
      s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  if (ev.type != GRPC_OP_COMPLETE)
    return;
  switch ((uintptr_t)ev.tag) {
  case TAG_META:
    s->meta_pending = 0;
    break;
  case TAG_SEND:
    s->send_pending = 0;
    s->send_ok = ev.success;
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    break;
  case TAG_RECV:
    s->recv_pending = 0;
    if (ev.success && s->recv_bb != NULL) {
      queue_push(s, s->recv_bb);
      s->recv_bb = NULL;
      start_recv(s);
    } else {
      if (s->recv_bb != NULL)
        grpc_byte_buffer_destroy(s->recv_bb);
      s->recv_bb = NULL;
      s->eof = 1;
    }
    break;
  case TAG_CLOSE:
    s->close_pending = 0;
    break;
  case TAG_STATUS:
    s->status_pending = 0;
    break;
  }
}

hc_err hc_stream_open(hc_conn *c, int deadline_ms, hc_stream **out) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || out == NULL)
    return HC_EINVAL;
  hc_stream *s = calloc(1, sizeof *s);
  if (s == NULL)
    return HC_ENOMEM;
  s->conn = c;
  s->auth = c->auth;
  s->details = grpc_empty_slice();
  s->code = GRPC_STATUS_UNKNOWN;
  s->first_recv = 1;
  grpc_metadata_array_init(&s->md_in);
  grpc_metadata_array_init(&s->md_trailing);
  s->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_slice method = grpc_slice_from_static_string(HC_METHOD_DISPATCH_STREAM);
  s->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS,
                                     s->cq, method, NULL,
                                     hc__deadline(c, deadline_ms), NULL);
  grpc_slice_unref(method);
  if (s->call == NULL) {
    s->eof = 1;
    *out = s;
    return HC_ECLOSED;
  }

  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_INITIAL_METADATA;
  op.data.send_initial_metadata.count = c->has_auth ? 1 : 0;
  op.data.send_initial_metadata.metadata = c->has_auth ? &s->auth : NULL;
  if (grpc_call_start_batch(s->call, &op, 1, TAG(TAG_META), NULL) ==
      GRPC_CALL_OK)
    s->meta_pending = 1;

  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  op.data.recv_status_on_client.trailing_metadata = &s->md_trailing;
  op.data.recv_status_on_client.status = &s->code;
  op.data.recv_status_on_client.status_details = &s->details;
  if (grpc_call_start_batch(s->call, &op, 1, TAG(TAG_STATUS), NULL) ==
      GRPC_CALL_OK)
    s->status_pending = 1;

  start_recv(s);
  *out = s;
  if (!s->meta_pending || !s->status_pending || !s->recv_pending) {
    grpc_call_cancel(s->call, NULL);
    return HC_ECLOSED;
  }
  return HC_OK;
}

hc_err hc_stream_send(hc_stream *s, const hc_event *ev) {
  if (s == NULL || ev == NULL)
    return HC_EINVAL;
  if (s->half_closed || s->finished || s->call == NULL ||
      (!s->status_pending && s->eof))
    return HC_ECLOSED;
  uint8_t *buf;
  size_t len;
  hc_err err = hc__encode_event(ev, &buf, &len);
  if (err != HC_OK)
    return err;
  s->send_bb = hc__bb_from_bytes(buf, len);
  free(buf);
  if (s->send_bb == NULL)
    return HC_ENOMEM;

  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = s->send_bb;
  if (grpc_call_start_batch(s->call, &op, 1, TAG(TAG_SEND), NULL) !=
      GRPC_CALL_OK) {
    grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    return HC_ECLOSED;
  }
  s->send_pending = 1;
  while (s->send_pending)
    pump(s);
  return s->send_ok ? HC_OK : HC_ECLOSED;
}

void hc_stream_reply_free(hc_stream_reply *r) {
  if (r == NULL)
    return;
  free(r->message);
  hc__results_clear(&r->results);
  free(r);
}

hc_err hc_stream_recv(hc_stream *s, hc_stream_reply **out) {
  if (out != NULL)
    *out = NULL;
  if (s == NULL || out == NULL)
    return HC_EINVAL;
  if (s->finished)
    return HC_ECLOSED;
  while (s->len == 0 && !s->eof && !s->oom) {
    start_recv(s);
    if (pending(s) == 0)
      break;
    pump(s);
  }
  if (s->oom) {
    s->oom = 0;
    return HC_ENOMEM;
  }
  grpc_byte_buffer *bb = queue_pop(s);
  if (bb == NULL)
    return HC_ECLOSED;

  uint8_t *bytes;
  size_t len;
  hc_err err = hc__bb_to_bytes(bb, &bytes, &len);
  grpc_byte_buffer_destroy(bb);
  if (err != HC_OK)
    return err;
  Handlers__V1__DispatchStreamReply *pb =
      handlers__v1__dispatch_stream_reply__unpack(NULL, len, bytes);
  free(bytes);
  if (pb == NULL)
    return HC_EPROTO;
  hc_stream_reply *r = calloc(1, sizeof *r);
  if (r == NULL) {
    err = HC_ENOMEM;
  } else {
    r->sequence = pb->sequence;
    r->code = pb->code;
    r->message = hc__strdup(pb->message);
    err = r->message == NULL
              ? HC_ENOMEM
              : hc__results_from_pb(pb->results, pb->n_results, &r->results);
  }
  handlers__v1__dispatch_stream_reply__free_unpacked(pb, NULL);
  if (err != HC_OK) {
    hc_stream_reply_free(r);
    return err;
  }
  *out = r;
  return HC_OK;
}

hc_err hc_stream_close_send(hc_stream *s) {
  if (s == NULL)
    return HC_EINVAL;
  if (s->half_closed || s->call == NULL)
    return HC_OK;
  s->half_closed = 1;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  if (grpc_call_start_batch(s->call, &op, 1, TAG(TAG_CLOSE), NULL) !=
      GRPC_CALL_OK)
    return HC_ECLOSED;
  s->close_pending = 1;
  while (s->close_pending)
    pump(s);
  return HC_OK;
}

hc_err hc_stream_finish(hc_stream *s, hc_status *st) {
  if (s == NULL)
    return HC_EINVAL;
  if (s->finished) {
    hc__status_set(st, -1, "hc_stream_finish called twice");
    return HC_EINVAL;
  }
  hc_stream_close_send(s);
  s->finished = 1;
  queue_clear(s);
  while (pending(s) > 0) {
    pump(s);
    queue_clear(s);
  }
  if (s->call == NULL) {
    hc__status_set(st, -1, "the call could not be created");
    return HC_ECLOSED;
  }
  return hc__status_from_grpc(st, s->code, s->details);
}

void hc_stream_free(hc_stream *s) {
  if (s == NULL)
    return;
  if (s->call != NULL) {
    if (pending(s) > 0)
      grpc_call_cancel(s->call, NULL);
    while (pending(s) > 0)
      pump(s);
    grpc_call_unref(s->call);
  }
  queue_clear(s);
  free(s->q);
  grpc_completion_queue_shutdown(s->cq);
  while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                    NULL)
             .type != GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(s->cq);
  grpc_metadata_array_destroy(&s->md_in);
  grpc_metadata_array_destroy(&s->md_trailing);
  grpc_slice_unref(s->details);
  free(s);
}
