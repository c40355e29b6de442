/*
 * array.h - the growable, optionally name-sorted arrays behind sets, event
 * streams, the registry and the function table.
 *
 * Items are plain structs of `size` bytes; the caller keeps the pointer,
 * the count and the capacity and does its own locking. Sorted arrays order
 * items by a `char *` member (at `name_offset`) with strcmp.
 */
#ifndef HD_ARRAY_H
#define HD_ARRAY_H

#include "handlerd/error.h"

#include <stddef.h>

/* Makes room for one more item when the array is full (`count == *cap`):
 * reallocates `*items_p` (the address of the caller's `T *`) to twice the
 * capacity, or to `first` items when empty, and updates `*cap`. Returns
 * HD_OK, or HD_ENOMEM with the array unchanged. */
hd_err hd_array_reserve(void *items_p, size_t *cap, size_t count, size_t size,
                        size_t first);

/* Moves items `at`..`count`-1 up one place, leaving a gap at `at` for the
 * caller to fill (then count++). Needs room for count + 1 items. */
void hd_array_open(void *items, size_t count, size_t size, size_t at);

/* Moves items `at`+1..`count`-1 down one place over item `at` (then
 * count--). The caller has taken what item `at` owned. */
void hd_array_close(void *items, size_t count, size_t size, size_t at);

/* Binary search for `name` among `count` items sorted by the `char *` at
 * `name_offset`. Returns 1 and its index in `*at` when found, else 0 and the
 * index where it would be inserted. */
int hd_array_find(const void *items, size_t count, size_t size,
                  size_t name_offset, const char *name, size_t *at);

#endif
