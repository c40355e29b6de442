/*
 * handler_simple.c - the "simple" kind: one in-process function, one result,
 * completed before handle() returns.
 */
#include "handlerd/handlerd.h"
#include "clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct simple {
  hd_function_fn *fn;
  void *user_data;
  void (*free_user_data)(void *);
};

static hd_err simple_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                            void *done_data) {
  struct simple *s = hd_handler_user_data(h);
  hd_results *rs = hd_results_new();
  hd_result *r;
  int64_t start;
  hd_err err;

  if (rs == NULL || (r = hd_results_append(rs)) == NULL) {
    hd_results_free(rs);
    return HD_ENOMEM;
  }
  /* The function sees its own id, as documented for hd_function_fn. */
  strcpy(r->handler_id, hd_handler_id(h));
  start = mono_ns();
  err = s->fn(ev, s->user_data, r);
  r->duration_ns = mono_ns() - start;
  if (r->duration_ns <= 0)
    r->duration_ns = 1; /* 0 means "not timed" to hd_handler_handle */
  /* A function that failed without explaining itself still gets a message,
   * so the client never sees a bare failure. */
  if (err != HD_OK && r->err == HD_OK)
    hd_result_set_error(r, err, "function failed: %s", hd_strerror(err));
  done(rs, done_data);
  return HD_OK;
}

static void simple_destroy(hd_handler *h) {
  struct simple *s = hd_handler_user_data(h);

  if (s->free_user_data != NULL)
    s->free_user_data(s->user_data);
  free(s);
}

static const hd_handler_ops simple_ops = {
    .kind = "simple",
    .handle = simple_handle,
    .remove = NULL, /* no members: hd_handler_remove says HD_EUNSUPPORTED */
    .destroy = simple_destroy,
};

hd_err hd_simple_new(hd_function_fn *fn, void *user_data,
                     void (*free_user_data)(void *), hd_handler **out) {
  struct simple *s;
  hd_err err;

  if (fn == NULL || out == NULL)
    return HD_EINVAL;
  s = malloc(sizeof(*s));
  if (s == NULL)
    return HD_ENOMEM;
  s->fn = fn;
  s->user_data = user_data;
  s->free_user_data = free_user_data;
  err = hd_handler_new(&simple_ops, s, out);
  if (err != HD_OK)
    free(s); /* not user_data: on failure the caller still owns it */
  return err;
}
