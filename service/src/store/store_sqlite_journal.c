/*
 * store_sqlite_journal.c - the outbox's journal (outbox/journal.h) on the
 * SQLite store's connection: schema 3's deliveries, attempts and endpoints
 * tables (store_sqlite_internal.h). Made by the open, freed by the close.
 *
 * Writes: a commit is one transaction (BEGIN IMMEDIATE ... COMMIT) under
 * the store's lock, so no put or del of a registration lands inside it;
 * with WAL and synchronous=FULL it is on disk when commit returns. Any
 * failure rolls the whole batch back. Prune is one transaction too.
 * Updates of an unknown delivery are ignored (it was pruned), and so are
 * attempts of one; an attempt written again (same delivery and number)
 * replaces the row, as an endpoint row replaces its (handler_id, route).
 *
 * Reads: rows are copied under the lock a chunk at a time (by seq: the
 * next chunk starts after the last row seen) and handed to the callback
 * without it. So a callback may use the journal or the store, a commit
 * never waits for a callback, and a large backlog is never copied whole;
 * but a walk is not one snapshot: a row changed during it may be seen
 * either way. load_pending runs before anything commits.
 *
 * Read-only store: commit and prune refuse with a message; reads work.
 *
 * Copies handed out are wiped before they are freed, as the registrations'
 * are: bodies and headers are the events' data.
 */
#include "journal.h"
#include "store_sqlite_internal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A walk copies at most this many rows, or about this many bytes, under
 * the lock at once. */
#define JR_CHUNK_ROWS 256
#define JR_CHUNK_BYTES (4u << 20)

typedef struct sq_journal {
  hd_journal base; /* base.impl points back here */
  sq_store *s;     /* its connection and lock */
  sqlite3_stmt *begin, *commit, *rollback;
  sqlite3_stmt *insert, *update, *attempt, *endpoint;
  sqlite3_stmt *prune_attempts, *prune;
  sqlite3_stmt *pending, *list_all, *list_handler, *list_key;
  sqlite3_stmt *get, *get_attempts, *endpoints;
} sq_journal;

/* ---- statements ---------------------------------------------------------- */

/* The columns of a delivery as the reads select them, in this order; list
 * stops before body and headers (ListDeliveries does not show them). */
enum {
  C_SEQ,
  C_ID,
  C_EVENT_ID,
  C_KEY,
  C_HANDLER_ID,
  C_ROUTE,
  C_EVENT_NAME,
  C_ORDERING_KEY,
  C_LAST_ERROR,
  C_CREATED,
  C_NEXT,
  C_UPDATED,
  C_STATE,
  C_ATTEMPTS,
  C_LAST_STATUS,
  C_BODY,
  C_HEADERS,
};

#define JR_LIST_COLS                                                           \
  "seq, id, event_id, key, handler_id, route, event_name, ordering_key,"       \
  " last_error, created_ms, next_ms, updated_ms, state, attempts,"             \
  " last_status"
#define JR_FULL_COLS JR_LIST_COLS ", body, headers"

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
/* `state IN (1, 2, 4)` as deliveries_unfinished says: seq order from that
 * index, no sort. */
static const char pending_sql[] =
    "SELECT " JR_FULL_COLS " FROM deliveries"
    " WHERE state IN (1, 2, 4) AND seq > ?1 ORDER BY seq LIMIT ?2";
/* list's filter: ?1 key, ?2 handler_id (NULL: any), ?3 state, ?4 since,
 * ?5 until (0: any), ?6 seq below, ?7 rows at most. The statement is
 * prepared once, so its plan cannot depend on which are given: one
 * statement per index (handler, key, neither), each led by the equality
 * its index serves, newest first from the index's trailing seq. */
#define JR_LIST_FILTER                                                         \
  " seq < ?6 AND (?1 IS NULL OR key = ?1) AND"                                 \
  " (?2 IS NULL OR handler_id = ?2) AND (?3 = 0 OR state = ?3) AND"            \
  " (?4 = 0 OR created_ms >= ?4) AND (?5 = 0 OR created_ms < ?5)"              \
  " ORDER BY seq DESC LIMIT ?7"
static const char list_all_sql[] =
    "SELECT " JR_LIST_COLS " FROM deliveries WHERE" JR_LIST_FILTER;
static const char list_handler_sql[] =
    "SELECT " JR_LIST_COLS " FROM deliveries WHERE"
    " handler_id = ?2 AND" JR_LIST_FILTER;
static const char list_key_sql[] =
    "SELECT " JR_LIST_COLS " FROM deliveries WHERE"
    " key = ?1 AND" JR_LIST_FILTER;
static const char get_sql[] =
    "SELECT " JR_FULL_COLS " FROM deliveries WHERE id = ?1";
static const char get_attempts_sql[] =
    "SELECT delivery_id, error, response_head, number, manual, started_ms,"
    " duration_ms, http_status FROM attempts WHERE delivery_id = ?1"
    " ORDER BY number";
static const char endpoints_sql[] =
    "SELECT handler_id, route, failures, first_failure_ms, disabled_ms"
    " FROM endpoints ORDER BY handler_id, route";

typedef struct jr_stmt {
  const char *sql;
  size_t offset; /* of the sqlite3_stmt * in sq_journal */
} jr_stmt;

#define JR_STMT(field, sql)                                                    \
  { sql, offsetof(sq_journal, field) }

/* What every store prepares, then what only a writable one does. */
static const jr_stmt read_stmts[] = {
    JR_STMT(pending, pending_sql),
    JR_STMT(list_all, list_all_sql),
    JR_STMT(list_handler, list_handler_sql),
    JR_STMT(list_key, list_key_sql),
    JR_STMT(get, get_sql),
    JR_STMT(get_attempts, get_attempts_sql),
    JR_STMT(endpoints, endpoints_sql),
};
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

#define JR_N(a) (sizeof(a) / sizeof((a)[0]))

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

static int bind_i64(sqlite3_stmt *st, int i, int64_t v, int rc) {
  return rc == SQLITE_OK ? sqlite3_bind_int64(st, i, v) : rc;
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

static void clear_msg(char *msg, size_t msg_size) {
  if (msg && msg_size)
    msg[0] = '\0';
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

/* ---- copying rows out ---------------------------------------------------- */

/* One row copied out of SQLite: the row, then its strings and bytes. */
typedef struct jr_node {
  struct jr_node *next;
  size_t size; /* of buf, for wiping */
  union {
    hd_delivery_row d;
    hd_attempt_row a;
    hd_endpoint_row e;
  } row;
  char buf[];
} jr_node;

typedef struct jr_list {
  jr_node *head, **tail;
  size_t n, bytes;
} jr_list;

static void list_init(jr_list *l) {
  l->head = NULL;
  l->tail = &l->head;
  l->n = l->bytes = 0;
}

static void list_add(jr_list *l, jr_node *node) {
  *l->tail = node;
  l->tail = &node->next;
  l->n++;
  l->bytes += node->size;
}

static void list_free(jr_list *l) {
  jr_node *r = l->head;
  while (r) {
    jr_node *next = r->next;
    explicit_bzero(r->buf, r->size);
    free(r);
    r = next;
  }
  list_init(l);
}

#define JR_MAX_COLS 9

/* The variable-size columns of the current row: read, then copied into
 * one node. */
typedef struct jr_cols {
  size_t n;
  const void *src[JR_MAX_COLS];
  size_t len[JR_MAX_COLS];
  const char *copy[JR_MAX_COLS]; /* in the node, each NUL-terminated */
  size_t total;
} jr_cols;

/* A column that SQLite could not give: out of memory, or a NULL where the
 * schema says NOT NULL (a file changed behind our back). */
static hd_err column_failed(sq_journal *j, const char *what, char *msg,
                            size_t msg_size) {
  if (sqlite3_errcode(j->s->db) == SQLITE_NOMEM) {
    hd_sq_set_msg(msg, msg_size, "%s: out of memory reading the %s", j->s->path,
                  what);
    return HD_ENOMEM;
  }
  hd_sq_set_msg(msg, msg_size, "%s: a row of the %s has a NULL column",
                j->s->path, what);
  return HD_EIO;
}

/* Reads columns cols[0..n) of st's current row: text, or blob where
 * blob_mask has bit i. */
static hd_err read_cols(sq_journal *j, sqlite3_stmt *st, const int *cols,
                        size_t n, unsigned blob_mask, const char *what,
                        jr_cols *c, char *msg, size_t msg_size) {
  c->n = n;
  c->total = 0;
  for (size_t i = 0; i < n; i++) {
    int blob = (blob_mask >> i) & 1;
    /* The pointer first, then its size (SQLite's rule). */
    c->src[i] = blob ? sqlite3_column_blob(st, cols[i])
                     : (const void *)sqlite3_column_text(st, cols[i]);
    c->len[i] = (size_t)sqlite3_column_bytes(st, cols[i]);
    /* An empty blob is a NULL pointer; an empty text is "". */
    if (!c->src[i] && (!blob || c->len[i]))
      return column_failed(j, what, msg, msg_size);
    c->total += c->len[i] + 1;
  }
  return HD_OK;
}

/* A node holding copies of c's columns (c->copy), or NULL. */
static jr_node *copy_cols(jr_cols *c) {
  jr_node *node = malloc(sizeof(*node) + c->total);
  if (!node)
    return NULL;
  memset(node, 0, sizeof(*node));
  node->size = c->total;
  char *p = node->buf;
  for (size_t i = 0; i < c->n; i++) {
    if (c->len[i])
      memcpy(p, c->src[i], c->len[i]);
    p[c->len[i]] = '\0';
    c->copy[i] = p;
    p += c->len[i] + 1;
  }
  return node;
}

static hd_err no_memory(sq_journal *j, const char *what, char *msg,
                        size_t msg_size) {
  hd_sq_set_msg(msg, msg_size, "%s: out of memory reading the %s", j->s->path,
                what);
  return HD_ENOMEM;
}

/* Copies a UUID column into its fixed field. */
static hd_err copy_id(sq_journal *j, sqlite3_stmt *st, int col,
                      char out[HD_DELIVERY_ID_LEN + 1], char *msg,
                      size_t msg_size) {
  const unsigned char *id = sqlite3_column_text(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  if (!id)
    return column_failed(j, "deliveries", msg, msg_size);
  if (n > HD_DELIVERY_ID_LEN) {
    hd_sq_set_msg(msg, msg_size,
                  "%s: a row of the deliveries has an id of %zu bytes",
                  j->s->path, n);
    return HD_EIO;
  }
  memcpy(out, id, n + 1);
  return HD_OK;
}

/* Copies the current delivery row of st (selected as JR_FULL_COLS, or
 * JR_LIST_COLS when !with_body). */
static hd_err copy_delivery(sq_journal *j, sqlite3_stmt *st, int with_body,
                            jr_node **out, char *msg, size_t msg_size) {
  static const int cols[] = {C_KEY,        C_HANDLER_ID,   C_ROUTE,
                             C_EVENT_NAME, C_ORDERING_KEY, C_LAST_ERROR,
                             C_HEADERS,    C_BODY};
  jr_cols c;
  hd_err err = read_cols(j, st, cols, with_body ? 8 : 6, 1u << 7, "deliveries",
                         &c, msg, msg_size);
  if (err != HD_OK)
    return err;
  jr_node *node = copy_cols(&c);
  if (!node)
    return no_memory(j, "deliveries", msg, msg_size);
  hd_delivery_row *r = &node->row.d;
  if ((err = copy_id(j, st, C_ID, r->id, msg, msg_size)) != HD_OK ||
      (err = copy_id(j, st, C_EVENT_ID, r->event_id, msg, msg_size)) != HD_OK) {
    free(node);
    return err;
  }
  r->key = c.copy[0];
  r->handler_id = c.copy[1];
  r->route = c.copy[2];
  r->event_name = c.copy[3];
  r->ordering_key = c.copy[4];
  r->last_error = c.copy[5];
  r->headers = with_body ? c.copy[6] : "";
  r->body = with_body ? (const unsigned char *)c.copy[7] : NULL;
  r->body_len = with_body ? c.len[7] : 0;
  r->seq = sqlite3_column_int64(st, C_SEQ);
  r->created_ms = sqlite3_column_int64(st, C_CREATED);
  r->next_ms = sqlite3_column_int64(st, C_NEXT);
  r->updated_ms = sqlite3_column_int64(st, C_UPDATED);
  r->state = (hd_delivery_state)sqlite3_column_int(st, C_STATE);
  r->attempts = sqlite3_column_int(st, C_ATTEMPTS);
  r->last_status = sqlite3_column_int(st, C_LAST_STATUS);
  *out = node;
  return HD_OK;
}

/* The current row of get_attempts. */
static hd_err copy_attempt(sq_journal *j, sqlite3_stmt *st, jr_node **out,
                           char *msg, size_t msg_size) {
  static const int cols[] = {0, 1, 2};
  jr_cols c;
  hd_err err =
      read_cols(j, st, cols, 3, 1u << 2, "attempts", &c, msg, msg_size);
  if (err != HD_OK)
    return err;
  jr_node *node = copy_cols(&c);
  if (!node)
    return no_memory(j, "attempts", msg, msg_size);
  hd_attempt_row *a = &node->row.a;
  a->delivery_id = c.copy[0];
  a->error = c.copy[1];
  a->response_head = (const unsigned char *)c.copy[2];
  a->response_head_len = c.len[2];
  a->number = sqlite3_column_int(st, 3);
  a->manual = sqlite3_column_int(st, 4);
  a->started_ms = sqlite3_column_int64(st, 5);
  a->duration_ms = sqlite3_column_int64(st, 6);
  a->http_status = sqlite3_column_int(st, 7);
  *out = node;
  return HD_OK;
}

/* The current row of endpoints. */
static hd_err copy_endpoint(sq_journal *j, sqlite3_stmt *st, jr_node **out,
                            char *msg, size_t msg_size) {
  static const int cols[] = {0, 1};
  jr_cols c;
  hd_err err = read_cols(j, st, cols, 2, 0, "endpoints", &c, msg, msg_size);
  if (err != HD_OK)
    return err;
  jr_node *node = copy_cols(&c);
  if (!node)
    return no_memory(j, "endpoints", msg, msg_size);
  hd_endpoint_row *e = &node->row.e;
  e->handler_id = c.copy[0];
  e->route = c.copy[1];
  e->failures = sqlite3_column_int(st, 2);
  e->first_failure_ms = sqlite3_column_int64(st, 3);
  e->disabled_ms = sqlite3_column_int64(st, 4);
  *out = node;
  return HD_OK;
}

typedef hd_err jr_copy_fn(sq_journal *j, sqlite3_stmt *st, jr_node **out,
                          char *msg, size_t msg_size);

/* Steps the bound `st` and copies its rows into `l` with `copy`, stopping
 * early (*more = 1) once the chunk holds JR_CHUNK_BYTES when `chunked`.
 * Resets st. Holds the lock. */
static hd_err fetch(sq_journal *j, sqlite3_stmt *st, jr_copy_fn *copy,
                    int chunked, jr_list *l, int *more, const char *what,
                    char *msg, size_t msg_size) {
  hd_err err = HD_OK;
  int rc;

  *more = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    jr_node *node = NULL;
    if ((err = copy(j, st, &node, msg, msg_size)) != HD_OK)
      break;
    list_add(l, node);
    if (chunked && l->bytes >= JR_CHUNK_BYTES) {
      *more = 1;
      break;
    }
  }
  if (err == HD_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
    char doing[64];
    snprintf(doing, sizeof(doing), "cannot read the %s", what);
    hd_sq_db_msg(j->s, rc, doing, msg, msg_size);
    err = hd_sq_rc_err(rc);
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return err;
}

static hd_err copy_full(sq_journal *j, sqlite3_stmt *st, jr_node **out,
                        char *msg, size_t msg_size) {
  return copy_delivery(j, st, 1, out, msg, msg_size);
}

static hd_err copy_listed(sq_journal *j, sqlite3_stmt *st, jr_node **out,
                          char *msg, size_t msg_size) {
  return copy_delivery(j, st, 0, out, msg, msg_size);
}

/* Calls fn for each delivery of l; the last seq seen in *last. */
static hd_err call_deliveries(const jr_list *l, hd_delivery_row_fn *fn,
                              void *ud, int64_t *last) {
  for (const jr_node *r = l->head; r; r = r->next) {
    hd_err err = fn(&r->row.d, ud);
    *last = r->row.d.seq;
    if (err != HD_OK)
      return err;
  }
  return HD_OK;
}

/* ---- reads --------------------------------------------------------------- */

static hd_err jr_load_pending(hd_journal *hj, hd_delivery_row_fn *fn, void *ud,
                              char *msg, size_t msg_size) {
  sq_journal *j = hj ? hj->impl : NULL;
  int64_t after = 0; /* seq starts at 1 */
  hd_err err = HD_OK;
  int more = 1;

  clear_msg(msg, msg_size);
  if (!j || !fn)
    return HD_EINVAL;
  while (err == HD_OK && more) {
    jr_list l;
    list_init(&l);
    pthread_mutex_lock(&j->s->lock);
    int rc = sqlite3_bind_int64(j->pending, 1, after);
    if (rc == SQLITE_OK)
      rc = sqlite3_bind_int64(j->pending, 2, JR_CHUNK_ROWS);
    if (rc == SQLITE_OK)
      err = fetch(j, j->pending, copy_full, 1, &l, &more, "deliveries", msg,
                  msg_size);
    else
      err = no_memory(j, "deliveries", msg, msg_size);
    pthread_mutex_unlock(&j->s->lock);
    more = more || l.n == JR_CHUNK_ROWS;
    if (err == HD_OK)
      err = call_deliveries(&l, fn, ud, &after);
    list_free(&l);
  }
  return err;
}

static hd_err jr_load_endpoints(hd_journal *hj, hd_endpoint_row_fn *fn,
                                void *ud, char *msg, size_t msg_size) {
  sq_journal *j = hj ? hj->impl : NULL;
  jr_list l;
  int more;

  clear_msg(msg, msg_size);
  if (!j || !fn)
    return HD_EINVAL;
  list_init(&l);
  /* One row per async webhook: all at once. */
  pthread_mutex_lock(&j->s->lock);
  hd_err err = fetch(j, j->endpoints, copy_endpoint, 0, &l, &more, "endpoints",
                     msg, msg_size);
  pthread_mutex_unlock(&j->s->lock);
  for (const jr_node *r = l.head; err == HD_OK && r; r = r->next)
    err = fn(&r->row.e, ud);
  list_free(&l);
  return err;
}

static int given(const char *s) {
  return s && *s;
}

/* Binds list's filter for rows below `before` (0: any), `rows` at most,
 * on the statement chosen for f. */
static sqlite3_stmt *bind_filter(sq_journal *j, const hd_delivery_filter *f,
                                 int64_t before, size_t rows, int *rc) {
  sqlite3_stmt *st = given(f->handler_id) ? j->list_handler
                     : given(f->key)      ? j->list_key
                                          : j->list_all;
  *rc = given(f->key) ? sqlite3_bind_text(st, 1, f->key, -1, SQLITE_STATIC)
                      : sqlite3_bind_null(st, 1);
  if (*rc == SQLITE_OK)
    *rc = given(f->handler_id)
              ? sqlite3_bind_text(st, 2, f->handler_id, -1, SQLITE_STATIC)
              : sqlite3_bind_null(st, 2);
  *rc = bind_i64(st, 3, f->state, *rc);
  *rc = bind_i64(st, 4, f->since_ms, *rc);
  *rc = bind_i64(st, 5, f->until_ms, *rc);
  *rc = bind_i64(st, 6, before > 0 ? before : INT64_MAX, *rc);
  *rc = bind_i64(st, 7, (int64_t)rows, *rc);
  return st;
}

static hd_err jr_list_rows(hd_journal *hj, const hd_delivery_filter *f,
                           hd_delivery_row_fn *fn, void *ud, char *msg,
                           size_t msg_size) {
  sq_journal *j = hj ? hj->impl : NULL;
  hd_err err = HD_OK;
  int more = 1;

  clear_msg(msg, msg_size);
  if (!j || !f || !fn)
    return HD_EINVAL;
  int64_t before = f->before_seq;
  size_t left = f->limit ? f->limit : SIZE_MAX;
  while (err == HD_OK && more && left > 0) {
    size_t rows = left < JR_CHUNK_ROWS ? left : JR_CHUNK_ROWS;
    jr_list l;
    int rc;
    list_init(&l);
    pthread_mutex_lock(&j->s->lock);
    sqlite3_stmt *st = bind_filter(j, f, before, rows, &rc);
    if (rc == SQLITE_OK)
      err =
          fetch(j, st, copy_listed, 1, &l, &more, "deliveries", msg, msg_size);
    else
      err = no_memory(j, "deliveries", msg, msg_size);
    pthread_mutex_unlock(&j->s->lock);
    more = more || l.n == rows;
    left -= l.n;
    if (err == HD_OK)
      err = call_deliveries(&l, fn, ud, &before);
    list_free(&l);
  }
  return err;
}

/* The delivery `id` (none: l->n 0) and its attempts. Holds the lock. */
static hd_err fetch_one(sq_journal *j, const char *id, jr_list *d, jr_list *a,
                        char *msg, size_t msg_size) {
  int more;
  int rc = sqlite3_bind_text(j->get, 1, id, -1, SQLITE_STATIC);
  if (rc != SQLITE_OK)
    return no_memory(j, "deliveries", msg, msg_size);
  hd_err err =
      fetch(j, j->get, copy_full, 0, d, &more, "deliveries", msg, msg_size);
  if (err != HD_OK || d->n == 0)
    return err;
  rc = sqlite3_bind_text(j->get_attempts, 1, id, -1, SQLITE_STATIC);
  if (rc != SQLITE_OK)
    return no_memory(j, "attempts", msg, msg_size);
  return fetch(j, j->get_attempts, copy_attempt, 0, a, &more, "attempts", msg,
               msg_size);
}

static hd_err jr_get(hd_journal *hj, const char *id, hd_delivery_row_fn *row_fn,
                     hd_attempt_row_fn *att_fn, void *ud, char *msg,
                     size_t msg_size) {
  sq_journal *j = hj ? hj->impl : NULL;
  jr_list d, a;

  clear_msg(msg, msg_size);
  if (!j || !id || !row_fn)
    return HD_EINVAL;
  list_init(&d);
  list_init(&a);
  /* Row and attempts under one hold of the lock: no commit between. */
  pthread_mutex_lock(&j->s->lock);
  hd_err err = fetch_one(j, id, &d, &a, msg, msg_size);
  pthread_mutex_unlock(&j->s->lock);
  if (err == HD_OK && d.n == 0)
    err = HD_ENOTFOUND;
  if (err == HD_OK)
    err = row_fn(&d.head->row.d, ud);
  for (const jr_node *r = a.head; err == HD_OK && att_fn && r; r = r->next)
    err = att_fn(&r->row.a, ud);
  list_free(&d);
  list_free(&a);
  return err;
}

/* ---- making and freeing -------------------------------------------------- */

static const hd_journal_vtable jr_vtable = {
    .commit = jr_commit,
    .load_pending = jr_load_pending,
    .load_endpoints = jr_load_endpoints,
    .list = jr_list_rows,
    .get = jr_get,
    .prune = jr_prune,
};

void hd_sq_journal_free(hd_journal *hj) {
  if (!hj)
    return;
  sq_journal *j = hj->impl;
  finalize_all(j, read_stmts, JR_N(read_stmts));
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
  hd_err err = prepare_all(j, read_stmts, JR_N(read_stmts), msg, msg_size);
  if (err == HD_OK && !s->read_only)
    err = prepare_all(j, write_stmts, JR_N(write_stmts), msg, msg_size);
  return err;
}
