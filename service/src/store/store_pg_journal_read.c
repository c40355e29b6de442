/*
 * store_pg_journal_read.c - the PostgreSQL journal's reads: the unfinished
 * deliveries, the webhooks' health, the history (list, get). They run on
 * their own link, so reading history never waits behind a commit.
 */
#include "store_pg_journal.h"

#include "errmsg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ROWS 1000

static const char pending_sql[] =
    "SELECT " PG_DLV_COLS " FROM handlerd_deliveries"
    " WHERE state IN (1, 2, 4) AND seq > $1 ORDER BY seq LIMIT $2";
static const char endpoints_sql[] =
    "SELECT handler_id, route, failures, first_failure_ms, disabled_ms"
    " FROM handlerd_endpoints ORDER BY handler_id, route";
static const char list_sql[] =
    "SELECT " PG_DLV_LIST_COLS " FROM handlerd_deliveries"
    " WHERE ($1::text IS NULL OR key = $1)"
    " AND ($2::text IS NULL OR handler_id = $2)"
    " AND ($3 = 0 OR state = $3) AND ($4 = 0 OR created_ms >= $4)"
    " AND ($5 = 0 OR created_ms < $5) AND seq < $6"
    " ORDER BY seq DESC LIMIT $7";
static const char get_sql[] =
    "SELECT " PG_DLV_COLS " FROM handlerd_deliveries WHERE id = $1";
static const char attempts_sql[] =
    "SELECT delivery_id, number, manual, started_ms, duration_ms,"
    " http_status, error, response_head FROM handlerd_attempts"
    " WHERE delivery_id = $1 ORDER BY number";

static void clear_msg(char *msg, size_t msg_size) {
  if (msg && msg_size)
    msg[0] = '\0';
}

void pg_row_from(const PGresult *r, int i, hd_delivery_row *row) {
  memset(row, 0, sizeof(*row));
  row->seq = pg_i64(r, i, 0);
  snprintf(row->id, sizeof(row->id), "%s", pg_str(r, i, 1));
  snprintf(row->event_id, sizeof(row->event_id), "%s", pg_str(r, i, 2));
  row->key = pg_str(r, i, 3);
  row->handler_id = pg_str(r, i, 4);
  row->route = pg_str(r, i, 5);
  row->event_name = pg_str(r, i, 6);
  row->ordering_key = pg_str(r, i, 7);
  row->body = (const unsigned char *)PQgetvalue(r, i, 8);
  row->body_len = (size_t)PQgetlength(r, i, 8);
  if (row->body_len == 0)
    row->body = NULL;
  row->headers = pg_str(r, i, 9);
  row->created_ms = pg_i64(r, i, 10);
  row->next_ms = pg_i64(r, i, 11);
  row->updated_ms = pg_i64(r, i, 12);
  row->state = (hd_delivery_state)pg_i64(r, i, 13);
  row->attempts = (int)pg_i64(r, i, 14);
  row->last_status = (int)pg_i64(r, i, 15);
  row->last_error = pg_str(r, i, 16);
  row->ordered = (int)pg_i64(r, i, 17);
  row->max_inflight = (uint32_t)pg_i64(r, i, 18);
  row->max_rps = pg_f64(r, i, 19);
}

hd_err pg_rows_each(const PGresult *r, hd_delivery_row_fn *fn, void *ud) {
  hd_err err = HD_OK;
  for (int i = 0; err == HD_OK && i < PQntuples(r); i++) {
    hd_delivery_row row;
    pg_row_from(r, i, &row);
    err = fn(&row, ud);
  }
  return err;
}

static PGresult *read_rows(pg_journal *j, const char *sql, const pg_params *p,
                           const char *what, hd_err *err, char *msg,
                           size_t msg_size) {
  PGresult *r;
  pthread_mutex_lock(&j->read.lock);
  r = pg_run(&j->read, sql, p, what, err, msg, msg_size);
  pthread_mutex_unlock(&j->read.lock);
  return r;
}

hd_err pg_j_load_pending(hd_journal *hj, hd_delivery_row_fn *fn, void *ud,
                         char *msg, size_t msg_size) {
  pg_journal *j = hj ? hj->impl : NULL;
  int64_t after = 0;
  hd_err err = HD_OK;
  int n = CHUNK_ROWS;

  clear_msg(msg, msg_size);
  if (!j || !fn)
    return HD_EINVAL;
  while (err == HD_OK && n == CHUNK_ROWS) {
    pg_params p = {0};
    PGresult *r;
    pp_i64(&p, after);
    pp_i64(&p, CHUNK_ROWS);
    r = read_rows(j, pending_sql, &p, "cannot read deliveries", &err, msg,
                  msg_size);
    n = r ? PQntuples(r) : 0;
    if (r && n > 0)
      after = pg_i64(r, n - 1, 0);
    if (r)
      err = pg_rows_each(r, fn, ud);
    PQclear(r);
  }
  return err;
}

hd_err pg_j_load_endpoints(hd_journal *hj, hd_endpoint_row_fn *fn, void *ud,
                           char *msg, size_t msg_size) {
  pg_journal *j = hj ? hj->impl : NULL;
  hd_err err;
  PGresult *r;

  clear_msg(msg, msg_size);
  if (!j || !fn)
    return HD_EINVAL;
  r = read_rows(j, endpoints_sql, NULL, "cannot read webhooks' health", &err,
                msg, msg_size);
  for (int i = 0; r && err == HD_OK && i < PQntuples(r); i++) {
    hd_endpoint_row e = {pg_str(r, i, 0), pg_str(r, i, 1), (int)pg_i64(r, i, 2),
                         pg_i64(r, i, 3), pg_i64(r, i, 4)};
    err = fn(&e, ud);
  }
  PQclear(r);
  return err;
}

static int given(const char *s) {
  return s && *s;
}

hd_err pg_j_list(hd_journal *hj, const hd_delivery_filter *f,
                 hd_delivery_row_fn *fn, void *ud, char *msg, size_t msg_size) {
  pg_journal *j = hj ? hj->impl : NULL;
  pg_params p = {0};
  hd_err err;
  PGresult *r;

  clear_msg(msg, msg_size);
  if (!j || !f || !fn)
    return HD_EINVAL;
  pp_text(&p, given(f->key) ? f->key : NULL);
  pp_text(&p, given(f->handler_id) ? f->handler_id : NULL);
  pp_i64(&p, f->state);
  pp_i64(&p, f->since_ms);
  pp_i64(&p, f->until_ms);
  pp_i64(&p, f->before_seq > 0 ? f->before_seq : INT64_MAX);
  if (f->limit)
    pp_i64(&p, (int64_t)f->limit);
  else
    pp_text(&p, NULL); /* LIMIT NULL: all */
  r = read_rows(j, list_sql, &p, "cannot list deliveries", &err, msg, msg_size);
  if (r)
    err = pg_rows_each(r, fn, ud);
  PQclear(r);
  return err;
}

hd_err pg_j_get(hd_journal *hj, const char *id, hd_delivery_row_fn *row_fn,
                hd_attempt_row_fn *att_fn, void *ud, char *msg,
                size_t msg_size) {
  pg_journal *j = hj ? hj->impl : NULL;
  pg_params p = {0};
  hd_err err;
  PGresult *r, *a = NULL;

  clear_msg(msg, msg_size);
  if (!j || !id || !row_fn)
    return HD_EINVAL;
  pp_text(&p, id);
  r = read_rows(j, get_sql, &p, "cannot read a delivery", &err, msg, msg_size);
  if (r && PQntuples(r) == 0)
    err = HD_ENOTFOUND;
  if (err == HD_OK && att_fn)
    a = read_rows(j, attempts_sql, &p, "cannot read attempts", &err, msg,
                  msg_size);
  if (err == HD_OK)
    err = pg_rows_each(r, row_fn, ud);
  for (int i = 0; a && err == HD_OK && i < PQntuples(a); i++) {
    hd_attempt_row at = {
        .delivery_id = pg_str(a, i, 0),
        .number = (int)pg_i64(a, i, 1),
        .manual = (int)pg_i64(a, i, 2),
        .started_ms = pg_i64(a, i, 3),
        .duration_ms = pg_i64(a, i, 4),
        .http_status = (int)pg_i64(a, i, 5),
        .error = pg_str(a, i, 6),
        .response_head = (const unsigned char *)PQgetvalue(a, i, 7),
        .response_head_len = (size_t)PQgetlength(a, i, 7),
    };
    err = att_fn(&at, ud);
  }
  PQclear(r);
  PQclear(a);
  return err;
}
