/*
 * handler.c - the generic handler object: a vtable, the kind's state, a
 * reference count and an id. Kinds live in handler_<kind>.c.
 */
#include "handlerd/handlerd.h"
#include "clock.h"
#include "frame.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct hd_handler {
  const hd_handler_ops *ops;
  void *user_data;
  atomic_uint refs;
  char id[HD_HANDLER_ID_MAX + 1];
};

/* Fills `id` with "h-" + 12 lowercase hex digits from the kernel's CSPRNG:
 * ids are shown to clients and used to remove handlers, so they must not be
 * guessable from one another. */
static hd_err random_id(char id[HD_HANDLER_ID_MAX + 1]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char raw[6];
  size_t got = 0;

  while (got < sizeof(raw)) {
    ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return HD_EIO;
    }
    got += (size_t)n;
  }
  id[0] = 'h';
  id[1] = '-';
  for (size_t i = 0; i < sizeof(raw); i++) {
    id[2 + 2 * i] = hex[raw[i] >> 4];
    id[3 + 2 * i] = hex[raw[i] & 0xf];
  }
  id[2 + 2 * sizeof(raw)] = '\0';
  return HD_OK;
}

hd_err hd_handler_random_id(char id[HD_HANDLER_ID_MAX + 1]) {
  return random_id(id);
}

hd_err hd_handler_new(const hd_handler_ops *ops, void *user_data,
                      hd_handler **out) {
  hd_handler *h;
  hd_err err;

  if (ops == NULL || ops->handle == NULL || out == NULL)
    return HD_EINVAL;
  h = calloc(1, sizeof(*h));
  if (h == NULL)
    return HD_ENOMEM;
  err = random_id(h->id);
  if (err != HD_OK) {
    free(h);
    return err;
  }
  h->ops = ops;
  h->user_data = user_data;
  atomic_init(&h->refs, 1);
  *out = h;
  return HD_OK;
}

hd_handler *hd_handler_ref(hd_handler *h) {
  if (h != NULL)
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
  return h;
}

void hd_handler_unref(hd_handler *h) {
  if (h == NULL)
    return;
  /* acq_rel: the thread that drops the last reference must see every write
   * other holders made before they let go. */
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (h->ops->destroy != NULL)
    h->ops->destroy(h);
  free(h);
}

const char *hd_handler_id(const hd_handler *h) {
  return h->id;
}

hd_err hd_handler_set_id(hd_handler *h, const char *id) {
  size_t len;

  if (h == NULL || id == NULL)
    return HD_EINVAL;
  len = strlen(id);
  if (len == 0 || len > HD_HANDLER_ID_MAX)
    return HD_EINVAL;
  memcpy(h->id, id, len + 1);
  return HD_OK;
}

const char *hd_handler_kind(const hd_handler *h) {
  return h->ops->kind != NULL ? h->ops->kind : "";
}

void *hd_handler_user_data(const hd_handler *h) {
  return h->user_data;
}

const hd_handler_ops *hd_handler_ops_of(const hd_handler *h) {
  return h->ops;
}

/* ---- timed dispatch ----------------------------------------------------- */

/* The completion we interpose to time the call: the only state a handle()
 * needs beyond the caller's, a frame of the dispatch (frame.h). */
struct timed_call {
  hd_done_fn *done;
  void *done_data;
  int64_t start_ns;
  const char *kind;
  unsigned char heap;
};

static void timed_done(hd_results *results, void *data) {
  struct timed_call call = *(struct timed_call *)data;
  int64_t elapsed = -1;
  size_t n = hd_results_count(results);

  hd_frame_free(data, call.heap);
  /* Kinds that time themselves more precisely (a simple function, a set's
   * members) have already set a duration; only fill the blanks. The clock
   * is read only for a blank: reading it was the largest cost of a nested
   * dispatch of local functions (bench/frame_bench). */
  for (size_t i = 0; i < n; i++) {
    hd_result *r = hd_results_at(results, i);
    if (r->duration_ns == 0) {
      if (elapsed < 0)
        elapsed = mono_ns() - call.start_ns;
      r->duration_ns = elapsed > 0 ? elapsed : 1;
    }
    if (r->kind == NULL)
      r->kind = call.kind; /* the innermost (leaf) handler's kind wins */
  }
  call.done(results, call.done_data);
}

hd_err hd_handler_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                         void *done_data) {
  struct timed_call *call;
  hd_err err;

  if (h == NULL || ev == NULL || done == NULL)
    return HD_EINVAL;
  unsigned char heap;
  call = hd_frame_alloc(ev, sizeof(*call), &heap);
  if (call == NULL)
    return HD_ENOMEM;
  call->heap = heap;
  call->done = done;
  call->done_data = done_data;
  call->start_ns = mono_ns();
  call->kind = hd_handler_kind(h);
  /* After a successful handle() the completion may already have run and
   * freed `call`: it must not be touched again on that path. */
  err = h->ops->handle(h, ev, timed_done, call);
  if (err != HD_OK)
    hd_frame_free(call, heap);
  return err;
}

hd_err hd_handler_remove(hd_handler *h, const char *member_id) {
  if (h == NULL || member_id == NULL)
    return HD_EINVAL;
  if (h->ops->remove == NULL)
    return HD_EUNSUPPORTED;
  return h->ops->remove(h, member_id);
}

/* ---- synchronous wait ------------------------------------------------------
 */

struct sync_wait {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int finished;
  hd_results *results;
};

static void sync_done(hd_results *results, void *data) {
  struct sync_wait *w = data;

  pthread_mutex_lock(&w->lock);
  w->results = results;
  w->finished = 1;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

hd_err hd_handler_run_sync(hd_handler *h, const hd_event *ev,
                           hd_results **out) {
  struct sync_wait w = {.finished = 0, .results = NULL};
  hd_err err;

  if (out == NULL)
    return HD_EINVAL;
  pthread_mutex_init(&w.lock, NULL);
  pthread_cond_init(&w.cond, NULL);
  err = hd_handler_handle(h, ev, sync_done, &w);
  if (err == HD_OK) {
    pthread_mutex_lock(&w.lock);
    while (!w.finished)
      pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    *out = w.results;
  }
  pthread_cond_destroy(&w.cond);
  pthread_mutex_destroy(&w.lock);
  return err;
}
