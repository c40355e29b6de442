/*
 * outbox.c - the outbox's life, accepting events and the thread's loop.
 *
 * One thread does the writing: each turn it takes every accept and every
 * finished attempt that arrived since the last turn and journals them in
 * one transaction (group commit: with N calls waiting, one fsync serves
 * all of them), then answers the accepts, requeues what failed and starts
 * what is due (outbox_queue.c). While it commits, new work piles up for the
 * next turn, so a slow disk makes batches bigger, not calls slower one by
 * one.
 */
#include "errmsg.h"
#include "handlerd/log.h"
#include "outbox_internal.h"

#include <errno.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PRUNE_EVERY_MS (60 * 1000)

int64_t ob_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ob_dlv_free(dlv *d) {
  if (d == NULL)
    return;
  free((char *)d->row.key);
  free((char *)d->row.handler_id);
  free((char *)d->row.route);
  free((char *)d->row.event_name);
  free((char *)d->row.ordering_key);
  free((char *)d->row.headers);
  free((char *)d->row.last_error);
  hd_webhook_body_unref(d->body);
  hd_results_free(d->results);
  free(d);
}

static void outbox_free(hd_outbox *o) {
  ob_names_free(o);
  hd_strmap_free(o->live);
  free(o->heap);
  hd_webhook_engine_unref(o->engine);
  pthread_mutex_destroy(&o->lock);
  pthread_cond_destroy(&o->wake);
  free(o);
}

void ob_unref(hd_outbox *o) {
  if (atomic_fetch_sub(&o->refs, 1) == 1)
    outbox_free(o);
}

hd_err hd_outbox_new(const hd_outbox_config *cfg, hd_journal *journal,
                     hd_webhook_engine *engine, hd_outbox **out) {
  hd_outbox *o;

  if (cfg == NULL || journal == NULL || engine == NULL || out == NULL)
    return HD_EINVAL;
  o = calloc(1, sizeof(*o));
  if (o == NULL)
    return HD_ENOMEM;
  atomic_init(&o->refs, 1);
  o->cfg = *cfg;
  o->journal = journal;
  o->engine = hd_webhook_engine_ref(engine);
  pthread_mutex_init(&o->lock, NULL);
  pthread_cond_init(&o->wake, NULL);
  o->live = hd_strmap_new(NULL);
  o->names = hd_strmap_new(NULL);
  o->rng = (uint64_t)ob_now_ms() * 2654435761u | 1;
  if (o->live == NULL || o->names == NULL) {
    ob_unref(o);
    return HD_ENOMEM;
  }
  *out = o;
  return HD_OK;
}

/* ---- copies ------------------------------------------------------------ */

/* A delivery owning copies of `row`'s strings and a body of its bytes;
 * NULL on ENOMEM. */
static dlv *dlv_from_row(const hd_delivery_row *row) {
  dlv *d = calloc(1, sizeof(*d));
  char *text;

  if (d == NULL)
    return NULL;
  d->row = *row;
  d->row.key = strdup(row->key);
  d->row.handler_id = strdup(row->handler_id);
  d->row.route = strdup(row->route);
  d->row.event_name = strdup(row->event_name);
  d->row.ordering_key = strdup(row->ordering_key);
  d->row.headers = strdup(row->headers);
  d->row.last_error = strdup(row->last_error ? row->last_error : "");
  text = malloc(row->body_len + 1);
  if (text != NULL) {
    if (row->body_len > 0)
      memcpy(text, row->body, row->body_len);
    text[row->body_len] = '\0';
    d->body = hd_webhook_body_take(text);
  }
  if (!d->row.key || !d->row.handler_id || !d->row.route ||
      !d->row.event_name || !d->row.ordering_key || !d->row.headers ||
      !d->row.last_error || !d->body) {
    ob_dlv_free(d);
    return NULL;
  }
  d->row.body = (const unsigned char *)hd_webhook_body_text(d->body);
  d->row.body_len = row->body_len;
  return d;
}

dlv *ob_dlv_copy(const hd_delivery_row *row) {
  return dlv_from_row(row);
}

/* ---- accept ------------------------------------------------------------- */

/* A UUIDv7 (RFC 9562): Unix milliseconds first, then randomness. Ids made
 * one after another sort one after another, so the journal's unique index
 * on them grows at its end instead of at random pages (random v4 ids cost
 * a page read and write each once the index outgrows the cache). */
static void new_delivery_id(char out[HD_DELIVERY_ID_LEN + 1]) {
  unsigned char b[16];
  uint64_t ms = (uint64_t)ob_now_ms();

  if (getrandom(b + 6, 10, 0) != 10) { /* no entropy: unique by the clock */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    memcpy(b + 6, &ts.tv_nsec,
           sizeof(ts.tv_nsec) < 10 ? sizeof(ts.tv_nsec) : 10);
  }
  for (int i = 0; i < 6; i++)
    b[i] = (unsigned char)(ms >> (40 - 8 * i));
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x70); /* version 7 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
  snprintf(out, HD_DELIVERY_ID_LEN + 1,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
           "%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
           b[11], b[12], b[13], b[14], b[15]);
}

/* A delivery for `ev`, not yet queued; NULL on ENOMEM. */
static dlv *accept_make(const hd_outbox_event *ev, hd_outbox_accepted_fn *cb,
                        void *data) {
  const hd_outbox_endpoint *ep = ev->ep;
  hd_delivery_row row;
  dlv *d;

  memset(&row, 0, sizeof(row));
  new_delivery_id(row.id);
  snprintf(row.event_id, sizeof(row.event_id), "%s",
           ev->event_id ? ev->event_id : "");
  row.key = ep->key;
  row.handler_id = ep->name->handler_id;
  row.route = ep->name->route;
  row.event_name = ev->event_name ? ev->event_name : "";
  row.ordering_key = ev->ordering_key ? ev->ordering_key : "";
  row.body = ev->body;
  row.body_len = ev->body_len;
  row.headers = ev->headers ? ev->headers : "";
  row.created_ms = row.next_ms = row.updated_ms = ob_now_ms();
  row.state = HD_DELIVERY_PENDING;
  row.last_error = "";
  row.max_inflight = ep->max_inflight;
  row.max_rps = ep->max_rps;
  d = dlv_from_row(&row);
  if (d == NULL)
    return NULL;
  d->ordered = ep->ordered && row.ordering_key[0] != '\0';
  d->accepted = cb;
  d->accepted_data = data;
  return d;
}

/* Queues the `n` deliveries of `list` for the next commit, all or none:
 * they are taken by the same turn, so they share one transaction. On a
 * refusal they are left to the caller. */
static hd_err accept_queue(hd_outbox *o, dlv *list, dlv *tail, size_t n,
                           char *msg, size_t msg_size) {
  hd_err err = HD_OK;
  size_t live;

  pthread_mutex_lock(&o->lock);
  live = hd_strmap_count(o->live);
  if (o->stopping || !o->running) {
    err = hd_errmsg(msg, msg_size, HD_EUNSUPPORTED,
                    "handlerd is shutting down: the event was not accepted");
  } else if (live + n > o->cfg.max_pending) {
    err = hd_errmsg(msg, msg_size, HD_EBUSY,
                    "%zu async deliveries are waiting (the limit is %zu): the "
                    "event was not accepted",
                    live, o->cfg.max_pending);
  } else {
    for (dlv *d = list; err == HD_OK && d; d = d->next) {
      if (hd_strmap_put(o->live, d->row.id, strlen(d->row.id), d) != HD_OK) {
        for (dlv *u = list; u != d; u = u->next)
          hd_strmap_take(o->live, u->row.id, strlen(u->row.id));
        err = hd_errmsg(msg, msg_size, HD_ENOMEM,
                        "out of memory accepting the event");
      }
    }
  }
  if (err == HD_OK) {
    if (o->accepts_tail)
      o->accepts_tail->next = list;
    else
      o->accepts = list;
    o->accepts_tail = tail;
    pthread_cond_signal(&o->wake);
  }
  pthread_mutex_unlock(&o->lock);
  return err;
}

hd_err hd_outbox_accept(hd_outbox *o, const hd_outbox_event *ev,
                        hd_outbox_accepted_fn *cb, void *data, char *msg,
                        size_t msg_size) {
  hd_err err;
  dlv *d;

  if (o == NULL || ev == NULL || ev->ep == NULL || cb == NULL)
    return HD_EINVAL;
  d = accept_make(ev, cb, data);
  if (d == NULL)
    return hd_errmsg(msg, msg_size, HD_ENOMEM,
                     "out of memory accepting the event");
  err = accept_queue(o, d, d, 1, msg, msg_size);
  if (err != HD_OK)
    ob_dlv_free(d);
  return err;
}

/* ---- batches: one Dispatch's deliveries in one transaction ------------- */

struct hd_outbox_batch {
  hd_outbox *o;
  dlv *head, *tail;
  size_t n;
};

hd_outbox_batch *hd_outbox_batch_new(hd_outbox *o) {
  hd_outbox_batch *b = o ? calloc(1, sizeof(*b)) : NULL;
  if (b != NULL)
    b->o = o;
  return b;
}

hd_outbox *hd_outbox_batch_outbox(const hd_outbox_batch *b) {
  return b->o;
}

hd_err hd_outbox_batch_add(hd_outbox_batch *b, const hd_outbox_event *ev,
                           hd_outbox_accepted_fn *cb, void *data) {
  dlv *d;

  if (b == NULL || ev == NULL || ev->ep == NULL || cb == NULL)
    return HD_EINVAL;
  if ((d = accept_make(ev, cb, data)) == NULL)
    return HD_ENOMEM;
  if (b->tail)
    b->tail->next = d;
  else
    b->head = d;
  b->tail = d;
  b->n++;
  return HD_OK;
}

void hd_outbox_batch_submit(hd_outbox_batch *b) {
  char msg[256] = "";
  hd_err err = HD_OK;
  dlv *next;

  if (b == NULL)
    return;
  if (b->n > 0)
    err = accept_queue(b->o, b->head, b->tail, b->n, msg, sizeof(msg));
  if (err != HD_OK) { /* refused at once: every caller hears why */
    for (dlv *d = b->head; d; d = next) {
      next = d->next;
      d->accepted(d->accepted_data, err, NULL, msg);
      ob_dlv_free(d);
    }
  }
  free(b);
}

/* ---- the loop ------------------------------------------------------------ */

/* What one turn journals, in one transaction. */
typedef struct turn {
  dlv *accepts;
  size_t n_accepts;
  dlv *finished;
  size_t n_finished;
  int *done; /* per finished: 1 when it ended */
  hd_journal_batch batch;
  hd_endpoint_row *endpoints;
  ob_name **endpoint_names;
} turn;

static void turn_free(turn *t) {
  free(t->batch.inserts);
  free((void *)t->batch.updates);
  for (size_t i = 0; i < t->batch.n_attempts; i++)
    free((void *)t->batch.attempts[i].response_head);
  free((void *)t->batch.attempts);
  free(t->endpoints);
  free(t->endpoint_names);
  free(t->done);
}

/* Takes the turn's work and fills the batch. Locked. */
static hd_err turn_take(hd_outbox *o, turn *t, int64_t now) {
  size_t n_names = 0, k = 0;
  hd_delivery_update *ups;
  hd_attempt_row *ats;

  memset(t, 0, sizeof(*t));
  for (dlv *d = o->accepts; d; d = d->next)
    t->n_accepts++;
  for (dlv *d = o->finished; d; d = d->next)
    t->n_finished++;
  for (ob_name *n = o->all_names; n; n = n->next_all)
    n_names++;
  t->batch.inserts = calloc(t->n_accepts + 1, sizeof(hd_delivery_row));
  ups = calloc(t->n_finished + 1, sizeof(*ups));
  ats = calloc(t->n_finished + 1, sizeof(*ats));
  t->done = calloc(t->n_finished + 1, sizeof(int));
  t->endpoints = calloc(n_names + 1, sizeof(*t->endpoints));
  t->endpoint_names = calloc(n_names + 1, sizeof(*t->endpoint_names));
  t->batch.updates = ups;
  t->batch.attempts = ats;
  t->batch.endpoints = t->endpoints;
  if (!t->batch.inserts || !ups || !ats || !t->done || !t->endpoints ||
      !t->endpoint_names)
    return HD_ENOMEM; /* the work stays where it is for the next turn */
  t->accepts = o->accepts;
  t->finished = o->finished;
  o->accepts = o->accepts_tail = NULL;
  o->finished = o->finished_tail = NULL;
  size_t held = hd_strmap_count(o->live) - t->n_accepts;
  for (dlv *d = t->accepts; d; d = d->next) {
    /* Shared: an ordered or rate-limited delivery is claimed (at the head
     * of its key, within the webhook's limits) by whichever replica; any
     * other is this replica's to deliver, up to OB_LEASE_AHEAD held at
     * once: the rest wait unleased for a claim (this replica's as its
     * queue drains, or another's), so renewing stays cheap. */
    d->row.ordered = d->ordered;
    d->row.leased = o->shared && !d->ordered && !d->row.max_inflight &&
                    d->row.max_rps <= 0 && held < OB_LEASE_AHEAD;
    held += d->row.leased;
    t->batch.inserts[t->batch.n_inserts++] = d->row;
  }
  for (dlv *d = t->finished; d; d = d->next, k++) {
    t->done[k] = ob_settle(o, d, now, &ups[k], &ats[k]);
    t->batch.n_updates++;
    if (d->outcome.attempted)
      ats[t->batch.n_attempts++] = ats[k];
  }
  for (ob_name *n = o->all_names; n; n = n->next_all) {
    if (!n->health_dirty)
      continue;
    n->health_dirty = 0;
    t->endpoint_names[t->batch.n_endpoints] = n;
    t->endpoints[t->batch.n_endpoints++] =
        (hd_endpoint_row){n->handler_id, n->route, n->failures,
                          n->first_failure_ms, n->disabled_ms};
  }
  return HD_OK;
}

/* After the commit (ok or not): notes the accepts (answered unlocked by
 * answer_accepts, in the order they came), requeues attempts. Locked. */
static void turn_apply(hd_outbox *o, turn *t, hd_err err) {
  size_t k = 0;
  dlv *next;

  for (dlv *d = t->accepts; d; d = d->next, k++) {
    if (err == HD_OK) {
      d->row.seq = t->batch.inserts[k].seq;
      o->stats.accepted++;
    } else {
      hd_strmap_take(o->live, d->row.id, strlen(d->row.id));
    }
  }
  k = 0;
  for (dlv *d = t->finished; d; d = next, k++) {
    next = d->next;
    d->next = NULL;
    /* A journal failure is logged by the loop; the in-memory queue goes
     * on: a restart makes the attempt again (at least once). */
    ob_after_attempt(o, d, t->done[k]);
  }
}

/* Calls each accept's callback, then (locked) queues the committed ones. */
static void answer_accepts(hd_outbox *o, dlv *list, hd_err err,
                           const char *why) {
  dlv *next;

  for (dlv *d = list; d; d = d->next)
    d->accepted(d->accepted_data, err, err == HD_OK ? d->row.id : NULL, why);
  pthread_mutex_lock(&o->lock);
  for (dlv *d = list; d; d = next) {
    next = d->next;
    d->next = NULL;
    d->accepted = NULL;
    if (err == HD_OK && o->shared && !d->row.leased) {
      hd_strmap_take(o->live, d->row.id, strlen(d->row.id));
      ob_dlv_free(d);
      o->claim_now = 1; /* its claim may well be ours */
    } else if (err == HD_OK) {
      ob_enqueue(o, d);
    } else {
      ob_dlv_free(d);
    }
  }
  pthread_mutex_unlock(&o->lock);
}

static void prune(hd_outbox *o, int64_t now) {
  char msg[512] = "";
  size_t n = 0;
  hd_err err = o->journal->vt->prune(o->journal, now - o->cfg.retention_ms, &n,
                                     msg, sizeof(msg));
  if (err != HD_OK)
    hd_log(HD_LOG_WARN, "outbox: cannot prune old deliveries: %s",
           msg[0] ? msg : hd_strerror(err));
  else if (n > 0)
    hd_log(HD_LOG_INFO, "outbox: pruned %zu finished deliveries", n);
}

/* One turn: commit what piled up, then start what is due. Called locked,
 * returns locked; `next_due` gets when the next delivery is due (0: none
 * that can start now). */
static void turn_run(hd_outbox *o, int64_t *next_due) {
  int64_t now = ob_now_ms();
  dlv *jobs = NULL, *answer = NULL; /* accepts to answer, in order */
  char msg[512] = "";
  hd_err err = HD_OK;
  turn t;

  if (o->accepts || o->finished) {
    err = turn_take(o, &t, now);
    if (err != HD_OK) {
      turn_free(&t);
      struct timespec later = {.tv_sec = (now + 1000) / 1000,
                               .tv_nsec = ((now + 1000) % 1000) * 1000000};
      hd_log(HD_LOG_ERROR, "outbox: out of memory: retrying in a second");
      pthread_cond_timedwait(&o->wake, &o->lock, &later);
      return;
    }
    pthread_mutex_unlock(&o->lock);
    if (err == HD_OK &&
        (t.batch.n_inserts || t.batch.n_updates || t.batch.n_endpoints)) {
      err = o->journal->vt->commit(o->journal, &t.batch, msg, sizeof(msg));
      if (err != HD_OK)
        hd_log(HD_LOG_ERROR, "outbox: cannot journal %zu deliveries: %s",
               t.batch.n_inserts + t.batch.n_updates,
               msg[0] ? msg : hd_strerror(err));
    }
    pthread_mutex_lock(&o->lock);
    if (err == HD_OK &&
        (t.batch.n_inserts || t.batch.n_updates || t.batch.n_endpoints))
      o->stats.commits++;
    turn_apply(o, &t, err);
    answer = t.accepts;
    turn_free(&t);
    pthread_mutex_unlock(&o->lock);
    if (answer)
      answer_accepts(o, answer, err, msg[0] ? msg : hd_strerror(err));
    pthread_mutex_lock(&o->lock);
  }
  if (o->shared && !o->stopping)
    ob_shared_turn(o, ob_now_ms());
  if (!o->stopping) {
    *next_due = ob_start_due(o, ob_now_ms(), &jobs);
    if (jobs) {
      pthread_mutex_unlock(&o->lock);
      ob_submit(o, jobs);
      pthread_mutex_lock(&o->lock);
    }
  }
  if (now >= o->next_prune_ms) {
    o->next_prune_ms = now + PRUNE_EVERY_MS;
    pthread_mutex_unlock(&o->lock);
    prune(o, now);
    pthread_mutex_lock(&o->lock);
  }
}

static void *outbox_thread(void *arg) {
  hd_outbox *o = arg;

  pthread_mutex_lock(&o->lock);
  for (;;) {
    int64_t next_due = 0;
    turn_run(o, &next_due);
    if (o->stopping && !o->accepts && !o->finished)
      break;
    if (o->accepts || o->finished || (o->shared && o->claim_now))
      continue;
    if (next_due == 0 || next_due > o->next_prune_ms)
      next_due = o->next_prune_ms;
    if (o->shared && ob_shared_next(o) < next_due)
      next_due = ob_shared_next(o);
    if (next_due > ob_now_ms()) {
      struct timespec until = {.tv_sec = next_due / 1000,
                               .tv_nsec = (next_due % 1000) * 1000000};
      pthread_cond_timedwait(&o->wake, &o->lock, &until);
    }
  }
  pthread_mutex_unlock(&o->lock);
  return NULL;
}

/* ---- run and stop -------------------------------------------------------- */

static hd_err load_endpoint(const hd_endpoint_row *row, void *ud) {
  hd_outbox *o = ud;
  ob_name *n = ob_name_get(o, row->handler_id, row->route, 1);

  if (n == NULL)
    return HD_ENOMEM;
  n->failures = row->failures;
  n->first_failure_ms = row->first_failure_ms;
  n->disabled_ms = row->disabled_ms;
  return HD_OK;
}

static hd_err load_delivery(const hd_delivery_row *row, void *ud) {
  hd_outbox *o = ud;
  dlv *d = dlv_from_row(row);
  ob_name *n;

  if (d == NULL)
    return HD_ENOMEM;
  n = ob_name_get(o, row->handler_id, row->route, 1);
  if (n == NULL ||
      hd_strmap_put(o->live, d->row.id, strlen(d->row.id), d) != HD_OK) {
    ob_dlv_free(d);
    return HD_ENOMEM;
  }
  /* An attempt in flight at the crash is made again. */
  if (d->row.state == HD_DELIVERY_IN_FLIGHT)
    d->row.state = HD_DELIVERY_PENDING;
  /* Ordered or not is the endpoint's setting when it was accepted; the
   * endpoints are registered by now (registrations load first). */
  d->ordered = n->ep && n->ep->ordered && d->row.ordering_key[0] != '\0';
  ob_enqueue(o, d);
  return HD_OK;
}

hd_err hd_outbox_run(hd_outbox *o, char *msg, size_t msg_size) {
  hd_err err;
  size_t n;

  if (o == NULL)
    return HD_EINVAL;
  err = o->journal->vt->load_endpoints(o->journal, load_endpoint, o, msg,
                                       msg_size);
  o->shared = o->journal->vt->claim != NULL;
  if (err == HD_OK && o->shared) {
    /* Nothing is loaded: what this replica delivers it claims. */
    pthread_mutex_lock(&o->lock);
    o->claim_now = 1;
    n = 0;
    pthread_mutex_unlock(&o->lock);
  } else if (err == HD_OK) {
    pthread_mutex_lock(&o->lock);
    err = o->journal->vt->load_pending(o->journal, load_delivery, o, msg,
                                       msg_size);
    n = hd_strmap_count(o->live);
    pthread_mutex_unlock(&o->lock);
  }
  if (err != HD_OK)
    return err;
  pthread_mutex_lock(&o->lock);
  o->running = 1;
  o->next_prune_ms = ob_now_ms() + 1000;
  if (pthread_create(&o->thread, NULL, outbox_thread, o) != 0) {
    o->running = 0;
    pthread_mutex_unlock(&o->lock);
    return hd_errmsg(msg, msg_size, HD_EIO, "cannot start the outbox thread");
  }
  pthread_mutex_unlock(&o->lock);
  if (n > 0)
    hd_log(HD_LOG_INFO, "outbox: %zu deliveries resume", n);
  return HD_OK;
}

/* At stop: an attempt in flight is freed by its completion. */
static void free_live(void *value, void *ud) {
  dlv *d = value;
  (void)ud;
  if (d->where != DLV_IN_FLIGHT)
    ob_dlv_free(d);
}

void hd_outbox_stop(hd_outbox *o) {
  if (o == NULL)
    return;
  pthread_mutex_lock(&o->lock);
  o->stopping = 1;
  pthread_cond_signal(&o->wake);
  pthread_mutex_unlock(&o->lock);
  if (o->running)
    pthread_join(o->thread, NULL);
  if (o->running && o->shared)
    ob_shared_release_all(o);
  pthread_mutex_lock(&o->lock);
  o->stopped = 1;
  /* Attempts still in flight are freed by their completion (they hold a
   * reference on the outbox); the rest go now. */
  hd_strmap_each(o->live, free_live, NULL);
  o->finished = o->finished_tail = NULL; /* freed above: all are live */
  pthread_mutex_unlock(&o->lock);
  ob_unref(o);
}
