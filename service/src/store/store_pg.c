/*
 * store_pg.c - the PostgreSQL hd_store backend (store_pg.h): opening,
 * the registrations (put, del, load, changes) and the watcher that tells
 * this replica when another one changed them.
 *
 * Each put and del is one statement (its own transaction) that also
 * advances handlerd_change_seq and sends the notification, so a replica
 * hears of a change only once it is committed. The watcher's connection
 * LISTENs; a notification lost while it was away is caught by its poll of
 * the sequence (every sync interval), and a reconnection always counts as
 * a change.
 */
#include "store_pg_internal.h"
#include "store_record.h"

#include "arena.h"
#include "errmsg.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct pg_store {
  hd_store base;
  pg_db db;
  pg_link link;    /* registrations */
  pg_link watch;   /* LISTEN and the poll */
  int64_t sync_ms; /* the poll's period */
  pthread_t thread;
  int watching;
  atomic_int stop;
  int wake[2]; /* a pipe: close wakes the watcher */
  void (*on_change)(void *ud);
  void *on_change_ud;
} pg_store;

void hd_store_pg_config_init(hd_store_pg_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->lease_ms = 30000;
  cfg->sync_interval_ms = 1000;
}

const char *hd_store_pg_where(const hd_store *s) {
  return ((const pg_store *)s->impl)->db.where;
}

uint64_t hd_store_pg_round_trips(const hd_store *s) {
  pg_store *ps = s->impl;
  return atomic_load_explicit(&ps->db.round_trips, memory_order_relaxed);
}

/* ---- registrations ------------------------------------------------------- */

static const char put_sql[] =
    "WITH up AS (INSERT INTO handlerd_registrations"
    " (id, key, record, version, created_at)"
    " VALUES ($1, $2, $3, nextval('handlerd_change_seq'), $4)"
    " ON CONFLICT (id) DO UPDATE SET key = excluded.key,"
    " record = excluded.record, version = excluded.version"
    " RETURNING version)"
    " SELECT version, pg_notify('" PG_NOTIFY_CHANNEL "', version::text)"
    " FROM up";
static const char del_sql[] =
    "WITH gone AS (DELETE FROM handlerd_registrations WHERE id = $1"
    " RETURNING id)"
    " SELECT count(*), pg_notify('" PG_NOTIFY_CHANNEL "',"
    " nextval('handlerd_change_seq')::text) FROM gone";
static const char load_sql[] =
    "SELECT id, version, record FROM handlerd_registrations ORDER BY seq";
static const char changes_sql[] =
    "SELECT id, version, CASE WHEN version > $1 THEN record END"
    " FROM handlerd_registrations ORDER BY seq";

static hd_err pg_put(hd_store *hs, const char *id, const hd_registration *reg,
                     char *msg, size_t msg_size) {
  pg_store *s = hs->impl;
  uint8_t *rec = NULL;
  size_t len = 0;
  char why[256] = "";
  pg_params p = {0};
  hd_err err = hd_store_record_encode(reg, &rec, &len, why, sizeof(why));
  PGresult *r;

  if (err != HD_OK)
    return hd_errmsg(msg, msg_size, err, "%s", why[0] ? why : hd_strerror(err));
  pp_text(&p, id);
  pp_bin(&p, reg->key, strlen(reg->key)); /* bytea: older keys may not be
                                           * UTF-8 */
  pp_bin(&p, rec, len);
  pp_i64(&p, (int64_t)time(NULL));
  pthread_mutex_lock(&s->link.lock);
  r = pg_run(&s->link, put_sql, &p, "cannot save the registration", &err, msg,
             msg_size);
  if (r && PQntuples(r) == 1)
    hs->put_version = pg_i64(r, 0, 0);
  pthread_mutex_unlock(&s->link.lock);
  PQclear(r);
  explicit_bzero(rec, len); /* may hold a secret */
  free(rec);
  return err;
}

static hd_err pg_del(hd_store *hs, const char *id, char *msg, size_t msg_size) {
  pg_store *s = hs->impl;
  pg_params p = {0};
  hd_err err;
  PGresult *r;

  pp_text(&p, id);
  pthread_mutex_lock(&s->link.lock);
  r = pg_run(&s->link, del_sql, &p, "cannot delete the registration", &err, msg,
             msg_size);
  pthread_mutex_unlock(&s->link.lock);
  if (r && pg_i64(r, 0, 0) == 0)
    err = HD_ENOTFOUND;
  PQclear(r);
  return err;
}

/* Wipes the records in `r` (they hold secrets) and frees it. */
static void clear_records(PGresult *r, int col) {
  for (int i = 0; r && i < PQntuples(r); i++)
    explicit_bzero(PQgetvalue(r, i, col), (size_t)PQgetlength(r, i, col));
  PQclear(r);
}

/* Decodes row i's record and calls fn (or cfn) with it; the decoded copy is
 * wiped afterwards. */
static hd_err call_row(pg_store *s, PGresult *r, int i,
                       hd_store_registration_fn *fn, hd_store_change_fn *cfn,
                       void *ud, char *msg, size_t msg_size) {
  const char *id = pg_str(r, i, 0);
  hd_registration reg;
  char why[256] = "";
  hd_arena *a;
  hd_err err;

  if (cfn && PQgetisnull(r, i, 2))
    return cfn(id, pg_i64(r, i, 1), NULL, ud);
  if (!(a = hd_arena_new(1024)))
    return hd_errmsg(msg, msg_size, HD_ENOMEM,
                     "database %s: out of memory reading the registrations",
                     s->db.where);
  err =
      hd_store_record_decode(PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2),
                             a, &reg, why, sizeof(why));
  if (err == HD_OK)
    err = cfn ? cfn(id, pg_i64(r, i, 1), &reg, ud) : fn(id, &reg, ud);
  else if (err == HD_ENOMEM)
    hd_errmsg(msg, msg_size, err,
              "database %s: out of memory reading the registrations",
              s->db.where);
  else
    err = hd_errmsg(msg, msg_size, HD_EIO,
                    "database %s: the record of handler %s cannot be read: %s",
                    s->db.where, id, why);
  hd_arena_wipe(a);
  hd_arena_free(a);
  return err;
}

/* Runs `sql` under the lock, then calls back without it (fn may use the
 * store) over that snapshot. */
static hd_err walk(pg_store *s, const char *sql, const pg_params *p,
                   hd_store_registration_fn *fn, hd_store_change_fn *cfn,
                   void *ud, int64_t *latest, char *msg, size_t msg_size) {
  hd_err err;
  PGresult *r;

  pthread_mutex_lock(&s->link.lock);
  r = pg_run(&s->link, sql, p, "cannot read the registrations", &err, msg,
             msg_size);
  pthread_mutex_unlock(&s->link.lock);
  for (int i = 0; r && err == HD_OK && i < PQntuples(r); i++) {
    if (latest && pg_i64(r, i, 1) > *latest)
      *latest = pg_i64(r, i, 1);
    err = call_row(s, r, i, fn, cfn, ud, msg, msg_size);
  }
  clear_records(r, 2);
  return err;
}

static hd_err pg_load(hd_store *hs, hd_store_registration_fn *fn, void *ud,
                      char *msg, size_t msg_size) {
  return walk(hs->impl, load_sql, NULL, fn, NULL, ud, NULL, msg, msg_size);
}

static hd_err pg_changes(hd_store *hs, int64_t since, hd_store_change_fn *fn,
                         void *ud, int64_t *latest, char *msg,
                         size_t msg_size) {
  pg_params p = {0};
  pp_i64(&p, since);
  *latest = since;
  return walk(hs->impl, changes_sql, &p, NULL, fn, ud, latest, msg, msg_size);
}

static int pg_available(hd_store *hs) {
  pg_store *s = hs->impl;
  return atomic_load(&s->db.up);
}

/* ---- the watcher --------------------------------------------------------- */

static int64_t read_sequence(pg_store *s, int *ok) {
  hd_err err;
  char msg[256];
  PGresult *r =
      pg_run(&s->watch, "SELECT last_value, is_called FROM handlerd_change_seq",
             NULL, "cannot read the change sequence", &err, msg, sizeof(msg));
  int64_t v = r && PQntuples(r) == 1 ? pg_i64(r, 0, 0) : -1;
  *ok = r != NULL;
  PQclear(r);
  return v;
}

/* Connects (or reconnects) the watcher and LISTENs. 1 when it did now. */
static int watch_connect(pg_store *s) {
  hd_err err;
  char msg[256];
  if (s->watch.conn && PQstatus(s->watch.conn) == CONNECTION_OK)
    return 0;
  if (!pg_link_conn(&s->watch, &err, msg, sizeof(msg)))
    return 0;
  if (pg_exec(&s->watch, "LISTEN " PG_NOTIFY_CHANNEL, NULL, "cannot LISTEN",
              msg, sizeof(msg)) != HD_OK) {
    hd_log(HD_LOG_WARN, "%s", msg);
    return 0;
  }
  return 1;
}

static void *watch_thread(void *arg) {
  pg_store *s = arg;
  int64_t seen = -1, next_poll = 0;

  while (!atomic_load(&s->stop)) {
    int changed = 0, ok = 1;
    struct pollfd fds[2] = {{.fd = s->wake[0], .events = POLLIN},
                            {.fd = -1, .events = POLLIN}};
    int64_t now = pg_mono_ms(), wait;

    pthread_mutex_lock(&s->watch.lock);
    if (watch_connect(s))
      changed = 1; /* what was said while away is lost */
    if (s->watch.conn && PQstatus(s->watch.conn) == CONNECTION_OK) {
      PGnotify *n;
      PQconsumeInput(s->watch.conn);
      while ((n = PQnotifies(s->watch.conn)) != NULL) {
        changed = 1;
        PQfreemem(n);
      }
      if (now >= next_poll) {
        int64_t v = read_sequence(s, &ok);
        if (ok && v != seen) {
          changed = changed || seen != -1;
          seen = v;
        }
        next_poll = now + s->sync_ms;
      }
      if (s->watch.conn && PQstatus(s->watch.conn) == CONNECTION_OK)
        fds[1].fd = PQsocket(s->watch.conn);
    }
    pthread_mutex_unlock(&s->watch.lock);
    if (changed && s->on_change)
      s->on_change(s->on_change_ud);
    wait = fds[1].fd >= 0 ? next_poll - pg_mono_ms() : 250;
    if (wait < 0)
      wait = 0;
    poll(fds, 2, (int)wait);
  }
  return NULL;
}

hd_err hd_store_pg_watch(hd_store *hs, void (*fn)(void *ud), void *ud,
                         char *msg, size_t msg_size) {
  pg_store *s = hs->impl;
  s->on_change = fn;
  s->on_change_ud = ud;
  if (pipe(s->wake) != 0)
    return hd_errmsg(msg, msg_size, HD_EIO, "cannot make a pipe");
  if (pthread_create(&s->thread, NULL, watch_thread, s) != 0) {
    close(s->wake[0]);
    close(s->wake[1]);
    return hd_errmsg(msg, msg_size, HD_EIO,
                     "cannot start the database watcher");
  }
  s->watching = 1;
  return HD_OK;
}

/* ---- open and close ------------------------------------------------------ */

void hd_store_pg_unwatch(hd_store *hs) {
  pg_store *s = hs ? hs->impl : NULL;
  if (!s || !s->watching)
    return;
  atomic_store(&s->stop, 1);
  (void)!write(s->wake[1], "x", 1);
  pthread_join(s->thread, NULL);
  close(s->wake[0]);
  close(s->wake[1]);
  s->watching = 0;
}

static void pg_close(hd_store *hs) {
  pg_store *s = hs->impl;
  hd_store_pg_unwatch(hs);
  pg_journal_free(hs->journal);
  pg_link_close(&s->link);
  pg_link_close(&s->watch);
  explicit_bzero(s->db.conninfo, strlen(s->db.conninfo));
  free(s->db.conninfo);
  free(s);
}

static const hd_store_vtable pg_vtable = {
    .name = "postgres",
    .put = pg_put,
    .del = pg_del,
    .load = pg_load,
    .close = pg_close,
    .changes = pg_changes,
    .available = pg_available,
};

/* "user@host:port/db": never the password. */
static void describe(pg_db *db, const char *user, const char *host,
                     const char *port, const char *dbname) {
  host = host && *host ? host : "localhost";
  if (host[0] == '/')
    snprintf(db->where, sizeof(db->where), "%s@[%s]/%s", user ? user : "", host,
             dbname ? dbname : "");
  else
    snprintf(db->where, sizeof(db->where), "%s@%s:%s/%s", user ? user : "",
             host, port && *port ? port : "5432", dbname ? dbname : "");
}

/* What the connection string names, before any connection worked. */
static void describe_conninfo(pg_db *db) {
  char *err = NULL;
  const char *v[4] = {NULL, NULL, NULL, NULL};
  static const char *const names[4] = {"user", "host", "port", "dbname"};
  PQconninfoOption *opts = PQconninfoParse(db->conninfo, &err);

  for (PQconninfoOption *o = opts; o && o->keyword; o++)
    for (int i = 0; i < 4; i++)
      if (strcmp(o->keyword, names[i]) == 0 && o->val)
        v[i] = o->val;
  describe(db, v[0] ? v[0] : getenv("PGUSER"), v[1] ? v[1] : getenv("PGHOST"),
           v[2] ? v[2] : getenv("PGPORT"), v[3] ? v[3] : getenv("PGDATABASE"));
  PQconninfoFree(opts);
  PQfreemem(err);
}

hd_err hd_store_pg_open(const hd_store_pg_config *cfg, hd_store **out,
                        char *msg, size_t msg_size) {
  pg_store *s;
  hd_err err;
  char host[48] = "handlerd";

  *out = NULL;
  if (!cfg || !cfg->conninfo)
    return HD_EINVAL;
  if (!(s = calloc(1, sizeof(*s))) ||
      !(s->db.conninfo = strdup(cfg->conninfo))) {
    free(s);
    return hd_errmsg(msg, msg_size, HD_ENOMEM, "out of memory");
  }
  describe_conninfo(&s->db);
  if (cfg->replica_id && cfg->replica_id[0]) {
    snprintf(s->db.replica, sizeof(s->db.replica), "%s", cfg->replica_id);
  } else {
    gethostname(host, sizeof(host) - 1);
    snprintf(s->db.replica, sizeof(s->db.replica), "%s-%ld", host,
             (long)getpid());
  }
  s->db.lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 30000;
  s->db.on_state = cfg->on_state;
  s->db.on_state_ud = cfg->on_state_ud;
  atomic_init(&s->db.up, 1);
  s->sync_ms = cfg->sync_interval_ms > 0 ? cfg->sync_interval_ms : 1000;
  pg_link_init(&s->link, &s->db, "store");
  pg_link_init(&s->watch, &s->db, "watcher");
  s->base.impl = s;
  s->base.vt = &pg_vtable;

  s->db.opening = 1;
  pthread_mutex_lock(&s->link.lock);
  if (pg_link_conn(&s->link, &err, msg, msg_size)) {
    describe(&s->db, PQuser(s->link.conn), PQhost(s->link.conn),
             PQport(s->link.conn), PQdb(s->link.conn));
    err = pg_schema_apply(&s->link, msg, msg_size);
  }
  pthread_mutex_unlock(&s->link.lock);
  s->db.opening = 0;
  atomic_store(&s->db.up, err == HD_OK);
  if (err == HD_OK)
    err = pg_journal_new(&s->db, &s->base.journal);
  if (err != HD_OK) {
    if (err == HD_ENOMEM)
      hd_errmsg(msg, msg_size, err, "out of memory");
    pg_close(&s->base);
    return err;
  }
  *out = &s->base;
  return HD_OK;
}
