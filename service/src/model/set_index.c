/*
 * set_index.c - the prefix index of a set's selected members (set_index.h):
 * a hash map from a literal prefix to the entries filed under it.
 */
#include "set_index.h"
#include "array.h"
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

typedef struct bucket {
  set_entry *entries;
  size_t n, cap;
} bucket;

struct set_index {
  hd_strmap *buckets; /* prefix -> bucket */
};

static void bucket_free(void *p) {
  bucket *b = p;
  if (b != NULL)
    free(b->entries);
  free(b);
}

set_index *set_index_new(void) {
  set_index *x = calloc(1, sizeof(*x));
  if (x != NULL && (x->buckets = hd_strmap_new(bucket_free)) == NULL) {
    free(x);
    x = NULL;
  }
  return x;
}

void set_index_free(set_index *x) {
  if (x == NULL)
    return;
  hd_strmap_free(x->buckets);
  free(x);
}

/* The distinct prefixes of `sel` (a set's members may share one). */
static size_t prefixes_of(const hd_selector *sel, const char *const **out) {
  return hd_selector_prefixes(sel, out);
}

static void bucket_drop(set_index *x, const char *prefix, uint64_t order) {
  size_t len = strlen(prefix);
  bucket *b = hd_strmap_get(x->buckets, prefix, len);

  if (b == NULL)
    return;
  for (size_t i = 0; i < b->n; i++) {
    if (b->entries[i].order == order) {
      hd_array_close(b->entries, b->n, sizeof(*b->entries), i);
      b->n--;
      break;
    }
  }
  if (b->n == 0)
    bucket_free(hd_strmap_take(x->buckets, prefix, len));
}

hd_err set_index_add(set_index *x, const set_entry *e) {
  const char *const *prefixes;
  size_t n = prefixes_of(e->sel, &prefixes);

  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(prefixes[i]);
    bucket *b = hd_strmap_get(x->buckets, prefixes[i], len);
    int fresh = b == NULL;

    if (fresh && ((b = calloc(1, sizeof(*b))) == NULL ||
                  hd_strmap_put(x->buckets, prefixes[i], len, b) != HD_OK)) {
      free(b);
      goto undo;
    }
    /* A selector set may file one member twice under the same prefix:
     * once is enough. */
    if (b->n > 0 && b->entries[b->n - 1].order == e->order)
      continue;
    if (hd_array_reserve(&b->entries, &b->cap, b->n, sizeof(*b->entries), 4) !=
        HD_OK) {
      if (fresh)
        bucket_free(hd_strmap_take(x->buckets, prefixes[i], len));
      n = i;
      goto undo;
    }
    b->entries[b->n++] = *e;
  }
  return HD_OK;
undo:
  for (size_t i = 0; i < n; i++)
    bucket_drop(x, prefixes[i], e->order);
  return HD_ENOMEM;
}

void set_index_remove(set_index *x, const hd_selector *sel, uint64_t order) {
  const char *const *prefixes;
  size_t n = prefixes_of(sel, &prefixes);

  for (size_t i = 0; i < n; i++)
    bucket_drop(x, prefixes[i], order);
}

static hd_err take_bucket(const set_index *x, const char *prefix, size_t len,
                          set_entry **out, size_t *n, size_t *cap) {
  const bucket *b = hd_strmap_get(x->buckets, prefix, len);

  if (b == NULL)
    return HD_OK;
  while (*cap < *n + b->n) {
    if (hd_array_reserve(out, cap, *cap, sizeof(**out), 16) != HD_OK)
      return HD_ENOMEM;
  }
  memcpy(*out + *n, b->entries, b->n * sizeof(**out));
  *n += b->n;
  return HD_OK;
}

hd_err set_index_candidates(const set_index *x, const char *path, size_t len,
                            set_entry **out, size_t *n, size_t *cap) {
  hd_err err;

  /* Diffusion paths have no leading "/"; a sender's one is not a segment. */
  while (len > 0 && path[0] == '/') {
    path++;
    len--;
  }
  err = take_bucket(x, "", 0, out, n, cap);
  for (size_t i = 1; err == HD_OK && i <= len; i++) {
    if (i == len || path[i] == '/')
      err = take_bucket(x, path, i, out, n, cap);
  }
  return err;
}
