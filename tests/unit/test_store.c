/*
 * The store conformance suite: the cases every hd_store backend must pass
 * (put/del/load order, ids, every field of a registration, the errors
 * store.h promises, durability under SIGKILL), run once per backend in
 * backends[] (SQLite now; a PostgreSQL backend adds a row), then SQLite's
 * own cases (file modes, WAL and synchronous=FULL, schema version and the
 * migration from schema 2 to 3, corrupt files, I/O error messages, records
 * it cannot read). The journal the store carries has its own suite,
 * test_journal.c.
 *
 * A backend row says how to give each test a fresh, empty store location
 * and how to open (and reopen) a store there; the cases use only the
 * hd_store API.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_sqlite_internal.h"
#include "test_store_conf.h"
#include "test_store_reg.h"
#include "test_store_rows.h"
#include "test_util.h"

/* ---- collecting what load returns ---------------------------------------- */

typedef struct rec {
  char id[64];
  char reg[1024]; /* reg_str() */
} rec;

typedef struct recs {
  rec r[1024];
  size_t n;
} recs;

static hd_err collect(const char *id, const hd_registration *reg, void *ud) {
  recs *rs = ud;
  assert_non_null(id);
  assert_non_null(reg);
  assert_non_null(reg->key);
  assert_true(rs->n < sizeof(rs->r) / sizeof(rs->r[0]));
  rec *r = &rs->r[rs->n++];
  snprintf(r->id, sizeof(r->id), "%s", id);
  reg_str(reg, 0, r->reg, sizeof(r->reg));
  return HD_OK;
}

static recs *load_all(hd_store *s) {
  recs *rs = calloc(1, sizeof(*rs));
  assert_non_null(rs);
  store_load_ok(s, collect, rs);
  return rs;
}

static void assert_rec(const rec *r, const char *id,
                       const hd_registration *want) {
  char buf[1024];
  assert_string_equal(r->id, id);
  assert_string_equal(r->reg, reg_str(want, 0, buf, sizeof(buf)));
}

/* A local handler `fn` under `key`: the small registration most cases
 * store. */
static hd_err put_local(hd_store *s, const char *id, const char *key,
                        const char *fn) {
  hd_registration r = reg_local(key, fn);
  return hd_store_put_registration(s, id, &r, NULL, 0);
}

static void assert_local(const rec *r, const char *id, const char *key,
                         const char *fn) {
  hd_registration want = reg_local(key, fn);
  assert_rec(r, id, &want);
}

/* ---- conformance: behaviour ---------------------------------------------- */

static void test_load_returns_records_in_put_order(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);

  assert_int_equal(put_local(s, "c", "k1", "fn-c"), HD_OK);
  assert_int_equal(put_local(s, "a", "k2", "fn-a"), HD_OK);
  assert_int_equal(put_local(s, "b", "k1", "fn-b"), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 3);
  assert_local(&rs->r[0], "c", "k1", "fn-c");
  assert_local(&rs->r[1], "a", "k2", "fn-a");
  assert_local(&rs->r[2], "b", "k1", "fn-b");
  free(rs);
  hd_store_close(s);
}

static void test_load_of_new_store_calls_nothing(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 0);
  free(rs);
  hd_store_close(s);
}

static void test_put_same_id_updates_in_place_keeping_order(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);

  assert_int_equal(put_local(s, "a", "k", "old-a"), HD_OK);
  assert_int_equal(put_local(s, "b", "k", "fn-b"), HD_OK);
  assert_int_equal(put_local(s, "a", "k2", "new-a"), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_local(&rs->r[0], "a", "k2", "new-a");
  assert_local(&rs->r[1], "b", "k", "fn-b");
  free(rs);
  hd_store_close(s);
}

/* Every field of every shape comes back as it went in, after a reopen
 * too: a webhook with all its settings and an event filter, routes mixing
 * kinds (order kept, one asking for a new secret), empty strings (not
 * NULL), non-ASCII and not-UTF-8 bytes saved by older releases. */
static void test_every_field_round_trips(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);
  hd_registration full = reg_full_webhook("k-full");
  hd_registration stream = reg_stream("k-stream");
  hd_registration odd = reg_local("k-\xff\xfe-not-utf8", "");
  hd_registration empty_key = reg_local("", "echo");
  const char *no_events[] = {""};
  odd.events = no_events;
  odd.n_events = 1;

  assert_int_equal(hd_store_put_registration(s, "full", &full, NULL, 0), HD_OK);
  assert_int_equal(hd_store_put_registration(s, "stream", &stream, NULL, 0),
                   HD_OK);
  assert_int_equal(hd_store_put_registration(s, "odd", &odd, NULL, 0), HD_OK);
  assert_int_equal(hd_store_put_registration(s, "empty", &empty_key, NULL, 0),
                   HD_OK);
  for (int round = 0; round < 2; round++) {
    recs *rs = load_all(s);
    assert_int_equal(rs->n, 4);
    assert_rec(&rs->r[0], "full", &full);
    assert_rec(&rs->r[1], "stream", &stream);
    assert_rec(&rs->r[2], "odd", &odd);
    assert_rec(&rs->r[3], "empty", &empty_key);
    free(rs);
    hd_store_close(s);
    s = conf_open(c);
  }
  hd_store_close(s);
}

/* What load hands over is the store's own copy: a caller's buffers may be
 * gone by then, and changing them after put changes nothing stored. */
static void test_put_copies_the_registration(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);
  char key[16] = "key", fn[16] = "fn";
  hd_registration r = reg_local(key, fn);

  assert_int_equal(hd_store_put_registration(s, "a", &r, NULL, 0), HD_OK);
  memcpy(key, "XXX", 4);
  memcpy(fn, "YY", 3);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 1);
  assert_local(&rs->r[0], "a", "key", "fn");
  free(rs);
  hd_store_close(s);
}

static void test_del_removes_only_that_record(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);

  assert_int_equal(put_local(s, "a", "k", "fn-a"), HD_OK);
  assert_int_equal(put_local(s, "b", "k", "fn-b"), HD_OK);
  assert_int_equal(put_local(s, "c", "k", "fn-c"), HD_OK);
  assert_int_equal(hd_store_del(s, "b", NULL, 0), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_local(&rs->r[0], "a", "k", "fn-a");
  assert_local(&rs->r[1], "c", "k", "fn-c");
  free(rs);
  /* Deleted means gone: a second delete finds nothing. */
  assert_int_equal(hd_store_del(s, "b", NULL, 0), HD_ENOTFOUND);
  hd_store_close(s);
}

static void test_del_unknown_id_returns_enotfound(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);

  assert_int_equal(hd_store_del(s, "nope", NULL, 0), HD_ENOTFOUND);
  assert_int_equal(put_local(s, "a", "k", "fn-a"), HD_OK);
  assert_int_equal(hd_store_del(s, "nope", NULL, 0), HD_ENOTFOUND);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 1);
  free(rs);
  hd_store_close(s);
}

static void test_reopen_keeps_records_and_order(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);

  assert_int_equal(put_local(s, "x", "k1", "fn-x"), HD_OK);
  assert_int_equal(put_local(s, "y", "k2", "fn-y"), HD_OK);
  assert_int_equal(put_local(s, "z", "k3", "fn-z"), HD_OK);
  assert_int_equal(hd_store_del(s, "y", NULL, 0), HD_OK);
  hd_store_close(s);

  s = conf_open(c);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_local(&rs->r[0], "x", "k1", "fn-x");
  assert_local(&rs->r[1], "z", "k3", "fn-z");
  free(rs);
  /* A record put after reopening still goes last, and a deleted id put
   * again is new: it goes last too. */
  assert_int_equal(put_local(s, "w", "k4", "fn-w"), HD_OK);
  assert_int_equal(put_local(s, "y", "k2", "fn-y2"), HD_OK);
  rs = load_all(s);
  assert_int_equal(rs->n, 4);
  assert_string_equal(rs->r[2].id, "w");
  assert_local(&rs->r[3], "y", "k2", "fn-y2");
  free(rs);
  hd_store_close(s);
}

static hd_err stop_at_second(const char *id, const hd_registration *reg,
                             void *ud) {
  int *calls = ud;
  (void)id, (void)reg;
  return ++*calls == 2 ? HD_EHANDLER : HD_OK;
}

static void test_load_stops_at_first_callback_error(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);
  int calls = 0;
  char msg[64] = "untouched";

  assert_int_equal(put_local(s, "a", "k", "1"), HD_OK);
  assert_int_equal(put_local(s, "b", "k", "2"), HD_OK);
  assert_int_equal(put_local(s, "c", "k", "3"), HD_OK);
  assert_int_equal(
      hd_store_load_registrations(s, stop_at_second, &calls, msg, sizeof(msg)),
      HD_EHANDLER);
  assert_int_equal(calls, 2);
  /* fn says why, not the store. */
  assert_string_equal(msg, "");
  /* The store is still usable after an interrupted load. */
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 3);
  free(rs);
  hd_store_close(s);
}

static hd_err delete_each(const char *id, const hd_registration *reg,
                          void *ud) {
  (void)reg;
  return hd_store_del(ud, id, NULL, 0);
}

static void test_load_callback_may_change_the_store(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);

  assert_int_equal(put_local(s, "a", "k", "1"), HD_OK);
  assert_int_equal(put_local(s, "b", "k", "2"), HD_OK);
  assert_int_equal(hd_store_load_registrations(s, delete_each, s, NULL, 0),
                   HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 0);
  free(rs);
  hd_store_close(s);
}

static void test_wrappers_reject_null_and_close_null_is_noop(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);
  hd_registration r = reg_local("k", "fn");
  hd_registration no_key = reg_local(NULL, "fn");

  assert_int_equal(hd_store_put_registration(NULL, "a", &r, NULL, 0),
                   HD_EINVAL);
  assert_int_equal(hd_store_put_registration(s, NULL, &r, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_put_registration(s, "a", NULL, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_put_registration(s, "a", &no_key, NULL, 0),
                   HD_EINVAL);
  assert_int_equal(hd_store_del(NULL, "a", NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_del(s, NULL, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_load_registrations(s, NULL, NULL, NULL, 0),
                   HD_EINVAL);
  assert_int_equal(hd_store_load_registrations(NULL, collect, NULL, NULL, 0),
                   HD_EINVAL);
  hd_store_close(NULL);
  hd_store_close(s);
}

/* A registration the record cannot hold (a NULL where a string must be,
 * a kind that does not exist) is refused with a message and changes
 * nothing, not stored as something else. */
static void test_put_refuses_an_unstorable_registration(void **state) {
  conf *c = *state;
  hd_store *s = conf_open(c);
  char msg[512] = "";
  hd_registration bad[4];
  const char *null_event[] = {NULL};

  bad[0] = reg_local("k", NULL);
  bad[1] = reg_full_webhook("k");
  bad[1].target.webhook.url = NULL;
  bad[2] = reg_local("k", "fn");
  bad[2].events = null_event;
  bad[2].n_events = 1;
  bad[3] = reg_local("k", "fn");
  bad[3].target.kind = (hd_target_kind)99;
  assert_int_equal(put_local(s, "a", "k", "fn-a"), HD_OK);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    msg[0] = '\0';
    assert_int_equal(
        hd_store_put_registration(s, "a", &bad[i], msg, sizeof(msg)),
        HD_EINVAL);
    assert_true(msg[0] != '\0');
  }
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 1);
  assert_local(&rs->r[0], "a", "k", "fn-a");
  free(rs);
  hd_store_close(s);
}

/* ---- conformance: durability, SIGKILL a writer at a random moment -------- */

#define DUR_RECORDS 400
#define DUR_ROUNDS 5

static void dur_fill(int i, char *id, size_t idn, char *key, size_t keyn,
                     char *fn, size_t fnn) {
  snprintf(id, idn, "id-%05d", i);
  snprintf(key, keyn, "key-%d", i % 7);
  snprintf(fn, fnn, "function %d payload %08x", i, (unsigned)i * 2654435761u);
}

/* The child: puts records 0..DUR_RECORDS-1, acknowledging each on `wfd`
 * only after put returned. Never returns. */
static void dur_child(conf *c, int round, int wfd) {
  char msg[512], id[32], key[32], fn[64];
  hd_store *s = c->b->open(c->env, round, msg, sizeof(msg));

  if (!s)
    _exit(2);
  for (uint32_t i = 0; i < DUR_RECORDS; i++) {
    dur_fill((int)i, id, sizeof(id), key, sizeof(key), fn, sizeof(fn));
    if (put_local(s, id, key, fn) != HD_OK)
      _exit(3);
    if (write(wfd, &i, sizeof(i)) != (ssize_t)sizeof(i))
      _exit(4);
  }
  hd_store_close(s);
  _exit(0);
}

/* Reads one ack; 0 at end of file. */
static int read_ack(int fd, uint32_t *out) {
  size_t got = 0;
  while (got < sizeof(*out)) {
    ssize_t n = read(fd, (char *)out + got, sizeof(*out) - got);
    if (n < 0 && errno == EINTR)
      continue;
    assert_true(n >= 0);
    if (n == 0) {
      assert_int_equal(got, 0); /* no torn ack */
      return 0;
    }
    got += (size_t)n;
  }
  return 1;
}

static void dur_round(conf *c, int round, unsigned *seed) {
  int p[2];
  uint32_t idx;
  size_t acked = 0;
  int status;
  char id[32], key[32], fn[64];

  assert_int_equal(pipe(p), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    dur_child(c, round, p[1]);
  }
  close(p[1]);

  /* Kill after a random number of acks plus a random delay, so the kill
   * lands anywhere in a put, including mid-commit. */
  size_t kill_after = 1 + (size_t)rand_r(seed) % (DUR_RECORDS / 2);
  while (acked < kill_after && read_ack(p[0], &idx)) {
    assert_int_equal(idx, acked);
    acked++;
  }
  usleep((useconds_t)(rand_r(seed) % 3000));
  kill(pid, SIGKILL);
  while (read_ack(p[0], &idx)) {
    assert_int_equal(idx, acked);
    acked++;
  }
  close(p[0]);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  /* Killed, or finished cleanly before the kill; never failed. */
  if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) &&
      !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fail_msg("writer child failed: status 0x%x", (unsigned)status);

  hd_store *s = open_round(c, round);
  recs *rs = load_all(s);
  /* Every acknowledged record, in order; at most one more (the put that
   * committed but was killed before its ack). */
  if (rs->n < acked || rs->n > acked + 1 || rs->n > DUR_RECORDS)
    fail_msg("%zu records acknowledged, %zu loaded", acked, rs->n);
  print_message("  %zu acknowledged, %zu loaded, writer %s\n", acked, rs->n,
                WIFSIGNALED(status) ? "killed" : "finished");
  for (size_t i = 0; i < rs->n; i++) {
    dur_fill((int)i, id, sizeof(id), key, sizeof(key), fn, sizeof(fn));
    assert_local(&rs->r[i], id, key, fn);
  }
  free(rs);
  /* And the store still takes writes. */
  assert_int_equal(put_local(s, "after", "k", "x"), HD_OK);
  hd_store_close(s);
}

static void test_acknowledged_puts_survive_sigkill(void **state) {
  conf *c = *state;
  const char *env = getenv("HD_TEST_SEED");
  unsigned seed = env ? (unsigned)strtoul(env, NULL, 10)
                      : (unsigned)time(NULL) ^ (unsigned)getpid();

  print_message("durability seed %u (set HD_TEST_SEED to repeat)\n", seed);
  for (int r = 1; r <= DUR_ROUNDS; r++)
    dur_round(c, r, &seed);
}

/* ======== SQLite's own cases ============================================= */

static void assert_mode(const char *path, mode_t want) {
  struct stat st;
  if (stat(path, &st) != 0)
    fail_msg("stat %s: %s", path, strerror(errno));
  if ((st.st_mode & 07777) != want)
    fail_msg("%s has mode %04o, want %04o", path,
             (unsigned)(st.st_mode & 07777), (unsigned)want);
}

static void test_store_creates_dir_0700_and_db_files_0600(void **state) {
  fixture *f = *state;
  char path[160];

  /* With a permissive umask the store must still restrict the modes. */
  mode_t old = umask(0);
  hd_store *s = open_store(f->dir);
  assert_int_equal(put_local(s, "a", "k", "secret"), HD_OK);
  umask(old);

  assert_mode(f->dir, 0700);
  assert_mode(f->db, 0600);
  /* While open in WAL mode the -wal and -shm files exist. */
  snprintf(path, sizeof(path), "%s-wal", f->db);
  assert_mode(path, 0600);
  snprintf(path, sizeof(path), "%s-shm", f->db);
  assert_mode(path, 0600);
  hd_store_close(s);
}

static void test_store_restricts_mode_of_existing_db_file(void **state) {
  fixture *f = *state;

  hd_store_close(open_store(f->dir));
  assert_int_equal(chmod(f->db, 0644), 0);
  hd_store *s = open_store(f->dir);
  assert_mode(f->db, 0600);
  hd_store_close(s);
}

/* The number `sql` (one row, one column) reads from the database file at
 * `path`, on a connection of its own. */
static int db_int(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* How many of schema 3's journal tables (deliveries, attempts, endpoints)
 * and of their indexes the file has. */
static int journal_tables(const char *path) {
  return db_int(path, "SELECT count(*) FROM sqlite_master WHERE type ="
                      " 'table' AND name IN ('deliveries', 'attempts',"
                      " 'endpoints')");
}

static int journal_indexes(const char *path) {
  return db_int(path, "SELECT count(*) FROM sqlite_master WHERE type ="
                      " 'index' AND name IN ('deliveries_unfinished',"
                      " 'deliveries_handler', 'deliveries_key',"
                      " 'deliveries_finished')");
}

static void test_store_db_uses_wal_and_schema_version_3(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;

  assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  assert_wal(db);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 3);
  assert_int_equal(SQ_SCHEMA_VERSION, 3);
  sqlite3_finalize(st);
  sqlite3_close(db);
  /* A new database is schema 3 at once: the journal's tables are there,
   * and the store carries its journal. */
  assert_int_equal(journal_tables(f->db), 3);
  assert_int_equal(journal_indexes(f->db), 4);
  assert_non_null(s->journal);
  hd_store_close(s);
}

/* ---- the store's own connection ------------------------------------------ */

/* The README's durability promise: WAL with synchronous=FULL (2), so the
 * WAL is synced at every commit and a put is on disk when it returns; at
 * NORMAL (1) a power loss could take acknowledged registrations back. The
 * kill tests cannot see this (SIGKILL keeps the page cache), so it is
 * checked on the connection itself: for a new database and for one that
 * exists, before and after writes. */
static void test_store_connection_is_synchronous_full(void **state) {
  fixture *f = *state;
  sqlite3 *db = NULL;

  for (int round = 0; round < 2; round++) {
    hd_store *s = open_store_catching(f->dir, &db);
    assert_int_equal(pragma_int(db, "PRAGMA synchronous"), 2);
    assert_int_equal(pragma_int(db, "PRAGMA secure_delete"), 1);
    assert_int_equal(put_local(s, round ? "b" : "a", "k", "req"), HD_OK);
    assert_int_equal(pragma_int(db, "PRAGMA synchronous"), 2);
    assert_wal(db);
    hd_store_close(s);
  }
}

static void test_store_refuses_newer_schema_version(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  sqlite3 *db = NULL;
  char msg[512] = "";

  assert_int_equal(put_local(s, "a", "k", "req-a"), HD_OK);
  hd_store_close(s);
  assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
  assert_int_equal(
      sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL),
      SQLITE_OK);
  sqlite3_close(db);

  s = (hd_store *)1;
  assert_int_equal(hd_store_sqlite_open(f->dir, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  assert_string_equal(
      msg,
      "database schema version 99 is newer than this handlerd supports (3)");
}

static void test_store_refuses_garbage_db_file_with_eio(void **state) {
  fixture *f = *state;
  char junk[8192];
  char msg[512] = "";
  hd_store *s = (hd_store *)1;

  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (char)("not a database! "[i % 16]);
  assert_int_equal(mkdir(f->dir, 0700), 0);
  FILE *fp = fopen(f->db, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(junk, 1, sizeof(junk), fp), sizeof(junk));
  assert_int_equal(fclose(fp), 0);

  assert_int_equal(hd_store_sqlite_open(f->dir, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  /* The message names the file and carries what SQLite said. */
  assert_non_null(strstr(msg, f->db));
  assert_non_null(strstr(msg, "file is not a database"));
}

/* The whole of `path` (at most `cap` bytes) into `buf`; its size. */
static size_t read_file(const char *path, unsigned char *buf, size_t cap) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  size_t n = fread(buf, 1, cap, fp);
  assert_int_equal(fgetc(fp), EOF); /* all of it */
  fclose(fp);
  return n;
}

#define CORRUPT_CAP (1024 * 1024)

static void
test_store_refuses_a_corrupt_database_and_leaves_it_alone(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  char req[2048], msg[512] = "", id[16];

  /* Enough rows for the table to span many pages. */
  memset(req, 'r', sizeof(req) - 1);
  req[sizeof(req) - 1] = '\0';
  for (int i = 0; i < 60; i++) {
    snprintf(id, sizeof(id), "id-%d", i);
    assert_int_equal(put_local(s, id, "k", req), HD_OK);
  }
  hd_store_close(s);

  /* Keep page 1 (header and schema); overwrite the rest. */
  unsigned char *before = malloc(CORRUPT_CAP), *after = malloc(CORRUPT_CAP);
  assert_non_null(before);
  assert_non_null(after);
  size_t n = read_file(f->db, before, CORRUPT_CAP);
  assert_true(n > 16 * 4096);
  for (size_t i = 4096; i < n; i++)
    before[i] = (unsigned char)(i * 2654435761u >> 13);
  FILE *fp = fopen(f->db, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(before, 1, n, fp), n);
  assert_int_equal(fclose(fp), 0);

  s = (hd_store *)1;
  assert_int_equal(hd_store_sqlite_open(f->dir, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  /* One line naming the file and the problem. */
  assert_non_null(strstr(msg, f->db));
  if (!strstr(msg, "corrupt") && !strstr(msg, "malformed"))
    fail_msg("the message does not say the file is corrupt: %s", msg);
  assert_null(strchr(msg, '\n'));
  /* Not a byte changed. */
  assert_int_equal(read_file(f->db, after, CORRUPT_CAP), n);
  assert_memory_equal(after, before, n);
  free(before);
  free(after);
}

/* A put that cannot be written (here: past RLIMIT_FSIZE, EFBIG) fails with
 * the file and the system's reason, changes nothing, and the store takes
 * writes again once the cause is gone. */
static void test_store_write_error_names_the_file_and_the_cause(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  struct rlimit old, low;
  char msg[512] = "";
  size_t big_len = 512 * 1024;
  char *big = malloc(big_len + 1);
  hd_registration big_reg = reg_local("k", big);

  assert_non_null(big);
  memset(big, 'b', big_len);
  big[big_len] = '\0';
  assert_int_equal(put_local(s, "a", "k", "req-a"), HD_OK);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  low = old;
  low.rlim_cur = 128 * 1024;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
  hd_err err = hd_store_put_registration(s, "big", &big_reg, msg, sizeof(msg));
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, prev);

  print_message("  %s\n", msg);
  assert_int_equal(err, HD_EIO);
  assert_non_null(strstr(msg, f->db));
  /* SQLite does not keep the errno of a failed WAL write (EFBIG here), but
   * says what failed. */
  if (!strstr(msg, "disk I/O error (writing"))
    fail_msg("the message does not say what failed: %s", msg);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 1);
  free(rs);
  /* Room again: the same put works, no reopening. */
  assert_int_equal(
      hd_store_put_registration(s, "big", &big_reg, msg, sizeof(msg)), HD_OK);
  assert_int_equal(put_local(s, "c", "k", "req-c"), HD_OK);
  hd_store_close(s);
  free(big);

  s = open_store(f->dir);
  assert_int_equal(hd_store_del(s, "big", msg, sizeof(msg)), HD_OK);
  rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_local(&rs->r[0], "a", "k", "req-a");
  assert_local(&rs->r[1], "c", "k", "req-c");
  free(rs);
  hd_store_close(s);
}

static void
test_store_open_fails_with_message_when_parent_missing(void **state) {
  fixture *f = *state;
  char dir[160], msg[512] = "";
  hd_store *s = (hd_store *)1;

  snprintf(dir, sizeof(dir), "%s/missing/state", f->base);
  assert_int_equal(hd_store_sqlite_open(dir, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  assert_non_null(strstr(msg, dir));
}

static void test_store_open_fails_when_path_is_a_file(void **state) {
  fixture *f = *state;
  char msg[512] = "";
  hd_store *s = (hd_store *)1;

  FILE *fp = fopen(f->dir, "w");
  assert_non_null(fp);
  fclose(fp);
  assert_int_equal(hd_store_sqlite_open(f->dir, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  assert_non_null(strstr(msg, "not a directory"));
  unlink(f->dir);
}

/* Writes `len` bytes as the record of row `id` behind the store's back. */
static void poke_record(const char *db_path, const char *id, const void *rec,
                        size_t len) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(
                       db, "UPDATE registrations SET record = ?1 WHERE id = ?2",
                       -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_blob(st, 1, rec, (int)len, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  assert_int_equal(sqlite3_changes(db), 1);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* A record that is not one (damaged, or written by something else) and a
 * record of a newer format (a newer handlerd's) both stop the load with
 * HD_EIO and a message naming the file and the handler: restoring them as
 * something else would change what was registered. */
static void test_store_refuses_records_it_cannot_read(void **state) {
  fixture *f = *state;
  static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  /* Registration{version: 99, key: "k"} (2 is async registrations') */
  static const uint8_t newer[] = {0x08, 0x63, 0x12, 0x01, 'k'};
  /* Registration{version: 1, key: "a\0b"} */
  static const uint8_t nul[] = {0x08, 0x01, 0x12, 0x03, 'a', 0, 'b'};
  const struct {
    const uint8_t *rec;
    size_t len;
    const char *says;
  } cases[] = {{junk, sizeof(junk), "not a handlerd.store.v1.Registration"},
               {newer, sizeof(newer), "record format version 99"},
               {nul, sizeof(nul), "NUL"}};

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char msg[512] = "";
    hd_store *s = open_store(f->dir);
    assert_int_equal(put_local(s, "h-1", "k", "fn"), HD_OK);
    assert_int_equal(put_local(s, "h-2", "k", "fn"), HD_OK);
    poke_record(f->db, "h-2", cases[i].rec, cases[i].len);
    recs *rs = calloc(1, sizeof(*rs));
    assert_non_null(rs);
    assert_int_equal(
        hd_store_load_registrations(s, collect, rs, msg, sizeof(msg)), HD_EIO);
    print_message("  %s\n", msg);
    assert_non_null(strstr(msg, f->db));
    assert_non_null(strstr(msg, "handler h-2"));
    assert_non_null(strstr(msg, cases[i].says));
    free(rs);
    hd_store_close(s);
    remove_store_dir(f->dir);
  }
}

/* The key column is there for people and queries (sqlite3 handlerd.db);
 * it follows the record's key, also when a put replaces it. */
static void test_store_key_column_follows_the_record(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;

  assert_int_equal(put_local(s, "a", "old", "fn"), HD_OK);
  assert_int_equal(put_local(s, "a", "new", "fn"), HD_OK);
  assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "SELECT key FROM registrations"
                                      " WHERE id = 'a'",
                                      -1, &st, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "new");
  sqlite3_finalize(st);
  sqlite3_close(db);
  hd_store_close(s);
}

/* ---- schema 2 to 3 ------------------------------------------------------- */

/* Makes f's database what a handlerd of schema 2 left: registrations "a"
 * and "b" and no journal tables, user_version 2. */
static void make_schema_2(fixture *f) {
  hd_store *s = open_store(f->dir);
  sqlite3 *db = NULL;

  assert_int_equal(put_local(s, "a", "k1", "fn-a"), HD_OK);
  assert_int_equal(put_local(s, "b", "k2", "fn-b"), HD_OK);
  hd_store_close(s);
  assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db,
                                "DROP TABLE deliveries; DROP TABLE attempts;"
                                " DROP TABLE endpoints;"
                                " PRAGMA user_version = 2;",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
  assert_int_equal(db_int(f->db, "PRAGMA user_version"), 2);
  assert_int_equal(journal_tables(f->db), 0);
}

static void assert_schema_2_loads(hd_store *s) {
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_local(&rs->r[0], "a", "k1", "fn-a");
  assert_local(&rs->r[1], "b", "k2", "fn-b");
  free(rs);
}

/* A schema-2 database opens as schema 3: its registrations as they were,
 * the journal's tables and indexes new, and its journal works. */
static void test_store_migrates_schema_2_to_3(void **state) {
  fixture *f = *state;
  hd_delivery_row d;
  char msg[512] = "";

  make_schema_2(f);
  hd_store *s = open_store(f->dir);
  assert_int_equal(db_int(f->db, "PRAGMA user_version"), 3);
  assert_int_equal(journal_tables(f->db), 3);
  assert_int_equal(journal_indexes(f->db), 4);
  assert_schema_2_loads(s);
  memset(&d, 0, sizeof(d));
  snprintf(d.id, sizeof(d.id), "00000000-0000-4000-8000-000000000001");
  d.key = d.handler_id = d.event_name = "x";
  d.state = HD_DELIVERY_PENDING;
  hd_journal_batch b = {.inserts = &d, .n_inserts = 1};
  assert_non_null(s->journal);
  assert_int_equal(s->journal->vt->commit(s->journal, &b, msg, sizeof(msg)),
                   HD_OK);
  assert_true(d.seq > 0);
  hd_store_close(s);
  assert_int_equal(db_int(f->db, "SELECT count(*) FROM deliveries"), 1);
}

static void kill_at_journal(const char *step) {
  if (strcmp(step, "journal") == 0)
    kill(getpid(), SIGKILL);
}

/* A kill -9 in the migration from 2 to 3 (at its step "journal", inside
 * the transaction) leaves schema 2 as it was; the next open migrates. */
static void
test_store_kill9_while_migrating_to_3_leaves_schema_2(void **state) {
  fixture *f = *state;
  int status;

  make_schema_2(f);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    hd_store *s = NULL;
    hd_sq_migrate_hook = kill_at_journal;
    if (hd_store_sqlite_open(f->dir, &s, NULL, 0) != HD_OK)
      _exit(2);
    _exit(3); /* the step never came */
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
    fail_msg("the child was not killed at \"journal\" (status 0x%x)",
             (unsigned)status);
  assert_int_equal(db_int(f->db, "PRAGMA user_version"), 2);
  assert_int_equal(journal_tables(f->db), 0);
  assert_int_equal(db_int(f->db, "SELECT count(*) FROM registrations"), 2);
  hd_store *s = open_store(f->dir);
  assert_schema_2_loads(s);
  hd_store_close(s);
  assert_int_equal(db_int(f->db, "PRAGMA user_version"), 3);
  assert_int_equal(journal_tables(f->db), 3);
}

/* On a read-only file system a schema-2 database cannot be migrated: the
 * open is refused saying so, and the file is left as it was. Needs root
 * (a read-only bind mount); skipped otherwise. */
static void test_store_read_only_schema_2_is_refused(void **state) {
  fixture *f = *state;
  static unsigned char before[CORRUPT_CAP], after[CORRUPT_CAP];
  char msg[512] = "";
  hd_store *s = (hd_store *)1;

  make_schema_2(f);
  size_t n = read_file(f->db, before, sizeof(before));
  if (ro_bind_mount(f->dir) != 0) {
    print_message("  cannot make a read-only bind mount (needs root)\n");
    skip();
  }
  f->mounted = 1;
  assert_int_equal(hd_store_sqlite_open(f->dir, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  print_message("  %s\n", msg);
  assert_non_null(strstr(msg, f->db));
  assert_non_null(
      strstr(msg, "schema version 2 needs setting up to 3, which a read-only "
                  "database cannot be"));
  assert_int_equal(read_file(f->db, after, sizeof(after)), n);
  assert_memory_equal(after, before, n);
}

/* ---- main: the conformance cases once per backend, then SQLite's -------- */

static const conf_case conformance[] = {
#define C(fn) CONF_CASE(fn)
    C(test_load_returns_records_in_put_order),
    C(test_load_of_new_store_calls_nothing),
    C(test_put_same_id_updates_in_place_keeping_order),
    C(test_every_field_round_trips),
    C(test_put_copies_the_registration),
    C(test_del_removes_only_that_record),
    C(test_del_unknown_id_returns_enotfound),
    C(test_reopen_keeps_records_and_order),
    C(test_load_stops_at_first_callback_error),
    C(test_load_callback_may_change_the_store),
    C(test_wrappers_reject_null_and_close_null_is_noop),
    C(test_put_refuses_an_unstorable_registration),
    C(test_acknowledged_puts_survive_sigkill),
#undef C
};

static const struct CMUnitTest sqlite_cases[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    T(test_store_creates_dir_0700_and_db_files_0600),
    T(test_store_restricts_mode_of_existing_db_file),
    T(test_store_db_uses_wal_and_schema_version_3),
    T(test_store_connection_is_synchronous_full),
    T(test_store_refuses_newer_schema_version),
    T(test_store_migrates_schema_2_to_3),
    T(test_store_kill9_while_migrating_to_3_leaves_schema_2),
    T(test_store_read_only_schema_2_is_refused),
    T(test_store_refuses_garbage_db_file_with_eio),
    T(test_store_refuses_a_corrupt_database_and_leaves_it_alone),
    T(test_store_write_error_names_the_file_and_the_cause),
    T(test_store_open_fails_with_message_when_parent_missing),
    T(test_store_open_fails_when_path_is_a_file),
    T(test_store_refuses_records_it_cannot_read),
    T(test_store_key_column_follows_the_record),
#undef T
};

int main(void) {
  return CONF_RUN("store", conformance, sqlite_cases);
}
