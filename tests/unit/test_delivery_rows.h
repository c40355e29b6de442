/*
 * test_delivery_rows.h - owned copies of the outbox journal's rows
 * (outbox/journal.h), for the unit tests that keep what a journal was
 * given or handed out (test_outbox.c's fake journal, test_journal.c's
 * collector), and an array that grows as they are added. Include after
 * <cmocka.h>.
 */
#ifndef HD_TEST_DELIVERY_ROWS_H
#define HD_TEST_DELIVERY_ROWS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "journal.h"

/* The next slot of `*(T **)arr_p` (n used of cap), grown as needed;
 * counted in n. Use PUSH. */
static inline void *push_slot(void *arr_p, size_t *n, size_t *cap,
                              size_t size) {
  void **arr = arr_p;

  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 16;
    *arr = realloc(*arr, *cap * size);
    assert_non_null(*arr);
  }
  return (char *)*arr + (*n)++ * size;
}

/* The address of a new last element of the array `arr` (n of cap). */
#define PUSH(arr, n, cap)                                                      \
  ((__typeof__(arr))push_slot(&(arr), &(n), &(cap), sizeof(*(arr))))

/* A copy of `s` ("" for NULL). */
static inline char *dupstr(const char *s) {
  char *p = strdup(s ? s : "");
  assert_non_null(p);
  return p;
}

/* A copy of the `n` bytes at `p` (one more allocated, so never NULL). */
static inline unsigned char *dup_bytes(const unsigned char *p, size_t n) {
  unsigned char *c = malloc(n + 1);
  assert_non_null(c);
  if (n) {
    assert_non_null(p);
    memcpy(c, p, n);
  }
  return c;
}

/* The string fields of a delivery row, by offset. */
static const size_t row_strings[] = {
    offsetof(hd_delivery_row, key),
    offsetof(hd_delivery_row, handler_id),
    offsetof(hd_delivery_row, route),
    offsetof(hd_delivery_row, event_name),
    offsetof(hd_delivery_row, ordering_key),
    offsetof(hd_delivery_row, headers),
    offsetof(hd_delivery_row, last_error),
};

#define N_ROW_STRINGS (sizeof(row_strings) / sizeof(row_strings[0]))

/* String field `i` (below N_ROW_STRINGS) of `r`. */
static inline const char **row_string(const hd_delivery_row *r, size_t i) {
  return (const char **)((const char *)r + row_strings[i]);
}

/* *dst = *src with its strings and body copied (free with row_clear). */
static inline void row_copy(hd_delivery_row *dst, const hd_delivery_row *src) {
  *dst = *src;
  for (size_t i = 0; i < N_ROW_STRINGS; i++)
    *row_string(dst, i) = dupstr(*row_string(src, i));
  dst->body = dup_bytes(src->body, src->body_len);
}

static inline void row_clear(hd_delivery_row *r) {
  for (size_t i = 0; i < N_ROW_STRINGS; i++)
    free((char *)*row_string(r, i));
  free((void *)r->body);
}

/* *dst = *src with its strings and response head copied (free with
 * attempt_clear). */
static inline void attempt_copy(hd_attempt_row *dst,
                                const hd_attempt_row *src) {
  *dst = *src;
  dst->delivery_id = dupstr(src->delivery_id);
  dst->error = dupstr(src->error);
  dst->response_head = dup_bytes(src->response_head, src->response_head_len);
}

static inline void attempt_clear(hd_attempt_row *a) {
  free((char *)a->delivery_id);
  free((char *)a->error);
  free((void *)a->response_head);
}

#endif
