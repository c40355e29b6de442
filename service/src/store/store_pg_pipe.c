/*
 * store_pg_pipe.c - many statements in one round trip: libpq's pipeline
 * mode on a link (store_pg_internal.h, pg_pipe).
 */
#include "store_pg_internal.h"

#include "errmsg.h"

#include <stdio.h>
#include <string.h>

/* Records the first failure; later ones are its consequences. */
static hd_err fail(pg_pipe *p, const char *what) {
  if (p->err == HD_OK) {
    const char *why = p->c ? PQerrorMessage(p->c) : "";
    p->err = HD_EIO;
    hd_errmsg(p->msg, p->msg_size, p->err, "database %s: %s: %.*s",
              p->l->db->where, what, (int)strcspn(why, "\n"), why);
  }
  return p->err;
}

hd_err pg_pipe_open(pg_pipe *p, pg_link *l, char *msg, size_t msg_size) {
  memset(p, 0, sizeof(*p));
  p->l = l;
  p->msg = msg;
  p->msg_size = msg_size;
  p->c = pg_link_conn(l, &p->err, msg, msg_size);
  if (!p->c)
    return p->err;
  if (!PQenterPipelineMode(p->c))
    return fail(p, "cannot enter pipeline mode");
  return HD_OK;
}

/* Queues the result `fn` wants (the pipeline's order is the send order). */
static hd_err queued(pg_pipe *p, int sent, const char *what,
                     pg_pipe_rows_fn *fn, void *ud, int prepares) {
  if (!sent)
    return fail(p, what);
  p->q[p->n].what = what;
  p->q[p->n].fn = fn;
  p->q[p->n].ud = ud;
  p->q[p->n].prepares = prepares;
  p->n++;
  return p->n == PG_PIPE_MAX ? pg_pipe_sync(p) : HD_OK;
}

hd_err pg_pipe_stmt(pg_pipe *p, int slot, const char *sql,
                    const pg_params *params, const char *what,
                    pg_pipe_rows_fn *fn, void *ud) {
  char name[16];

  if (p->err != HD_OK)
    return p->err;
  snprintf(name, sizeof(name), "hd%d", slot);
  if (!(p->l->prepared & (1u << slot))) {
    /* Counted as prepared once sent; if the server skips or refuses it,
     * read_one clears it again (a prepared statement outlives a rolled
     * back transaction: one that was made stays counted). */
    int sent = PQsendPrepare(p->c, name, sql, params->n, NULL);
    if (sent)
      p->l->prepared |= 1u << slot;
    if (queued(p, sent, what, NULL, NULL, slot) != HD_OK)
      return p->err;
  }
  return queued(p,
                PQsendQueryPrepared(p->c, name, params->n, params->v,
                                    params->len, params->fmt, 1),
                what, fn, ud, -1);
}

hd_err pg_pipe_exec(pg_pipe *p, const char *sql, const char *what) {
  if (p->err != HD_OK)
    return p->err;
  return queued(p, PQsendQueryParams(p->c, sql, 0, NULL, NULL, NULL, NULL, 1),
                what, NULL, NULL, -1);
}

/* Reads the result of one queued statement (and the NULL after it). 0 when
 * the connection gave out: nothing more will come. */
static int read_one(pg_pipe *p, int i) {
  PGresult *r = PQgetResult(p->c);
  char why[512];
  hd_err err;

  if (!r) {
    fail(p, p->q[i].what);
    return 0;
  }
  if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
    PQclear(r); /* skipped after an earlier failure: that one is reported */
    if (p->q[i].prepares >= 0)
      p->l->prepared &= ~(1u << p->q[i].prepares);
  } else if ((r = pg_outcome(p->l, p->c, r, p->q[i].what, &err, why,
                             sizeof(why))) == NULL) {
    if (p->q[i].prepares >= 0)
      p->l->prepared &= ~(1u << p->q[i].prepares);
    if (p->err == HD_OK) {
      p->err = err;
      snprintf(p->msg, p->msg_size, "%s", why);
    }
  } else {
    if (p->q[i].fn && p->err == HD_OK)
      p->q[i].fn(r, p->q[i].ud);
    PQclear(r);
  }
  /* A statement's results end with a NULL. */
  while ((r = PQgetResult(p->c)) != NULL)
    PQclear(r);
  return PQstatus(p->c) == CONNECTION_OK;
}

hd_err pg_pipe_sync(pg_pipe *p) {
  PGresult *r;
  int n = p->n;

  p->n = 0;
  if (!p->c)
    return p->err;
  atomic_fetch_add_explicit(&p->l->db->round_trips, 1, memory_order_relaxed);
  if (!PQpipelineSync(p->c))
    return fail(p, "cannot sync");
  for (int i = 0; i < n; i++) {
    if (!read_one(p, i))
      return fail(p, p->q[i].what);
  }
  r = PQgetResult(p->c);
  if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
    PQclear(r);
    return fail(p, "pipeline out of step");
  }
  PQclear(r);
  return p->err;
}

hd_err pg_pipe_close(pg_pipe *p) {
  if (!p->c)
    return p->err;
  if (p->n > 0)
    pg_pipe_sync(p);
  if (PQstatus(p->c) != CONNECTION_OK || !PQexitPipelineMode(p->c)) {
    /* Not back in normal mode: a fresh connection is simpler than
     * knowing what is left on this one. */
    fail(p, "cannot leave pipeline mode");
    if (PQstatus(p->c) != CONNECTION_OK) {
      char why[256];
      const char *e = PQerrorMessage(p->c);
      snprintf(why, sizeof(why), "%.*s", (int)strcspn(e, "\n"), e);
      pg_db_set_up(p->l->db, 0, why);
    }
    PQfinish(p->c);
    p->l->conn = NULL;
    p->l->prepared = 0;
  }
  return p->err;
}
