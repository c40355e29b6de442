/*
 * outbox_admin.c - history and repair: list and get read the journal (the
 * live state overrides it for deliveries in flight); redeliver, replay and
 * enable change the queue and journal the change before they return; and
 * the figures for /metrics.
 */
#include "errmsg.h"
#include "handlerd/log.h"
#include "outbox_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- reading ------------------------------------------------------------- */

typedef struct collect {
  hd_outbox *o;
  hd_arena *a;
  hd_delivery_info *items;
  size_t n, cap;
} collect;

static const char *arena_str(hd_arena *a, const char *s) {
  return hd_arena_strdup(a, s ? s : "");
}

/* Copies `row` into the arena, with the live state when it is in flight. */
static hd_err copy_row(hd_outbox *o, hd_arena *a, const hd_delivery_row *row,
                       hd_delivery_row *out) {
  dlv *d;

  *out = *row;
  out->key = arena_str(a, row->key);
  out->handler_id = arena_str(a, row->handler_id);
  out->route = arena_str(a, row->route);
  out->event_name = arena_str(a, row->event_name);
  out->ordering_key = arena_str(a, row->ordering_key);
  out->headers = arena_str(a, row->headers);
  out->last_error = arena_str(a, row->last_error);
  out->body = NULL;
  if (row->body_len > 0) {
    unsigned char *b = hd_arena_alloc(a, row->body_len);
    if (b == NULL)
      return HD_ENOMEM;
    memcpy(b, row->body, row->body_len);
    out->body = b;
  }
  if (!out->key || !out->handler_id || !out->route || !out->event_name ||
      !out->ordering_key || !out->headers || !out->last_error)
    return HD_ENOMEM;
  pthread_mutex_lock(&o->lock);
  d = hd_strmap_get(o->live, row->id, strlen(row->id));
  if (d != NULL && d->where == DLV_IN_FLIGHT)
    out->state = HD_DELIVERY_IN_FLIGHT;
  pthread_mutex_unlock(&o->lock);
  return HD_OK;
}

static hd_err collect_row(const hd_delivery_row *row, void *ud) {
  collect *c = ud;

  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    hd_delivery_info *items = hd_arena_calloc(c->a, cap, sizeof(*items));
    if (items == NULL)
      return HD_ENOMEM;
    if (c->n > 0)
      memcpy(items, c->items, c->n * sizeof(*items));
    c->items = items;
    c->cap = cap;
  }
  memset(&c->items[c->n], 0, sizeof(c->items[c->n]));
  return copy_row(c->o, c->a, row, &c->items[c->n++].row);
}

hd_err hd_outbox_list(hd_outbox *o, const hd_delivery_filter *f, hd_arena *a,
                      hd_delivery_info **out, size_t *n, char *msg,
                      size_t msg_size) {
  collect c = {o, a, NULL, 0, 0};
  hd_err err;

  if (o == NULL || f == NULL || a == NULL || out == NULL || n == NULL)
    return HD_EINVAL;
  err = o->journal->vt->list(o->journal, f, collect_row, &c, msg, msg_size);
  if (err == HD_ENOMEM)
    hd_errmsg(msg, msg_size, err, "out of memory listing deliveries");
  *out = c.items;
  *n = c.n;
  return err;
}

typedef struct got {
  hd_outbox *o;
  hd_arena *a;
  hd_delivery_info *info;
  size_t cap;
} got;

static hd_err got_row(const hd_delivery_row *row, void *ud) {
  got *g = ud;
  return copy_row(g->o, g->a, row, &g->info->row);
}

static hd_err got_attempt(const hd_attempt_row *row, void *ud) {
  got *g = ud;
  hd_delivery_info *info = g->info;
  hd_attempt_row *at;

  if (info->n_attempts == g->cap) {
    size_t cap = g->cap ? g->cap * 2 : 8;
    hd_attempt_row *arr = hd_arena_calloc(g->a, cap, sizeof(*arr));
    if (arr == NULL)
      return HD_ENOMEM;
    if (info->n_attempts > 0)
      memcpy(arr, info->attempts, info->n_attempts * sizeof(*arr));
    info->attempts = arr;
    g->cap = cap;
  }
  at = &info->attempts[info->n_attempts++];
  *at = *row;
  at->delivery_id = info->row.id;
  at->error = arena_str(g->a, row->error);
  at->response_head = NULL;
  if (row->response_head_len > 0) {
    unsigned char *b = hd_arena_alloc(g->a, row->response_head_len);
    if (b == NULL)
      return HD_ENOMEM;
    memcpy(b, row->response_head, row->response_head_len);
    at->response_head = b;
  }
  return at->error ? HD_OK : HD_ENOMEM;
}

hd_err hd_outbox_get(hd_outbox *o, const char *id, hd_arena *a,
                     hd_delivery_info *out, char *msg, size_t msg_size) {
  got g = {o, a, out, 0};
  hd_err err;

  if (o == NULL || id == NULL || a == NULL || out == NULL)
    return HD_EINVAL;
  memset(out, 0, sizeof(*out));
  err = o->journal->vt->get(o->journal, id, got_row, got_attempt, &g, msg,
                            msg_size);
  if (err == HD_ENOTFOUND)
    return hd_errmsg(msg, msg_size, err, "no delivery with id '%s'", id);
  return err;
}

/* ---- redeliver and replay ------------------------------------------------ */

/* Journals one update of `d`'s row (unlocked; `up` holds copies). */
static hd_err journal_update(hd_outbox *o, const hd_delivery_update *up,
                             char *msg, size_t msg_size) {
  hd_journal_batch b;

  memset(&b, 0, sizeof(b));
  b.updates = up;
  b.n_updates = 1;
  return o->journal->vt->commit(o->journal, &b, msg, msg_size);
}

/* Queues a live delivery for a manual attempt now. Locked. */
static void redeliver_live(hd_outbox *o, dlv *d, int64_t now) {
  d->manual = 1;
  if (d->where == DLV_IN_FLIGHT || d->where == DLV_NOWHERE) {
    d->redo = 1; /* settled by the loop, then made again */
    return;
  }
  d->row.state = HD_DELIVERY_PENDING;
  d->row.next_ms = now;
  if (d->where == DLV_HEAP)
    ob_heap_fix(o, d);
  /* Blocked or behind its key: its endpoint's limits and order still
   * hold; it goes first when they allow. */
}

typedef struct found {
  hd_outbox *o;
  dlv *d;
} found;

static hd_err found_row(const hd_delivery_row *row, void *ud) {
  found *f = ud;
  f->d = ob_dlv_copy(row);
  return f->d ? HD_OK : HD_ENOMEM;
}

/* A delivery whose webhook is gone cannot be made again. */
static hd_err gone(const char *id, char *msg, size_t msg_size) {
  return hd_errmsg(msg, msg_size, HD_EINVAL,
                   "delivery '%s': its webhook is no longer registered (the "
                   "handler was removed or is no longer async)",
                   id);
}

hd_err hd_outbox_redeliver(hd_outbox *o, const char *id, char *msg,
                           size_t msg_size) {
  int64_t now = ob_now_ms();
  found f = {o, NULL};
  hd_delivery_update up;
  hd_err err;
  dlv *d;

  if (o == NULL || id == NULL)
    return HD_EINVAL;
  pthread_mutex_lock(&o->lock);
  d = hd_strmap_get(o->live, id, strlen(id));
  if (d != NULL && (d->name == NULL || d->name->ep == NULL)) {
    pthread_mutex_unlock(&o->lock);
    return gone(id, msg, msg_size);
  }
  if (d != NULL) {
    redeliver_live(o, d, now);
    pthread_cond_signal(&o->wake);
    pthread_mutex_unlock(&o->lock);
    return HD_OK;
  }
  pthread_mutex_unlock(&o->lock);

  err = o->journal->vt->get(o->journal, id, found_row, NULL, &f, msg, msg_size);
  if (err == HD_ENOTFOUND)
    return hd_errmsg(msg, msg_size, err, "no delivery with id '%s'", id);
  if (err != HD_OK) {
    ob_dlv_free(f.d);
    return err;
  }
  d = f.d;
  pthread_mutex_lock(&o->lock);
  ob_name *n = ob_name_get(o, d->row.handler_id, d->row.route, 0);
  int registered = n != NULL && n->ep != NULL;
  pthread_mutex_unlock(&o->lock);
  if (!registered) {
    ob_dlv_free(d);
    return gone(id, msg, msg_size);
  }
  d->row.state = HD_DELIVERY_PENDING;
  d->row.next_ms = now;
  d->row.updated_ms = now;
  d->manual = 1;
  up = (hd_delivery_update){
      d->row.id,         d->row.state,       d->row.attempts,  d->row.next_ms,
      d->row.updated_ms, d->row.last_status, d->row.last_error};
  err = journal_update(o, &up, msg, msg_size);
  if (err != HD_OK || o->shared) {
    /* Shared: the update ended any lease; whichever replica claims it
     * makes the attempt (soon: this one claims at once). */
    ob_dlv_free(d);
    pthread_mutex_lock(&o->lock);
    o->claim_now = o->claim_now || err == HD_OK;
    pthread_cond_signal(&o->wake);
    pthread_mutex_unlock(&o->lock);
    return err;
  }
  pthread_mutex_lock(&o->lock);
  if (o->stopped || hd_strmap_get(o->live, id, strlen(id)) != NULL ||
      hd_strmap_put(o->live, d->row.id, strlen(d->row.id), d) != HD_OK) {
    /* Stopped, or redelivered twice at once: the first one is queued. */
    pthread_mutex_unlock(&o->lock);
    ob_dlv_free(d);
    return HD_OK;
  }
  d->ordered = 0; /* a redelivery is not held to the order of new events */
  ob_enqueue(o, d);
  pthread_cond_signal(&o->wake);
  pthread_mutex_unlock(&o->lock);
  return HD_OK;
}

typedef struct ids {
  hd_arena *a;
  const char **ids;
  size_t n, cap;
  int more; /* the journal had more than cap */
} ids;

static hd_err collect_id(const hd_delivery_row *row, void *ud) {
  ids *l = ud;

  if (l->n == l->cap) {
    l->more = 1; /* the extra row only says there were more */
    return HD_OK;
  }
  l->ids[l->n] = hd_arena_strdup(l->a, row->id);
  return l->ids[l->n++] ? HD_OK : HD_ENOMEM;
}

hd_err hd_outbox_replay(hd_outbox *o, const char *handler_id, int64_t since_ms,
                        int64_t until_ms, int state, size_t limit,
                        size_t *replayed, int *truncated, char *msg,
                        size_t msg_size) {
  static const int finished_states[] = {HD_DELIVERY_SUCCEEDED,
                                        HD_DELIVERY_FAILED, HD_DELIVERY_DEAD};
  hd_arena *a;
  hd_err err = HD_OK;

  if (o == NULL || handler_id == NULL || replayed == NULL ||
      truncated == NULL || limit == 0)
    return HD_EINVAL;
  *replayed = 0;
  *truncated = 0;
  if ((a = hd_arena_new(4096)) == NULL)
    return HD_ENOMEM;
  for (size_t s = 0; err == HD_OK && s < 3 && !*truncated; s++) {
    size_t room = limit - *replayed;
    hd_delivery_filter f = {.handler_id = handler_id,
                            .state = state ? state : finished_states[s],
                            .since_ms = since_ms,
                            .until_ms = until_ms,
                            .limit = room + 1};
    ids l = {a, hd_arena_calloc(a, room + 1, sizeof(char *)), 0, room, 0};

    if (l.ids == NULL) {
      err = HD_ENOMEM;
      break;
    }
    err = o->journal->vt->list(o->journal, &f, collect_id, &l, msg, msg_size);
    /* The oldest first: a replay keeps the order they were made in. */
    for (size_t i = l.n; err == HD_OK && i > 0; i--) {
      err = hd_outbox_redeliver(o, l.ids[i - 1], msg, msg_size);
      if (err == HD_OK)
        (*replayed)++;
      else if (err == HD_ENOTFOUND || err == HD_EINVAL)
        err = HD_OK; /* pruned meanwhile, or its webhook is gone */
    }
    *truncated = l.more || (*replayed >= limit && !state && s < 2);
    if (state)
      break;
  }
  hd_arena_free(a);
  return err;
}

/* ---- endpoints ----------------------------------------------------------- */

hd_err hd_outbox_enable(hd_outbox *o, const char *handler_id, size_t *enabled,
                        char *msg, size_t msg_size) {
  hd_endpoint_row rows[64];
  hd_journal_batch b;
  size_t n = 0, shared_rows = 0;

  if (o == NULL || handler_id == NULL || enabled == NULL)
    return HD_EINVAL;
  pthread_mutex_lock(&o->lock);
  for (ob_name *nm = o->all_names; nm && n + shared_rows < 64;
       nm = nm->next_all) {
    if (strcmp(nm->handler_id, handler_id) != 0)
      continue;
    /* Shared: another replica may have disabled it; its health row going
     * back to healthy is what tells it (outbox_shared.c). */
    if (nm->disabled_ms == 0 && o->shared && nm->ep != NULL) {
      rows[n + shared_rows++] =
          (hd_endpoint_row){nm->handler_id, nm->route, 0, 0, 0};
      continue;
    }
    if (nm->disabled_ms == 0)
      continue;
    nm->disabled_ms = 0;
    nm->failures = 0;
    nm->first_failure_ms = 0;
    rows[n + shared_rows] =
        (hd_endpoint_row){nm->handler_id, nm->route, 0, 0, 0};
    n++;
    ob_unblock(o, nm);
    hd_log(HD_LOG_INFO, "outbox: webhook of handler %s%s%s enabled",
           nm->handler_id, nm->route[0] ? " route " : "", nm->route);
  }
  pthread_cond_signal(&o->wake);
  pthread_mutex_unlock(&o->lock);
  *enabled = n;
  if (n + shared_rows == 0)
    return HD_OK;
  /* Names are never freed while the outbox runs: the rows stay valid. */
  memset(&b, 0, sizeof(b));
  b.endpoints = rows;
  b.n_endpoints = n + shared_rows;
  return o->journal->vt->commit(o->journal, &b, msg, msg_size);
}

int hd_outbox_endpoint_disabled(hd_outbox *o, const char *handler_id,
                                const char *route) {
  ob_name *n;
  int disabled;

  if (o == NULL || handler_id == NULL)
    return 0;
  pthread_mutex_lock(&o->lock);
  n = ob_name_get(o, handler_id, route ? route : "", 0);
  disabled = n != NULL && n->ep != NULL && n->disabled_ms != 0;
  pthread_mutex_unlock(&o->lock);
  return disabled;
}

/* ---- figures ------------------------------------------------------------- */

static void oldest(void *value, void *ud) {
  dlv *d = value;
  int64_t *min = ud;
  if (*min == 0 || d->row.created_ms < *min)
    *min = d->row.created_ms;
}

void hd_outbox_get_stats(hd_outbox *o, int with_oldest, hd_outbox_stats *out) {
  int64_t min = 0;

  memset(out, 0, sizeof(*out));
  if (o == NULL)
    return;
  pthread_mutex_lock(&o->lock);
  *out = o->stats;
  out->pending = hd_strmap_count(o->live);
  out->in_flight = (size_t)o->in_flight;
  /* O(pending), under the lock: only when asked (one gauge per scrape),
   * about 2 ms at 100 000 waiting. */
  if (with_oldest)
    hd_strmap_each(o->live, oldest, &min);
  out->oldest_pending_ms = min ? ob_now_ms() - min : 0;
  for (ob_name *n = o->all_names; n; n = n->next_all)
    out->disabled_endpoints += n->ep != NULL && n->disabled_ms != 0;
  pthread_mutex_unlock(&o->lock);
}
