/*
 * outbox_queue.c - the outbox's queue in memory: a heap of deliveries by
 * the time of their next attempt, the limits and health of endpoints
 * (outbox_endpoint.c has their names and settings), per-key order for
 * ordered webhooks, and one attempt's life (the
 * job for the engine, its completion, what its outcome means).
 *
 * A delivery is in exactly one place (dlv_where): the heap, its endpoint's
 * blocked list (due, but the endpoint is disabled or at max_inflight), its
 * key's queue behind the head (ordered), or in flight. Everything here runs
 * under the outbox's lock except ob_submit and the engine's completion,
 * which takes it.
 */
#include "handlerd/log.h"
#include "outbox_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the heap (by next_ms, then seq) ----------------------------------- */

static int before(const dlv *a, const dlv *b) {
  if (a->row.next_ms != b->row.next_ms)
    return a->row.next_ms < b->row.next_ms;
  return a->row.seq < b->row.seq;
}

static void heap_set(hd_outbox *o, size_t i, dlv *d) {
  o->heap[i] = d;
  d->heap_at = i;
}

static void sift_up(hd_outbox *o, size_t i) {
  dlv *d = o->heap[i];
  while (i > 0 && before(d, o->heap[(i - 1) / 2])) {
    heap_set(o, i, o->heap[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  heap_set(o, i, d);
}

static void sift_down(hd_outbox *o, size_t i) {
  dlv *d = o->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= o->n_heap)
      break;
    if (c + 1 < o->n_heap && before(o->heap[c + 1], o->heap[c]))
      c++;
    if (!before(o->heap[c], d))
      break;
    heap_set(o, i, o->heap[c]);
    i = c;
  }
  heap_set(o, i, d);
}

void ob_heap_put(hd_outbox *o, dlv *d) {
  if (d->where == DLV_HEAP) {
    ob_heap_fix(o, d);
    return;
  }
  if (o->n_heap == o->cap_heap) {
    size_t cap = o->cap_heap ? o->cap_heap * 2 : 1024;
    dlv **h = realloc(o->heap, cap * sizeof(*h));
    if (h == NULL) { /* keep it due: it is retried at the next turn */
      hd_log(HD_LOG_ERROR, "outbox: out of memory queueing delivery %s",
             d->row.id);
      return;
    }
    o->heap = h;
    o->cap_heap = cap;
  }
  d->where = DLV_HEAP;
  heap_set(o, o->n_heap++, d);
  sift_up(o, d->heap_at);
}

void ob_heap_remove(hd_outbox *o, dlv *d) {
  size_t i = d->heap_at;
  dlv *last;

  if (d->where != DLV_HEAP)
    return;
  d->where = DLV_NOWHERE;
  last = o->heap[--o->n_heap];
  if (i == o->n_heap)
    return;
  heap_set(o, i, last);
  sift_up(o, i);
  sift_down(o, last->heap_at);
}

void ob_heap_fix(hd_outbox *o, dlv *d) {
  if (d->where != DLV_HEAP)
    return;
  sift_up(o, d->heap_at);
  sift_down(o, d->heap_at);
}

/* ---- enqueue, order ------------------------------------------------------ */

static ob_keyq *keyq_of(ob_name *n, const char *ordering_key, int create) {
  size_t len = strlen(ordering_key);
  ob_keyq *q = hd_strmap_get(n->keys, ordering_key, len);

  if (q == NULL && create && (q = calloc(1, sizeof(*q))) != NULL &&
      hd_strmap_put(n->keys, ordering_key, len, q) != HD_OK) {
    free(q);
    q = NULL;
  }
  return q;
}

void ob_enqueue(hd_outbox *o, dlv *d) {
  ob_name *n = ob_name_get(o, d->row.handler_id, d->row.route, 1);
  ob_keyq *q;

  d->name = n;
  if (d->ordered && n != NULL &&
      (q = keyq_of(n, d->row.ordering_key, 1)) != NULL) {
    int first = q->head == NULL;
    d->kq_next = NULL;
    if (q->tail)
      q->tail->kq_next = d;
    else
      q->head = d;
    q->tail = d;
    if (!first) {
      d->where = DLV_KEY_WAIT;
      return;
    }
  } else {
    d->ordered = 0;
  }
  ob_heap_put(o, d);
}

/* The key's head is done: the next one in its key goes on. */
static void keyq_advance(hd_outbox *o, dlv *d) {
  ob_keyq *q = keyq_of(d->name, d->row.ordering_key, 0);
  dlv *next;

  if (q == NULL || q->head != d)
    return;
  next = d->kq_next;
  q->head = next;
  if (next == NULL) {
    q->tail = NULL;
    free(hd_strmap_take(d->name->keys, d->row.ordering_key,
                        strlen(d->row.ordering_key)));
    return;
  }
  if (next->where == DLV_KEY_WAIT) {
    next->where = DLV_NOWHERE;
    ob_heap_put(o, next);
  }
}

/* ---- flow control -------------------------------------------------------- */

static void block(ob_name *n, dlv *d) {
  d->where = DLV_BLOCKED;
  d->next = NULL;
  if (n->blocked_tail)
    n->blocked_tail->next = d;
  else
    n->blocked_head = d;
  n->blocked_tail = d;
}

void ob_unblock(hd_outbox *o, ob_name *n) {
  dlv *d = n->blocked_head, *next;

  n->blocked_head = n->blocked_tail = NULL;
  for (; d; d = next) {
    next = d->next;
    d->next = NULL;
    d->where = DLV_NOWHERE;
    ob_heap_put(o, d);
  }
}

/* 1 when a token is there (and takes it); else *wait_ms until one is. */
static int take_token(ob_name *n, double rps, int64_t now, int64_t *wait_ms) {
  double cap = rps < 1 ? 1 : rps;

  if (n->tokens < 0) {
    n->tokens = cap;
    n->tokens_ms = now;
  }
  n->tokens += (double)(now - n->tokens_ms) * rps / 1000.0;
  if (n->tokens > cap)
    n->tokens = cap;
  n->tokens_ms = now;
  if (n->tokens >= 1) {
    n->tokens -= 1;
    return 1;
  }
  *wait_ms = (int64_t)ceil((1 - n->tokens) * 1000.0 / rps);
  if (*wait_ms < 1)
    *wait_ms = 1;
  return 0;
}

/* ---- attempts --------------------------------------------------------------
 */

static void dead_now(hd_outbox *o, dlv *d, const char *why);

int64_t ob_start_due(hd_outbox *o, int64_t now, dlv **jobs) {
  while (o->n_heap > 0 && o->in_flight < o->cfg.max_attempts_in_flight) {
    dlv *d = o->heap[0];
    ob_name *n = d->name;
    hd_outbox_endpoint *ep = n ? n->ep : NULL;
    int64_t wait_ms = 0;

    if (d->row.next_ms > now)
      return d->row.next_ms;
    ob_heap_remove(o, d);
    if (ep == NULL) {
      dead_now(o, d, "the handler is no longer registered");
      continue;
    }
    if (n->disabled_ms != 0 ||
        (ep->max_inflight && n->in_flight >= (int)ep->max_inflight)) {
      block(n, d);
      continue;
    }
    if (ep->max_rps > 0 && !take_token(n, ep->max_rps, now, &wait_ms)) {
      d->row.next_ms = now + wait_ms; /* in memory only: not a reschedule */
      ob_heap_put(o, d);
      continue;
    }
    d->where = DLV_IN_FLIGHT;
    d->started_ms = now;
    n->in_flight++;
    o->in_flight++;
    d->next = *jobs;
    *jobs = d;
  }
  return o->n_heap > 0 && o->in_flight < o->cfg.max_attempts_in_flight
             ? o->heap[0]->row.next_ms
             : 0;
}

/* The engine's completion (its thread): the outcome goes to the loop. */
static void attempt_done(hd_results *rs, void *data) {
  dlv *d = data;
  hd_outbox *o = d->owner;

  pthread_mutex_lock(&o->lock);
  if (o->stopped) {
    pthread_mutex_unlock(&o->lock);
    hd_results_free(rs);
    ob_dlv_free(d);
    ob_unref(o);
    return;
  }
  d->results = rs;
  d->took_ms = ob_now_ms() - d->started_ms;
  d->where = DLV_NOWHERE;
  d->next = NULL;
  if (o->finished_tail)
    o->finished_tail->next = d;
  else
    o->finished = d;
  o->finished_tail = d;
  pthread_cond_signal(&o->wake);
  pthread_mutex_unlock(&o->lock);
  ob_unref(o);
}

/* The job for one attempt: the event's headers, then the endpoint's. */
static hd_webhook_job *make_job(hd_outbox *o, dlv *d,
                                const hd_outbox_endpoint *ep) {
  hd_webhook_job *job = hd_webhook_job_new();
  size_t n = 0, cap = ep->n_headers + 1;
  const char *p;

  if (job == NULL)
    return NULL;
  for (p = d->row.headers; *p; p++)
    cap += *p == '\n';
  job->headers = calloc(cap, sizeof(char *));
  job->url = strdup(ep->url);
  if (job->headers == NULL || job->url == NULL)
    goto fail;
  for (p = d->row.headers; *p;) {
    const char *end = strchr(p, '\n');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len > 0 && (job->headers[n++] = strndup(p, len)) == NULL)
      goto fail_n;
    p += len + (end != NULL);
  }
  for (size_t i = 0; i < ep->n_headers; i++) {
    if ((job->headers[n++] = strdup(ep->headers[i])) == NULL)
      goto fail_n;
  }
  job->n_headers = n;
  job->body = hd_webhook_body_ref(d->body);
  memcpy(job->msg_id, d->row.event_id, sizeof(job->msg_id));
  memcpy(job->key, ep->sign_key, ep->sign_key_len);
  job->key_len = ep->sign_key_len;
  memcpy(job->prev_key, ep->prev_sign_key, ep->prev_sign_key_len);
  job->prev_key_len = ep->prev_sign_key_len;
  job->prev_until_ns = ep->prev_until_ns;
  job->timeout_ms = ep->timeout_ms > 0 ? ep->timeout_ms : 5000;
  job->max_attempts = 1; /* the schedule is ours */
  job->deadline_ns = 0;
  snprintf(job->handler_id, sizeof(job->handler_id), "%s", d->row.handler_id);
  snprintf(job->registry_key, sizeof(job->registry_key), "%s", d->row.key);
  job->done = attempt_done;
  job->done_data = d;
  job->outcome = &d->outcome;
  d->owner = o;
  return job;
fail_n:
  job->n_headers = n;
fail:
  hd_webhook_job_free(job);
  return NULL;
}

void ob_submit(hd_outbox *o, dlv *jobs) {
  dlv *next;

  for (dlv *d = jobs; d; d = next) {
    hd_webhook_job *job;
    next = d->next;
    d->next = NULL;
    memset(&d->outcome, 0, sizeof(d->outcome));
    d->outcome.retry_after_ms = -1;
    pthread_mutex_lock(&o->lock);
    job = d->name->ep ? make_job(o, d, d->name->ep) : NULL;
    pthread_mutex_unlock(&o->lock);
    atomic_fetch_add(&o->refs, 1); /* the completion's */
    if (job == NULL) {
      hd_results *rs = hd_results_new();
      hd_result *r = rs ? hd_results_append(rs) : NULL;
      if (r)
        hd_result_set_error(r, HD_ENOMEM, "out of memory making the request");
      d->owner = o;
      attempt_done(rs, d);
      continue;
    }
    hd_webhook_engine_submit(o->engine, job);
  }
}

/* ---- outcomes -------------------------------------------------------------
 */

static void set_error(dlv *d, const char *why) {
  char *copy = strdup(why ? why : "");
  if (copy != NULL) {
    free((char *)d->row.last_error);
    d->row.last_error = copy;
  }
}

/* A delivery that cannot be made: dead, journaled by the next turn. */
static void dead_now(hd_outbox *o, dlv *d, const char *why) {
  hd_results *rs = hd_results_new();
  hd_result *r = rs ? hd_results_append(rs) : NULL;

  if (r == NULL) {
    hd_results_free(rs);
    d->row.next_ms = ob_now_ms() + 1000; /* try again soon */
    ob_heap_put(o, d);
    return;
  }
  hd_result_set_error(r, HD_EHANDLER, "%s", why);
  r->grpc_code = 5;
  memset(&d->outcome, 0, sizeof(d->outcome));
  d->outcome.retry_after_ms = -1;
  d->results = rs;
  d->where = DLV_NOWHERE;
  d->next = NULL;
  d->started_ms = 0; /* not an attempt: nothing was sent */
  if (o->finished_tail)
    o->finished_tail->next = d;
  else
    o->finished = d;
  o->finished_tail = d;
}

/* The health of the name after an attempt; may disable it. */
static void note_health(hd_outbox *o, ob_name *n, int ok, int64_t now) {
  if (ok) {
    if (n->failures != 0 || n->first_failure_ms != 0)
      n->health_dirty = 1;
    n->failures = 0;
    n->first_failure_ms = 0;
    return;
  }
  n->failures++;
  n->health_dirty = 1;
  if (n->first_failure_ms == 0)
    n->first_failure_ms = now;
  if (n->disabled_ms == 0 &&
      now - n->first_failure_ms >= o->cfg.disable_after_ms) {
    n->disabled_ms = now;
    o->stats.disabled_total++;
    hd_log(HD_LOG_WARN,
           "outbox: webhook of handler %s%s%s disabled: its deliveries have "
           "failed for %" PRId64 " s (%d attempts); EnableWebhook resumes it",
           n->handler_id, n->route[0] ? " route " : "", n->route,
           (now - n->first_failure_ms) / 1000, n->failures);
  }
}

int ob_settle(hd_outbox *o, dlv *d, int64_t now, hd_delivery_update *up,
              hd_attempt_row *at) {
  hd_result *r = d->results ? hd_results_at(d->results, 0) : NULL;
  hd_outbox_endpoint *ep = d->name ? d->name->ep : NULL;
  int finished = 0, ok = r != NULL && r->err == HD_OK;
  char why[512];

  snprintf(why, sizeof(why), "%s",
           r == NULL         ? "out of memory"
           : r->message      ? r->message
           : r->err != HD_OK ? hd_strerror(r->err)
                             : "");
  if (d->outcome.attempted) {
    d->row.attempts++;
    d->row.last_status = r ? r->http_status : 0;
    set_error(d, ok ? "" : why);
    *at = (hd_attempt_row){.delivery_id = d->row.id,
                           .number = d->row.attempts,
                           .manual = d->manual,
                           .started_ms = d->started_ms,
                           .duration_ms = d->took_ms,
                           .http_status = d->row.last_status,
                           .error = d->row.last_error};
    /* The answer's first bytes, 2xx or not (the engine keeps them). */
    if (d->outcome.head_len > 0 &&
        (at->response_head = malloc(d->outcome.head_len)) != NULL) {
      memcpy((void *)at->response_head, d->outcome.head, d->outcome.head_len);
      at->response_head_len = d->outcome.head_len < HD_RESPONSE_HEAD_MAX
                                  ? d->outcome.head_len
                                  : HD_RESPONSE_HEAD_MAX;
    }
    d->manual = 0;
    o->stats.attempts++;
    if (d->name)
      note_health(o, d->name, ok, now);
    if (ok) {
      d->row.state = HD_DELIVERY_SUCCEEDED;
      d->row.next_ms = 0;
      o->stats.succeeded++;
      finished = 1;
    } else {
      int64_t delay = -1;
      o->stats.failed_attempts++;
      if (d->outcome.retryable)
        delay = ob_retry_delay_ms(
            o, ep, d->row.attempts, r ? r->http_status : 0,
            r && r->err == HD_ETIMEOUT, d->outcome.retry_after_ms, &o->rng);
      if (delay < 0) {
        d->row.state = HD_DELIVERY_DEAD;
        d->row.next_ms = 0;
        o->stats.dead++;
        finished = 1;
        hd_log(HD_LOG_WARN,
               "outbox: delivery %s of handler %s is dead after %d "
               "attempt(s): %s",
               d->row.id, d->row.handler_id, d->row.attempts, why);
      } else {
        d->row.state = HD_DELIVERY_FAILED;
        d->row.next_ms = now + delay;
      }
    }
  } else if (d->started_ms == 0) { /* dead_now: its endpoint is gone */
    set_error(d, why);
    d->row.state = HD_DELIVERY_DEAD;
    d->row.next_ms = 0;
    o->stats.dead++;
    finished = 1;
  } else { /* nothing was sent (engine busy or stopping): soon again */
    d->row.next_ms = now + 1000;
  }
  if (d->redo) { /* Redeliver came meanwhile: now, whatever happened */
    d->row.state = HD_DELIVERY_PENDING;
    d->row.next_ms = now;
    d->manual = 1;
    finished = 0;
  }
  d->redo = 0;
  d->row.updated_ms = now;
  *up = (hd_delivery_update){
      d->row.id,         d->row.state,       d->row.attempts,  d->row.next_ms,
      d->row.updated_ms, d->row.last_status, d->row.last_error};
  return finished;
}

void ob_after_attempt(hd_outbox *o, dlv *d, int finished) {
  ob_name *n = d->name;

  hd_results_free(d->results);
  d->results = NULL;
  if (d->started_ms != 0 && n != NULL) {
    n->in_flight--;
    o->in_flight--;
    if (n->blocked_head)
      ob_unblock(o, n);
  }
  d->started_ms = 0;
  if (d->redo) { /* a Redeliver came after the outcome was settled */
    d->redo = 0;
    d->manual = 1;
    d->row.state = HD_DELIVERY_PENDING;
    d->row.next_ms = ob_now_ms();
    finished = 0;
  }
  if (!finished && o->shared) {
    ob_shared_drop(o, d);
    return;
  }
  if (!finished) {
    ob_heap_put(o, d);
    return;
  }
  if (d->ordered)
    keyq_advance(o, d);
  /* Shared: the next of its key, or under its limits, is in the
   * database, claimable now. */
  if (o->shared && (d->ordered || d->row.max_inflight || d->row.max_rps > 0))
    o->claim_now = 1;
  hd_strmap_take(o->live, d->row.id, strlen(d->row.id));
  ob_dlv_free(d);
}

void ob_shared_drop(hd_outbox *o, dlv *d) {
  if (d->ordered)
    keyq_advance(o, d);
  /* Its lease is back: room under the webhook's limits, claimable now. */
  if (d->row.max_inflight || d->row.max_rps > 0)
    o->claim_now = 1;
  hd_strmap_take(o->live, d->row.id, strlen(d->row.id));
  ob_dlv_free(d);
}
