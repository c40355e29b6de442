/*
 * control_build.c - a registration into the handler the registry takes:
 * the kind table builds each target, an event-stream routes them (or
 * filters a simple one by event name), derive_old_value wraps the result,
 * and the registered handler carries the record (registered.c); the
 * selector is compiled beside it, for the set. Nothing here registers or
 * saves anything (control_internal.h).
 */
#include "control_internal.h"

#include "registry_select.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the kinds' handlers ------------------------------------------------- */

/* Builds the handler for one target through its row. `what` names it in
 * messages. A secret generated for it goes to *secret (only one per
 * request); *secret_set is raised when it signs. */
static hd_err make_target(hd_control *c, const hd_kind_site *site,
                          const hd_target_spec *t, hd_handler **out,
                          char **secret, int *secret_set, char *msg,
                          size_t msg_size) {
  const char *what = site->what;
  void *ctx = NULL;
  const hd_kind *k = hd_control_row(c, t->kind, &ctx);
  if (!k) {
    snprintf(msg, msg_size, "%s: target has %s set", what, hd_kinds_names());
    return HD_EINVAL;
  }
  if (k->needs_context && !ctx) {
    snprintf(msg, msg_size, "%s: %s targets are not supported", what, k->name);
    return HD_EUNSUPPORTED;
  }
  if (k->wants_new_secret && k->wants_new_secret(t) && *secret) {
    snprintf(msg, msg_size,
             "%s: new_secret may be asked for one %s per request", what,
             k->name);
    return HD_EINVAL;
  }
  if (k->secret_set && k->secret_set(t))
    *secret_set = 1;
  return k->build(ctx, site, t, out, secret, msg, msg_size);
}

/* A new event-stream handler, with the forced `id` when one is given. */
static hd_err new_stream(const char *id, hd_handler **out) {
  hd_err err = hd_stream_new(out);
  if (err == HD_OK && id && (err = hd_handler_set_id(*out, id)) != HD_OK) {
    hd_handler_unref(*out);
    *out = NULL;
  }
  return err;
}

/* An event name and where it is in the request. */
typedef struct named {
  const char *name;
  size_t i;
} named;

/* By name, then by place in the request. */
static int named_cmp(const void *a, const void *b) {
  const named *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* Routes `n` event names to `subs[order[k].i]` (or to `one` when `subs` is
 * NULL), sorted by name first: the stream keeps its routes in a sorted
 * array, so each route then goes at its end and n routes cost O(n log n)
 * instead of the O(n^2) of memmoves that request order can cost (300 000
 * names in reverse order took seconds). A name given twice: the later one in
 * the request wins, as it did in request order. */
static hd_err route_sorted(hd_handler *h, named *order, size_t n,
                           hd_handler *const *subs, hd_handler *one) {
  hd_err err = HD_OK;
  qsort(order, n, sizeof(*order), named_cmp);
  for (size_t k = 0; err == HD_OK && k < n; k++) {
    /* The same sub-handler for a repeated name: once is enough. */
    if (!subs && k + 1 < n && strcmp(order[k].name, order[k + 1].name) == 0)
      continue;
    err = hd_stream_route(h, order[k].name, subs ? subs[order[k].i] : one);
  }
  return err;
}

/* A simple handler, or an event-stream for a filtered or routed one, with
 * id `id` (NULL: a fresh one). The sub-handlers carry the same id so results
 * name what the caller registered. Targets are made in request order (the
 * first bad one is the one reported), routes added in name order
 * (route_sorted). */
static hd_err build(hd_control *c, const hd_registration *reg, const char *id,
                    record *rec, hd_handler **out, char **secret, char *msg,
                    size_t msg_size) {
  hd_err err;
  hd_handler *h = NULL;
  size_t n = hd_registration_has_target(reg) ? reg->n_events : reg->n_routes;
  named *order = NULL;
  hd_handler **subs = NULL;
  char fresh[HD_HANDLER_ID_MAX + 1];
  /* The id first: kinds may name state of their own by it. */
  if (id == NULL) {
    if ((err = hd_handler_random_id(fresh)) != HD_OK)
      return err;
    id = fresh;
  }
  if (hd_registration_has_target(reg)) {
    hd_handler *simple = NULL;
    hd_kind_site site = {reg->key, id, "", "target"};
    err = make_target(c, &site, &reg->target, &simple, secret, &rec->secret_set,
                      msg, msg_size);
    if (err != HD_OK)
      return err;
    if (reg->n_events == 0) {
      if (id && (err = hd_handler_set_id(simple, id)) != HD_OK) {
        hd_handler_unref(simple);
        return err;
      }
      *out = simple;
      return HD_OK;
    }
    if ((err = new_stream(id, &h)) == HD_OK)
      err = hd_handler_set_id(simple, hd_handler_id(h));
    if (err == HD_OK && !(order = malloc(n * sizeof(*order))))
      err = HD_ENOMEM;
    for (size_t i = 0; err == HD_OK && i < n; i++)
      order[i] = (named){reg->events[i], i};
    if (err == HD_OK)
      err = route_sorted(h, order, n, NULL, simple);
    hd_handler_unref(simple);
  } else {
    err = new_stream(id, &h);
    if (err == HD_OK && (!(order = malloc(n * sizeof(*order))) ||
                         !(subs = calloc(n, sizeof(*subs)))))
      err = HD_ENOMEM;
    for (size_t i = 0; err == HD_OK && i < n; i++) {
      char what[HD_EVENT_NAME_MAX + 16];
      hd_kind_site site = {reg->key, id, reg->routes[i].event, what};
      snprintf(what, sizeof(what), "route '%s'", reg->routes[i].event);
      err = make_target(c, &site, &reg->routes[i].target, &subs[i], secret,
                        &rec->secret_set, msg, msg_size);
      if (err == HD_OK)
        err = hd_handler_set_id(subs[i], hd_handler_id(h));
      order[i] = (named){reg->routes[i].event, i};
    }
    if (err == HD_OK)
      err = route_sorted(h, order, n, subs, NULL);
    for (size_t i = 0; subs && i < n; i++)
      hd_handler_unref(subs[i]);
  }
  free(order);
  free(subs);
  if (err != HD_OK) {
    hd_handler_unref(h);
    return err;
  }
  *out = h;
  return HD_OK;
}

/* ---- the registered handler ---------------------------------------------- */

void hd_built_clear(hd_built *b) {
  hd_handler_unref(b->h);
  hd_selector_unref(b->sel);
  if (b->secret) {
    /* A generated secret is shown once: our copy goes. */
    explicit_bzero(b->secret, strlen(b->secret));
    free(b->secret);
  }
  memset(b, 0, sizeof(*b));
}

/* The selector of `reg` into *out (NULL: it has none). Compiled once here,
 * so a dispatch only matches. */
static hd_err compile_selector(const hd_registration *reg, hd_selector **out,
                               char *msg, size_t msg_size) {
  const char *text = hd_str(reg->selector);
  hd_err err;

  *out = NULL;
  if (text[0] == '\0')
    return HD_OK;
  if (msg_size)
    msg[0] = '\0';
  err = hd_selector_compile(text, out, msg, msg_size);
  if (err != HD_OK && err != HD_ENOMEM && msg_size && !msg[0])
    snprintf(msg, msg_size, "selector: %s", hd_strerror(err));
  return err;
}

hd_err hd_ctl_build(hd_control *c, const hd_registration *reg, const char *id,
                    hd_built *out, char *msg, size_t msg_size) {
  record rec = {0};
  hd_handler *built = NULL, *derived = NULL;
  hd_err err;

  memset(out, 0, sizeof(*out));
  err = compile_selector(reg, &out->sel, msg, msg_size);
  if (err == HD_OK)
    err = build(c, reg, id, &rec, &built, &out->secret, msg, msg_size);
  /* The wrapper keeps the last value per topic path, for this registration
   * alone: each handler derives from what it saw. */
  if (err == HD_OK && reg->derive_old_value)
    err = hd_derive_old_value_new(built, &derived);
  if (err == HD_OK)
    err = hd_record_fill(c, &rec, reg, out->secret);
  if (err == HD_OK)
    err = hd_registered_new(derived ? derived : built, built, &rec, &out->h);
  if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  hd_record_clear(&rec);
  hd_handler_unref(derived);
  hd_handler_unref(built);
  if (err != HD_OK)
    hd_built_clear(out);
  return err;
}
