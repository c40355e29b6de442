/*
 * set_index.h - a set's members that have a topic selector, indexed by the
 * literal prefixes of their selectors (selector.h), so that the members an
 * event may reach are found by looking up the prefixes of its topic path
 * that end at a segment boundary ("", "a", "a/b", "a/b/c" for "a/b/c")
 * rather than by trying every selector. Not thread-safe: the set locks.
 */
#ifndef HD_SET_INDEX_H
#define HD_SET_INDEX_H

#include "handlerd/handlerd.h"
#include "selector.h"

#include <stddef.h>
#include <stdint.h>

/* A member as the set keeps it: `order` is its place in the set (increasing
 * with insertion; a replacement keeps it), by which results are ordered. The
 * index holds copies of entries, not references: the set owns them. */
typedef struct set_entry {
  hd_handler *member;
  hd_selector *sel; /* NULL: every event */
  uint64_t order;
} set_entry;

typedef struct set_index set_index;

/* NULL on ENOMEM. */
set_index *set_index_new(void);
void set_index_free(set_index *x);

/* Adds `e` (e->sel not NULL) under each of its selector's prefixes. On
 * HD_ENOMEM nothing is added. */
hd_err set_index_add(set_index *x, const set_entry *e);

/* Removes the entry of `order` (added with selector `sel`). */
void set_index_remove(set_index *x, const hd_selector *sel, uint64_t order);

/* Appends to *out (grown with hd_array_reserve: *cap) the entries under
 * every segment-boundary prefix of `path` (`len` bytes). A member filed
 * under two of those prefixes (a selector set) comes twice: the caller
 * sorts by order and drops repeats. Their selectors have not been matched
 * yet. HD_ENOMEM. */
hd_err set_index_candidates(const set_index *x, const char *path, size_t len,
                            set_entry **out, size_t *n, size_t *cap);

#endif
