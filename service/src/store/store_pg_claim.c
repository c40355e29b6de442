/*
 * store_pg_claim.c - claiming deliveries of webhooks with max_inflight or
 * max_rps, so the limits hold across replicas (journal.h: claim).
 *
 * These claims take one advisory transaction lock, so no two replicas both
 * see room under the same limit: while one holds it, the leases it counts
 * (max_inflight: a delivery leased and unfinished is in flight) and the
 * token bucket it takes from (max_rps: handlerd_buckets, refilled at the
 * rate, at most one second's worth) are what the others will see. The
 * claim commits before any HTTP call; claims of webhooks without limits
 * (store_pg_journal.c) never wait for this lock.
 */
#include "store_pg_journal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Due candidates, at most max_inflight minus those leased and at most a
 * full bucket per webhook (so one webhook's backlog cannot crowd the
 * others out of the LIMIT), in due order per webhook. The lease rechecks
 * state and lease: a candidate finished or leased meanwhile (the SELECT
 * takes no row locks; the UPDATE rechecks after waiting for one) is not
 * handed out. */
static const char candidates_sql[] =
    "WITH busy AS (SELECT handler_id, route, count(*) AS n"
    " FROM handlerd_deliveries WHERE state IN (1, 2, 4)"
    " AND lease_until >= $1 AND (max_inflight > 0 OR max_rps > 0)"
    " GROUP BY handler_id, route),"
    " cand AS (SELECT d.seq, d.handler_id, d.route, d.max_inflight,"
    " d.max_rps, row_number() OVER (PARTITION BY d.handler_id, d.route"
    " ORDER BY d.next_ms, d.seq) AS rn FROM handlerd_deliveries d"
    " WHERE d.state IN (1, 2, 4) AND d.next_ms <= $1"
    " AND (d.lease_until IS NULL OR d.lease_until < $1)"
    " AND (d.max_inflight > 0 OR d.max_rps > 0)"
    " AND (NOT d.ordered OR NOT EXISTS (SELECT 1 FROM handlerd_deliveries e"
    " WHERE e.handler_id = d.handler_id AND e.route = d.route"
    " AND e.ordering_key = d.ordering_key AND e.seq < d.seq"
    " AND e.state IN (1, 2, 4))))"
    " SELECT cand.seq, cand.handler_id, cand.route, cand.max_rps FROM cand"
    " LEFT JOIN busy ON busy.handler_id = cand.handler_id"
    " AND busy.route = cand.route"
    " WHERE (cand.max_inflight = 0"
    " OR cand.rn <= cand.max_inflight - coalesce(busy.n, 0))"
    " AND (cand.max_rps = 0 OR cand.rn <= greatest(1, ceil(cand.max_rps)))"
    " ORDER BY cand.handler_id, cand.route, cand.rn LIMIT $2";
/* Whether any limited delivery is due at all: without one, no lock and no
 * transaction (handlerd_deliveries_limited makes it an index probe). */
static const char any_sql[] =
    "SELECT 1 FROM handlerd_deliveries WHERE state IN (1, 2, 4)"
    " AND (max_inflight > 0 OR max_rps > 0) AND next_ms <= $1 LIMIT 1";
static const char bucket_sql[] = "SELECT tokens, at_ms FROM handlerd_buckets"
                                 " WHERE handler_id = $1 AND route = $2";
static const char bucket_put_sql[] =
    "INSERT INTO handlerd_buckets (handler_id, route, tokens, at_ms)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (handler_id, route)"
    " DO UPDATE SET tokens = excluded.tokens, at_ms = excluded.at_ms";
static const char lease_sql[] =
    "UPDATE handlerd_deliveries d SET lease_owner = $1, lease_until = $2,"
    " state = CASE WHEN d.state = 2 THEN 1 ELSE d.state END"
    " WHERE d.seq = ANY($3::bigint[]) AND d.state IN (1, 2, 4)"
    " AND (d.lease_until IS NULL OR d.lease_until < $4)"
    " RETURNING d.seq, d.id, d.event_id,"
    " d.key, d.handler_id, d.route, d.event_name, d.ordering_key, d.body,"
    " d.headers, d.created_ms, d.next_ms, d.updated_ms, d.state, d.attempts,"
    " d.last_status, d.last_error, d.ordered, d.max_inflight, d.max_rps";

/* How many of `want` deliveries the webhook's bucket allows now; takes
 * them from it. -1 on a database failure (msg). */
static long take_tokens(pg_journal *j, const char *handler_id,
                        const char *route, double rps, long want, int64_t now,
                        char *msg, size_t msg_size) {
  double cap = rps < 1 ? 1 : rps, tokens = cap;
  pg_params p = {0};
  hd_err err;
  PGresult *r;
  long take;

  pp_text(&p, handler_id);
  pp_text(&p, route);
  r = pg_run(&j->write, bucket_sql, &p, "cannot read a rate limit", &err, msg,
             msg_size);
  if (!r)
    return -1;
  if (PQntuples(r) == 1) {
    int64_t at = pg_i64(r, 0, 1);
    tokens = pg_f64(r, 0, 0) + (double)(now > at ? now - at : 0) * rps / 1000;
    if (tokens > cap)
      tokens = cap;
  }
  PQclear(r);
  take = (long)floor(tokens);
  if (take > want)
    take = want;
  pp_f64(&p, tokens - (double)take);
  pp_i64(&p, now);
  if (pg_exec(&j->write, bucket_put_sql, &p, "cannot take from a rate limit",
              msg, msg_size) != HD_OK)
    return -1;
  return take;
}

/* The seqs of `r` to lease, as a "{1,2,...}" array literal in *out
 * (malloc'd); how many in *n. HD_ENOMEM, or HD_EIO (msg). */
static hd_err choose(pg_journal *j, const PGresult *r, int64_t now, char **out,
                     size_t *n, char *msg, size_t msg_size) {
  int rows = PQntuples(r);
  size_t cap = 2 + (size_t)rows * 21, len = 0;
  char *seqs = malloc(cap);

  *n = 0;
  if (!seqs)
    return HD_ENOMEM;
  seqs[len++] = '{';
  for (int i = 0; i < rows;) {
    const char *hid = pg_str(r, i, 1), *route = pg_str(r, i, 2);
    double rps = pg_f64(r, i, 3);
    int end = i;
    long take;
    while (end < rows && strcmp(pg_str(r, end, 1), hid) == 0 &&
           strcmp(pg_str(r, end, 2), route) == 0)
      end++;
    take = rps > 0
               ? take_tokens(j, hid, route, rps, end - i, now, msg, msg_size)
               : end - i;
    if (take < 0) {
      free(seqs);
      return HD_EIO;
    }
    for (long k = 0; k < take; k++)
      len += (size_t)snprintf(seqs + len, cap - len, "%s%lld", *n ? "," : "",
                              (long long)pg_i64(r, i + k, 0)),
          (*n)++;
    i = end;
  }
  seqs[len++] = '}';
  seqs[len] = '\0';
  *out = seqs;
  return HD_OK;
}

hd_err pg_claim_limited(pg_journal *j, int64_t now_ms, size_t limit,
                        hd_delivery_row_fn *fn, void *ud, size_t *claimed,
                        char *msg, size_t msg_size) {
  char lock[96], *seqs = NULL;
  pg_params p = {0}, due = {0};
  PGresult *cand = NULL, *got = NULL;
  size_t n = 0;
  hd_err err;

  *claimed = 0;
  snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%lld)",
           (long long)PG_LIMITS_LOCK);
  pp_i64(&p, now_ms);
  pp_i64(&p, (int64_t)limit);
  pp_i64(&due, now_ms);
  pthread_mutex_lock(&j->write.lock);
  cand = pg_run(&j->write, any_sql, &due, "cannot claim deliveries", &err, msg,
                msg_size);
  if (!cand || PQntuples(cand) == 0) {
    pthread_mutex_unlock(&j->write.lock);
    PQclear(cand);
    return err;
  }
  PQclear(cand);
  cand = NULL;
  err = pg_exec(&j->write, "BEGIN", NULL, "cannot begin", msg, msg_size);
  if (err == HD_OK)
    err =
        pg_exec(&j->write, lock, NULL, "cannot lock the limits", msg, msg_size);
  if (err == HD_OK)
    cand = pg_run(&j->write, candidates_sql, &p, "cannot claim deliveries",
                  &err, msg, msg_size);
  if (cand && PQntuples(cand) > 0)
    err = choose(j, cand, now_ms, &seqs, &n, msg, msg_size);
  if (err == HD_OK && n > 0) {
    pg_params q = {0};
    pp_text(&q, j->db->replica);
    pp_i64(&q, now_ms + j->db->lease_ms);
    pp_text(&q, seqs);
    pp_i64(&q, now_ms);
    got = pg_run(&j->write, lease_sql, &q, "cannot claim deliveries", &err, msg,
                 msg_size);
  }
  if (err == HD_OK)
    err = pg_exec(&j->write, "COMMIT", NULL, "cannot commit a claim", msg,
                  msg_size);
  if (err != HD_OK)
    pg_rollback(&j->write);
  pthread_mutex_unlock(&j->write.lock);
  if (err == HD_OK && got) {
    *claimed = (size_t)PQntuples(got);
    err = pg_rows_each(got, fn, ud);
  }
  PQclear(cand);
  PQclear(got);
  free(seqs);
  return err;
}
