/*
 * The PostgreSQL journal's shared-queue rules (outbox/journal.h: claim,
 * renew, reap, release; store/store_pg_journal.c, store_pg_claim.c), with
 * two replicas: two stores with different replica ids on one fresh
 * database per test (test_store_conf.h's PostgreSQL backend, so the suite
 * runs under tests/pg_run.py, which sets HANDLERD_TEST_PG_URL).
 *
 * Time is what the calls are told (now_ms), never the clock: a lease
 * expires when a later now_ms says so, so nothing sleeps. The test looks
 * at what the journal does not hand out (lease_owner, lease_until) on a
 * connection of its own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>

#include "journal.h"
#include "registration.h"
#include "store.h"
#include "store_pg.h"
#include "test_delivery_rows.h"
#include "test_store_conf.h"

#define REPLICA_A "replica-a"
#define REPLICA_B "replica-b"

/* Every test's "now": the leases and due times count from it. */
#define T0 INT64_C(1700000000000)

/* ---- two replicas on one fresh database ---------------------------------- */

typedef struct pgt {
  void *env; /* test_store_conf.h's pg_fixture: the database */
  hd_store *a, *b;
  hd_journal *ja, *jb;
  PGconn *sql; /* the test's own connection, to look at the leases */
} pgt;

/* pg_open with this replica's name and lease time. NULL with msg on
 * failure. */
static hd_store *pg_open_as(void *env, const char *replica, int64_t lease_ms,
                            char *msg, size_t msg_size) {
  pg_fixture *f = env;
  char conninfo[512];
  hd_store_pg_config cfg;
  hd_store *s = NULL;

  if (pg_conninfo(f->base, conninfo, sizeof(conninfo)) != 0) {
    snprintf(msg, msg_size, "bad HANDLERD_TEST_PG_URL");
    return NULL;
  }
  hd_store_pg_config_init(&cfg);
  cfg.conninfo = conninfo;
  cfg.replica_id = replica;
  cfg.lease_ms = lease_ms;
  return hd_store_pg_open(&cfg, &s, msg, msg_size) == HD_OK ? s : NULL;
}

static int pgt_setup(void **state) {
  pgt *t = calloc(1, sizeof(*t));
  if (!t)
    return -1;
  if (pg_setup(&t->env) != 0) {
    free(t);
    return -1;
  }
  *state = t;
  return 0;
}

static int pgt_teardown(void **state) {
  pgt *t = *state;
  hd_store_close(t->a);
  hd_store_close(t->b);
  if (t->sql)
    PQfinish(t->sql);
  pg_teardown(t->env);
  free(t);
  return 0;
}

static hd_store *open_replica(pgt *t, const char *replica, int64_t lease_ms) {
  char msg[512] = "";
  hd_store *s = pg_open_as(t->env, replica, lease_ms, msg, sizeof(msg));
  if (!s)
    fail_msg("open %s: %s", replica, msg);
  if (!s->journal)
    fail_msg("%s: the store has no journal", replica);
  assert_non_null(s->journal->vt->claim);
  return s;
}

/* Replicas A and B, both with leases of `lease_ms`, and the test's own
 * connection. */
static void open_pair(pgt *t, int64_t lease_ms) {
  char conninfo[512];
  t->a = open_replica(t, REPLICA_A, lease_ms);
  t->b = open_replica(t, REPLICA_B, lease_ms);
  t->ja = t->a->journal;
  t->jb = t->b->journal;
  assert_int_equal(
      pg_conninfo(((pg_fixture *)t->env)->base, conninfo, sizeof(conninfo)), 0);
  t->sql = PQconnectdb(conninfo);
  if (PQstatus(t->sql) != CONNECTION_OK)
    fail_msg("connect: %s", PQerrorMessage(t->sql));
}

/* ---- the database as the test sees it ------------------------------------ */

/* Delivery `id`'s lease: its owner into owner ("" when none) and its
 * lease_until (-1 when none). */
static void lease_of(pgt *t, const char *id, char *owner, size_t size,
                     int64_t *until) {
  const char *p[1] = {id};
  PGresult *r = PQexecParams(t->sql,
                             "SELECT lease_owner, lease_until"
                             " FROM handlerd_deliveries WHERE id = $1",
                             1, NULL, p, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    char why[256];
    snprintf(why, sizeof(why), "%s", PQresultErrorMessage(r));
    PQclear(r);
    fail_msg("lease of %s: %s", id, why);
  }
  snprintf(owner, size, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
  *until = PQgetisnull(r, 0, 1) ? -1 : strtoll(PQgetvalue(r, 0, 1), NULL, 10);
  PQclear(r);
}

static void assert_lease(pgt *t, const char *id, const char *owner,
                         int64_t until) {
  char have[64];
  int64_t have_until;
  lease_of(t, id, have, sizeof(have), &have_until);
  if (strcmp(have, owner) != 0 || have_until != until)
    fail_msg("%s: lease (\"%s\", %lld), want (\"%s\", %lld)", id, have,
             (long long)have_until, owner, (long long)until);
}

static void assert_no_lease(pgt *t, const char *id) {
  assert_lease(t, id, "", -1);
}

/* ---- rows to write ------------------------------------------------------- */

/* A delivery and the buffers its strings point into. Not to be copied by
 * value once made (the pointers point into it). */
typedef struct drow {
  hd_delivery_row r;
  char handler_id[32], route[16], ordering_key[32], headers[32];
  char last_error[32];
  unsigned char body[32];
} drow;

/* Delivery number i of `handler_id`: pending, made and due at `at`, no
 * route, no ordering key, unleased, no limits. */
static void drow_make(drow *d, int i, const char *handler_id, int64_t at) {
  int n;
  memset(d, 0, sizeof(*d));
  snprintf(d->r.id, sizeof(d->r.id), "00000000-0000-4000-8000-%012d", i);
  snprintf(d->r.event_id, sizeof(d->r.event_id),
           "eeeeeeee-0000-4000-8000-%012d", i);
  snprintf(d->handler_id, sizeof(d->handler_id), "%s", handler_id);
  snprintf(d->headers, sizeof(d->headers), "x-i: %d\n", i);
  n = snprintf((char *)d->body, sizeof(d->body), "{\"i\":%d}", i);
  d->r.key = "k";
  d->r.handler_id = d->handler_id;
  d->r.route = d->route;
  d->r.event_name = "update";
  d->r.ordering_key = d->ordering_key;
  d->r.headers = d->headers;
  d->r.last_error = d->last_error;
  d->r.body = d->body;
  d->r.body_len = (size_t)n;
  d->r.created_ms = at;
  d->r.updated_ms = at;
  d->r.next_ms = at;
  d->r.state = HD_DELIVERY_PENDING;
}

/* Commits d[0..n) as inserts, in one batch. */
static void insert_ok(hd_journal *j, drow *d, size_t n) {
  hd_delivery_row *rows = calloc(n ? n : 1, sizeof(*rows));
  char msg[512] = "";
  hd_err err;

  assert_non_null(rows);
  for (size_t i = 0; i < n; i++)
    rows[i] = d[i].r;
  hd_journal_batch b = {.inserts = rows, .n_inserts = n};
  err = j->vt->commit(j, &b, msg, sizeof(msg));
  for (size_t i = 0; i < n; i++)
    d[i].r.seq = rows[i].seq;
  free(rows);
  if (err != HD_OK)
    fail_msg("insert: %s: %s", hd_strerror(err), msg);
}

/* Commits one update of `id` to `state` (attempts 1, the rest as given). */
static void update_ok(hd_journal *j, const char *id, hd_delivery_state state,
                      int64_t next_ms, int64_t updated_ms) {
  hd_delivery_update u = {
      .id = id,
      .state = state,
      .attempts = 1,
      .next_ms = next_ms,
      .updated_ms = updated_ms,
      .last_status = state == HD_DELIVERY_SUCCEEDED ? 200 : 503,
      .last_error = state == HD_DELIVERY_SUCCEEDED ? "" : "HTTP 503"};
  hd_journal_batch b = {.updates = &u, .n_updates = 1};
  char msg[512] = "";
  hd_err err = j->vt->commit(j, &b, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("update %s: %s: %s", id, hd_strerror(err), msg);
}

/* Puts a registration with id `id` (an async webhook) through `s`. */
static void register_handler(hd_store *s, const char *id) {
  hd_registration reg;
  char msg[512] = "";
  hd_err err;

  memset(&reg, 0, sizeof(reg));
  reg.key = "k";
  reg.target.kind = HD_TARGET_WEBHOOK;
  reg.target.webhook.url = "http://127.0.0.1:9/hook";
  reg.target.webhook.async = 1;
  err = hd_store_put_registration(s, id, &reg, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("put %s: %s: %s", id, hd_strerror(err), msg);
}

/* ---- what the journal hands out ------------------------------------------ */

/* Deep copies of the rows a claim or a get handed out. */
typedef struct got {
  hd_delivery_row *rows;
  size_t n, cap;
} got;

static hd_err collect_row(const hd_delivery_row *r, void *ud) {
  got *g = ud;
  for (size_t i = 0; i < N_ROW_STRINGS; i++)
    assert_non_null(*row_string(r, i)); /* every string handed out is set */
  row_copy(PUSH(g->rows, g->n, g->cap), r);
  return HD_OK;
}

static void got_free(got *g) {
  for (size_t i = 0; i < g->n; i++)
    row_clear(&g->rows[i]);
  free(g->rows);
  memset(g, 0, sizeof(*g));
}

/* The row of `g` with id `id`; NULL when none. */
static const hd_delivery_row *got_find(const got *g, const char *id) {
  for (size_t i = 0; i < g->n; i++)
    if (strcmp(g->rows[i].id, id) == 0)
      return &g->rows[i];
  return NULL;
}

/* How many rows of `g` are `handler_id`'s. */
static size_t got_count(const got *g, const char *handler_id) {
  size_t n = 0;
  for (size_t i = 0; i < g->n; i++)
    n += strcmp(g->rows[i].handler_id, handler_id) == 0;
  return n;
}

/* Claims up to `limit` at `now` into a fresh *g; how many came. */
static size_t claim(hd_journal *j, int64_t now, size_t limit, got *g) {
  char msg[512] = "";
  hd_err err;

  memset(g, 0, sizeof(*g));
  err = j->vt->claim(j, now, limit, collect_row, g, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("claim: %s: %s", hd_strerror(err), msg);
  return g->n;
}

/* A claim at `now` that hands out nothing. */
static void claim_none(hd_journal *j, int64_t now) {
  got g;
  size_t n = claim(j, now, 100, &g);
  if (n)
    fail_msg("claim at T0+%lld: %zu deliveries (first %s), want none",
             (long long)(now - T0), n, g.rows[0].id);
  got_free(&g);
}

/* A claim at `now` that hands out exactly the `n` deliveries `want`
 * (any order). */
static void claim_exactly(hd_journal *j, int64_t now, const drow *const *want,
                          size_t n) {
  got g;
  size_t have = claim(j, now, 100, &g);
  for (size_t i = 0; i < n; i++)
    if (!got_find(&g, want[i]->r.id))
      fail_msg("claim at T0+%lld: %s not handed out (%zu were)",
               (long long)(now - T0), want[i]->r.id, have);
  if (have != n)
    fail_msg("claim at T0+%lld: %zu deliveries, want %zu",
             (long long)(now - T0), have, n);
  got_free(&g);
}

#define CLAIM_EXACTLY(j, now, ...)                                             \
  do {                                                                         \
    const drow *want_[] = {__VA_ARGS__};                                       \
    claim_exactly(j, now, want_, sizeof(want_) / sizeof(want_[0]));            \
  } while (0)

static void get_ok(hd_journal *j, const char *id, got *g) {
  char msg[512] = "";
  hd_err err;

  memset(g, 0, sizeof(*g));
  err = j->vt->get(j, id, collect_row, NULL, g, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("get %s: %s: %s", id, hd_strerror(err), msg);
  assert_int_equal(g->n, 1);
}

static size_t reap_ok(hd_journal *j, int64_t now) {
  char msg[512] = "";
  size_t reaped = 12345;
  hd_err err = j->vt->reap(j, now, &reaped, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("reap: %s: %s", hd_strerror(err), msg);
  return reaped;
}

static void renew_ok(hd_journal *j, int64_t now) {
  char msg[512] = "";
  hd_err err = j->vt->renew(j, now, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("renew: %s: %s", hd_strerror(err), msg);
}

static void release_ok(hd_journal *j, const char *id) {
  char msg[512] = "";
  hd_err err = j->vt->release(j, id, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("release %s: %s: %s", id ? id : "(all)", hd_strerror(err), msg);
}

/* ---- leases -------------------------------------------------------------- */

/* A delivery inserted leased is its inserter's until the lease runs out
 * (created_ms + lease_ms): nobody claims it before, the other replica
 * does after, and reap gives expired leases back. */
static void test_leased_insert_waits_for_its_lease(void **state) {
  pgt *t = *state;
  drow r0, r1, r2;
  got g;

  open_pair(t, 1000);
  register_handler(t->a, "h1"); /* so reap leaves its deliveries alone */
  drow_make(&r0, 0, "h1", T0);
  r0.r.leased = 1;
  insert_ok(t->ja, &r0, 1);
  assert_lease(t, r0.r.id, REPLICA_A, T0 + 1000);

  /* Live: neither replica claims it (A delivers it without a claim). */
  claim_none(t->jb, T0 + 500);
  claim_none(t->ja, T0 + 500);
  claim_none(t->jb, T0 + 999);

  /* Expired: B claims it, with its body and headers, and now holds it. */
  assert_int_equal(claim(t->jb, T0 + 2000, 10, &g), 1);
  assert_string_equal(g.rows[0].id, r0.r.id);
  assert_int_equal(g.rows[0].state, HD_DELIVERY_PENDING);
  assert_int_equal(g.rows[0].body_len, r0.r.body_len);
  assert_memory_equal(g.rows[0].body, r0.body, r0.r.body_len);
  assert_string_equal(g.rows[0].headers, r0.headers);
  got_free(&g);
  assert_lease(t, r0.r.id, REPLICA_B, T0 + 3000);
  claim_none(t->ja, T0 + 2500); /* B's lease is live now */

  /* Reap: r1 (A's, in flight) and r0 (B's) have expired at T0 + 11200,
   * r2 (A's, made later) has not. */
  drow_make(&r1, 1, "h1", T0 + 10000);
  r1.r.leased = 1;
  r1.r.state = HD_DELIVERY_IN_FLIGHT;
  r1.r.next_ms = 0;
  r1.r.attempts = 1;
  insert_ok(t->ja, &r1, 1);
  drow_make(&r2, 2, "h1", T0 + 10500);
  r2.r.leased = 1;
  insert_ok(t->ja, &r2, 1);
  assert_int_equal(reap_ok(t->jb, T0 + 11200), 2);
  assert_no_lease(t, r0.r.id);
  assert_no_lease(t, r1.r.id);
  assert_lease(t, r2.r.id, REPLICA_A, T0 + 11500);
  /* An in-flight delivery whose lease came back is pending again. */
  get_ok(t->ja, r1.r.id, &g);
  assert_int_equal(g.rows[0].state, HD_DELIVERY_PENDING);
  got_free(&g);
  get_ok(t->ja, r0.r.id, &g);
  assert_int_equal(g.rows[0].state, HD_DELIVERY_PENDING);
  got_free(&g);
  /* Nothing left to reap; what came back is claimable, r2 still not. */
  assert_int_equal(reap_ok(t->ja, T0 + 11200), 0);
  CLAIM_EXACTLY(t->ja, T0 + 11200, &r0, &r1);
  assert_lease(t, r1.r.id, REPLICA_A, T0 + 12200);
}

/* renew extends every lease the replica holds (and only its own). */
static void test_renew_extends_the_lease(void **state) {
  pgt *t = *state;
  drow r0;

  open_pair(t, 1000);
  drow_make(&r0, 0, "h1", T0);
  r0.r.leased = 1;
  insert_ok(t->ja, &r0, 1);
  assert_lease(t, r0.r.id, REPLICA_A, T0 + 1000);

  renew_ok(t->ja, T0 + 900);
  assert_lease(t, r0.r.id, REPLICA_A, T0 + 1900);
  /* B renewing its own (none) leaves A's lease as it is. */
  renew_ok(t->jb, T0 + 1800);
  assert_lease(t, r0.r.id, REPLICA_A, T0 + 1900);

  claim_none(t->jb, T0 + 1500); /* past the first lease, within the renewed */
  CLAIM_EXACTLY(t->jb, T0 + 2500, &r0);
  assert_lease(t, r0.r.id, REPLICA_B, T0 + 3500);
}

/* Two replicas claiming at once, over and over, each hand out every
 * delivery exactly once (FOR UPDATE SKIP LOCKED). */
#define RACE_ROWS 200
#define RACE_LIMIT 50
#define RACE_ROUNDS 5

typedef struct racer {
  hd_journal *j;
  int64_t now;
  pthread_barrier_t *start;
  char (*ids)[HD_DELIVERY_ID_LEN + 1];
  size_t n, cap;
  int overflow;
  hd_err err;
  char msg[512];
} racer;

/* No cmocka in threads: what goes wrong is recorded, asserted after. */
static hd_err race_collect(const hd_delivery_row *r, void *ud) {
  racer *x = ud;
  if (x->n == x->cap) {
    x->overflow = 1;
    return HD_OK;
  }
  snprintf(x->ids[x->n++], HD_DELIVERY_ID_LEN + 1, "%s", r->id);
  return HD_OK;
}

static void *race_claims(void *ud) {
  racer *x = ud;
  pthread_barrier_wait(x->start);
  for (;;) {
    size_t before = x->n;
    x->err = x->j->vt->claim(x->j, x->now, RACE_LIMIT, race_collect, x, x->msg,
                             sizeof(x->msg));
    if (x->err != HD_OK || x->overflow || x->n == before)
      break;
    if (x->n - before > RACE_LIMIT) {
      x->overflow = 1;
      break;
    }
  }
  return NULL;
}

static int cmp_id(const void *a, const void *b) {
  return strcmp(a, b);
}

static void test_concurrent_claims_hand_out_each_once(void **state) {
  pgt *t = *state;
  drow *d = calloc(RACE_ROWS, sizeof(*d));
  char(*all)[HD_DELIVERY_ID_LEN + 1] = calloc(2 * RACE_ROWS, sizeof(*all));

  assert_non_null(d);
  assert_non_null(all);
  open_pair(t, 30000);
  for (int round = 0; round < RACE_ROUNDS; round++) {
    pthread_barrier_t start;
    pthread_t ta, tb;
    racer ra = {.j = t->ja, .now = T0 + round, .start = &start};
    racer rb = {.j = t->jb, .now = T0 + round, .start = &start};
    size_t n;
    got g;

    for (int i = 0; i < RACE_ROWS; i++)
      drow_make(&d[i], round * RACE_ROWS + i, "h1", T0 + round);
    insert_ok(t->ja, d, RACE_ROWS);
    ra.ids = all;
    ra.cap = RACE_ROWS;
    rb.ids = all + RACE_ROWS;
    rb.cap = RACE_ROWS;
    memset(all, 0, 2 * RACE_ROWS * sizeof(*all));
    assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
    assert_int_equal(pthread_create(&ta, NULL, race_claims, &ra), 0);
    assert_int_equal(pthread_create(&tb, NULL, race_claims, &rb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    pthread_barrier_destroy(&start);
    if (ra.err != HD_OK || rb.err != HD_OK)
      fail_msg("claim: %s: %s / %s: %s", hd_strerror(ra.err), ra.msg,
               hd_strerror(rb.err), rb.msg);
    if (ra.overflow || rb.overflow)
      fail_msg("round %d: more than %d handed out (A %zu, B %zu) or more "
               "than the limit at once",
               round, RACE_ROWS, ra.n, rb.n);
    /* Every row once: A's and B's together, sorted, are the 200 ids. */
    n = ra.n + rb.n;
    memmove(all + ra.n, all + RACE_ROWS, rb.n * sizeof(*all));
    qsort(all, n, sizeof(*all), cmp_id);
    for (size_t i = 1; i < n; i++)
      if (strcmp(all[i - 1], all[i]) == 0)
        fail_msg("round %d: %s handed out twice (A %zu, B %zu)", round, all[i],
                 ra.n, rb.n);
    if (n != RACE_ROWS)
      fail_msg("round %d: %zu handed out (A %zu, B %zu), want %d", round, n,
               ra.n, rb.n, RACE_ROWS);
    for (int i = 0; i < RACE_ROWS; i++)
      assert_string_equal(all[i], d[i].r.id); /* ids sort as they count */
    assert_int_equal(claim(t->ja, T0 + round, 10, &g), 0);
    got_free(&g);
  }
  free(all);
  free(d);
}

/* ---- ordered deliveries -------------------------------------------------- */

/* Of an ordered (handler, route, ordering key) only the head is
 * claimable: the next waits until the head is finished (SUCCEEDED or
 * DEAD); a FAILED head waiting for its retry holds it back. Other keys,
 * routes and handlers are independent, with or without limits. */
static void test_ordered_claims_only_the_head(void **state) {
  pgt *t = *state;
  enum { O1, O2, O3, P1, Q1, S1, L1, L2, N };
  drow d[N];

  open_pair(t, 120000); /* no lease runs out here */
  for (int i = 0; i < N; i++) {
    drow_make(&d[i], i, "h1", T0);
    snprintf(d[i].ordering_key, sizeof(d[i].ordering_key), "topic/a");
    d[i].r.ordered = 1;
  }
  snprintf(d[P1].ordering_key, sizeof(d[P1].ordering_key), "topic/b");
  snprintf(d[Q1].handler_id, sizeof(d[Q1].handler_id), "h2");
  snprintf(d[S1].route, sizeof(d[S1].route), "r2");
  /* A webhook with a limit is claimed apart (store_pg_claim.c): the same
   * rule holds there. */
  snprintf(d[L1].handler_id, sizeof(d[L1].handler_id), "h3");
  snprintf(d[L2].handler_id, sizeof(d[L2].handler_id), "h3");
  d[L1].r.max_inflight = d[L2].r.max_inflight = 5;
  insert_ok(t->ja, d, N);

  /* The heads: o1 of topic/a; p1 (another key), q1 (another handler), s1
   * (another route) and l1 (h3's head) are heads of their own. */
  CLAIM_EXACTLY(t->ja, T0, &d[O1], &d[P1], &d[Q1], &d[S1], &d[L1]);
  /* o1 and l1 are leased, not finished: o2 and l2 still wait. */
  claim_none(t->jb, T0);
  claim_none(t->jb, T0 + 10);

  /* The heads succeed: the next of each is claimable. */
  update_ok(t->ja, d[O1].r.id, HD_DELIVERY_SUCCEEDED, 0, T0 + 10);
  update_ok(t->ja, d[L1].r.id, HD_DELIVERY_SUCCEEDED, 0, T0 + 10);
  CLAIM_EXACTLY(t->jb, T0 + 10, &d[O2], &d[L2]);

  /* o2 fails, its retry a minute away: o3 still waits behind it. */
  update_ok(t->jb, d[O2].r.id, HD_DELIVERY_FAILED, T0 + 60000, T0 + 20);
  claim_none(t->ja, T0 + 20);
  claim_none(t->jb, T0 + 59999);

  /* o2 dead (a final answer): o3 is the head now. */
  update_ok(t->ja, d[O2].r.id, HD_DELIVERY_DEAD, 0, T0 + 30);
  CLAIM_EXACTLY(t->jb, T0 + 30, &d[O3]);
}

/* ---- limits across replicas ---------------------------------------------- */

/* max_inflight counts the leased deliveries of the webhook, whichever
 * replica holds them. */
static void test_max_inflight_holds_across_replicas(void **state) {
  pgt *t = *state;
  drow d[10];
  got g;
  char first[HD_DELIVERY_ID_LEN + 1];

  open_pair(t, 30000);
  for (int i = 0; i < 10; i++) {
    drow_make(&d[i], i, "h1", T0);
    d[i].r.max_inflight = 2;
  }
  insert_ok(t->ja, d, 10);

  assert_int_equal(claim(t->ja, T0, 10, &g), 2);
  /* Due order: the two oldest. */
  assert_non_null(got_find(&g, d[0].r.id));
  assert_non_null(got_find(&g, d[1].r.id));
  snprintf(first, sizeof(first), "%s", g.rows[0].id);
  got_free(&g);
  assert_int_equal(claim(t->jb, T0, 10, &g), 0);
  got_free(&g);
  assert_int_equal(claim(t->ja, T0 + 1, 10, &g), 0);
  got_free(&g);

  /* One finishes: room for one more, wherever it is claimed. */
  update_ok(t->ja, first, HD_DELIVERY_SUCCEEDED, 0, T0 + 5);
  assert_int_equal(claim(t->jb, T0 + 5, 10, &g), 1);
  assert_string_equal(g.rows[0].id, d[2].r.id);
  got_free(&g);
  assert_int_equal(claim(t->ja, T0 + 6, 10, &g), 0);
  got_free(&g);

  /* Expired leases hold no room: past them (d[1]'s and d[2]'s ran out),
   * two again, the oldest: d[1] and d[2] themselves. */
  assert_int_equal(claim(t->jb, T0 + 40000, 10, &g), 2);
  assert_non_null(got_find(&g, d[1].r.id));
  assert_non_null(got_find(&g, d[2].r.id));
  got_free(&g);
}

/* max_rps is one token bucket per webhook shared by the replicas: it
 * starts full at max(1, rps), refills at rps per second, holds at most
 * that. */
static void test_max_rps_is_one_bucket_across_replicas(void **state) {
  pgt *t = *state;
  enum { N1 = 20, N2 = 3 };
  drow d[N1 + N2];
  got g;

  open_pair(t, 1000000); /* no lease runs out here */
  for (int i = 0; i < N1; i++) {
    drow_make(&d[i], i, "h1", T0);
    d[i].r.max_rps = 5;
  }
  /* h2: half a delivery a second, due later (out of h1's way). */
  for (int i = N1; i < N1 + N2; i++) {
    drow_make(&d[i], i, "h2", T0 + 100000);
    d[i].r.max_rps = 0.5;
  }
  insert_ok(t->ja, d, N1 + N2);

  assert_int_equal(claim(t->ja, T0, 100, &g), 5); /* a full bucket */
  got_free(&g);
  assert_int_equal(claim(t->jb, T0, 100, &g), 0); /* A emptied it */
  got_free(&g);
  assert_int_equal(claim(t->jb, T0 + 1000, 100, &g), 5); /* a second's */
  got_free(&g);
  assert_int_equal(claim(t->ja, T0 + 1400, 100, &g), 2); /* 0.4 s: 2 */
  got_free(&g);
  assert_int_equal(claim(t->ja, T0 + 1400, 100, &g), 0);
  got_free(&g);
  /* Ten seconds idle: still one second's worth, not fifty. */
  assert_int_equal(claim(t->jb, T0 + 11400, 100, &g), 5);
  got_free(&g);

  /* h2 (0.5/s): the bucket holds 1 (max(1, rps)), so one at once; half a
   * token a second later; a whole one after two. h1's last 3 come too. */
  assert_int_equal(claim(t->ja, T0 + 100000, 100, &g), 4);
  assert_int_equal(got_count(&g, "h2"), 1);
  assert_int_equal(got_count(&g, "h1"), 3);
  got_free(&g);
  assert_int_equal(claim(t->jb, T0 + 101000, 100, &g), 0);
  got_free(&g);
  assert_int_equal(claim(t->jb, T0 + 102000, 100, &g), 1);
  assert_int_equal(got_count(&g, "h2"), 1);
  got_free(&g);
}

/* ---- release, reap's orphans, commit ------------------------------------- */

/* release gives this replica's lease back at once, of one delivery or of
 * all; never another replica's. */
static void test_release_gives_leases_back(void **state) {
  pgt *t = *state;
  drow d[3];

  open_pair(t, 30000);
  for (int i = 0; i < 3; i++) {
    drow_make(&d[i], i, "h1", T0);
    d[i].r.leased = 1;
  }
  insert_ok(t->ja, d, 3);
  claim_none(t->jb, T0 + 1);

  /* B has nothing to give back: A's leases stay. */
  release_ok(t->jb, NULL);
  release_ok(t->jb, d[0].r.id);
  claim_none(t->jb, T0 + 1);

  release_ok(t->ja, d[1].r.id);
  assert_no_lease(t, d[1].r.id);
  assert_lease(t, d[0].r.id, REPLICA_A, T0 + 30000);
  CLAIM_EXACTLY(t->jb, T0 + 2, &d[1]);

  /* All of A's, not B's new one. */
  release_ok(t->ja, NULL);
  assert_no_lease(t, d[0].r.id);
  assert_no_lease(t, d[2].r.id);
  assert_lease(t, d[1].r.id, REPLICA_B, T0 + 30002);
  CLAIM_EXACTLY(t->jb, T0 + 3, &d[0], &d[2]);
}

static void assert_state(pgt *t, const char *id, hd_delivery_state state,
                         const char *error_has) {
  got g;
  get_ok(t->ja, id, &g);
  if ((int)g.rows[0].state != (int)state)
    fail_msg("%s: state %d (%s), want %d", id, g.rows[0].state,
             g.rows[0].last_error, state);
  if (error_has && !strstr(g.rows[0].last_error, error_has))
    fail_msg("%s: last_error \"%s\" does not say \"%s\"", id,
             g.rows[0].last_error, error_has);
  if (!error_has && state != HD_DELIVERY_DEAD)
    assert_string_equal(g.rows[0].last_error, "");
  got_free(&g);
}

/* reap marks dead the unfinished deliveries of handlers no longer
 * registered, and leaves the registered ones' and finished ones alone. */
static void test_reap_ends_deliveries_of_removed_handlers(void **state) {
  pgt *t = *state;
  enum { GONE, GONE_FAILED, GONE_DONE, KEPT, N };
  drow d[N];
  char msg[512] = "";

  open_pair(t, 30000);
  register_handler(t->a, "h-kept");
  for (int i = 0; i < N; i++)
    drow_make(&d[i], i, i == KEPT ? "h-kept" : "h-gone", T0);
  d[GONE_FAILED].r.state = HD_DELIVERY_FAILED;
  d[GONE_FAILED].r.attempts = 1;
  d[GONE_FAILED].r.next_ms = T0 + 5000;
  d[GONE_DONE].r.state = HD_DELIVERY_SUCCEEDED;
  d[GONE_DONE].r.attempts = 1;
  d[GONE_DONE].r.next_ms = 0;
  insert_ok(t->ja, d, N);

  assert_int_equal(reap_ok(t->jb, T0 + 1), 0); /* no leases came back */
  assert_state(t, d[GONE].r.id, HD_DELIVERY_DEAD, "no longer registered");
  assert_state(t, d[GONE_FAILED].r.id, HD_DELIVERY_DEAD,
               "no longer registered");
  assert_state(t, d[GONE_DONE].r.id, HD_DELIVERY_SUCCEEDED, NULL);
  assert_state(t, d[KEPT].r.id, HD_DELIVERY_PENDING, NULL);
  CLAIM_EXACTLY(t->ja, T0 + 6000, &d[KEPT]);

  /* Its handler removed, the kept one goes too, once its lease is out. */
  release_ok(t->ja, NULL);
  assert_int_equal(hd_store_del(t->b, "h-kept", msg, sizeof(msg)), HD_OK);
  reap_ok(t->ja, T0 + 7000);
  assert_state(t, d[KEPT].r.id, HD_DELIVERY_DEAD, "no longer registered");
}

/* A commit's update of a leased delivery ends its lease: another replica
 * claims it when it is next due, not when the lease would have run out. */
static void test_commit_update_ends_the_lease(void **state) {
  pgt *t = *state;
  drow r0, r1;

  open_pair(t, 30000);
  drow_make(&r0, 0, "h1", T0);
  r0.r.leased = 1;
  drow_make(&r1, 1, "h1", T0);
  r1.r.leased = 1;
  insert_ok(t->ja, &r0, 1);
  insert_ok(t->ja, &r1, 1);
  assert_lease(t, r0.r.id, REPLICA_A, T0 + 30000);

  update_ok(t->ja, r0.r.id, HD_DELIVERY_FAILED, T0 + 100, T0 + 50);
  assert_no_lease(t, r0.r.id);
  assert_lease(t, r1.r.id, REPLICA_A, T0 + 30000); /* only the updated one */
  claim_none(t->jb, T0 + 99);                      /* not due yet */
  CLAIM_EXACTLY(t->jb, T0 + 100, &r0);

  /* B's lease ends with B's... or anyone's update: A finishes it. */
  update_ok(t->ja, r0.r.id, HD_DELIVERY_SUCCEEDED, 0, T0 + 200);
  assert_no_lease(t, r0.r.id);
}

/* A limited claim chooses without row locks, then leases: a candidate that
 * finished meanwhile (its commit waited on by the lease's UPDATE) is not
 * handed out. The test's connection plays the replica finishing it: it
 * holds the row changed in an open transaction while B claims, and
 * commits half a second later. */
typedef struct finisher {
  PGconn *c;
} finisher;

static void *commit_later(void *ud) {
  finisher *f = ud;
  usleep(500 * 1000);
  PQclear(PQexec(f->c, "COMMIT"));
  return NULL;
}

static void test_limited_claim_skips_what_finished_meanwhile(void **state) {
  pgt *t = *state;
  drow d[1];
  got g;
  pthread_t th;
  finisher f;
  const char *p[1];

  open_pair(t, 1000);
  drow_make(&d[0], 0, "h1", T0);
  d[0].r.max_inflight = 1;
  insert_ok(t->ja, d, 1);
  assert_int_equal(claim(t->ja, T0, 10, &g), 1);
  got_free(&g);

  /* A's lease has run out (T0 + 5000) but its delivery finishes now. */
  f.c = t->sql;
  p[0] = d[0].r.id;
  PQclear(PQexec(t->sql, "BEGIN"));
  PGresult *r = PQexecParams(t->sql,
                             "UPDATE handlerd_deliveries SET state = 3,"
                             " lease_owner = NULL, lease_until = NULL"
                             " WHERE id = $1",
                             1, NULL, p, NULL, NULL, 0);
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  assert_int_equal(pthread_create(&th, NULL, commit_later, &f), 0);
  size_t n = claim(t->jb, T0 + 5000, 10, &g);
  pthread_join(th, NULL);
  if (n != 0)
    fail_msg("B was handed %s in state %d", g.rows[0].id, g.rows[0].state);
  got_free(&g);
  assert_state(t, d[0].r.id, HD_DELIVERY_SUCCEEDED, NULL);
}

/* A commit's statements go out in one pipeline: 200 inserts, 200 updates
 * and 200 attempts cost a round trip per 64 statements (and the warm-up's
 * prepares), not one each; the store counts them for
 * handlerd_database_round_trips_total. */
static void test_commit_is_pipelined(void **state) {
  pgt *t = *state;
  enum { N = 200 };
  drow *d = calloc(N, sizeof(*d));
  hd_delivery_row *rows = calloc(N, sizeof(*rows));
  hd_delivery_update *ups = calloc(N, sizeof(*ups));
  hd_attempt_row *atts = calloc(N, sizeof(*atts));
  char msg[512] = "";
  uint64_t before;

  assert_non_null(d);
  assert_non_null(rows);
  assert_non_null(ups);
  assert_non_null(atts);
  open_pair(t, 1000);
  register_handler(t->a, "h1");
  for (int i = 0; i < N; i++) {
    drow_make(&d[i], 100 + i, "h1", T0 + i);
    rows[i] = d[i].r;
    ups[i] = (hd_delivery_update){.id = d[i].r.id,
                                  .state = HD_DELIVERY_SUCCEEDED,
                                  .attempts = 1,
                                  .updated_ms = T0 + N + i,
                                  .last_status = 200,
                                  .last_error = ""};
    atts[i] = (hd_attempt_row){.delivery_id = d[i].r.id,
                               .number = 1,
                               .started_ms = T0 + N + i,
                               .duration_ms = 1,
                               .http_status = 200,
                               .error = ""};
  }
  /* The first commit prepares the statements on the connection. */
  insert_ok(t->ja, d, 1);
  rows[0] = d[0].r;

  before = hd_store_pg_round_trips(t->a);
  hd_journal_batch b = {.inserts = rows + 1, .n_inserts = N - 1};
  assert_int_equal(t->ja->vt->commit(t->ja, &b, msg, sizeof(msg)), HD_OK);
  /* BEGIN, 199 inserts, COMMIT: 201 statements, 4 syncs (prepared once,
   * at most 3 more prepares on the way: 7 at most). */
  assert_in_range(hd_store_pg_round_trips(t->a) - before, 1, 7);
  for (int i = 1; i < N; i++)
    assert_true(rows[i].seq > rows[i - 1].seq); /* every seq came back */

  before = hd_store_pg_round_trips(t->a);
  b = (hd_journal_batch){
      .updates = ups, .n_updates = N, .attempts = atts, .n_attempts = N};
  assert_int_equal(t->ja->vt->commit(t->ja, &b, msg, sizeof(msg)), HD_OK);
  assert_in_range(hd_store_pg_round_trips(t->a) - before, 1, 9);

  got g;
  get_ok(t->jb, d[N - 1].r.id, &g);
  assert_int_equal(g.rows[0].state, HD_DELIVERY_SUCCEEDED);
  got_free(&g);
  PGresult *r = PQexec(t->sql, "SELECT count(*) FROM handlerd_attempts");
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), N);
  PQclear(r);
  free(atts);
  free(ups);
  free(rows);
  free(d);
}

/* The journal's connection dies under it (the server ends every handlerd
 * session): the next commit fails with the database named, nothing of it
 * is kept, and a later commit reconnects and goes in whole, pipelined as
 * before. */
static void test_commit_after_a_lost_connection(void **state) {
  pgt *t = *state;
  enum { N = 100 };
  drow *d = calloc(N, sizeof(*d));
  hd_delivery_row *rows = calloc(N, sizeof(*rows));
  char msg[512] = "";
  hd_err err = HD_OK;

  assert_non_null(d);
  assert_non_null(rows);
  open_pair(t, 1000);
  register_handler(t->a, "h1");
  for (int i = 0; i < N; i++) {
    drow_make(&d[i], 300 + i, "h1", T0 + i);
    rows[i] = d[i].r;
  }
  insert_ok(t->ja, d, 1); /* the link is up and its statements prepared */

  PGresult *r = PQexec(t->sql, "SELECT count(pg_terminate_backend(pid))"
                               " FROM pg_stat_activity"
                               " WHERE application_name = 'handlerd'");
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  assert_true(strtol(PQgetvalue(r, 0, 0), NULL, 10) >= 1);
  PQclear(r);

  hd_journal_batch b = {.inserts = rows + 1, .n_inserts = N - 1};
  err = t->ja->vt->commit(t->ja, &b, msg, sizeof(msg));
  print_message("  %s: %s\n", hd_strerror(err), msg);
  assert_int_equal(err, HD_EIO);
  assert_non_null(strstr(msg, "database "));
  r = PQexec(t->sql, "SELECT count(*) FROM handlerd_deliveries");
  assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), 1);
  PQclear(r);

  /* Reconnects after its backoff (at most 2 s). */
  for (int tries = 0; tries < 60; tries++) {
    msg[0] = '\0';
    err = t->ja->vt->commit(t->ja, &b, msg, sizeof(msg));
    if (err == HD_OK)
      break;
    usleep(100 * 1000);
  }
  if (err != HD_OK)
    fail_msg("no reconnection: %s: %s", hd_strerror(err), msg);
  r = PQexec(t->sql, "SELECT count(*) FROM handlerd_deliveries");
  assert_int_equal(strtol(PQgetvalue(r, 0, 0), NULL, 10), N);
  PQclear(r);
  for (int i = 2; i < N; i++)
    assert_true(rows[i].seq > rows[i - 1].seq);
  free(rows);
  free(d);
}

static const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, pgt_setup, pgt_teardown)
    T(test_limited_claim_skips_what_finished_meanwhile),
    T(test_leased_insert_waits_for_its_lease),
    T(test_renew_extends_the_lease),
    T(test_concurrent_claims_hand_out_each_once),
    T(test_ordered_claims_only_the_head),
    T(test_max_inflight_holds_across_replicas),
    T(test_max_rps_is_one_bucket_across_replicas),
    T(test_release_gives_leases_back),
    T(test_reap_ends_deliveries_of_removed_handlers),
    T(test_commit_update_ends_the_lease),
    T(test_commit_is_pipelined),
    T(test_commit_after_a_lost_connection),
#undef T
};

int main(void) {
  conf_suite = "store_pg";
  return cmocka_run_group_tests(tests, NULL, NULL);
}
