/*
 * grpc.health.v1.Health: Check and Watch for "" and "handlers.v1.Handlers".
 */
#include "grpc/health/v1/health.pb-c.h"
#include "rpc.h"

#include <string.h>

#define HEALTH_SERVING                                                         \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define HEALTH_NOT_SERVING                                                     \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define HEALTH_SERVICE_UNKNOWN                                                 \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

void rpc_health_init(rpc_health_state *h) {
  pthread_mutex_init(&h->lock, NULL);
  h->watchers = NULL;
}

void rpc_health_destroy(rpc_health_state *h) {
  pthread_mutex_destroy(&h->lock);
}

/* "handlerd.database": the store's database (a replica's PostgreSQL) is
 * reachable. The service itself stays SERVING while it is not: dispatch
 * to sync handlers goes on. */
#define DATABASE_SERVICE "handlerd.database"

static int known_service(const char *name) {
  return name[0] == '\0' || strcmp(name, "handlers.v1.Handlers") == 0 ||
         strcmp(name, DATABASE_SERVICE) == 0;
}

static int serving(call *c, const char *name) {
  if (atomic_load(&c->srv->shutting_down))
    return HEALTH_NOT_SERVING;
  if (strcmp(name, DATABASE_SERVICE) == 0 &&
      !hd_store_available(c->srv->cfg.store))
    return HEALTH_NOT_SERVING;
  return HEALTH_SERVING;
}

static Grpc__Health__V1__HealthCheckRequest *unpack_health(call *c,
                                                           grpc_slice body) {
  return call_unpack(c, body,
                     &grpc__health__v1__health_check_request__descriptor);
}

static void handle_check(call *c, grpc_slice body) {
  Grpc__Health__V1__HealthCheckRequest *req = unpack_health(c, body);
  if (!req)
    return;
  if (!known_service(req->service)) {
    call_finish(c, GRPC_STATUS_NOT_FOUND, "unknown service '%s'", req->service);
    return;
  }
  Grpc__Health__V1__HealthCheckResponse reply =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  reply.status = serving(c, req->service);
  call_send_reply(c, &reply.base);
}

static void watch_send(call *c, int status, int final);

static void on_watch_sent(void *owner, int ok) {
  call *c = owner;
  call_watch *w = &c->u.watch;
  pthread_mutex_lock(&c->lock);
  grpc_byte_buffer_destroy(c->send_buf);
  c->send_buf = NULL;
  if (w->state == WATCH_SENDING) {
    w->state = WATCH_IDLE;
  } else if (w->state == WATCH_SENDING_THEN_END) {
    w->state = WATCH_IDLE;
    if (ok)
      watch_send(c, HEALTH_NOT_SERVING, 1);
  }
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

/* Sends one status; `final` also ends the call. Called with c->lock held;
 * a send still in flight defers the final message to on_watch_sent. */
static void watch_send(call *c, int status, int final) {
  call_watch *w = &c->u.watch;
  if (w->state == WATCH_ENDED || w->state == WATCH_SENDING_THEN_END)
    return;
  if (w->state == WATCH_SENDING) {
    if (final)
      w->state = WATCH_SENDING_THEN_END;
    return;
  }
  Grpc__Health__V1__HealthCheckResponse msg =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  msg.status = status;
  grpc_op ops[3];
  size_t n = 0;
  c->send_buf = rpc_pack(&msg.base);
  call_add_initial_metadata(c, ops, &n);
  memset(&ops[n], 0, 2 * sizeof(ops[0]));
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = c->send_buf;
  if (final) {
    call_count(c, GRPC_STATUS_OK);
    ops[n++].op = GRPC_OP_SEND_STATUS_FROM_SERVER; /* OK, no details */
  }
  w->state = final ? WATCH_ENDED : WATCH_SENDING;
  c->t_send = (rpc_tag){on_watch_sent, c};
  if (call_start_batch(c, ops, n, &c->t_send) != 0) {
    w->state = final ? WATCH_ENDED : WATCH_IDLE;
    grpc_byte_buffer_destroy(c->send_buf);
    c->send_buf = NULL;
  }
}

/* Drops `c` from the watchers, and the reference the list held. */
static void watch_forget(call *c) {
  rpc_health_state *h = &c->srv->health;
  int found = 0;
  pthread_mutex_lock(&h->lock);
  for (call **p = &h->watchers; *p; p = &(*p)->u.watch.next)
    if (*p == c) {
      *p = c->u.watch.next;
      found = 1;
      break;
    }
  pthread_mutex_unlock(&h->lock);
  if (found)
    call_unref(c);
}

static void on_watch_closed(void *owner, int ok) {
  (void)ok;
  watch_forget(owner);
  call_unref(owner);
}

static void handle_watch(call *c, grpc_slice body) {
  Grpc__Health__V1__HealthCheckRequest *req = unpack_health(c, body);
  if (!req)
    return;
  hd_server *srv = c->srv;
  int status =
      known_service(req->service) ? HEALTH_SERVING : HEALTH_SERVICE_UNKNOWN;
  pthread_mutex_lock(&srv->health.lock);
  int stopping = atomic_load(&srv->shutting_down);
  if (!stopping) {
    call_ref(c); /* held by the watcher list */
    c->u.watch.next = srv->health.watchers;
    srv->health.watchers = c;
  }
  pthread_mutex_unlock(&srv->health.lock);
  pthread_mutex_lock(&c->lock);
  watch_send(c, stopping ? HEALTH_NOT_SERVING : status, stopping);
  pthread_mutex_unlock(&c->lock);
}

void rpc_health_shutdown(hd_server *srv) {
  /* Under the lock, so a Watch either is listed before the flip (and ends
   * below) or sees it (and ends at once). */
  pthread_mutex_lock(&srv->health.lock);
  atomic_store(&srv->shutting_down, 1);
  call *list = srv->health.watchers;
  srv->health.watchers = NULL;
  pthread_mutex_unlock(&srv->health.lock);
  while (list) {
    call *c = list;
    list = c->u.watch.next;
    pthread_mutex_lock(&c->lock);
    watch_send(c, HEALTH_NOT_SERVING, 1);
    pthread_mutex_unlock(&c->lock);
    call_unref(c);
  }
}

const rpc_method rpc_health_methods[] = {
    {.path = "/grpc.health.v1.Health/Check", .handle = handle_check},
    {.path = "/grpc.health.v1.Health/Watch",
     .watch = 1,
     .handle = handle_watch,
     .on_close = on_watch_closed},
    {.path = NULL},
};
