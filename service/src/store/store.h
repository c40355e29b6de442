/*
 * hd_store: where registrations live across restarts. One record per
 * registered handler: its id and its registration (model/registration.h,
 * key and secrets included), kept in the store's own format
 * (handlerd.store.v1.Registration, store_record.h), not the API's: the
 * database does not change when the API does. Each change is one
 * transaction, durable before the call returns. Backends are vtables
 * (SQLite here; a shared server database later); tests/unit/test_store.c
 * is the conformance suite every backend runs.
 *
 * Errors: every operation that can fail for a reason outside the caller's
 * control fills `msg` (may be NULL / 0) with a message naming the database
 * and the cause, e.g. "/var/lib/handlerd/handlerd.db: database or disk is
 * full". The codes are:
 *   HD_EBUSY     no room left (disk or quota full): retry once there is;
 *   HD_ENOMEM    out of memory;
 *   HD_ENOTFOUND (del) no record with that id;
 *   HD_EINVAL    bad arguments (no message), or (put) a registration the
 *                record cannot hold (a NULL where a string must be);
 *   HD_EIO       anything else: read-only database, I/O error, corruption,
 *                a record written by a newer handlerd.
 * A failed put or del changes nothing in the store.
 */
#ifndef HD_STORE_H
#define HD_STORE_H

#include "handlerd/handlerd.h"
#include "journal.h"
#include "registration.h"

#include <stddef.h>
#include <stdint.h>

typedef struct hd_store hd_store;

/* Called by load for each record. `reg` (and every string it points to) is
 * the store's decoded copy, valid only during the call: copy what you
 * keep. It may hold a webhook secret; the store wipes it afterwards. Every
 * string in it is non-NULL (a webhook without a secret has ""), every
 * field as it was put. */
typedef hd_err hd_store_registration_fn(const char *id,
                                        const hd_registration *reg, void *ud);

/* Called by changes for each record: `reg` as for load when the record
 * changed after `since`, NULL when it did not (the id is still there). */
typedef hd_err hd_store_change_fn(const char *id, int64_t version,
                                  const hd_registration *reg, void *ud);

/* A backend. */
typedef struct hd_store_vtable {
  const char *name;
  /* Inserts or replaces the record `id`; a replaced record keeps its place
   * in the load order. */
  hd_err (*put)(hd_store *s, const char *id, const hd_registration *reg,
                char *msg, size_t msg_size);
  hd_err (*del)(hd_store *s, const char *id, char *msg, size_t msg_size);
  /* Calls fn for each record in the order they were first put; stops at
   * the first non-OK return and returns it (leaving `msg` alone: fn says
   * why). fn may call put and del on the same store. A failure to read the
   * records, or a record that cannot be decoded, fills `msg`. */
  hd_err (*load)(hd_store *s, hd_store_registration_fn *fn, void *ud, char *msg,
                 size_t msg_size);
  void (*close)(hd_store *s);
  /* Shared backends only (several processes on one database; NULL
   * otherwise): every record now, in load order, with its version (the
   * change that last wrote it), the registration of those changed after
   * `since`; *latest gets the highest version seen. An id missing from the
   * walk was deleted. */
  hd_err (*changes)(hd_store *s, int64_t since, hd_store_change_fn *fn,
                    void *ud, int64_t *latest, char *msg, size_t msg_size);
  /* 0 while the database cannot be reached (NULL: always reachable). */
  int (*available)(hd_store *s);
} hd_store_vtable;

/* A backend fills in vt and impl (its own state); callers use only the
 * functions below. */
struct hd_store {
  void *impl;
  const hd_store_vtable *vt;
  /* The backend's journal of async deliveries (outbox/journal.h), freed
   * with the store; NULL when the backend keeps none. */
  hd_journal *journal;
  /* Shared backends: the version the last successful put wrote (the
   * caller serialises its puts and reads it right after). */
  int64_t put_version;
};

/* Opens (creating if needed) `<dir>/handlerd.db`: mode 0600, WAL,
 * synchronous=FULL, schema version in PRAGMA user_version (3: the
 * registrations and the outbox's journal; store_sqlite_internal.h). The
 * directory is created 0700 if missing. An existing file is checked (PRAGMA
 * quick_check) before anything is written to it: a corrupt or foreign file
 * is refused, and left as it is. A database of an older schema is migrated
 * in one transaction (schema 1, AddHandlerRequest rows, becomes 2 and then
 * 3; schema 2 gets the journal's tables: see store_sqlite_migrate.c): a
 * crash during it leaves the old database as it was. A newer schema is
 * refused. The store's `journal` (journal.h, store_sqlite_journal.c) is on
 * the same connection, made by the open and freed by hd_store_close.
 * HD_EIO (or HD_ENOMEM) with a message naming the file and the problem on
 * failure. Close with hd_store_close.
 *
 * Read-only file system: when `dir` is on a read-only mount (statvfs
 * ST_RDONLY), an existing database is opened read-only and immutable
 * (file:...?mode=ro&immutable=1: no locks, no -wal or -shm files, nothing
 * written), without WAL set-up or schema migration. Its registrations load
 * as usual and its journal reads; every put and del, and every journal
 * commit and prune, then fails with HD_EIO and a message saying the
 * database is read-only, until handlerd is restarted on a writable
 * directory. A WARN is logged at open. handlerd refuses to start instead
 * (HD_EIO with a message) when there is no database to read, when its
 * schema would need migrating, and when a non-empty `handlerd.db-wal` is
 * there: the WAL may hold committed registrations that an immutable open
 * would not see. */
hd_err hd_store_sqlite_open(const char *dir, hd_store **out, char *msg,
                            size_t msg_size);

/* Thin wrappers over the vtable; hd_store_close(NULL) is fine. put needs
 * s, id, reg and reg->key (else HD_EINVAL); the record's key is
 * reg->key. */
hd_err hd_store_put_registration(hd_store *s, const char *id,
                                 const hd_registration *reg, char *msg,
                                 size_t msg_size);
hd_err hd_store_del(hd_store *s, const char *id, char *msg, size_t msg_size);
hd_err hd_store_load_registrations(hd_store *s, hd_store_registration_fn *fn,
                                   void *ud, char *msg, size_t msg_size);
void hd_store_close(hd_store *s);
/* 1 when the store is shared with other processes (it has changes). */
int hd_store_shared(const hd_store *s);
/* 0 while the store's database cannot be reached; NULL store: 1. */
int hd_store_available(hd_store *s);

#endif
