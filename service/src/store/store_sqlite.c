/*
 * store_sqlite.c - the SQLite hd_store backend: one database file,
 * `<dir>/handlerd.db`, in WAL mode with synchronous=FULL, so a change is on
 * disk when put/del return.
 *
 * Schema (PRAGMA user_version):
 *   2: registrations(seq INTEGER PRIMARY KEY AUTOINCREMENT,
 *                    id TEXT UNIQUE NOT NULL, key TEXT NOT NULL,
 *                    record BLOB NOT NULL, created_at INTEGER NOT NULL)
 *      record is the store's own format (store_record.h); key is a copy of
 *      the record's key for people and queries (load reads the record);
 *      created_at is Unix seconds of the first put of that id.
 *   1: the same with `request BLOB`, the API's AddHandlerRequest bytes.
 * Version 0 (a new file) is set up as 2 and version 1 migrated to 2, each
 * in one transaction (store_sqlite_migrate.c); a newer version is refused,
 * so an older handlerd never rewrites what it does not understand.
 *
 * Threads: the connection is opened SQLITE_OPEN_NOMUTEX and every use of it
 * and of its prepared statements happens under `lock`.
 *
 * Failures: an existing file is checked (PRAGMA quick_check) before
 * anything is written to it, so a corrupt file stops the open and is left
 * as it was. Messages name the file and say what SQLite said (for an I/O
 * error also what it was doing, and the errno when SQLite kept it);
 * SQLITE_FULL is HD_EBUSY ("no room, retry later"). A failed put or del is
 * rolled back by SQLite (one statement, one transaction) and leaves the
 * connection usable, so a put works again once there is room.
 *
 * Read-only file system: see store.h. The database is opened with
 * "file:<path>?mode=ro&immutable=1" (SQLite then takes no locks and opens
 * no -wal/-shm, which it could not create there); read_only makes put and
 * del fail with a message before touching SQLite.
 *
 * Secrets: records carry handler secrets. They are never logged, the
 * copies made by load are wiped before being freed, and secure_delete makes
 * SQLite overwrite deleted content in the file.
 */
#include "store.h"
#include "store_record.h"
#include "store_sqlite_internal.h"

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
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define SQ_DB_NAME "handlerd.db"
#define SQ_BUSY_TIMEOUT_MS 5000

static const char sq_schema_v2[] = "CREATE TABLE registrations " SQ_TABLE_V2 ";"
                                   "PRAGMA user_version = 2;";

/* A put with a known id updates that row in place: same seq, so load keeps
 * the original order; created_at stays the first registration's time. */
static const char sq_put_sql[] =
    "INSERT INTO registrations (id, key, record, created_at)"
    " VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (id) DO UPDATE SET key = excluded.key,"
    " record = excluded.record";
static const char sq_del_sql[] = "DELETE FROM registrations WHERE id = ?1";
static const char sq_load_sql[] =
    "SELECT id, record FROM registrations ORDER BY seq";

typedef struct sq_store {
  hd_store base;        /* base.impl points back here */
  pthread_mutex_t lock; /* guards db and the statements */
  sqlite3 *db;
  sqlite3_stmt *put, *del, *load;
  int read_only; /* opened read-only: put and del refuse */
  char path[];   /* the database file, for messages */
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

/* Replaces line breaks (quick_check reports span lines) so a message
 * stays one log line. */
static void one_line(char *msg) {
  for (; msg && *msg; msg++)
    if (*msg == '\n' || *msg == '\r')
      *msg = ' ';
}

static hd_err rc_err(int rc) {
  switch (rc & 0xff) {
  case SQLITE_NOMEM:
    return HD_ENOMEM;
  case SQLITE_FULL:
    return HD_EBUSY; /* no room now; may work later */
  default:
    return HD_EIO;
  }
}

/* What the I/O failure `ext` (an extended SQLITE_IOERR_* code) was doing,
 * or NULL. */
static const char *ioerr_doing(int ext) {
  switch (ext) {
  case SQLITE_IOERR_READ:
  case SQLITE_IOERR_SHORT_READ:
    return "reading";
  case SQLITE_IOERR_WRITE:
    return "writing";
  case SQLITE_IOERR_FSYNC:
  case SQLITE_IOERR_DIR_FSYNC:
    return "syncing";
  case SQLITE_IOERR_TRUNCATE:
    return "truncating";
  case SQLITE_IOERR_FSTAT:
    return "checking the size";
  case SQLITE_IOERR_LOCK:
  case SQLITE_IOERR_RDLOCK:
  case SQLITE_IOERR_UNLOCK:
  case SQLITE_IOERR_CHECKRESERVEDLOCK:
    return "locking";
  case SQLITE_IOERR_DELETE:
    return "deleting";
  case SQLITE_IOERR_SHMOPEN:
  case SQLITE_IOERR_SHMSIZE:
  case SQLITE_IOERR_SHMMAP:
  case SQLITE_IOERR_SHMLOCK:
    return "using the -shm file";
  default:
    return NULL;
  }
}

/* "<path>: [<what>: ]<what SQLite said>[ (<doing>[: <system error>])]" for
 * a failure `rc` on s->db. The parenthesis is for I/O failures, where
 * SQLite says only "disk I/O error"; the system error is there when SQLite
 * kept it. Call before anything else uses the connection. */
static void db_msg(sq_store *s, int rc, const char *what, char *msg,
                   size_t msg_size) {
  int prim = rc & 0xff;
  int same = (sqlite3_errcode(s->db) & 0xff) == prim;
  const char *said = same ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
  const char *doing = NULL;
  int sys = 0;

  if (same && (prim == SQLITE_IOERR || prim == SQLITE_CANTOPEN)) {
    doing = ioerr_doing(sqlite3_extended_errcode(s->db));
    sys = sqlite3_system_errno(s->db);
  }
  char detail[160] = "";
  if (doing || sys)
    snprintf(detail, sizeof(detail), " (%s%s%s)", doing ? doing : "",
             doing && sys ? ": " : "", sys ? strerror(sys) : "");
  set_msg(msg, msg_size, "%s: %s%s%s%s", s->path, what ? what : "",
          what ? ": " : "", said, detail);
  one_line(msg);
}

/* "<path>: <what>: <msg>" in place, for a failure whose cause is already
 * in `msg`. */
static void prefix_msg(sq_store *s, const char *what, char *msg,
                       size_t msg_size) {
  char cause[512];
  if (!msg || msg_size == 0)
    return;
  snprintf(cause, sizeof(cause), "%s", msg);
  set_msg(msg, msg_size, "%s: %s: %s", s->path, what, cause);
  one_line(msg);
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
static hd_err restrict_modes(const char *path, int must_exist, char *msg,
                             size_t msg_size) {
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
    if (chmod(buf, 0600) != 0 && ((i == 0 && must_exist) || errno != ENOENT)) {
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

/* PRAGMA quick_check(1): the b-trees and their pages are sound. Reads the
 * whole file once, writes nothing. A file that is not a database fails
 * here too ("file is not a database"). */
static hd_err check_integrity(sq_store *s, char *msg, size_t msg_size) {
  sqlite3_stmt *st = NULL;
  hd_err err = HD_OK;
  int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check(1)", -1, &st, NULL);

  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *r = (const char *)sqlite3_column_text(st, 0);
    if (r && strncmp(r, "*** in database main ***\n", 25) == 0)
      r += 25;
    if (!r || strcmp(r, "ok") != 0) {
      set_msg(msg, msg_size, "%s: the database is corrupt (quick_check: %s)",
              s->path, r ? r : "no answer");
      one_line(msg);
      err = HD_EIO;
    }
  } else {
    db_msg(s, rc, "cannot read the database", msg, msg_size);
    err = rc_err(rc);
  }
  sqlite3_finalize(st);
  return err;
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
    db_msg(s, rc, "cannot set WAL journal mode", msg, msg_size);
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? HD_OK : rc_err(rc);
}

/* Brings the schema to SQ_SCHEMA_VERSION (when `migrate`; else refuses an
 * older one) or refuses a newer one. */
static hd_err check_schema(sq_store *s, int migrate, char *msg,
                           size_t msg_size) {
  int v = 0;
  int rc = query_int(s->db, "PRAGMA user_version", &v);

  if (rc == SQLITE_OK && v < SQ_SCHEMA_VERSION && !migrate) {
    set_msg(msg, msg_size,
            "%s: schema version %d needs setting up to %d, which a "
            "read-only database cannot be",
            s->path, v, SQ_SCHEMA_VERSION);
    return HD_EIO;
  }
  if (rc == SQLITE_OK && v < SQ_SCHEMA_VERSION && v >= 0) {
    /* Re-read under the write lock: another process may have just created
     * or migrated the schema. */
    hd_err merr = HD_OK;
    int migrating = 0;
    const char *doing = "cannot create the schema";
    rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
      rc = query_int(s->db, "PRAGMA user_version", &v);
    if (rc == SQLITE_OK && v == 0) {
      rc = sqlite3_exec(s->db, sq_schema_v2, NULL, NULL, NULL);
      if (rc == SQLITE_OK)
        v = SQ_SCHEMA_VERSION;
    } else if (rc == SQLITE_OK && v == 1) {
      /* One transaction: a crash anywhere before COMMIT leaves schema 1
       * exactly as it was (SQLite rolls the WAL frames back). */
      doing = "cannot migrate the database from schema 1 to 2";
      migrating = 1;
      merr = hd_sq_migrate_v1(s->db, &rc, msg, msg_size);
      if (merr == HD_OK)
        v = SQ_SCHEMA_VERSION;
    }
    if (rc == SQLITE_OK && merr == HD_OK)
      rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK || merr != HD_OK) {
      if (rc != SQLITE_OK)
        db_msg(s, rc, doing, msg, msg_size);
      else
        prefix_msg(s, doing, msg, msg_size);
      if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
      return rc != SQLITE_OK ? rc_err(rc) : merr;
    }
    if (migrating)
      hd_log(HD_LOG_INFO, "store: %s migrated from schema 1 to %d", s->path,
             SQ_SCHEMA_VERSION);
  }
  if (rc != SQLITE_OK) {
    db_msg(s, rc, "cannot read the schema version", msg, msg_size);
    return rc_err(rc);
  }
  if (v > SQ_SCHEMA_VERSION) {
    set_msg(msg, msg_size,
            "database schema version %d is newer than this handlerd "
            "supports (%d)",
            v, SQ_SCHEMA_VERSION);
    return HD_EIO;
  }
  if (v < SQ_SCHEMA_VERSION) {
    set_msg(msg, msg_size, "%s: invalid database schema version %d", s->path,
            v);
    return HD_EIO;
  }
  return HD_OK;
}

/* Checks, sets up and prepares an open connection. Read-only: no WAL
 * set-up, no pragmas that write, no migration, only the load statement. */
static hd_err configure(sq_store *s, char *msg, size_t msg_size) {
  hd_err err;
  int rc;

  sqlite3_busy_timeout(s->db, SQ_BUSY_TIMEOUT_MS);
  /* First, before anything may write to the file. */
  if ((err = check_integrity(s, msg, msg_size)) != HD_OK)
    return err;
  if (!s->read_only) {
    if ((err = set_journal_wal(s, msg, msg_size)) != HD_OK)
      return err;
    rc = sqlite3_exec(s->db,
                      "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      db_msg(s, rc, "cannot configure the database", msg, msg_size);
      return rc_err(rc);
    }
  }
  if ((err = check_schema(s, !s->read_only, msg, msg_size)) != HD_OK)
    return err;
  const struct {
    const char *sql;
    sqlite3_stmt **st;
  } stmts[] = {
      {sq_load_sql, &s->load}, {sq_put_sql, &s->put}, {sq_del_sql, &s->del}};
  size_t n = s->read_only ? 1 : sizeof(stmts) / sizeof(stmts[0]);
  for (size_t i = 0; i < n; i++) {
    rc = sqlite3_prepare_v3(s->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                            stmts[i].st, NULL);
    if (rc != SQLITE_OK) {
      db_msg(s, rc, "cannot prepare statements", msg, msg_size);
      return rc_err(rc);
    }
  }
  return HD_OK;
}

/* Resets `st` after a step that ended with `rc` and maps the outcome. On
 * failure fills `msg` with what SQLite said (never the bound values).
 * Holds lock. */
static hd_err finish_stmt(sq_store *s, sqlite3_stmt *st, int rc,
                          const char *what, char *msg, size_t msg_size) {
  hd_err err = HD_OK;
  if (rc != SQLITE_OK && rc != SQLITE_DONE) {
    db_msg(s, rc, what, msg, msg_size);
    err = rc_err(rc);
  }
  sqlite3_reset(st);
  /* Drop the caller's pointers (the request carries a secret). */
  sqlite3_clear_bindings(st);
  return err;
}

/* put and del on a database opened read-only. */
static hd_err refuse_read_only(sq_store *s, char *msg, size_t msg_size) {
  set_msg(msg, msg_size,
          "%s: the database is read-only (its file system was read-only "
          "when handlerd started); registrations cannot be changed until "
          "handlerd is restarted with it writable",
          s->path);
  return HD_EIO;
}

static hd_err sq_put(hd_store *hs, const char *id, const hd_registration *reg,
                     char *msg, size_t msg_size) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->put;
  uint8_t *rec = NULL;
  size_t len = 0;
  char why[256] = "";
  int rc;

  if (s->read_only)
    return refuse_read_only(s, msg, msg_size);
  /* Encoded before taking the lock: the lock is for SQLite only. */
  hd_err err = hd_store_record_encode(reg, &rec, &len, why, sizeof(why));
  if (err != HD_OK) {
    if (err == HD_ENOMEM)
      set_msg(msg, msg_size, "%s: out of memory", s->path);
    else
      set_msg(msg, msg_size, "%s: handler %s: %s", s->path, id, why);
    return err;
  }
  pthread_mutex_lock(&s->lock);
  rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_text(st, 2, reg->key, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    /* An empty record (all defaults) must still be a (non-NULL) blob. */
    rc = len ? sqlite3_bind_blob64(st, 3, rec, len, SQLITE_STATIC)
             : sqlite3_bind_zeroblob(st, 3, 0);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  err = finish_stmt(s, st, rc, NULL, msg, msg_size);
  pthread_mutex_unlock(&s->lock);
  explicit_bzero(rec, len); /* may hold a secret */
  free(rec);
  return err;
}

static hd_err sq_del(hd_store *hs, const char *id, char *msg, size_t msg_size) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->del;
  int rc;

  if (s->read_only)
    return refuse_read_only(s, msg, msg_size);
  pthread_mutex_lock(&s->lock);
  rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  hd_err err = finish_stmt(s, st, rc, NULL, msg, msg_size);
  if (err == HD_OK && sqlite3_changes(s->db) == 0)
    err = HD_ENOTFOUND;
  pthread_mutex_unlock(&s->lock);
  return err;
}

/* One loaded row: id '\0' record, in buf. */
typedef struct sq_row {
  struct sq_row *next;
  size_t size; /* of buf, for wiping */
  size_t len;  /* of the record */
  const unsigned char *rec;
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
static hd_err copy_row(sq_store *s, sqlite3_stmt *st, sq_row **out, char *msg,
                       size_t msg_size) {
  const unsigned char *id = sqlite3_column_text(st, 0);
  size_t idn = (size_t)sqlite3_column_bytes(st, 0);
  const void *rec = sqlite3_column_blob(st, 1);
  size_t len = (size_t)sqlite3_column_bytes(st, 1);

  if (!id || (!rec && len > 0)) {
    if (sqlite3_errcode(s->db) == SQLITE_NOMEM) {
      set_msg(msg, msg_size, "%s: out of memory reading the registrations",
              s->path);
      return HD_ENOMEM;
    }
    set_msg(msg, msg_size, "%s: a registration row has a NULL column", s->path);
    return HD_EIO;
  }
  size_t size = idn + 1 + len;
  sq_row *r = malloc(sizeof(*r) + size);
  if (!r) {
    set_msg(msg, msg_size, "%s: out of memory reading the registrations",
            s->path);
    return HD_ENOMEM;
  }
  r->next = NULL;
  r->size = size;
  r->len = len;
  memcpy(r->buf, id, idn + 1);
  r->rec = (const unsigned char *)r->buf + idn + 1;
  if (len)
    memcpy(r->buf + idn + 1, rec, len);
  *out = r;
  return HD_OK;
}

/* Decodes r's record and calls fn with it; the decoded copy (secrets
 * included) is wiped afterwards. A record that cannot be decoded stops the
 * load with a message naming the handler. */
static hd_err call_with_record(sq_store *s, const sq_row *r,
                               hd_store_registration_fn *fn, void *ud,
                               char *msg, size_t msg_size) {
  hd_registration reg;
  char why[256] = "";
  hd_arena *a = hd_arena_new(1024);
  if (!a) {
    set_msg(msg, msg_size, "%s: out of memory reading the registrations",
            s->path);
    return HD_ENOMEM;
  }
  hd_err err =
      hd_store_record_decode(r->rec, r->len, a, &reg, why, sizeof(why));
  if (err == HD_OK) {
    err = fn(r->buf, &reg, ud);
  } else if (err == HD_ENOMEM) {
    set_msg(msg, msg_size, "%s: out of memory reading the registrations",
            s->path);
  } else {
    set_msg(msg, msg_size, "%s: the record of handler %s cannot be read: %s",
            s->path, r->buf, why);
    one_line(msg);
    err = HD_EIO;
  }
  hd_arena_wipe(a);
  hd_arena_free(a);
  return err;
}

/* Copies every row under the lock, then calls fn without it: fn may use
 * the store (e.g. delete a record it cannot restore) without deadlocking,
 * and sees one consistent snapshot. */
static hd_err sq_load(hd_store *hs, hd_store_registration_fn *fn, void *ud,
                      char *msg, size_t msg_size) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->load;
  sq_row *head = NULL, **tail = &head;
  hd_err err = HD_OK;
  int rc;

  pthread_mutex_lock(&s->lock);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if ((err = copy_row(s, st, tail, msg, msg_size)) != HD_OK)
      break;
    tail = &(*tail)->next;
  }
  if (err == HD_OK)
    err =
        finish_stmt(s, st, rc, "cannot read the registrations", msg, msg_size);
  else
    finish_stmt(s, st, SQLITE_OK, NULL, NULL, 0);
  pthread_mutex_unlock(&s->lock);

  for (sq_row *r = head; err == HD_OK && r; r = r->next)
    err = call_with_record(s, r, fn, ud, msg, msg_size);
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

static const hd_store_vtable sq_vtable = {
    .name = "sqlite",
    .put = sq_put,
    .del = sq_del,
    .load = sq_load,
    .close = sq_close,
};

/* Whether `path` is on a read-only mount (ST_RDONLY covers a read-only
 * bind mount too). 0 when it cannot tell (e.g. `path` does not exist). */
static int on_read_only_fs(const char *path) {
  struct statvfs sv;
  return statvfs(path, &sv) == 0 && (sv.f_flag & ST_RDONLY);
}

/* "file:<path>?mode=ro&immutable=1", the path percent-encoded (a '?', '#'
 * or '%' in it would otherwise be read as URI syntax). malloc'd. */
static char *read_only_uri(const char *path) {
  static const char tail[] = "?mode=ro&immutable=1";
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(path);
  char *uri = malloc(sizeof("file://") + 3 * n + sizeof(tail));
  if (!uri)
    return NULL;
  /* An absolute path gets an empty authority: "file:///a/b". */
  char *p = uri + sprintf(uri, "%s", path[0] == '/' ? "file://" : "file:");
  for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
    if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
        (*c >= '0' && *c <= '9') || strchr("/-._~", *c)) {
      *p++ = (char)*c;
    } else {
      *p++ = '%';
      *p++ = hex[*c >> 4];
      *p++ = hex[*c & 15];
    }
  }
  memcpy(p, tail, sizeof(tail));
  return uri;
}

/* The database on a read-only file system: see store.h. */
static hd_err open_read_only(sq_store *s, const char *dir, char *msg,
                             size_t msg_size) {
  struct stat st;

  if (stat(s->path, &st) != 0) {
    if (errno == ENOENT)
      set_msg(msg, msg_size,
              "cannot create %s: state directory %s is on a read-only file "
              "system",
              s->path, dir);
    else
      set_msg(msg, msg_size, "cannot use %s: %s", s->path, strerror(errno));
    return HD_EIO;
  }
  size_t wal_size = strlen(s->path) + sizeof("-wal");
  char *wal = malloc(wal_size);
  if (!wal) {
    set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  snprintf(wal, wal_size, "%s-wal", s->path);
  if (stat(wal, &st) == 0 && st.st_size > 0) {
    set_msg(msg, msg_size,
            "%s is on a read-only file system and %s holds changes not yet "
            "copied into it (handlerd did not stop cleanly): they cannot be "
            "read without writing; make %s writable and start again",
            s->path, wal, dir);
    free(wal);
    return HD_EIO;
  }
  free(wal);
  char *uri = read_only_uri(s->path);
  if (!uri) {
    set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  int rc = sqlite3_open_v2(
      uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
      NULL);
  free(uri);
  s->read_only = 1;
  if (rc != SQLITE_OK) {
    if (s->db)
      db_msg(s, rc, "cannot open read-only", msg, msg_size);
    else
      set_msg(msg, msg_size, "cannot open %s read-only: %s", s->path,
              sqlite3_errstr(rc));
    return rc_err(rc);
  }
  return configure(s, msg, msg_size);
}

static hd_err open_read_write(sq_store *s, char *msg, size_t msg_size) {
  hd_err err;

  /* An existing file is restricted before SQLite opens it: were it not
   * writable by us (e.g. 0400), SQLite would quietly open it read-only. */
  if ((err = restrict_modes(s->path, 0, msg, msg_size)) != HD_OK)
    return err;
  /* Not SQLITE_OPEN_NOFOLLOW: in SQLite 3.40 it refuses a symlink anywhere
   * in the path (e.g. /var -> /private/var), not only the file itself. */
  int rc = sqlite3_open_v2(
      s->path, &s->db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    if (s->db)
      db_msg(s, rc, "cannot open", msg, msg_size);
    else
      set_msg(msg, msg_size, "cannot open %s: %s", s->path, sqlite3_errstr(rc));
    return rc_err(rc);
  }
  /* A file SQLite has just created. */
  if ((err = restrict_modes(s->path, 1, msg, msg_size)) != HD_OK)
    return err;
  if (sqlite3_db_readonly(s->db, "main") == 1) {
    set_msg(msg, msg_size, "cannot open %s for writing: %s", s->path,
            access(s->path, R_OK | W_OK) != 0 ? strerror(errno)
                                              : "SQLite opened it read-only");
    return HD_EIO;
  }
  return configure(s, msg, msg_size);
}

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
  s->base.vt = &sq_vtable;
  s->base.impl = s;
  if (pthread_mutex_init(&s->lock, NULL) != 0) {
    set_msg(msg, msg_size, "cannot create a mutex");
    free(s);
    return HD_ENOMEM;
  }

  if (on_read_only_fs(dir) || on_read_only_fs(s->path))
    err = open_read_only(s, dir, msg, msg_size);
  else
    err = open_read_write(s, msg, msg_size);
  if (err != HD_OK) {
    sq_close(&s->base);
    return err;
  }
  if (s->read_only)
    hd_log(HD_LOG_WARN,
           "store: %s is on a read-only file system: opened read-only; its "
           "registrations are served, but registrations cannot be added or "
           "removed until handlerd is restarted with it writable",
           s->path);
  *out = &s->base;
  return HD_OK;
}
