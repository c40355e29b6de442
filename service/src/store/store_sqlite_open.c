/*
 * store_sqlite_open.c - hd_store_sqlite_open: the state directory, the
 * file's modes, the checks, WAL set-up, the schema version (a new file is
 * set up at 3, an older one migrated), the journal, and the read-only
 * mode.
 *
 * Failures: an existing file is checked (PRAGMA quick_check) before
 * anything is written to it, so a corrupt file stops the open and is left
 * as it was.
 *
 * Read-only file system: see store.h. The database is opened with
 * "file:<path>?mode=ro&immutable=1" (SQLite then takes no locks and opens
 * no -wal/-shm, which it could not create there).
 */
#include "store.h"
#include "store_sqlite_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define SQ_DB_NAME "handlerd.db"
#define SQ_BUSY_TIMEOUT_MS 5000

/* A new database: schema 3 at once. */
static const char sq_schema_new[] =
    "CREATE TABLE registrations " SQ_TABLE_V2 ";" SQ_JOURNAL_V3
    "PRAGMA user_version = 3;";

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
      hd_sq_set_msg(msg, msg_size, "cannot set the mode of %s: %s", dir,
                    strerror(errno));
      return HD_EIO;
    }
    sync_parent_dir(dir);
  } else if (errno != EEXIST) {
    hd_sq_set_msg(msg, msg_size, "cannot create state directory %s: %s", dir,
                  strerror(errno));
    return HD_EIO;
  }
  if (stat(dir, &st) != 0) {
    hd_sq_set_msg(msg, msg_size, "cannot use state directory %s: %s", dir,
                  strerror(errno));
    return HD_EIO;
  }
  if (!S_ISDIR(st.st_mode)) {
    hd_sq_set_msg(msg, msg_size, "state path %s is not a directory", dir);
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
    hd_sq_set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
    snprintf(buf, size, "%s%s", path, suffixes[i]);
    if (chmod(buf, 0600) != 0 && ((i == 0 && must_exist) || errno != ENOENT)) {
      hd_sq_set_msg(msg, msg_size, "cannot set the mode of %s: %s", buf,
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
      hd_sq_set_msg(msg, msg_size,
                    "%s: the database is corrupt (quick_check: %s)", s->path,
                    r ? r : "no answer");
      hd_sq_one_line(msg);
      err = HD_EIO;
    }
  } else {
    hd_sq_db_msg(s, rc, "cannot read the database", msg, msg_size);
    err = hd_sq_rc_err(rc);
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
      hd_sq_set_msg(msg, msg_size, "%s: cannot use WAL journal mode (got %s)",
                    s->path, mode ? (const char *)mode : "nothing");
      sqlite3_finalize(st);
      return HD_EIO;
    }
    rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK)
    hd_sq_db_msg(s, rc, "cannot set WAL journal mode", msg, msg_size);
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? HD_OK : hd_sq_rc_err(rc);
}

/* A failed step of the migration from schema `from`: "<path>: cannot
 * migrate the database from schema <from> to <from + 1>: <cause>", the
 * cause being SQLite's (rc) or already in `msg` (a row it cannot convert,
 * rc SQLITE_OK). */
static hd_err migration_failed(sq_store *s, int from, int rc, hd_err err,
                               char *msg, size_t msg_size) {
  char doing[64];
  snprintf(doing, sizeof(doing),
           "cannot migrate the database from schema %d to %d", from, from + 1);
  if (rc != SQLITE_OK) {
    hd_sq_db_msg(s, rc, doing, msg, msg_size);
    return hd_sq_rc_err(rc);
  }
  hd_sq_prefix_msg(s, doing, msg, msg_size);
  return err;
}

/* Brings a database at schema `v` (0: new, 1 or 2; read under the write
 * lock) to SQ_SCHEMA_VERSION, inside the caller's transaction: 1 goes to 2
 * then 3 there, so a crash anywhere before COMMIT leaves the old schema
 * exactly as it was (SQLite rolls the WAL frames back). */
static hd_err upgrade_schema(sq_store *s, int v, char *msg, size_t msg_size) {
  int rc = SQLITE_OK;
  hd_err err;

  if (v == 0) {
    rc = sqlite3_exec(s->db, sq_schema_new, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      hd_sq_db_msg(s, rc, "cannot create the schema", msg, msg_size);
      return hd_sq_rc_err(rc);
    }
    return HD_OK;
  }
  if (v == 1 && (err = hd_sq_migrate_v1(s->db, &rc, msg, msg_size)) != HD_OK)
    return migration_failed(s, 1, rc, err, msg, msg_size);
  if ((err = hd_sq_migrate_v2(s->db, &rc)) != HD_OK)
    return migration_failed(s, 2, rc, err, msg, msg_size);
  return HD_OK;
}

/* Sets up or migrates an older schema in one transaction (BEGIN
 * IMMEDIATE ... COMMIT); *v becomes the version now there. */
static hd_err upgrade_in_transaction(sq_store *s, int *v, char *msg,
                                     size_t msg_size) {
  hd_err err = HD_OK;
  int from;
  int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

  /* Re-read under the write lock: another process may have just created
   * or migrated the schema. */
  if (rc == SQLITE_OK)
    rc = query_int(s->db, "PRAGMA user_version", v);
  from = *v;
  if (rc == SQLITE_OK && from >= 0 && from < SQ_SCHEMA_VERSION) {
    err = upgrade_schema(s, from, msg, msg_size);
    if (err == HD_OK)
      *v = SQ_SCHEMA_VERSION;
  }
  if (rc == SQLITE_OK && err == HD_OK)
    rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    char doing[64] = "cannot create the schema";
    if (from > 0 && from < SQ_SCHEMA_VERSION)
      snprintf(doing, sizeof(doing),
               "cannot migrate the database from schema %d to %d", from,
               SQ_SCHEMA_VERSION);
    hd_sq_db_msg(s, rc, doing, msg, msg_size);
    err = hd_sq_rc_err(rc);
  }
  if (err != HD_OK) {
    if (!sqlite3_get_autocommit(s->db))
      sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
  }
  if (from > 0 && from < SQ_SCHEMA_VERSION)
    hd_log(HD_LOG_INFO, "store: %s migrated from schema %d to %d", s->path,
           from, SQ_SCHEMA_VERSION);
  return HD_OK;
}

/* Brings the schema to SQ_SCHEMA_VERSION (when `migrate`; else refuses an
 * older one) or refuses a newer one. */
static hd_err check_schema(sq_store *s, int migrate, char *msg,
                           size_t msg_size) {
  int v = 0;
  int rc = query_int(s->db, "PRAGMA user_version", &v);

  if (rc != SQLITE_OK) {
    hd_sq_db_msg(s, rc, "cannot read the schema version", msg, msg_size);
    return hd_sq_rc_err(rc);
  }
  if (v < SQ_SCHEMA_VERSION && !migrate) {
    hd_sq_set_msg(msg, msg_size,
                  "%s: schema version %d needs setting up to %d, which a "
                  "read-only database cannot be",
                  s->path, v, SQ_SCHEMA_VERSION);
    return HD_EIO;
  }
  if (v < SQ_SCHEMA_VERSION && v >= 0) {
    hd_err err = upgrade_in_transaction(s, &v, msg, msg_size);
    if (err != HD_OK)
      return err;
  }
  if (v > SQ_SCHEMA_VERSION) {
    hd_sq_set_msg(msg, msg_size,
                  "database schema version %d is newer than this handlerd "
                  "supports (%d)",
                  v, SQ_SCHEMA_VERSION);
    return HD_EIO;
  }
  if (v < SQ_SCHEMA_VERSION) {
    hd_sq_set_msg(msg, msg_size, "%s: invalid database schema version %d",
                  s->path, v);
    return HD_EIO;
  }
  return HD_OK;
}

/* Checks, sets up and prepares an open connection, and makes the journal.
 * Read-only: no WAL set-up, no pragmas that write, no migration, only the
 * statements that read. */
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
                      "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;"
                      /* 16 MiB of pages (default 2): a backlog of async
                       * deliveries is written and read back in bulk. */
                      "PRAGMA cache_size = -16384;",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      hd_sq_db_msg(s, rc, "cannot configure the database", msg, msg_size);
      return hd_sq_rc_err(rc);
    }
  }
  if ((err = check_schema(s, !s->read_only, msg, msg_size)) != HD_OK)
    return err;
  if ((err = hd_sq_prepare(s, msg, msg_size)) != HD_OK)
    return err;
  return hd_sq_journal_new(s, msg, msg_size);
}

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
      hd_sq_set_msg(
          msg, msg_size,
          "cannot create %s: state directory %s is on a read-only file "
          "system",
          s->path, dir);
    else
      hd_sq_set_msg(msg, msg_size, "cannot use %s: %s", s->path,
                    strerror(errno));
    return HD_EIO;
  }
  size_t wal_size = strlen(s->path) + sizeof("-wal");
  char *wal = malloc(wal_size);
  if (!wal) {
    hd_sq_set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  snprintf(wal, wal_size, "%s-wal", s->path);
  if (stat(wal, &st) == 0 && st.st_size > 0) {
    hd_sq_set_msg(
        msg, msg_size,
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
    hd_sq_set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  int rc = sqlite3_open_v2(
      uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
      NULL);
  free(uri);
  s->read_only = 1;
  if (rc != SQLITE_OK) {
    if (s->db)
      hd_sq_db_msg(s, rc, "cannot open read-only", msg, msg_size);
    else
      hd_sq_set_msg(msg, msg_size, "cannot open %s read-only: %s", s->path,
                    sqlite3_errstr(rc));
    return hd_sq_rc_err(rc);
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
      hd_sq_db_msg(s, rc, "cannot open", msg, msg_size);
    else
      hd_sq_set_msg(msg, msg_size, "cannot open %s: %s", s->path,
                    sqlite3_errstr(rc));
    return hd_sq_rc_err(rc);
  }
  /* A file SQLite has just created. */
  if ((err = restrict_modes(s->path, 1, msg, msg_size)) != HD_OK)
    return err;
  if (sqlite3_db_readonly(s->db, "main") == 1) {
    hd_sq_set_msg(msg, msg_size, "cannot open %s for writing: %s", s->path,
                  access(s->path, R_OK | W_OK) != 0
                      ? strerror(errno)
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
    hd_sq_set_msg(msg, msg_size, "no state directory given");
    return HD_EINVAL;
  }
  if ((err = prepare_dir(dir, msg, msg_size)) != HD_OK)
    return err;

  size_t dlen = strlen(dir);
  sq_store *s = calloc(1, sizeof(*s) + dlen + sizeof("/" SQ_DB_NAME));
  if (!s) {
    hd_sq_set_msg(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  snprintf(s->path, dlen + sizeof("/" SQ_DB_NAME), "%s/" SQ_DB_NAME, dir);
  s->base.vt = &hd_sq_vtable;
  s->base.impl = s;
  if (pthread_mutex_init(&s->lock, NULL) != 0) {
    hd_sq_set_msg(msg, msg_size, "cannot create a mutex");
    free(s);
    return HD_ENOMEM;
  }

  if (on_read_only_fs(dir) || on_read_only_fs(s->path))
    err = open_read_only(s, dir, msg, msg_size);
  else
    err = open_read_write(s, msg, msg_size);
  if (err != HD_OK) {
    hd_sq_close(&s->base);
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
