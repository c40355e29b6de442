/*
 * store_sqlite_internal.h - what the files of the SQLite backend share: the
 * store's struct, the failure messages (store_sqlite_msg.c), the vtable and
 * its statements (store_sqlite.c) for the open (store_sqlite_open.c), the
 * migration (store_sqlite_migrate.c) and its test seam. Not for the layers
 * above.
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
 */
#ifndef HD_STORE_SQLITE_INTERNAL_H
#define HD_STORE_SQLITE_INTERNAL_H

#include "handlerd/error.h"
#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>

/* The schema this handlerd writes (PRAGMA user_version). */
#define SQ_SCHEMA_VERSION 2

/* The columns of schema 2's registrations table. */
#define SQ_TABLE_V2                                                            \
  "(seq INTEGER PRIMARY KEY AUTOINCREMENT,"                                    \
  " id TEXT UNIQUE NOT NULL,"                                                  \
  " key TEXT NOT NULL,"                                                        \
  " record BLOB NOT NULL,"                                                     \
  " created_at INTEGER NOT NULL)"

typedef struct sq_store {
  hd_store base;        /* base.impl points back here */
  pthread_mutex_t lock; /* guards db and the statements */
  sqlite3 *db;
  sqlite3_stmt *put, *del, *load;
  int read_only; /* opened read-only: put and del refuse */
  char path[];   /* the database file, for messages */
} sq_store;

/* store_sqlite_msg.c */

void hd_sq_set_msg(char *msg, size_t msg_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Replaces line breaks (quick_check reports span lines) so a message
 * stays one log line. */
void hd_sq_one_line(char *msg);

hd_err hd_sq_rc_err(int rc);

/* "<path>: [<what>: ]<what SQLite said>[ (<doing>[: <system error>])]" for
 * a failure `rc` on s->db. The parenthesis is for I/O failures, where
 * SQLite says only "disk I/O error"; the system error is there when SQLite
 * kept it. Call before anything else uses the connection. */
void hd_sq_db_msg(sq_store *s, int rc, const char *what, char *msg,
                  size_t msg_size);

/* "<path>: <what>: <msg>" in place, for a failure whose cause is already
 * in `msg`. */
void hd_sq_prefix_msg(sq_store *s, const char *what, char *msg,
                      size_t msg_size);

/* store_sqlite.c */

extern const hd_store_vtable hd_sq_vtable;

/* Prepares the statements of put, del and load (read-only: only load's).
 * Called by the open once the schema is there. */
hd_err hd_sq_prepare(sq_store *s, char *msg, size_t msg_size);

/* Finalizes the statements, closes s->db and frees s; also for a store
 * whose open failed part way. */
void hd_sq_close(hd_store *hs);

/* store_sqlite_migrate.c */

/* Rewrites a schema-1 database as schema 2, inside the transaction the
 * caller has begun (BEGIN IMMEDIATE) and will commit or roll back. On an
 * SQLite failure returns HD_EIO with its code in *rc (the caller says what
 * SQLite said); on a row that cannot be converted returns an error with
 * *rc SQLITE_OK and `msg` naming the handler and why. */
hd_err hd_sq_migrate_v1(sqlite3 *db, int *rc, char *msg, size_t msg_size);

/* Test seam: when set, called inside the migration's transaction at each
 * step ("begin", "row" after each row, "copied", "dropped", "renamed"), so
 * a test can kill the process there. NULL in handlerd. */
extern void (*hd_sq_migrate_hook)(const char *step);

#endif
