/*
 * handler_forward.h - handing an event on to another handler while holding
 * a reference to it (an event stream to its route, the registry to a key's
 * set), so that a concurrent remove cannot free it mid-call.
 */
#ifndef HD_HANDLER_FORWARD_H
#define HD_HANDLER_FORWARD_H

#include "handlerd/handlerd.h"

/* Runs hd_handler_handle(h, ev, done, done_data), taking over the caller's
 * reference on `h`. The reference is dropped just before `done` runs, so once
 * the caller hears "done" this call holds nothing (a removed handler is
 * already gone); when handle fails it is dropped before returning. Returns
 * what hd_handler_handle returns, or HD_ENOMEM. */
hd_err hd_handler_forward(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                          void *done_data);

#endif
