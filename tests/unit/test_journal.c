/*
 * The journal conformance suite (outbox/journal.h): the cases every
 * journal backend must pass, run once per backend in backends[] (the
 * SQLite store's journal now; PostgreSQL adds a row), then the SQLite
 * journal's own cases (its connection's synchronous=FULL, a read-only
 * store, write errors and a full disk, a callback that uses the journal,
 * bad rows).
 *
 * A backend row says how to give each test a fresh, empty location and
 * how to open (and reopen) a store there; the cases reach the journal
 * only through the store's `journal` and its vtable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "store.h"
#include "test_delivery_rows.h"
#include "test_store_conf.h"
#include "test_util.h"

/* ---- the harness (test_store_conf.h) ------------------------------------ */

/* (Re)opens c's store and returns its journal. */
static hd_journal *conf_journal(conf *c) {
  hd_store_close(c->s);
  c->s = NULL;
  c->s = conf_open(c);
  if (!c->s->journal)
    fail_msg("%s: the store has no journal", c->b->name);
  return c->s->journal;
}

/* ---- rows to write ------------------------------------------------------- */

/* A delivery and the buffers its strings point into. Not to be copied by
 * value once made (the pointers point into it). */
typedef struct drow {
  hd_delivery_row r;
  char key[32], handler_id[32], route[16], event_name[16];
  char ordering_key[32], headers[64], last_error[32];
  unsigned char body[32];
} drow;

/* Delivery number i: odd bytes in its body (NUL, 0xff, a byte per i), a
 * route on odd i, an ordering key on two of three, two header lines. */
static void drow_make(drow *d, int i, const char *key, const char *handler_id,
                      hd_delivery_state state, int64_t created_ms) {
  memset(d, 0, sizeof(*d));
  snprintf(d->r.id, sizeof(d->r.id), "00000000-0000-4000-8000-%012d", i);
  snprintf(d->r.event_id, sizeof(d->r.event_id),
           "eeeeeeee-0000-4000-8000-%012d", i);
  snprintf(d->key, sizeof(d->key), "%s", key);
  snprintf(d->handler_id, sizeof(d->handler_id), "%s", handler_id);
  snprintf(d->route, sizeof(d->route), "%s", i % 2 ? "route-a" : "");
  snprintf(d->event_name, sizeof(d->event_name), "%s",
           i % 2 ? "close" : "update");
  snprintf(d->ordering_key, sizeof(d->ordering_key), "%s",
           i % 3 ? "topic/x" : "");
  snprintf(d->headers, sizeof(d->headers), "x-a: 1\nx-i: %d\n", i);
  const unsigned char body[] = {'{', 0, 0xff, (unsigned char)i, '\n', 0, '}'};
  memcpy(d->body, body, sizeof(body));
  d->r.key = d->key;
  d->r.handler_id = d->handler_id;
  d->r.route = d->route;
  d->r.event_name = d->event_name;
  d->r.ordering_key = d->ordering_key;
  d->r.headers = d->headers;
  d->r.last_error = d->last_error;
  d->r.body = d->body;
  d->r.body_len = sizeof(body) - (size_t)(i % 3); /* ends in NUL on i%3 1 */
  d->r.created_ms = created_ms;
  d->r.updated_ms = created_ms;
  d->r.next_ms = state == HD_DELIVERY_PENDING ? created_ms : 0;
  d->r.state = state;
  if (state != HD_DELIVERY_PENDING) {
    d->r.attempts = 1;
    d->r.last_status = state == HD_DELIVERY_SUCCEEDED ? 200 : 503;
    if (state != HD_DELIVERY_SUCCEEDED)
      snprintf(d->last_error, sizeof(d->last_error), "HTTP 503 #%d", i);
  }
}

/* d[0..n): deliveries 0..n-1, pending, of handler "h1" under "k", made at
 * 1000 + i. */
static void drows_pending(drow *d, int n) {
  for (int i = 0; i < n; i++)
    drow_make(&d[i], i, "k", "h1", HD_DELIVERY_PENDING, 1000 + i);
}

static hd_err commit(hd_journal *j, hd_journal_batch *b, char *msg,
                     size_t msg_size) {
  return j->vt->commit(j, b, msg, msg_size);
}

static void commit_ok(hd_journal *j, hd_journal_batch *b) {
  char msg[512] = "";
  hd_err err = commit(j, b, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("commit: %s: %s", hd_strerror(err), msg);
}

/* Inserts d[0..n) in one commit; their seqs come back into d. */
static hd_err insert_drows(hd_journal *j, drow *d, size_t n, char *msg,
                           size_t msg_size) {
  hd_delivery_row *rows = calloc(n ? n : 1, sizeof(*rows));
  assert_non_null(rows);
  for (size_t i = 0; i < n; i++)
    rows[i] = d[i].r;
  hd_journal_batch b = {.inserts = rows, .n_inserts = n};
  hd_err err = commit(j, &b, msg, msg_size);
  for (size_t i = 0; i < n; i++)
    d[i].r.seq = rows[i].seq;
  free(rows);
  return err;
}

static void insert_ok(hd_journal *j, drow *d, size_t n) {
  char msg[512] = "";
  hd_err err = insert_drows(j, d, n, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("insert: %s: %s", hd_strerror(err), msg);
}

static void update_ok(hd_journal *j, const hd_delivery_update *u, size_t n) {
  hd_journal_batch b = {.updates = u, .n_updates = n};
  commit_ok(j, &b);
}

/* ---- collecting what the journal hands out ------------------------------- */

/* Deep copies of the rows a walk handed out. */
typedef struct got {
  hd_delivery_row *rows;
  size_t n, cap;
  hd_attempt_row *atts;
  size_t n_atts, cap_atts;
  size_t stop_at; /* the callback returns HD_EHANDLER at call stop_at */
  size_t calls;
} got;

static hd_err collect_row(const hd_delivery_row *r, void *ud) {
  got *g = ud;
  if (++g->calls == g->stop_at)
    return HD_EHANDLER;
  for (size_t i = 0; i < N_ROW_STRINGS; i++)
    assert_non_null(*row_string(r, i)); /* every string handed out is set */
  row_copy(PUSH(g->rows, g->n, g->cap), r);
  return HD_OK;
}

static hd_err collect_attempt(const hd_attempt_row *a, void *ud) {
  got *g = ud;
  assert_non_null(a->delivery_id); /* every string handed out is non-NULL */
  assert_non_null(a->error);
  attempt_copy(PUSH(g->atts, g->n_atts, g->cap_atts), a);
  return HD_OK;
}

static void got_free(got *g) {
  for (size_t i = 0; i < g->n; i++)
    row_clear(&g->rows[i]);
  for (size_t i = 0; i < g->n_atts; i++)
    attempt_clear(&g->atts[i]);
  free(g->rows);
  free(g->atts);
  memset(g, 0, sizeof(*g));
}

static void load_pending_ok(hd_journal *j, got *g) {
  char msg[512] = "";
  hd_err err = j->vt->load_pending(j, collect_row, g, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("load_pending: %s: %s", hd_strerror(err), msg);
}

static void list_ok(hd_journal *j, const hd_delivery_filter *f, got *g) {
  char msg[512] = "";
  hd_err err = j->vt->list(j, f, collect_row, g, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("list: %s: %s", hd_strerror(err), msg);
}

static hd_err get(hd_journal *j, const char *id, got *g, char *msg,
                  size_t msg_size) {
  return j->vt->get(j, id, collect_row, collect_attempt, g, msg, msg_size);
}

static void get_ok(hd_journal *j, const char *id, got *g) {
  char msg[512] = "";
  hd_err err = get(j, id, g, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("get %s: %s: %s", id, hd_strerror(err), msg);
  assert_int_equal(g->n, 1);
}

static void assert_not_found(hd_journal *j, const char *id) {
  got g = {0};
  char msg[64] = "";
  assert_int_equal(get(j, id, &g, msg, sizeof(msg)), HD_ENOTFOUND);
  assert_int_equal(g.n, 0);
  assert_int_equal(g.n_atts, 0);
  got_free(&g);
}

/* Every field of `have` is `want`'s; body and headers too when
 * `with_body` (list may leave them empty). */
static void assert_row(const hd_delivery_row *have, const hd_delivery_row *want,
                       int with_body) {
  assert_string_equal(have->id, want->id);
  assert_string_equal(have->event_id, want->event_id);
  assert_string_equal(have->key, want->key);
  assert_string_equal(have->handler_id, want->handler_id);
  assert_string_equal(have->route, want->route);
  assert_string_equal(have->event_name, want->event_name);
  assert_string_equal(have->ordering_key, want->ordering_key);
  assert_string_equal(have->last_error, want->last_error);
  assert_int_equal(have->seq, want->seq);
  assert_int_equal(have->created_ms, want->created_ms);
  assert_int_equal(have->next_ms, want->next_ms);
  assert_int_equal(have->updated_ms, want->updated_ms);
  assert_int_equal(have->state, want->state);
  assert_int_equal(have->attempts, want->attempts);
  assert_int_equal(have->last_status, want->last_status);
  if (!with_body)
    return;
  assert_string_equal(have->headers, want->headers);
  assert_int_equal(have->body_len, want->body_len);
  assert_memory_equal(have->body, want->body, want->body_len);
}

/* ---- conformance: deliveries --------------------------------------------- */

/* Inserted rows come back from load_pending in insert order with every
 * field, bodies byte for byte (NUL and 0xff inside, a NUL at the end, an
 * empty one); commit sets increasing seqs. */
static void test_insert_then_load_pending_in_order(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[5];

  drows_pending(d, 5);
  d[3].r.body_len = 0; /* an empty body is a body */
  insert_ok(j, d, 3);
  insert_ok(j, d + 3, 2); /* a second batch goes after the first */
  for (int i = 0; i < 5; i++) {
    assert_true(d[i].r.seq > 0);
    if (i)
      assert_true(d[i].r.seq > d[i - 1].r.seq);
  }
  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 5);
  for (size_t i = 0; i < 5; i++)
    assert_row(&g.rows[i], &d[i].r, 1);
  got_free(&g);
}

static void test_load_pending_of_a_new_journal_calls_nothing(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  got g = {0};

  load_pending_ok(j, &g);
  assert_int_equal(g.calls, 0);
  hd_delivery_filter all = {0};
  list_ok(j, &all, &g);
  assert_int_equal(g.calls, 0);
}

/* Updates change what they say; finished deliveries (succeeded, dead)
 * leave load_pending, unfinished ones (in flight, failed) stay in their
 * place; get shows the finished ones; an update of an unknown id is
 * ignored. */
static void test_updates_change_state_and_finished_leave_pending(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[5];

  drows_pending(d, 5);
  insert_ok(j, d, 5);
  const hd_delivery_update u[] = {
      {d[0].r.id, HD_DELIVERY_IN_FLIGHT, 1, 0, 2000, 0, ""},
      {d[1].r.id, HD_DELIVERY_SUCCEEDED, 1, 0, 2001, 204, ""},
      {d[2].r.id, HD_DELIVERY_FAILED, 2, 9000, 2002, 503, "HTTP 503"},
      {d[3].r.id, HD_DELIVERY_DEAD, 7, 0, 2003, 410, "HTTP 410: final"},
      {"ffffffff-0000-4000-8000-000000000000", HD_DELIVERY_DEAD, 1, 0, 1, 0,
       "no such delivery"},
  };
  update_ok(j, u, 5);
  for (int i = 0; i < 4; i++) {
    d[i].r.state = u[i].state;
    d[i].r.attempts = u[i].attempts;
    d[i].r.next_ms = u[i].next_ms;
    d[i].r.updated_ms = u[i].updated_ms;
    d[i].r.last_status = u[i].last_status;
    snprintf(d[i].last_error, sizeof(d[i].last_error), "%s", u[i].last_error);
  }

  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 3);
  assert_row(&g.rows[0], &d[0].r, 1);
  assert_row(&g.rows[1], &d[2].r, 1);
  assert_row(&g.rows[2], &d[4].r, 1);
  got_free(&g);
  for (int i = 1; i <= 3; i += 2) {
    get_ok(j, d[i].r.id, &g);
    assert_row(&g.rows[0], &d[i].r, 1);
    got_free(&g);
  }
  assert_not_found(j, u[4].id);

  /* Back from failed to pending (a manual redelivery) is back in. */
  const hd_delivery_update again = {
      d[3].r.id, HD_DELIVERY_PENDING, 7, 3000, 3000, 410, ""};
  update_ok(j, &again, 1);
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 4);
  assert_string_equal(g.rows[2].id, d[3].r.id);
  assert_int_equal(g.rows[2].state, HD_DELIVERY_PENDING);
  got_free(&g);
}

/* A walk stops at the callback's first error and returns it as is. */
static void test_callback_error_stops_the_walk(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[4];
  char msg[64] = "";

  drows_pending(d, 4);
  insert_ok(j, d, 4);
  got g = {.stop_at = 2};
  assert_int_equal(j->vt->load_pending(j, collect_row, &g, msg, sizeof(msg)),
                   HD_EHANDLER);
  assert_int_equal(g.calls, 2);
  assert_string_equal(msg, "");
  got_free(&g);
  g.stop_at = 3;
  hd_delivery_filter all = {0};
  assert_int_equal(j->vt->list(j, &all, collect_row, &g, msg, sizeof(msg)),
                   HD_EHANDLER);
  assert_int_equal(g.calls, 3);
  got_free(&g);
  g.stop_at = 1;
  assert_int_equal(get(j, d[0].r.id, &g, msg, sizeof(msg)), HD_EHANDLER);
  assert_int_equal(g.n_atts, 0);
  got_free(&g);
}

/* More rows than any one read may take at once (600, bodies of 48 KiB:
 * about 29 MB): all come back, in order, once each. */
static void test_many_rows_come_back_in_order(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  enum { N = 600, BODY = 48 * 1024 };
  drow *d = calloc(N, sizeof(*d));
  unsigned char *body = malloc(BODY);

  assert_non_null(d);
  assert_non_null(body);
  for (size_t i = 0; i < BODY; i++)
    body[i] = (unsigned char)(i * 7);
  for (int i = 0; i < N; i++) {
    drow_make(&d[i], i, "k", i % 2 ? "h1" : "h2",
              i % 5 ? HD_DELIVERY_PENDING : HD_DELIVERY_SUCCEEDED, 1000 + i);
    d[i].r.body = body;
    d[i].r.body_len = BODY - (size_t)i;
  }
  for (int i = 0; i < N; i += 100)
    insert_ok(j, d + i, 100);

  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, N - N / 5);
  for (size_t i = 0, k = 0; i < N; i++) {
    if (i % 5 == 0)
      continue;
    assert_row(&g.rows[k++], &d[i].r, 1);
  }
  got_free(&g);
  hd_delivery_filter all = {0};
  list_ok(j, &all, &g);
  assert_int_equal(g.n, N);
  for (size_t i = 0; i < N; i++)
    assert_string_equal(g.rows[i].id, d[N - 1 - i].r.id);
  got_free(&g);
  free(body);
  free(d);
}

/* ---- conformance: attempts and get --------------------------------------- */

/* Attempts written out of order, over two commits, come back from get in
 * number order after the row (with its body), every field kept: the
 * manual flag, the response head's bytes (NUL inside), the error. */
static void test_attempts_round_trip_in_number_order(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[2];
  unsigned char head[HD_RESPONSE_HEAD_MAX];

  for (size_t i = 0; i < sizeof(head); i++)
    head[i] = (unsigned char)(i % 251);
  drow_make(&d[0], 0, "k", "h1", HD_DELIVERY_PENDING, 1000);
  drow_make(&d[1], 1, "k", "h1", HD_DELIVERY_PENDING, 1001);
  insert_ok(j, d, 2);
  const hd_attempt_row a[] = {
      {d[0].r.id, 3, 1, 5000, 12, 200, "", head, sizeof(head)},
      {d[0].r.id, 1, 0, 3000, 30000, 0, "timed out", NULL, 0},
      {d[1].r.id, 1, 0, 3100, 5, 500, "HTTP 500", head, 3},
      {d[0].r.id, 2, 0, 4000, 40, 503, "HTTP 503",
       (const unsigned char *)"HTTP/1.1 503\r\n\0x", 17},
  };
  hd_journal_batch b1 = {.attempts = a, .n_attempts = 3};
  commit_ok(j, &b1);
  hd_journal_batch b2 = {.attempts = a + 3, .n_attempts = 1};
  commit_ok(j, &b2);

  got g = {0};
  get_ok(j, d[0].r.id, &g);
  assert_row(&g.rows[0], &d[0].r, 1);
  assert_int_equal(g.n_atts, 3);
  const hd_attempt_row *want[] = {&a[1], &a[3], &a[0]};
  for (size_t i = 0; i < 3; i++) {
    const hd_attempt_row *h = &g.atts[i];
    assert_string_equal(h->delivery_id, want[i]->delivery_id);
    assert_int_equal(h->number, want[i]->number);
    assert_int_equal(!!h->manual, want[i]->manual);
    assert_int_equal(h->started_ms, want[i]->started_ms);
    assert_int_equal(h->duration_ms, want[i]->duration_ms);
    assert_int_equal(h->http_status, want[i]->http_status);
    assert_string_equal(h->error, want[i]->error);
    assert_int_equal(h->response_head_len, want[i]->response_head_len);
    if (want[i]->response_head_len)
      assert_memory_equal(h->response_head, want[i]->response_head,
                          want[i]->response_head_len);
  }
  got_free(&g);
  /* The other delivery has its own one. */
  get_ok(j, d[1].r.id, &g);
  assert_int_equal(g.n_atts, 1);
  assert_string_equal(g.atts[0].error, "HTTP 500");
  got_free(&g);
  /* att_fn may be NULL. */
  char msg[256] = "";
  assert_int_equal(
      j->vt->get(j, d[0].r.id, collect_row, NULL, &g, msg, sizeof(msg)), HD_OK);
  assert_int_equal(g.n, 1);
  assert_int_equal(g.n_atts, 0);
  got_free(&g);
}

/* An unknown id is HD_ENOTFOUND without a message, calling nothing. */
static void test_get_of_unknown_id_is_enotfound(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d;
  char msg[64] = "";
  got g = {0};

  assert_int_equal(
      get(j, "00000000-0000-4000-8000-000000000000", &g, msg, sizeof(msg)),
      HD_ENOTFOUND);
  drow_make(&d, 1, "k", "h1", HD_DELIVERY_PENDING, 1000);
  insert_ok(j, &d, 1);
  assert_int_equal(
      get(j, "00000000-0000-4000-8000-000000000000", &g, msg, sizeof(msg)),
      HD_ENOTFOUND);
  assert_string_equal(msg, "");
  assert_int_equal(g.calls, 0);
  assert_int_equal(g.n_atts, 0);
  get_ok(j, d.r.id, &g);
  got_free(&g);
}

/* ---- conformance: list --------------------------------------------------- */

#define LN 24

/* The list fixture: LN deliveries over keys k0..k2, handlers h0..h3, every
 * state, created 1000, 2000, ... in insert order. */
static void make_list_rows(hd_journal *j, drow *d) {
  static const hd_delivery_state states[] = {
      HD_DELIVERY_PENDING, HD_DELIVERY_SUCCEEDED, HD_DELIVERY_FAILED,
      HD_DELIVERY_DEAD, HD_DELIVERY_IN_FLIGHT};
  char key[8], handler[8];
  for (int i = 0; i < LN; i++) {
    snprintf(key, sizeof(key), "k%d", i % 3);
    snprintf(handler, sizeof(handler), "h%d", i % 4);
    drow_make(&d[i], i, key, handler, states[i % 5], 1000 * (i + 1));
  }
  insert_ok(j, d, LN / 2);
  insert_ok(j, d + LN / 2, LN - LN / 2);
}

static int given(const char *s) {
  return s && *s;
}

/* What list must give: the filter done by hand, newest first. */
static size_t expect_list(const drow *d, const hd_delivery_filter *f,
                          const hd_delivery_row **out) {
  size_t n = 0;
  for (int i = LN - 1; i >= 0; i--) {
    const hd_delivery_row *r = &d[i].r;
    if ((given(f->key) && strcmp(r->key, f->key) != 0) ||
        (given(f->handler_id) && strcmp(r->handler_id, f->handler_id) != 0) ||
        (f->state && (int)r->state != f->state) ||
        (f->since_ms && r->created_ms < f->since_ms) ||
        (f->until_ms && r->created_ms >= f->until_ms) ||
        (f->before_seq && r->seq >= f->before_seq))
      continue;
    if (f->limit && n == f->limit)
      break;
    out[n++] = r;
  }
  return n;
}

/* list(f) is the hand-made answer, which must be neither nothing nor
 * everything (else a filter that did nothing would pass). */
static void check_list(hd_journal *j, const drow *d,
                       const hd_delivery_filter *f, const char *what) {
  const hd_delivery_row *want[LN];
  size_t n = expect_list(d, f, want);
  if (n == 0 || n == LN)
    fail_msg("%s: the case selects %zu of %d rows: no test", what, n, LN);
  got g = {0};
  list_ok(j, f, &g);
  if (g.n != n)
    fail_msg("%s: %zu rows listed, want %zu", what, g.n, n);
  for (size_t i = 0; i < n; i++)
    assert_row(&g.rows[i], want[i], 0);
  got_free(&g);
}

static void test_list_filters_newest_first(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[LN];

  make_list_rows(j, d);
  /* No filter: everything, newest first. */
  got g = {0};
  hd_delivery_filter all = {0};
  list_ok(j, &all, &g);
  assert_int_equal(g.n, LN);
  for (size_t i = 0; i < LN; i++)
    assert_row(&g.rows[i], &d[LN - 1 - i].r, 0);
  got_free(&g);
  /* "" is "any" as NULL is. */
  hd_delivery_filter empty = {.key = "", .handler_id = ""};
  list_ok(j, &empty, &g);
  assert_int_equal(g.n, LN);
  got_free(&g);

  const struct {
    const char *what;
    hd_delivery_filter f;
  } cases[] = {
      {"key", {.key = "k1"}},
      {"handler", {.handler_id = "h2"}},
      {"state", {.state = HD_DELIVERY_DEAD}},
      {"since", {.since_ms = 9000}},
      {"until", {.until_ms = 9000}},
      {"since and until", {.since_ms = 5000, .until_ms = 15000}},
      {"before_seq", {.before_seq = d[10].r.seq}},
      {"limit", {.limit = 5}},
      {"key and handler", {.key = "k0", .handler_id = "h3"}},
      {"key and state", {.key = "k2", .state = HD_DELIVERY_PENDING}},
      {"handler, since, limit",
       {.handler_id = "h1", .since_ms = 4000, .limit = 2}},
      {"state and until", {.state = HD_DELIVERY_SUCCEEDED, .until_ms = 20000}},
      {"key, before_seq, limit",
       {.key = "k1", .before_seq = d[20].r.seq, .limit = 3}},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    check_list(j, d, &cases[i].f, cases[i].what);
  /* A key or handler that is not there: nothing. */
  hd_delivery_filter none = {.handler_id = "h-none"};
  list_ok(j, &none, &g);
  assert_int_equal(g.calls, 0);
  got_free(&g);
}

/* Pages of `limit` rows, each from the last seq of the one before, are
 * the whole answer once, in order. */
static void page_through(hd_journal *j, const drow *d, hd_delivery_filter f,
                         size_t limit) {
  const hd_delivery_row *want[LN];
  size_t n = expect_list(d, &f, want), seen = 0, pages = 0;
  got g = {0};

  f.limit = limit;
  for (;;) {
    list_ok(j, &f, &g);
    assert_true(g.n <= limit);
    if (g.n == 0)
      break;
    pages++;
    for (size_t i = 0; i < g.n; i++) {
      assert_true(seen < n);
      assert_row(&g.rows[i], want[seen++], 0);
    }
    f.before_seq = g.rows[g.n - 1].seq;
    got_free(&g);
  }
  got_free(&g);
  assert_int_equal(seen, n);
  assert_int_equal(pages, (n + limit - 1) / limit);
}

static void test_list_pages_with_before_seq(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[LN];

  make_list_rows(j, d);
  page_through(j, d, (hd_delivery_filter){0}, 5);
  page_through(j, d, (hd_delivery_filter){0}, 1);
  page_through(j, d, (hd_delivery_filter){.handler_id = "h1"}, 2);
  page_through(j, d, (hd_delivery_filter){.key = "k2", .since_ms = 3000}, 3);
}

/* ---- conformance: prune -------------------------------------------------- */

/* Prune deletes succeeded and dead deliveries last changed before the
 * cut, with their attempts, and nothing else; seqs are not reused. */
static void test_prune_removes_only_finished_and_old(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  const struct {
    hd_delivery_state state;
    int64_t updated_ms;
    int pruned;
  } rows[] = {
      {HD_DELIVERY_SUCCEEDED, 9000, 0}, {HD_DELIVERY_PENDING, 1000, 0},
      {HD_DELIVERY_FAILED, 1000, 0},    {HD_DELIVERY_IN_FLIGHT, 1000, 0},
      {HD_DELIVERY_DEAD, 5000, 0}, /* not before the cut */
      {HD_DELIVERY_SUCCEEDED, 1000, 1}, {HD_DELIVERY_DEAD, 4999, 1},
  };
  enum { N = sizeof(rows) / sizeof(rows[0]) };
  drow d[N + 1];
  size_t pruned = 99;
  char msg[256] = "";

  for (int i = 0; i < N; i++) {
    drow_make(&d[i], i, "k", "h1", rows[i].state, 500);
    d[i].r.updated_ms = rows[i].updated_ms;
  }
  insert_ok(j, d, N);
  /* Two attempts for each. */
  hd_attempt_row a[2 * N];
  for (int i = 0; i < 2 * N; i++)
    a[i] = (hd_attempt_row){d[i / 2].r.id, 1 + i % 2,  0,    600, 1,
                            500,           "HTTP 500", NULL, 0};
  hd_journal_batch b = {.attempts = a, .n_attempts = 2 * N};
  commit_ok(j, &b);

  assert_int_equal(j->vt->prune(j, 5000, &pruned, msg, sizeof(msg)), HD_OK);
  assert_int_equal(pruned, 2);
  got g = {0};
  for (int i = 0; i < N; i++) {
    if (rows[i].pruned) {
      assert_not_found(j, d[i].r.id);
      continue;
    }
    get_ok(j, d[i].r.id, &g);
    assert_row(&g.rows[0], &d[i].r, 1);
    assert_int_equal(g.n_atts, 2);
    got_free(&g);
  }
  /* Nothing more to prune; *pruned may be NULL. */
  assert_int_equal(j->vt->prune(j, 5000, &pruned, msg, sizeof(msg)), HD_OK);
  assert_int_equal(pruned, 0);
  assert_int_equal(j->vt->prune(j, 1, NULL, msg, sizeof(msg)), HD_OK);

  /* A pruned id made again has none of the old attempts, and a seq after
   * every seq given before (the newest was pruned). */
  drow_make(&d[N], N - 1, "k", "h1", HD_DELIVERY_PENDING, 7000);
  insert_ok(j, &d[N], 1);
  assert_true(d[N].r.seq > d[N - 1].r.seq);
  get_ok(j, d[N].r.id, &g);
  assert_int_equal(g.n_atts, 0);
  got_free(&g);
}

/* ---- conformance: endpoints ---------------------------------------------- */

typedef struct eps {
  hd_endpoint_row r[8];
  char h[8][32], route[8][32];
  size_t n;
} eps;

static hd_err collect_endpoint(const hd_endpoint_row *e, void *ud) {
  eps *x = ud;
  assert_true(x->n < 8);
  assert_non_null(e->handler_id);
  assert_non_null(e->route);
  snprintf(x->h[x->n], sizeof(x->h[0]), "%s", e->handler_id);
  snprintf(x->route[x->n], sizeof(x->route[0]), "%s", e->route);
  x->r[x->n] = *e;
  x->r[x->n].handler_id = x->h[x->n];
  x->r[x->n].route = x->route[x->n];
  x->n++;
  return HD_OK;
}

static void load_endpoints_ok(hd_journal *j, eps *x) {
  char msg[256] = "";
  memset(x, 0, sizeof(*x));
  hd_err err = j->vt->load_endpoints(j, collect_endpoint, x, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("load_endpoints: %s: %s", hd_strerror(err), msg);
}

/* The row of (handler_id, route) in x, which must be there once. */
static const hd_endpoint_row *find_endpoint(const eps *x, const char *h,
                                            const char *route) {
  const hd_endpoint_row *found = NULL;
  for (size_t i = 0; i < x->n; i++)
    if (strcmp(x->r[i].handler_id, h) == 0 &&
        strcmp(x->r[i].route, route) == 0) {
      assert_null(found);
      found = &x->r[i];
    }
  if (!found)
    fail_msg("no endpoint row for (%s, \"%s\")", h, route);
  return found;
}

static void assert_endpoint(const eps *x, const hd_endpoint_row *want) {
  const hd_endpoint_row *e = find_endpoint(x, want->handler_id, want->route);
  assert_int_equal(e->failures, want->failures);
  assert_int_equal(e->first_failure_ms, want->first_failure_ms);
  assert_int_equal(e->disabled_ms, want->disabled_ms);
}

/* Endpoint rows replace the row of their (handler_id, route), and only
 * that one; all load back. */
static void test_endpoints_replace_by_handler_and_route(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  eps x;

  load_endpoints_ok(j, &x);
  assert_int_equal(x.n, 0);
  const hd_endpoint_row e1[] = {
      {"h1", "", 3, 1000, 0},
      {"h1", "route-a", 0, 0, 0},
      {"h2", "", 9, 500, 7000},
  };
  hd_journal_batch b = {.endpoints = e1, .n_endpoints = 3};
  commit_ok(j, &b);
  load_endpoints_ok(j, &x);
  assert_int_equal(x.n, 3);
  for (size_t i = 0; i < 3; i++)
    assert_endpoint(&x, &e1[i]);

  const hd_endpoint_row e2[] = {
      {"h1", "route-a", 5, 2000, 9000},
      {"h2", "", 0, 0, 0},
      {"h3", "route-a", 1, 100, 0},
  };
  b = (hd_journal_batch){.endpoints = e2, .n_endpoints = 3};
  commit_ok(j, &b);
  load_endpoints_ok(j, &x);
  assert_int_equal(x.n, 4);
  assert_endpoint(&x, &e1[0]);
  for (size_t i = 0; i < 3; i++)
    assert_endpoint(&x, &e2[i]);
}

/* ---- conformance: a failed commit, a reopen ------------------------------ */

/* A batch whose third insert repeats a delivery id fails and leaves
 * nothing of itself: not the two inserts before it, not its updates,
 * attempts or endpoint rows; the journal takes the next batch. */
static void test_failed_commit_changes_nothing(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[4];
  char msg[512] = "";

  drows_pending(d, 4);
  insert_ok(j, d, 1);
  const hd_endpoint_row e0 = {"h1", "", 1, 10, 0};
  hd_journal_batch b0 = {.endpoints = &e0, .n_endpoints = 1};
  commit_ok(j, &b0);

  hd_delivery_row ins[3] = {d[1].r, d[2].r, d[0].r};
  const hd_delivery_update u = {d[0].r.id, HD_DELIVERY_DEAD, 5, 0, 9000,
                                400,       "HTTP 400"};
  const hd_attempt_row a = {d[0].r.id, 1, 0, 1, 1, 400, "HTTP 400", NULL, 0};
  const hd_endpoint_row e[] = {{"h1", "", 7, 70, 700}, {"h9", "", 1, 1, 1}};
  hd_journal_batch b = {ins, 3, &u, 1, &a, 1, e, 2};
  hd_err err = commit(j, &b, msg, sizeof(msg));
  print_message("  %s: %s\n", hd_strerror(err), msg);
  assert_int_not_equal(err, HD_OK);
  assert_true(msg[0] != '\0');

  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 1);
  assert_row(&g.rows[0], &d[0].r, 1);
  got_free(&g);
  assert_not_found(j, d[1].r.id);
  assert_not_found(j, d[2].r.id);
  get_ok(j, d[0].r.id, &g);
  assert_int_equal(g.n_atts, 0);
  got_free(&g);
  eps x;
  load_endpoints_ok(j, &x);
  assert_int_equal(x.n, 1);
  assert_endpoint(&x, &e0);

  /* The same batch without the repeat goes in whole. */
  b.n_inserts = 2;
  commit_ok(j, &b);
  d[1].r.seq = ins[0].seq;
  d[2].r.seq = ins[1].seq;
  assert_true(d[1].r.seq > d[0].r.seq && d[2].r.seq > d[1].r.seq);
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 2);
  assert_row(&g.rows[0], &d[1].r, 1);
  assert_row(&g.rows[1], &d[2].r, 1);
  got_free(&g);
  load_endpoints_ok(j, &x);
  assert_int_equal(x.n, 2);
  assert_endpoint(&x, &e[0]);
}

/* A batch longer than a backend sends at once (PostgreSQL syncs its
 * pipeline every 64 statements, inside the transaction) whose last insert
 * repeats its first id fails whole: none of the 149 before the repeat is
 * there. Without the repeat it goes in whole, every seq in order. */
static void test_long_failed_commit_changes_nothing(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  enum { N = 150 };
  drow *d = calloc(N, sizeof(*d));
  char msg[512] = "";

  assert_non_null(d);
  drows_pending(d, N);
  hd_delivery_row *rows = calloc(N, sizeof(*rows));
  assert_non_null(rows);
  for (int i = 0; i < N - 1; i++)
    rows[i] = d[i].r;
  rows[N - 1] = d[0].r;
  hd_journal_batch b = {.inserts = rows, .n_inserts = N};
  hd_err err = commit(j, &b, msg, sizeof(msg));
  print_message("  %s: %s\n", hd_strerror(err), msg);
  assert_int_not_equal(err, HD_OK);
  assert_true(msg[0] != '\0');
  for (int i = 0; i < N - 1; i++)
    assert_not_found(j, d[i].r.id);

  b.n_inserts = N - 1;
  commit_ok(j, &b);
  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, N - 1);
  for (int i = 0; i < N - 1; i++) {
    d[i].r.seq = rows[i].seq;
    assert_true(i == 0 || d[i].r.seq > d[i - 1].r.seq);
    assert_row(&g.rows[i], &d[i].r, 1);
  }
  got_free(&g);
  free(rows);
  free(d);
}

/* Everything committed is there after close and reopen, and seqs go on
 * from where they were. */
static void test_data_survives_close_and_reopen(void **state) {
  conf *c = *state;
  hd_journal *j = conf_journal(c);
  drow d[4];

  drows_pending(d, 3);
  insert_ok(j, d, 3);
  const hd_delivery_update u = {
      d[1].r.id, HD_DELIVERY_SUCCEEDED, 1, 0, 2000, 200, ""};
  const hd_attempt_row a = {
      d[1].r.id, 1,   1,  1500,
      20,        200, "", (const unsigned char *)"HTTP/1.1 200 OK\r\n",
      17};
  const hd_endpoint_row e = {"h1", "route-a", 2, 1200, 0};
  hd_journal_batch b = {NULL, 0, &u, 1, &a, 1, &e, 1};
  commit_ok(j, &b);
  d[1].r.state = HD_DELIVERY_SUCCEEDED;
  d[1].r.attempts = 1;
  d[1].r.updated_ms = 2000;
  d[1].r.last_status = 200;
  d[1].r.next_ms = 0;

  j = conf_journal(c); /* closes the store first */
  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 2);
  assert_row(&g.rows[0], &d[0].r, 1);
  assert_row(&g.rows[1], &d[2].r, 1);
  got_free(&g);
  get_ok(j, d[1].r.id, &g);
  assert_row(&g.rows[0], &d[1].r, 1);
  assert_int_equal(g.n_atts, 1);
  assert_int_equal(g.atts[0].manual, 1);
  assert_int_equal(g.atts[0].response_head_len, 17);
  assert_memory_equal(g.atts[0].response_head, "HTTP/1.1 200 OK\r\n", 17);
  got_free(&g);
  eps x;
  load_endpoints_ok(j, &x);
  assert_int_equal(x.n, 1);
  assert_endpoint(&x, &e);
  drow_make(&d[3], 3, "k", "h1", HD_DELIVERY_PENDING, 1003);
  insert_ok(j, &d[3], 1);
  assert_true(d[3].r.seq > d[2].r.seq);
}

/* ======== the SQLite journal's own cases ================================== */

/* The SQLite store at `dir` (open_store), which carries a journal. */
static hd_store *journal_store(const char *dir) {
  hd_store *s = open_store(dir);
  assert_non_null(s->journal);
  return s;
}

/* PRAGMA synchronous is per connection, so it is read on the store's own
 * (open_store_catching, test_store_conf.h). */
/* The journal's promise (durable when commit returns) is WAL with
 * synchronous=FULL (2) on the connection its commits use: at NORMAL a
 * power loss could take an acknowledged event back. Checked for a new
 * database and an existing one, after commits too. */
static void test_journal_connection_is_synchronous_full(void **state) {
  fixture *f = *state;

  for (int round = 0; round < 2; round++) {
    sqlite3 *db = NULL;
    hd_store *s = open_store_catching(f->dir, &db);
    assert_non_null(s->journal);
    assert_int_equal(pragma_int(db, "PRAGMA synchronous"), 2);
    drow d;
    drow_make(&d, round, "k", "h1", HD_DELIVERY_PENDING, 1000);
    insert_ok(s->journal, &d, 1);
    assert_int_equal(pragma_int(db, "PRAGMA synchronous"), 2);
    assert_wal(db);
    hd_store_close(s);
  }
}

static void assert_read_only_refusal(hd_err err, const char *msg,
                                     const fixture *f) {
  assert_int_equal(err, HD_EIO);
  assert_non_null(strstr(msg, f->db));
  assert_non_null(strstr(msg, "the database is read-only"));
}

/* On a read-only file system the store opens read-only: the journal reads
 * as usual, and commit and prune refuse with HD_EIO saying why, changing
 * nothing. Needs root (a read-only bind mount); skipped otherwise. */
static void test_read_only_store_reads_but_refuses_writes(void **state) {
  fixture *f = *state;
  hd_store *s = journal_store(f->dir);
  drow d[2];
  char msg[512] = "";
  size_t pruned = 9;

  drow_make(&d[0], 0, "k", "h1", HD_DELIVERY_PENDING, 1000);
  drow_make(&d[1], 1, "k", "h1", HD_DELIVERY_DEAD, 1000);
  insert_ok(s->journal, d, 2);
  const hd_endpoint_row e = {"h1", "", 1, 10, 0};
  hd_journal_batch be = {.endpoints = &e, .n_endpoints = 1};
  commit_ok(s->journal, &be);
  hd_store_close(s);
  if (ro_bind_mount(f->dir) != 0) {
    print_message("  cannot make a read-only bind mount (needs root)\n");
    skip();
  }
  f->mounted = 1;

  s = journal_store(f->dir);
  hd_journal *j = s->journal;
  drow_make(&d[0], 5, "k", "h1", HD_DELIVERY_PENDING, 1000);
  assert_read_only_refusal(insert_drows(j, d, 1, msg, sizeof(msg)), msg, f);
  print_message("  %s\n", msg);
  msg[0] = '\0';
  assert_read_only_refusal(
      j->vt->prune(j, INT64_MAX, &pruned, msg, sizeof(msg)), msg, f);
  assert_int_equal(pruned, 0);
  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 1);
  got_free(&g);
  hd_delivery_filter all = {0};
  list_ok(j, &all, &g);
  assert_int_equal(g.n, 2);
  got_free(&g);
  get_ok(j, d[1].r.id, &g);
  got_free(&g);
  eps x;
  load_endpoints_ok(j, &x);
  assert_int_equal(x.n, 1);
  hd_store_close(s);
}

/* A commit that cannot be written (past RLIMIT_FSIZE: EFBIG) fails naming
 * the file, leaves nothing of its batch, and the journal takes the same
 * batch once the cause is gone. */
static void test_write_error_changes_nothing(void **state) {
  fixture *f = *state;
  hd_store *s = journal_store(f->dir);
  hd_journal *j = s->journal;
  enum { N = 8, BODY = 256 * 1024 };
  drow d[N];
  unsigned char *body = calloc(1, BODY);
  struct rlimit old, low;
  char msg[512] = "";

  assert_non_null(body);
  for (int i = 0; i < N; i++) {
    drow_make(&d[i], i, "k", "h1", HD_DELIVERY_PENDING, 1000 + i);
    d[i].r.body = body;
    d[i].r.body_len = BODY;
  }
  insert_ok(j, d, 1);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  low = old;
  low.rlim_cur = 512 * 1024;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
  hd_err err = insert_drows(j, d + 1, N - 1, msg, sizeof(msg));
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, prev);

  print_message("  %s: %s\n", hd_strerror(err), msg);
  assert_int_equal(err, HD_EIO);
  assert_non_null(strstr(msg, f->db));
  assert_non_null(strstr(msg, "disk I/O error"));
  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, 1);
  got_free(&g);
  insert_ok(j, d + 1, N - 1);
  hd_store_close(s);
  s = journal_store(f->dir);
  load_pending_ok(s->journal, &g);
  assert_int_equal(g.n, N);
  got_free(&g);
  hd_store_close(s);
  free(body);
}

/* A full disk is HD_EBUSY (retry once there is room) with SQLite's "full"
 * and the file; nothing of the failed batch is there, and commits work
 * again once there is room, without a reopen. Needs root (a small tmpfs);
 * skipped otherwise. */
static void test_full_disk_is_ebusy_and_changes_nothing(void **state) {
  fixture *f = *state;
  enum { BODY = 64 * 1024, FILLER = 256 * 1024 };
  unsigned char *body = calloc(1, FILLER);
  char msg[512] = "", filler[160];
  hd_err err = HD_OK;
  size_t committed = 0;

  assert_non_null(body);
  assert_int_equal(mkdir(f->dir, 0700), 0);
  if (small_tmpfs_mount(f->dir, 1024 * 1024) != 0) {
    print_message("  cannot mount a tmpfs (needs root)\n");
    free(body);
    skip();
  }
  f->mounted = 1;
  /* Room kept back, given again once the disk is full. */
  snprintf(filler, sizeof(filler), "%s/filler", f->dir);
  FILE *fp = fopen(filler, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(body, 1, FILLER, fp), FILLER);
  assert_int_equal(fclose(fp), 0);
  hd_store *s = journal_store(f->dir);
  hd_journal *j = s->journal;
  for (int i = 0; i < 200 && err == HD_OK; i += 2) {
    drow d[2];
    for (int k = 0; k < 2; k++) {
      drow_make(&d[k], i + k, "k", "h1", HD_DELIVERY_PENDING, 1000 + i);
      d[k].r.body = body;
      d[k].r.body_len = BODY;
    }
    err = insert_drows(j, d, 2, msg, sizeof(msg));
    if (err == HD_OK)
      committed += 2;
  }
  print_message("  after %zu rows: %s: %s\n", committed, hd_strerror(err), msg);
  assert_int_equal(err, HD_EBUSY);
  assert_non_null(strstr(msg, f->db));
  assert_non_null(strstr(msg, "full"));
  assert_true(committed > 0);
  got g = {0};
  load_pending_ok(j, &g);
  assert_int_equal(g.n, committed);
  got_free(&g);

  assert_int_equal(unlink(filler), 0);
  drow d;
  drow_make(&d, 999, "k", "h1", HD_DELIVERY_PENDING, 5000);
  d.r.body = body;
  d.r.body_len = BODY;
  insert_ok(j, &d, 1);
  load_pending_ok(j, &g);
  assert_int_equal(g.n, committed + 1);
  assert_row(&g.rows[committed], &d.r, 1);
  got_free(&g);
  hd_store_close(s);
  free(body);
}

/* A callback may use the journal (its rows are copies, handed out without
 * the lock): here load_pending's callback marks each row in flight. */
static hd_err mark_in_flight(const hd_delivery_row *r, void *ud) {
  hd_journal *j = ud;
  const hd_delivery_update u = {r->id, HD_DELIVERY_IN_FLIGHT, 1, 0, 5, 0, ""};
  hd_journal_batch b = {.updates = &u, .n_updates = 1};
  return j->vt->commit(j, &b, NULL, 0);
}

static void test_callback_may_use_the_journal(void **state) {
  fixture *f = *state;
  hd_store *s = journal_store(f->dir);
  hd_journal *j = s->journal;
  enum { N = 260 }; /* more than one chunk */
  drow d[N];

  for (int i = 0; i < N; i++)
    drow_make(&d[i], i, "k", "h1", HD_DELIVERY_PENDING, 1000 + i);
  insert_ok(j, d, N);
  assert_int_equal(j->vt->load_pending(j, mark_in_flight, j, NULL, 0), HD_OK);
  got g = {0};
  hd_delivery_filter in_flight = {.state = HD_DELIVERY_IN_FLIGHT};
  list_ok(j, &in_flight, &g);
  assert_int_equal(g.n, N);
  got_free(&g);
  hd_store_close(s);
}

/* Rows the journal cannot store as given are refused with HD_EINVAL and a
 * message, before anything is written; NULL arguments are HD_EINVAL. */
static void test_bad_rows_are_einval_and_change_nothing(void **state) {
  fixture *f = *state;
  hd_store *s = journal_store(f->dir);
  hd_journal *j = s->journal;
  drow d[2];
  char msg[512];

  drow_make(&d[0], 0, "k", "h1", HD_DELIVERY_PENDING, 1000);
  drow_make(&d[1], 1, "k", "h1", HD_DELIVERY_PENDING, 1000);
  for (int bad = 0; bad < 4; bad++) {
    hd_delivery_row rows[2] = {d[0].r, d[1].r};
    if (bad == 0)
      rows[1].key = NULL;
    else if (bad == 1)
      rows[1].state = (hd_delivery_state)9;
    else if (bad == 2)
      rows[1].id[0] = '\0';
    else
      rows[1].body = NULL;
    hd_journal_batch b = {.inserts = rows, .n_inserts = 2};
    msg[0] = '\0';
    assert_int_equal(commit(j, &b, msg, sizeof(msg)), HD_EINVAL);
    assert_non_null(strstr(msg, f->db));
  }
  unsigned char head[HD_RESPONSE_HEAD_MAX + 1] = {0};
  const hd_attempt_row a = {d[0].r.id, 1, 0, 1, 1, 200, "", head, sizeof(head)};
  hd_journal_batch ba = {.attempts = &a, .n_attempts = 1};
  assert_int_equal(commit(j, &ba, msg, sizeof(msg)), HD_EINVAL);
  hd_journal_batch bn = {.n_inserts = 1};
  assert_int_equal(commit(j, &bn, msg, sizeof(msg)), HD_EINVAL);
  assert_int_equal(commit(j, NULL, msg, sizeof(msg)), HD_EINVAL);
  assert_int_equal(j->vt->load_pending(j, NULL, NULL, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_int_equal(j->vt->list(j, NULL, collect_row, NULL, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_int_equal(
      j->vt->get(j, NULL, collect_row, NULL, NULL, msg, sizeof(msg)),
      HD_EINVAL);
  got g = {0};
  hd_delivery_filter all = {0};
  list_ok(j, &all, &g);
  assert_int_equal(g.calls, 0);
  hd_store_close(s);
}

/* ---- main: the conformance cases once per backend, then SQLite's --------- */

static const conf_case conformance[] = {
#define C(fn) CONF_CASE(fn)
    C(test_insert_then_load_pending_in_order),
    C(test_load_pending_of_a_new_journal_calls_nothing),
    C(test_updates_change_state_and_finished_leave_pending),
    C(test_callback_error_stops_the_walk),
    C(test_many_rows_come_back_in_order),
    C(test_attempts_round_trip_in_number_order),
    C(test_get_of_unknown_id_is_enotfound),
    C(test_list_filters_newest_first),
    C(test_list_pages_with_before_seq),
    C(test_prune_removes_only_finished_and_old),
    C(test_endpoints_replace_by_handler_and_route),
    C(test_failed_commit_changes_nothing),
    C(test_long_failed_commit_changes_nothing),
    C(test_data_survives_close_and_reopen),
#undef C
};

static const struct CMUnitTest sqlite_cases[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    T(test_journal_connection_is_synchronous_full),
    T(test_read_only_store_reads_but_refuses_writes),
    T(test_write_error_changes_nothing),
    T(test_full_disk_is_ebusy_and_changes_nothing),
    T(test_callback_may_use_the_journal),
    T(test_bad_rows_are_einval_and_change_nothing),
#undef T
};

int main(void) {
  return CONF_RUN("journal", conformance, sqlite_cases);
}
