/*
 * store_sqlite.c - the SQLite hd_store backend: one database file,
 * `<dir>/handlerd.db`, in WAL mode with synchronous=FULL, so a change is on
 * disk when put/del return.
 *
 * Schema (PRAGMA user_version):
 *   1: registrations(seq INTEGER PRIMARY KEY AUTOINCREMENT,
 *                    id TEXT UNIQUE NOT NULL, key TEXT NOT NULL,
 *                    request BLOB NOT NULL, created_at INTEGER NOT NULL)
 *      created_at is Unix seconds of the first put of that id.
 * Version 0 (a new file) is migrated to 1 in one transaction; a newer
 * version is refused, so an older handlerd never rewrites what it does not
 * understand.
 *
 * Threads: the connection is opened SQLITE_OPEN_NOMUTEX and every use of it
 * and of its prepared statements happens under `lock`.
 *
 * Secrets: request blobs carry handler secrets. They are never logged, the
 * copies made by load are wiped before being freed, and secure_delete makes
 * SQLite overwrite deleted content in the file.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SQ_SCHEMA_VERSION 1
#define SQ_DB_NAME "handlerd.db"
#define SQ_BUSY_TIMEOUT_MS 5000

static const char sq_schema_v1[] = "CREATE TABLE registrations ("
                                   " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                                   " id TEXT UNIQUE NOT NULL,"
                                   " key TEXT NOT NULL,"
                                   " request BLOB NOT NULL,"
                                   " created_at INTEGER NOT NULL);"
                                   "PRAGMA user_version = 1;";

/* A put with a known id updates that row in place: same seq, so load keeps
 * the original order; created_at stays the first registration's time. */
static const char sq_put_sql[] =
    "INSERT INTO registrations (id, key, request, created_at)"
    " VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (id) DO UPDATE SET key = excluded.key,"
    " request = excluded.request";
static const char sq_del_sql[] = "DELETE FROM registrations WHERE id = ?1";
static const char sq_load_sql[] =
    "SELECT id, key, request FROM registrations ORDER BY seq";

typedef struct sq_store {
  hd_store base;        /* base.impl points back here */
  pthread_mutex_t lock; /* guards db and the statements */
  sqlite3 *db;
  sqlite3_stmt *put, *del, *load;
  char path[]; /* the database file, for messages */
} sq_store;

static void set_msg(char *msg, size_t msg_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t msg_size, const char *fmt, ...) {
  va_list ap;
  if (!msg || msg_size == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, msg_size, fmt, ap);
  va_end(ap);
}

static hd_err rc_err(int rc) {
  return (rc & 0xff) == SQLITE_NOMEM ? HD_ENOMEM : HD_EIO;
}

/* fsyncs the directory holding `path` so a new entry in it survives a
 * crash. Best effort: a failure is logged, not returned. */
static void sync_parent_dir(const char *path) {
  char *copy = strdup(path);
  if (!copy)
    return;
  const char *parent = dirname(copy);
  int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0)
    hd_log(HD_LOG_WARN, "store: cannot sync directory %s: %s", parent,
           strerror(errno));
  if (fd >= 0)
    close(fd);
  free(copy);
}

/* Creates `dir` 0700 when missing; checks it is a directory. */
static hd_err prepare_dir(const char *dir, char *msg, size_t msg_size) {
  struct stat st;

  if (mkdir(dir, 0700) == 0) {
    /* The umask may have taken bits we need; set the mode exactly. */
    if (chmod(dir, 0700) != 0) {
      set_msg(msg, msg_size, "cannot set the mode of %s: %s", dir,
              strerror(errno));
      return HD_EIO;
    }
    sync_parent_dir(dir);
  } else if (errno != EEXIST) {
    set_msg(msg, msg_size, "cannot create state directory %s: %s", dir,
            strerror(errno));
    return HD_EIO;
  }
  if (stat(dir, &st) != 0) {
    set_msg(msg, msg_size, "cannot use state directory %s: %s", dir,
            strerror(errno));
    return HD_EIO;
  }
  if (!S_ISDIR(st.st_mode)) {
    set_msg(msg, msg_size, "state path %s is not a directory", dir);
    return HD_EIO;
  }
  if (st.st_mode & 077)
    hd_log(HD_LOG_WARN,
           "store: state directory %s is open to other users (mode %04o)", dir,
           (unsigned)(st.st_mode & 07777));
  return HD_OK;
}

/* The database and its -wal/-shm files hold secrets: owner only. SQLite
 * creates -wal and -shm with the database file's mode, so restricting the
 * (still empty) database file right after open covers them; existing ones
 * left by an older run are restricted here too. */
static hd_err restrict_modes(const char *path, char *msg, size_t msg_size) {
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  size_t size = strlen(path) + sizeof("-wal");
  char *buf = malloc(size);
  hd_err err = HD_OK;

  if (!buf) {
    set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
    snprintf(buf, size, "%s%s", path, suffixes[i]);
    if (chmod(buf, 0600) != 0 && (i == 0 || errno != ENOENT)) {
      set_msg(msg, msg_size, "cannot set the mode of %s: %s", buf,
              strerror(errno));
      err = HD_EIO;
      break;
    }
  }
  free(buf);
  return err;
}

/* Runs a one-row, one-int query such as "PRAGMA user_version". */
static int query_int(sqlite3 *db, const char *sql, int *out) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *out = sqlite3_column_int(st, 0);
      rc = SQLITE_OK;
    }
  }
  /* On error finalize returns the same code and keeps errmsg. */
  sqlite3_finalize(st);
  return rc;
}

static hd_err set_journal_wal(sq_store *s, char *msg, size_t msg_size) {
  sqlite3_stmt *st = NULL;
  int rc =
      sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char *mode = sqlite3_column_text(st, 0);
    if (!mode || strcasecmp((const char *)mode, "wal") != 0) {
      set_msg(msg, msg_size, "%s: cannot use WAL journal mode (got %s)",
              s->path, mode ? (const char *)mode : "nothing");
      sqlite3_finalize(st);
      return HD_EIO;
    }
    rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK)
    set_msg(msg, msg_size, "%s: cannot set WAL journal mode: %s", s->path,
            sqlite3_errmsg(s->db));
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? HD_OK : rc_err(rc);
}

/* Brings the schema to SQ_SCHEMA_VERSION or refuses a newer one. */
static hd_err check_schema(sq_store *s, char *msg, size_t msg_size) {
  int v = 0;
  int rc = query_int(s->db, "PRAGMA user_version", &v);

  if (rc == SQLITE_OK && v == 0) {
    /* Re-read under the write lock: another process may have just created
     * the schema. */
    rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
      rc = query_int(s->db, "PRAGMA user_version", &v);
    if (rc == SQLITE_OK && v == 0) {
      rc = sqlite3_exec(s->db, sq_schema_v1, NULL, NULL, NULL);
      if (rc == SQLITE_OK)
        v = 1;
    }
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      set_msg(msg, msg_size, "%s: cannot create the schema: %s", s->path,
              sqlite3_errmsg(s->db));
      if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
      return rc_err(rc);
    }
  }
  if (rc != SQLITE_OK) {
    set_msg(msg, msg_size, "%s: cannot read the schema version: %s", s->path,
            sqlite3_errmsg(s->db));
    return rc_err(rc);
  }
  if (v > SQ_SCHEMA_VERSION) {
    set_msg(msg, msg_size,
            "database schema version %d is newer than this handlerd "
            "supports (%d)",
            v, SQ_SCHEMA_VERSION);
    return HD_EIO;
  }
  if (v < 1) {
    set_msg(msg, msg_size, "%s: invalid database schema version %d", s->path,
            v);
    return HD_EIO;
  }
  return HD_OK;
}

static hd_err configure(sq_store *s, char *msg, size_t msg_size) {
  hd_err err;
  int rc;

  sqlite3_busy_timeout(s->db, SQ_BUSY_TIMEOUT_MS);
  if ((err = set_journal_wal(s, msg, msg_size)) != HD_OK)
    return err;
  rc = sqlite3_exec(s->db,
                    "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;",
                    NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    set_msg(msg, msg_size, "%s: cannot configure the database: %s", s->path,
            sqlite3_errmsg(s->db));
    return rc_err(rc);
  }
  if ((err = check_schema(s, msg, msg_size)) != HD_OK)
    return err;
  const struct {
    const char *sql;
    sqlite3_stmt **st;
  } stmts[] = {
      {sq_put_sql, &s->put}, {sq_del_sql, &s->del}, {sq_load_sql, &s->load}};
  for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
    rc = sqlite3_prepare_v3(s->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                            stmts[i].st, NULL);
    if (rc != SQLITE_OK) {
      set_msg(msg, msg_size, "%s: cannot prepare statements: %s", s->path,
              sqlite3_errmsg(s->db));
      return rc_err(rc);
    }
  }
  return HD_OK;
}

/* Resets `st` after a step that ended with `rc` and maps the outcome. On
 * failure logs what SQLite said (never the bound values). Holds lock. */
static hd_err finish_stmt(sq_store *s, sqlite3_stmt *st, int rc,
                          const char *what, const char *id) {
  hd_err err = HD_OK;
  if (rc != SQLITE_OK && rc != SQLITE_DONE) {
    hd_log(HD_LOG_ERROR, "store: %s %s: %s", what, id, sqlite3_errmsg(s->db));
    err = rc_err(rc);
  }
  sqlite3_reset(st);
  /* Drop the caller's pointers (the request carries a secret). */
  sqlite3_clear_bindings(st);
  return err;
}

static hd_err sq_put(hd_store *hs, const char *id, const char *key,
                     const void *req, size_t len) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->put;
  int rc;

  pthread_mutex_lock(&s->lock);
  rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    /* A zero-length request must still be a (non-NULL) blob. */
    rc = len ? sqlite3_bind_blob64(st, 3, req, len, SQLITE_STATIC)
             : sqlite3_bind_zeroblob(st, 3, 0);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  hd_err err = finish_stmt(s, st, rc, "put", id);
  pthread_mutex_unlock(&s->lock);
  return err;
}

static hd_err sq_del(hd_store *hs, const char *id) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->del;
  int rc;

  pthread_mutex_lock(&s->lock);
  rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  hd_err err = finish_stmt(s, st, rc, "delete", id);
  if (err == HD_OK && sqlite3_changes(s->db) == 0)
    err = HD_ENOTFOUND;
  pthread_mutex_unlock(&s->lock);
  return err;
}

/* One loaded record: id '\0' key '\0' request, in buf. */
typedef struct sq_row {
  struct sq_row *next;
  size_t size; /* of buf, for wiping */
  size_t len;  /* of the request */
  const char *key;
  const unsigned char *req;
  char buf[];
} sq_row;

static void free_rows(sq_row *r) {
  while (r) {
    sq_row *next = r->next;
    explicit_bzero(r->buf, r->size);
    free(r);
    r = next;
  }
}

/* Copies the current row of the load statement. Holds lock. */
static hd_err copy_row(sq_store *s, sqlite3_stmt *st, sq_row **out) {
  const unsigned char *id = sqlite3_column_text(st, 0);
  size_t idn = (size_t)sqlite3_column_bytes(st, 0);
  const unsigned char *key = sqlite3_column_text(st, 1);
  size_t keyn = (size_t)sqlite3_column_bytes(st, 1);
  const void *req = sqlite3_column_blob(st, 2);
  size_t len = (size_t)sqlite3_column_bytes(st, 2);

  if (!id || !key || (!req && len > 0)) {
    if (sqlite3_errcode(s->db) == SQLITE_NOMEM)
      return HD_ENOMEM;
    hd_log(HD_LOG_ERROR, "store: %s: a registration row has a NULL column",
           s->path);
    return HD_EIO;
  }
  size_t size = idn + 1 + keyn + 1 + len;
  sq_row *r = malloc(sizeof(*r) + size);
  if (!r)
    return HD_ENOMEM;
  r->next = NULL;
  r->size = size;
  r->len = len;
  memcpy(r->buf, id, idn + 1);
  r->key = r->buf + idn + 1;
  memcpy(r->buf + idn + 1, key, keyn + 1);
  r->req = (const unsigned char *)r->buf + idn + 1 + keyn + 1;
  if (len)
    memcpy(r->buf + idn + 1 + keyn + 1, req, len);
  *out = r;
  return HD_OK;
}

/* Copies every row under the lock, then calls fn without it: fn may use
 * the store (e.g. delete a record it cannot restore) without deadlocking,
 * and sees one consistent snapshot. */
static hd_err sq_load(hd_store *hs, hd_store_load_fn *fn, void *ud) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->load;
  sq_row *head = NULL, **tail = &head;
  hd_err err = HD_OK;
  int rc;

  pthread_mutex_lock(&s->lock);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if ((err = copy_row(s, st, tail)) != HD_OK)
      break;
    tail = &(*tail)->next;
  }
  if (err == HD_OK)
    err = finish_stmt(s, st, rc, "load", "registrations");
  else
    finish_stmt(s, st, SQLITE_OK, "load", "registrations");
  pthread_mutex_unlock(&s->lock);

  for (sq_row *r = head; err == HD_OK && r; r = r->next)
    err = fn(r->buf, r->key, r->req, r->len, ud);
  free_rows(head);
  return err;
}

static void sq_close(hd_store *hs) {
  sq_store *s = hs->impl;

  sqlite3_finalize(s->put);
  sqlite3_finalize(s->del);
  sqlite3_finalize(s->load);
  if (s->db && sqlite3_close(s->db) != SQLITE_OK)
    hd_log(HD_LOG_ERROR, "store: cannot close %s: %s", s->path,
           sqlite3_errmsg(s->db));
  pthread_mutex_destroy(&s->lock);
  free(s);
}

static const hd_store_ops sq_ops = {
    .name = "sqlite",
    .put = sq_put,
    .del = sq_del,
    .load = sq_load,
    .close = sq_close,
};

hd_err hd_store_sqlite_open(const char *dir, hd_store **out, char *msg,
                            size_t msg_size) {
  hd_err err;

  if (out)
    *out = NULL;
  if (!dir || !*dir || !out) {
    set_msg(msg, msg_size, "no state directory given");
    return HD_EINVAL;
  }
  if ((err = prepare_dir(dir, msg, msg_size)) != HD_OK)
    return err;

  size_t dlen = strlen(dir);
  sq_store *s = calloc(1, sizeof(*s) + dlen + sizeof("/" SQ_DB_NAME));
  if (!s) {
    set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  snprintf(s->path, dlen + sizeof("/" SQ_DB_NAME), "%s/" SQ_DB_NAME, dir);
  s->base.ops = &sq_ops;
  s->base.impl = s;
  if (pthread_mutex_init(&s->lock, NULL) != 0) {
    set_msg(msg, msg_size, "cannot create a mutex");
    free(s);
    return HD_ENOMEM;
  }

  /* Not SQLITE_OPEN_NOFOLLOW: in SQLite 3.40 it refuses a symlink anywhere
   * in the path (e.g. /var -> /private/var), not only the file itself. */
  int rc = sqlite3_open_v2(
      s->path, &s->db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    set_msg(msg, msg_size, "cannot open %s: %s", s->path,
            s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    err = rc_err(rc);
  } else if ((err = restrict_modes(s->path, msg, msg_size)) == HD_OK) {
    err = configure(s, msg, msg_size);
  }
  if (err != HD_OK) {
    sq_close(&s->base);
    return err;
  }
  *out = &s->base;
  return HD_OK;
}
