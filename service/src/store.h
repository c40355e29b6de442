/*
 * hd_store: where registrations live across restarts. One record per
 * registered handler: its id, key and the AddHandlerRequest that made it
 * (protobuf bytes, secret included). Each change is one transaction,
 * durable before the call returns. Backends are vtables (SQLite here; a
 * shared server database later).
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
                size_t len);
  hd_err (*del)(hd_store *s, const char *id);
  /* Calls fn for each record in the order they were put; stops at the first
   * non-OK return and returns it. */
  hd_err (*load)(hd_store *s, hd_store_load_fn *fn, void *ud);
  void (*close)(hd_store *s);
} hd_store_ops;

struct hd_store {
  const hd_store_ops *ops;
  void *impl;
};

/* Opens (creating if needed) `<dir>/handlerd.db`: mode 0600, WAL,
 * synchronous=FULL, schema version in PRAGMA user_version (migrated or
 * refused when newer). The directory is created 0700 if missing. HD_EIO
 * with a message on failure. Close with hd_store_close. */
hd_err hd_store_sqlite_open(const char *dir, hd_store **out, char *msg,
                            size_t msg_size);

/* Thin wrappers over the vtable; hd_store_close(NULL) is fine. */
hd_err hd_store_put(hd_store *s, const char *id, const char *key,
                    const void *req, size_t len);
hd_err hd_store_del(hd_store *s, const char *id);
hd_err hd_store_load(hd_store *s, hd_store_load_fn *fn, void *ud);
void hd_store_close(hd_store *s);

#endif
