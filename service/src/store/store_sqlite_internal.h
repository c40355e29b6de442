/*
 * store_sqlite_internal.h - what the files of the SQLite backend share: the
 * store's struct, the failure messages (store_sqlite_msg.c), the vtable and
 * its statements (store_sqlite.c) for the open (store_sqlite_open.c), the
 * migration (store_sqlite_migrate.c) and its test seam, the journal
 * (store_sqlite_journal.c; its reads in store_sqlite_journal_read.c). Not
 * for the layers above.
 *
 * Schema (PRAGMA user_version):
 *   3: schema 2's registrations, and the outbox's journal (journal.h,
 *      store_sqlite_journal.c):
 *      deliveries(seq INTEGER PRIMARY KEY AUTOINCREMENT,
 *                 id TEXT UNIQUE NOT NULL, event_id TEXT NOT NULL,
 *                 key TEXT NOT NULL, handler_id TEXT NOT NULL,
 *                 route TEXT NOT NULL, event_name TEXT NOT NULL,
 *                 ordering_key TEXT NOT NULL, body BLOB NOT NULL,
 *                 headers TEXT NOT NULL, created_ms INTEGER NOT NULL,
 *                 next_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
 *                 state INTEGER NOT NULL, attempts INTEGER NOT NULL,
 *                 last_status INTEGER NOT NULL, last_error TEXT NOT NULL)
 *        one row per delivery, the columns of hd_delivery_row (times in
 *        Unix ms, state the hd_delivery_state number); seq is the insert
 *        order and, AUTOINCREMENT, never reused after a prune, so it stays
 *        a valid page cursor. Its indexes (every SQLite index ends with the
 *        rowid, seq, so each also gives seq order):
 *        deliveries_unfinished(seq) WHERE state IN (1, 2, 4): load_pending;
 *        deliveries_handler(handler_id), deliveries_key(key): list's
 *        filters, newest first; deliveries_finished(updated_ms) WHERE
 *        state IN (3, 5): prune.
 *      attempts(delivery_id TEXT NOT NULL, number INTEGER NOT NULL,
 *               manual INTEGER NOT NULL, started_ms INTEGER NOT NULL,
 *               duration_ms INTEGER NOT NULL, http_status INTEGER NOT NULL,
 *               error TEXT NOT NULL, response_head BLOB NOT NULL,
 *               PRIMARY KEY (delivery_id, number))
 *        one row per attempt of a delivery (delivery_id is its id).
 *      endpoints(handler_id TEXT NOT NULL, route TEXT NOT NULL,
 *                failures INTEGER NOT NULL,
 *                first_failure_ms INTEGER NOT NULL,
 *                disabled_ms INTEGER NOT NULL,
 *                PRIMARY KEY (handler_id, route))
 *        the health of each async webhook (hd_endpoint_row).
 *   2: registrations(seq INTEGER PRIMARY KEY AUTOINCREMENT,
 *                    id TEXT UNIQUE NOT NULL, key TEXT NOT NULL,
 *                    record BLOB NOT NULL, created_at INTEGER NOT NULL)
 *      record is the store's own format (store_record.h); key is a copy of
 *      the record's key for people and queries (load reads the record);
 *      created_at is Unix seconds of the first put of that id.
 *   1: the same with `request BLOB`, the API's AddHandlerRequest bytes.
 * Version 0 (a new file) is set up as 3; version 2 is migrated to 3 (the
 * journal's tables are created) and version 1 to 2, then 3, all in one
 * transaction (store_sqlite_open.c, store_sqlite_migrate.c). A newer
 * version is refused, so an older handlerd never rewrites what it does not
 * understand; a read-only database of an older version is refused too (it
 * cannot be migrated).
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
#define SQ_SCHEMA_VERSION 3

/* The columns of schema 2's registrations table. */
#define SQ_TABLE_V2                                                            \
  "(seq INTEGER PRIMARY KEY AUTOINCREMENT,"                                    \
  " id TEXT UNIQUE NOT NULL,"                                                  \
  " key TEXT NOT NULL,"                                                        \
  " record BLOB NOT NULL,"                                                     \
  " created_at INTEGER NOT NULL)"

/* Schema 3's journal tables and their indexes (see above), one statement
 * each, for the new database and the migration from 2. */
#define SQ_JOURNAL_V3                                                          \
  "CREATE TABLE deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT,"            \
  " id TEXT UNIQUE NOT NULL, event_id TEXT NOT NULL, key TEXT NOT NULL,"       \
  " handler_id TEXT NOT NULL, route TEXT NOT NULL, event_name TEXT NOT NULL,"  \
  " ordering_key TEXT NOT NULL, body BLOB NOT NULL, headers TEXT NOT NULL,"    \
  " created_ms INTEGER NOT NULL, next_ms INTEGER NOT NULL,"                    \
  " updated_ms INTEGER NOT NULL, state INTEGER NOT NULL,"                      \
  " attempts INTEGER NOT NULL, last_status INTEGER NOT NULL,"                  \
  " last_error TEXT NOT NULL);"                                                \
  "CREATE INDEX deliveries_unfinished ON deliveries (seq)"                     \
  " WHERE state IN (1, 2, 4);"                                                 \
  "CREATE INDEX deliveries_handler ON deliveries (handler_id);"                \
  "CREATE INDEX deliveries_key ON deliveries (key);"                           \
  "CREATE INDEX deliveries_finished ON deliveries (updated_ms)"                \
  " WHERE state IN (3, 5);"                                                    \
  "CREATE TABLE attempts (delivery_id TEXT NOT NULL,"                          \
  " number INTEGER NOT NULL, manual INTEGER NOT NULL,"                         \
  " started_ms INTEGER NOT NULL, duration_ms INTEGER NOT NULL,"                \
  " http_status INTEGER NOT NULL, error TEXT NOT NULL,"                        \
  " response_head BLOB NOT NULL, PRIMARY KEY (delivery_id, number));"          \
  "CREATE TABLE endpoints (handler_id TEXT NOT NULL, route TEXT NOT NULL,"     \
  " failures INTEGER NOT NULL, first_failure_ms INTEGER NOT NULL,"             \
  " disabled_ms INTEGER NOT NULL, PRIMARY KEY (handler_id, route));"

typedef struct sq_store {
  hd_store base;        /* base.impl points back here */
  pthread_mutex_t lock; /* guards db and the statements */
  sqlite3 *db;
  sqlite3_stmt *put, *del, *load;
  int read_only; /* opened read-only: put, del, commit and prune refuse */
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

/* HD_EIO with "<path>: the database is read-only (...); <what> until
 * handlerd is restarted with it writable": a change refused by a store
 * opened read-only. */
hd_err hd_sq_refuse_read_only(sq_store *s, const char *what, char *msg,
                              size_t msg_size);

/* Frees the journal, finalizes the statements, closes s->db and frees s;
 * also for a store whose open failed part way. */
void hd_sq_close(hd_store *hs);

/* store_sqlite_journal.c */

/* Makes the store's journal (s->base.journal) and prepares its statements
 * (read-only: only those that read). Called by the open once the schema is
 * there. */
hd_err hd_sq_journal_new(sq_store *s, char *msg, size_t msg_size);

/* Finalizes the journal's statements and frees it; NULL is fine. Before
 * the connection is closed. */
void hd_sq_journal_free(hd_journal *j);

/* store_sqlite_migrate.c */

/* Rewrites a schema-1 database as schema 2, inside the transaction the
 * caller has begun (BEGIN IMMEDIATE) and will commit or roll back. On an
 * SQLite failure returns HD_EIO with its code in *rc (the caller says what
 * SQLite said); on a row that cannot be converted returns an error with
 * *rc SQLITE_OK and `msg` naming the handler and why. */
hd_err hd_sq_migrate_v1(sqlite3 *db, int *rc, char *msg, size_t msg_size);

/* Brings a schema-2 database to schema 3 (creates the journal's tables),
 * inside the caller's transaction as hd_sq_migrate_v1. HD_EIO with the
 * SQLite code in *rc on failure. */
hd_err hd_sq_migrate_v2(sqlite3 *db, int *rc);

/* Test seam: when set, called inside the migration's transaction at each
 * step (1 to 2: "begin", "row" after each row, "copied", "dropped",
 * "renamed"; 2 to 3: "journal" once its tables are there), so a test can
 * kill the process there. NULL in handlerd. */
extern void (*hd_sq_migrate_hook)(const char *step);

#endif
