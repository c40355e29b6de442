/*
 * registered.c - what ListHandlers shows travels with the handler: each
 * registration goes into the registry as a thin "registered" handler that
 * owns its listing (the record) and hands every call to the handler built
 * from the registration. So the registry is the only index of
 * registrations, and listing needs no lock of ours (records are immutable
 * and the registry's snapshot holds a reference).
 */
#include "control_internal.h"

#include "clock.h"
#include "utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The handler put in the registry for one registration: the record and
 * the handler it was built into. Its ops are a copy of the built handler's
 * with our handle/remove/destroy, so hd_handler_kind (and with it each
 * result's kind and the metrics label) stays the built handler's. */
typedef struct registered {
  hd_handler_ops ops;
  hd_handler *inner; /* a reference */
  record rec;
} registered;

void hd_record_clear(record *r) {
  free(r->key);
  free(r->target);
  for (size_t i = 0; i < r->n_routes; i++) {
    free(r->route_events[i]);
    free(r->route_targets[i]);
  }
  free(r->route_events);
  free(r->route_targets);
  for (size_t i = 0; i < r->n_events; i++)
    free(r->events[i]);
  free(r->events);
  hd_arena_wipe(r->spec_arena); /* its secrets */
  hd_arena_free(r->spec_arena);
  memset(r, 0, sizeof(*r));
}

/* ---- the registered handler ------------------------------------------------
 */

static hd_err registered_handle(hd_handler *h, const hd_event *ev,
                                hd_done_fn *done, void *done_data) {
  registered *r = hd_handler_user_data(h);
  /* Straight to the built handler's vtable: hd_handler_handle already timed
   * this call and names the results after our ops' kind, which is its. The
   * caller's reference on `h` keeps `r->inner` alive until `done`. */
  return hd_handler_ops_of(r->inner)->handle(r->inner, ev, done, done_data);
}

static hd_err registered_remove(hd_handler *h, const char *member_id) {
  registered *r = hd_handler_user_data(h);
  return hd_handler_remove(r->inner, member_id);
}

static void registered_destroy(hd_handler *h) {
  registered *r = hd_handler_user_data(h);
  hd_handler_unref(r->inner);
  hd_record_clear(&r->rec);
  free(r);
}

/* The registered handler around `inner` (a new reference), taking `rec`
 * (cleared on success); same id as `inner`, kind of `built`. */
hd_err hd_registered_new(hd_handler *inner, const hd_handler *built,
                         record *rec, hd_handler **out) {
  registered *r = calloc(1, sizeof(*r));
  if (!r)
    return HD_ENOMEM;
  r->ops = *hd_handler_ops_of(built);
  r->ops.handle = registered_handle;
  r->ops.remove = registered_remove;
  r->ops.destroy = registered_destroy;
  hd_err err = hd_handler_new(&r->ops, r, out);
  if (err == HD_OK &&
      (err = hd_handler_set_id(*out, hd_handler_id(inner))) != HD_OK) {
    hd_handler_unref(*out); /* destroys r, with no inner and no record yet */
    return err;
  }
  if (err != HD_OK) {
    free(r);
    return err;
  }
  r->inner = hd_handler_ref(inner);
  r->rec = *rec;
  memset(rec, 0, sizeof(*rec));
  return HD_OK;
}

/* The record of a registry member, or NULL when it is not ours. */
const record *hd_registered_record(hd_handler *member) {
  if (hd_handler_ops_of(member)->handle != registered_handle)
    return NULL;
  return &((registered *)hd_handler_user_data(member))->rec;
}

/* "<kind name>:<detail>" for a target; NULL on ENOMEM. */
static char *describe(const hd_control *c, const hd_target_spec *t) {
  const hd_kind *k = hd_control_row(c, t->kind, NULL);
  char *s = NULL;
  if (asprintf(&s, "%s:%s", k ? k->name : "", k ? hd_str(k->detail(t)) : "") <
      0)
    return NULL;
  return s;
}

/* 1 when `t` is delivered out of band. Asked of its row, which alone knows
 * what makes a target of its kind async; a row without the hook has none. */
static int target_async(const hd_control *c, const hd_target_spec *t) {
  const hd_kind *k = hd_control_row(c, t->kind, NULL);
  return k && k->is_async && k->is_async(t) ? 1 : 0;
}

hd_err hd_record_fill(const hd_control *c, record *rec,
                      const hd_registration *reg, const char *secret) {
  rec->key = strdup(reg->key);
  rec->spec_arena = hd_arena_new(512);
  if (!rec->key || !rec->spec_arena)
    return HD_ENOMEM;
  hd_err err = hd_ctl_spec_keep(c, rec->spec_arena, reg, secret,
                                real_ns() / 1000000, &rec->spec);
  if (err != HD_OK)
    return err;
  if (hd_registration_has_target(reg)) {
    rec->shape = HD_SHAPE_SIMPLE;
    rec->async = target_async(c, &reg->target);
    if (!(rec->target = describe(c, &reg->target)))
      return HD_ENOMEM;
    if (reg->n_events) {
      rec->events = calloc(reg->n_events, sizeof(char *));
      if (!rec->events)
        return HD_ENOMEM;
      for (; rec->n_events < reg->n_events; rec->n_events++)
        if (!(rec->events[rec->n_events] = strdup(reg->events[rec->n_events])))
          return HD_ENOMEM;
    }
    return HD_OK;
  }
  rec->shape = HD_SHAPE_EVENT_STREAM;
  rec->route_events = calloc(reg->n_routes, sizeof(char *));
  rec->route_targets = calloc(reg->n_routes, sizeof(char *));
  if (!rec->route_events || !rec->route_targets)
    return HD_ENOMEM;
  for (; rec->n_routes < reg->n_routes; rec->n_routes++) {
    size_t i = rec->n_routes;
    rec->async |= target_async(c, &reg->routes[i].target);
    rec->route_events[i] = strdup(reg->routes[i].event);
    rec->route_targets[i] = describe(c, &reg->routes[i].target);
    if (!rec->route_events[i] || !rec->route_targets[i]) {
      rec->n_routes++;
      return HD_ENOMEM;
    }
  }
  return HD_OK;
}

/* ---- ListHandlers ---------------------------------------------------------
 */

typedef struct list_ctx {
  hd_arena *a;
  hd_handler_info *items;
  size_t n, cap;
  hd_err err;
} list_ctx;

/* `s` copied into the arena for a listing, which must be UTF-8 for every
 * client to read it: new registrations are, but one saved before handlerd
 * checked may not be (hd_control_load restores it): its bad bytes are shown
 * as U+FFFD. NULL on ENOMEM. */
static char *list_strdup(hd_arena *a, const char *s) {
  size_t len = strlen(s);
  if (hd_utf8_valid(s, len))
    return hd_arena_strdup(a, s);
  size_t size = hd_utf8_repaired_size(len);
  char *d = size == SIZE_MAX ? NULL : hd_arena_alloc(a, size);
  if (d)
    hd_utf8_repair(d, s, len);
  return d;
}

/* 1 when `target` is a built-in that keeps state between events. */
static int stateful_target(const char *target) {
  return target && (strcmp(target, "local:count") == 0 ||
                    strcmp(target, "local:last_value") == 0);
}

/* Where the handler's state lives: "replica" when it has any (a stateful
 * built-in, derive_old_value's memory): each process keeps its own, so
 * replicas on one database count apart. "" when it has none. */
static const char *state_scope(const record *r) {
  int stateful = r->spec.derive_old_value || stateful_target(r->target);
  for (size_t i = 0; !stateful && i < r->n_routes; i++)
    stateful = stateful_target(r->route_targets[i]);
  return stateful ? "replica" : "";
}

/* Fills `hi` from `r` (registered as `id`), every string copied into the
 * arena. HD_ENOMEM. */
static hd_err info_from(hd_arena *a, const record *r, const char *id,
                        hd_handler_info *hi) {
  memset(hi, 0, sizeof(*hi));
  hi->kind = r->shape;
  hi->secret_set = r->secret_set != 0;
  hi->async = r->async != 0;
  hi->derive_old_value = r->spec.derive_old_value != 0;
  hi->state_scope = state_scope(r);
  hi->key = list_strdup(a, r->key);
  hi->handler_id = hd_arena_strdup(a, id);
  hi->target = list_strdup(a, r->target ? r->target : "");
  hi->selector = list_strdup(a, hd_str(r->spec.selector));
  if (!hi->key || !hi->handler_id || !hi->target || !hi->selector)
    return HD_ENOMEM;
  if (r->n_events) {
    hi->events = hd_arena_calloc(a, r->n_events, sizeof(char *));
    if (!hi->events)
      return HD_ENOMEM;
    for (; hi->n_events < r->n_events; hi->n_events++)
      if (!(hi->events[hi->n_events] = list_strdup(a, r->events[hi->n_events])))
        return HD_ENOMEM;
  }
  if (r->n_routes) {
    hi->routes = hd_arena_calloc(a, r->n_routes, sizeof(*hi->routes));
    if (!hi->routes)
      return HD_ENOMEM;
    for (; hi->n_routes < r->n_routes; hi->n_routes++) {
      hd_route_info *e = &hi->routes[hi->n_routes];
      e->event = list_strdup(a, r->route_events[hi->n_routes]);
      e->target = list_strdup(a, r->route_targets[hi->n_routes]);
      if (!e->event || !e->target)
        return HD_ENOMEM;
    }
  }
  return HD_OK;
}

static void list_one(const char *key, hd_handler *member, void *ud) {
  list_ctx *lc = ud;
  (void)key;
  /* The snapshot holds a reference on `member`, hence on its record. */
  const record *r = hd_registered_record(member);
  if (lc->err != HD_OK || !r)
    return;
  if (lc->n == lc->cap) {
    size_t cap = lc->cap ? lc->cap * 2 : 16;
    hd_handler_info *n = hd_arena_alloc(lc->a, cap * sizeof(*n));
    if (!n) {
      lc->err = HD_ENOMEM;
      return;
    }
    if (lc->n)
      memcpy(n, lc->items, lc->n * sizeof(*n));
    lc->items = n;
    lc->cap = cap;
  }
  lc->err = info_from(lc->a, r, hd_handler_id(member), &lc->items[lc->n]);
  if (lc->err == HD_OK)
    lc->n++;
}

hd_err hd_control_list(hd_control *c, hd_arena *a, const char *key,
                       hd_handler_list *out, char *msg, size_t msg_size) {
  list_ctx lc = {.a = a, .err = HD_OK};
  hd_err err =
      hd_registry_foreach(c->reg, key && *key ? key : NULL, list_one, &lc);
  if (err == HD_ENOKEY) {
    if (hd_control_check_lookup_utf8(key, NULL, msg, msg_size) != HD_OK)
      return HD_EINVAL;
    snprintf(msg, msg_size, "no handler registered for key '%s'", key);
    return err;
  }
  if (err == HD_OK)
    err = lc.err;
  if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  out->handlers = lc.items;
  out->n_handlers = lc.n;
  return err;
}
