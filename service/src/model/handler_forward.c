/*
 * handler_forward.c - forwarding an event with a held reference
 * (handler_forward.h).
 */
#include "handler_forward.h"
#include "frame.h"

/* The caller's completion, carried through the target handler. */
struct forwarded_call {
  hd_handler *target; /* the reference taken over from the caller */
  hd_done_fn *done;
  void *done_data;
  unsigned char heap;
};

static void forwarded_done(hd_results *results, void *data) {
  struct forwarded_call call = *(struct forwarded_call *)data;

  hd_frame_free(data, call.heap);
  /* Release before completing, so that once the caller hears "done" this
   * dispatch holds nothing. */
  hd_handler_unref(call.target);
  call.done(results, call.done_data);
}

hd_err hd_handler_forward(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                          void *done_data) {
  unsigned char heap;
  struct forwarded_call *call = hd_frame_alloc(ev, sizeof(*call), &heap);
  hd_err err;

  if (call == NULL) {
    hd_handler_unref(h);
    return HD_ENOMEM;
  }
  call->heap = heap;
  call->target = h;
  call->done = done;
  call->done_data = done_data;
  err = hd_handler_handle(h, ev, forwarded_done, call);
  if (err != HD_OK) {
    /* forwarded_done will not run: undo what it would have undone. */
    hd_frame_free(call, heap);
    hd_handler_unref(h);
  }
  return err;
}
