/*
 * registration_pb.c - AddHandlerRequest <-> hd_registration, the listing ->
 * ListHandlersReply (registration_pb.h).
 */
#include "registration_pb.h"

#include "kinds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- request -> registration ---------------------------------------------
 */

/* `t` (may be NULL) as a target spec; strings borrowed from `t`. */
static hd_err target_from_pb(hd_arena *a, const Handlers__V1__Target *t,
                             hd_target_spec *out) {
  memset(out, 0, sizeof(*out));
  if (!t)
    return HD_OK;
  switch (t->kind_case) {
  case HANDLERS__V1__TARGET__KIND_LOCAL:
    out->kind = HD_TARGET_LOCAL;
    out->local = t->local;
    return HD_OK;
  case HANDLERS__V1__TARGET__KIND_WEBHOOK: {
    const Handlers__V1__Webhook *wh = t->webhook;
    hd_webhook_spec *w = &out->webhook;
    out->kind = HD_TARGET_WEBHOOK;
    if (!wh)
      return HD_OK;
    w->url = wh->url;
    w->secret = wh->secret;
    w->new_secret = wh->new_secret != 0;
    w->timeout_ms = wh->timeout_ms;
    w->max_attempts = wh->max_attempts;
    w->binary_mode = wh->binary_mode != 0;
    if (wh->n_headers) {
      w->headers = hd_arena_calloc(a, wh->n_headers, sizeof(*w->headers));
      if (!w->headers)
        return HD_ENOMEM;
      for (size_t i = 0; i < wh->n_headers; i++) {
        w->headers[i].name = wh->headers[i]->key;
        w->headers[i].value = wh->headers[i]->value;
      }
      w->n_headers = wh->n_headers;
    }
    w->async = wh->async != 0;
    w->ordered = wh->ordered != 0;
    if (wh->n_retry_schedule_ms) {
      /* A copy in the call's arena: the spec's lifetime is the arena's,
       * and nothing below the front may point into a protobuf message. */
      uint32_t *sched =
          hd_arena_calloc(a, wh->n_retry_schedule_ms, sizeof(*sched));
      if (!sched)
        return HD_ENOMEM;
      memcpy(sched, wh->retry_schedule_ms,
             wh->n_retry_schedule_ms * sizeof(*sched));
      w->retry_schedule_ms = sched;
      w->n_retry_schedule = wh->n_retry_schedule_ms;
    }
    w->max_inflight = wh->max_inflight;
    w->max_rps = wh->max_rps;
    return HD_OK;
  }
  default:
    return HD_OK; /* no kind set: HD_TARGET_NONE */
  }
}

hd_err hd_registration_from_pb(hd_arena *a,
                               const Handlers__V1__AddHandlerRequest *req,
                               hd_registration *out, char *msg,
                               size_t msg_size) {
  hd_err err;

  memset(out, 0, sizeof(*out));
  out->key = req->key;
  if (req->target &&
      req->target->kind_case == HANDLERS__V1__TARGET__KIND__NOT_SET) {
    snprintf(msg, msg_size, "target: target has %s set", hd_kinds_names());
    return HD_EINVAL;
  }
  if ((err = target_from_pb(a, req->target, &out->target)) != HD_OK)
    return err;
  if (req->n_routes) {
    out->routes = hd_arena_calloc(a, req->n_routes, sizeof(*out->routes));
    if (!out->routes)
      return HD_ENOMEM;
    for (size_t i = 0; i < req->n_routes; i++) {
      out->routes[i].event = req->routes[i]->key;
      err = target_from_pb(a, req->routes[i]->value, &out->routes[i].target);
      if (err != HD_OK)
        return err;
    }
    out->n_routes = req->n_routes;
  }
  out->events = (const char **)req->events;
  out->n_events = req->n_events;
  out->selector = req->selector;
  out->derive_old_value = req->derive_old_value != 0;
  return HD_OK;
}

hd_err hd_registration_from_update_pb(
    hd_arena *a, const Handlers__V1__UpdateHandlerRequest *req,
    hd_registration *out, char *msg, size_t msg_size) {
  /* The same registration as AddHandler's, numbered differently: read
   * through an AddHandlerRequest that borrows its fields, so both RPCs
   * convert alike (and a new field is added once). The route entries have
   * the same fields under another type name: copied, pointers only. */
  Handlers__V1__AddHandlerRequest add = HANDLERS__V1__ADD_HANDLER_REQUEST__INIT;
  add.key = req->key;
  add.target = req->target;
  add.events = req->events;
  add.n_events = req->n_events;
  add.selector = req->selector;
  add.derive_old_value = req->derive_old_value;
  if (req->n_routes) {
    add.routes = hd_arena_calloc(a, req->n_routes, sizeof(*add.routes));
    if (!add.routes)
      return HD_ENOMEM;
    for (size_t i = 0; i < req->n_routes; i++) {
      Handlers__V1__AddHandlerRequest__RoutesEntry *e =
          hd_arena_alloc(a, sizeof(*e));
      if (!e)
        return HD_ENOMEM;
      handlers__v1__add_handler_request__routes_entry__init(e);
      e->key = req->routes[i]->key;
      e->value = req->routes[i]->value;
      add.routes[i] = e;
    }
    add.n_routes = req->n_routes;
  }
  return hd_registration_from_pb(a, &add, out, msg, msg_size);
}

/* ---- registration -> request ----------------------------------------------
 */

/* `t` as a Target in the arena; NULL for HD_TARGET_NONE (*err HD_OK) or on
 * ENOMEM (*err HD_ENOMEM). */
static Handlers__V1__Target *target_to_pb(hd_arena *a, const hd_target_spec *t,
                                          hd_err *err) {
  Handlers__V1__Target *pt;

  *err = HD_OK;
  if (t->kind == HD_TARGET_NONE)
    return NULL;
  *err = HD_ENOMEM;
  if (!(pt = hd_arena_alloc(a, sizeof(*pt))))
    return NULL;
  handlers__v1__target__init(pt);
  if (t->kind == HD_TARGET_LOCAL) {
    pt->kind_case = HANDLERS__V1__TARGET__KIND_LOCAL;
    pt->local = (char *)(t->local ? t->local : "");
  } else if (t->kind == HD_TARGET_WEBHOOK) {
    const hd_webhook_spec *w = &t->webhook;
    Handlers__V1__Webhook *wh = hd_arena_alloc(a, sizeof(*wh));
    if (!wh)
      return NULL;
    handlers__v1__webhook__init(wh);
    wh->url = (char *)(w->url ? w->url : "");
    wh->secret = (char *)(w->secret ? w->secret : "");
    wh->new_secret = w->new_secret != 0;
    wh->timeout_ms = w->timeout_ms;
    wh->max_attempts = w->max_attempts;
    wh->binary_mode = w->binary_mode != 0;
    if (w->n_headers) {
      wh->headers = hd_arena_calloc(a, w->n_headers, sizeof(*wh->headers));
      if (!wh->headers)
        return NULL;
      for (size_t i = 0; i < w->n_headers; i++) {
        Handlers__V1__Webhook__HeadersEntry *e = hd_arena_alloc(a, sizeof(*e));
        if (!e)
          return NULL;
        handlers__v1__webhook__headers_entry__init(e);
        e->key = (char *)(w->headers[i].name ? w->headers[i].name : "");
        e->value = (char *)(w->headers[i].value ? w->headers[i].value : "");
        wh->headers[i] = e;
      }
      wh->n_headers = w->n_headers;
    }
    wh->async = w->async != 0;
    wh->ordered = w->ordered != 0;
    if (w->n_retry_schedule) {
      /* Copied: the message's field is not const, the spec's is. */
      wh->retry_schedule_ms =
          hd_arena_calloc(a, w->n_retry_schedule, sizeof(uint32_t));
      if (!wh->retry_schedule_ms)
        return NULL;
      memcpy(wh->retry_schedule_ms, w->retry_schedule_ms,
             w->n_retry_schedule * sizeof(uint32_t));
      wh->n_retry_schedule_ms = w->n_retry_schedule;
    }
    wh->max_inflight = w->max_inflight;
    wh->max_rps = w->max_rps;
    pt->kind_case = HANDLERS__V1__TARGET__KIND_WEBHOOK;
    pt->webhook = wh;
  }
  /* A kind this adapter does not know goes out as a Target with no kind. */
  *err = HD_OK;
  return pt;
}

hd_err hd_registration_to_pb(hd_arena *a, const hd_registration *reg,
                             Handlers__V1__AddHandlerRequest **out) {
  Handlers__V1__AddHandlerRequest *req = hd_arena_alloc(a, sizeof(*req));
  hd_err err;

  if (!req)
    return HD_ENOMEM;
  handlers__v1__add_handler_request__init(req);
  req->key = (char *)(reg->key ? reg->key : "");
  req->target = target_to_pb(a, &reg->target, &err);
  if (err != HD_OK)
    return err;
  if (reg->n_routes) {
    req->routes = hd_arena_calloc(a, reg->n_routes, sizeof(*req->routes));
    if (!req->routes)
      return HD_ENOMEM;
    for (size_t i = 0; i < reg->n_routes; i++) {
      Handlers__V1__AddHandlerRequest__RoutesEntry *e =
          hd_arena_alloc(a, sizeof(*e));
      if (!e)
        return HD_ENOMEM;
      handlers__v1__add_handler_request__routes_entry__init(e);
      e->key = (char *)(reg->routes[i].event ? reg->routes[i].event : "");
      e->value = target_to_pb(a, &reg->routes[i].target, &err);
      if (err != HD_OK)
        return err;
      req->routes[i] = e;
    }
    req->n_routes = reg->n_routes;
  }
  if (reg->n_events) {
    req->events = hd_arena_calloc(a, reg->n_events, sizeof(char *));
    if (!req->events)
      return HD_ENOMEM;
    for (size_t i = 0; i < reg->n_events; i++)
      req->events[i] = (char *)(reg->events[i] ? reg->events[i] : "");
    req->n_events = reg->n_events;
  }
  req->selector = (char *)(reg->selector ? reg->selector : "");
  req->derive_old_value = reg->derive_old_value != 0;
  *out = req;
  return HD_OK;
}

/* ---- listing -> reply ------------------------------------------------------
 */

hd_err hd_handler_list_to_pb(hd_arena *a, const hd_handler_list *l,
                             Handlers__V1__ListHandlersReply *reply) {
  reply->n_handlers = 0;
  reply->handlers = NULL;
  if (!l->n_handlers)
    return HD_OK;
  reply->handlers = hd_arena_calloc(a, l->n_handlers, sizeof(*reply->handlers));
  if (!reply->handlers)
    return HD_ENOMEM;
  for (size_t i = 0; i < l->n_handlers; i++) {
    const hd_handler_info *hi = &l->handlers[i];
    Handlers__V1__HandlerInfo *pi = hd_arena_alloc(a, sizeof(*pi));
    if (!pi)
      return HD_ENOMEM;
    handlers__v1__handler_info__init(pi);
    pi->key = (char *)hi->key;
    pi->handler_id = (char *)hi->handler_id;
    pi->kind = hi->kind == HD_SHAPE_EVENT_STREAM
                   ? HANDLERS__V1__HANDLER_KIND__EVENT_STREAM
                   : HANDLERS__V1__HANDLER_KIND__SIMPLE;
    pi->target = (char *)(hi->target ? hi->target : "");
    pi->secret_set = hi->secret_set != 0;
    pi->async = hi->async != 0;
    pi->selector = (char *)(hi->selector ? hi->selector : "");
    pi->derive_old_value = hi->derive_old_value != 0;
    pi->state_scope = (char *)(hi->state_scope ? hi->state_scope : "");
    /* pi->disabled is the outbox's to say: grpc/admin.c fills it. */
    pi->events = (char **)hi->events;
    pi->n_events = hi->n_events;
    if (hi->n_routes) {
      pi->routes = hd_arena_calloc(a, hi->n_routes, sizeof(*pi->routes));
      if (!pi->routes)
        return HD_ENOMEM;
      for (size_t r = 0; r < hi->n_routes; r++) {
        Handlers__V1__HandlerInfo__RoutesEntry *e =
            hd_arena_alloc(a, sizeof(*e));
        if (!e)
          return HD_ENOMEM;
        handlers__v1__handler_info__routes_entry__init(e);
        e->key = (char *)hi->routes[r].event;
        e->value = (char *)hi->routes[r].target;
        pi->routes[r] = e;
      }
      pi->n_routes = hi->n_routes;
    }
    reply->handlers[i] = pi;
    reply->n_handlers = i + 1;
  }
  return HD_OK;
}

/* ---- the calls -------------------------------------------------------------
 */

hd_err hd_pb_check_reencode(const ProtobufCMessage *req, const char *outcome,
                            char *msg, size_t msg_size) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *bytes = malloc(len ? len : 1);
  if (!bytes)
    return HD_ENOMEM;
  protobuf_c_message_pack(req, bytes);
  ProtobufCMessage *back =
      protobuf_c_message_unpack(req->descriptor, NULL, len, bytes);
  explicit_bzero(bytes, len); /* may hold a secret */
  free(bytes);
  if (!back) {
    snprintf(msg, msg_size,
             "the request does not survive re-encoding (a malformed "
             "unknown field?): %s",
             outcome);
    return HD_EINVAL;
  }
  protobuf_c_message_free_unpacked(back, NULL);
  return HD_OK;
}

hd_err
hd_registration_pb_check_reencode(const Handlers__V1__AddHandlerRequest *req,
                                  char *msg, size_t msg_size) {
  return hd_pb_check_reencode(&req->base, "not registered", msg, msg_size);
}

hd_err hd_grpc_control_add(hd_control *c, hd_arena *a,
                           const Handlers__V1__AddHandlerRequest *req,
                           Handlers__V1__AddHandlerReply *reply, char *msg,
                           size_t msg_size) {
  hd_registration reg;
  hd_control_added added;
  /* Room for the reply's id before anything is committed: once registered,
   * nothing may fail and leave the caller without its id. */
  char *id = hd_arena_alloc(a, sizeof(added.handler_id));
  hd_err err =
      id ? hd_registration_pb_check_reencode(req, msg, msg_size) : HD_ENOMEM;

  if (err == HD_OK)
    err = hd_registration_from_pb(a, req, &reg, msg, msg_size);
  if (err == HD_OK)
    err = hd_control_add(c, &reg, NULL, a, &added, msg, msg_size);
  if (err != HD_OK) {
    if (err == HD_ENOMEM && msg_size && !msg[0])
      snprintf(msg, msg_size, "out of memory");
    return err;
  }
  memcpy(id, added.handler_id, sizeof(added.handler_id));
  reply->handler_id = id;
  reply->secret = (char *)added.secret; /* in `a` already */
  return HD_OK;
}

hd_err hd_grpc_control_update(hd_control *c, hd_arena *a,
                              const Handlers__V1__UpdateHandlerRequest *req,
                              Handlers__V1__UpdateHandlerReply *reply,
                              char *msg, size_t msg_size) {
  hd_registration reg;
  const char *secret = "";
  hd_err err =
      hd_pb_check_reencode(&req->base, "nothing changed", msg, msg_size);

  if (err == HD_OK)
    err = hd_registration_from_update_pb(a, req, &reg, msg, msg_size);
  if (err == HD_OK)
    err = hd_control_update(c, req->key, req->handler_id, &reg, a, &secret, msg,
                            msg_size);
  if (err != HD_OK) {
    if (err == HD_ENOMEM && msg_size && !msg[0])
      snprintf(msg, msg_size, "out of memory");
    return err;
  }
  reply->secret = (char *)secret; /* in `a` already */
  return HD_OK;
}

hd_err hd_grpc_control_list(hd_control *c, hd_arena *a, const char *key,
                            Handlers__V1__ListHandlersReply *reply, char *msg,
                            size_t msg_size) {
  hd_handler_list l = {0};
  hd_err err = hd_control_list(c, a, key, &l, msg, msg_size);
  if (err == HD_OK)
    err = hd_handler_list_to_pb(a, &l, reply);
  if (err == HD_ENOMEM && msg_size && !msg[0])
    snprintf(msg, msg_size, "out of memory");
  return err;
}
