/*
 * store_sqlite_journal_read.c - the journal's reads: load_pending,
 * load_endpoints, list and get (outbox/journal.h), on the SQLite store's
 * connection (store_sqlite_journal.h). They work on a read-only store too.
 *
 * Rows are copied under the lock a chunk at a time (by seq: the next chunk
 * starts after the last row seen) and handed to the callback without it.
 * So a callback may use the journal or the store, a commit never waits for
 * a callback, and a large backlog is never copied whole; but a walk is not
 * one snapshot: a row changed during it may be seen either way.
 * load_pending runs before anything commits.
 *
 * Copies handed out are wiped before they are freed, as the registrations'
 * are: bodies and headers are the events' data.
 */
#include "store_sqlite_journal.h"

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

const jr_stmt hd_sqj_read_stmts[] = {
    JR_STMT(pending, pending_sql),
    JR_STMT(list_all, list_all_sql),
    JR_STMT(list_handler, list_handler_sql),
    JR_STMT(list_key, list_key_sql),
    JR_STMT(get, get_sql),
    JR_STMT(get_attempts, get_attempts_sql),
    JR_STMT(endpoints, endpoints_sql),
};
const size_t hd_sqj_n_read_stmts = JR_N(hd_sqj_read_stmts);

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

/* Fills node's row from the current row of st: the copies in c, the
 * numbers from st. On failure the caller frees the node. */
typedef hd_err jr_fill_fn(sq_journal *j, sqlite3_stmt *st, const jr_cols *c,
                          jr_node *node, char *msg, size_t msg_size);

/* How the rows of one read are copied out: which columns are text or
 * blob (copied into the node, in this order), then how the row is filled
 * in. One generic copy (copy_row) serves every table. */
typedef struct jr_table {
  const char *what; /* the table, for messages */
  jr_fill_fn *fill;
  size_t n;           /* at most JR_MAX_COLS */
  const int *col;     /* n column numbers */
  unsigned blob_mask; /* bit i: col[i] is a blob, else text */
} jr_table;

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

/* Reads t's variable-size columns of st's current row into c. */
static hd_err read_cols(sq_journal *j, sqlite3_stmt *st, const jr_table *t,
                        jr_cols *c, char *msg, size_t msg_size) {
  c->n = t->n;
  c->total = 0;
  for (size_t i = 0; i < t->n; i++) {
    int blob = (t->blob_mask >> i) & 1;
    /* The pointer first, then its size (SQLite's rule). */
    c->src[i] = blob ? sqlite3_column_blob(st, t->col[i])
                     : (const void *)sqlite3_column_text(st, t->col[i]);
    c->len[i] = (size_t)sqlite3_column_bytes(st, t->col[i]);
    /* An empty blob is a NULL pointer; an empty text is "". */
    if (!c->src[i] && (!blob || c->len[i]))
      return column_failed(j, t->what, msg, msg_size);
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

/* Copies the current row of st, selected as t says, into a new node. */
static hd_err copy_row(sq_journal *j, sqlite3_stmt *st, const jr_table *t,
                       jr_node **out, char *msg, size_t msg_size) {
  jr_cols c;
  hd_err err = read_cols(j, st, t, &c, msg, msg_size);
  if (err != HD_OK)
    return err;
  jr_node *node = copy_cols(&c);
  if (!node)
    return no_memory(j, t->what, msg, msg_size);
  if ((err = t->fill(j, st, &c, node, msg, msg_size)) != HD_OK) {
    free(node);
    return err;
  }
  *out = node;
  return HD_OK;
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

/* A delivery's text and blob columns, as fill_delivery takes them: list's
 * stop before headers and body (JR_LIST_COLS). */
static const int delivery_vars[] = {C_KEY,        C_HANDLER_ID,   C_ROUTE,
                                    C_EVENT_NAME, C_ORDERING_KEY, C_LAST_ERROR,
                                    C_HEADERS,    C_BODY};
#define JR_LISTED_VARS 6
#define JR_FULL_VARS 8

/* A delivery selected as JR_FULL_COLS (deliveries_full), or as
 * JR_LIST_COLS (deliveries_listed: its copies stop before headers and
 * body). */
static hd_err fill_delivery(sq_journal *j, sqlite3_stmt *st, const jr_cols *c,
                            jr_node *node, char *msg, size_t msg_size) {
  hd_delivery_row *r = &node->row.d;
  int with_body = c->n == JR_FULL_VARS;
  hd_err err;
  if ((err = copy_id(j, st, C_ID, r->id, msg, msg_size)) != HD_OK ||
      (err = copy_id(j, st, C_EVENT_ID, r->event_id, msg, msg_size)) != HD_OK)
    return err;
  r->key = c->copy[0];
  r->handler_id = c->copy[1];
  r->route = c->copy[2];
  r->event_name = c->copy[3];
  r->ordering_key = c->copy[4];
  r->last_error = c->copy[5];
  r->headers = with_body ? c->copy[6] : "";
  r->body = with_body ? (const unsigned char *)c->copy[7] : NULL;
  r->body_len = with_body ? c->len[7] : 0;
  r->seq = sqlite3_column_int64(st, C_SEQ);
  r->created_ms = sqlite3_column_int64(st, C_CREATED);
  r->next_ms = sqlite3_column_int64(st, C_NEXT);
  r->updated_ms = sqlite3_column_int64(st, C_UPDATED);
  r->state = (hd_delivery_state)sqlite3_column_int(st, C_STATE);
  r->attempts = sqlite3_column_int(st, C_ATTEMPTS);
  r->last_status = sqlite3_column_int(st, C_LAST_STATUS);
  return HD_OK;
}

/* The current row of get_attempts. */
static hd_err fill_attempt(sq_journal *j, sqlite3_stmt *st, const jr_cols *c,
                           jr_node *node, char *msg, size_t msg_size) {
  hd_attempt_row *a = &node->row.a;
  (void)j, (void)msg, (void)msg_size;
  a->delivery_id = c->copy[0];
  a->error = c->copy[1];
  a->response_head = (const unsigned char *)c->copy[2];
  a->response_head_len = c->len[2];
  a->number = sqlite3_column_int(st, 3);
  a->manual = sqlite3_column_int(st, 4);
  a->started_ms = sqlite3_column_int64(st, 5);
  a->duration_ms = sqlite3_column_int64(st, 6);
  a->http_status = sqlite3_column_int(st, 7);
  return HD_OK;
}

/* The current row of endpoints. */
static hd_err fill_endpoint(sq_journal *j, sqlite3_stmt *st, const jr_cols *c,
                            jr_node *node, char *msg, size_t msg_size) {
  hd_endpoint_row *e = &node->row.e;
  (void)j, (void)msg, (void)msg_size;
  e->handler_id = c->copy[0];
  e->route = c->copy[1];
  e->failures = sqlite3_column_int(st, 2);
  e->first_failure_ms = sqlite3_column_int64(st, 3);
  e->disabled_ms = sqlite3_column_int64(st, 4);
  return HD_OK;
}

static const jr_table deliveries_full = {"deliveries", fill_delivery,
                                         JR_FULL_VARS, delivery_vars, 1u << 7};
static const jr_table deliveries_listed = {
    "deliveries", fill_delivery, JR_LISTED_VARS, delivery_vars, 1u << 7};
static const int attempt_vars[] = {0, 1, 2};
static const jr_table attempts_table = {"attempts", fill_attempt, 3,
                                        attempt_vars, 1u << 2};
static const int endpoint_vars[] = {0, 1};
static const jr_table endpoints_table = {"endpoints", fill_endpoint, 2,
                                         endpoint_vars, 0};

/* Steps the bound `st` and copies its rows into `l` as `t` says, stopping
 * early (*more = 1) once the chunk holds JR_CHUNK_BYTES when `chunked`.
 * Resets st. Holds the lock. */
static hd_err fetch(sq_journal *j, sqlite3_stmt *st, const jr_table *t,
                    int chunked, jr_list *l, int *more, char *msg,
                    size_t msg_size) {
  hd_err err = HD_OK;
  int rc;

  *more = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    jr_node *node = NULL;
    if ((err = copy_row(j, st, t, &node, msg, msg_size)) != HD_OK)
      break;
    list_add(l, node);
    if (chunked && l->bytes >= JR_CHUNK_BYTES) {
      *more = 1;
      break;
    }
  }
  if (err == HD_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
    char doing[64];
    snprintf(doing, sizeof(doing), "cannot read the %s", t->what);
    hd_sq_db_msg(j->s, rc, doing, msg, msg_size);
    err = hd_sq_rc_err(rc);
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return err;
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

hd_err hd_sqj_load_pending(hd_journal *hj, hd_delivery_row_fn *fn, void *ud,
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
      err = fetch(j, j->pending, &deliveries_full, 1, &l, &more, msg, msg_size);
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

hd_err hd_sqj_load_endpoints(hd_journal *hj, hd_endpoint_row_fn *fn, void *ud,
                             char *msg, size_t msg_size) {
  sq_journal *j = hj ? hj->impl : NULL;
  jr_list l;
  int more;

  clear_msg(msg, msg_size);
  if (!j || !fn)
    return HD_EINVAL;
  list_init(&l);
  /* One row per async webhook: all at once. */
  pthread_mutex_lock(&j->s->lock);
  hd_err err =
      fetch(j, j->endpoints, &endpoints_table, 0, &l, &more, msg, msg_size);
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

hd_err hd_sqj_list(hd_journal *hj, const hd_delivery_filter *f,
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
      err = fetch(j, st, &deliveries_listed, 1, &l, &more, msg, msg_size);
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
  hd_err err = fetch(j, j->get, &deliveries_full, 0, d, &more, msg, msg_size);
  if (err != HD_OK || d->n == 0)
    return err;
  rc = sqlite3_bind_text(j->get_attempts, 1, id, -1, SQLITE_STATIC);
  if (rc != SQLITE_OK)
    return no_memory(j, "attempts", msg, msg_size);
  return fetch(j, j->get_attempts, &attempts_table, 0, a, &more, msg, msg_size);
}

hd_err hd_sqj_get(hd_journal *hj, const char *id, hd_delivery_row_fn *row_fn,
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
