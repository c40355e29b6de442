/*
 * store_pg_conn.c - links to the database: connecting and reconnecting
 * with a backoff, running a statement, and turning a failure into an
 * hd_err and a message that names the database and what the server said.
 */
#include "store_pg_internal.h"

#include "clock.h"
#include "errmsg.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 250
#define BACKOFF_MAX_MS 2000

int64_t pg_mono_ms(void) {
  return mono_ns() / 1000000;
}

void pg_db_set_up(pg_db *db, int up, const char *why) {
  int was = atomic_exchange(&db->up, up);
  if (was == up || db->opening)
    return;
  if (up) {
    hd_log(HD_LOG_INFO, "database %s: reachable again", db->where);
  } else {
    atomic_fetch_add(&db->lost, 1);
    hd_log(HD_LOG_ERROR,
           "database %s: unavailable (%s); registration changes and async "
           "accepts answer UNAVAILABLE, sync dispatch goes on; reconnecting",
           db->where, why && *why ? why : "connection lost");
  }
  if (db->on_state)
    db->on_state(up, db->on_state_ud);
}

void pg_link_init(pg_link *l, pg_db *db, const char *role) {
  memset(l, 0, sizeof(*l));
  pthread_mutex_init(&l->lock, NULL);
  l->db = db;
  l->role = role;
}

void pg_link_close(pg_link *l) {
  if (l->conn)
    PQfinish(l->conn);
  l->conn = NULL;
  pthread_mutex_destroy(&l->lock);
}

/* The first line of libpq's message. */
static void first_line(const char *in, char *out, size_t size) {
  size_t n = strcspn(in ? in : "", "\n");
  if (n >= size)
    n = size - 1;
  memcpy(out, in ? in : "", n);
  out[n] = '\0';
}

/* The server's notices ("already exists, skipping") are for debugging. */
static void on_notice(void *ud, const char *text) {
  (void)ud;
  hd_log(HD_LOG_DEBUG, "database: %.*s", (int)strcspn(text, "\n"), text);
}

static PGconn *connect_db(const pg_db *db) {
  /* The caller's string is expanded last, so what it says wins over these
   * defaults. */
  const char *const keys[] = {"connect_timeout", "application_name", "dbname",
                              NULL};
  const char *const vals[] = {"5", "handlerd", db->conninfo, NULL};
  return PQconnectdbParams(keys, vals, 1);
}

PGconn *pg_link_conn(pg_link *l, hd_err *err, char *msg, size_t msg_size) {
  char why[256];
  int64_t now = pg_mono_ms();

  if (l->conn && PQstatus(l->conn) == CONNECTION_OK)
    return l->conn;
  /* Within the backoff, unless another link has reached the database
   * since: then it is back, and so is this one. */
  if (now < l->retry_ms && !atomic_load(&l->db->up)) {
    *err = hd_errmsg(msg, msg_size, HD_EIO,
                     "database %s unavailable (reconnecting)", l->db->where);
    return NULL;
  }
  if (l->conn)
    PQfinish(l->conn);
  l->conn = connect_db(l->db);
  if (l->conn && PQstatus(l->conn) == CONNECTION_OK) {
    PQsetNoticeProcessor(l->conn, on_notice, NULL);
    l->prepared = 0; /* a new session has none */
    l->backoff_ms = 0;
    l->retry_ms = 0;
    pg_db_set_up(l->db, 1, NULL);
    return l->conn;
  }
  first_line(l->conn ? PQerrorMessage(l->conn) : "out of memory", why,
             sizeof(why));
  if (l->conn)
    PQfinish(l->conn);
  l->conn = NULL;
  l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : BACKOFF_FIRST_MS;
  if (l->backoff_ms > BACKOFF_MAX_MS)
    l->backoff_ms = BACKOFF_MAX_MS;
  l->retry_ms = now + l->backoff_ms;
  pg_db_set_up(l->db, 0, why);
  *err = hd_errmsg(msg, msg_size, HD_EIO, "database %s unavailable: %s",
                   l->db->where, why);
  return NULL;
}

void pp_text(pg_params *p, const char *s) {
  p->v[p->n] = s;
  p->len[p->n] = 0;
  p->fmt[p->n] = 0;
  p->n++;
}

void pp_i64(pg_params *p, int64_t v) {
  snprintf(p->num[p->n], sizeof(p->num[p->n]), "%lld", (long long)v);
  pp_text(p, p->num[p->n]);
}

void pp_f64(pg_params *p, double v) {
  snprintf(p->num[p->n], sizeof(p->num[p->n]), "%.17g", v);
  pp_text(p, p->num[p->n]);
}

void pp_bin(pg_params *p, const void *b, size_t len) {
  p->v[p->n] = len ? b : "";
  p->len[p->n] = (int)len;
  p->fmt[p->n] = 1;
  p->n++;
}

static hd_err state_err(const char *state) {
  if (state && strcmp(state, "53100") == 0) /* disk_full */
    return HD_EBUSY;
  if (state && strcmp(state, "23505") == 0) /* unique_violation */
    return HD_EEXIST;
  return HD_EIO;
}

PGresult *pg_outcome(pg_link *l, PGconn *c, PGresult *r, const char *what,
                     hd_err *err, char *msg, size_t msg_size) {
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  char why[256];

  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    *err = HD_OK;
    return r;
  }
  first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(c), why, sizeof(why));
  if (!why[0])
    first_line(PQerrorMessage(c), why, sizeof(why));
  *err = state_err(r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL);
  PQclear(r);
  if (PQstatus(c) != CONNECTION_OK) {
    pg_db_set_up(l->db, 0, why);
    *err = HD_EIO;
    hd_errmsg(msg, msg_size, *err, "database %s unavailable: %s", l->db->where,
              why);
  } else {
    hd_errmsg(msg, msg_size, *err, "database %s: %s: %s", l->db->where, what,
              why);
  }
  return NULL;
}

PGresult *pg_run(pg_link *l, const char *sql, const pg_params *p,
                 const char *what, hd_err *err, char *msg, size_t msg_size) {
  return pg_run_stmt(l, -1, sql, p, what, err, msg, msg_size);
}

PGresult *pg_run_stmt(pg_link *l, int slot, const char *sql, const pg_params *p,
                      const char *what, hd_err *err, char *msg,
                      size_t msg_size) {
  static const pg_params none = {0};
  PGconn *c = pg_link_conn(l, err, msg, msg_size);
  char name[16];

  if (!c)
    return NULL;
  if (!p)
    p = &none;
  atomic_fetch_add_explicit(&l->db->round_trips, 1, memory_order_relaxed);
  if (slot < 0)
    return pg_outcome(l, c,
                      PQexecParams(c, sql, p->n, NULL, p->v, p->len, p->fmt, 1),
                      what, err, msg, msg_size);
  /* Prepared once per connection: parsed and planned once, not per call
   * (about half of the server's time per statement otherwise). */
  snprintf(name, sizeof(name), "hd%d", slot);
  if (!(l->prepared & (1u << slot))) {
    atomic_fetch_add_explicit(&l->db->round_trips, 1, memory_order_relaxed);
    PGresult *r = pg_outcome(l, c, PQprepare(c, name, sql, p->n, NULL), what,
                             err, msg, msg_size);
    if (!r)
      return NULL;
    PQclear(r);
    l->prepared |= 1u << slot;
  }
  return pg_outcome(l, c,
                    PQexecPrepared(c, name, p->n, p->v, p->len, p->fmt, 1),
                    what, err, msg, msg_size);
}

hd_err pg_exec(pg_link *l, const char *sql, const pg_params *p,
               const char *what, char *msg, size_t msg_size) {
  hd_err err;
  PGresult *r = pg_run(l, sql, p, what, &err, msg, msg_size);
  PQclear(r);
  return err;
}

void pg_rollback(pg_link *l) {
  if (l->conn && PQstatus(l->conn) == CONNECTION_OK) {
    atomic_fetch_add_explicit(&l->db->round_trips, 1, memory_order_relaxed);
    PQclear(PQexec(l->conn, "ROLLBACK"));
  }
}

int64_t pg_i64(const PGresult *r, int row, int col) {
  const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
  int len = PQgetlength(r, row, col);
  uint64_t x = 0;

  if (PQgetisnull(r, row, col))
    return 0;
  for (int i = 0; i < len && i < 8; i++)
    x = (x << 8) | v[i];
  if (len == 4)
    return (int32_t)(uint32_t)x;
  if (len == 2)
    return (int16_t)(uint16_t)x;
  if (len == 1)
    return v[0];
  return (int64_t)x;
}

double pg_f64(const PGresult *r, int row, int col) {
  union {
    uint64_t u;
    double d;
  } v;
  v.u = (uint64_t)pg_i64(r, row, col);
  return v.d;
}

const char *pg_str(const PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}
