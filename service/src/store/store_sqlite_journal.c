/*
 * store_sqlite_journal.c - the outbox's journal (outbox/journal.h) on the
 * SQLite store's connection: schema 3's deliveries, attempts and endpoints
 * tables (store_sqlite_internal.h). Made by the open, freed by the close.
 * This file makes and frees it and does the writes (commit, prune); the
 * reads (load_pending, load_endpoints, list, get) are in
 * store_sqlite_journal_read.c, what the two share in
 * store_sqlite_journal.h.
 *
 * Writes: a commit is one transaction (BEGIN IMMEDIATE ... COMMIT) under
 * the store's lock, so no put or del of a registration lands inside it;
 * with WAL and synchronous=FULL it is on disk when commit returns. Any
 * failure rolls the whole batch back. Prune is one transaction too.
 * Updates of an unknown delivery are ignored (it was pruned), and so are
 * attempts of one; an attempt written again (same delivery and number)
 * replaces the row, as an endpoint row replaces its (handler_id, route).
 *
 * Read-only store: commit and prune refuse with a message; reads work.
 */
#include "store_sqlite_journal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- statements ---------------------------------------------------------- */

static const char insert_sql[] =
    "INSERT INTO deliveries (id, event_id, key, handler_id, route,"
    " event_name, ordering_key, last_error, created_ms, next_ms, updated_ms,"
    " state, attempts, last_status, body, headers)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
    " ?15, ?16)";
static const char update_sql[] =
    "UPDATE deliveries SET state = ?2, attempts = ?3, next_ms = ?4,"
    " updated_ms = ?5, last_status = ?6, last_error = ?7 WHERE id = ?1";
static const char attempt_sql[] =
    "INSERT INTO attempts (delivery_id, number, manual, started_ms,"
    " duration_ms, http_status, error, response_head)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8"
    " WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?1)"
    " ON CONFLICT (delivery_id, number) DO UPDATE SET"
    " manual = excluded.manual, started_ms = excluded.started_ms,"
    " duration_ms = excluded.duration_ms, http_status = excluded.http_status,"
    " error = excluded.error, response_head = excluded.response_head";
static const char endpoint_sql[] =
    "INSERT INTO endpoints (handler_id, route, failures, first_failure_ms,"
    " disabled_ms) VALUES (?1, ?2, ?3, ?4, ?5)"
    " ON CONFLICT (handler_id, route) DO UPDATE SET"
    " failures = excluded.failures,"
    " first_failure_ms = excluded.first_failure_ms,"
    " disabled_ms = excluded.disabled_ms";
/* Both say `state IN (3, 5)` as deliveries_finished does, so SQLite uses
 * that index. */
static const char prune_attempts_sql[] =
    "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
    " WHERE state IN (3, 5) AND updated_ms < ?1)";
static const char prune_sql[] =
    "DELETE FROM deliveries WHERE state IN (3, 5) AND updated_ms < ?1";

/* What only a writable store prepares (the reads' are
 * hd_sqj_read_stmts). */
static const jr_stmt write_stmts[] = {
    JR_STMT(begin, "BEGIN IMMEDIATE"),
    JR_STMT(commit, "COMMIT"),
    JR_STMT(rollback, "ROLLBACK"),
    JR_STMT(insert, insert_sql),
    JR_STMT(update, update_sql),
    JR_STMT(attempt, attempt_sql),
    JR_STMT(endpoint, endpoint_sql),
    JR_STMT(prune_attempts, prune_attempts_sql),
    JR_STMT(prune, prune_sql),
};

static sqlite3_stmt **stmt_at(sq_journal *j, const jr_stmt *d) {
  return (sqlite3_stmt **)((char *)j + d->offset);
}

static hd_err prepare_all(sq_journal *j, const jr_stmt *d, size_t n, char *msg,
                          size_t msg_size) {
  for (size_t i = 0; i < n; i++) {
    int rc =
        sqlite3_prepare_v3(j->s->db, d[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                           stmt_at(j, &d[i]), NULL);
    if (rc != SQLITE_OK) {
      hd_sq_db_msg(j->s, rc, "cannot prepare the journal's statements", msg,
                   msg_size);
      return hd_sq_rc_err(rc);
    }
  }
  return HD_OK;
}

static void finalize_all(sq_journal *j, const jr_stmt *d, size_t n) {
  for (size_t i = 0; i < n; i++) {
    sqlite3_finalize(*stmt_at(j, &d[i]));
    *stmt_at(j, &d[i]) = NULL;
  }
}

/* Steps `st` (a statement that returns no rows) once and resets it. On
 * failure fills `msg` with what SQLite said, before anything else uses
 * the connection. Holds the lock. */
static int run(sq_journal *j, sqlite3_stmt *st, char *msg, size_t msg_size) {
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW)
    rc = SQLITE_OK;
  else
    hd_sq_db_msg(j->s, rc, NULL, msg, msg_size);
  sqlite3_reset(st);
  /* Drop the caller's pointers: they are borrowed for the call only. */
  sqlite3_clear_bindings(st);
  return rc;
}

/* ---- binding ------------------------------------------------------------- */

/* "" for a NULL optional string: every string stored is non-NULL. */
static const char *or_empty(const char *s) {
  return s ? s : "";
}

static int bind_text(sqlite3_stmt *st, int i, const char *s, int rc) {
  return rc == SQLITE_OK
             ? sqlite3_bind_text(st, i, or_empty(s), -1, SQLITE_STATIC)
             : rc;
}

/* An empty blob is still a (non-NULL) blob: the column is NOT NULL. */
static int bind_bytes(sqlite3_stmt *st, int i, const unsigned char *p, size_t n,
                      int rc) {
  if (rc != SQLITE_OK)
    return rc;
  return n ? sqlite3_bind_blob64(st, i, p, n, SQLITE_STATIC)
           : sqlite3_bind_zeroblob(st, i, 0);
}

/* ---- commit -------------------------------------------------------------- */

static int valid_state(int state) {
  return state >= HD_DELIVERY_PENDING && state <= HD_DELIVERY_DEAD;
}

/* An id field that is a NUL-terminated, non-empty string. */
static int valid_id(const char id[HD_DELIVERY_ID_LEN + 1]) {
  return id[0] && memchr(id, '\0', HD_DELIVERY_ID_LEN + 1);
}

static hd_err bad_row(sq_journal *j, const char *what, size_t i,
                      const char *why, char *msg, size_t msg_size) {
  hd_sq_set_msg(msg, msg_size, "%s: %s %zu of the batch: %s", j->s->path, what,
                i, why);
  return HD_EINVAL;
}

/* What SQLite cannot check: the strings that must be there, the states,
 * the sizes. Before the transaction, so a bad row costs nothing. */
static hd_err check_batch(sq_journal *j, const hd_journal_batch *b, char *msg,
                          size_t msg_size) {
  for (size_t i = 0; i < b->n_inserts; i++) {
    const hd_delivery_row *r = &b->inserts[i];
    if (!valid_id(r->id) || !memchr(r->event_id, '\0', sizeof(r->event_id)))
      return bad_row(j, "delivery", i, "no id", msg, msg_size);
    if (!r->key || !r->handler_id || !r->event_name)
      return bad_row(j, "delivery", i, "no key, handler id or event name", msg,
                     msg_size);
    if (!r->body && r->body_len)
      return bad_row(j, "delivery", i, "no body", msg, msg_size);
    if (!valid_state(r->state))
      return bad_row(j, "delivery", i, "no such state", msg, msg_size);
  }
  for (size_t i = 0; i < b->n_updates; i++) {
    if (!b->updates[i].id)
      return bad_row(j, "update", i, "no id", msg, msg_size);
    if (!valid_state(b->updates[i].state))
      return bad_row(j, "update", i, "no such state", msg, msg_size);
  }
  for (size_t i = 0; i < b->n_attempts; i++) {
    const hd_attempt_row *a = &b->attempts[i];
    if (!a->delivery_id || a->number < 1)
      return bad_row(j, "attempt", i, "no delivery id or number", msg,
                     msg_size);
    if (a->response_head_len > HD_RESPONSE_HEAD_MAX ||
        (!a->response_head && a->response_head_len))
      return bad_row(j, "attempt", i, "a bad response head", msg, msg_size);
  }
  for (size_t i = 0; i < b->n_endpoints; i++)
    if (!b->endpoints[i].handler_id)
      return bad_row(j, "endpoint", i, "no handler id", msg, msg_size);
  return HD_OK;
}

/* Inserts every new delivery and sets its seq. Holds the lock, inside the
 * transaction. */
static int write_inserts(sq_journal *j, hd_journal_batch *b, char *msg,
                         size_t msg_size) {
  sqlite3_stmt *st = j->insert;
  int rc = SQLITE_OK;

  for (size_t i = 0; rc == SQLITE_OK && i < b->n_inserts; i++) {
    hd_delivery_row *r = &b->inserts[i];
    rc = bind_text(st, 1, r->id, rc);
    rc = bind_text(st, 2, r->event_id, rc);
    rc = bind_text(st, 3, r->key, rc);
    rc = bind_text(st, 4, r->handler_id, rc);
    rc = bind_text(st, 5, r->route, rc);
    rc = bind_text(st, 6, r->event_name, rc);
    rc = bind_text(st, 7, r->ordering_key, rc);
    rc = bind_text(st, 8, r->last_error, rc);
    rc = bind_i64(st, 9, r->created_ms, rc);
    rc = bind_i64(st, 10, r->next_ms, rc);
    rc = bind_i64(st, 11, r->updated_ms, rc);
    rc = bind_i64(st, 12, r->state, rc);
    rc = bind_i64(st, 13, r->attempts, rc);
    rc = bind_i64(st, 14, r->last_status, rc);
    rc = bind_bytes(st, 15, r->body, r->body_len, rc);
    rc = bind_text(st, 16, r->headers, rc);
    if (rc != SQLITE_OK) {
      hd_sq_db_msg(j->s, rc, NULL, msg, msg_size);
      sqlite3_clear_bindings(st);
      return rc;
    }
    rc = run(j, st, msg, msg_size);
    if (rc == SQLITE_OK)
      r->seq = sqlite3_last_insert_rowid(j->s->db);
  }
  return rc;
}

/* Binds with `bind` and runs `st` for each of n rows. */
static int write_rows(sq_journal *j, sqlite3_stmt *st, const void *rows,
                      size_t size, size_t n,
                      int (*bind)(sqlite3_stmt *st, const void *row), char *msg,
                      size_t msg_size) {
  int rc = SQLITE_OK;
  for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
    rc = bind(st, (const char *)rows + i * size);
    if (rc != SQLITE_OK) {
      hd_sq_db_msg(j->s, rc, NULL, msg, msg_size);
      sqlite3_clear_bindings(st);
      return rc;
    }
    rc = run(j, st, msg, msg_size);
  }
  return rc;
}

static int bind_update(sqlite3_stmt *st, const void *row) {
  const hd_delivery_update *u = row;
  int rc = bind_text(st, 1, u->id, SQLITE_OK);
  rc = bind_i64(st, 2, u->state, rc);
  rc = bind_i64(st, 3, u->attempts, rc);
  rc = bind_i64(st, 4, u->next_ms, rc);
  rc = bind_i64(st, 5, u->updated_ms, rc);
  rc = bind_i64(st, 6, u->last_status, rc);
  return bind_text(st, 7, u->last_error, rc);
}

static int bind_attempt(sqlite3_stmt *st, const void *row) {
  const hd_attempt_row *a = row;
  int rc = bind_text(st, 1, a->delivery_id, SQLITE_OK);
  rc = bind_i64(st, 2, a->number, rc);
  rc = bind_i64(st, 3, a->manual ? 1 : 0, rc);
  rc = bind_i64(st, 4, a->started_ms, rc);
  rc = bind_i64(st, 5, a->duration_ms, rc);
  rc = bind_i64(st, 6, a->http_status, rc);
  rc = bind_text(st, 7, a->error, rc);
  return bind_bytes(st, 8, a->response_head, a->response_head_len, rc);
}

static int bind_endpoint(sqlite3_stmt *st, const void *row) {
  const hd_endpoint_row *e = row;
  int rc = bind_text(st, 1, e->handler_id, SQLITE_OK);
  rc = bind_text(st, 2, e->route, rc);
  rc = bind_i64(st, 3, e->failures, rc);
  rc = bind_i64(st, 4, e->first_failure_ms, rc);
  return bind_i64(st, 5, e->disabled_ms, rc);
}

/* ROLLBACK when a transaction is still open: SQLite may already have
 * rolled back (a failed COMMIT on a full disk). */
static void roll_back(sq_journal *j) {
  if (!sqlite3_get_autocommit(j->s->db))
    run(j, j->rollback, NULL, 0);
}

/* The batch inside BEGIN IMMEDIATE ... COMMIT. Holds the lock. */
static int write_batch(sq_journal *j, hd_journal_batch *b, char *msg,
                       size_t msg_size) {
  int rc = run(j, j->begin, msg, msg_size);
  if (rc == SQLITE_OK)
    rc = write_inserts(j, b, msg, msg_size);
  if (rc == SQLITE_OK)
    rc = write_rows(j, j->update, b->updates, sizeof(*b->updates), b->n_updates,
                    bind_update, msg, msg_size);
  if (rc == SQLITE_OK)
    rc = write_rows(j, j->attempt, b->attempts, sizeof(*b->attempts),
                    b->n_attempts, bind_attempt, msg, msg_size);
  if (rc == SQLITE_OK)
    rc = write_rows(j, j->endpoint, b->endpoints, sizeof(*b->endpoints),
                    b->n_endpoints, bind_endpoint, msg, msg_size);
  if (rc == SQLITE_OK)
    rc = run(j, j->commit, msg, msg_size);
  if (rc != SQLITE_OK)
    roll_back(j);
  return rc;
}

static hd_err jr_commit(hd_journal *hj, hd_journal_batch *b, char *msg,
                        size_t msg_size) {
  sq_journal *j = hj ? hj->impl : NULL;

  clear_msg(msg, msg_size);
  if (!j || !b || (b->n_inserts && !b->inserts) ||
      (b->n_updates && !b->updates) || (b->n_attempts && !b->attempts) ||
      (b->n_endpoints && !b->endpoints))
    return HD_EINVAL;
  if (j->s->read_only)
    return hd_sq_refuse_read_only(j->s, "deliveries cannot be saved", msg,
                                  msg_size);
  hd_err err = check_batch(j, b, msg, msg_size);
  if (err != HD_OK)
    return err;
  pthread_mutex_lock(&j->s->lock);
  int rc = write_batch(j, b, msg, msg_size);
  pthread_mutex_unlock(&j->s->lock);
  if (rc == SQLITE_OK)
    return HD_OK;
  /* Nothing of the batch is there: neither are its seqs. */
  for (size_t i = 0; i < b->n_inserts; i++)
    b->inserts[i].seq = 0;
  return hd_sq_rc_err(rc);
}

/* ---- prune --------------------------------------------------------------- */

/* Attempts first (they are found through their deliveries), then the
 * deliveries, in one transaction. Holds the lock. */
static int prune_locked(sq_journal *j, int64_t before_ms, size_t *n, char *msg,
                        size_t msg_size) {
  int rc = run(j, j->begin, msg, msg_size);
  rc = bind_i64(j->prune_attempts, 1, before_ms, rc);
  if (rc == SQLITE_OK)
    rc = run(j, j->prune_attempts, msg, msg_size);
  rc = bind_i64(j->prune, 1, before_ms, rc);
  if (rc == SQLITE_OK && (rc = run(j, j->prune, msg, msg_size)) == SQLITE_OK)
    *n = (size_t)sqlite3_changes(j->s->db);
  if (rc == SQLITE_OK)
    rc = run(j, j->commit, msg, msg_size);
  if (rc != SQLITE_OK) {
    *n = 0;
    roll_back(j);
  }
  return rc;
}

static hd_err jr_prune(hd_journal *hj, int64_t before_ms, size_t *pruned,
                       char *msg, size_t msg_size) {
  sq_journal *j = hj ? hj->impl : NULL;
  size_t n = 0;

  clear_msg(msg, msg_size);
  if (pruned)
    *pruned = 0;
  if (!j)
    return HD_EINVAL;
  if (j->s->read_only)
    return hd_sq_refuse_read_only(j->s, "deliveries cannot be pruned", msg,
                                  msg_size);
  pthread_mutex_lock(&j->s->lock);
  int rc = prune_locked(j, before_ms, &n, msg, msg_size);
  pthread_mutex_unlock(&j->s->lock);
  if (rc != SQLITE_OK)
    return hd_sq_rc_err(rc);
  if (pruned)
    *pruned = n;
  return HD_OK;
}

/* ---- making and freeing -------------------------------------------------- */

static const hd_journal_vtable jr_vtable = {
    .commit = jr_commit,
    .load_pending = hd_sqj_load_pending,
    .load_endpoints = hd_sqj_load_endpoints,
    .list = hd_sqj_list,
    .get = hd_sqj_get,
    .prune = jr_prune,
};

void hd_sq_journal_free(hd_journal *hj) {
  if (!hj)
    return;
  sq_journal *j = hj->impl;
  finalize_all(j, hd_sqj_read_stmts, hd_sqj_n_read_stmts);
  finalize_all(j, write_stmts, JR_N(write_stmts));
  free(j);
}

hd_err hd_sq_journal_new(sq_store *s, char *msg, size_t msg_size) {
  sq_journal *j = calloc(1, sizeof(*j));
  if (!j) {
    hd_sq_set_msg(msg, msg_size, "%s: out of memory", s->path);
    return HD_ENOMEM;
  }
  j->base.impl = j;
  j->base.vt = &jr_vtable;
  j->s = s;
  /* Set first: the store's close frees it also when a prepare fails. */
  s->base.journal = &j->base;
  hd_err err =
      prepare_all(j, hd_sqj_read_stmts, hd_sqj_n_read_stmts, msg, msg_size);
  if (err == HD_OK && !s->read_only)
    err = prepare_all(j, write_stmts, JR_N(write_stmts), msg, msg_size);
  return err;
}
