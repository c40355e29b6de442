/*
 * handler_locked.c - kinds with one mutex-guarded state (handler_locked.h).
 */
#include "handler_locked.h"

#include <pthread.h>
#include <stdlib.h>

hd_err hd_locked_handler_new(const hd_handler_ops *ops, size_t state_size,
                             hd_handler **out) {
  pthread_mutex_t *state;
  hd_err err;

  if (out == NULL)
    return HD_EINVAL;
  state = calloc(1, state_size);
  if (state == NULL)
    return HD_ENOMEM;
  pthread_mutex_init(state, NULL);
  err = hd_handler_new(ops, state, out);
  if (err != HD_OK)
    hd_locked_state_free(state);
  return err;
}

void hd_locked_state_free(void *state) {
  pthread_mutex_destroy(state);
  free(state);
}
