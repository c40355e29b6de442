/*
 * store_pg_journal.c - the outbox's journal (journal.h) in PostgreSQL,
 * shared by every replica on the database: the writes (commit, prune) and
 * the leases (claim, renew, reap, release). Reads are
 * store_pg_journal_read.c's.
 *
 * A commit is one transaction; with synchronous_commit on (PostgreSQL's
 * default, not changed here) it is durable when COMMIT returns, and only
 * then does the outbox acknowledge. A claim commits before the caller makes
 * any HTTP call: no transaction stays open over the network. Leases are
 * Unix ms, compared with the claiming replica's clock: replicas need
 * clocks in step to well under a lease (NTP does that).
 */
#include "store_pg_journal.h"

#include "errmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char insert_sql[] =
    "INSERT INTO handlerd_deliveries (id, event_id, key, handler_id, route,"
    " event_name, ordering_key, body, headers, created_ms, next_ms,"
    " updated_ms, state, attempts, last_status, last_error, ordered,"
    " lease_owner, lease_until, max_inflight, max_rps) VALUES ($1, $2, $3,"
    " $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,"
    " $19, $20, $21) RETURNING seq";
static const char update_sql[] =
    "UPDATE handlerd_deliveries SET state = $2, attempts = $3, next_ms = $4,"
    " updated_ms = $5, last_status = $6, last_error = $7,"
    " lease_owner = NULL, lease_until = NULL WHERE id = $1";
static const char attempt_sql[] =
    "INSERT INTO handlerd_attempts (delivery_id, number, manual, started_ms,"
    " duration_ms, http_status, error, response_head)"
    " SELECT $1, $2, $3, $4, $5, $6, $7, $8"
    " WHERE EXISTS (SELECT 1 FROM handlerd_deliveries WHERE id = $1)"
    " ON CONFLICT (delivery_id, number) DO UPDATE SET"
    " manual = excluded.manual, started_ms = excluded.started_ms,"
    " duration_ms = excluded.duration_ms, http_status = excluded.http_status,"
    " error = excluded.error, response_head = excluded.response_head";
static const char endpoint_sql[] =
    "INSERT INTO handlerd_endpoints (handler_id, route, failures,"
    " first_failure_ms, disabled_ms) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (handler_id, route) DO UPDATE SET"
    " failures = excluded.failures,"
    " first_failure_ms = excluded.first_failure_ms,"
    " disabled_ms = excluded.disabled_ms";
static const char prune_sql[] =
    "WITH gone AS (DELETE FROM handlerd_deliveries"
    " WHERE state IN (3, 5) AND updated_ms < $1 RETURNING id),"
    " att AS (DELETE FROM handlerd_attempts"
    " WHERE delivery_id IN (SELECT id FROM gone))"
    " SELECT count(*) FROM gone";
/* Oldest due first; an ordered one only at the head of its key. */
static const char claim_sql[] =
    "WITH due AS (SELECT d.seq FROM handlerd_deliveries d"
    " WHERE d.state IN (1, 2, 4) AND d.next_ms <= $1"
    " AND (d.lease_until IS NULL OR d.lease_until < $1)"
    " AND d.max_inflight = 0 AND d.max_rps = 0"
    " AND (NOT d.ordered OR NOT EXISTS (SELECT 1 FROM handlerd_deliveries e"
    " WHERE e.handler_id = d.handler_id AND e.route = d.route"
    " AND e.ordering_key = d.ordering_key AND e.seq < d.seq"
    " AND e.state IN (1, 2, 4)))"
    " ORDER BY d.next_ms LIMIT $2 FOR UPDATE OF d SKIP LOCKED)"
    " UPDATE handlerd_deliveries d SET lease_owner = $3, lease_until = $4,"
    " state = CASE WHEN d.state = 2 THEN 1 ELSE d.state END"
    " FROM due WHERE d.seq = due.seq RETURNING d.seq, d.id, d.event_id,"
    " d.key, d.handler_id, d.route, d.event_name, d.ordering_key, d.body,"
    " d.headers, d.created_ms, d.next_ms, d.updated_ms, d.state, d.attempts,"
    " d.last_status, d.last_error, d.ordered, d.max_inflight, d.max_rps";
static const char renew_sql[] =
    "UPDATE handlerd_deliveries SET lease_until = $2"
    " WHERE lease_owner = $1 AND state IN (1, 2, 4)";
static const char reap_sql[] =
    "UPDATE handlerd_deliveries SET lease_owner = NULL, lease_until = NULL,"
    " state = CASE WHEN state = 2 THEN 1 ELSE state END"
    " WHERE lease_until < $1 AND state IN (1, 2, 4)";
static const char orphans_sql[] =
    "UPDATE handlerd_deliveries d SET state = 5, next_ms = 0,"
    " updated_ms = $1, last_error = 'the handler is no longer registered',"
    " lease_owner = NULL, lease_until = NULL"
    " WHERE d.state IN (1, 2, 4)"
    " AND (d.lease_until IS NULL OR d.lease_until < $1)"
    " AND NOT EXISTS (SELECT 1 FROM handlerd_registrations r"
    " WHERE r.id = d.handler_id)";
static const char release_sql[] =
    "UPDATE handlerd_deliveries SET lease_owner = NULL, lease_until = NULL"
    " WHERE lease_owner = $1 AND ($2::text IS NULL OR id = $2)"
    " AND state IN (1, 2, 4)";

/* The write link's prepared statements (pg_run_stmt). */
enum { S_INSERT, S_UPDATE, S_ATTEMPT, S_ENDPOINT, S_CLAIM, S_RENEW };

static hd_err exec_stmt(pg_journal *j, int slot, const char *sql,
                        const pg_params *p, const char *what, char *msg,
                        size_t msg_size) {
  hd_err err;
  PQclear(pg_run_stmt(&j->write, slot, sql, p, what, &err, msg, msg_size));
  return err;
}

static void take_seq(const PGresult *r, void *ud) {
  hd_delivery_row *row = ud;
  if (PQntuples(r) == 1)
    row->seq = pg_i64(r, 0, 0);
}

/* A commit's statements go out in one pipeline: one round trip per
 * PG_PIPE_MAX statements, not one each. */
static hd_err insert_row(pg_journal *j, pg_pipe *pipe, hd_delivery_row *row) {
  pg_params p = {0};

  pp_text(&p, row->id);
  pp_text(&p, row->event_id);
  pp_text(&p, row->key);
  pp_text(&p, row->handler_id);
  pp_text(&p, row->route);
  pp_text(&p, row->event_name);
  pp_text(&p, row->ordering_key);
  pp_bin(&p, row->body, row->body_len);
  pp_text(&p, row->headers);
  pp_i64(&p, row->created_ms);
  pp_i64(&p, row->next_ms);
  pp_i64(&p, row->updated_ms);
  pp_i64(&p, row->state);
  pp_i64(&p, row->attempts);
  pp_i64(&p, row->last_status);
  pp_text(&p, row->last_error);
  pp_text(&p, row->ordered ? "t" : "f");
  pp_text(&p, row->leased ? j->db->replica : NULL);
  if (row->leased)
    pp_i64(&p, row->created_ms + j->db->lease_ms);
  else
    pp_text(&p, NULL);
  pp_i64(&p, row->max_inflight);
  pp_f64(&p, row->max_rps);
  return pg_pipe_stmt(pipe, S_INSERT, insert_sql, &p,
                      "cannot journal a delivery", take_seq, row);
}

static hd_err update_row(pg_pipe *pipe, const hd_delivery_update *u) {
  pg_params p = {0};
  pp_text(&p, u->id);
  pp_i64(&p, u->state);
  pp_i64(&p, u->attempts);
  pp_i64(&p, u->next_ms);
  pp_i64(&p, u->updated_ms);
  pp_i64(&p, u->last_status);
  pp_text(&p, u->last_error ? u->last_error : "");
  return pg_pipe_stmt(pipe, S_UPDATE, update_sql, &p,
                      "cannot journal a delivery", NULL, NULL);
}

static hd_err attempt_row(pg_pipe *pipe, const hd_attempt_row *a) {
  pg_params p = {0};
  pp_text(&p, a->delivery_id);
  pp_i64(&p, a->number);
  pp_i64(&p, a->manual);
  pp_i64(&p, a->started_ms);
  pp_i64(&p, a->duration_ms);
  pp_i64(&p, a->http_status);
  pp_text(&p, a->error ? a->error : "");
  pp_bin(&p, a->response_head, a->response_head_len);
  return pg_pipe_stmt(pipe, S_ATTEMPT, attempt_sql, &p,
                      "cannot journal an attempt", NULL, NULL);
}

static hd_err endpoint_row(pg_pipe *pipe, const hd_endpoint_row *e) {
  pg_params p = {0};
  pp_text(&p, e->handler_id);
  pp_text(&p, e->route);
  pp_i64(&p, e->failures);
  pp_i64(&p, e->first_failure_ms);
  pp_i64(&p, e->disabled_ms);
  return pg_pipe_stmt(pipe, S_ENDPOINT, endpoint_sql, &p,
                      "cannot journal a webhook's health", NULL, NULL);
}

static hd_err pgj_commit(hd_journal *hj, hd_journal_batch *b, char *msg,
                         size_t msg_size) {
  pg_journal *j = hj->impl;
  hd_err err;

  pg_pipe pipe;

  pthread_mutex_lock(&j->write.lock);
  err = pg_pipe_open(&pipe, &j->write, msg, msg_size);
  if (err == HD_OK)
    err = pg_pipe_exec(&pipe, "BEGIN", "cannot begin");
  for (size_t i = 0; err == HD_OK && i < b->n_inserts; i++)
    err = insert_row(j, &pipe, &b->inserts[i]);
  for (size_t i = 0; err == HD_OK && i < b->n_updates; i++)
    err = update_row(&pipe, &b->updates[i]);
  for (size_t i = 0; err == HD_OK && i < b->n_attempts; i++)
    err = attempt_row(&pipe, &b->attempts[i]);
  for (size_t i = 0; err == HD_OK && i < b->n_endpoints; i++)
    err = endpoint_row(&pipe, &b->endpoints[i]);
  if (err == HD_OK)
    err = pg_pipe_exec(&pipe, "COMMIT", "cannot commit");
  /* Durable only once COMMIT's answer is read (close syncs and reads). */
  hd_err closed = pg_pipe_close(&pipe);
  if (err == HD_OK)
    err = closed;
  if (err != HD_OK)
    pg_rollback(&j->write);
  pthread_mutex_unlock(&j->write.lock);
  /* A duplicate id is the caller's bug, not a full disk: say I/O. */
  return err == HD_EEXIST ? HD_EIO : err;
}

static hd_err pgj_prune(hd_journal *hj, int64_t before_ms, size_t *pruned,
                        char *msg, size_t msg_size) {
  pg_journal *j = hj->impl;
  pg_params p = {0};
  hd_err err;
  PGresult *r;

  pp_i64(&p, before_ms);
  pthread_mutex_lock(&j->write.lock);
  r = pg_run(&j->write, prune_sql, &p, "cannot prune deliveries", &err, msg,
             msg_size);
  pthread_mutex_unlock(&j->write.lock);
  if (pruned)
    *pruned = r ? (size_t)pg_i64(r, 0, 0) : 0;
  PQclear(r);
  return err;
}

static hd_err pgj_claim(hd_journal *hj, int64_t now_ms, size_t limit,
                        hd_delivery_row_fn *fn, void *ud, char *msg,
                        size_t msg_size) {
  pg_journal *j = hj->impl;
  pg_params p = {0};
  size_t limited = 0;
  hd_err err;
  PGresult *r;

  /* Rate-limited webhooks first: their claim holds the limits' lock. */
  err = pg_claim_limited(j, now_ms, limit, fn, ud, &limited, msg, msg_size);
  if (err != HD_OK || limited >= limit)
    return err;
  pp_i64(&p, now_ms);
  pp_i64(&p, (int64_t)(limit - limited));
  pp_text(&p, j->db->replica);
  pp_i64(&p, now_ms + j->db->lease_ms);
  pthread_mutex_lock(&j->write.lock);
  r = pg_run_stmt(&j->write, S_CLAIM, claim_sql, &p, "cannot claim deliveries",
                  &err, msg, msg_size);
  pthread_mutex_unlock(&j->write.lock);
  if (r)
    err = pg_rows_each(r, fn, ud);
  PQclear(r);
  return err;
}

static hd_err pgj_renew(hd_journal *hj, int64_t now_ms, char *msg,
                        size_t msg_size) {
  pg_journal *j = hj->impl;
  pg_params p = {0};
  hd_err err;

  pp_text(&p, j->db->replica);
  pp_i64(&p, now_ms + j->db->lease_ms);
  pthread_mutex_lock(&j->write.lock);
  err = exec_stmt(j, S_RENEW, renew_sql, &p, "cannot renew leases", msg,
                  msg_size);
  pthread_mutex_unlock(&j->write.lock);
  return err;
}

static hd_err pgj_reap(hd_journal *hj, int64_t now_ms, size_t *reaped,
                       char *msg, size_t msg_size) {
  pg_journal *j = hj->impl;
  pg_params p = {0};
  hd_err err;
  PGresult *r;

  pp_i64(&p, now_ms);
  pthread_mutex_lock(&j->write.lock);
  r = pg_run(&j->write, reap_sql, &p, "cannot reap expired leases", &err, msg,
             msg_size);
  if (reaped)
    *reaped = r ? (size_t)strtoull(PQcmdTuples(r), NULL, 10) : 0;
  PQclear(r);
  if (err == HD_OK)
    err =
        pg_exec(&j->write, orphans_sql, &p,
                "cannot end the deliveries of removed handlers", msg, msg_size);
  pthread_mutex_unlock(&j->write.lock);
  return err;
}

static hd_err pgj_release(hd_journal *hj, const char *id, char *msg,
                          size_t msg_size) {
  pg_journal *j = hj->impl;
  pg_params p = {0};
  hd_err err;

  pp_text(&p, j->db->replica);
  pp_text(&p, id);
  pthread_mutex_lock(&j->write.lock);
  err = pg_exec(&j->write, release_sql, &p, "cannot release leases", msg,
                msg_size);
  pthread_mutex_unlock(&j->write.lock);
  return err;
}

static const hd_journal_vtable pgj_vtable = {
    .commit = pgj_commit,
    .load_pending = pg_j_load_pending,
    .load_endpoints = pg_j_load_endpoints,
    .list = pg_j_list,
    .get = pg_j_get,
    .prune = pgj_prune,
    .claim = pgj_claim,
    .renew = pgj_renew,
    .reap = pgj_reap,
    .release = pgj_release,
};

hd_err pg_journal_new(pg_db *db, hd_journal **out) {
  pg_journal *j = calloc(1, sizeof(*j));
  if (!j)
    return HD_ENOMEM;
  j->db = db;
  pg_link_init(&j->write, db, "journal");
  pg_link_init(&j->read, db, "history");
  j->base.impl = j;
  j->base.vt = &pgj_vtable;
  *out = &j->base;
  return HD_OK;
}

void pg_journal_free(hd_journal *hj) {
  pg_journal *j;
  if (!hj)
    return;
  j = hj->impl;
  pg_link_close(&j->write);
  pg_link_close(&j->read);
  free(j);
}
