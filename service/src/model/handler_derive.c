/*
 * handler_derive.c - derive_old_value (registry_select.h): a wrapper that
 * gives an update the old_value its sender left out, from the last value
 * the wrapper saw for that topic path, so a sender that only knows the new
 * value still gives its handlers the seed's UpdateArgs ("old_value: None
 * for the first update in a stream").
 *
 * The last values are kept per path, one copy each, under a mutex; an
 * unsubscribe of a path forgets it (the next update is a first one again).
 * An update that carries its own old_value is passed on as it is, and its
 * value is still remembered.
 */
#include "handlerd/handlerd.h"
#include "frame.h"
#include "handler_forward.h"
#include "handler_locked.h"
#include "registry_select.h"
#include "strmap.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct derive {
  pthread_mutex_t lock; /* first: see handler_locked.h */
  hd_handler *inner;
  hd_strmap *last; /* topic path -> hd_value (owned copy) */
};

static const hd_handler_ops derive_ops;

static int has_bytes(hd_value_type t) {
  return t == HD_VALUE_JSON || t == HD_VALUE_STRING || t == HD_VALUE_BINARY ||
         t == HD_VALUE_RECORD_V2;
}

static void value_free(void *p) {
  hd_value *v = p;
  if (v != NULL && has_bytes(v->type))
    free((void *)v->u.bytes.data);
  free(v);
}

/* A copy owning its bytes (NUL-terminated for text); NULL on ENOMEM. */
static hd_value *value_copy(const hd_value *v) {
  hd_value *c = malloc(sizeof(*c));
  char *bytes;

  if (c == NULL)
    return NULL;
  *c = *v;
  if (!has_bytes(v->type))
    return c;
  bytes = malloc(v->u.bytes.len + 1);
  if (bytes == NULL) {
    free(c);
    return NULL;
  }
  if (v->u.bytes.len > 0)
    memcpy(bytes, v->u.bytes.data, v->u.bytes.len);
  bytes[v->u.bytes.len] = '\0';
  c->u.bytes.data = bytes;
  return c;
}

/* An update handed on with an old_value of ours: the event copy and the
 * value live until the inner handler is done. */
struct derived {
  hd_event ev;
  hd_value *old; /* owned */
  hd_done_fn *done;
  void *done_data;
  unsigned char heap; /* a frame of the dispatch (frame.h) */
};

static void derived_done(hd_results *rs, void *data) {
  struct derived *d = data;
  hd_done_fn *done = d->done;
  void *done_data = d->done_data;

  value_free(d->old);
  hd_frame_free(d, d->heap);
  done(rs, done_data);
}

/* Remembers the update's value for its path and returns (a copy of) the
 * one before, or NULL for the first. Locked by the caller. */
static hd_value *remember(struct derive *s, const hd_event *ev, int want_old,
                          hd_err *err) {
  const char *path = ev->topic.path;
  size_t len = strlen(path);
  hd_value *prev = hd_strmap_get(s->last, path, len), *old = NULL, *now;

  *err = HD_OK;
  if (want_old && prev != NULL && (old = value_copy(prev)) == NULL) {
    *err = HD_ENOMEM;
    return NULL;
  }
  if (ev->topic.value.type == HD_VALUE_NONE) {
    value_free(hd_strmap_take(s->last, path, len));
  } else if ((now = value_copy(&ev->topic.value)) == NULL ||
             hd_strmap_put(s->last, path, len, now) != HD_OK) {
    /* The old one stays: the next update's old_value is one behind, which
     * is better than none; the event itself still goes on. */
    value_free(now);
  }
  return old;
}

static hd_err derive_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                            void *done_data) {
  struct derive *s = hd_handler_user_data(h);
  struct derived *d;
  hd_value *old;
  hd_err err;
  int want_old;

  if (ev->topic.path == NULL ||
      (ev->args_kind != HD_ARGS_UPDATE && ev->args_kind != HD_ARGS_UNSUBSCRIBE))
    return hd_handler_forward(hd_handler_ref(s->inner), ev, done, done_data);
  pthread_mutex_lock(&s->lock);
  if (ev->args_kind == HD_ARGS_UNSUBSCRIBE) {
    value_free(hd_strmap_take(s->last, ev->topic.path, strlen(ev->topic.path)));
    pthread_mutex_unlock(&s->lock);
    return hd_handler_forward(hd_handler_ref(s->inner), ev, done, done_data);
  }
  want_old = ev->topic.old_value.type == HD_VALUE_NONE;
  old = remember(s, ev, want_old, &err);
  pthread_mutex_unlock(&s->lock);
  if (err != HD_OK)
    return err;
  if (old == NULL)
    return hd_handler_forward(hd_handler_ref(s->inner), ev, done, done_data);
  unsigned char heap;
  d = hd_frame_alloc(ev, sizeof(*d), &heap);
  if (d == NULL) {
    value_free(old);
    return HD_ENOMEM;
  }
  d->heap = heap;
  d->ev = *ev;
  d->ev.topic.old_value = *old;
  d->old = old;
  d->done = done;
  d->done_data = done_data;
  /* The levels below take their frames where this one did (frame.h). */
  hd_frame_scope scope;
  hd_frame_follow(&scope, ev, &d->ev);
  err = hd_handler_forward(hd_handler_ref(s->inner), &d->ev, derived_done, d);
  hd_frame_end(&scope);
  if (err != HD_OK) {
    value_free(old);
    hd_frame_free(d, heap);
  }
  return err;
}

static hd_err derive_remove(hd_handler *h, const char *member_id) {
  struct derive *s = hd_handler_user_data(h);
  return hd_handler_remove(s->inner, member_id);
}

static void derive_destroy(hd_handler *h) {
  struct derive *s = hd_handler_user_data(h);

  hd_handler_unref(s->inner);
  hd_strmap_free(s->last);
  hd_locked_state_free(s);
}

static const hd_handler_ops derive_ops = {
    .kind = "derive-old-value",
    .handle = derive_handle,
    .remove = derive_remove,
    .destroy = derive_destroy,
};

hd_err hd_derive_old_value_new(hd_handler *inner, hd_handler **out) {
  hd_handler *h;
  struct derive *s;
  hd_err err;

  if (inner == NULL || out == NULL)
    return HD_EINVAL;
  err = hd_locked_handler_new(&derive_ops, sizeof(struct derive), &h);
  if (err != HD_OK)
    return err;
  s = hd_handler_user_data(h);
  s->last = hd_strmap_new(value_free);
  if (s->last == NULL || hd_handler_set_id(h, hd_handler_id(inner)) != HD_OK) {
    hd_handler_unref(h); /* destroy copes with a NULL inner and map */
    return HD_ENOMEM;
  }
  s->inner = hd_handler_ref(inner);
  *out = h;
  return HD_OK;
}
