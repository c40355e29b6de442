/*
 * control.c - the control plane's life, the ids in use, the store, and
 * AddHandler and the replay of the store, in plain C (hd_registration).
 * Building a registration's handler is control_build.c's, the changes to a
 * registered one (remove, update, a route, a rotation) control_update.c's,
 * the checks control_check.c's, the listing and the handler that carries
 * it registered.c's. The registry is the only index of registrations; see
 * `ids` (control_internal.h) for the one thing it cannot answer.
 */
#include "control.h"
#include "control_internal.h"
#include "registry_select.h"

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
  pthread_mutex_init(&c->change, NULL);
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
  hd_ctl_synced_free(c);
  free(c->ids);
  free(c->kinds);
  free(c->ctx);
  pthread_mutex_destroy(&c->lock);
  pthread_mutex_destroy(&c->change);
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

void hd_ctl_drop_id(hd_control *c, const char *id) {
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

/* ---- the store ---------------------------------------------------------- */

/* Never a code that would blame the request or say the handler does not
 * exist: HD_EBUSY is RESOURCE_EXHAUSTED, HD_EIO UNAVAILABLE. */
hd_err hd_ctl_store_code(hd_err err) {
  return err == HD_EBUSY || err == HD_ENOMEM ? err : HD_EIO;
}

/* The only code that writes a registration to the store. `reg` is a kept
 * registration (record.spec): a generated secret is in place already, so
 * a restart signs with the same one. */
hd_err hd_ctl_persist(hd_control *c, const hd_registration *reg, const char *id,
                      char *msg, size_t msg_size) {
  char why[512] = "";
  hd_err err;

  if (!c->store || c->applying)
    return HD_OK;
  err = hd_store_put_registration(c->store, id, reg, why, sizeof(why));
  if (err != HD_OK) {
    snprintf(msg, msg_size, "cannot save the registration: %s",
             why[0] ? why : hd_strerror(err));
    hd_log(HD_LOG_ERROR, "store: cannot save handler %s under key '%s': %s", id,
           reg->key, why[0] ? why : hd_strerror(err));
    return hd_ctl_store_code(err);
  }
  if (hd_store_shared(c->store))
    hd_ctl_synced_note(c, id, reg->key, c->store->put_version);
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

/* The checks before any work: a new registration (no forced id) against
 * the limits and for UTF-8; a replayed one (forced id) only warned about
 * bad strings; then the shape. */
static hd_err check_new(hd_control *c, const hd_registration *reg,
                        const char *id, char *msg, size_t msg_size) {
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
  return err;
}

static hd_err add(hd_control *c, const hd_registration *reg, const char *id,
                  int save, hd_arena *a, hd_control_added *out, char *msg,
                  size_t msg_size) {
  hd_built b = {0};
  const char *hid = NULL;
  int saved = 0, taken = 0;
  hd_err err = check_new(c, reg, id, msg, msg_size);

  if (err == HD_OK)
    err = hd_ctl_build(c, reg, id, &b, msg, msg_size);
  if (err == HD_OK)
    hid = hd_handler_id(b.h);
  /* An id already in use (a forced id, or a random one colliding) must be
   * refused before the store's record for it is overwritten. */
  if (err == HD_OK && has_id(c, hid)) {
    snprintf(msg, msg_size, "handler '%s' is already registered", hid);
    err = HD_EEXIST;
  }
  /* The answer is ready before anything is committed: once saved and
   * registered, nothing may fail and leave the caller without its id. */
  if (err == HD_OK && out) {
    snprintf(out->handler_id, sizeof(out->handler_id), "%s", hid);
    out->secret = b.secret ? hd_arena_strdup(a, b.secret) : "";
    if (!out->secret)
      err = HD_ENOMEM;
  }
  if (err == HD_OK && save) {
    err =
        hd_ctl_persist(c, &hd_registered_record(b.h)->spec, hid, msg, msg_size);
    saved = err == HD_OK;
  }
  if (err == HD_OK) {
    err = take_id(c, hid);
    if (err == HD_EEXIST)
      snprintf(msg, msg_size, "handler '%s' is already registered", hid);
    taken = err == HD_OK;
  }
  if (err == HD_OK) {
    err = hd_registry_add_selected(c->reg, reg->key, b.h, b.sel);
    if (err == HD_EEXIST)
      snprintf(msg, msg_size, "handler '%s' is already registered", hid);
    else if (err == HD_EBUSY)
      limit_message(c->reg, reg->key, msg, msg_size);
  }
  if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  if (err != HD_OK && taken)
    hd_ctl_drop_id(c, hid);
  if (err != HD_OK && saved)
    unpersist(c, hid, reg->key);
  hd_built_clear(&b);
  return err;
}

hd_err hd_ctl_add_saved(hd_control *c, const hd_registration *reg,
                        const char *id, char *msg, size_t msg_size) {
  return add(c, reg, id, 0, NULL, NULL, msg, msg_size);
}

hd_err hd_control_add(hd_control *c, const hd_registration *reg, const char *id,
                      hd_arena *a, hd_control_added *out, char *msg,
                      size_t msg_size) {
  pthread_mutex_lock(&c->change);
  hd_err err = add(c, reg, id, 1, a, out, msg, msg_size);
  pthread_mutex_unlock(&c->change);
  return err;
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
  pthread_mutex_lock(&c->change);
  hd_err err = hd_store_load_registrations(c->store, load_one, &lc, store_msg,
                                           sizeof(store_msg));
  pthread_mutex_unlock(&c->change);
  if (err != HD_OK && why[0])
    snprintf(msg, msg_size, "%s", why);
  else if (err != HD_OK)
    snprintf(msg, msg_size, "cannot load registrations: %s",
             store_msg[0] ? store_msg : hd_strerror(err));
  *loaded = lc.loaded;
  return err;
}
