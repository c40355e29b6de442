/*
 * store_decode.h - what the two record decoders share
 * (store_record.c: handlerd.store.v1.Registration; store_v1_request.c:
 * schema 1's AddHandlerRequest). Internal to the store.
 */
#ifndef HD_STORE_DECODE_H
#define HD_STORE_DECODE_H

#include "arena.h"
#include "registration.h"

#include <stddef.h>
#include <stdint.h>

/* Sets the webhook fields both formats carry as plain values in `w`, and
 * makes room in `a` for its `n_headers` headers (zeroed; none when 0),
 * which the caller decodes, their fields differing by format, and counts
 * into w->n_headers. HD_OK, or HD_ENOMEM. */
static inline hd_err
hd_store_dec_webhook_plain(hd_arena *a, hd_webhook_spec *w, int new_secret,
                           uint32_t timeout_ms, uint32_t max_attempts,
                           int binary_mode, size_t n_headers) {
  w->new_secret = new_secret;
  w->timeout_ms = timeout_ms;
  w->max_attempts = max_attempts;
  w->binary_mode = binary_mode;
  if (n_headers &&
      !(w->headers = hd_arena_calloc(a, n_headers, sizeof(*w->headers))))
    return HD_ENOMEM;
  return HD_OK;
}

#endif
