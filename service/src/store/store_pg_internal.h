/*
 * store_pg_internal.h - what the files of the PostgreSQL backend share:
 * the database (one per store: its connection string, this replica's name,
 * whether it answers), a link (one connection with its lock; the store,
 * the journal and the watcher each have their own, so none waits for
 * another's network round trip), running statements and mapping their
 * failures (store_pg_conn.c), the schema (store_pg_schema.c), the
 * registrations (store_pg.c), the journal (store_pg_journal.c, reads in
 * store_pg_journal_read.c). Not for the layers above.
 *
 * Schema (table handlerd_schema(version)): 1, every table prefixed
 * handlerd_ so the database may be shared with other software:
 *   handlerd_registrations(id PRIMARY KEY, seq bigserial, key bytea,
 *     record bytea, version bigint, created_at bigint): record is
 *     store_record.h's format (the key a copy for people: bytea, since keys
 *     saved by older releases need not be UTF-8); version is
 * handlerd_change_seq's value at the row's last change: what a replica compares
 * with its own (store.h, changes). handlerd_change_seq: advanced by every put
 * and del; its last_value is what the watcher polls. handlerd_deliveries: the
 * columns of hd_delivery_row (journal.h), and lease_owner (the replica that
 * holds it) and lease_until (Unix ms); max_inflight and max_rps are the
 * webhook's when it was accepted. handlerd_attempts, handlerd_endpoints: as
 * SQLite's attempts and endpoints. handlerd_buckets(handler_id, route, tokens,
 * at_ms): each rate-limited webhook's token bucket, shared by the replicas'
 * claims. A migration runs in one transaction under an advisory lock, so
 * replicas starting at once on an empty database make one schema.
 */
#ifndef HD_STORE_PG_INTERNAL_H
#define HD_STORE_PG_INTERNAL_H

#include "store_pg.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define PG_SCHEMA_VERSION 1
/* The advisory lock a migration holds: "handlerd" in ASCII. */
#define PG_SCHEMA_LOCK 0x68616e646c657264LL
/* The one the claims of rate-limited deliveries hold ("handlerl"), so
 * two replicas never both see room under the same limit. */
#define PG_LIMITS_LOCK 0x68616e646c65726cLL
#define PG_NOTIFY_CHANNEL "handlerd_registrations"

/* The database a store works on; shared by its links. */
typedef struct pg_db {
  char *conninfo;  /* as given: may hold a password, never logged */
  char where[160]; /* "user@host:port/db", for messages and logs */
  char replica[HD_REPLICA_ID_MAX + 1];
  int64_t lease_ms;
  atomic_int up;             /* the last attempt to reach it worked */
  int opening;               /* hd_store_pg_open is running: its failure is the
                              * open's message, not an outage to log */
  atomic_long lost;          /* times the database was lost */
  atomic_ullong round_trips; /* requests sent that waited for an answer */
  hd_store_pg_state_fn *on_state;
  void *on_state_ud;
} pg_db;

/* One connection and the lock that serialises its use. */
typedef struct pg_link {
  pthread_mutex_t lock;
  PGconn *conn;
  pg_db *db;
  const char *role; /* "store", "journal", "watcher": for logs */
  int64_t retry_ms; /* no new connection before (monotonic ms) */
  int64_t backoff_ms;
  uint32_t prepared; /* the statement slots prepared on this connection */
} pg_link;

void pg_link_init(pg_link *l, pg_db *db, const char *role);
void pg_link_close(pg_link *l);
/* The link's connection, (re)connecting when it is missing or broken,
 * at most once per backoff (250 ms doubling to 2 s; at once when another link
 * got through). NULL with HD_EIO and "database <where> unavailable: ..." in
 * msg. Holds l->lock. */
PGconn *pg_link_conn(pg_link *l, hd_err *err, char *msg, size_t msg_size);

/* Statement parameters: text, or binary for bytea. */
#define PG_MAX_PARAMS 24
typedef struct pg_params {
  int n;
  const char *v[PG_MAX_PARAMS];
  int len[PG_MAX_PARAMS];
  int fmt[PG_MAX_PARAMS];
  char num[PG_MAX_PARAMS][24];
} pg_params;

void pp_text(pg_params *p, const char *s);
void pp_i64(pg_params *p, int64_t v);
void pp_f64(pg_params *p, double v);
void pp_bin(pg_params *p, const void *b, size_t len);

/* Runs `sql` on the link's connection (held: l->lock) with binary
 * results. NULL with *err and msg ("database <where>: <what>: <server's
 * message>") on failure: HD_EBUSY for a full disk, HD_EEXIST for a unique
 * violation, HD_EIO otherwise (a lost connection marks the database
 * down). */
PGresult *pg_run(pg_link *l, const char *sql, const pg_params *p,
                 const char *what, hd_err *err, char *msg, size_t msg_size);
/* As pg_run, for a statement run often: prepared on the link's connection
 * the first time (as "hd<slot>"; again after a reconnection), then
 * executed by name. `slot` (0..31) names the statement on that link: one
 * slot, one `sql`, always. */
PGresult *pg_run_stmt(pg_link *l, int slot, const char *sql, const pg_params *p,
                      const char *what, hd_err *err, char *msg,
                      size_t msg_size);
/* The outcome of a statement's result `r` on `c`: r when it worked, else
 * NULL with *err and msg as pg_run says (r is freed). */
PGresult *pg_outcome(pg_link *l, PGconn *c, PGresult *r, const char *what,
                     hd_err *err, char *msg, size_t msg_size);

/* A pipeline (libpq's pipeline mode) on a link, held (l->lock) from
 * pg_pipe_open to pg_pipe_close: statements go out without waiting for
 * each other's answers, and their results are read at each sync, so a
 * batch of statements costs one round trip instead of one each. A sync
 * comes by itself every PG_PIPE_MAX statements, which keeps both sides'
 * buffers small (no deadlock on a blocking socket). After the first
 * failure the server skips the rest up to the sync; what the caller sends
 * afterwards is not sent, and pg_pipe_close returns that failure. */
#define PG_PIPE_MAX 64
typedef void pg_pipe_rows_fn(const PGresult *r, void *ud);
typedef struct pg_pipe {
  pg_link *l;
  PGconn *c;
  int n; /* sent since the last sync */
  struct {
    const char *what;
    pg_pipe_rows_fn *fn;
    void *ud;
    int prepares; /* the slot this entry prepares, or -1 */
  } q[PG_PIPE_MAX];
  hd_err err; /* the first failure */
  char *msg;
  size_t msg_size;
} pg_pipe;

/* Enters pipeline mode on the link's connection (connecting as
 * pg_link_conn does). The first failure goes to msg. */
hd_err pg_pipe_open(pg_pipe *p, pg_link *l, char *msg, size_t msg_size);
/* Sends the statement of `slot` (prepared in the pipeline the first time
 * on this connection, as pg_run_stmt); `fn` (may be NULL) gets its result
 * when it is read. */
hd_err pg_pipe_stmt(pg_pipe *p, int slot, const char *sql,
                    const pg_params *params, const char *what,
                    pg_pipe_rows_fn *fn, void *ud);
/* Sends a statement without parameters, unprepared (BEGIN, COMMIT). */
hd_err pg_pipe_exec(pg_pipe *p, const char *sql, const char *what);
/* Sends a sync and reads every result up to it. */
hd_err pg_pipe_sync(pg_pipe *p);
/* Syncs what is still unread and leaves pipeline mode; a connection that
 * cannot leave it is dropped (the next use reconnects). Returns the first
 * failure of the pipeline. */
hd_err pg_pipe_close(pg_pipe *p);

/* As pg_run for a statement whose rows are not wanted. */
hd_err pg_exec(pg_link *l, const char *sql, const pg_params *p,
               const char *what, char *msg, size_t msg_size);
/* A failed transaction's rollback (errors ignored: a lost connection has
 * rolled it back already). */
void pg_rollback(pg_link *l);

/* Binary result columns. */
int64_t pg_i64(const PGresult *r, int row, int col);
double pg_f64(const PGresult *r, int row, int col); /* float8 */
const char *pg_str(const PGresult *r, int row, int col);

void pg_db_set_up(pg_db *db, int up, const char *why);
int64_t pg_mono_ms(void);

/* store_pg_schema.c: creates or migrates the schema on `l`. */
hd_err pg_schema_apply(pg_link *l, char *msg, size_t msg_size);

/* store_pg_journal.c: the journal on its own link; freed by
 * pg_journal_free. */
hd_err pg_journal_new(pg_db *db, hd_journal **out);
void pg_journal_free(hd_journal *j);

#endif
