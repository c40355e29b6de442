/*
 * store_sqlite_journal.h - what the two files of the SQLite journal share:
 * its struct, how its statements are listed and prepared, and the reads
 * that store_sqlite_journal.c (making, freeing, commit, prune) puts in the
 * vtable from store_sqlite_journal_read.c (load_pending, load_endpoints,
 * list, get). Each file owns the SQL it runs. Not for the layers above, nor
 * for the store's other files (they see hd_sq_journal_new and _free in
 * store_sqlite_internal.h).
 */
#ifndef HD_STORE_SQLITE_JOURNAL_H
#define HD_STORE_SQLITE_JOURNAL_H

#include "handlerd/error.h"
#include "journal.h"
#include "store_sqlite_internal.h"

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sq_journal {
  hd_journal base; /* base.impl points back here */
  sq_store *s;     /* its connection and lock */
  sqlite3_stmt *begin, *commit, *rollback;
  sqlite3_stmt *insert, *update, *attempt, *endpoint;
  sqlite3_stmt *prune_attempts, *prune;
  sqlite3_stmt *pending, *list_all, *list_handler, *list_key;
  sqlite3_stmt *get, *get_attempts, *endpoints;
} sq_journal;

/* One statement to prepare: its SQL and where its handle lives. */
typedef struct jr_stmt {
  const char *sql;
  size_t offset; /* of the sqlite3_stmt * in sq_journal */
} jr_stmt;

#define JR_STMT(field, sql)                                                    \
  { sql, offsetof(sq_journal, field) }

#define JR_N(a) (sizeof(a) / sizeof((a)[0]))

/* store_sqlite_journal_read.c */

/* The reads' statements: what every store prepares, read-only or not. */
extern const jr_stmt hd_sqj_read_stmts[];
extern const size_t hd_sqj_n_read_stmts;

/* The vtable's reads, as journal.h describes them. */
hd_err hd_sqj_load_pending(hd_journal *hj, hd_delivery_row_fn *fn, void *ud,
                           char *msg, size_t msg_size);
hd_err hd_sqj_load_endpoints(hd_journal *hj, hd_endpoint_row_fn *fn, void *ud,
                             char *msg, size_t msg_size);
hd_err hd_sqj_list(hd_journal *hj, const hd_delivery_filter *f,
                   hd_delivery_row_fn *fn, void *ud, char *msg,
                   size_t msg_size);
hd_err hd_sqj_get(hd_journal *hj, const char *id, hd_delivery_row_fn *row_fn,
                  hd_attempt_row_fn *att_fn, void *ud, char *msg,
                  size_t msg_size);

/* Helpers of both files. */

/* Every operation starts with an empty message, so a caller never shows
 * one left over from an earlier call. */
static inline void clear_msg(char *msg, size_t msg_size) {
  if (msg && msg_size)
    msg[0] = '\0';
}

/* Binds v at i unless an earlier bind failed (rc is not SQLITE_OK), so a
 * row's binds chain and are checked once. */
static inline int bind_i64(sqlite3_stmt *st, int i, int64_t v, int rc) {
  return rc == SQLITE_OK ? sqlite3_bind_int64(st, i, v) : rc;
}

#endif
