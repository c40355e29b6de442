/*
 * store_pg_journal.h - what the PostgreSQL journal's files share
 * (store_pg_journal.c: life, writes, leases; store_pg_journal_read.c:
 * reads). Not for the layers above.
 */
#ifndef HD_STORE_PG_JOURNAL_H
#define HD_STORE_PG_JOURNAL_H

#include "journal.h"
#include "store_pg_internal.h"

typedef struct pg_journal {
  hd_journal base;
  pg_db *db;
  pg_link write; /* commits, claims, leases */
  pg_link read;  /* history: list, get, loads */
} pg_journal;

/* The columns every delivery read selects, in hd_delivery_row's order
 * (pg_row_from reads them); LIST_COLS leaves body and headers empty. */
#define PG_DLV_COLS                                                            \
  "seq, id, event_id, key, handler_id, route, event_name, ordering_key,"       \
  " body, headers, created_ms, next_ms, updated_ms, state, attempts,"          \
  " last_status, last_error, ordered, max_inflight, max_rps"
#define PG_DLV_LIST_COLS                                                       \
  "seq, id, event_id, key, handler_id, route, event_name, ordering_key,"       \
  " ''::bytea, '', created_ms, next_ms, updated_ms, state, attempts,"          \
  " last_status, last_error, ordered"

/* Row i of `r` (selected with PG_DLV_COLS) as a row borrowing r's
 * memory. */
void pg_row_from(const PGresult *r, int i, hd_delivery_row *row);
/* Calls fn for every row of `r`, stopping at the first non-OK return. */
hd_err pg_rows_each(const PGresult *r, hd_delivery_row_fn *fn, void *ud);

/* store_pg_claim.c: claims due deliveries of webhooks with max_inflight
 * or max_rps within their limits (journal.h: claim); *claimed gets how
 * many fn was called for. */
hd_err pg_claim_limited(pg_journal *j, int64_t now_ms, size_t limit,
                        hd_delivery_row_fn *fn, void *ud, size_t *claimed,
                        char *msg, size_t msg_size);

hd_err pg_j_load_pending(hd_journal *j, hd_delivery_row_fn *fn, void *ud,
                         char *msg, size_t msg_size);
hd_err pg_j_load_endpoints(hd_journal *j, hd_endpoint_row_fn *fn, void *ud,
                           char *msg, size_t msg_size);
hd_err pg_j_list(hd_journal *j, const hd_delivery_filter *f,
                 hd_delivery_row_fn *fn, void *ud, char *msg, size_t msg_size);
hd_err pg_j_get(hd_journal *j, const char *id, hd_delivery_row_fn *row_fn,
                hd_attempt_row_fn *att_fn, void *ud, char *msg,
                size_t msg_size);

#endif
