/*
 * A small hash map from byte-string keys to owned values, for per-handler
 * state in the built-ins. Not thread-safe: the owner locks.
 */
#ifndef HD_STRMAP_H
#define HD_STRMAP_H

#include "handlerd/error.h"

#include <stddef.h>

typedef struct hd_strmap hd_strmap;

/* New empty map whose values are freed with `free_value` (may be NULL).
 * NULL when out of memory. */
hd_strmap *hd_strmap_new(void (*free_value)(void *));
/* Frees the map, its keys and values. NULL is fine. */
void hd_strmap_free(hd_strmap *m);
/* The value under the `len` bytes of `key`, or NULL. Valid until the entry is
 * replaced or the map freed. */
void *hd_strmap_get(const hd_strmap *m, const void *key, size_t len);
/* Stores `value` under `key` (copied), freeing the value it replaces. On
 * HD_ENOMEM `value` is not taken. */
hd_err hd_strmap_put(hd_strmap *m, const void *key, size_t len, void *value);
size_t hd_strmap_count(const hd_strmap *m);
/* Removes the entry under `key` and returns its value (not freed: the
 * caller's now), or NULL when there is none. */
void *hd_strmap_take(hd_strmap *m, const void *key, size_t len);
/* Calls fn(value, ud) for each entry, in no particular order. fn must not
 * add or remove entries. */
void hd_strmap_each(const hd_strmap *m, void (*fn)(void *value, void *ud),
                    void *ud);

#endif
