/*
 * The SQLite store's migration from schema 1 (rows of AddHandlerRequest
 * bytes, the API's format) to schema 2 (the store's own record) and on to
 * 3 (the outbox journal's tables) in the same transaction, against
 * tests/fixtures/handlerd-v1.db, a database written by the release before
 * (tests/fixtures/README.md), and against databases made here in the
 * schema-1 layout: every field comes through, ids, keys, order and
 * created_at too; a row that cannot be read stops the start and changes
 * nothing; a kill -9 at any step, or at a random moment, leaves a
 * database that opens and loads, migrated or not, never half.
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
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handlers/v1/handlers.pb-c.h"
#include "store.h"
#include "store_sqlite_internal.h"
#include "test_store_reg.h"
#include "test_store_rows.h"
#include "test_util.h"

/* ---- fixtures ------------------------------------------------------------ */

typedef struct fixture {
  char base[64];
  char dir[96]; /* base/state */
  char db[128]; /* dir/handlerd.db */
  char fixtures[512];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  if (!f)
    return -1;
  if (store_tmp_dirs("hd_migr_", f->base, sizeof(f->base), f->dir,
                     sizeof(f->dir), f->db, sizeof(f->db)) != 0) {
    free(f);
    return -1;
  }
  /* CMake compiles this file by its absolute path: the fixtures are
   * ../fixtures from here. */
  snprintf(f->fixtures, sizeof(f->fixtures), "%s", __FILE__);
  char *slash = strrchr(f->fixtures, '/');
  assert_non_null(slash);
  snprintf(slash, sizeof(f->fixtures) - (size_t)(slash - f->fixtures),
           "/../fixtures");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char path[160];
  remove_store_dir(f->dir);
  snprintf(path, sizeof(path), "%s/big.db", f->base);
  unlink(path);
  rmdir(f->base);
  free(f);
  return 0;
}

static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb");
  if (!in)
    fail_msg("%s: %s", from, strerror(errno));
  FILE *out = fopen(to, "wb");
  assert_non_null(out);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
    assert_int_equal(fwrite(buf, 1, n, out), n);
  fclose(in);
  assert_int_equal(fclose(out), 0);
}

/* A fresh state dir holding a copy of `db` as handlerd.db. */
static void place_db(fixture *f, const char *db) {
  remove_store_dir(f->dir);
  assert_int_equal(mkdir(f->dir, 0700), 0);
  copy_file(db, f->db);
  chmod(f->db, 0600);
}

static void place_fixture(fixture *f) {
  char path[600];
  snprintf(path, sizeof(path), "%s/handlerd-v1.db", f->fixtures);
  place_db(f, path);
}

static hd_store *open_store(fixture *f) {
  hd_store *s = NULL;
  char msg[512] = "";
  hd_err err = hd_store_sqlite_open(f->dir, &s, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("open %s: %s: %s", f->dir, hd_strerror(err), msg);
  return s;
}

/* ---- reading the database behind the store's back ------------------------ */

static int raw_int(const char *db_path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* How many of schema 3's journal tables the file has. */
static int journal_tables(const char *db_path) {
  return raw_int(db_path, "SELECT count(*) FROM sqlite_master WHERE type ="
                          " 'table' AND name IN ('deliveries', 'attempts',"
                          " 'endpoints')");
}

/* "seq id created_at;" for every row, in seq order. */
static char *raw_rows(const char *db_path) {
  static char buf[1 << 16];
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  size_t n = 0;
  buf[0] = '\0';
  assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "SELECT seq, id, created_at FROM "
                                      "registrations ORDER BY seq",
                                      -1, &st, NULL),
                   SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW && n < sizeof(buf) - 128)
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%lld %s %lld;",
                          (long long)sqlite3_column_int64(st, 0),
                          sqlite3_column_text(st, 1),
                          (long long)sqlite3_column_int64(st, 2));
  sqlite3_finalize(st);
  sqlite3_close(db);
  return strdup(buf);
}

/* ---- what load gives --------------------------------------------------- */

typedef struct loaded {
  char ids[4096][24];
  char *regs[4096]; /* reg_str(sorted maps), malloc'd */
  size_t n;
} loaded;

static hd_err collect(const char *id, const hd_registration *reg, void *ud) {
  loaded *l = ud;
  char buf[2048];
  assert_true(l->n < 4096);
  snprintf(l->ids[l->n], sizeof(l->ids[0]), "%s", id);
  l->regs[l->n++] = strdup(reg_str(reg, 1, buf, sizeof(buf)));
  return HD_OK;
}

static loaded *load_all(hd_store *s) {
  loaded *l = calloc(1, sizeof(*l));
  assert_non_null(l);
  store_load_ok(s, collect, l);
  return l;
}

static void loaded_free(loaded *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->regs[i]);
  free(l);
}

/* ---- the fixture's manifest (handlerd-v1.json) -------------------------- */

static void json_target(json_t *j, hd_target_spec *t, hd_header_spec *hs) {
  memset(t, 0, sizeof(*t));
  if (!j)
    return;
  json_t *local = json_object_get(j, "local");
  json_t *w = json_object_get(j, "webhook");
  if (local) {
    t->kind = HD_TARGET_LOCAL;
    t->local = json_string_value(local);
    return;
  }
  assert_non_null(w);
  t->kind = HD_TARGET_WEBHOOK;
  t->webhook.url = json_string_value(json_object_get(w, "url"));
  t->webhook.secret = json_string_value(json_object_get(w, "secret"));
  t->webhook.new_secret = json_is_true(json_object_get(w, "new_secret"));
  t->webhook.timeout_ms =
      (uint32_t)json_integer_value(json_object_get(w, "timeout_ms"));
  t->webhook.max_attempts =
      (uint32_t)json_integer_value(json_object_get(w, "max_attempts"));
  t->webhook.binary_mode = json_is_true(json_object_get(w, "binary_mode"));
  json_t *headers = json_object_get(w, "headers");
  for (size_t i = 0; i < json_array_size(headers); i++) {
    hs[i].name =
        json_string_value(json_array_get(json_array_get(headers, i), 0));
    hs[i].value =
        json_string_value(json_array_get(json_array_get(headers, i), 1));
  }
  t->webhook.headers = hs;
  t->webhook.n_headers = json_array_size(headers);
}

/* The expected ids (in order) and reg_str(sorted maps) of the fixture. */
static json_t *manifest(fixture *f, char ids[][24], char regs[][2048],
                        size_t *n) {
  char path[600];
  json_error_t jerr;
  snprintf(path, sizeof(path), "%s/handlerd-v1.json", f->fixtures);
  json_t *m = json_load_file(path, 0, &jerr);
  if (!m)
    fail_msg("%s: %s", path, jerr.text);
  json_t *list = json_object_get(m, "registrations");
  *n = json_array_size(list);
  for (size_t i = 0; i < *n; i++) {
    json_t *e = json_array_get(list, i);
    hd_registration r;
    hd_header_spec hs[8][8];
    hd_route_spec routes[8];
    const char *events[8];
    memset(&r, 0, sizeof(r));
    r.key = json_string_value(json_object_get(e, "key"));
    json_target(json_object_get(e, "target"), &r.target, hs[0]);
    json_t *jr = json_object_get(e, "routes");
    for (size_t k = 0; k < json_array_size(jr); k++) {
      routes[k].event =
          json_string_value(json_array_get(json_array_get(jr, k), 0));
      json_target(json_array_get(json_array_get(jr, k), 1), &routes[k].target,
                  hs[k + 1]);
    }
    r.routes = routes;
    r.n_routes = json_array_size(jr);
    json_t *je = json_object_get(e, "events");
    for (size_t k = 0; k < json_array_size(je); k++)
      events[k] = json_string_value(json_array_get(je, k));
    r.events = events;
    r.n_events = json_array_size(je);
    snprintf(ids[i], 24, "%s", json_string_value(json_object_get(e, "id")));
    reg_str(&r, 1, regs[i], 2048);
  }
  return m;
}

static void assert_fixture_loads(fixture *f, hd_store *s) {
  static char ids[16][24], regs[16][2048];
  size_t n = 0;
  json_t *m = manifest(f, ids, regs, &n);
  loaded *l = load_all(s);
  assert_int_equal(n, 6);
  assert_int_equal(l->n, n);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(l->ids[i], ids[i]);
    assert_string_equal(l->regs[i], regs[i]);
  }
  loaded_free(l);
  json_decref(m);
}

/* ---- the fixture -------------------------------------------------------- */

static void test_fixture_migrates_with_every_field(void **state) {
  fixture *f = *state;
  place_fixture(f);
  assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 1);
  char *before = raw_rows(f->db);
  int high = raw_int(f->db, "SELECT seq FROM sqlite_sequence"
                            " WHERE name = 'registrations'");

  hd_store *s = open_store(f);
  assert_fixture_loads(f, s);
  /* Same ids, order, seq and created_at; schema 3 with the journal's
   * tables, empty; the old table and its high-water mark carried over (a
   * removed handler's seq stays used). */
  assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 3);
  assert_int_equal(journal_tables(f->db), 3);
  assert_int_equal(raw_int(f->db, "SELECT count(*) FROM deliveries"), 0);
  char *after = raw_rows(f->db);
  assert_string_equal(after, before);
  assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master"
                                  " WHERE name = 'registrations_v2'"),
                   0);
  assert_int_equal(raw_int(f->db, "SELECT count(*) FROM pragma_table_info("
                                  "'registrations') WHERE name = 'record'"),
                   1);
  assert_int_equal(raw_int(f->db, "SELECT seq FROM sqlite_sequence"
                                  " WHERE name = 'registrations'"),
                   high);
  /* A new registration goes last, after the reopen too. */
  hd_registration r = reg_local("k-new", "echo");
  assert_int_equal(hd_store_put_registration(s, "h-new", &r, NULL, 0), HD_OK);
  hd_store_close(s);
  s = open_store(f);
  loaded *l = load_all(s);
  assert_int_equal(l->n, 7);
  assert_string_equal(l->ids[6], "h-new");
  loaded_free(l);
  hd_store_close(s);
  free(before);
  free(after);
}

/* ---- schema-1 databases made here --------------------------------------- */

static const char v1_schema[] =
    "PRAGMA journal_mode = WAL;"
    "CREATE TABLE registrations ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT UNIQUE NOT NULL, key TEXT NOT NULL,"
    " request BLOB NOT NULL, created_at INTEGER NOT NULL);"
    "PRAGMA user_version = 1;";

static void v1_insert(sqlite3 *db, const char *id, const char *key,
                      const void *req, size_t len) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "INSERT INTO registrations (id, key, "
                                      "request, created_at) VALUES (?1, ?2, "
                                      "?3, 1700000000)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 3, req, (int)len, SQLITE_STATIC);
  assert_int_equal(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
}

static void big_fill(int i, char *id, char *key, char *url) {
  sprintf(id, "h-%012d", i);
  sprintf(key, "key-%d", i % 13);
  sprintf(url, "https://example.com/hook/%d", i);
}

#define BIG_ROWS 3000

/* A schema-1 database of BIG_ROWS webhooks with secrets and headers, big
 * enough that its migration takes a while to kill in the middle of. */
static void make_big_v1(const char *path) {
  sqlite3 *db = NULL;
  char id[32], key[32], url[64];
  unlink(path);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  for (int i = 0; i < BIG_ROWS; i++) {
    Handlers__V1__AddHandlerRequest req =
        HANDLERS__V1__ADD_HANDLER_REQUEST__INIT;
    Handlers__V1__Target t = HANDLERS__V1__TARGET__INIT;
    Handlers__V1__Webhook w = HANDLERS__V1__WEBHOOK__INIT;
    Handlers__V1__Webhook__HeadersEntry h =
        HANDLERS__V1__WEBHOOK__HEADERS_ENTRY__INIT;
    Handlers__V1__Webhook__HeadersEntry *hp = &h;
    char *events[] = {"update"};
    uint8_t buf[512];
    big_fill(i, id, key, url);
    h.key = "X-Row";
    h.value = id;
    w.url = url;
    w.secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
    w.headers = &hp;
    w.n_headers = 1;
    w.max_attempts = 3;
    t.kind_case = HANDLERS__V1__TARGET__KIND_WEBHOOK;
    t.webhook = &w;
    req.key = key;
    req.target = &t;
    req.events = events;
    req.n_events = 1;
    size_t len = handlers__v1__add_handler_request__pack(&req, buf);
    v1_insert(db, id, key, buf, len);
  }
  assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void assert_big_loads(fixture *f) {
  char id[32], key[32], url[64], want[2048];
  hd_store *s = open_store(f);
  loaded *l = load_all(s);
  assert_int_equal(l->n, BIG_ROWS);
  for (int i = 0; i < BIG_ROWS; i++) {
    hd_header_spec h;
    const char *events[] = {"update"};
    hd_registration r;
    memset(&r, 0, sizeof(r));
    big_fill(i, id, key, url);
    h.name = "X-Row";
    h.value = id;
    r.key = key;
    r.target.kind = HD_TARGET_WEBHOOK;
    r.target.webhook.url = url;
    r.target.webhook.secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
    r.target.webhook.headers = &h;
    r.target.webhook.n_headers = 1;
    r.target.webhook.max_attempts = 3;
    r.events = events;
    r.n_events = 1;
    assert_string_equal(l->ids[i], id);
    assert_string_equal(l->regs[i], reg_str(&r, 1, want, sizeof(want)));
  }
  loaded_free(l);
  hd_store_close(s);
}

/* A row that is not an AddHandlerRequest: the start stops naming the file
 * and the handler (as the load of such a row did before), and the database
 * stays schema 1 with every row, for a handlerd that can read it. */
static void
test_unreadable_row_stops_the_migration_and_changes_nothing(void **state) {
  fixture *f = *state;
  static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  const uint8_t good[] = {0x0a, 0x01, 'k', 0x12, 0x06, 0x0a,
                          0x04, 'e',  'c', 'h',  'o'};
  sqlite3 *db = NULL;
  char msg[512] = "";
  hd_store *s = (hd_store *)1;

  assert_int_equal(mkdir(f->dir, 0700), 0);
  assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, v1_schema, NULL, NULL, NULL), SQLITE_OK);
  v1_insert(db, "h-good", "k", good, sizeof(good));
  v1_insert(db, "h-junk", "k", junk, sizeof(junk));
  sqlite3_close(db);
  char *before = raw_rows(f->db);

  assert_int_equal(hd_store_sqlite_open(f->dir, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  print_message("  %s\n", msg);
  assert_non_null(strstr(msg, f->db));
  assert_non_null(strstr(msg, "schema 1 to 2"));
  assert_non_null(strstr(msg, "handler h-junk"));
  assert_non_null(strstr(msg, "not a valid AddHandlerRequest"));
  assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 1);
  char *after = raw_rows(f->db);
  assert_string_equal(after, before);
  assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master"
                                  " WHERE name = 'registrations_v2'"),
                   0);
  free(before);
  free(after);
}

/* ---- kill -9 during the migration ---------------------------------------- */

static int kill_at, steps_seen;

static void kill_hook(const char *step) {
  (void)step;
  if (steps_seen++ == kill_at)
    kill(getpid(), SIGKILL);
}

/* Opens the store in a child that SIGKILLs itself at step `at` of the
 * migration (-1: never); returns the child's wait status. */
static int migrate_in_child(fixture *f, int at) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    hd_store *s = NULL;
    kill_at = at;
    steps_seen = 0;
    hd_sq_migrate_hook = kill_hook;
    if (hd_store_sqlite_open(f->dir, &s, NULL, 0) != HD_OK)
      _exit(2);
    hd_store_close(s);
    _exit(at < 0 ? 0 : 3); /* 3: the step never came */
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return status;
}

/* What a kill before COMMIT must leave: schema 1, every row, nothing of
 * schema 2 or 3. */
static void assert_untouched_v1(fixture *f, const char *rows) {
  assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 1);
  char *now = raw_rows(f->db);
  assert_string_equal(now, rows);
  free(now);
  assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master"
                                  " WHERE name = 'registrations_v2'"),
                   0);
  assert_int_equal(raw_int(f->db, "SELECT count(*) FROM pragma_table_info("
                                  "'registrations') WHERE name = 'request'"),
                   1);
  assert_int_equal(journal_tables(f->db), 0);
}

/* Every step of the migration of the fixture: begin, each of its 6 rows,
 * copied, dropped, renamed, then journal (schema 2 to 3), all inside the
 * one transaction. A kill at any of them leaves schema 1 as it was, and
 * the next open migrates it whole. */
static void test_kill9_at_every_step_of_the_migration(void **state) {
  fixture *f = *state;
  const int steps = 1 + 6 + 3 + 1;

  place_fixture(f);
  char *rows = raw_rows(f->db);
  for (int at = 0; at < steps; at++) {
    place_fixture(f);
    int status = migrate_in_child(f, at);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
      fail_msg("step %d: the child was not killed (status 0x%x)", at,
               (unsigned)status);
    assert_untouched_v1(f, rows);
    hd_store *s = open_store(f);
    assert_fixture_loads(f, s);
    hd_store_close(s);
    assert_int_equal(raw_int(f->db, "PRAGMA user_version"), 3);
    assert_int_equal(journal_tables(f->db), 3);
  }
  /* And there are no more steps than that. */
  place_fixture(f);
  int status = migrate_in_child(f, steps);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3);
  free(rows);
}

/* No hook: a child migrating a big database is SIGKILLed after a random
 * delay within the migration's duration, many times. Each time the
 * database opens and loads every row, and was either schema 1 untouched
 * or schema 3 complete. */
static void test_kill9_at_random_moments_of_a_big_migration(void **state) {
  fixture *f = *state;
  char big[160];
  const char *env = getenv("HD_TEST_SEED");
  unsigned seed = env ? (unsigned)strtoul(env, NULL, 10)
                      : (unsigned)time(NULL) ^ (unsigned)getpid();
  struct timespec t0, t1;
  int migrated = 0, untouched = 0;

  print_message("migration kill seed %u (set HD_TEST_SEED to repeat)\n", seed);
  snprintf(big, sizeof(big), "%s/big.db", f->base);
  make_big_v1(big);
  place_db(f, big);
  char *rows = raw_rows(f->db);
  /* How long one migration takes here, including the open. */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(migrate_in_child(f, -1), 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long us =
      (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
  print_message("  one migration of %d rows: %ld us\n", BIG_ROWS, us);
  assert_big_loads(f);

  for (int round = 0; round < 12; round++) {
    place_db(f, big);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      hd_store *s = NULL;
      _exit(hd_store_sqlite_open(f->dir, &s, NULL, 0) == HD_OK ? 0 : 2);
    }
    usleep((useconds_t)(rand_r(&seed) % (unsigned long)(us + 1)));
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_false(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    int v = raw_int(f->db, "PRAGMA user_version");
    if (v == 1) {
      assert_untouched_v1(f, rows);
      untouched++;
    } else {
      assert_int_equal(v, 3);
      assert_int_equal(journal_tables(f->db), 3);
      assert_int_equal(raw_int(f->db, "SELECT count(*) FROM registrations"),
                       BIG_ROWS);
      migrated++;
    }
    assert_big_loads(f);
  }
  print_message("  12 kills: %d left schema 1, %d after the commit\n",
                untouched, migrated);
  free(rows);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_fixture_migrates_with_every_field),
      T(test_unreadable_row_stops_the_migration_and_changes_nothing),
      T(test_kill9_at_every_step_of_the_migration),
      T(test_kill9_at_random_moments_of_a_big_migration),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
