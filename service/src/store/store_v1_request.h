/*
 * store_v1_request.h - the rows of schema 1: an AddHandlerRequest
 * (handlers.v1, the API's message) as the release before the store's own
 * format saved it. The one place in the store that knows the API: the
 * migration reads schema-1 rows with it.
 */
#ifndef HD_STORE_V1_REQUEST_H
#define HD_STORE_V1_REQUEST_H

#include "arena.h"
#include "registration.h"

#include <stddef.h>

/* Decodes AddHandlerRequest bytes into *out, all of it in `a` (wipe the
 * arena afterwards: it holds any secret). Map entries (routes, headers)
 * keep their order on the wire. HD_EINVAL with `why` when the bytes are
 * not an AddHandlerRequest; HD_ENOMEM. */
hd_err hd_store_v1_decode(const void *buf, size_t len, hd_arena *a,
                          hd_registration *out, char *why, size_t why_size);

#endif
