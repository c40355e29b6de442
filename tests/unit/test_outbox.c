/*
 * Unit tests: the outbox (outbox/outbox.c, outbox_queue.c) on a fake
 * in-memory journal (below: it records what is committed, can fail the next
 * commit, and can hold commits at a gate), a real webhook engine and a real
 * HTTP receiver (test_rx.h: libmicrohttpd on 127.0.0.1) that records what
 * it gets and answers as each test says. Only loopback traffic.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "outbox.h"
#include "test_delivery_rows.h"
#include "webhook_engine.h"
#include "webhook_sign.h"

#include "test_rx.h"

/* ---- time (mono_ms, scaled_ms: test_rx.h) -------------------------------- */

static int64_t real_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polls `expr` until it holds or `ms` (scaled) pass, then asserts it. */
#define EVENTUALLY(expr, ms)                                                   \
  do {                                                                         \
    int64_t end_ = mono_ms() + scaled_ms(ms);                                  \
    while (!(expr) && mono_ms() < end_)                                        \
      usleep(2000);                                                            \
    if (!(expr))                                                               \
      fail_msg("not within %d ms: %s", (int)(ms), #expr);                      \
  } while (0)

/* ---- the fake journal ---------------------------------------------------- */

typedef struct fake_journal {
  hd_journal j;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int gated;        /* commit waits while set */
  int held;         /* commits waiting at the gate */
  hd_err fail_next; /* the next commit fails with this (HD_OK: none) */
  char fail_msg[128];
  int commits;        /* successful */
  int insert_commits; /* successful ones with inserts */
  int64_t seq;
  hd_delivery_row *inserts; /* owned copies */
  size_t n_inserts, cap_inserts;
  hd_delivery_update *updates; /* owned copies (id, last_error) */
  size_t n_updates, cap_updates;
  hd_attempt_row *attempts; /* owned copies */
  size_t n_attempts, cap_attempts;
  hd_endpoint_row *endpoints; /* owned copies */
  size_t n_endpoints, cap_endpoints;
  hd_delivery_row *pending; /* what load_pending hands out (owned) */
  size_t n_pending;
} fake_journal;

static hd_err fj_commit(hd_journal *jj, hd_journal_batch *b, char *msg,
                        size_t msg_size) {
  fake_journal *j = jj->impl;

  pthread_mutex_lock(&j->lock);
  j->held++;
  pthread_cond_broadcast(&j->cond);
  while (j->gated)
    pthread_cond_wait(&j->cond, &j->lock);
  j->held--;
  if (j->fail_next != HD_OK) {
    hd_err err = j->fail_next;
    j->fail_next = HD_OK;
    snprintf(msg, msg_size, "%s", j->fail_msg);
    pthread_mutex_unlock(&j->lock);
    return err;
  }
  for (size_t i = 0; i < b->n_inserts; i++) {
    b->inserts[i].seq = ++j->seq;
    row_copy(PUSH(j->inserts, j->n_inserts, j->cap_inserts), &b->inserts[i]);
  }
  for (size_t i = 0; i < b->n_updates; i++) {
    hd_delivery_update *u = PUSH(j->updates, j->n_updates, j->cap_updates);
    *u = b->updates[i];
    u->id = dupstr(u->id);
    u->last_error = dupstr(u->last_error);
  }
  for (size_t i = 0; i < b->n_attempts; i++)
    attempt_copy(PUSH(j->attempts, j->n_attempts, j->cap_attempts),
                 &b->attempts[i]);
  for (size_t i = 0; i < b->n_endpoints; i++) {
    hd_endpoint_row *e = PUSH(j->endpoints, j->n_endpoints, j->cap_endpoints);
    *e = b->endpoints[i];
    e->handler_id = dupstr(e->handler_id);
    e->route = dupstr(e->route);
  }
  j->commits++;
  j->insert_commits += b->n_inserts > 0;
  pthread_mutex_unlock(&j->lock);
  return HD_OK;
}

static hd_err fj_load_pending(hd_journal *jj, hd_delivery_row_fn *fn, void *ud,
                              char *msg, size_t msg_size) {
  fake_journal *j = jj->impl;
  hd_err err = HD_OK;

  (void)msg;
  (void)msg_size;
  for (size_t i = 0; i < j->n_pending && err == HD_OK; i++)
    err = fn(&j->pending[i], ud);
  return err;
}

static hd_err fj_load_endpoints(hd_journal *jj, hd_endpoint_row_fn *fn,
                                void *ud, char *msg, size_t msg_size) {
  (void)jj;
  (void)fn;
  (void)ud;
  (void)msg;
  (void)msg_size;
  return HD_OK;
}

static hd_err fj_list(hd_journal *jj, const hd_delivery_filter *f,
                      hd_delivery_row_fn *fn, void *ud, char *msg,
                      size_t msg_size) {
  (void)jj;
  (void)f;
  (void)fn;
  (void)ud;
  (void)msg;
  (void)msg_size;
  return HD_OK;
}

static hd_err fj_get(hd_journal *jj, const char *id, hd_delivery_row_fn *row_fn,
                     hd_attempt_row_fn *att_fn, void *ud, char *msg,
                     size_t msg_size) {
  (void)jj;
  (void)id;
  (void)row_fn;
  (void)att_fn;
  (void)ud;
  (void)msg;
  (void)msg_size;
  return HD_ENOTFOUND;
}

static hd_err fj_prune(hd_journal *jj, int64_t before_ms, size_t *pruned,
                       char *msg, size_t msg_size) {
  (void)jj;
  (void)before_ms;
  (void)msg;
  (void)msg_size;
  if (pruned)
    *pruned = 0;
  return HD_OK;
}

static const hd_journal_vtable fj_vtable = {
    .commit = fj_commit,
    .load_pending = fj_load_pending,
    .load_endpoints = fj_load_endpoints,
    .list = fj_list,
    .get = fj_get,
    .prune = fj_prune,
};

static fake_journal *fj_new(void) {
  fake_journal *j = calloc(1, sizeof(*j));

  assert_non_null(j);
  j->j.impl = j;
  j->j.vt = &fj_vtable;
  pthread_mutex_init(&j->lock, NULL);
  pthread_cond_init(&j->cond, NULL);
  return j;
}

static void fj_free(fake_journal *j) {
  if (j == NULL)
    return;
  for (size_t i = 0; i < j->n_inserts; i++)
    row_clear(&j->inserts[i]);
  for (size_t i = 0; i < j->n_pending; i++)
    row_clear(&j->pending[i]);
  for (size_t i = 0; i < j->n_updates; i++) {
    free((char *)j->updates[i].id);
    free((char *)j->updates[i].last_error);
  }
  for (size_t i = 0; i < j->n_attempts; i++)
    attempt_clear(&j->attempts[i]);
  for (size_t i = 0; i < j->n_endpoints; i++) {
    free((char *)j->endpoints[i].handler_id);
    free((char *)j->endpoints[i].route);
  }
  free(j->inserts);
  free(j->pending);
  free(j->updates);
  free(j->attempts);
  free(j->endpoints);
  pthread_cond_destroy(&j->cond);
  pthread_mutex_destroy(&j->lock);
  free(j);
}

static void fj_gate(fake_journal *j, int closed) {
  pthread_mutex_lock(&j->lock);
  j->gated = closed;
  pthread_cond_broadcast(&j->cond);
  pthread_mutex_unlock(&j->lock);
}

static void fj_fail_next(fake_journal *j, hd_err err, const char *msg) {
  pthread_mutex_lock(&j->lock);
  j->fail_next = err;
  snprintf(j->fail_msg, sizeof(j->fail_msg), "%s", msg);
  pthread_mutex_unlock(&j->lock);
}

/* The journal's counters, read together under its lock. */
typedef struct fj_counts {
  int held, commits;
  size_t n_inserts;
} fj_counts;

static fj_counts fj_counts_now(fake_journal *j) {
  fj_counts c;

  pthread_mutex_lock(&j->lock);
  c.held = j->held;
  c.commits = j->commits;
  c.n_inserts = j->n_inserts;
  pthread_mutex_unlock(&j->lock);
  return c;
}

static int fj_held(fake_journal *j) {
  return fj_counts_now(j).held;
}

static int fj_commits(fake_journal *j) {
  return fj_counts_now(j).commits;
}

static size_t fj_n_inserts(fake_journal *j) {
  return fj_counts_now(j).n_inserts;
}

/* The last update of `id` (copied into *out), or 0 when there is none. */
static int fj_last_update(fake_journal *j, const char *id,
                          hd_delivery_update *out) {
  int found = 0;

  pthread_mutex_lock(&j->lock);
  for (size_t i = 0; i < j->n_updates; i++) {
    if (strcmp(j->updates[i].id, id) == 0) {
      *out = j->updates[i];
      found = 1;
    }
  }
  pthread_mutex_unlock(&j->lock);
  return found;
}

/* 1 when `id` has an update to `state`. */
static int fj_has_state(fake_journal *j, const char *id, int state) {
  int found = 0;

  pthread_mutex_lock(&j->lock);
  for (size_t i = 0; i < j->n_updates && !found; i++)
    found =
        strcmp(j->updates[i].id, id) == 0 && (int)j->updates[i].state == state;
  pthread_mutex_unlock(&j->lock);
  return found;
}

static size_t fj_count_updates(fake_journal *j, const char *id) {
  size_t n = 0;

  pthread_mutex_lock(&j->lock);
  for (size_t i = 0; i < j->n_updates; i++)
    n += strcmp(j->updates[i].id, id) == 0;
  pthread_mutex_unlock(&j->lock);
  return n;
}

/* The attempts of `id` in the order they were committed, into out (at most
 * max); returns how many there are. */
static size_t fj_attempts_of(fake_journal *j, const char *id,
                             hd_attempt_row *out, size_t max) {
  size_t n = 0;

  pthread_mutex_lock(&j->lock);
  for (size_t i = 0; i < j->n_attempts; i++) {
    if (strcmp(j->attempts[i].delivery_id, id) != 0)
      continue;
    if (n < max)
      out[n] = j->attempts[i];
    n++;
  }
  pthread_mutex_unlock(&j->lock);
  return n;
}

/* A delivery load_pending will hand out (before hd_outbox_run). */
static void fj_add_pending(fake_journal *j, const hd_delivery_row *row) {
  hd_delivery_row *p =
      realloc(j->pending, (j->n_pending + 1) * sizeof(*j->pending));

  assert_non_null(p);
  j->pending = p;
  row_copy(&j->pending[j->n_pending++], row);
}

/* ---- fixtures (the engine: test_rx.h) ------------------------------------ */

#define MAX_EPS 4

typedef struct fx {
  fake_journal *fj;
  hd_outbox_config cfg;
  hd_outbox *o;
  int stopped;
  rx *r;
  hd_outbox_endpoint *eps[MAX_EPS];
} fx;

static int fx_setup(void **state) {
  fx *f = calloc(1, sizeof(*f));

  if (f == NULL)
    return -1;
  f->fj = fj_new();
  hd_outbox_config_init(&f->cfg);
  f->cfg.jitter = 0;
  *state = f;
  return 0;
}

static int fx_teardown(void **state) {
  fx *f = *state;

  fj_gate(f->fj, 0); /* a failed test may have left it closed */
  if (f->o != NULL && !f->stopped)
    hd_outbox_stop(f->o);
  for (int i = 0; i < MAX_EPS; i++) {
    if (f->eps[i] != NULL)
      hd_outbox_endpoint_drop(f->o, f->eps[i]);
  }
  rx_stop(f->r);
  /* Attempts abandoned by the stop complete (and free) on the engine's
   * thread; wait for them so a leak check sees them gone. */
  for (int64_t end = mono_ms() + scaled_ms(5000);
       hd_webhook_engine_in_flight(engine) > 0 && mono_ms() < end;)
    usleep(2000);
  fj_free(f->fj);
  free(f);
  return 0;
}

static void fx_new(fx *f) {
  assert_int_equal(hd_outbox_new(&f->cfg, &f->fj->j, engine, &f->o), HD_OK);
}

static void fx_run(fx *f) {
  char msg[256] = "";

  assert_int_equal(hd_outbox_run(f->o, msg, sizeof(msg)), HD_OK);
}

/* Registers endpoint slot `i` of handler `id` at the receiver. */
static hd_outbox_endpoint *
fx_endpoint(fx *f, int i, const char *id, int ordered, const uint32_t *schedule,
            size_t n_schedule, const char *const *headers, size_t n_headers) {
  hd_endpoint_spec spec = {
      .handler_id = id,
      .route = "",
      .key = "k",
      .url = f->r->url,
      .headers = headers,
      .n_headers = n_headers,
      /* Unsigned. Not NULL: hd_outbox_endpoint_add memcpy's from it even
       * when the length is 0 (test_endpoint_unsigned_null_key). */
      .sign_key = (const unsigned char *)"",
      .sign_key_len = 0,
      .timeout_ms = 5000,
      .retry_schedule_ms = schedule,
      .n_retry_schedule = n_schedule,
      .ordered = ordered,
  };

  f->eps[i] = hd_outbox_endpoint_add(f->o, &spec);
  assert_non_null(f->eps[i]);
  return f->eps[i];
}

/* The usual start: the outbox (f->cfg) answered by receiver `r`, with
 * endpoint slot 0 of handler `id` (no extra headers), running. */
static hd_outbox_endpoint *fx_start(fx *f, rx *r, const char *id, int ordered,
                                    const uint32_t *schedule,
                                    size_t n_schedule) {
  hd_outbox_endpoint *ep;

  f->r = r;
  fx_new(f);
  ep = fx_endpoint(f, 0, id, ordered, schedule, n_schedule, NULL, 0);
  fx_run(f);
  return ep;
}

/* What an accept's callback got. */
typedef struct acc {
  atomic_int calls;
  hd_err err;
  char id[64];
  int id_null;
  char msg[256];
} acc;

static void on_accepted(void *data, hd_err err, const char *delivery_id,
                        const char *msg) {
  acc *a = data;

  a->err = err;
  a->id_null = delivery_id == NULL;
  snprintf(a->id, sizeof(a->id), "%s", delivery_id ? delivery_id : "");
  snprintf(a->msg, sizeof(a->msg), "%s", msg ? msg : "");
  atomic_fetch_add(&a->calls, 1);
}

static int acc_done(acc *a) {
  return atomic_load(&a->calls) > 0;
}

static void event_id_of(int n, char out[HD_DELIVERY_ID_LEN + 1]) {
  snprintf(out, HD_DELIVERY_ID_LEN + 1, "6f1c1b1e-0000-4000-8000-%012d", n);
}

/* Accepts an event with header lines `x-ev: <name>` and `webhook-id`. */
static void accept_ev(fx *f, hd_outbox_endpoint *ep, int n, const char *name,
                      const char *ordering_key, acc *a) {
  char id[HD_DELIVERY_ID_LEN + 1], headers[256], body[128], msg[256] = "";
  hd_outbox_event ev;

  event_id_of(n, id);
  snprintf(headers, sizeof(headers),
           "content-type: application/cloudevents+json\nwebhook-id: %s\n"
           "x-ev: %s\n",
           id, name);
  snprintf(body, sizeof(body), "{\"ev\":\"%s\"}", name);
  ev = (hd_outbox_event){
      .ep = ep,
      .event_id = id,
      .event_name = "update",
      .ordering_key = ordering_key,
      .body = (const unsigned char *)body,
      .body_len = strlen(body),
      .headers = headers,
  };
  assert_int_equal(
      hd_outbox_accept(f->o, &ev, on_accepted, a, msg, sizeof(msg)), HD_OK);
}

/* Accepts an event and waits until it is committed; its id in a->id. */
static void accept_ok(fx *f, hd_outbox_endpoint *ep, int n, const char *name,
                      const char *ordering_key, acc *a) {
  accept_ev(f, ep, n, name, ordering_key, a);
  EVENTUALLY(acc_done(a), 5000);
  assert_int_equal(a->err, HD_OK);
  assert_int_equal(strlen(a->id), HD_DELIVERY_ID_LEN);
}

/* ---- accepting ----------------------------------------------------------- */

static void test_accept_answered_after_commit(void **state) {
  static const char body[] = "{\"specversion\":\"1.0\",\"data\":{\"x\":1}}";
  static const char headers[] =
      "content-type: application/cloudevents+json\n"
      "webhook-id: 6f1c1b1e-0000-4000-8000-000000000042\n";
  fx *f = *state;
  acc a = {0};
  char msg[256] = "";
  hd_outbox_endpoint *ep;
  hd_outbox_event ev;
  hd_delivery_row row;

  ep = fx_start(f, rx_start_status(200, ""), "h-accept", 0, NULL, 0);
  fj_gate(f->fj, 1);
  ev = (hd_outbox_event){
      .ep = ep,
      .event_id = "6f1c1b1e-0000-4000-8000-000000000042",
      .event_name = "update",
      .ordering_key = "a/b",
      .body = (const unsigned char *)body,
      .body_len = sizeof(body) - 1,
      .headers = headers,
  };
  assert_int_equal(
      hd_outbox_accept(f->o, &ev, on_accepted, &a, msg, sizeof(msg)), HD_OK);
  /* The commit is under way and held: no answer while it is. */
  EVENTUALLY(fj_held(f->fj) == 1, 2000);
  usleep(200 * 1000);
  assert_int_equal(atomic_load(&a.calls), 0);
  assert_int_equal(fj_n_inserts(f->fj), 0);
  assert_int_equal(rx_count(f->r), 0);
  fj_gate(f->fj, 0);
  EVENTUALLY(acc_done(&a), 2000);
  assert_int_equal(a.err, HD_OK);
  assert_false(a.id_null);
  assert_int_equal(strlen(a.id), HD_DELIVERY_ID_LEN);
  assert_int_equal(fj_n_inserts(f->fj), 1);
  pthread_mutex_lock(&f->fj->lock);
  row = f->fj->inserts[0];
  pthread_mutex_unlock(&f->fj->lock);
  assert_string_equal(row.id, a.id);
  assert_string_equal(row.event_id, "6f1c1b1e-0000-4000-8000-000000000042");
  assert_int_equal(row.body_len, sizeof(body) - 1);
  assert_memory_equal(row.body, body, sizeof(body) - 1);
  assert_string_equal(row.headers, headers);
  assert_string_equal(row.key, "k");
  assert_string_equal(row.handler_id, "h-accept");
  assert_string_equal(row.route, "");
  assert_string_equal(row.event_name, "update");
  assert_string_equal(row.ordering_key, "a/b");
  assert_int_equal(row.state, HD_DELIVERY_PENDING);
  assert_int_equal(row.attempts, 0);
  assert_true(row.created_ms > 0);
  /* Answered once. */
  EVENTUALLY(rx_count(f->r) == 1, 5000);
  assert_int_equal(atomic_load(&a.calls), 1);
}

static void test_accept_commit_fails(void **state) {
  fx *f = *state;
  hd_outbox_endpoint *ep;
  hd_outbox_stats st;
  acc a = {0}, b = {0};

  ep = fx_start(f, rx_start_status(200, ""), "h-fail", 0, NULL, 0);
  fj_fail_next(f->fj, HD_EBUSY, "journal.db: database or disk is full");
  accept_ev(f, ep, 1, "e1", NULL, &a);
  EVENTUALLY(acc_done(&a), 2000);
  assert_int_equal(a.err, HD_EBUSY);
  assert_true(a.id_null);
  assert_non_null(strstr(a.msg, "journal.db: database or disk is full"));
  assert_int_equal(fj_n_inserts(f->fj), 0);
  /* Not kept anywhere. */
  hd_outbox_get_stats(f->o, 1, &st);
  assert_int_equal(st.pending, 0);
  assert_int_equal(st.accepted, 0);
  /* The next accept works and is the only one delivered. */
  accept_ok(f, ep, 2, "e2", NULL, &b);
  EVENTUALLY(fj_has_state(f->fj, b.id, HD_DELIVERY_SUCCEEDED), 5000);
  assert_int_equal(rx_count(f->r), 1);
  assert_header(&f->r->reqs[0], "x-ev", "e2");
  assert_int_equal(atomic_load(&a.calls), 1);
}

#define GC_THREADS 5
#define GC_EACH 10

typedef struct gc_arg {
  fx *f;
  hd_outbox_endpoint *ep;
  int first;
  acc *accs;
  atomic_int *returned;
} gc_arg;

static void *gc_thread(void *p) {
  gc_arg *g = p;

  for (int i = 0; i < GC_EACH; i++) {
    char name[16];
    snprintf(name, sizeof(name), "g%d", g->first + i);
    accept_ev(g->f, g->ep, 100 + g->first + i, name, NULL,
              &g->accs[g->first + i]);
    atomic_fetch_add(g->returned, 1);
  }
  return NULL;
}

static void test_group_commit(void **state) {
  fx *f = *state;
  static acc accs[GC_THREADS * GC_EACH];
  atomic_int returned = 0;
  pthread_t th[GC_THREADS];
  gc_arg args[GC_THREADS];
  hd_outbox_endpoint *ep;
  int answered = 0, insert_commits, same_ids = 0;
  size_t n_inserts;

  memset(accs, 0, sizeof(accs));
  ep = fx_start(f, rx_start_status(200, ""), "h-group", 0, NULL, 0);
  fj_gate(f->fj, 1);
  for (int t = 0; t < GC_THREADS; t++) {
    args[t] = (gc_arg){f, ep, t * GC_EACH, accs, &returned};
    assert_int_equal(pthread_create(&th[t], NULL, gc_thread, &args[t]), 0);
  }
  for (int t = 0; t < GC_THREADS; t++)
    pthread_join(th[t], NULL);
  assert_int_equal(atomic_load(&returned), GC_THREADS * GC_EACH);
  /* The first commit is held with some of them; the rest wait. */
  EVENTUALLY(fj_held(f->fj) == 1, 2000);
  for (int i = 0; i < GC_THREADS * GC_EACH; i++)
    answered += acc_done(&accs[i]);
  assert_int_equal(answered, 0);
  fj_gate(f->fj, 0);
  for (int i = 0; i < GC_THREADS * GC_EACH; i++) {
    EVENTUALLY(acc_done(&accs[i]), 5000);
    assert_int_equal(accs[i].err, HD_OK);
    assert_int_equal(strlen(accs[i].id), HD_DELIVERY_ID_LEN);
    assert_int_equal(atomic_load(&accs[i].calls), 1);
  }
  pthread_mutex_lock(&f->fj->lock);
  n_inserts = f->fj->n_inserts;
  insert_commits = f->fj->insert_commits;
  for (size_t i = 0; i < f->fj->n_inserts; i++) {
    for (size_t k = i + 1; k < f->fj->n_inserts; k++)
      same_ids += strcmp(f->fj->inserts[i].id, f->fj->inserts[k].id) == 0;
  }
  pthread_mutex_unlock(&f->fj->lock);
  assert_int_equal(n_inserts, GC_THREADS * GC_EACH);
  assert_int_equal(same_ids, 0);
  /* One transaction served many accepts. */
  if (insert_commits < 1 || insert_commits > 3)
    fail_msg("%d commits for %d accepts", insert_commits, GC_THREADS * GC_EACH);
}

static void test_accept_refused(void **state) {
  fx *f = *state;
  hd_outbox_endpoint *ep;
  hd_outbox_event ev = {0};
  char msg[256] = "";
  acc a = {0};

  f->r = rx_start_status(200, "");
  fx_new(f);
  ep = fx_endpoint(f, 0, "h-refused", 0, NULL, 0, NULL, 0);
  ev.ep = ep;
  ev.event_id = "6f1c1b1e-0000-4000-8000-000000000001";
  ev.body = (const unsigned char *)"{}";
  ev.body_len = 2;
  assert_int_equal(
      hd_outbox_accept(f->o, &ev, on_accepted, &a, msg, sizeof(msg)),
      HD_EUNSUPPORTED);
  assert_true(msg[0] != '\0');
  /* max_pending: the limit refuses at once. */
  f->cfg.max_pending = 1;
  hd_outbox_stop(f->o);
  hd_outbox_endpoint_drop(f->o, ep);
  f->eps[0] = NULL;
  f->o = NULL;
  fx_new(f);
  ep = fx_endpoint(f, 0, "h-refused", 0, NULL, 0, NULL, 0);
  fx_run(f);
  fj_gate(f->fj, 1);
  ev.ep = ep;
  assert_int_equal(
      hd_outbox_accept(f->o, &ev, on_accepted, &a, msg, sizeof(msg)), HD_OK);
  msg[0] = '\0';
  assert_int_equal(
      hd_outbox_accept(f->o, &ev, on_accepted, &a, msg, sizeof(msg)), HD_EBUSY);
  assert_non_null(strstr(msg, "limit"));
  fj_gate(f->fj, 0);
  EVENTUALLY(acc_done(&a), 2000);
  assert_int_equal(a.err, HD_OK);
  assert_int_equal(atomic_load(&a.calls), 1);
}

/* One Dispatch's deliveries (a batch) are committed together or refused
 * together: never some acknowledged and the rest lost. */
static size_t pending_of(hd_outbox *o) {
  hd_outbox_stats st;
  hd_outbox_get_stats(o, 0, &st);
  return st.pending;
}

static void test_batch_all_or_none(void **state) {
  fx *f = *state;
  hd_outbox_endpoint *ep;
  hd_outbox_event ev = {0};
  hd_outbox_batch *b;
  acc a[3] = {{0}}, first = {0};
  int commits;

  f->cfg.max_pending = 3;
  ep = fx_start(f, rx_start_status(200, ""), "h-batch", 0, NULL, 0);
  ev.ep = ep;
  ev.event_id = "6f1c1b1e-0000-4000-8000-000000000007";
  ev.event_name = "update";
  ev.body = (const unsigned char *)"{}";
  ev.body_len = 2;
  ev.headers = "content-type: application/json\n";

  /* Three at once: one commit holds all three. */
  fj_gate(f->fj, 1);
  pthread_mutex_lock(&f->fj->lock);
  commits = f->fj->insert_commits;
  pthread_mutex_unlock(&f->fj->lock);
  b = hd_outbox_batch_new(f->o);
  assert_non_null(b);
  for (int i = 0; i < 3; i++)
    assert_int_equal(hd_outbox_batch_add(b, &ev, on_accepted, &a[i]), HD_OK);
  hd_outbox_batch_submit(b);
  fj_gate(f->fj, 0);
  for (int i = 0; i < 3; i++) {
    EVENTUALLY(acc_done(&a[i]), 5000);
    assert_int_equal(a[i].err, HD_OK);
  }
  pthread_mutex_lock(&f->fj->lock);
  assert_int_equal(f->fj->insert_commits, commits + 1);
  pthread_mutex_unlock(&f->fj->lock);

  /* Wait until they are delivered and finished (the receiver sees them
   * before the outbox has recorded their answers and let their places go),
   * then fill one place of max_pending 3 and offer a batch of three: all
   * are refused. */
  EVENTUALLY(rx_count(f->r) >= 3, 5000);
  EVENTUALLY(pending_of(f->o) == 0, 5000);
  fj_gate(f->fj, 1);
  accept_ev(f, ep, 8, "first", NULL, &first);
  memset(a, 0, sizeof(a));
  b = hd_outbox_batch_new(f->o);
  for (int i = 0; i < 3; i++)
    assert_int_equal(hd_outbox_batch_add(b, &ev, on_accepted, &a[i]), HD_OK);
  hd_outbox_batch_submit(b);
  for (int i = 0; i < 3; i++) { /* refused before submit returned */
    assert_true(acc_done(&a[i]));
    assert_int_equal(a[i].err, HD_EBUSY);
    assert_true(a[i].id_null);
  }
  fj_gate(f->fj, 0);
  EVENTUALLY(acc_done(&first), 5000);
  assert_int_equal(first.err, HD_OK);
}

/* ---- delivering ---------------------------------------------------------- */

static void test_delivery(void **state) {
  static const char *const ep_headers[] = {"x-custom: one",
                                           "authorization: Bearer t0k"};
  static const unsigned char key[] = "0123456789abcdef0123456789abcdef";
  fx *f = *state;
  hd_endpoint_spec spec;
  hd_outbox_endpoint *ep;
  hd_delivery_update up = {0};
  hd_attempt_row at[4];
  char id[HD_DELIVERY_ID_LEN + 1], sig[HD_SIGNATURE_MAX];
  acc a = {0};
  const rx_req *q;

  f->r = rx_start_status(200, "{\"thanks\":true}");
  fx_new(f);
  spec = (hd_endpoint_spec){
      .handler_id = "h-deliver",
      .route = "",
      .key = "k",
      .url = f->r->url,
      .headers = ep_headers,
      .n_headers = 2,
      .sign_key = key,
      .sign_key_len = 32,
      .timeout_ms = 5000,
  };
  ep = f->eps[0] = hd_outbox_endpoint_add(f->o, &spec);
  assert_non_null(ep);
  fx_run(f);
  accept_ok(f, ep, 7, "e7", NULL, &a);
  EVENTUALLY(fj_has_state(f->fj, a.id, HD_DELIVERY_SUCCEEDED), 5000);

  assert_int_equal(rx_count(f->r), 1);
  q = &f->r->reqs[0];
  event_id_of(7, id);
  assert_header(q, "content-type", "application/cloudevents+json");
  assert_header(q, "x-ev", "e7");
  assert_header(q, "webhook-id", id);
  assert_header(q, "x-custom", "one");
  assert_header(q, "authorization", "Bearer t0k");
  assert_non_null(q->body);
  assert_string_equal(q->body, "{\"ev\":\"e7\"}");
  /* Signed over the event id (the webhook-id), as Standard Webhooks say. */
  assert_non_null(req_header(q, "webhook-timestamp"));
  assert_non_null(req_header(q, "webhook-signature"));
  assert_int_equal(
      hd_webhook_sign(key, 32, id,
                      strtoll(req_header(q, "webhook-timestamp"), NULL, 10),
                      q->body, q->body_len, sig, sizeof(sig)),
      HD_OK);
  assert_string_equal(req_header(q, "webhook-signature"), sig);

  assert_true(fj_last_update(f->fj, a.id, &up));
  assert_int_equal(up.state, HD_DELIVERY_SUCCEEDED);
  assert_int_equal(up.attempts, 1);
  assert_int_equal(up.last_status, 200);
  assert_int_equal(up.next_ms, 0);
  assert_string_equal(up.last_error, "");
  assert_int_equal(fj_count_updates(f->fj, a.id), 1);
  assert_int_equal(fj_attempts_of(f->fj, a.id, at, 4), 1);
  assert_int_equal(at[0].number, 1);
  assert_int_equal(at[0].manual, 0);
  assert_int_equal(at[0].http_status, 200);
  assert_string_equal(at[0].error, "");
  assert_true(at[0].started_ms > 0);
  assert_true(at[0].duration_ms >= 0);
  assert_int_equal(at[0].response_head_len, strlen("{\"thanks\":true}"));
  assert_memory_equal(at[0].response_head, "{\"thanks\":true}",
                      at[0].response_head_len);
}

static void test_retry_then_dead(void **state) {
  static const uint32_t sched[] = {50, 50};
  fx *f = *state;
  hd_outbox_endpoint *ep;
  hd_delivery_update up = {0};
  hd_attempt_row at[8];
  acc a = {0};
  int64_t t0 = mono_ms();

  ep = fx_start(f, rx_start_status(500, "oops"), "h-dead", 0, sched, 2);
  accept_ok(f, ep, 3, "e3", NULL, &a);
  EVENTUALLY(fj_has_state(f->fj, a.id, HD_DELIVERY_DEAD), 5000);
  /* Two waits of 50 ms came between the three attempts. */
  assert_true(mono_ms() - t0 >= 100);
  assert_int_equal(rx_count(f->r), 3);
  assert_true(fj_last_update(f->fj, a.id, &up));
  assert_int_equal(up.state, HD_DELIVERY_DEAD);
  assert_int_equal(up.attempts, 3);
  assert_int_equal(up.last_status, 500);
  assert_int_equal(up.next_ms, 0);
  assert_non_null(strstr(up.last_error, "500"));
  /* FAILED, FAILED, DEAD. */
  assert_int_equal(fj_count_updates(f->fj, a.id), 3);
  assert_int_equal(fj_attempts_of(f->fj, a.id, at, 8), 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(at[i].number, i + 1);
    assert_int_equal(at[i].http_status, 500);
    assert_true(at[i].error[0] != '\0');
    /* A failed answer's first bytes are kept too: why it failed. */
    assert_int_equal(at[i].response_head_len, 4);
    assert_memory_equal(at[i].response_head, "oops", 4);
  }
  assert_true(at[1].started_ms >= at[0].started_ms + 50);
  assert_true(at[2].started_ms >= at[1].started_ms + 50);
  /* Dead is final: nothing more comes. */
  usleep(200 * 1000);
  assert_int_equal(rx_count(f->r), 3);
}

static void test_final_4xx(void **state) {
  fx *f = *state;
  hd_outbox_endpoint *ep;
  hd_delivery_update up = {0};
  hd_attempt_row at[4];
  acc a = {0};

  /* A schedule that would retry soon, were a 404 retried. */
  ep = fx_start(f, rx_start_status(404, "no such hook"), "h-404", 0,
                (const uint32_t[]){10, 10, 10}, 3);
  accept_ok(f, ep, 4, "e4", NULL, &a);
  EVENTUALLY(fj_has_state(f->fj, a.id, HD_DELIVERY_DEAD), 5000);
  assert_true(fj_last_update(f->fj, a.id, &up));
  assert_int_equal(up.attempts, 1);
  assert_int_equal(up.last_status, 404);
  assert_int_equal(fj_count_updates(f->fj, a.id), 1);
  assert_int_equal(fj_attempts_of(f->fj, a.id, at, 4), 1);
  assert_int_equal(at[0].number, 1);
  assert_int_equal(at[0].http_status, 404);
  assert_int_equal(at[0].response_head_len, strlen("no such hook"));
  assert_memory_equal(at[0].response_head, "no such hook",
                      at[0].response_head_len);
  usleep(100 * 1000);
  assert_int_equal(rx_count(f->r), 1);
}

/* Ordered: the first two requests of key "a" fail. */
static void answer_ordered(rx *r, int i, const rx_req *q, rx_step *step) {
  int *a_seen = r->ud;
  const char *ev = req_header(q, "x-ev");

  (void)i;
  if (ev != NULL && ev[0] == 'a' && (*a_seen)++ < 2)
    step->status = 500;
  else
    step->status = 200;
}

/* Index of the first request for `ev` answered `status` (any: 0), or -1. */
static int rx_find(rx *r, const char *ev, int status) {
  int found = -1;

  pthread_mutex_lock(&r->lock);
  for (int i = 0; i < r->n_reqs && i < RX_MAX_REQS && found < 0; i++) {
    const char *v = req_header(&r->reqs[i], "x-ev");
    if (v != NULL && strcmp(v, ev) == 0 &&
        (status == 0 || r->reqs[i].status == status))
      found = i;
  }
  pthread_mutex_unlock(&r->lock);
  return found;
}

static void test_ordered(void **state) {
  static const uint32_t sched[] = {100, 100, 100};
  static const rx_step ok = {.status = 200};
  fx *f = *state;
  hd_outbox_endpoint *ep;
  acc a1 = {0}, a2 = {0}, a3 = {0}, b1 = {0};
  int a_seen = 0, s1, s2, s3;
  char order[16] = "";

  ep = fx_start(f, rx_start_fn(&ok, 1, answer_ordered, &a_seen), "h-ordered", 1,
                sched, 3);
  accept_ev(f, ep, 11, "a1", "a", &a1);
  accept_ev(f, ep, 12, "a2", "a", &a2);
  accept_ev(f, ep, 13, "a3", "a", &a3);
  accept_ev(f, ep, 21, "b1", "b", &b1);
  EVENTUALLY(acc_done(&a1) && acc_done(&a2) && acc_done(&a3) && acc_done(&b1),
             5000);
  EVENTUALLY(fj_has_state(f->fj, a3.id, HD_DELIVERY_SUCCEEDED) &&
                 fj_has_state(f->fj, b1.id, HD_DELIVERY_SUCCEEDED),
             5000);
  /* a1 twice refused, then a1, a2, a3 once each; b1 once. */
  assert_int_equal(rx_count(f->r), 6);
  s1 = rx_find(f->r, "a1", 200);
  s2 = rx_find(f->r, "a2", 200);
  s3 = rx_find(f->r, "a3", 200);
  assert_true(s1 >= 0 && s2 >= 0 && s3 >= 0);
  assert_true(s1 < s2 && s2 < s3);
  /* Nothing of key a went out before the one ahead of it was done. */
  assert_int_equal(rx_find(f->r, "a2", 0), s2);
  assert_int_equal(rx_find(f->r, "a3", 0), s3);
  /* The receipt order of key a, from the receiver's log. */
  pthread_mutex_lock(&f->r->lock);
  for (int i = 0; i < f->r->n_reqs && i < RX_MAX_REQS; i++) {
    const char *v = req_header(&f->r->reqs[i], "x-ev");
    if (v != NULL && v[0] == 'a' && f->r->reqs[i].status == 200)
      strncat(order, v, sizeof(order) - strlen(order) - 1);
  }
  pthread_mutex_unlock(&f->r->lock);
  assert_string_equal(order, "a1a2a3");
  /* Key b did not wait for key a's retries. */
  assert_true(rx_find(f->r, "b1", 0) < s2);
  assert_true(rx_find(f->r, "b1", 0) < s1);
  assert_int_equal(fj_attempts_of(f->fj, a1.id, NULL, 0), 3);
}

static void test_endpoint_dropped(void **state) {
  static const uint32_t sched[] = {300, 300};
  fx *f = *state;
  hd_outbox_endpoint *ep;
  hd_delivery_update up = {0};
  acc a = {0};

  ep = fx_start(f, rx_start_status(500, ""), "h-dropped", 0, sched, 2);
  accept_ok(f, ep, 5, "e5", NULL, &a);
  EVENTUALLY(fj_has_state(f->fj, a.id, HD_DELIVERY_FAILED), 5000);
  /* The handler is removed before its retry is due. */
  hd_outbox_endpoint_drop(f->o, ep);
  f->eps[0] = NULL;
  EVENTUALLY(fj_has_state(f->fj, a.id, HD_DELIVERY_DEAD), 5000);
  assert_true(fj_last_update(f->fj, a.id, &up));
  assert_int_equal(up.state, HD_DELIVERY_DEAD);
  assert_non_null(strstr(up.last_error, "no longer registered"));
  assert_int_equal(up.attempts, 1);
  /* Not an attempt: nothing was sent. */
  assert_int_equal(rx_count(f->r), 1);
  assert_int_equal(fj_attempts_of(f->fj, a.id, NULL, 0), 1);
}

/* An unsigned endpoint as the header allows it: no key at all. Under
 * UBSan, a memcpy from NULL is an error even for 0 bytes. */
static void test_endpoint_unsigned_null_key(void **state) {
  fx *f = *state;
  hd_endpoint_spec spec = {
      .handler_id = "h-nokey", .route = "", .key = "k", .url = NULL};
  acc a = {0};
  const rx_req *q;

  f->r = rx_start_status(200, "");
  fx_new(f);
  spec.url = f->r->url;
  f->eps[0] = hd_outbox_endpoint_add(f->o, &spec);
  assert_non_null(f->eps[0]);
  fx_run(f);
  accept_ok(f, f->eps[0], 8, "e8", NULL, &a);
  EVENTUALLY(fj_has_state(f->fj, a.id, HD_DELIVERY_SUCCEEDED), 5000);
  q = &f->r->reqs[0];
  assert_null(req_header(q, "webhook-signature"));
}

static void test_run_resumes(void **state) {
  fx *f = *state;
  hd_delivery_row row;
  hd_delivery_update up = {0};
  hd_attempt_row at[4];
  int64_t now = real_ms();
  int i1, i2;

  f->r = rx_start_status(200, "");
  fx_new(f);
  memset(&row, 0, sizeof(row));
  snprintf(row.id, sizeof(row.id), "11111111-2222-4333-8444-555555555555");
  event_id_of(31, row.event_id);
  row.key = "k";
  row.handler_id = "h-resume";
  row.route = "";
  row.event_name = "update";
  row.ordering_key = "";
  row.body = (const unsigned char *)"{\"resumed\":1}";
  row.body_len = strlen("{\"resumed\":1}");
  row.headers = "x-ev: r1\n";
  row.seq = 1;
  row.created_ms = row.updated_ms = now - 60000;
  row.next_ms = now - 1000;
  row.state = HD_DELIVERY_PENDING;
  row.last_error = "";
  fj_add_pending(f->fj, &row);
  /* In flight at the crash: made again, as attempt 2. */
  snprintf(row.id, sizeof(row.id), "11111111-2222-4333-8444-666666666666");
  event_id_of(32, row.event_id);
  row.headers = "x-ev: r2\n";
  row.seq = 2;
  row.state = HD_DELIVERY_IN_FLIGHT;
  row.attempts = 1;
  row.last_status = 503;
  row.last_error = "HTTP 503";
  row.next_ms = 0;
  fj_add_pending(f->fj, &row);
  fx_endpoint(f, 0, "h-resume", 0, NULL, 0, NULL, 0);
  fx_run(f);
  EVENTUALLY(fj_has_state(f->fj, "11111111-2222-4333-8444-555555555555",
                          HD_DELIVERY_SUCCEEDED) &&
                 fj_has_state(f->fj, "11111111-2222-4333-8444-666666666666",
                              HD_DELIVERY_SUCCEEDED),
             5000);
  assert_int_equal(rx_count(f->r), 2);
  i1 = rx_find(f->r, "r1", 200);
  i2 = rx_find(f->r, "r2", 200);
  assert_true(i1 >= 0 && i2 >= 0);
  assert_string_equal(f->r->reqs[i1].body, "{\"resumed\":1}");
  assert_true(
      fj_last_update(f->fj, "11111111-2222-4333-8444-555555555555", &up));
  assert_int_equal(up.attempts, 1);
  assert_true(
      fj_last_update(f->fj, "11111111-2222-4333-8444-666666666666", &up));
  assert_int_equal(up.attempts, 2);
  assert_int_equal(
      fj_attempts_of(f->fj, "11111111-2222-4333-8444-666666666666", at, 4), 1);
  assert_int_equal(at[0].number, 2);
  /* Nothing was inserted again. */
  assert_int_equal(fj_n_inserts(f->fj), 0);
}

static void test_stop_with_attempt_in_flight(void **state) {
  fx *f = *state;
  hd_outbox_endpoint *ep;
  acc a = {0};
  int commits;
  static const rx_step held = {.status = 200, .delay_ms = 300};

  ep = fx_start(f, rx_start(&held, 1), "h-stop", 0, NULL, 0);
  accept_ok(f, ep, 9, "e9", NULL, &a);
  /* The request is at the receiver, held. */
  EVENTUALLY(rx_count(f->r) == 1, 5000);
  assert_true(hd_webhook_engine_in_flight(engine) >= 1);
  commits = fj_commits(f->fj);
  hd_outbox_stop(f->o);
  f->stopped = 1;
  /* The attempt ends on the engine's thread after the stop... */
  EVENTUALLY(hd_webhook_engine_in_flight(engine) == 0, 5000);
  /* ...and is abandoned: journaled neither as done nor as failed. */
  assert_int_equal(fj_commits(f->fj), commits);
  assert_int_equal(fj_count_updates(f->fj, a.id), 0);
  /* The handler leaves after the outbox stopped (the registry goes last). */
  hd_outbox_endpoint_drop(f->o, ep);
  f->eps[0] = NULL;
}

static void *open_gate_later(void *p) {
  fake_journal *j = p;

  usleep(100 * 1000);
  fj_gate(j, 0);
  return NULL;
}

static void test_stop_commits_waiting_accepts(void **state) {
  fx *f = *state;
  hd_outbox_endpoint *ep;
  acc a = {0}, b = {0};
  pthread_t th;

  ep = fx_start(f, rx_start_status(200, ""), "h-stop2", 0, NULL, 0);
  fj_gate(f->fj, 1);
  accept_ev(f, ep, 10, "e10", NULL, &a);
  EVENTUALLY(fj_held(f->fj) == 1, 2000);
  /* Not yet taken by a commit when the stop comes. */
  accept_ev(f, ep, 11, "e11", NULL, &b);
  assert_int_equal(pthread_create(&th, NULL, open_gate_later, f->fj), 0);
  hd_outbox_stop(f->o);
  f->stopped = 1;
  pthread_join(th, NULL);
  /* Both committed and answered before stop returned. */
  assert_int_equal(atomic_load(&a.calls), 1);
  assert_int_equal(a.err, HD_OK);
  assert_int_equal(atomic_load(&b.calls), 1);
  assert_int_equal(b.err, HD_OK);
  assert_int_equal(fj_n_inserts(f->fj), 2);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
  const struct CMUnitTest tests[] = {
      T(test_accept_answered_after_commit),
      T(test_accept_commit_fails),
      T(test_group_commit),
      T(test_accept_refused),
      T(test_batch_all_or_none),
      T(test_delivery),
      T(test_retry_then_dead),
      T(test_final_4xx),
      T(test_ordered),
      T(test_endpoint_dropped),
      T(test_run_resumes),
      T(test_stop_with_attempt_in_flight),
      T(test_stop_commits_waiting_accepts),
      /* Last: under UBSan it aborts the binary until the bug is fixed. */
      T(test_endpoint_unsigned_null_key),
  };
#undef T
  return cmocka_run_group_tests(tests, engine_setup, engine_teardown);
}
