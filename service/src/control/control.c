/*
 * control.c - AddHandler, RemoveHandler and ListHandlers over the registry,
 * the kind table and the store, in plain C (hd_registration): building a
 * registration's handler, the store, add/load/remove. The checks are in
 * control_check.c, the listing and the handler that carries it in
 * registered.c. The registry is the only index of registrations; see `ids`
 * (control_internal.h) for the one thing it cannot answer.
 */
#include "control.h"
#include "control_internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- life ------------------------------------------------------------------
 */

hd_err hd_control_new(hd_registry *reg, hd_functions *fns, hd_control **out) {
  hd_control *c = calloc(1, sizeof(*c));
  if (!c)
    return HD_ENOMEM;
  const hd_kind *const *rows = hd_kinds_all(&c->n_kinds);
  c->kinds = calloc(c->n_kinds, sizeof(*c->kinds));
  c->ctx = calloc(c->n_kinds, sizeof(*c->ctx));
  if (!c->kinds || !c->ctx) {
    free(c->kinds);
    free(c->ctx);
    free(c);
    return HD_ENOMEM;
  }
  memcpy(c->kinds, rows, c->n_kinds * sizeof(*c->kinds));
  c->reg = reg;
  hd_control_limits_init(&c->limits);
  pthread_mutex_init(&c->lock, NULL);
  hd_control_set_kind_context(c, HD_TARGET_LOCAL, fns);
  *out = c;
  return HD_OK;
}

void hd_control_limits_init(hd_control_limits *l) {
  l->max_events = 256;
  l->max_routes = 256;
  l->max_headers = 64;
}

void hd_control_set_limits(hd_control *c, const hd_control_limits *l) {
  c->limits = *l;
}

void hd_control_free(hd_control *c) {
  if (!c)
    return;
  free(c->ids);
  free(c->kinds);
  free(c->ctx);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

size_t hd_control_count(hd_control *c) {
  pthread_mutex_lock(&c->lock);
  size_t n = c->n_ids;
  pthread_mutex_unlock(&c->lock);
  return n;
}

void hd_control_set_store(hd_control *c, hd_store *store) {
  c->store = store;
}

/* The slot of `kind` in c->kinds, or -1. */
static long kind_slot(const hd_control *c, hd_target_kind kind) {
  for (size_t i = 0; i < c->n_kinds; i++) {
    if (c->kinds[i]->kind == kind)
      return (long)i;
  }
  return -1;
}

const hd_kind *hd_control_row(const hd_control *c, hd_target_kind kind,
                              void **ctx) {
  long i = kind_slot(c, kind);
  if (i < 0)
    return NULL;
  if (ctx)
    *ctx = c->ctx[i];
  return c->kinds[i];
}

void hd_control_set_kind_context(hd_control *c, hd_target_kind kind,
                                 void *ctx) {
  long i = kind_slot(c, kind);
  if (i >= 0)
    c->ctx[i] = ctx;
}

hd_err hd_control_set_kind(hd_control *c, const hd_kind *k, void *ctx) {
  long i = k ? kind_slot(c, k->kind) : -1;
  if (i < 0)
    return HD_EINVAL;
  c->kinds[i] = k;
  c->ctx[i] = ctx;
  return HD_OK;
}

/* ---- the ids in use --------------------------------------------------------
 */

/* Index of `id` in the sorted ids, or where it would go. Locked. */
static size_t find_id(const hd_control *c, const char *id, int *found) {
  size_t lo = 0, hi = c->n_ids;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int cmp = strcmp(c->ids[mid], id);
    if (cmp == 0) {
      *found = 1;
      return mid;
    }
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = 0;
  return lo;
}

/* Takes `id`: HD_EEXIST when it is in use already. */
static hd_err take_id(hd_control *c, const char *id) {
  int found;
  hd_err err = HD_OK;
  pthread_mutex_lock(&c->lock);
  size_t at = find_id(c, id, &found);
  if (found) {
    err = HD_EEXIST;
  } else if (c->n_ids == c->cap_ids) {
    size_t cap = c->cap_ids ? c->cap_ids * 2 : 16;
    void *n = realloc(c->ids, cap * sizeof(*c->ids));
    if (!n)
      err = HD_ENOMEM;
    else {
      c->ids = n;
      c->cap_ids = cap;
    }
  }
  if (err == HD_OK) {
    memmove(&c->ids[at + 1], &c->ids[at], (c->n_ids - at) * sizeof(*c->ids));
    snprintf(c->ids[at], sizeof(c->ids[at]), "%s", id);
    c->n_ids++;
  }
  pthread_mutex_unlock(&c->lock);
  return err;
}

static int has_id(hd_control *c, const char *id) {
  int found;
  pthread_mutex_lock(&c->lock);
  find_id(c, id, &found);
  pthread_mutex_unlock(&c->lock);
  return found;
}

static void drop_id(hd_control *c, const char *id) {
  int found;
  pthread_mutex_lock(&c->lock);
  size_t at = find_id(c, id, &found);
  if (found) {
    memmove(&c->ids[at], &c->ids[at + 1],
            (c->n_ids - at - 1) * sizeof(*c->ids));
    c->n_ids--;
  }
  pthread_mutex_unlock(&c->lock);
}

/* ---- building ----------------------------------------------------------- */

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

/* ---- the store ---------------------------------------------------------- */

/* What a store failure answers: HD_EBUSY (no room: RESOURCE_EXHAUSTED) and
 * HD_ENOMEM as they are, anything else HD_EIO (UNAVAILABLE). Never a code
 * that would blame the request or say the handler does not exist. */
static hd_err store_code(hd_err err) {
  return err == HD_EBUSY || err == HD_ENOMEM ? err : HD_EIO;
}

/* Points `t` (a copy) at the generated `secret` when it asked for one, so a
 * restart keeps signing with the same secret. */
static void keep_secret(const hd_control *c, hd_target_spec *t,
                        const char *secret) {
  const hd_kind *k = hd_control_row(c, t->kind, NULL);
  if (k && k->wants_new_secret && k->keep_secret && k->wants_new_secret(t))
    k->keep_secret(t, secret);
}

/* Saves `reg` under `id` as it must be replayed: a generated secret (when
 * there is one) replaces the new_secret flag. The only code that writes to
 * the store. */
static hd_err persist(hd_control *c, const hd_registration *reg, const char *id,
                      const char *secret, char *msg, size_t msg_size) {
  if (!c->store)
    return HD_OK;
  hd_registration copy = *reg;
  hd_route_spec *routes = NULL;
  char why[512] = "";
  hd_err err = HD_OK;
  if (secret) {
    keep_secret(c, &copy.target, secret);
    if (reg->n_routes && !(routes = malloc(reg->n_routes * sizeof(*routes)))) {
      err = HD_ENOMEM;
    } else if (reg->n_routes) {
      memcpy(routes, reg->routes, reg->n_routes * sizeof(*routes));
      for (size_t i = 0; i < reg->n_routes; i++)
        keep_secret(c, &routes[i].target, secret);
      copy.routes = routes;
    }
  }
  if (err == HD_OK)
    err = hd_store_put_registration(c->store, id, &copy, why, sizeof(why));
  free(routes);
  if (err != HD_OK) {
    snprintf(msg, msg_size, "cannot save the registration: %s",
             why[0] ? why : hd_strerror(err));
    hd_log(HD_LOG_ERROR, "store: cannot save handler %s under key '%s': %s", id,
           reg->key, why[0] ? why : hd_strerror(err));
    return store_code(err);
  }
  return HD_OK;
}

/* Forgets the saved record of a registration refused after all, or it
 * would come back at the next start. */
static void unpersist(hd_control *c, const char *id, const char *key) {
  char why[512] = "";
  hd_err err = hd_store_del(c->store, id, why, sizeof(why));
  if (err != HD_OK && err != HD_ENOTFOUND)
    hd_log(HD_LOG_ERROR,
           "store: handler %s under key '%s' was refused but stays saved "
           "(it will be restored at the next start): %s",
           id, key, why[0] ? why : hd_strerror(err));
}

/* ---- AddHandler -----------------------------------------------------------
 */

/* Says which registry limit an HD_EBUSY add ran into. */
static void limit_message(hd_registry *reg, const char *key, char *msg,
                          size_t msg_size) {
  size_t max_keys, max_per_key;
  hd_handler *set = NULL;

  hd_registry_limits(reg, &max_keys, &max_per_key);
  if (hd_registry_get(reg, key, &set) == HD_OK) {
    snprintf(msg, msg_size,
             "key '%s' already has %zu handlers, the limit "
             "(--max-handlers-per-key)",
             key, max_per_key);
    hd_handler_unref(set);
  } else {
    snprintf(msg, msg_size,
             "%zu keys are registered, the limit (--max-keys): remove one "
             "first",
             max_keys);
  }
}

static hd_err add(hd_control *c, const hd_registration *reg, const char *id,
                  int save, hd_arena *a, hd_control_added *out, char *msg,
                  size_t msg_size) {
  hd_err err = HD_OK;
  if (!id) {
    err = hd_control_check_limits(c, reg, msg, msg_size);
    if (err == HD_OK)
      err = hd_control_check_strings(c, reg, msg, msg_size);
  } else if (hd_control_check_strings(c, reg, msg, msg_size) != HD_OK) {
    /* Saved before handlerd refused such strings: restored all the same
     * (it was acknowledged), listed with U+FFFD for the bad bytes. */
    hd_log(HD_LOG_WARN,
           "handler %s under key '%s': %s; restored as it was saved (it "
           "could not be registered today): ListHandlers shows U+FFFD for "
           "the bad bytes",
           id, hd_str(reg->key), msg);
    if (msg_size)
      msg[0] = '\0';
  }
  if (err == HD_OK)
    err = hd_control_check_request(reg, msg, msg_size);
  if (err != HD_OK)
    return err;
  record rec = {0};
  hd_handler *inner = NULL, *h = NULL;
  char *secret = NULL;
  int saved = 0, taken = 0;
  err = build(c, reg, id, &rec, &inner, &secret, msg, msg_size);
  if (err == HD_OK)
    err = hd_record_fill(c, &rec, reg);
  /* An id already in use (a forced id, or a random one colliding) must be
   * refused before the store's record for it is overwritten. */
  if (err == HD_OK && has_id(c, hd_handler_id(inner))) {
    snprintf(msg, msg_size, "handler '%s' is already registered",
             hd_handler_id(inner));
    err = HD_EEXIST;
  }
  if (err == HD_OK)
    err = hd_registered_new(inner, &rec, &h);
  /* The answer is ready before anything is committed: once saved and
   * registered, nothing may fail and leave the caller without its id. */
  if (err == HD_OK && out) {
    snprintf(out->handler_id, sizeof(out->handler_id), "%s", hd_handler_id(h));
    out->secret = secret ? hd_arena_strdup(a, secret) : "";
    if (!out->secret)
      err = HD_ENOMEM;
  }
  if (err == HD_OK && save) {
    err = persist(c, reg, hd_handler_id(h), secret, msg, msg_size);
    saved = err == HD_OK;
  }
  if (err == HD_OK) {
    err = take_id(c, hd_handler_id(h));
    if (err == HD_EEXIST)
      snprintf(msg, msg_size, "handler '%s' is already registered",
               hd_handler_id(h));
    taken = err == HD_OK;
  }
  if (err == HD_OK) {
    err = hd_registry_add(c->reg, reg->key, h);
    if (err == HD_EEXIST)
      snprintf(msg, msg_size, "handler '%s' is already registered",
               hd_handler_id(h));
    else if (err == HD_EBUSY)
      limit_message(c->reg, reg->key, msg, msg_size);
  }
  if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  if (err != HD_OK && taken)
    drop_id(c, hd_handler_id(h));
  if (err != HD_OK && saved)
    unpersist(c, hd_handler_id(h), reg->key);
  hd_record_clear(&rec);
  if (secret) {
    /* A generated secret is shown once: wipe our copy. */
    memset(secret, 0, strlen(secret));
    free(secret);
  }
  hd_handler_unref(h);
  hd_handler_unref(inner);
  return err;
}

hd_err hd_control_add(hd_control *c, const hd_registration *reg, const char *id,
                      hd_arena *a, hd_control_added *out, char *msg,
                      size_t msg_size) {
  return add(c, reg, id, 1, a, out, msg, msg_size);
}

typedef struct load_ctx {
  hd_control *c;
  size_t loaded;
  char *msg; /* hd_control_load's */
  size_t msg_size;
} load_ctx;

/* Restores one saved registration. One that cannot be restored stops the
 * load (with a message naming it and why), except for a registry limit:
 * that one is logged and skipped, and stays in the store. */
static hd_err load_one(const char *id, const hd_registration *reg, void *ud) {
  load_ctx *lc = ud;
  char msg[512] = "";
  hd_err err = add(lc->c, reg, id, 0, NULL, NULL, msg, sizeof(msg));
  if (err == HD_OK) {
    lc->loaded++;
  } else if (err == HD_EBUSY) {
    hd_log(HD_LOG_ERROR,
           "store: handler %s under key '%s' is not restored: %s; it stays "
           "saved",
           id, hd_str(reg->key), msg[0] ? msg : hd_strerror(err));
    err = HD_OK;
  } else {
    snprintf(lc->msg, lc->msg_size,
             "cannot restore handler %s under key '%s': %s (it stays saved: "
             "start with the plugins and options it was registered under)",
             id, hd_str(reg->key), msg[0] ? msg : hd_strerror(err));
  }
  return err;
}

hd_err hd_control_load(hd_control *c, size_t *loaded, char *msg,
                       size_t msg_size) {
  char why[512] = "";
  load_ctx lc = {c, 0, why, sizeof(why)};
  char store_msg[512] = "";
  *loaded = 0;
  if (!c->store)
    return HD_OK;
  hd_err err = hd_store_load_registrations(c->store, load_one, &lc, store_msg,
                                           sizeof(store_msg));
  if (err != HD_OK && why[0])
    snprintf(msg, msg_size, "%s", why);
  else if (err != HD_OK)
    snprintf(msg, msg_size, "cannot load registrations: %s",
             store_msg[0] ? store_msg : hd_strerror(err));
  *loaded = lc.loaded;
  return err;
}

/* ---- RemoveHandler --------------------------------------------------------
 */

typedef struct lookup_ctx {
  const char *id;
  int found;
} lookup_ctx;

static void lookup_one(const char *key, hd_handler *member, void *ud) {
  lookup_ctx *lc = ud;
  (void)key;
  if (hd_registered_record(member) &&
      strcmp(hd_handler_id(member), lc->id) == 0)
    lc->found = 1;
}

/* HD_OK when `id` is registered under `key`, else which of the two is
 * missing (the registry answers: the members of one key). */
static hd_err lookup(hd_control *c, const char *key, const char *id) {
  lookup_ctx lc = {id, 0};
  hd_err err = hd_registry_foreach(c->reg, key, lookup_one, &lc);
  if (err != HD_OK)
    return err == HD_ENOKEY ? HD_ENOKEY : err;
  return lc.found ? HD_OK : HD_ENOTFOUND;
}

hd_err hd_control_remove(hd_control *c, const char *key, const char *id,
                         char *msg, size_t msg_size) {
  hd_err err = lookup(c, key, id);
  char why[512] = "";
  if (err != HD_OK && err != HD_ENOMEM &&
      hd_control_check_lookup_utf8(key, id, msg, msg_size) != HD_OK)
    return HD_EINVAL;
  /* Forget it durably first: a crash between the two steps must not bring
   * back a handler whose removal was acknowledged. */
  if (err == HD_OK && c->store &&
      (err = hd_store_del(c->store, id, why, sizeof(why))) != HD_OK &&
      err != HD_ENOTFOUND) {
    snprintf(msg, msg_size, "cannot delete the registration: %s",
             why[0] ? why : hd_strerror(err));
    hd_log(HD_LOG_ERROR, "store: cannot delete handler %s under key '%s': %s",
           id, key, why[0] ? why : hd_strerror(err));
    return store_code(err);
  }
  if (err == HD_OK || err == HD_ENOTFOUND)
    err = hd_registry_remove(c->reg, key, id);
  if (err == HD_ENOKEY)
    snprintf(msg, msg_size, "no handler registered for key '%s'", key);
  else if (err == HD_ENOTFOUND)
    snprintf(msg, msg_size, "no handler '%s' under key '%s'", id, key);
  else if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  else if (err == HD_OK)
    drop_id(c, id);
  return err;
}
