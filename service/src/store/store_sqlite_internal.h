/*
 * store_sqlite_internal.h - what store_sqlite.c shares with its migration
 * (store_sqlite_migrate.c), and the migration's test seam. Not for the
 * layers above.
 */
#ifndef HD_STORE_SQLITE_INTERNAL_H
#define HD_STORE_SQLITE_INTERNAL_H

#include "handlerd/error.h"

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
