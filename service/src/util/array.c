/*
 * array.c - growable and name-sorted arrays (array.h).
 */
#include "array.h"

#include <stdlib.h>
#include <string.h>

hd_err hd_array_reserve(void *items_p, size_t *cap, size_t count, size_t size,
                        size_t first) {
  void *items, *grown;
  size_t want;

  if (count < *cap)
    return HD_OK;
  /* `items_p` points at the caller's `T *`: copied, not cast to void **,
   * so no pointer is read through the wrong type. */
  memcpy(&items, items_p, sizeof(items));
  want = *cap ? *cap * 2 : first;
  grown = realloc(items, want * size);
  if (grown == NULL)
    return HD_ENOMEM;
  memcpy(items_p, &grown, sizeof(grown));
  *cap = want;
  return HD_OK;
}

void hd_array_open(void *items, size_t count, size_t size, size_t at) {
  char *p = items;

  memmove(p + (at + 1) * size, p + at * size, (count - at) * size);
}

void hd_array_close(void *items, size_t count, size_t size, size_t at) {
  char *p = items;

  memmove(p + at * size, p + (at + 1) * size, (count - at - 1) * size);
}

int hd_array_find(const void *items, size_t count, size_t size,
                  size_t name_offset, const char *name, size_t *at) {
  const char *p = items;
  size_t lo = 0, hi = count;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const char *item_name;
    int c;

    memcpy(&item_name, p + mid * size + name_offset, sizeof(item_name));
    c = strcmp(name, item_name);
    if (c == 0) {
      *at = mid;
      return 1;
    }
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  *at = lo;
  return 0;
}
