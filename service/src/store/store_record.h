/*
 * store_record.h - the store's record format: an hd_registration as a
 * handlerd.store.v1.Registration (proto/handlerd/store/v1/registration.proto),
 * the bytes every backend keeps. Backends call these; nothing above the
 * store sees the format.
 */
#ifndef HD_STORE_RECORD_H
#define HD_STORE_RECORD_H

#include "arena.h"
#include "registration.h"

#include <stddef.h>
#include <stdint.h>

/* The newest record format this handlerd reads and writes. A record is
 * written as the oldest version that holds it: 1; 2 when a target is
 * async, which a version-1 reader would restore as a synchronous webhook;
 * 3 when it has a selector or derive_old_value, which an older reader would
 * drop and deliver every topic, or no derived old_value
 * (proto/handlerd/store/v1/registration.proto says why these must be
 * refused rather than half-understood). */
#define HD_STORE_RECORD_VERSION 3
/* What a record with none of those is written as: older handlerds read
 * it as it was meant. */
#define HD_STORE_RECORD_VERSION_BASE 1
#define HD_STORE_RECORD_VERSION_ASYNC 2
#define HD_STORE_RECORD_VERSION_SELECT 3

/* Encodes `reg` into *out (malloc'd, *len bytes; may hold a secret: wipe
 * it before free), as the oldest version that holds it (above). HD_EINVAL
 * with `why` when the registration has a NULL where a string must be, or
 * an unknown target kind; HD_ENOMEM. */
hd_err hd_store_record_encode(const hd_registration *reg, uint8_t **out,
                              size_t *len, char *why, size_t why_size);

/* Decodes a record into *out, every byte of it allocated in `a` (wipe the
 * arena afterwards: it holds any secret); fields a record lacks (one
 * written before they existed) are 0, NULL or empty. HD_EINVAL with `why`
 * when the bytes are not a record or a string in it holds a NUL; HD_EIO
 * with `why` when the record is of a newer format; HD_ENOMEM. */
hd_err hd_store_record_decode(const void *buf, size_t len, hd_arena *a,
                              hd_registration *out, char *why, size_t why_size);

#endif
