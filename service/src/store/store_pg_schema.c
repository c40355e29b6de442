/*
 * store_pg_schema.c - the PostgreSQL schema (store_pg_internal.h), created
 * or migrated in one transaction that first takes an advisory lock: of
 * replicas starting at once on an empty database, one creates the tables
 * and the others find them made. A newer schema is refused.
 */
#include "store_pg_internal.h"

#include "errmsg.h"

#include <stdio.h>

/* Schema 1, from nothing. */
static const char *const schema_1[] = {
    "CREATE SEQUENCE handlerd_change_seq",
    "CREATE TABLE handlerd_registrations ("
    " id text PRIMARY KEY, seq bigserial NOT NULL, key bytea NOT NULL,"
    " record bytea NOT NULL, version bigint NOT NULL,"
    " created_at bigint NOT NULL)",
    "CREATE TABLE handlerd_deliveries ("
    " seq bigserial PRIMARY KEY, id text UNIQUE NOT NULL,"
    " event_id text NOT NULL, key text NOT NULL, handler_id text NOT NULL,"
    " route text NOT NULL, event_name text NOT NULL,"
    " ordering_key text NOT NULL, body bytea NOT NULL, headers text NOT NULL,"
    " created_ms bigint NOT NULL, next_ms bigint NOT NULL,"
    " updated_ms bigint NOT NULL, state int NOT NULL, attempts int NOT NULL,"
    " last_status int NOT NULL, last_error text NOT NULL,"
    " ordered boolean NOT NULL, max_inflight int NOT NULL,"
    " max_rps double precision NOT NULL, lease_owner text,"
    " lease_until bigint)",
    /* The claim's scan: unfinished, by due time. */
    "CREATE INDEX handlerd_deliveries_due ON handlerd_deliveries (next_ms)"
    " WHERE state IN (1, 2, 4)",
    /* An ordered delivery's predecessors in its key. */
    "CREATE INDEX handlerd_deliveries_order ON handlerd_deliveries"
    " (handler_id, route, ordering_key, seq) WHERE state IN (1, 2, 4)",
    /* The limited claim's probe (store_pg_claim.c). */
    "CREATE INDEX handlerd_deliveries_limited ON handlerd_deliveries"
    " (next_ms) WHERE state IN (1, 2, 4)"
    " AND (max_inflight > 0 OR max_rps > 0)",
    "CREATE INDEX handlerd_deliveries_owner ON handlerd_deliveries"
    " (lease_owner) WHERE lease_owner IS NOT NULL",
    "CREATE INDEX handlerd_deliveries_finished ON handlerd_deliveries"
    " (updated_ms) WHERE state IN (3, 5)",
    "CREATE INDEX handlerd_deliveries_key ON handlerd_deliveries (key, seq)",
    "CREATE INDEX handlerd_deliveries_handler ON handlerd_deliveries"
    " (handler_id, seq)",
    "CREATE TABLE handlerd_attempts ("
    " delivery_id text NOT NULL, number int NOT NULL, manual int NOT NULL,"
    " started_ms bigint NOT NULL, duration_ms bigint NOT NULL,"
    " http_status int NOT NULL, error text NOT NULL,"
    " response_head bytea NOT NULL, PRIMARY KEY (delivery_id, number))",
    /* max_rps across replicas: one token bucket per webhook, taken from
     * under the claim's advisory lock. */
    "CREATE TABLE handlerd_buckets ("
    " handler_id text NOT NULL, route text NOT NULL,"
    " tokens double precision NOT NULL, at_ms bigint NOT NULL,"
    " PRIMARY KEY (handler_id, route))",
    "CREATE TABLE handlerd_endpoints ("
    " handler_id text NOT NULL, route text NOT NULL, failures int NOT NULL,"
    " first_failure_ms bigint NOT NULL, disabled_ms bigint NOT NULL,"
    " PRIMARY KEY (handler_id, route))",
    NULL,
};

static hd_err run_all(pg_link *l, const char *const *sql, char *msg,
                      size_t msg_size) {
  hd_err err = HD_OK;
  for (size_t i = 0; err == HD_OK && sql[i]; i++)
    err = pg_exec(l, sql[i], NULL, "cannot create the schema", msg, msg_size);
  return err;
}

hd_err pg_schema_apply(pg_link *l, char *msg, size_t msg_size) {
  char lock[96];
  hd_err err;
  PGresult *r = NULL;
  int64_t version = 0;

  snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%lld)",
           (long long)PG_SCHEMA_LOCK);
  err = pg_exec(l, "BEGIN", NULL, "cannot begin", msg, msg_size);
  if (err == HD_OK)
    err = pg_exec(l, lock, NULL, "cannot lock the schema", msg, msg_size);
  if (err == HD_OK)
    err = pg_exec(l,
                  "CREATE TABLE IF NOT EXISTS handlerd_schema"
                  " (version int NOT NULL)",
                  NULL, "cannot create the schema table", msg, msg_size);
  if (err == HD_OK)
    r = pg_run(l, "SELECT max(version) FROM handlerd_schema", NULL,
               "cannot read the schema version", &err, msg, msg_size);
  if (r) {
    version = pg_i64(r, 0, 0);
    PQclear(r);
  }
  if (err == HD_OK && version > PG_SCHEMA_VERSION)
    err = hd_errmsg(msg, msg_size, HD_EIO,
                    "database %s: schema version %lld is newer than this "
                    "handlerd's (%d): upgrade handlerd",
                    l->db->where, (long long)version, PG_SCHEMA_VERSION);
  if (err == HD_OK && version < 1) {
    err = run_all(l, schema_1, msg, msg_size);
    if (err == HD_OK)
      err = pg_exec(l, "INSERT INTO handlerd_schema VALUES (1)", NULL,
                    "cannot record the schema version", msg, msg_size);
    if (err == HD_OK)
      hd_log(HD_LOG_INFO, "database %s: schema %d created", l->db->where,
             PG_SCHEMA_VERSION);
  }
  if (err == HD_OK)
    err = pg_exec(l, "COMMIT", NULL, "cannot commit the schema", msg, msg_size);
  if (err != HD_OK)
    pg_rollback(l);
  return err;
}
