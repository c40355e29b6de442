/*
 * handler_locked.h - construction and teardown shared by the kinds whose
 * state is a container guarded by one mutex (set, event-stream).
 *
 * Such a state struct starts with its pthread_mutex_t, so these helpers can
 * create and release the lock without knowing the rest of the struct.
 */
#ifndef HD_HANDLER_LOCKED_H
#define HD_HANDLER_LOCKED_H

#include "handlerd/handlerd.h"

#include <stddef.h>

/* Allocates `state_size` zeroed bytes of state (whose first member is a
 * pthread_mutex_t, initialised here) and wraps them in a new handler of
 * `ops`, returned in `*out`. The handler owns the state; ops->destroy should
 * end with hd_locked_state_free. Returns HD_OK, HD_EINVAL (out is NULL),
 * HD_ENOMEM or what hd_handler_new returns, leaving nothing behind. */
hd_err hd_locked_handler_new(const hd_handler_ops *ops, size_t state_size,
                             hd_handler **out);

/* Destroys the mutex that starts `state` and frees `state`. */
void hd_locked_state_free(void *state);

#endif
