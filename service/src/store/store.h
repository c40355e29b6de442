/*
 * hd_store: where registrations live across restarts. One record per
 * registered handler: its id, key and the AddHandlerRequest that made it
 * (protobuf bytes, secret included). Each change is one transaction,
 * durable before the call returns. Backends are vtables (SQLite here; a
 * shared server database later).
 *
 * Errors: every operation that can fail for a reason outside the caller's
 * control fills `msg` (may be NULL / 0) with a message naming the database
 * and the cause, e.g. "/var/lib/handlerd/handlerd.db: database or disk is
 * full". The codes are:
 *   HD_EBUSY     no room left (disk or quota full): retry once there is;
 *   HD_ENOMEM    out of memory;
 *   HD_ENOTFOUND (del) no record with that id;
 *   HD_EINVAL    bad arguments (no message);
 *   HD_EIO       anything else: read-only database, I/O error, corruption.
 * A failed put or del changes nothing in the store.
 */
#ifndef HD_STORE_H
#define HD_STORE_H

#include "handlerd/handlerd.h"

#include <stddef.h>

typedef struct hd_store hd_store;

typedef hd_err hd_store_load_fn(const char *id, const char *key,
                                const void *req, size_t len, void *ud);

typedef struct hd_store_ops {
  const char *name;
  hd_err (*put)(hd_store *s, const char *id, const char *key, const void *req,
                size_t len, char *msg, size_t msg_size);
  hd_err (*del)(hd_store *s, const char *id, char *msg, size_t msg_size);
  /* Calls fn for each record in the order they were put; stops at the first
   * non-OK return and returns it (leaving `msg` alone: fn says why). A
   * failure to read the records fills `msg`. */
  hd_err (*load)(hd_store *s, hd_store_load_fn *fn, void *ud, char *msg,
                 size_t msg_size);
  void (*close)(hd_store *s);
} hd_store_ops;

struct hd_store {
  const hd_store_ops *ops;
  void *impl;
};

/* Opens (creating if needed) `<dir>/handlerd.db`: mode 0600, WAL,
 * synchronous=FULL, schema version in PRAGMA user_version (migrated or
 * refused when newer). The directory is created 0700 if missing. An
 * existing file is checked (PRAGMA quick_check) before anything is written
 * to it: a corrupt or foreign file is refused, and left as it is. HD_EIO
 * (or HD_ENOMEM) with a message naming the file and the problem on
 * failure. Close with hd_store_close.
 *
 * Read-only file system: when `dir` is on a read-only mount (statvfs
 * ST_RDONLY), an existing database is opened read-only and immutable
 * (file:...?mode=ro&immutable=1: no locks, no -wal or -shm files, nothing
 * written), without WAL set-up or schema migration. Its registrations load
 * as usual; every put and del then fails with HD_EIO and a message saying
 * the database is read-only, until handlerd is restarted on a writable
 * directory. A WARN is logged at open. handlerd refuses to start instead
 * (HD_EIO with a message) when there is no database to read, when its
 * schema would need migrating, and when a non-empty `handlerd.db-wal` is
 * there: the WAL may hold committed registrations that an immutable open
 * would not see. */
hd_err hd_store_sqlite_open(const char *dir, hd_store **out, char *msg,
                            size_t msg_size);

/* Thin wrappers over the vtable; hd_store_close(NULL) is fine. */
hd_err hd_store_put(hd_store *s, const char *id, const char *key,
                    const void *req, size_t len, char *msg, size_t msg_size);
hd_err hd_store_del(hd_store *s, const char *id, char *msg, size_t msg_size);
hd_err hd_store_load(hd_store *s, hd_store_load_fn *fn, void *ud, char *msg,
                     size_t msg_size);
void hd_store_close(hd_store *s);

#endif
