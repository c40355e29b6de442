/*
 * test_store_conf.h - the harness of the conformance suites over a store
 * (test_store.c, and test_journal.c for the journal a store carries): the
 * backends, each giving a test a fresh, empty location and opening (and
 * reopening) a store there; the fixture of SQLite's own cases; and a
 * runner that runs the conformance cases once per backend, then the
 * suite's own. Include after <cmocka.h>.
 */
#ifndef HD_TEST_STORE_CONF_H
#define HD_TEST_STORE_CONF_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "store.h"
#include "store_pg.h"
#include "test_util.h"

/* ---- backends ------------------------------------------------------------ */

typedef struct store_backend {
  const char *name;
  /* A fresh, empty location for one test's stores, in *env; 0 on success. */
  int (*setup)(void **env);
  void (*teardown)(void *env);
  /* Opens (or reopens) the store at env's location; `round` > 0 asks for
   * another, independent location (test_store.c's durability rounds). NULL
   * with `msg` on failure. */
  hd_store *(*open)(void *env, int round, char *msg, size_t msg_size);
} store_backend;

/* The suite conf_run runs ("store", "journal"): names the temporary
 * directories. */
static const char *conf_suite = "store";

/* SQLite: each test gets a fresh temporary directory; the store's own
 * directory is `<tmp>/state` (rounds: `<tmp>/roundN`), which does not
 * exist until the store creates it. */
typedef struct fixture {
  char base[96]; /* mkdtemp result: TMPDIR (< 40) + prefix + XXXXXX */
  char dir[112]; /* base/state: the store's directory */
  char db[128];  /* dir/handlerd.db */
  int mounted;   /* a test mounted something on dir: teardown unmounts */
} fixture;

static inline int sqlite_setup(void **env) {
  fixture *f = calloc(1, sizeof(*f));
  char prefix[32];
  if (!f)
    return -1;
  snprintf(prefix, sizeof(prefix), "hd_%s_", conf_suite);
  if (store_tmp_dirs(prefix, f->base, sizeof(f->base), f->dir, sizeof(f->dir),
                     f->db, sizeof(f->db)) != 0) {
    free(f);
    return -1;
  }
  *env = f;
  return 0;
}

static inline void sqlite_teardown(void *env) {
  fixture *f = env;
  char path[160];
  if (f->mounted)
    ro_unmount(f->dir);
  remove_store_dir(f->dir);
  for (int i = 0; i < 16; i++) {
    snprintf(path, sizeof(path), "%s/round%d", f->base, i);
    remove_store_dir(path);
  }
  rmdir(f->base);
  free(f);
}

static inline hd_store *sqlite_open(void *env, int round, char *msg,
                                    size_t msg_size) {
  fixture *f = env;
  char dir[160];
  hd_store *s = NULL;
  if (round > 0)
    snprintf(dir, sizeof(dir), "%s/round%d", f->base, round);
  else
    snprintf(dir, sizeof(dir), "%s", f->dir);
  return hd_store_sqlite_open(dir, &s, msg, msg_size) == HD_OK ? s : NULL;
}

/* PostgreSQL: HANDLERD_TEST_PG_URL names a server and an admin database
 * (tests/pg_run.py starts one and sets it); each test gets a fresh
 * database, `<suite>_<pid>_<n>` (rounds: `..._rN`), dropped at teardown. */
typedef struct pg_fixture {
  char base[64];
  int rounds; /* the highest round opened */
} pg_fixture;

/* "key=value" connection string of the admin URL with dbname = `db`. */
static inline int pg_conninfo(const char *db, char *out, size_t size) {
  const char *url = getenv("HANDLERD_TEST_PG_URL");
  char *err = NULL;
  PQconninfoOption *opts;
  size_t n = 0;

  if (!url || !*url)
    return -1;
  if (!(opts = PQconninfoParse(url, &err))) {
    PQfreemem(err);
    return -1;
  }
  out[0] = '\0';
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    const char *v = strcmp(o->keyword, "dbname") == 0 ? db : o->val;
    if (v && *v && n < size)
      n += (size_t)snprintf(out + n, size - n, "%s='%s' ", o->keyword, v);
  }
  PQconninfoFree(opts);
  return n < size ? 0 : -1;
}

/* Runs `sql` on the admin database; 0 on success. */
static inline int pg_admin(const char *sql) {
  const char *url = getenv("HANDLERD_TEST_PG_URL");
  PGconn *c = PQconnectdb(url ? url : "");
  int ok = PQstatus(c) == CONNECTION_OK;
  if (ok) {
    PGresult *r = PQexec(c, sql);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
      fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
  } else {
    fprintf(stderr, "HANDLERD_TEST_PG_URL: %s", PQerrorMessage(c));
  }
  PQfinish(c);
  return ok ? 0 : -1;
}

/* How many rows `sql` gives on the admin database; -1 on failure. */
static inline int pg_admin_count(const char *sql) {
  const char *url = getenv("HANDLERD_TEST_PG_URL");
  PGconn *c = PQconnectdb(url ? url : "");
  int n = -1;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
      n = PQntuples(r);
    PQclear(r);
  }
  PQfinish(c);
  return n;
}

static inline int pg_setup(void **env) {
  static int counter;
  char sql[128];
  pg_fixture *f = calloc(1, sizeof(*f));

  if (!getenv("HANDLERD_TEST_PG_URL")) {
    fprintf(stderr, "HANDLERD_TEST_PG_URL is not set: run the suite under "
                    "tests/pg_run.py (ctest does)\n");
    free(f);
    return -1;
  }
  if (!f)
    return -1;
  snprintf(f->base, sizeof(f->base), "hd_%s_%ld_%d", conf_suite, (long)getpid(),
           ++counter);
  snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->base);
  if (pg_admin(sql) != 0) {
    free(f);
    return -1;
  }
  *env = f;
  return 0;
}

static inline void pg_teardown(void *env) {
  pg_fixture *f = env;
  char sql[160];
  snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)",
           f->base);
  pg_admin(sql);
  for (int i = 1; i <= f->rounds; i++) {
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s_r%d WITH (FORCE)",
             f->base, i);
    pg_admin(sql);
  }
  free(f);
}

static inline hd_store *pg_open(void *env, int round, char *msg,
                                size_t msg_size) {
  pg_fixture *f = env;
  char db[80], conninfo[512], sql[128];
  hd_store_pg_config cfg;
  hd_store *s = NULL;

  if (round > 0) {
    snprintf(db, sizeof(db), "%s_r%d", f->base, round);
    if (round > f->rounds) {
      /* A forked child (the durability rounds) may have made it already:
       * its count is its own. A database that is not there fails the
       * open below. */
      f->rounds = round;
      snprintf(sql, sizeof(sql),
               "SELECT 1 FROM pg_database WHERE datname = '%s'", db);
      if (pg_admin_count(sql) == 0) {
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
        pg_admin(sql);
      }
    }
  } else {
    snprintf(db, sizeof(db), "%s", f->base);
  }
  if (pg_conninfo(db, conninfo, sizeof(conninfo)) != 0) {
    snprintf(msg, msg_size, "bad HANDLERD_TEST_PG_URL");
    return NULL;
  }
  hd_store_pg_config_init(&cfg);
  cfg.conninfo = conninfo;
  cfg.replica_id = "conformance";
  return hd_store_pg_open(&cfg, &s, msg, msg_size) == HD_OK ? s : NULL;
}

static const store_backend backends[] = {
    {"sqlite", sqlite_setup, sqlite_teardown, sqlite_open},
    {"postgres", pg_setup, pg_teardown, pg_open},
};

/* ---- what each conformance case gets in *state --------------------------- */

typedef struct conf {
  const store_backend *b;
  void *env;
  hd_store *s; /* a store the case keeps open, closed by teardown */
} conf;

static inline int conf_setup(void **state) {
  conf *c = calloc(1, sizeof(*c));
  if (!c)
    return -1;
  c->b = *state; /* the prestate: the backend row */
  if (c->b->setup(&c->env) != 0) {
    free(c);
    return -1;
  }
  *state = c;
  return 0;
}

static inline int conf_teardown(void **state) {
  conf *c = *state;
  hd_store_close(c->s);
  c->b->teardown(c->env);
  free(c);
  return 0;
}

/* Opens a store at c's location (`round`: see store_backend); the caller
 * closes it. */
static inline hd_store *open_round(conf *c, int round) {
  char msg[512] = "";
  hd_store *s = c->b->open(c->env, round, msg, sizeof(msg));
  if (!s)
    fail_msg("%s: open: %s", c->b->name, msg);
  return s;
}

static inline hd_store *conf_open(conf *c) {
  return open_round(c, 0);
}

/* ---- SQLite's own cases: a fixture in *state ----------------------------- */

static inline int setup(void **state) {
  return sqlite_setup(state);
}

static inline int teardown(void **state) {
  sqlite_teardown(*state);
  return 0;
}

/* The SQLite store at `dir`; one that does not open fails the test. */
static inline hd_store *open_store(const char *dir) {
  hd_store *s = NULL;
  char msg[512] = "";
  hd_err err = hd_store_sqlite_open(dir, &s, msg, sizeof(msg));
  if (err != HD_OK)
    fail_msg("open %s: %s: %s", dir, hd_strerror(err), msg);
  assert_non_null(s);
  return s;
}

/* ---- the store's own connection ---------------------------------------- */

/* PRAGMA synchronous is per connection: a second connection opened by the
 * test would report its own default, not the store's setting. SQLite calls
 * every automatic extension on each connection it opens, so one registered
 * around hd_store_sqlite_open catches the store's own. */
static sqlite3 *caught_db;

static inline int catch_connection(sqlite3 *db, const char **err,
                                   const struct sqlite3_api_routines *api) {
  (void)err, (void)api;
  caught_db = db;
  return SQLITE_OK;
}

/* Opens a store on `dir` and returns it, with its connection in *db. */
static inline hd_store *open_store_catching(const char *dir, sqlite3 **db) {
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

static inline int pragma_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Asserts that `db` is in WAL mode. */
static inline void assert_wal(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
  sqlite3_finalize(st);
}

/* ---- the runner ---------------------------------------------------------- */

typedef struct conf_case {
  const char *name;
  CMUnitTestFunction fn;
} conf_case;

#define CONF_CASE(fn)                                                          \
  { #fn, fn }

/* Runs the `n_cases` conformance cases once per backend (named
 * "<backend>: <case without test_>"), then the suite's `n_own` own cases;
 * main's exit status. */
static inline int conf_run(const char *suite, const conf_case *cases,
                           size_t n_cases, const struct CMUnitTest *own,
                           size_t n_own) {
  enum { N_BACKENDS = sizeof(backends) / sizeof(backends[0]) };
  struct CMUnitTest *tests =
      calloc(N_BACKENDS * n_cases + n_own, sizeof(*tests));
  char(*names)[128] = calloc(N_BACKENDS * n_cases + 1, sizeof(*names));
  size_t n = 0;
  int rc;

  if (!tests || !names) {
    free(tests);
    free(names);
    return 1;
  }
  conf_suite = suite;
  for (size_t b = 0; b < N_BACKENDS; b++)
    for (size_t i = 0; i < n_cases; i++, n++) {
      /* "sqlite: load_returns_records_in_put_order" */
      snprintf(names[n], sizeof(names[n]), "%s: %s", backends[b].name,
               cases[i].name + strlen("test_"));
      tests[n] = (struct CMUnitTest){names[n], cases[i].fn, conf_setup,
                                     conf_teardown, (void *)&backends[b]};
    }
  for (size_t i = 0; i < n_own; i++)
    tests[n++] = own[i];
  rc = _cmocka_run_group_tests(suite, tests, n, NULL, NULL);
  free(tests);
  free(names);
  return rc;
}

/* conf_run over the arrays `cases` and `own`. */
#define CONF_RUN(suite, cases, own)                                            \
  conf_run(suite, cases, sizeof(cases) / sizeof((cases)[0]), own,              \
           sizeof(own) / sizeof((own)[0]))

#endif
