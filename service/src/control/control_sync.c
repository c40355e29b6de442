/*
 * control_sync.c - a replica's registry kept in step with a shared store
 * (store.h: changes), for several handlerd replicas on one database.
 *
 * Each registration carries the version of the change that last wrote it.
 * This replica remembers the version it wrote or applied for each id
 * (c->versions); a sync walks the store's records: an id it does not have
 * is built and registered, a newer version replaces its handler in place
 * (same id, same place), an id the walk did not meet is removed. Its own
 * writes come back with the version it noted, so they are not rebuilt
 * (a count built-in keeps its count). Nothing a sync does is written back
 * (c->applying).
 */
#include "control.h"
#include "control_internal.h"

#include "handlerd/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void synced_free(void *value) {
  synced_reg *r = value;
  if (r)
    free(r->key);
  free(r);
}

void hd_ctl_synced_free(hd_control *c) {
  hd_strmap_free(c->versions);
  c->versions = NULL;
}

void hd_ctl_synced_note(hd_control *c, const char *id, const char *key,
                        int64_t version) {
  size_t len = strlen(id);
  synced_reg *r;

  if (!key) {
    if (c->versions)
      synced_free(hd_strmap_take(c->versions, id, len));
    return;
  }
  if (!c->versions && !(c->versions = hd_strmap_new(synced_free)))
    goto oom;
  r = hd_strmap_get(c->versions, id, len);
  if (!r) {
    if (!(r = calloc(1, sizeof(*r))))
      goto oom;
    snprintf(r->id, sizeof(r->id), "%s", id);
    if (hd_strmap_put(c->versions, id, len, r) != HD_OK) {
      free(r);
      goto oom;
    }
  }
  if (!r->key || strcmp(r->key, key) != 0) {
    char *k = strdup(key);
    if (!k)
      goto oom;
    free(r->key);
    r->key = k;
  }
  r->version = version;
  r->seen = c->sync_gen;
  return;
oom:
  hd_log(HD_LOG_WARN, "sync: out of memory noting handler %s", id);
}

typedef struct sync_ctx {
  hd_control *c;
  size_t changed;
} sync_ctx;

static hd_err apply_one(const char *id, int64_t version,
                        const hd_registration *reg, void *ud) {
  sync_ctx *sc = ud;
  hd_control *c = sc->c;
  synced_reg *r =
      c->versions ? hd_strmap_get(c->versions, id, strlen(id)) : NULL;
  char msg[512] = "";
  hd_err err = HD_OK;

  if (r)
    r->seen = c->sync_gen;
  if (!reg || (r && r->version >= version))
    return HD_OK; /* unchanged, or our own change */
  if (r && strcmp(r->key, reg->key) == 0) {
    err = hd_ctl_replace_locked(c, reg->key, id, reg, msg, sizeof(msg));
  } else {
    if (r)
      (void)hd_ctl_remove_locked(c, r->key, id, msg, sizeof(msg));
    err = hd_ctl_add_saved(c, reg, id, msg, sizeof(msg));
  }
  if (err == HD_OK) {
    sc->changed++;
  } else {
    /* e.g. a plugin this replica lacks: the others serve it. Noted all
     * the same, so it is said once per version, not at every sync. */
    hd_log(HD_LOG_ERROR,
           "sync: handler %s under key '%s' from the database cannot be "
           "registered on this replica: %s",
           id, reg->key, msg[0] ? msg : hd_strerror(err));
  }
  hd_ctl_synced_note(c, id, reg->key, version);
  return HD_OK;
}

typedef struct gone_list {
  unsigned gen;
  synced_reg **items;
  size_t n, cap;
  int oom;
} gone_list;

static void collect_gone(void *value, void *ud) {
  synced_reg *r = value;
  gone_list *g = ud;
  if (r->seen == g->gen)
    return;
  if (g->n == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 16;
    void *n = realloc(g->items, cap * sizeof(*g->items));
    if (!n) {
      g->oom = 1;
      return;
    }
    g->items = n;
    g->cap = cap;
  }
  g->items[g->n++] = r;
}

hd_err hd_control_sync(hd_control *c, size_t *changed, char *msg,
                       size_t msg_size) {
  sync_ctx sc = {c, 0};
  gone_list g = {0};
  int64_t latest = 0;
  hd_err err;

  if (changed)
    *changed = 0;
  if (!hd_store_shared(c->store))
    return HD_OK;
  pthread_mutex_lock(&c->change);
  c->applying = 1;
  c->sync_gen++;
  err = c->store->vt->changes(c->store, c->synced, apply_one, &sc, &latest, msg,
                              msg_size);
  if (err == HD_OK && c->versions) {
    g.gen = c->sync_gen;
    hd_strmap_each(c->versions, collect_gone, &g);
    for (size_t i = 0; i < g.n; i++) {
      char why[256] = "";
      synced_reg *r = g.items[i];
      /* Out of the map first: the removal forgets the id there too. */
      hd_strmap_take(c->versions, r->id, strlen(r->id));
      hd_err rerr = hd_ctl_remove_locked(c, r->key, r->id, why, sizeof(why));
      if (rerr != HD_OK && rerr != HD_ENOTFOUND && rerr != HD_ENOKEY)
        hd_log(HD_LOG_ERROR, "sync: cannot remove handler %s: %s", r->id,
               why[0] ? why : hd_strerror(rerr));
      synced_free(r);
      sc.changed++;
    }
    free(g.items);
  }
  if (err == HD_OK && latest > c->synced)
    c->synced = latest;
  c->applying = 0;
  pthread_mutex_unlock(&c->change);
  if (changed)
    *changed = sc.changed;
  return err;
}
