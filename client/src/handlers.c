/*
 * handlerctl client: handler administration - AddHandler, UpdateHandler,
 * RemoveHandler (whole or one route), RotateSecret and ListHandlers - and
 * the conversion of hc_handler_spec to the requests' protobuf (shared by
 * AddHandler and UpdateHandler) and of HandlerInfo to plain C.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- hc_handler_spec -> protobuf ------------------------------------------
 */

/* Storage for one protobuf Target built from an hc_target. */
typedef struct pb_target {
  Handlers__V1__Target target;
  Handlers__V1__Webhook webhook;
  Handlers__V1__Webhook__HeadersEntry *entries;
  Handlers__V1__Webhook__HeadersEntry **headers;
} pb_target;

/* Fills `t` from `in`; returns 0 when `in` names no target, 1 when it does,
 * -1 on ENOMEM. Free with pb_target_clear. */
static int pb_target_init(pb_target *t, const hc_target *in) {
  memset(t, 0, sizeof *t);
  handlers__v1__target__init(&t->target);
  if (in->local != NULL) {
    t->target.kind_case = HANDLERS__V1__TARGET__KIND_LOCAL;
    t->target.local = (char *)in->local;
    return 1;
  }
  if (in->webhook == NULL)
    return 0;
  const hc_webhook *w = in->webhook;
  handlers__v1__webhook__init(&t->webhook);
  t->webhook.url = (char *)(w->url != NULL ? w->url : "");
  t->webhook.secret = (char *)(w->secret != NULL ? w->secret : "");
  t->webhook.new_secret = w->new_secret != 0;
  t->webhook.timeout_ms = w->timeout_ms;
  t->webhook.max_attempts = w->max_attempts;
  t->webhook.binary_mode = w->binary_mode != 0;
  t->webhook.async = w->async != 0;
  t->webhook.ordered = w->ordered != 0;
  /* protobuf-c only reads the array while packing: the cast is safe. */
  t->webhook.n_retry_schedule_ms =
      w->retry_schedule_ms != NULL ? w->n_retry_schedule : 0;
  t->webhook.retry_schedule_ms = (uint32_t *)w->retry_schedule_ms;
  t->webhook.max_inflight = w->max_inflight;
  t->webhook.max_rps = w->max_rps;
  if (w->n_headers > 0) {
    t->entries = calloc(w->n_headers, sizeof *t->entries);
    t->headers = calloc(w->n_headers, sizeof *t->headers);
    if (t->entries == NULL || t->headers == NULL)
      return -1;
    for (size_t i = 0; i < w->n_headers; i++) {
      handlers__v1__webhook__headers_entry__init(&t->entries[i]);
      t->entries[i].key =
          (char *)(w->headers[i].name ? w->headers[i].name : "");
      t->entries[i].value =
          (char *)(w->headers[i].value ? w->headers[i].value : "");
      t->headers[i] = &t->entries[i];
    }
    t->webhook.n_headers = w->n_headers;
    t->webhook.headers = t->headers;
  }
  t->target.kind_case = HANDLERS__V1__TARGET__KIND_WEBHOOK;
  t->target.webhook = &t->webhook;
  return 1;
}

static void pb_target_clear(pb_target *t) {
  free(t->entries);
  free(t->headers);
}

/* A route's map entry. AddHandlerRequest and UpdateHandlerRequest each have
 * their own entry type, with the same fields in the same order: one builder
 * fills both through `add` (protobuf-c reads the fields at the offsets the
 * entry's descriptor gives, which are the same). */
typedef union pb_route_entry {
  Handlers__V1__AddHandlerRequest__RoutesEntry add;
  Handlers__V1__UpdateHandlerRequest__RoutesEntry update;
} pb_route_entry;

/* The protobuf of one hc_handler_spec: its target (when it names one) and
 * one Target per route, in the spec's order, each in a routes map entry of
 * the request's type. */
typedef struct pb_spec {
  pb_target target;
  int has_target;
  pb_target *routes;
  size_t n_routes; /* initialised, so cleared */
  pb_route_entry *entries;
  ProtobufCMessage **entry_ptrs; /* the request's routes */
} pb_spec;

/* A spec the library can send: the counts have their arrays. */
static int spec_ok(const hc_handler_spec *spec) {
  return spec != NULL && (spec->n_routes == 0 || spec->routes != NULL) &&
         (spec->n_events == 0 || spec->events != NULL);
}

static const char *or_empty(const char *s) {
  return s != NULL ? s : "";
}

/* Builds `s` from `spec`, the routes as entries of `entry_desc`; HC_ENOMEM
 * leaves what was built for pb_spec_clear. */
static hc_err pb_spec_init(pb_spec *s, const hc_handler_spec *spec,
                           const ProtobufCMessageDescriptor *entry_desc) {
  memset(s, 0, sizeof *s);
  int has = pb_target_init(&s->target, &spec->target);
  if (has < 0)
    return HC_ENOMEM;
  s->has_target = has;
  if (spec->n_routes == 0)
    return HC_OK;
  s->routes = calloc(spec->n_routes, sizeof *s->routes);
  s->entries = calloc(spec->n_routes, sizeof *s->entries);
  s->entry_ptrs = calloc(spec->n_routes, sizeof *s->entry_ptrs);
  if (s->routes == NULL || s->entries == NULL || s->entry_ptrs == NULL)
    return HC_ENOMEM;
  for (size_t i = 0; i < spec->n_routes; i++) {
    s->n_routes = i + 1;
    /* A route naming no target is sent as an empty Target: the server
     * refuses it. */
    if (pb_target_init(&s->routes[i], &spec->routes[i].target) < 0)
      return HC_ENOMEM;
    pb_route_entry *e = &s->entries[i];
    protobuf_c_message_init(entry_desc, e);
    e->add.key = (char *)or_empty(spec->routes[i].event);
    e->add.value = &s->routes[i].target;
    s->entry_ptrs[i] = &e->add.base;
  }
  return HC_OK;
}

static void pb_spec_clear(pb_spec *s) {
  pb_target_clear(&s->target);
  for (size_t i = 0; i < s->n_routes; i++)
    pb_target_clear(&s->routes[i]);
  free(s->routes);
  free(s->entries);
  free(s->entry_ptrs);
}

/* Fills the fields AddHandlerRequest and UpdateHandlerRequest share (the
 * same names in two generated types) from `spec` and its protobuf `s`. The
 * routes are protobuf-c's array of message pointers, which it reads as
 * ProtobufCMessage pointers whatever the field's type. */
#define PB_SPEC_FIELDS(req, spec, s)                                           \
  do {                                                                         \
    (req).key = (char *)or_empty((spec)->key);                                 \
    (req).n_events = (spec)->n_events;                                         \
    (req).events = (char **)(spec)->events;                                    \
    (req).selector = (char *)or_empty((spec)->selector);                       \
    (req).derive_old_value = (spec)->derive_old_value != 0;                    \
    (req).target = (s).has_target ? &(s).target.target : NULL;                 \
    (req).n_routes = (s).n_routes;                                             \
    (req).routes = (void *)(s).entry_ptrs;                                     \
  } while (0)

/* Sends `spec` as an AddHandlerRequest or, given `id`, as the
 * UpdateHandlerRequest of handler `id`; the reply as hc__call_pb gives it. */
static hc_err send_spec(hc_conn *c, const char *id, const hc_handler_spec *spec,
                        int deadline_ms, ProtobufCMessage **reply,
                        hc_status *st) {
  pb_spec s;
  hc_err err = pb_spec_init(
      &s, spec,
      id == NULL
          ? &handlers__v1__add_handler_request__routes_entry__descriptor
          : &handlers__v1__update_handler_request__routes_entry__descriptor);
  Handlers__V1__AddHandlerRequest add = HANDLERS__V1__ADD_HANDLER_REQUEST__INIT;
  Handlers__V1__UpdateHandlerRequest update =
      HANDLERS__V1__UPDATE_HANDLER_REQUEST__INIT;
  PB_SPEC_FIELDS(add, spec, s);
  PB_SPEC_FIELDS(update, spec, s);
  update.handler_id = (char *)or_empty(id);
  if (err != HC_OK)
    hc__local_error(st, err);
  else if (id == NULL)
    err = hc__call_pb(c, HC_METHOD_ADD, &add.base,
                      &handlers__v1__add_handler_reply__descriptor, deadline_ms,
                      reply, st);
  else
    err = hc__call_pb(c, HC_METHOD_UPDATE, &update.base,
                      &handlers__v1__update_handler_reply__descriptor,
                      deadline_ms, reply, st);
  pb_spec_clear(&s);
  return err;
}

/* A copy of a reply's secret for *out ("" or absent: NULL). -1 on ENOMEM. */
static int secret_copy(const char *secret, char **out) {
  *out = NULL;
  if (secret == NULL || *secret == '\0')
    return 0;
  *out = strdup(secret);
  return *out != NULL ? 0 : -1;
}

/* ---- AddHandler ---------------------------------------------------------- */

hc_err hc_add_handler(hc_conn *c, const hc_handler_spec *spec, int deadline_ms,
                      char **id_out, char **secret_out, hc_status *st) {
  if (id_out != NULL)
    *id_out = NULL;
  if (secret_out != NULL)
    *secret_out = NULL;
  if (c == NULL || !spec_ok(spec) || id_out == NULL)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__AddHandlerReply *reply = NULL;
  hc_err err =
      send_spec(c, NULL, spec, deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;

  char *id = hc__strdup(reply->handler_id);
  char *secret = NULL;
  int nomem = secret_out != NULL && secret_copy(reply->secret, &secret) != 0;
  handlers__v1__add_handler_reply__free_unpacked(reply, NULL);
  if (id == NULL || nomem) {
    free(id);
    return hc__local_error(st, HC_ENOMEM);
  }
  *id_out = id;
  if (secret_out != NULL)
    *secret_out = secret;
  return HC_OK;
}

hc_err hc_add_local(hc_conn *c, const char *key, const char *function,
                    int deadline_ms, char **id_out, hc_status *st) {
  if (function == NULL)
    return hc__local_error(st, HC_EINVAL);
  hc_handler_spec spec = {.key = key, .target = {.local = function}};
  return hc_add_handler(c, &spec, deadline_ms, id_out, NULL, st);
}

/* ---- UpdateHandler ------------------------------------------------------- */

hc_err hc_update_handler(hc_conn *c, const char *id,
                         const hc_handler_spec *spec, int deadline_ms,
                         char **secret_out, hc_status *st) {
  if (secret_out != NULL)
    *secret_out = NULL;
  if (c == NULL || !spec_ok(spec))
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__UpdateHandlerReply *reply = NULL;
  hc_err err = send_spec(c, or_empty(id), spec, deadline_ms,
                         (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;

  char *secret = NULL;
  int nomem = secret_out != NULL && secret_copy(reply->secret, &secret) != 0;
  handlers__v1__update_handler_reply__free_unpacked(reply, NULL);
  if (nomem)
    return hc__local_error(st, HC_ENOMEM);
  if (secret_out != NULL)
    *secret_out = secret;
  return HC_OK;
}

/* ---- RemoveHandler ------------------------------------------------------- */

hc_err hc_remove_route(hc_conn *c, const char *key, const char *id,
                       const char *route, int deadline_ms, hc_status *st) {
  if (c == NULL)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__RemoveHandlerRequest req =
      HANDLERS__V1__REMOVE_HANDLER_REQUEST__INIT;
  req.key = (char *)or_empty(key);
  req.handler_id = (char *)or_empty(id);
  req.route = (char *)or_empty(route);
  Handlers__V1__RemoveHandlerReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_REMOVE, &req.base,
                           &handlers__v1__remove_handler_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err == HC_OK)
    handlers__v1__remove_handler_reply__free_unpacked(reply, NULL);
  return err;
}

hc_err hc_remove_handler(hc_conn *c, const char *key, const char *id,
                         int deadline_ms, hc_status *st) {
  return hc_remove_route(c, key, id, NULL, deadline_ms, st);
}

/* ---- RotateSecret -------------------------------------------------------- */

hc_err hc_rotate_secret(hc_conn *c, const hc_rotate_spec *spec, int deadline_ms,
                        char **secret_out, int64_t *expires_at_ms_out,
                        hc_status *st) {
  if (secret_out != NULL)
    *secret_out = NULL;
  if (expires_at_ms_out != NULL)
    *expires_at_ms_out = 0;
  if (c == NULL || spec == NULL || secret_out == NULL || spec->overlap_ms < 0)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__RotateSecretRequest req =
      HANDLERS__V1__ROTATE_SECRET_REQUEST__INIT;
  req.key = (char *)or_empty(spec->key);
  req.handler_id = (char *)or_empty(spec->handler_id);
  req.route = (char *)or_empty(spec->route);
  req.overlap_ms = spec->overlap_ms;
  req.secret = (char *)or_empty(spec->secret);
  Handlers__V1__RotateSecretReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_ROTATE_SECRET, &req.base,
                           &handlers__v1__rotate_secret_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;
  char *secret = hc__strdup(reply->secret);
  int64_t expires = reply->previous_expires_at_ms;
  handlers__v1__rotate_secret_reply__free_unpacked(reply, NULL);
  if (secret == NULL)
    return hc__local_error(st, HC_ENOMEM);
  *secret_out = secret;
  if (expires_at_ms_out != NULL)
    *expires_at_ms_out = expires;
  return HC_OK;
}

/* ---- ListHandlers -------------------------------------------------------- */

static void handler_info_clear(hc_handler_info *h) {
  free(h->key);
  free(h->handler_id);
  free(h->target);
  for (size_t i = 0; i < h->n_routes; i++) {
    free(h->routes[i].event);
    free(h->routes[i].target);
  }
  free(h->routes);
  for (size_t i = 0; i < h->n_events; i++)
    free(h->events[i]);
  free(h->events);
  for (size_t i = 0; i < h->n_disabled; i++)
    free(h->disabled[i]);
  free(h->disabled);
  free(h->selector);
}

void hc_handler_list_free(hc_handler_list *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->count; i++)
    handler_info_clear(&l->items[i]);
  free(l->items);
  free(l);
}

/* Converts one HandlerInfo; on failure what was allocated stays in `h` for
 * handler_info_clear. */
static hc_err handler_info_from_pb(const Handlers__V1__HandlerInfo *pb,
                                   hc_handler_info *h) {
  h->kind = (hc_handler_kind)pb->kind;
  h->secret_set = pb->secret_set != 0;
  h->async = pb->async != 0;
  h->derive_old_value = pb->derive_old_value != 0;
  h->key = hc__strdup(pb->key);
  h->handler_id = hc__strdup(pb->handler_id);
  h->target = hc__strdup(pb->target);
  h->selector = hc__strdup(pb->selector);
  if (h->key == NULL || h->handler_id == NULL || h->target == NULL ||
      h->selector == NULL)
    return HC_ENOMEM;
  if (pb->n_routes > 0) {
    h->routes = calloc(pb->n_routes, sizeof *h->routes);
    if (h->routes == NULL)
      return HC_ENOMEM;
    for (size_t i = 0; i < pb->n_routes; i++) {
      h->n_routes = i + 1;
      h->routes[i].event = hc__strdup(pb->routes[i]->key);
      h->routes[i].target = hc__strdup(pb->routes[i]->value);
      if (h->routes[i].event == NULL || h->routes[i].target == NULL)
        return HC_ENOMEM;
    }
  }
  hc_err err =
      hc__strings_copy(pb->events, pb->n_events, &h->events, &h->n_events);
  if (err == HC_OK)
    err = hc__strings_copy(pb->disabled, pb->n_disabled, &h->disabled,
                           &h->n_disabled);
  return err;
}

hc_err hc_list_handlers(hc_conn *c, const char *key, int deadline_ms,
                        hc_handler_list **out, hc_status *st) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || out == NULL)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__ListHandlersRequest req =
      HANDLERS__V1__LIST_HANDLERS_REQUEST__INIT;
  req.key = (char *)or_empty(key);
  Handlers__V1__ListHandlersReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_LIST, &req.base,
                           &handlers__v1__list_handlers_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;
  hc_handler_list *l = calloc(1, sizeof *l);
  if (l != NULL && reply->n_handlers > 0) {
    l->items = calloc(reply->n_handlers, sizeof *l->items);
    if (l->items == NULL) {
      free(l);
      l = NULL;
    }
  }
  err = l == NULL ? HC_ENOMEM : HC_OK;
  for (size_t i = 0; err == HC_OK && i < reply->n_handlers; i++) {
    l->count = i + 1;
    err = handler_info_from_pb(reply->handlers[i], &l->items[i]);
  }
  handlers__v1__list_handlers_reply__free_unpacked(reply, NULL);
  if (err != HC_OK) {
    hc_handler_list_free(l);
    return hc__local_error(st, err);
  }
  *out = l;
  return HC_OK;
}
