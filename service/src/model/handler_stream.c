/*
 * handler_stream.c - the "event-stream" kind: each event name is routed to
 * its own sub-handler (the seed's EventStreamHandler).
 *
 * Routes are a sorted array searched by name: a stream has a handful of
 * routes, and sorted order is what hd_stream_foreach promises anyway. The
 * mutex covers the array only; sub-handlers are called with it released,
 * holding a reference so a concurrent re-route cannot free them.
 */
#include "handlerd/handlerd.h"

#include "array.h"
#include "handler_locked.h"
#include "handler_forward.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct route {
  char *name;
  hd_handler *sub;
};

struct stream {
  pthread_mutex_t lock; /* first: see handler_locked.h */
  struct route *routes; /* sorted by name (strcmp) */
  size_t count;
  size_t cap;
};
_Static_assert(offsetof(struct stream, lock) == 0, "see handler_locked.h");

static const hd_handler_ops stream_ops;

static struct stream *stream_of(hd_handler *h) {
  if (h == NULL || hd_handler_ops_of(h) != &stream_ops)
    return NULL;
  return hd_handler_user_data(h);
}

/* Binary search. Returns 1 and the index when found, else 0 and the index
 * where `name` would be inserted. Call with the lock held. */
static int find_route(const struct stream *s, const char *name, size_t *at) {
  return hd_array_find(s->routes, s->count, sizeof(*s->routes),
                       offsetof(struct route, name), name, at);
}

/* ---- handle ------------------------------------------------------------- */

static hd_err stream_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                            void *done_data) {
  struct stream *s = hd_handler_user_data(h);
  hd_handler *sub = NULL;
  size_t at;

  if (ev->name != NULL) {
    pthread_mutex_lock(&s->lock);
    if (find_route(s, ev->name, &at))
      sub = hd_handler_ref(s->routes[at].sub);
    pthread_mutex_unlock(&s->lock);
  }

  if (sub == NULL) {
    hd_results *none = hd_results_new();
    if (none == NULL)
      return HD_ENOMEM;
    hd_log(HD_LOG_DEBUG,
           "event-stream %s: key \"%s\": no route for event \"%s\"",
           hd_handler_id(h), ev->key ? ev->key : "", ev->name ? ev->name : "");
    done(none, done_data);
    return HD_OK;
  }

  /* The reference taken under the lock keeps `sub` alive through a
   * concurrent re-route; forwarding drops it. */
  return hd_handler_forward(sub, ev, done, done_data);
}

/* ---- routes -------------------------------------------------------------- */

hd_err hd_stream_route(hd_handler *h, const char *event_name, hd_handler *sub) {
  struct stream *s = stream_of(h);
  hd_handler *old = NULL;
  char *name;
  size_t at;

  /* A route to itself would recurse forever and keep itself alive. Names
   * longer than an event name may be could never match a valid event. */
  if (s == NULL || sub == NULL || sub == h || event_name == NULL ||
      event_name[0] == '\0' || strlen(event_name) > HD_EVENT_NAME_MAX)
    return HD_EINVAL;

  pthread_mutex_lock(&s->lock);
  if (find_route(s, event_name, &at)) {
    old = s->routes[at].sub;
    s->routes[at].sub = hd_handler_ref(sub);
    pthread_mutex_unlock(&s->lock);
    hd_handler_unref(old); /* outside the lock: may run a destroy */
    return HD_OK;
  }
  name = strdup(event_name);
  if (name == NULL || hd_array_reserve(&s->routes, &s->cap, s->count,
                                       sizeof(*s->routes), 4) != HD_OK) {
    pthread_mutex_unlock(&s->lock);
    free(name);
    return HD_ENOMEM;
  }
  hd_array_open(s->routes, s->count, sizeof(*s->routes), at);
  s->routes[at].name = name;
  s->routes[at].sub = hd_handler_ref(sub);
  s->count++;
  pthread_mutex_unlock(&s->lock);
  return HD_OK;
}

/* The stream's remove(): member ids of a stream are event names. */
static hd_err stream_remove(hd_handler *h, const char *event_name) {
  struct stream *s = hd_handler_user_data(h);
  struct route gone;
  size_t at;

  pthread_mutex_lock(&s->lock);
  if (!find_route(s, event_name, &at)) {
    pthread_mutex_unlock(&s->lock);
    return HD_ENOTFOUND;
  }
  gone = s->routes[at];
  hd_array_close(s->routes, s->count, sizeof(*s->routes), at);
  s->count--;
  pthread_mutex_unlock(&s->lock);
  free(gone.name);
  hd_handler_unref(gone.sub);
  return HD_OK;
}

void hd_stream_foreach(hd_handler *h,
                       void (*fn)(const char *event_name, hd_handler *sub,
                                  void *ud),
                       void *ud) {
  struct stream *s = stream_of(h);
  struct route *snap;
  size_t n, names = 0;
  char *p;

  if (s == NULL || fn == NULL)
    return;
  /* Snapshot routes and names in one block under the lock so `fn` runs
   * unlocked (it may route or remove on this very stream). */
  pthread_mutex_lock(&s->lock);
  n = s->count;
  for (size_t i = 0; i < n; i++)
    names += strlen(s->routes[i].name) + 1;
  snap = malloc(n * sizeof(*snap) + names + 1);
  if (snap == NULL) {
    pthread_mutex_unlock(&s->lock);
    hd_log(HD_LOG_ERROR, "event-stream %s: out of memory listing routes",
           hd_handler_id(h));
    return;
  }
  p = (char *)(snap + n);
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(s->routes[i].name) + 1;
    memcpy(p, s->routes[i].name, len);
    snap[i].name = p;
    snap[i].sub = hd_handler_ref(s->routes[i].sub);
    p += len;
  }
  pthread_mutex_unlock(&s->lock);

  for (size_t i = 0; i < n; i++)
    fn(snap[i].name, snap[i].sub, ud);
  for (size_t i = 0; i < n; i++)
    hd_handler_unref(snap[i].sub);
  free(snap);
}

/* ---- lifetime --------------------------------------------------------------
 */

static void stream_destroy(hd_handler *h) {
  struct stream *s = hd_handler_user_data(h);

  for (size_t i = 0; i < s->count; i++) {
    free(s->routes[i].name);
    hd_handler_unref(s->routes[i].sub);
  }
  free(s->routes);
  hd_locked_state_free(s);
}

static const hd_handler_ops stream_ops = {
    .kind = "event-stream",
    .handle = stream_handle,
    .remove = stream_remove,
    .destroy = stream_destroy,
};

hd_err hd_stream_new(hd_handler **out) {
  return hd_locked_handler_new(&stream_ops, sizeof(struct stream), out);
}
