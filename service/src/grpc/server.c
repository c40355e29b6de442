/*
 * gRPC front on the C core: the method table, accepting calls, the
 * completion-queue threads and the server's life (start, drain, free).
 *
 * One completion queue per thread. The RPCs themselves live with their
 * family (dispatch.c, dispatch_stream.c, admin.c, health.c, deliveries.c),
 * each listing its methods in a table of rows (rpc.h) that start
 * concatenates; call.c holds a call's lifetime and batch helpers, auth.c
 * the token and TLS.
 */
#include "server.h"
#include "conn_guard.h"
#include "rpc.h"

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CALLS_REQUESTED_PER_CQ 16
/* After the drain timeout, how long calls get to send what their handlers
 * reported before they are cancelled. */
#define DRAIN_REPLY_MS 500
/* A keepalive ping unanswered this long closes the connection. */
#define KEEPALIVE_TIMEOUT_MS 20000

/* In this order, which is also the order of the methods' metrics slots. */
static const rpc_method *const families[] = {
    rpc_dispatch_methods,
    rpc_stream_methods,
    rpc_admin_methods,
    rpc_health_methods,
    /* Last, so the older methods keep their slots. */
    rpc_delivery_methods,
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

/* ---- accepting calls ---- */

/* Requests the next call of method `i` on `cq`, or of any unknown method
 * when `i` is srv->n_methods. The request message is read by a batch of
 * ours: GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER (the message delivered
 * with the call, one batch fewer) left some of 2 000 concurrent unary
 * calls unanswered under ThreadSanitizer's timing with Debian's gRPC
 * 1.51. */
static void request_call(hd_server *srv, grpc_completion_queue *cq, size_t i);

/* Handles the request in c->recv_buf and drops the reference the caller
 * holds. */
static void unary_start(call *c) {
  if (!c->recv_buf) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                "the client sent no request message");
    call_unref(c);
    return;
  }
  grpc_slice body = rpc_read_all(c->recv_buf);
  grpc_byte_buffer_destroy(c->recv_buf);
  c->recv_buf = NULL;
  c->arena = hd_arena_new(4096);
  if (!c->arena)
    call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    c->method->handle(c, body);
  /* readall gave us our own copy, which may hold a secret. */
  if (c->method->secret)
    explicit_bzero(GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body));
  grpc_slice_unref(body);
  call_unref(c);
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
  const rpc_method *m = c->method;
  int watches = 0, slots = 0;
  /* Shutting down, or gRPC gave up on this request (a call that went away
   * before it was matched): keep the slot filled either way, or calls of
   * this method would stop being accepted once the slots ran out. */
  if (!atomic_load(&srv->grpc_stopping))
    request_call(srv, c->cq, c->m_index);
  if (!ok) {
    call_free(c);
    return;
  }

  atomic_store(&c->refs, 1); /* this function's own reference */
  c->counted = 1;
  atomic_fetch_add(&srv->in_flight, 1);
  if (m && m->watch) {
    c->counted_watch = 1;
    watches = atomic_fetch_add(&srv->watches, 1) + 1;
  } else if (m) {
    atomic_store(&c->holds_slot, 1);
    slots = atomic_fetch_add(&srv->holding_slots, 1) + 1;
  }
  if (!m)
    c->deadline = c->details.deadline;

  if (m && m->on_close) {
    grpc_op close_op;
    size_t n = 0;
    call_add_close(c, &close_op, &n);
    c->t_close = (rpc_tag){m->on_close, c};
    call_start_batch(c, &close_op, 1, &c->t_close);
  }

  /* Authentication first: a caller without the token is refused before it
   * can take a place under any limit. Health Watch streams have a cap of
   * their own and do not count in --max-calls, so they never lock out the
   * RPCs. */
  if (!m) {
    char *path = grpc_slice_to_c_string(c->details.method);
    call_finish(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s", path);
    gpr_free(path);
  } else if (!rpc_auth_allows(srv, c)) {
    /* Never log the token or the header's value. */
    hd_log(HD_LOG_DEBUG, "refused a call: missing or invalid bearer token");
    hd_metrics_call_refused("unauthenticated");
    call_finish(c, GRPC_STATUS_UNAUTHENTICATED,
                "missing or invalid bearer token (authorization: Bearer "
                "<token>)");
  } else if (atomic_load(&srv->shutting_down)) {
    hd_metrics_call_refused("shutting_down");
    call_finish(c, GRPC_STATUS_UNAVAILABLE, "handlerd is shutting down");
  } else if (m->watch && watches > srv->cfg.max_health_watches) {
    hd_log(HD_LOG_DEBUG, "refused a call: --max-health-watches reached");
    hd_metrics_call_refused("max_health_watches");
    call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                "too many health Watch streams (limit %d, "
                "--max-health-watches)",
                srv->cfg.max_health_watches);
  } else if (!m->watch && slots > srv->cfg.max_calls) {
    hd_log(HD_LOG_DEBUG, "refused a call: --max-calls reached");
    hd_metrics_call_refused("max_calls");
    call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                "too many calls in flight (limit %d, --max-calls)",
                srv->cfg.max_calls);
  } else if (m->start) {
    pthread_mutex_lock(&c->lock);
    m->start(c);
    pthread_mutex_unlock(&c->lock);
  } else {
    call_start_recv(c, on_unary_recv);
  }
  call_unref(c);
}

static void request_call(hd_server *srv, grpc_completion_queue *cq, size_t i) {
  call *c = call_new(srv, cq, i);
  grpc_call_error err;
  if (!c) {
    hd_log(HD_LOG_ERROR, "out of memory accepting a call");
    return;
  }
  c->t_new = (rpc_tag){on_new_call, c};
  rpc_tag_publish(&c->t_new);
  if (!c->method)
    err = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md,
                                   cq, cq, &c->t_new);
  else
    err = grpc_server_request_registered_call(srv->server, srv->registered[i],
                                              &c->call, &c->deadline, &c->md,
                                              NULL, cq, cq, &c->t_new);
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
  rpc_in_cq_thread = 1;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE) {
      rpc_tag *t = ev.tag;
      rpc_tag_fn *fn = __atomic_load_n(&t->fn, __ATOMIC_ACQUIRE);
      fn(t->owner, ev.success);
    }
  }
  return NULL;
}

/* Concatenates the families' method tables. */
static void collect_methods(hd_server *srv) {
  for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++)
    for (const rpc_method *m = families[f]; m->path; m++) {
      if (srv->n_methods == RPC_MAX_METHODS) {
        hd_log(HD_LOG_ERROR, "more methods than metrics slots: %s not served",
               m->path);
        continue;
      }
      srv->methods[srv->n_methods++] = m;
    }
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
  collect_methods(srv);
  pthread_mutex_init(&srv->lock, NULL);
  pthread_cond_init(&srv->cond, NULL);
  rpc_health_init(&srv->health);
  rpc_admin_init(&srv->admin);
  grpc_server_credentials *creds;
  rpc_auth_init(&srv->auth, cfg, &creds);
  srv->cfg.token = NULL; /* only the digest is kept */
  srv->t_shutdown = (rpc_tag){on_shutdown_done, srv};

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
    grpc_server_credentials_release(creds);
    atomic_store(&srv->stopped, 1);
    hd_server_free(srv);
    return HD_ENOMEM;
  }
  for (int i = 0; i < srv->n_cq; i++) {
    srv->cqs[i] = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cqs[i], NULL);
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
  if (rpc_admin_start(&srv->admin) != HD_OK) {
    snprintf(msg, msg_size, "cannot start the control thread");
    atomic_store(&srv->stopped, 1);
    hd_server_free(srv);
    return HD_ENOMEM;
  }
  if (hd_conn_guard_watch_port(srv->port) == 0)
    hd_log(HD_LOG_WARN,
           "no listening socket found on port %d: connections "
           "are not counted against --max-connections",
           srv->port);
  for (size_t i = 0; i < srv->n_methods; i++) {
    hd_metrics_set_method_name((int)i, srv->methods[i]->path + 1);
    srv->registered[i] = grpc_server_register_method(
        srv->server, srv->methods[i]->path, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
  }
  grpc_server_start(srv->server);
  for (int q = 0; q < srv->n_cq; q++) {
    /* Enough requested calls that a burst never waits for a re-request:
     * many for the data path, a few for the rest (and unknown methods). */
    for (size_t i = 0; i <= srv->n_methods; i++) {
      int k = i < srv->n_methods && srv->methods[i]->hot
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
  hd_server *srv = (hd_server *)s;
  /* Not srv->in_flight: a call answered stays there until gRPC is done
   * with it, after its caller has the answer. */
  return atomic_load(&srv->holding_slots) + atomic_load(&srv->watches);
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

void hd_server_shutdown(hd_server *s, int drain_ms,
                        void (*on_drain_timeout)(void *ud), void *ud) {
  if (atomic_exchange(&s->stopped, 1))
    return;
  rpc_health_shutdown(s);

  /* Drain while still accepting: a call arriving now is answered
   * UNAVAILABLE "handlerd is shutting down" by on_new_call. Once gRPC's own
   * shutdown starts, a late call is cancelled by the core without a word
   * (CANCELLED), so that waits for the calls in flight, those queued for
   * the control thread included. */
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
  rpc_tag_publish(&s->t_shutdown);
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

void hd_server_free(hd_server *s) {
  if (!s)
    return;
  if (s->threads && s->cqs && !atomic_load(&s->stopped))
    hd_server_shutdown(s, 5000, NULL, NULL);
  if (s->threads && s->cqs && s->shutdown_done) {
    /* A call cancelled by the drain may still wait for an asynchronous
     * handler or for the control thread; either ends it with a batch,
     * which needs live queues. */
    int left = wait_calls_done(s, 10000);
    if (left > 0) {
      hd_log(HD_LOG_ERROR,
             "%d calls never completed: exiting without "
             "freeing the server",
             left);
      return;
    }
  }
  /* No call is left, so nothing is queued for the control thread. */
  rpc_admin_destroy(&s->admin);
  if (s->threads && s->cqs && s->shutdown_done) {
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
  rpc_health_destroy(&s->health);
  rpc_auth_destroy(&s->auth);
  free(s);
}
