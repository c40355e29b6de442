/*
 * store_v1_request.c - AddHandlerRequest bytes (schema 1) ->
 * hd_registration. This file must go on reading what the release of
 * schema 1 wrote, whatever handlers.proto becomes: fields may be added
 * there, never renumbered (the API promises that to clients too).
 *
 * A Target present but with no kind set and an absent Target both become
 * HD_TARGET_NONE: the control plane refused both, so no saved row has
 * either where it matters.
 */
#include "store_v1_request.h"
#include "store_decode.h"

#include "handlers/v1/handlers.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef Handlers__V1__AddHandlerRequest pb_req;
typedef Handlers__V1__Target pb_target;
typedef Handlers__V1__Webhook pb_webhook;

static const char *copy(hd_arena *a, const char *s, hd_err *err) {
  char *c = hd_arena_strdup(a, s ? s : "");
  if (!c)
    *err = HD_ENOMEM;
  return c;
}

static hd_err dec_target(hd_arena *a, const pb_target *pt, hd_target_spec *t) {
  hd_err err = HD_OK;
  memset(t, 0, sizeof(*t));
  if (!pt)
    return HD_OK;
  if (pt->kind_case == HANDLERS__V1__TARGET__KIND_LOCAL) {
    t->kind = HD_TARGET_LOCAL;
    t->local = copy(a, pt->local, &err);
  } else if (pt->kind_case == HANDLERS__V1__TARGET__KIND_WEBHOOK &&
             pt->webhook) {
    const pb_webhook *pw = pt->webhook;
    hd_webhook_spec *w = &t->webhook;
    t->kind = HD_TARGET_WEBHOOK;
    w->url = copy(a, pw->url, &err);
    w->secret = copy(a, pw->secret, &err);
    if (hd_store_dec_webhook_plain(a, w, pw->new_secret, pw->timeout_ms,
                                   pw->max_attempts, pw->binary_mode,
                                   pw->n_headers) != HD_OK)
      return HD_ENOMEM;
    for (size_t i = 0; i < pw->n_headers; i++) {
      w->headers[i].name = copy(a, pw->headers[i]->key, &err);
      w->headers[i].value = copy(a, pw->headers[i]->value, &err);
    }
    w->n_headers = pw->n_headers;
  }
  return err;
}

hd_err hd_store_v1_decode(const void *buf, size_t len, hd_arena *a,
                          hd_registration *out, char *why, size_t why_size) {
  hd_err err = HD_OK;
  memset(out, 0, sizeof(*out));
  pb_req *req = handlers__v1__add_handler_request__unpack(
      hd_arena_pb_allocator(a), len, buf);
  if (!req) {
    if (why && why_size)
      snprintf(why, why_size, "not a valid AddHandlerRequest (%zu bytes)", len);
    return HD_EINVAL;
  }
  out->key = copy(a, req->key, &err);
  if (err == HD_OK)
    err = dec_target(a, req->target, &out->target);
  if (err == HD_OK && req->n_routes &&
      !(out->routes = hd_arena_calloc(a, req->n_routes, sizeof(*out->routes))))
    err = HD_ENOMEM;
  for (size_t i = 0; err == HD_OK && i < req->n_routes; i++) {
    out->routes[i].event = copy(a, req->routes[i]->key, &err);
    if (err == HD_OK)
      err = dec_target(a, req->routes[i]->value, &out->routes[i].target);
    out->n_routes = i + 1;
  }
  if (err == HD_OK && req->n_events &&
      !(out->events = hd_arena_calloc(a, req->n_events, sizeof(*out->events))))
    err = HD_ENOMEM;
  for (size_t i = 0; err == HD_OK && i < req->n_events; i++) {
    out->events[i] = copy(a, req->events[i], &err);
    out->n_events = i + 1;
  }
  return err;
}
