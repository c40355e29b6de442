/*
 * store_pg.h - the PostgreSQL hd_store backend: registrations and the
 * outbox's journal in one PostgreSQL database shared by several handlerd
 * replicas (store.h says what a store is; store_pg_internal.h has the
 * schema).
 *
 * Shared registrations: every put and del advances a sequence and sends
 * NOTIFY handlerd_registrations in its own transaction; each replica's
 * watcher (hd_store_pg_watch) LISTENs on its own connection and, as a
 * backstop for notifications lost while it was disconnected, polls the
 * sequence every sync interval. The store's `changes` says what changed.
 *
 * The journal is shared (journal.h: claim, renew, reap, release): async
 * deliveries are leased to one replica at a time, for lease_ms, renewed
 * while it works on them.
 *
 * A database outage: every operation fails at once with HD_EIO and a
 * message saying the database is unavailable; the links reconnect by
 * themselves with a backoff (250 ms doubling to 2 s; at once when another link
 * got through), logging the loss and the return once each. Nothing is retried
 * behind the caller's back.
 */
#ifndef HD_STORE_PG_H
#define HD_STORE_PG_H

#include "store.h"

#include <stdint.h>

#define HD_REPLICA_ID_MAX 63

/* Told when the database becomes unreachable (up 0) or reachable again (up
 * 1), on whichever thread noticed. */
typedef void hd_store_pg_state_fn(int up, void *ud);

typedef struct hd_store_pg_config {
  /* A libpq connection string: a postgres:// URI or "key=value ..."; the
   * PG* environment variables fill what it leaves out. Borrowed. */
  const char *conninfo;
  const char *replica_id;   /* lease owner; NULL: "<hostname>-<pid>" */
  int64_t lease_ms;         /* default 30 s */
  int64_t sync_interval_ms; /* the watcher's poll; default 1 s */
  hd_store_pg_state_fn *on_state;
  void *on_state_ud;
} hd_store_pg_config;

void hd_store_pg_config_init(hd_store_pg_config *cfg);

/* Connects, creates or migrates the schema (one transaction, under an
 * advisory lock: replicas may start at once), and makes the store and its
 * journal. A schema newer than this handlerd's is refused. HD_EIO with a
 * message naming the database (never its password) on failure. Close with
 * hd_store_close. */
hd_err hd_store_pg_open(const hd_store_pg_config *cfg, hd_store **out,
                        char *msg, size_t msg_size);

/* Starts the watcher: `fn(ud)` is called on its thread whenever the
 * registrations may have changed in another process (a notification, the
 * sequence moved at a poll, or the connection came back), and once at
 * start. Stopped by hd_store_close. */
hd_err hd_store_pg_watch(hd_store *s, void (*fn)(void *ud), void *ud, char *msg,
                         size_t msg_size);

/* Stops the watcher (waiting for a sync under way to end); nothing more
 * changes the registry behind the caller's back. Shutdown calls it before
 * anything the sync uses is stopped. NULL, or a store not watched: no-op.
 * Only for a store hd_store_pg_open made. */
void hd_store_pg_unwatch(hd_store *s);

/* Round trips to the database so far, every link of the store counted
 * (a statement run alone is one; a pipeline is one per sync). For
 * handlerd_database_round_trips_total. Only for a store hd_store_pg_open
 * made. */
uint64_t hd_store_pg_round_trips(const hd_store *s);

/* The name the store's messages give the database: "user@host:port/db".
 * Valid while the store is. */
const char *hd_store_pg_where(const hd_store *s);

#endif
