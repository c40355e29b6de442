/*
 * gRPC front on the C core.
 *
 * One completion queue per thread; every call is a `call` struct whose
 * operations complete as tags {fn, owner} on its queue. A call holds one
 * reference per batch in flight and one per dispatch in flight; the last
 * unref releases the grpc_call and the call's arena. Dispatch completions may
 * arrive from other threads (webhooks): grpc_call_start_batch is legal from
 * any thread, and stream state is guarded by the call's mutex.
 */
#include "server.h"
#include "clock.h"

#include "arena.h"
#include "conn_guard.h"
#include "grpc/health/v1/health.pb-c.h"
#include "metrics.h"
#include "proto_event.h"
#include "stats.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define CALLS_REQUESTED_PER_CQ 16
#define MSG_MAX 512
/* After the drain timeout, how long calls get to send what their handlers
 * reported before they are cancelled. */
#define DRAIN_REPLY_MS 500
/* A keepalive ping unanswered this long closes the connection. */
#define KEEPALIVE_TIMEOUT_MS 20000

typedef void tag_fn(void *owner, int ok);
typedef struct tag {
  tag_fn *fn;
  void *owner;
} tag;

typedef enum method {
  M_UNKNOWN,
  M_DISPATCH,
  M_STREAM,
  M_ADD,
  M_REMOVE,
  M_LIST,
  M_STATS,
  M_HEALTH_CHECK,
  M_HEALTH_WATCH
} method;

typedef struct call call;

/* One request of a DispatchStream, queued until its reply can be sent. */
typedef struct stream_item {
  struct stream_item *next;
  call *c;
  uint64_t seq;
  hd_arena *arena;
  hd_event ev;
  int64_t start_ns; /* CLOCK_MONOTONIC, for the latency metric */
  int ready;
  grpc_byte_buffer *reply;
} stream_item;

struct call {
  hd_server *srv;
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array md;
  method m;
  size_t m_index; /* into methods[] when m != M_UNKNOWN */
  int generic;    /* requested with grpc_server_request_call: unknown */
  gpr_timespec deadline;
  int64_t start_ns; /* CLOCK_MONOTONIC when a unary dispatch started */
  atomic_int refs;
  int counted;       /* included in srv->in_flight */
  int counted_watch; /* included in srv->watches */
  int md_sent;
  int close_started; /* RECV_CLOSE_ON_SERVER is in a batch */
  int cancelled;
  tag t_new, t_recv, t_send, t_close, t_status;
  grpc_byte_buffer *recv_buf, *send_buf;
  hd_arena *arena;         /* unary: request and reply */
  hd_results *hop_results; /* results waiting for t_hop */
  tag t_hop;
  hd_event ev;
  /* DispatchStream */
  pthread_mutex_t lock;
  stream_item *head, *tail;
  size_t pending;
  uint64_t next_seq;
  int read_done, send_busy, status_sent, recv_paused, broken;
  /* Health Watch: linked into srv->watchers until it ends */
  call *watch_next;
  int watching, watch_final;
};

typedef void unary_fn(call *c, grpc_slice body);
static unary_fn handle_dispatch, handle_add, handle_remove, handle_list,
    handle_stats, handle_health_check, handle_health_watch;

/* The methods served; unary ones (and Watch, which reads one request) name
 * the function that handles their request. */
static const struct {
  const char *path;
  method m;
  unary_fn *handle;
} methods[] = {
    {"/handlers.v1.Handlers/Dispatch", M_DISPATCH, handle_dispatch},
    {"/handlers.v1.Handlers/DispatchStream", M_STREAM, NULL},
    {"/handlers.v1.Handlers/AddHandler", M_ADD, handle_add},
    {"/handlers.v1.Handlers/RemoveHandler", M_REMOVE, handle_remove},
    {"/handlers.v1.Handlers/ListHandlers", M_LIST, handle_list},
    {"/handlers.v1.Handlers/GetStats", M_STATS, handle_stats},
    {"/grpc.health.v1.Health/Check", M_HEALTH_CHECK, handle_health_check},
    {"/grpc.health.v1.Health/Watch", M_HEALTH_WATCH, handle_health_watch},
};

#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

struct hd_server {
  grpc_server *server;
  void *registered[N_METHODS]; /* grpc_server_register_method handles */
  int n_cq;
  grpc_completion_queue **cqs;
  pthread_t *threads;
  hd_registry *reg;
  hd_control *ctl;
  hd_server_config cfg;
  int port;
  atomic_int in_flight;
  atomic_int watches; /* Health/Watch streams, also in in_flight */
  /* Set just before gRPC's shutdown: until then calls keep being requested,
   * so a call arriving while draining is answered, not left pending. */
  atomic_int grpc_stopping;
  atomic_int shutting_down;
  atomic_int stopped;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int shutdown_done;
  tag t_shutdown;
  int have_token;
  /* Guards token_digest and tls_pending, which SIGHUP replaces. */
  pthread_mutex_t secrets_lock;
  unsigned char token_digest[SHA256_DIGEST_LENGTH];
  int tls;
  /* Handed to gRPC at its next handshake (fetch_tls), then NULL. */
  grpc_ssl_server_certificate_config *tls_pending;
  pthread_mutex_t watch_lock;
  call *watchers;
};

void hd_server_config_init(hd_server_config *cfg) {
  cfg->listen = "127.0.0.1:50051";
  cfg->threads = 0;
  cfg->max_calls = 10000;
  cfg->max_message_bytes = 4 * 1024 * 1024;
  cfg->stream_window = 64;
  cfg->max_topic_path = HD_TOPIC_PATH_DEFAULT;
  cfg->max_connections = 0;
  cfg->idle_timeout_ms = 5 * 60 * 1000;
  cfg->handshake_timeout_ms = 10 * 1000;
  cfg->keepalive_time_ms = 2 * 60 * 1000;
  cfg->max_health_watches = 100;
}

/* ---- call lifetime ---- */

static void call_free(call *c) {
  if (c->call)
    grpc_call_unref(c->call);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->md);
  if (c->recv_buf)
    grpc_byte_buffer_destroy(c->recv_buf);
  if (c->send_buf)
    grpc_byte_buffer_destroy(c->send_buf);
  if (c->m == M_ADD) /* the request may carry a webhook secret */
    hd_arena_wipe(c->arena);
  hd_arena_free(c->arena);
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

static void call_ref(call *c) {
  atomic_fetch_add(&c->refs, 1);
}

static void call_unref(call *c) {
  if (atomic_fetch_sub(&c->refs, 1) == 1)
    call_free(c);
}

/* Starts a batch holding a reference; drops it again if the batch is
 * refused (the call is gone), so the caller never has to. */
/* Hands tag `t` to gRPC: a release store that cq_thread's acquire load
 * pairs with. It costs nothing on x86 and makes visible to ThreadSanitizer
 * the ordering gRPC's own (uninstrumented) synchronisation provides between
 * whatever this thread wrote for the tag and the thread that completes it. */
static void tag_publish(tag *t) {
  __atomic_store_n(&t->fn, t->fn, __ATOMIC_RELEASE);
}

static int start_batch(call *c, const grpc_op *ops, size_t n, tag *t) {
  call_ref(c);
  tag_publish(t);
  if (grpc_call_start_batch(c->call, ops, n, t, NULL) != GRPC_CALL_OK) {
    hd_log(HD_LOG_WARN, "grpc_call_start_batch refused a batch");
    call_unref(c);
    return -1;
  }
  return 0;
}

static void on_batch_done(void *owner, int ok) {
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

static void add_initial_metadata(call *c, grpc_op *ops, size_t *n) {
  if (c->md_sent)
    return;
  c->md_sent = 1;
  memset(&ops[*n], 0, sizeof(ops[*n]));
  ops[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
  (*n)++;
}

/* Unary calls ask for the client's close in their last batch: one batch
 * and one completion fewer per call than a separate RECV_CLOSE_ON_SERVER.
 * (Streams and Watch start it at once: it tells them the client left.) */
static void add_close(call *c, grpc_op *ops, size_t *n) {
  if (c->close_started)
    return;
  c->close_started = 1;
  memset(&ops[*n], 0, sizeof(ops[*n]));
  ops[*n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[*n].data.recv_close_on_server.cancelled = &c->cancelled;
  (*n)++;
}

static void count_call(const call *c, int code) {
  hd_metrics_call(c->m == M_UNKNOWN ? HD_METRICS_METHODS - 1 : (int)c->m_index,
                  code);
}

/* Ends the call with a non-OK status (or OK with no message). */
static void finish_status(call *c, grpc_status_code code, const char *fmt,
                          ...) {
  char msg[MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  count_call(c, code);
  grpc_slice details = grpc_slice_from_copied_string(msg);
  grpc_op ops[3];
  size_t n = 0;
  add_initial_metadata(c, ops, &n);
  add_close(c, ops, &n);
  memset(&ops[n], 0, sizeof(ops[n]));
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = code;
  ops[n].data.send_status_from_server.status_details = &details;
  n++;
  c->t_status = (tag){on_batch_done, c};
  start_batch(c, ops, n, &c->t_status);
  grpc_slice_unref(details);
  if (code != GRPC_STATUS_OK)
    hd_log(HD_LOG_DEBUG, "call ended with status %d: %s", code, msg);
}

static grpc_byte_buffer *pack(const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  grpc_slice s = grpc_slice_malloc(len);
  protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

/* Sends a unary reply and an OK status in one batch. */
static void send_reply(call *c, const ProtobufCMessage *msg) {
  grpc_op ops[4];
  size_t n = 0;
  count_call(c, GRPC_STATUS_OK);
  c->send_buf = pack(msg);
  add_initial_metadata(c, ops, &n);
  add_close(c, ops, &n);
  memset(&ops[n], 0, 2 * sizeof(ops[0]));
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = c->send_buf;
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n++].data.send_status_from_server.status = GRPC_STATUS_OK;
  c->t_send = (tag){on_send_done, c};
  if (start_batch(c, ops, n, &c->t_send) != 0) {
    grpc_byte_buffer_destroy(c->send_buf);
    c->send_buf = NULL;
  }
}

static grpc_slice read_all(grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return grpc_empty_slice();
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  return s;
}

/* The caller's deadline as CLOCK_REALTIME ns; 0 when there is none. */
static int64_t deadline_ns(const call *c) {
  gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_REALTIME);
  if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_REALTIME)) == 0)
    return 0;
  return (int64_t)d.tv_sec * 1000000000 + d.tv_nsec;
}

/* ---- unary methods ---- */

/* Metrics for a dispatch that ran: its results and latency, and the status
 * the caller sees: a reply that leaves after the call's deadline
 * (`deadline`, CLOCK_REALTIME ns, 0: none) reaches it as
 * DEADLINE_EXCEEDED. */
static void count_dispatch(const hd_event *ev, const hd_results *rs,
                           int64_t start_ns, int64_t deadline) {
  for (size_t i = 0, n = hd_results_count(rs); i < n; i++) {
    const hd_result *r = hd_results_at(rs, i);
    hd_metrics_result(r->kind, r->err == HD_OK);
  }
  int late = deadline != 0 && real_ns() >= deadline;
  hd_metrics_dispatch(ev->name,
                      late ? GRPC_STATUS_DEADLINE_EXCEEDED : GRPC_STATUS_OK,
                      mono_ns() - start_ns);
}

/* The part of a call's time kept for sending the reply: handlers get the
 * deadline minus this, so the results of those that answered go back in
 * time even when another one waits until its deadline. A quarter of the
 * time left, from 10 ms to 250 ms (README: "Deadlines"). */
int64_t hd_server_reply_margin_ns(int64_t left_ns) {
  const int64_t lo = 10 * 1000000LL, hi = 250 * 1000000LL;
  int64_t m = left_ns / 4;
  return m < lo ? lo : m > hi ? hi : m;
}

/* Set in the completion-queue threads: results that arrive on another
 * thread (the webhook engine's) hop back to one of them to be sent. */
static __thread int in_cq_thread;

static void reply_with_results(call *c, hd_results *rs) {
  count_dispatch(&c->ev, rs, c->start_ns, deadline_ns(c));
  Handlers__V1__DispatchReply reply = HANDLERS__V1__DISPATCH_REPLY__INIT;
  if (hd_proto_from_results(c->arena, rs, &reply.results, &reply.n_results) !=
      HD_OK)
    finish_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    send_reply(c, &reply.base);
  hd_results_free(rs);
}

static void on_results_hop(void *owner, int ok) {
  call *c = owner;
  hd_results *rs = c->hop_results;
  (void)ok; /* an empty batch: nothing failed, the results still go out */
  c->hop_results = NULL;
  reply_with_results(c, rs);
  call_unref(c);
}

static void dispatch_done(hd_results *rs, void *ud) {
  call *c = ud;
  if (!in_cq_thread) {
    /* An empty batch completes at once on the call's queue: encoding and
     * the gRPC write then run there, not on the webhook engine's thread,
     * which is the busiest one under webhook load. */
    c->hop_results = rs;
    c->t_hop = (tag){on_results_hop, c};
    if (start_batch(c, NULL, 0, &c->t_hop) == 0) {
      call_unref(c);
      return;
    }
    c->hop_results = NULL;
  }
  reply_with_results(c, rs);
  call_unref(c);
}

/* Decodes and starts one dispatch. On failure returns the status to send
 * with a message in `msg`; on success `done(…, done_data)` will run. */
static grpc_status_code start_dispatch(hd_server *srv, hd_arena *a,
                                       grpc_slice body, int64_t deadline,
                                       hd_event *ev, hd_done_fn *done,
                                       void *done_data, char *msg,
                                       size_t msg_size) {
  Handlers__V1__DispatchRequest *req;
  hd_err err =
      hd_proto_decode_dispatch(a, GRPC_SLICE_START_PTR(body),
                               GRPC_SLICE_LENGTH(body), &req, msg, msg_size);
  if (err == HD_OK)
    err = hd_proto_to_event(a, req, ev, msg, msg_size);
  if (err != HD_OK)
    return hd_proto_status_of(err);
  if (ev->topic.path &&
      strlen(ev->topic.path) > (size_t)srv->cfg.max_topic_path) {
    snprintf(
        msg, msg_size,
        "topic_path is %zu bytes, the limit is %d (--max-topic-path-bytes)",
        strlen(ev->topic.path), srv->cfg.max_topic_path);
    return GRPC_STATUS_INVALID_ARGUMENT;
  }
  if (deadline) {
    int64_t left = deadline - real_ns();
    if (left <= 0) {
      snprintf(msg, msg_size, "deadline passed before dispatch");
      return GRPC_STATUS_DEADLINE_EXCEEDED;
    }
    deadline -= hd_server_reply_margin_ns(left);
  }
  ev->deadline_ns = deadline;
  err = hd_registry_dispatch(srv->reg, ev, done, done_data);
  if (err == HD_ENOKEY)
    snprintf(msg, msg_size, "no handler registered for key '%s'", ev->key);
  else if (err != HD_OK)
    snprintf(msg, msg_size, "dispatch failed: %s", hd_strerror(err));
  return hd_proto_status_of(err);
}

static void handle_dispatch(call *c, grpc_slice body) {
  char msg[MSG_MAX];
  call_ref(c); /* held by the dispatch until dispatch_done */
  c->start_ns = mono_ns();
  grpc_status_code st =
      start_dispatch(c->srv, c->arena, body, deadline_ns(c), &c->ev,
                     dispatch_done, c, msg, sizeof(msg));
  if (st != GRPC_STATUS_OK) {
    hd_metrics_dispatch(c->ev.name, st, -1);
    finish_status(c, st, "%s", msg);
    call_unref(c);
  }
}

/* Unpacks the request into the call's arena, or ends the call with
 * INVALID_ARGUMENT naming the expected message and returns NULL. */
static void *unpack_request(call *c, grpc_slice body,
                            const ProtobufCMessageDescriptor *desc) {
  void *req = protobuf_c_message_unpack(desc, hd_arena_pb_allocator(c->arena),
                                        GRPC_SLICE_LENGTH(body),
                                        GRPC_SLICE_START_PTR(body));
  if (!req) {
    finish_status(c, GRPC_STATUS_INVALID_ARGUMENT,
                  "request is not a valid %s (%zu bytes)", desc->name,
                  (size_t)GRPC_SLICE_LENGTH(body));
    return NULL;
  }
  /* No string with a NUL byte (protobuf-c would have cut it there) or, but
   * for the keys RemoveHandler and ListHandlers look up (the control plane
   * checks those), that is not UTF-8: refused naming the field. */
  char msg[MSG_MAX];
  if (hd_proto_check_request(desc, GRPC_SLICE_START_PTR(body),
                             GRPC_SLICE_LENGTH(body), msg,
                             sizeof(msg)) != HD_OK) {
    finish_status(c, GRPC_STATUS_INVALID_ARGUMENT, "%s", msg);
    return NULL;
  }
  return req;
}

/* Sends `reply`, or the status for `err` with the control plane's message. */
static void answer(call *c, hd_err err, const char *msg,
                   const ProtobufCMessage *reply) {
  if (err != HD_OK)
    finish_status(c, hd_proto_status_of(err), "%s",
                  msg[0] ? msg : hd_strerror(err));
  else
    send_reply(c, reply);
}

static void handle_add(call *c, grpc_slice body) {
  char msg[MSG_MAX] = "";
  Handlers__V1__AddHandlerRequest *req =
      unpack_request(c, body, &handlers__v1__add_handler_request__descriptor);
  if (!req)
    return;
  Handlers__V1__AddHandlerReply reply = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;
  hd_err err = hd_control_add(c->srv->ctl, c->arena, req, NULL, &reply, msg,
                              sizeof(msg));
  if (err == HD_OK)
    hd_log(HD_LOG_INFO, "added handler %s under key '%s'", reply.handler_id,
           req->key);
  answer(c, err, msg, &reply.base);
}

static void handle_remove(call *c, grpc_slice body) {
  char msg[MSG_MAX] = "";
  Handlers__V1__RemoveHandlerRequest *req = unpack_request(
      c, body, &handlers__v1__remove_handler_request__descriptor);
  if (!req)
    return;
  if (!req->key[0] || !req->handler_id[0]) {
    finish_status(c, GRPC_STATUS_INVALID_ARGUMENT, "%s is empty",
                  req->key[0] ? "handler_id" : "key");
    return;
  }
  hd_err err = hd_control_remove(c->srv->ctl, req->key, req->handler_id, msg,
                                 sizeof(msg));
  if (err == HD_OK)
    hd_log(HD_LOG_INFO, "removed handler %s from key '%s'", req->handler_id,
           req->key);
  Handlers__V1__RemoveHandlerReply reply =
      HANDLERS__V1__REMOVE_HANDLER_REPLY__INIT;
  answer(c, err, msg, &reply.base);
}

static void handle_list(call *c, grpc_slice body) {
  char msg[MSG_MAX] = "";
  Handlers__V1__ListHandlersRequest *req =
      unpack_request(c, body, &handlers__v1__list_handlers_request__descriptor);
  if (!req)
    return;
  Handlers__V1__ListHandlersReply reply =
      HANDLERS__V1__LIST_HANDLERS_REPLY__INIT;
  hd_err err = hd_control_list(c->srv->ctl, c->arena, req->key, &reply, msg,
                               sizeof(msg));
  answer(c, err, msg, &reply.base);
}

static void handle_stats(call *c, grpc_slice body) {
  if (!unpack_request(c, body, &handlers__v1__get_stats_request__descriptor))
    return;
  Handlers__V1__GetStatsReply reply = HANDLERS__V1__GET_STATS_REPLY__INIT;
  char *text = hd_metrics_render();
  hd_err err = text ? hd_stats_from_text(c->arena, text, &reply) : HD_ENOMEM;
  free(text);
  answer(c, err, err == HD_EINVAL ? "metrics text did not parse" : "",
         &reply.base);
}

/* Handles the request in c->recv_buf and drops the reference the caller
 * holds. */
static void unary_start(call *c) {
  if (!c->recv_buf) {
    finish_status(c, GRPC_STATUS_INVALID_ARGUMENT,
                  "the client sent no request message");
    call_unref(c);
    return;
  }
  grpc_slice body = read_all(c->recv_buf);
  grpc_byte_buffer_destroy(c->recv_buf);
  c->recv_buf = NULL;
  c->arena = hd_arena_new(4096);
  if (!c->arena) {
    finish_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    methods[c->m_index].handle(c, body);
  }
  /* readall gave us our own copy; an AddHandler body may hold a secret. */
  if (c->m == M_ADD)
    explicit_bzero(GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body));
  grpc_slice_unref(body);
  call_unref(c);
}

/* ---- grpc.health.v1 ---- */

static int known_service(const char *name) {
  return name[0] == '\0' || strcmp(name, "handlers.v1.Handlers") == 0;
}

static Grpc__Health__V1__HealthCheckRequest *unpack_health(call *c,
                                                           grpc_slice body) {
  return unpack_request(c, body,
                        &grpc__health__v1__health_check_request__descriptor);
}

#define HEALTH_SERVING                                                         \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define HEALTH_NOT_SERVING                                                     \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define HEALTH_SERVICE_UNKNOWN                                                 \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

static void handle_health_check(call *c, grpc_slice body) {
  Grpc__Health__V1__HealthCheckRequest *req = unpack_health(c, body);
  if (!req)
    return;
  if (!known_service(req->service)) {
    finish_status(c, GRPC_STATUS_NOT_FOUND, "unknown service '%s'",
                  req->service);
    return;
  }
  Grpc__Health__V1__HealthCheckResponse reply =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  reply.status =
      atomic_load(&c->srv->shutting_down) ? HEALTH_NOT_SERVING : HEALTH_SERVING;
  send_reply(c, &reply.base);
}

static void watch_send(call *c, int status, int final);

static void on_watch_sent(void *owner, int ok) {
  call *c = owner;
  pthread_mutex_lock(&c->lock);
  grpc_byte_buffer_destroy(c->send_buf);
  c->send_buf = NULL;
  c->send_busy = 0;
  if (ok && c->watch_final && !c->status_sent)
    watch_send(c, HEALTH_NOT_SERVING, 1);
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

/* Sends one status; `final` also ends the call. Called with c->lock held;
 * a send still in flight defers the final message to on_watch_sent. */
static void watch_send(call *c, int status, int final) {
  if (c->send_busy) {
    c->watch_final |= final;
    return;
  }
  Grpc__Health__V1__HealthCheckResponse msg =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  msg.status = status;
  grpc_op ops[3];
  size_t n = 0;
  c->send_buf = pack(&msg.base);
  add_initial_metadata(c, ops, &n);
  memset(&ops[n], 0, 2 * sizeof(ops[0]));
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = c->send_buf;
  if (final) {
    count_call(c, GRPC_STATUS_OK);
    ops[n++].op = GRPC_OP_SEND_STATUS_FROM_SERVER; /* OK, no details */
    c->status_sent = 1;
  }
  c->send_busy = 1;
  c->t_send = (tag){on_watch_sent, c};
  if (start_batch(c, ops, n, &c->t_send) != 0) {
    c->send_busy = 0;
    grpc_byte_buffer_destroy(c->send_buf);
    c->send_buf = NULL;
  }
}

/* Drops `c` from the watchers, and the reference the list held. */
static void watch_forget(call *c) {
  hd_server *srv = c->srv;
  int found = 0;
  pthread_mutex_lock(&srv->watch_lock);
  for (call **p = &srv->watchers; *p; p = &(*p)->watch_next)
    if (*p == c) {
      *p = c->watch_next;
      found = 1;
      break;
    }
  pthread_mutex_unlock(&srv->watch_lock);
  if (found)
    call_unref(c);
}

static void on_watch_closed(void *owner, int ok) {
  (void)ok;
  watch_forget(owner);
  call_unref(owner);
}

static void handle_health_watch(call *c, grpc_slice body) {
  Grpc__Health__V1__HealthCheckRequest *req = unpack_health(c, body);
  if (!req)
    return;
  hd_server *srv = c->srv;
  int status =
      known_service(req->service) ? HEALTH_SERVING : HEALTH_SERVICE_UNKNOWN;
  pthread_mutex_lock(&srv->watch_lock);
  int stopping = atomic_load(&srv->shutting_down);
  if (!stopping) {
    call_ref(c); /* held by the watcher list */
    c->watch_next = srv->watchers;
    srv->watchers = c;
  }
  pthread_mutex_unlock(&srv->watch_lock);
  pthread_mutex_lock(&c->lock);
  watch_send(c, stopping ? HEALTH_NOT_SERVING : status, stopping);
  pthread_mutex_unlock(&c->lock);
}

/* Shutdown started: every watcher hears NOT_SERVING and its call ends. */
static void watchers_not_serving(hd_server *srv) {
  pthread_mutex_lock(&srv->watch_lock);
  call *list = srv->watchers;
  srv->watchers = NULL;
  pthread_mutex_unlock(&srv->watch_lock);
  while (list) {
    call *c = list;
    list = c->watch_next;
    pthread_mutex_lock(&c->lock);
    watch_send(c, HEALTH_NOT_SERVING, 1);
    pthread_mutex_unlock(&c->lock);
    call_unref(c);
  }
}

/* ---- authentication ---- */

static int needs_token(const hd_server *srv, method m) {
  if (!srv->have_token)
    return 0;
  switch (m) {
  case M_ADD:
  case M_REMOVE:
  case M_LIST:
  case M_STATS:
    return 1;
  case M_DISPATCH:
  case M_STREAM:
    return srv->cfg.auth_dispatch;
  default:
    return 0;
  }
}

/* Compares digests so the time taken says nothing about the token. */
static int token_ok(const hd_server *srv, const grpc_metadata_array *md) {
  static const char prefix[] = "Bearer ";
  const size_t plen = sizeof(prefix) - 1;
  for (size_t i = 0; i < md->count; i++) {
    if (grpc_slice_str_cmp(md->metadata[i].key, "authorization") != 0)
      continue;
    const unsigned char *v = GRPC_SLICE_START_PTR(md->metadata[i].value);
    size_t len = GRPC_SLICE_LENGTH(md->metadata[i].value);
    if (len < plen || strncasecmp((const char *)v, prefix, plen) != 0)
      return 0;
    unsigned char digest[SHA256_DIGEST_LENGTH], want[SHA256_DIGEST_LENGTH];
    SHA256(v + plen, len - plen, digest);
    pthread_mutex_lock((pthread_mutex_t *)&srv->secrets_lock);
    memcpy(want, srv->token_digest, sizeof(want));
    pthread_mutex_unlock((pthread_mutex_t *)&srv->secrets_lock);
    return CRYPTO_memcmp(digest, want, sizeof(digest)) == 0;
  }
  return 0;
}

/* ---- DispatchStream ---- */

static void stream_recv_next(call *c);
static void on_stream_sent(void *owner, int ok);

static void item_free(stream_item *it) {
  if (it->reply)
    grpc_byte_buffer_destroy(it->reply);
  hd_arena_free(it->arena);
  free(it);
}

static void item_set_reply(stream_item *it, int code, const char *msg,
                           const hd_results *rs) {
  Handlers__V1__DispatchStreamReply r =
      HANDLERS__V1__DISPATCH_STREAM_REPLY__INIT;
  r.sequence = it->seq;
  r.code = code;
  r.message = (char *)(msg ? msg : "");
  if (rs && hd_proto_from_results(it->arena, rs, &r.results, &r.n_results)) {
    r.code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    r.message = (char *)"out of memory";
    r.n_results = 0;
  }
  it->reply = pack(&r.base);
}

/* Sends what can be sent, in request order; ends the stream when the client
 * has half-closed and every reply is out. Called with c->lock held. */
static void stream_pump(call *c) {
  while (c->broken && c->head && c->head->ready) {
    stream_item *it = c->head;
    c->head = it->next;
    c->pending--;
    item_free(it);
  }
  if (!c->head)
    c->tail = NULL;
  if (!c->broken && !c->send_busy && c->head && c->head->ready) {
    stream_item *it = c->head;
    c->head = it->next;
    if (!c->head)
      c->tail = NULL;
    c->pending--;
    c->send_buf = it->reply;
    it->reply = NULL;
    item_free(it);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = c->send_buf;
    /* More replies ready behind this one: let gRPC buffer it and flush them
     * together, one write for many small messages. */
    if (c->head && c->head->ready)
      op.flags = GRPC_WRITE_BUFFER_HINT;
    c->send_busy = 1;
    c->t_send = (tag){on_stream_sent, c};
    if (start_batch(c, &op, 1, &c->t_send) != 0) {
      c->send_busy = 0;
      c->broken = 1;
      grpc_byte_buffer_destroy(c->send_buf);
      c->send_buf = NULL;
    }
  }
  if (c->recv_paused && !c->read_done && !c->broken &&
      c->pending < (size_t)c->srv->cfg.stream_window) {
    c->recv_paused = 0;
    stream_recv_next(c);
  }
  if (c->read_done && !c->head && !c->send_busy && !c->status_sent) {
    c->status_sent = 1;
    if (!c->broken)
      finish_status(c, GRPC_STATUS_OK, "");
  }
}

static void on_stream_sent(void *owner, int ok) {
  call *c = owner;
  pthread_mutex_lock(&c->lock);
  grpc_byte_buffer_destroy(c->send_buf);
  c->send_buf = NULL;
  c->send_busy = 0;
  if (!ok)
    c->broken = 1;
  stream_pump(c);
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

static void stream_dispatch_done(hd_results *rs, void *ud) {
  stream_item *it = ud;
  call *c = it->c;
  count_dispatch(&it->ev, rs, it->start_ns, deadline_ns(c));
  item_set_reply(it, GRPC_STATUS_OK, NULL, rs);
  hd_results_free(rs);
  pthread_mutex_lock(&c->lock);
  it->ready = 1;
  stream_pump(c);
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

static void on_stream_recv(void *owner, int ok) {
  call *c = owner;
  if (!ok || !c->recv_buf) {
    pthread_mutex_lock(&c->lock);
    c->read_done = 1;
    if (!ok)
      c->broken = 1;
    stream_pump(c);
    pthread_mutex_unlock(&c->lock);
    call_unref(c);
    return;
  }
  grpc_slice body = read_all(c->recv_buf);
  grpc_byte_buffer_destroy(c->recv_buf);
  c->recv_buf = NULL;

  stream_item *it = calloc(1, sizeof(*it));
  if (it)
    it->arena = hd_arena_new(2048);
  if (!it || !it->arena) {
    free(it);
    grpc_slice_unref(body);
    pthread_mutex_lock(&c->lock);
    c->read_done = c->broken = 1;
    pthread_mutex_unlock(&c->lock);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                 "out of memory", NULL);
    call_unref(c);
    return;
  }
  it->c = c;
  pthread_mutex_lock(&c->lock);
  it->seq = c->next_seq++;
  if (c->tail)
    c->tail->next = it;
  else
    c->head = it;
  c->tail = it;
  c->pending++;
  pthread_mutex_unlock(&c->lock);

  /* Outside the lock: a local handler completes before this returns. */
  char msg[MSG_MAX];
  call_ref(c);
  it->start_ns = mono_ns();
  grpc_status_code st =
      start_dispatch(c->srv, it->arena, body, deadline_ns(c), &it->ev,
                     stream_dispatch_done, it, msg, sizeof(msg));
  grpc_slice_unref(body);
  if (st != GRPC_STATUS_OK)
    hd_metrics_dispatch(it->ev.name, st, -1);
  pthread_mutex_lock(&c->lock);
  if (st != GRPC_STATUS_OK) {
    call_unref(c); /* the dispatch never started: refs stay > 0 (recv) */
    item_set_reply(it, st, msg, NULL);
    it->ready = 1;
  }
  if (c->pending < (size_t)c->srv->cfg.stream_window && !c->broken)
    stream_recv_next(c);
  else
    c->recv_paused = 1;
  stream_pump(c);
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

/* Starts reading the call's next message into c->recv_buf, sending the
 * initial metadata first if it has not gone yet; `on_recv` runs when the
 * read completes. Returns start_batch's answer. */
static int start_recv(call *c, tag_fn *on_recv) {
  grpc_op ops[2];
  size_t n = 0;
  add_initial_metadata(c, ops, &n);
  memset(&ops[n], 0, sizeof(ops[n]));
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &c->recv_buf;
  c->t_recv = (tag){on_recv, c};
  return start_batch(c, ops, n, &c->t_recv);
}

/* Reads the next stream message. Called with c->lock held (or before the
 * call is shared). */
static void stream_recv_next(call *c) {
  if (start_recv(c, on_stream_recv) != 0) {
    c->read_done = 1;
    c->broken = 1;
  }
}

/* ---- accepting calls ---- */

/* Requests the next call of method `i` on `cq`, or of any unknown method
 * when `i` is N_METHODS. The request message is read by a batch of ours:
 * GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER (the message delivered with the
 * call, one batch fewer) left some of 2 000 concurrent unary calls
 * unanswered under ThreadSanitizer's timing with Debian's gRPC 1.51. */
static void request_call(hd_server *srv, grpc_completion_queue *cq, size_t i);

static int is_streaming(method m) {
  return m == M_STREAM;
}

static void on_unary_recv(void *owner, int ok) {
  call *c = owner;
  if (!ok) { /* cancelled or broken: nothing to answer */
    call_unref(c);
    return;
  }
  unary_start(c);
}

static void on_new_call(void *owner, int ok) {
  call *c = owner;
  hd_server *srv = c->srv;
  int watches = 0;
  if (!ok) {
    /* Shutting down, or gRPC gave up on this request (a call that went
     * away before it was matched): keep the slot filled, or calls of this
     * method would stop being accepted once the slots ran out. */
    if (!atomic_load(&srv->grpc_stopping))
      request_call(srv, c->cq, c->generic ? N_METHODS : c->m_index);
    call_free(c);
    return;
  }
  if (!atomic_load(&srv->grpc_stopping))
    request_call(srv, c->cq, c->generic ? N_METHODS : c->m_index);

  atomic_store(&c->refs, 1); /* this function's own reference */
  c->counted = 1;
  int in_flight = atomic_fetch_add(&srv->in_flight, 1) + 1;
  if (c->m == M_HEALTH_WATCH) {
    c->counted_watch = 1;
    watches = atomic_fetch_add(&srv->watches, 1) + 1;
  }
  if (c->generic)
    c->deadline = c->details.deadline;

  if (c->m == M_STREAM || c->m == M_HEALTH_WATCH) {
    grpc_op close_op;
    size_t n = 0;
    add_close(c, &close_op, &n);
    c->t_close =
        (tag){c->m == M_HEALTH_WATCH ? on_watch_closed : on_batch_done, c};
    start_batch(c, &close_op, 1, &c->t_close);
  }

  /* Authentication first: a caller without the token is refused before it
   * can take a place under any limit. Health Watch streams have a cap of
   * their own and do not count in --max-calls, so they never lock out the
   * RPCs. */
  if (c->m == M_UNKNOWN) {
    char *path = grpc_slice_to_c_string(c->details.method);
    finish_status(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s", path);
    gpr_free(path);
  } else if (needs_token(srv, c->m) && !token_ok(srv, &c->md)) {
    /* Never log the token or the header's value. */
    hd_log(HD_LOG_DEBUG, "refused a call: missing or invalid bearer token");
    hd_metrics_call_refused("unauthenticated");
    finish_status(c, GRPC_STATUS_UNAUTHENTICATED,
                  "missing or invalid bearer token (authorization: Bearer "
                  "<token>)");
  } else if (atomic_load(&srv->shutting_down)) {
    hd_metrics_call_refused("shutting_down");
    finish_status(c, GRPC_STATUS_UNAVAILABLE, "handlerd is shutting down");
  } else if (c->m == M_HEALTH_WATCH && watches > srv->cfg.max_health_watches) {
    hd_log(HD_LOG_DEBUG, "refused a call: --max-health-watches reached");
    hd_metrics_call_refused("max_health_watches");
    finish_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "too many health Watch streams (limit %d, "
                  "--max-health-watches)",
                  srv->cfg.max_health_watches);
  } else if (c->m != M_HEALTH_WATCH &&
             in_flight - atomic_load(&srv->watches) > srv->cfg.max_calls) {
    hd_log(HD_LOG_DEBUG, "refused a call: --max-calls reached");
    hd_metrics_call_refused("max_calls");
    finish_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                  "too many calls in flight (limit %d, --max-calls)",
                  srv->cfg.max_calls);
  } else if (is_streaming(c->m)) {
    pthread_mutex_lock(&c->lock);
    stream_recv_next(c);
    pthread_mutex_unlock(&c->lock);
  } else {
    start_recv(c, on_unary_recv);
  }
  call_unref(c);
}

static void request_call(hd_server *srv, grpc_completion_queue *cq, size_t i) {
  call *c = calloc(1, sizeof(*c));
  grpc_call_error err;
  if (!c) {
    hd_log(HD_LOG_ERROR, "out of memory accepting a call");
    return;
  }
  c->srv = srv;
  c->cq = cq;
  pthread_mutex_init(&c->lock, NULL);
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->md);
  c->t_new = (tag){on_new_call, c};
  tag_publish(&c->t_new);
  if (i >= N_METHODS) {
    c->generic = 1;
    c->m = M_UNKNOWN;
    err = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md,
                                   cq, cq, &c->t_new);
  } else {
    c->m = methods[i].m;
    c->m_index = i;
    err = grpc_server_request_registered_call(srv->server, srv->registered[i],
                                              &c->call, &c->deadline, &c->md,
                                              NULL, cq, cq, &c->t_new);
  }
  if (err != GRPC_CALL_OK) {
    hd_log(HD_LOG_ERROR, "requesting a call failed (%d)", (int)err);
    call_free(c);
  }
}

/* ---- threads and lifecycle ---- */

static void on_shutdown_done(void *owner, int ok) {
  hd_server *srv = owner;
  (void)ok;
  pthread_mutex_lock(&srv->lock);
  srv->shutdown_done = 1;
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->lock);
}

static void *cq_thread(void *arg) {
  grpc_completion_queue *cq = arg;
  in_cq_thread = 1;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE) {
      tag *t = ev.tag;
      tag_fn *fn = __atomic_load_n(&t->fn, __ATOMIC_ACQUIRE);
      fn(t->owner, ev.success);
    }
  }
  return NULL;
}

/* gRPC 1.51 asserts that a fetched config has client roots, even when no
 * client certificate is requested: then the server's own chain stands in,
 * unused. */
static const char *roots_for(const char *client_ca_pem, const char *cert_pem) {
  return client_ca_pem ? client_ca_pem : cert_pem;
}

/* gRPC asks at every handshake: a certificate set by hd_server_reload is
 * handed over once. */
static grpc_ssl_certificate_config_reload_status
fetch_tls(void *ud, grpc_ssl_server_certificate_config **config) {
  hd_server *srv = ud;
  pthread_mutex_lock(&srv->secrets_lock);
  grpc_ssl_server_certificate_config *next = srv->tls_pending;
  srv->tls_pending = NULL;
  pthread_mutex_unlock(&srv->secrets_lock);
  if (!next)
    return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  *config = next;
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

hd_err hd_server_reload(hd_server *s, const char *token, const char *cert_pem,
                        const char *key_pem, const char *client_ca_pem) {
  if ((token && !s->have_token) || (cert_pem && !s->tls) ||
      !cert_pem != !key_pem)
    return HD_EINVAL;
  grpc_ssl_server_certificate_config *next = NULL;
  if (cert_pem) {
    grpc_ssl_pem_key_cert_pair pair = {key_pem, cert_pem};
    next = grpc_ssl_server_certificate_config_create(
        roots_for(client_ca_pem, cert_pem), &pair, 1);
    if (!next)
      return HD_ENOMEM;
  }
  pthread_mutex_lock(&s->secrets_lock);
  if (token)
    SHA256((const unsigned char *)token, strlen(token), s->token_digest);
  if (next) {
    if (s->tls_pending)
      grpc_ssl_server_certificate_config_destroy(s->tls_pending);
    s->tls_pending = next;
  }
  pthread_mutex_unlock(&s->secrets_lock);
  return HD_OK;
}

hd_err hd_server_start(const hd_server_config *cfg, hd_registry *reg,
                       hd_control *ctl, hd_server **out, char *msg,
                       size_t msg_size) {
  hd_server *srv = calloc(1, sizeof(*srv));
  if (!srv)
    return HD_ENOMEM;
  srv->cfg = *cfg;
  srv->reg = reg;
  srv->ctl = ctl;
  srv->n_cq =
      cfg->threads > 0 ? cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (srv->n_cq < 1)
    srv->n_cq = 1;
  if (srv->cfg.stream_window < 1)
    srv->cfg.stream_window = 1;
  pthread_mutex_init(&srv->lock, NULL);
  pthread_cond_init(&srv->cond, NULL);
  pthread_mutex_init(&srv->watch_lock, NULL);
  pthread_mutex_init(&srv->secrets_lock, NULL);
  if (cfg->token) {
    srv->have_token = 1;
    SHA256((const unsigned char *)cfg->token, strlen(cfg->token),
           srv->token_digest);
  }
  srv->cfg.token = NULL; /* only the digest is kept */
  srv->t_shutdown = (tag){on_shutdown_done, srv};

  /* Two daemons on one port would split traffic silently: REUSEPORT off.
   * Connections cost memory while they are open: those without calls, or
   * that never finish their handshake, are closed; keepalive pings find
   * the dead ones that hold a stream open. */
  grpc_arg args[] = {
      {GRPC_ARG_INTEGER,
       (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
       {.integer = cfg->max_message_bytes}},
      {GRPC_ARG_INTEGER, (char *)GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}},
      {GRPC_ARG_INTEGER,
       (char *)GRPC_ARG_MAX_CONNECTION_IDLE_MS,
       {.integer = cfg->idle_timeout_ms}},
      {GRPC_ARG_INTEGER,
       (char *)GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
       {.integer = cfg->handshake_timeout_ms}},
      {GRPC_ARG_INTEGER,
       (char *)GRPC_ARG_KEEPALIVE_TIME_MS,
       {.integer = cfg->keepalive_time_ms}},
      {GRPC_ARG_INTEGER,
       (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
       {.integer = KEEPALIVE_TIMEOUT_MS}},
  };
  grpc_channel_args ch_args = {sizeof(args) / sizeof(args[0]), args};
  srv->server = grpc_server_create(&ch_args, NULL);
  srv->cqs = calloc(srv->n_cq, sizeof(*srv->cqs));
  srv->threads = calloc(srv->n_cq, sizeof(*srv->threads));
  if (!srv->server || !srv->cqs || !srv->threads) {
    hd_server_free(srv);
    return HD_ENOMEM;
  }
  for (int i = 0; i < srv->n_cq; i++) {
    srv->cqs[i] = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cqs[i], NULL);
  }
  grpc_server_credentials *creds;
  if (cfg->tls_cert_pem && cfg->tls_key_pem) {
    /* Through a fetcher, so SIGHUP can hand gRPC a new certificate. */
    grpc_ssl_pem_key_cert_pair pair = {cfg->tls_key_pem, cfg->tls_cert_pem};
    srv->tls = 1;
    srv->tls_pending = grpc_ssl_server_certificate_config_create(
        roots_for(cfg->tls_client_ca_pem, cfg->tls_cert_pem), &pair, 1);
    grpc_ssl_server_credentials_options *opts =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            cfg->tls_client_ca_pem
                ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            fetch_tls, srv);
    creds = grpc_ssl_server_credentials_create_with_options(opts);
  } else {
    creds = grpc_insecure_server_credentials_create();
  }
  srv->port = grpc_server_add_http2_port(srv->server, cfg->listen, creds);
  grpc_server_credentials_release(creds);
  if (srv->port == 0) {
    snprintf(msg, msg_size, "cannot listen on %s (address in use or invalid)",
             cfg->listen);
    atomic_store(&srv->stopped, 1); /* never started: nothing to drain */
    hd_server_free(srv);
    return HD_EIO;
  }
  if (hd_conn_guard_watch_port(srv->port) == 0)
    hd_log(HD_LOG_WARN,
           "no listening socket found on port %d: connections "
           "are not counted against --max-connections",
           srv->port);
  for (size_t i = 0; i < N_METHODS; i++) {
    hd_metrics_set_method_name((int)i, methods[i].path + 1);
    srv->registered[i] = grpc_server_register_method(
        srv->server, methods[i].path, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
  }
  grpc_server_start(srv->server);
  for (int q = 0; q < srv->n_cq; q++) {
    /* Enough requested calls that a burst never waits for a re-request:
     * many for the data path, a few for the rest. */
    for (size_t i = 0; i <= N_METHODS; i++) {
      int k = i < N_METHODS &&
                      (methods[i].m == M_DISPATCH || methods[i].m == M_STREAM)
                  ? CALLS_REQUESTED_PER_CQ
                  : 2;
      while (k-- > 0)
        request_call(srv, srv->cqs[q], i);
    }
    pthread_create(&srv->threads[q], NULL, cq_thread, srv->cqs[q]);
    char name[16]; /* shown by top -H and perf: "hd-grpc-0" */
    snprintf(name, sizeof(name), "hd-grpc-%d", q % 1000);
    pthread_setname_np(srv->threads[q], name);
  }
  *out = srv;
  return HD_OK;
}

int hd_server_calls_in_flight(const hd_server *s) {
  return atomic_load(&((hd_server *)s)->in_flight);
}

int hd_server_port(const hd_server *s) {
  return s->port;
}

/* CLOCK_REALTIME `ms` from now, for pthread_cond_timedwait. */
static struct timespec realtime_in(int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

/* Waits for the server's shutdown to complete (every call gone), up to
 * `ms`. Returns 1 when it did. Call with s->lock held. */
static int wait_shutdown_done(hd_server *s, int ms) {
  struct timespec until = realtime_in(ms);
  while (!s->shutdown_done &&
         pthread_cond_timedwait(&s->cond, &s->lock, &until) == 0)
    ;
  return s->shutdown_done;
}

/* Waits until no call is left, up to `ms`. 0 when none is left. */
static int wait_calls_done(hd_server *s, int ms);

void hd_server_shutdown(hd_server *s, int drain_ms,
                        void (*on_drain_timeout)(void *ud), void *ud) {
  if (atomic_exchange(&s->stopped, 1))
    return;
  pthread_mutex_lock(&s->watch_lock);
  atomic_store(&s->shutting_down, 1);
  pthread_mutex_unlock(&s->watch_lock);
  watchers_not_serving(s);

  /* Drain while still accepting: a call arriving now is answered
   * UNAVAILABLE "handlerd is shutting down" by on_new_call. Once gRPC's own
   * shutdown starts, a late call is cancelled by the core without a word
   * (CANCELLED), so that waits for the calls in flight. */
  int left = wait_calls_done(s, drain_ms);
  if (left > 0 && on_drain_timeout) {
    /* Let the calls still waiting (on webhooks) answer with what their
     * handlers report ("shutting down") rather than be cut off blind. */
    hd_log(HD_LOG_WARN,
           "%d calls still running after %d ms: ending their webhook "
           "deliveries",
           left, drain_ms);
    on_drain_timeout(ud);
    left = wait_calls_done(s, DRAIN_REPLY_MS);
  }
  hd_conn_guard_stop();
  atomic_store(&s->grpc_stopping, 1);
  tag_publish(&s->t_shutdown);
  grpc_server_shutdown_and_notify(s->server, s->cqs[0], &s->t_shutdown);

  pthread_mutex_lock(&s->lock);
  if (!wait_shutdown_done(s, left > 0 ? 0 : DRAIN_REPLY_MS)) {
    pthread_mutex_unlock(&s->lock);
    hd_log(HD_LOG_WARN, "calls still running after %d ms: cancelling them",
           drain_ms);
    grpc_server_cancel_all_calls(s->server);
    pthread_mutex_lock(&s->lock);
    while (!s->shutdown_done)
      pthread_cond_wait(&s->cond, &s->lock);
  }
  pthread_mutex_unlock(&s->lock);
}

static int wait_calls_done(hd_server *s, int ms) {
  struct timespec until = realtime_in(ms);
  pthread_mutex_lock(&s->lock);
  while (atomic_load(&s->in_flight) > 0 &&
         pthread_cond_timedwait(&s->cond, &s->lock, &until) == 0)
    ;
  int left = atomic_load(&s->in_flight);
  pthread_mutex_unlock(&s->lock);
  return left;
}

void hd_server_free(hd_server *s) {
  if (!s)
    return;
  if (s->threads && s->cqs && !atomic_load(&s->stopped))
    hd_server_shutdown(s, 5000, NULL, NULL);
  if (s->threads && s->cqs && s->shutdown_done) {
    /* A call cancelled by the drain may still wait for an asynchronous
     * handler; its completion starts a batch, which needs live queues. */
    int left = wait_calls_done(s, 10000);
    if (left > 0) {
      hd_log(HD_LOG_ERROR,
             "%d calls never completed: exiting without "
             "freeing the server",
             left);
      return;
    }
    for (int i = 0; i < s->n_cq; i++)
      grpc_completion_queue_shutdown(s->cqs[i]);
    for (int i = 0; i < s->n_cq; i++)
      pthread_join(s->threads[i], NULL);
  }
  if (s->server)
    grpc_server_destroy(s->server);
  for (int i = 0; s->cqs && i < s->n_cq; i++) {
    if (!s->cqs[i])
      continue;
    if (atomic_load(&s->stopped) && !s->shutdown_done) {
      /* Never started: drain the queue ourselves. */
      grpc_completion_queue_shutdown(s->cqs[i]);
      while (grpc_completion_queue_next(
                 s->cqs[i], gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                 .type != GRPC_QUEUE_SHUTDOWN)
        ;
    }
    grpc_completion_queue_destroy(s->cqs[i]);
  }
  free(s->cqs);
  free(s->threads);
  pthread_cond_destroy(&s->cond);
  pthread_mutex_destroy(&s->lock);
  pthread_mutex_destroy(&s->watch_lock);
  if (s->tls_pending)
    grpc_ssl_server_certificate_config_destroy(s->tls_pending);
  pthread_mutex_destroy(&s->secrets_lock);
  free(s);
}
