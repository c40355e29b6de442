/*
 * AddHandler, RemoveHandler, ListHandlers, UpdateHandler, RotateSecret and
 * GetStats.
 *
 * All but GetStats run on the control thread: a completion-queue thread
 * unpacks the request into the call's arena and queues the call, holding a
 * reference; the control thread runs the control plane (AddHandler
 * returns once the store's commit is done) and starts the reply batch from
 * there. The call stays in srv->in_flight until that batch completes, so
 * the drain waits for queued calls too. One thread keeps the store's
 * writes in arrival order; ListHandlers goes the same way, so it sees every
 * change acknowledged before it was asked, and a backend that lists from
 * its database needs nothing more.
 */
#include "clock.h"
#include "registration_pb.h"
#include "rpc.h"
#include "stats.h"

#include <stdlib.h>
#include <string.h>

void rpc_admin_init(rpc_admin_state *a) {
  memset(a, 0, sizeof(*a));
  pthread_mutex_init(&a->lock, NULL);
  pthread_cond_init(&a->cond, NULL);
}

static void *control_thread(void *arg) {
  rpc_admin_state *a = arg;
  pthread_mutex_lock(&a->lock);
  for (;;) {
    call *c = a->head;
    if (!c) {
      if (a->stop)
        break;
      pthread_cond_wait(&a->cond, &a->lock);
      continue;
    }
    a->head = c->u.admin.next;
    if (!a->head)
      a->tail = NULL;
    pthread_mutex_unlock(&a->lock);
    int64_t deadline = call_deadline_ns(c);
    if (deadline && real_ns() >= deadline)
      /* Nobody waits for the answer: a change made now would be one its
       * caller was told had failed. */
      call_finish(c, GRPC_STATUS_DEADLINE_EXCEEDED,
                  "deadline passed while queued for the control plane");
    else
      c->u.admin.run(c, c->u.admin.req);
    call_unref(c);
    pthread_mutex_lock(&a->lock);
  }
  pthread_mutex_unlock(&a->lock);
  return NULL;
}

hd_err rpc_admin_start(rpc_admin_state *a) {
  if (pthread_create(&a->thread, NULL, control_thread, a) != 0)
    return HD_ENOMEM;
  a->started = 1;
  pthread_setname_np(a->thread, "hd-control");
  return HD_OK;
}

void rpc_admin_destroy(rpc_admin_state *a) {
  if (a->started) {
    pthread_mutex_lock(&a->lock);
    a->stop = 1;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->thread, NULL);
    a->started = 0;
  }
  pthread_cond_destroy(&a->cond);
  pthread_mutex_destroy(&a->lock);
}

void rpc_admin_enqueue(call *c, void (*run)(call *c, void *req), void *req) {
  rpc_admin_state *a = &c->srv->admin;
  c->u.admin.run = run;
  c->u.admin.req = req;
  c->u.admin.next = NULL;
  call_ref(c); /* held by the queue until run returns */
  pthread_mutex_lock(&a->lock);
  if (a->tail)
    a->tail->u.admin.next = c;
  else
    a->head = c;
  a->tail = c;
  pthread_cond_signal(&a->cond);
  pthread_mutex_unlock(&a->lock);
}

static void run_add(call *c, void *arg) {
  Handlers__V1__AddHandlerRequest *req = arg;
  char msg[RPC_MSG_MAX] = "";
  Handlers__V1__AddHandlerReply reply = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;
  hd_err err =
      hd_grpc_control_add(c->srv->ctl, c->arena, req, &reply, msg, sizeof(msg));
  if (err == HD_OK)
    hd_log(HD_LOG_INFO, "added handler %s under key '%s'", reply.handler_id,
           req->key);
  call_answer(c, err, msg, &reply.base);
}

static void handle_add(call *c, grpc_slice body) {
  Handlers__V1__AddHandlerRequest *req =
      call_unpack(c, body, &handlers__v1__add_handler_request__descriptor);
  if (req)
    rpc_admin_enqueue(c, run_add, req);
}

static void run_remove(call *c, void *arg) {
  Handlers__V1__RemoveHandlerRequest *req = arg;
  char msg[RPC_MSG_MAX] = "";
  /* A route removes that sub-handler only (the last one: the handler). */
  hd_err err = hd_control_remove_route(c->srv->ctl, req->key, req->handler_id,
                                       req->route, msg, sizeof(msg));
  if (err == HD_OK && req->route[0])
    hd_log(HD_LOG_INFO, "removed route '%s' of handler %s under key '%s'",
           req->route, req->handler_id, req->key);
  else if (err == HD_OK)
    hd_log(HD_LOG_INFO, "removed handler %s from key '%s'", req->handler_id,
           req->key);
  Handlers__V1__RemoveHandlerReply reply =
      HANDLERS__V1__REMOVE_HANDLER_REPLY__INIT;
  call_answer(c, err, msg, &reply.base);
}

/* A request naming a handler must name it whole: refused before it
 * queues. 1 when it was refused (the call is ended). */
static int refuse_unnamed(call *c, const char *key, const char *handler_id) {
  if (key[0] && handler_id[0])
    return 0;
  call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s is empty",
              key[0] ? "handler_id" : "key");
  return 1;
}

static void handle_remove(call *c, grpc_slice body) {
  Handlers__V1__RemoveHandlerRequest *req =
      call_unpack(c, body, &handlers__v1__remove_handler_request__descriptor);
  if (req && !refuse_unnamed(c, req->key, req->handler_id))
    rpc_admin_enqueue(c, run_remove, req);
}

static void run_update(call *c, void *arg) {
  Handlers__V1__UpdateHandlerRequest *req = arg;
  char msg[RPC_MSG_MAX] = "";
  Handlers__V1__UpdateHandlerReply reply =
      HANDLERS__V1__UPDATE_HANDLER_REPLY__INIT;
  hd_err err = hd_grpc_control_update(c->srv->ctl, c->arena, req, &reply, msg,
                                      sizeof(msg));
  if (err == HD_OK)
    hd_log(HD_LOG_INFO, "updated handler %s under key '%s'", req->handler_id,
           req->key);
  call_answer(c, err, msg, &reply.base);
}

static void handle_update(call *c, grpc_slice body) {
  Handlers__V1__UpdateHandlerRequest *req =
      call_unpack(c, body, &handlers__v1__update_handler_request__descriptor);
  if (req && !refuse_unnamed(c, req->key, req->handler_id))
    rpc_admin_enqueue(c, run_update, req);
}

static void run_rotate(call *c, void *arg) {
  Handlers__V1__RotateSecretRequest *req = arg;
  char msg[RPC_MSG_MAX] = "";
  Handlers__V1__RotateSecretReply reply =
      HANDLERS__V1__ROTATE_SECRET_REPLY__INIT;
  const char *secret = "";
  int64_t expires = 0;
  hd_err err = hd_control_rotate_secret(
      c->srv->ctl, req->key, req->handler_id, req->route, req->overlap_ms,
      req->secret, c->arena, &secret, &expires, msg, sizeof(msg));
  if (err == HD_EUNSUPPORTED) {
    /* Not a webhook: the handler is there, it is the wrong kind for this
     * (UNIMPLEMENTED would say the RPC is missing). */
    call_finish(c, GRPC_STATUS_FAILED_PRECONDITION, "%s",
                msg[0] ? msg : hd_strerror(err));
    return;
  }
  if (err == HD_OK) {
    reply.secret = (char *)secret; /* in the arena, wiped with it */
    reply.previous_expires_at_ms = expires;
    hd_log(HD_LOG_INFO, "rotated the secret of handler %s%s%s%s under key '%s'",
           req->handler_id, req->route[0] ? " route '" : "", req->route,
           req->route[0] ? "'" : "", req->key);
  }
  call_answer(c, err, msg, &reply.base);
}

static void handle_rotate(call *c, grpc_slice body) {
  Handlers__V1__RotateSecretRequest *req =
      call_unpack(c, body, &handlers__v1__rotate_secret_request__descriptor);
  if (req && !refuse_unnamed(c, req->key, req->handler_id))
    rpc_admin_enqueue(c, run_rotate, req);
}

/* Names in pi->disabled the async webhooks of `pi` that the outbox has
 * disabled: "target" for a simple handler's, else the route's event name.
 * Asked per route: a route that is not async has no endpoint, so the
 * outbox answers 0 for it. */
static hd_err fill_disabled(hd_outbox *o, hd_arena *a,
                            Handlers__V1__HandlerInfo *pi) {
  int simple = pi->kind != HANDLERS__V1__HANDLER_KIND__EVENT_STREAM;
  size_t n = simple ? 1 : pi->n_routes;
  if (!n)
    return HD_OK;
  pi->disabled = hd_arena_calloc(a, n, sizeof(*pi->disabled));
  if (!pi->disabled)
    return HD_ENOMEM;
  for (size_t r = 0; r < n; r++) {
    const char *route = simple ? "" : pi->routes[r]->key;
    if (hd_outbox_endpoint_disabled(o, pi->handler_id, route))
      pi->disabled[pi->n_disabled++] = (char *)(simple ? "target" : route);
  }
  return HD_OK;
}

static void run_list(call *c, void *arg) {
  Handlers__V1__ListHandlersRequest *req = arg;
  char msg[RPC_MSG_MAX] = "";
  Handlers__V1__ListHandlersReply reply =
      HANDLERS__V1__LIST_HANDLERS_REPLY__INIT;
  hd_err err = hd_grpc_control_list(c->srv->ctl, c->arena, req->key, &reply,
                                    msg, sizeof(msg));
  hd_outbox *o = c->srv->cfg.outbox;
  for (size_t i = 0; err == HD_OK && o && i < reply.n_handlers; i++)
    if (reply.handlers[i]->async)
      err = fill_disabled(o, c->arena, reply.handlers[i]);
  call_answer(c, err, msg, &reply.base);
}

static void handle_list(call *c, grpc_slice body) {
  Handlers__V1__ListHandlersRequest *req =
      call_unpack(c, body, &handlers__v1__list_handlers_request__descriptor);
  if (req)
    rpc_admin_enqueue(c, run_list, req);
}

/* Metrics only, no store: answered on the queue thread, so it stays
 * quick while the store is slow. */
static void handle_stats(call *c, grpc_slice body) {
  if (!call_unpack(c, body, &handlers__v1__get_stats_request__descriptor))
    return;
  Handlers__V1__GetStatsReply reply = HANDLERS__V1__GET_STATS_REPLY__INIT;
  char *text = hd_metrics_render();
  hd_err err = text ? hd_stats_from_text(c->arena, text, &reply) : HD_ENOMEM;
  free(text);
  call_answer(c, err, err == HD_EINVAL ? "metrics text did not parse" : "",
              &reply.base);
}

const rpc_method rpc_admin_methods[] = {
    {.path = "/handlers.v1.Handlers/AddHandler",
     .auth = RPC_AUTH_CONTROL,
     .secret = 1,
     .handle = handle_add},
    {.path = "/handlers.v1.Handlers/RemoveHandler",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_remove},
    {.path = "/handlers.v1.Handlers/ListHandlers",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_list},
    {.path = "/handlers.v1.Handlers/GetStats",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_stats},
    {.path = "/handlers.v1.Handlers/UpdateHandler",
     .auth = RPC_AUTH_CONTROL,
     .secret = 1,
     .handle = handle_update},
    {.path = "/handlers.v1.Handlers/RotateSecret",
     .auth = RPC_AUTH_CONTROL,
     .secret = 1,
     .handle = handle_rotate},
    {.path = NULL},
};
