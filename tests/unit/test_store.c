/*
 * Unit tests: hd_store over the SQLite backend (store.c, store_sqlite.c).
 * Each test gets a fresh temporary directory; the store's own directory is
 * `<tmp>/state`, which does not exist until the store creates it.
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
#include "test_util.h"

/* ---- fixtures ------------------------------------------------------------ */

typedef struct fixture {
  char base[64]; /* mkdtemp result */
  char dir[96];  /* base/state: the store's directory */
  char db[128];  /* dir/handlerd.db */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  if (!f)
    return -1;
  const char *tmp = getenv("TMPDIR");
  snprintf(f->base, sizeof(f->base), "%s/hd_store_XXXXXX",
           tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp");
  if (!mkdtemp(f->base)) {
    free(f);
    return -1;
  }
  snprintf(f->dir, sizeof(f->dir), "%s/state", f->base);
  snprintf(f->db, sizeof(f->db), "%s/handlerd.db", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char path[160];
  remove_store_dir(f->dir);
  for (int i = 0; i < 16; i++) {
    snprintf(path, sizeof(path), "%s/round%d", f->base, i);
    remove_store_dir(path);
  }
  rmdir(f->base);
  free(f);
  return 0;
}

static hd_store *open_store(const char *dir) {
  hd_store *s = NULL;
  char msg[512] = "";
  hd_err err = hd_store_sqlite_open(dir, &s, msg, sizeof(msg));
  if (err != HD_OK)
    print_error("open %s: %s: %s\n", dir, hd_strerror(err), msg);
  assert_int_equal(err, HD_OK);
  assert_non_null(s);
  return s;
}

/* ---- collecting what load returns ---------------------------------------- */

typedef struct rec {
  char id[64];
  char key[64];
  unsigned char req[256];
  size_t len;
} rec;

typedef struct recs {
  rec r[1024];
  size_t n;
} recs;

static hd_err collect(const char *id, const char *key, const void *req,
                      size_t len, void *ud) {
  recs *rs = ud;
  assert_non_null(id);
  assert_non_null(key);
  assert_non_null(req);
  assert_true(rs->n < sizeof(rs->r) / sizeof(rs->r[0]));
  assert_true(len <= sizeof(rs->r[0].req));
  rec *r = &rs->r[rs->n++];
  snprintf(r->id, sizeof(r->id), "%s", id);
  snprintf(r->key, sizeof(r->key), "%s", key);
  memcpy(r->req, req, len);
  r->len = len;
  return HD_OK;
}

static recs *load_all(hd_store *s) {
  recs *rs = calloc(1, sizeof(*rs));
  assert_non_null(rs);
  assert_int_equal(hd_store_load(s, collect, rs, NULL, 0), HD_OK);
  return rs;
}

static void assert_rec(const rec *r, const char *id, const char *key,
                       const char *req) {
  assert_string_equal(r->id, id);
  assert_string_equal(r->key, key);
  assert_int_equal(r->len, strlen(req));
  assert_memory_equal(r->req, req, r->len);
}

static hd_err put_str(hd_store *s, const char *id, const char *key,
                      const char *req) {
  return hd_store_put(s, id, key, req, strlen(req), NULL, 0);
}

/* ---- behaviour ----------------------------------------------------------- */

static void test_store_load_returns_records_in_put_order(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);

  assert_int_equal(put_str(s, "c", "k1", "req-c"), HD_OK);
  assert_int_equal(put_str(s, "a", "k2", "req-a"), HD_OK);
  assert_int_equal(put_str(s, "b", "k1", "req-b"), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 3);
  assert_rec(&rs->r[0], "c", "k1", "req-c");
  assert_rec(&rs->r[1], "a", "k2", "req-a");
  assert_rec(&rs->r[2], "b", "k1", "req-b");
  free(rs);
  hd_store_close(s);
}

static void test_store_load_of_new_store_calls_nothing(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 0);
  free(rs);
  hd_store_close(s);
}

static void
test_store_put_same_id_updates_in_place_keeping_order(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);

  assert_int_equal(put_str(s, "a", "k", "old-a"), HD_OK);
  assert_int_equal(put_str(s, "b", "k", "req-b"), HD_OK);
  assert_int_equal(put_str(s, "a", "k2", "new-a"), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_rec(&rs->r[0], "a", "k2", "new-a");
  assert_rec(&rs->r[1], "b", "k", "req-b");
  free(rs);
  hd_store_close(s);
}

static void test_store_binary_and_empty_requests_round_trip(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  const unsigned char bin[] = {0x00, 0xff, 0x00, 0x10, 0x80, 0x00};

  assert_int_equal(hd_store_put(s, "bin", "k", bin, sizeof(bin), NULL, 0),
                   HD_OK);
  assert_int_equal(hd_store_put(s, "empty", "k", NULL, 0, NULL, 0), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_int_equal(rs->r[0].len, sizeof(bin));
  assert_memory_equal(rs->r[0].req, bin, sizeof(bin));
  assert_string_equal(rs->r[1].id, "empty");
  assert_int_equal(rs->r[1].len, 0);
  free(rs);
  hd_store_close(s);
}

static void test_store_del_removes_only_that_record(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);

  assert_int_equal(put_str(s, "a", "k", "req-a"), HD_OK);
  assert_int_equal(put_str(s, "b", "k", "req-b"), HD_OK);
  assert_int_equal(put_str(s, "c", "k", "req-c"), HD_OK);
  assert_int_equal(hd_store_del(s, "b", NULL, 0), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_rec(&rs->r[0], "a", "k", "req-a");
  assert_rec(&rs->r[1], "c", "k", "req-c");
  free(rs);
  /* Deleted means gone: a second delete finds nothing. */
  assert_int_equal(hd_store_del(s, "b", NULL, 0), HD_ENOTFOUND);
  hd_store_close(s);
}

static void test_store_del_unknown_id_returns_enotfound(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);

  assert_int_equal(hd_store_del(s, "nope", NULL, 0), HD_ENOTFOUND);
  assert_int_equal(put_str(s, "a", "k", "req-a"), HD_OK);
  assert_int_equal(hd_store_del(s, "nope", NULL, 0), HD_ENOTFOUND);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 1);
  free(rs);
  hd_store_close(s);
}

static void test_store_reopen_keeps_records_and_order(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);

  assert_int_equal(put_str(s, "x", "k1", "req-x"), HD_OK);
  assert_int_equal(put_str(s, "y", "k2", "req-y"), HD_OK);
  assert_int_equal(put_str(s, "z", "k3", "req-z"), HD_OK);
  assert_int_equal(hd_store_del(s, "y", NULL, 0), HD_OK);
  hd_store_close(s);

  s = open_store(f->dir);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_rec(&rs->r[0], "x", "k1", "req-x");
  assert_rec(&rs->r[1], "z", "k3", "req-z");
  free(rs);
  /* A record put after reopening still goes last. */
  assert_int_equal(put_str(s, "w", "k4", "req-w"), HD_OK);
  rs = load_all(s);
  assert_int_equal(rs->n, 3);
  assert_string_equal(rs->r[2].id, "w");
  free(rs);
  hd_store_close(s);
}

static hd_err stop_at_second(const char *id, const char *key, const void *req,
                             size_t len, void *ud) {
  int *calls = ud;
  (void)id, (void)key, (void)req, (void)len;
  return ++*calls == 2 ? HD_EHANDLER : HD_OK;
}

static void test_store_load_stops_at_first_callback_error(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  int calls = 0;

  assert_int_equal(put_str(s, "a", "k", "1"), HD_OK);
  assert_int_equal(put_str(s, "b", "k", "2"), HD_OK);
  assert_int_equal(put_str(s, "c", "k", "3"), HD_OK);
  assert_int_equal(hd_store_load(s, stop_at_second, &calls, NULL, 0),
                   HD_EHANDLER);
  assert_int_equal(calls, 2);
  /* The store is still usable after an interrupted load. */
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 3);
  free(rs);
  hd_store_close(s);
}

static hd_err delete_each(const char *id, const char *key, const void *req,
                          size_t len, void *ud) {
  (void)key, (void)req, (void)len;
  return hd_store_del(ud, id, NULL, 0);
}

static void test_store_load_callback_may_change_the_store(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);

  assert_int_equal(put_str(s, "a", "k", "1"), HD_OK);
  assert_int_equal(put_str(s, "b", "k", "2"), HD_OK);
  assert_int_equal(hd_store_load(s, delete_each, s, NULL, 0), HD_OK);
  recs *rs = load_all(s);
  assert_int_equal(rs->n, 0);
  free(rs);
  hd_store_close(s);
}

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
  assert_int_equal(put_str(s, "a", "k", "secret"), HD_OK);
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

static void test_store_db_uses_wal_and_schema_version_1(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;

  assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 1);
  sqlite3_finalize(st);
  sqlite3_close(db);
  hd_store_close(s);
}

/* ---- the store's own connection ------------------------------------------ */

/* PRAGMA synchronous is per connection: a second connection opened by the
 * test would report its own default, not the store's setting. SQLite calls
 * every automatic extension on each connection it opens, so one registered
 * around hd_store_sqlite_open catches the store's own. */
static sqlite3 *caught_db;

static int catch_connection(sqlite3 *db, const char **err,
                            const struct sqlite3_api_routines *api) {
  (void)err, (void)api;
  caught_db = db;
  return SQLITE_OK;
}

/* Opens a store on `dir` and returns it, with its connection in *db. */
static hd_store *open_store_catching(const char *dir, sqlite3 **db) {
  caught_db = NULL;
  assert_int_equal(sqlite3_auto_extension((void (*)(void))catch_connection),
                   SQLITE_OK);
  hd_store *s = open_store(dir);
  sqlite3_cancel_auto_extension((void (*)(void))catch_connection);
  assert_non_null(caught_db);
  *db = caught_db;
  caught_db = NULL;
  return s;
}

static int pragma_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

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
    assert_int_equal(put_str(s, round ? "b" : "a", "k", "req"), HD_OK);
    assert_int_equal(pragma_int(db, "PRAGMA synchronous"), 2);
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    hd_store_close(s);
  }
}

static void test_store_refuses_newer_schema_version(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);
  sqlite3 *db = NULL;
  char msg[512] = "";

  assert_int_equal(put_str(s, "a", "k", "req-a"), HD_OK);
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
      "database schema version 99 is newer than this handlerd supports (1)");
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
    assert_int_equal(put_str(s, id, "k", req), HD_OK);
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
  char *big = malloc(big_len);

  assert_non_null(big);
  memset(big, 'b', big_len);
  assert_int_equal(put_str(s, "a", "k", "req-a"), HD_OK);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  low = old;
  low.rlim_cur = 128 * 1024;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &low), 0);
  hd_err err = hd_store_put(s, "big", "k", big, big_len, msg, sizeof(msg));
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
  assert_int_equal(hd_store_put(s, "big", "k", big, big_len, msg, sizeof(msg)),
                   HD_OK);
  assert_int_equal(put_str(s, "c", "k", "req-c"), HD_OK);
  hd_store_close(s);
  free(big);

  s = open_store(f->dir);
  assert_int_equal(hd_store_del(s, "big", msg, sizeof(msg)), HD_OK);
  rs = load_all(s);
  assert_int_equal(rs->n, 2);
  assert_rec(&rs->r[0], "a", "k", "req-a");
  assert_rec(&rs->r[1], "c", "k", "req-c");
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

static void
test_store_wrappers_reject_null_and_close_null_is_noop(void **state) {
  fixture *f = *state;
  hd_store *s = open_store(f->dir);

  assert_int_equal(hd_store_put(NULL, "a", "k", "x", 1, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_put(s, NULL, "k", "x", 1, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_put(s, "a", NULL, "x", 1, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_put(s, "a", "k", NULL, 1, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_del(NULL, "a", NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_del(s, NULL, NULL, 0), HD_EINVAL);
  assert_int_equal(hd_store_load(s, NULL, NULL, NULL, 0), HD_EINVAL);
  hd_store *other = (hd_store *)1;
  assert_int_equal(hd_store_sqlite_open(NULL, &other, NULL, 0), HD_EINVAL);
  assert_null(other);
  hd_store_close(NULL);
  hd_store_close(s);
}

/* ---- durability: SIGKILL a writer at a random moment --------------------- */

#define DUR_RECORDS 400
#define DUR_ROUNDS 5

static void dur_fill(int i, char *id, size_t idn, char *key, size_t keyn,
                     char *req, size_t reqn) {
  snprintf(id, idn, "id-%05d", i);
  snprintf(key, keyn, "key-%d", i % 7);
  snprintf(req, reqn, "request %d payload %08x", i, (unsigned)i * 2654435761u);
}

/* The child: puts records 0..DUR_RECORDS-1, acknowledging each on `wfd`
 * only after put returned. Never returns. */
static void dur_child(const char *dir, int wfd) {
  hd_store *s = NULL;
  char msg[512], id[32], key[32], req[64];

  if (hd_store_sqlite_open(dir, &s, msg, sizeof(msg)) != HD_OK)
    _exit(2);
  for (uint32_t i = 0; i < DUR_RECORDS; i++) {
    dur_fill((int)i, id, sizeof(id), key, sizeof(key), req, sizeof(req));
    if (put_str(s, id, key, req) != HD_OK)
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

static void dur_round(const char *dir, unsigned *seed) {
  int p[2];
  uint32_t idx;
  size_t acked = 0;
  int status;
  char id[32], key[32], req[64];

  assert_int_equal(pipe(p), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    dur_child(dir, p[1]);
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

  hd_store *s = open_store(dir);
  recs *rs = load_all(s);
  /* Every acknowledged record, in order; at most one more (the put that
   * committed but was killed before its ack). */
  if (rs->n < acked || rs->n > acked + 1 || rs->n > DUR_RECORDS)
    fail_msg("%zu records acknowledged, %zu loaded", acked, rs->n);
  print_message("  %zu acknowledged, %zu loaded, writer %s\n", acked, rs->n,
                WIFSIGNALED(status) ? "killed" : "finished");
  for (size_t i = 0; i < rs->n; i++) {
    dur_fill((int)i, id, sizeof(id), key, sizeof(key), req, sizeof(req));
    assert_rec(&rs->r[i], id, key, req);
  }
  free(rs);
  /* And the database still takes writes. */
  assert_int_equal(put_str(s, "after", "k", "x"), HD_OK);
  hd_store_close(s);
}

static void test_store_acknowledged_puts_survive_sigkill(void **state) {
  fixture *f = *state;
  char dir[160];
  const char *env = getenv("HD_TEST_SEED");
  unsigned seed = env ? (unsigned)strtoul(env, NULL, 10)
                      : (unsigned)time(NULL) ^ (unsigned)getpid();

  print_message("durability seed %u (set HD_TEST_SEED to repeat)\n", seed);
  for (int r = 0; r < DUR_ROUNDS; r++) {
    snprintf(dir, sizeof(dir), "%s/round%d", f->base, r);
    dur_round(dir, &seed);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_store_load_returns_records_in_put_order),
      T(test_store_load_of_new_store_calls_nothing),
      T(test_store_put_same_id_updates_in_place_keeping_order),
      T(test_store_binary_and_empty_requests_round_trip),
      T(test_store_del_removes_only_that_record),
      T(test_store_del_unknown_id_returns_enotfound),
      T(test_store_reopen_keeps_records_and_order),
      T(test_store_load_stops_at_first_callback_error),
      T(test_store_load_callback_may_change_the_store),
      T(test_store_creates_dir_0700_and_db_files_0600),
      T(test_store_restricts_mode_of_existing_db_file),
      T(test_store_db_uses_wal_and_schema_version_1),
      T(test_store_connection_is_synchronous_full),
      T(test_store_refuses_newer_schema_version),
      T(test_store_refuses_garbage_db_file_with_eio),
      T(test_store_refuses_a_corrupt_database_and_leaves_it_alone),
      T(test_store_write_error_names_the_file_and_the_cause),
      T(test_store_open_fails_with_message_when_parent_missing),
      T(test_store_open_fails_when_path_is_a_file),
      T(test_store_wrappers_reject_null_and_close_null_is_noop),
      T(test_store_acknowledged_puts_survive_sigkill),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
