/*
 * store.c - hd_store_*: thin wrappers over a backend's vtable. Backends
 * (store_sqlite.c, ...) fill in struct hd_store; callers use only these.
 */
#include "store.h"

hd_err hd_store_put(hd_store *s, const char *id, const char *key,
                    const void *req, size_t len) {
  if (!s || !id || !key || (!req && len > 0))
    return HD_EINVAL;
  return s->ops->put(s, id, key, req, len);
}

hd_err hd_store_del(hd_store *s, const char *id) {
  if (!s || !id)
    return HD_EINVAL;
  return s->ops->del(s, id);
}

hd_err hd_store_load(hd_store *s, hd_store_load_fn *fn, void *ud) {
  if (!s || !fn)
    return HD_EINVAL;
  return s->ops->load(s, fn, ud);
}

void hd_store_close(hd_store *s) {
  if (s)
    s->ops->close(s);
}
