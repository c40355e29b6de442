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

/* The record format this handlerd writes, and the newest it reads. */
#define HD_STORE_RECORD_VERSION 1

/* Encodes `reg` into *out (malloc'd, *len bytes; may hold a secret: wipe
 * it before free). HD_EINVAL with `why` when the registration has a NULL
 * where a string must be, or an unknown target kind; HD_ENOMEM. */
hd_err hd_store_record_encode(const hd_registration *reg, uint8_t **out,
                              size_t *len, char *why, size_t why_size);

/* Decodes a record into *out, every byte of it allocated in `a` (wipe the
 * arena afterwards: it holds any secret). HD_EINVAL with `why` when the
 * bytes are not a record or a string in it holds a NUL; HD_EIO with `why`
 * when the record is of a newer format; HD_ENOMEM. */
hd_err hd_store_record_decode(const void *buf, size_t len, hd_arena *a,
                              hd_registration *out, char *why, size_t why_size);

#endif
