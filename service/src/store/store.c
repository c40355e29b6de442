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

hd_err hd_store_put_registration(hd_store *s, const char *id,
                                 const hd_registration *reg, char *msg,
                                 size_t msg_size) {
  clear_msg(msg, msg_size);
  if (!s || !id || !reg || !reg->key)
    return HD_EINVAL;
  return s->vt->put(s, id, reg, msg, msg_size);
}

hd_err hd_store_del(hd_store *s, const char *id, char *msg, size_t msg_size) {
  clear_msg(msg, msg_size);
  if (!s || !id)
    return HD_EINVAL;
  return s->vt->del(s, id, msg, msg_size);
}

hd_err hd_store_load_registrations(hd_store *s, hd_store_registration_fn *fn,
                                   void *ud, char *msg, size_t msg_size) {
  clear_msg(msg, msg_size);
  if (!s || !fn)
    return HD_EINVAL;
  return s->vt->load(s, fn, ud, msg, msg_size);
}

void hd_store_close(hd_store *s) {
  if (s)
    s->vt->close(s);
}

int hd_store_shared(const hd_store *s) {
  return s && s->vt->changes != NULL;
}

int hd_store_available(hd_store *s) {
  return !s || !s->vt->available || s->vt->available(s);
}
