/*
 * store.c - hd_store_*: thin wrappers over a backend's vtable. Backends
 * (store_sqlite.c, ...) fill in struct hd_store; callers use only these.
 */
#include "store.h"

/* Backends may write only part of a message; start from an empty one. */
static void clear_msg(char *msg, size_t msg_size) {
  if (msg && msg_size)
    msg[0] = '\0';
}

hd_err hd_store_put(hd_store *s, const char *id, const char *key,
                    const void *req, size_t len, char *msg, size_t msg_size) {
  clear_msg(msg, msg_size);
  if (!s || !id || !key || (!req && len > 0))
    return HD_EINVAL;
  return s->ops->put(s, id, key, req, len, msg, msg_size);
}

hd_err hd_store_del(hd_store *s, const char *id, char *msg, size_t msg_size) {
  clear_msg(msg, msg_size);
  if (!s || !id)
    return HD_EINVAL;
  return s->ops->del(s, id, msg, msg_size);
}

hd_err hd_store_load(hd_store *s, hd_store_load_fn *fn, void *ud, char *msg,
                     size_t msg_size) {
  clear_msg(msg, msg_size);
  if (!s || !fn)
    return HD_EINVAL;
  return s->ops->load(s, fn, ud, msg, msg_size);
}

void hd_store_close(hd_store *s) {
  if (s)
    s->ops->close(s);
}
