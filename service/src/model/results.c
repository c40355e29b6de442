/*
 * results.c - hd_result setters and the hd_results list.
 *
 * A list is a growable array of hd_result held by value: one allocation for
 * the common case of a handful of results, and hd_results_take() is a memcpy
 * because moving a result never needs to touch the bytes it owns.
 */
#include "handlerd/handlerd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hd_results {
  hd_result *items;
  size_t count;
  size_t cap;
};

static int value_has_bytes(hd_value_type type) {
  return type == HD_VALUE_JSON || type == HD_VALUE_STRING ||
         type == HD_VALUE_BINARY || type == HD_VALUE_RECORD_V2;
}

/* Frees the value's bytes (if it owns any) and resets it to NONE. */
static void value_clear(hd_value *v) {
  if (value_has_bytes(v->type))
    free((char *)v->u.bytes.data);
  memset(v, 0, sizeof(*v));
}

/* Frees everything a result owns; the struct itself lives in the list. */
static void result_release(hd_result *r) {
  value_clear(&r->value);
  free(r->message);
  r->message = NULL;
}

/* ---- setters ----------------------------------------------------------- */

hd_err hd_result_set_bytes(hd_result *r, hd_value_type type, const void *data,
                           size_t len) {
  char *copy;

  /* Only the byte-carrying types make sense here; numbers have their own
   * setters and NONE is "no bytes". */
  if (r == NULL || !value_has_bytes(type) || (data == NULL && len > 0))
    return HD_EINVAL;
  /* +1: text types are read as C strings too, so always NUL-terminate. */
  copy = malloc(len + 1);
  if (copy == NULL)
    return HD_ENOMEM;
  if (len > 0)
    memcpy(copy, data, len);
  copy[len] = '\0';
  value_clear(&r->value);
  r->value.type = type;
  r->value.u.bytes.data = copy;
  r->value.u.bytes.len = len;
  return HD_OK;
}

hd_err hd_result_set_json(hd_result *r, const char *json) {
  if (json == NULL)
    return HD_EINVAL;
  return hd_result_set_bytes(r, HD_VALUE_JSON, json, strlen(json));
}

hd_err hd_result_set_string(hd_result *r, const char *s) {
  if (s == NULL)
    return HD_EINVAL;
  return hd_result_set_bytes(r, HD_VALUE_STRING, s, strlen(s));
}

void hd_result_set_int64(hd_result *r, int64_t v) {
  if (r == NULL)
    return;
  value_clear(&r->value);
  r->value.type = HD_VALUE_INT64;
  r->value.u.i64 = v;
}

void hd_result_set_double(hd_result *r, double v) {
  if (r == NULL)
    return;
  value_clear(&r->value);
  r->value.type = HD_VALUE_DOUBLE;
  r->value.u.f64 = v;
}

hd_err hd_result_set_value(hd_result *r, const hd_value *v) {
  if (r == NULL || v == NULL)
    return HD_EINVAL;
  /* `v` may alias r->value (setting a result from itself): copy the scalar
   * out before value_clear() can free what it points to. */
  if (value_has_bytes(v->type)) {
    if (v == &r->value)
      return HD_OK;
    return hd_result_set_bytes(r, v->type, v->u.bytes.data, v->u.bytes.len);
  }
  switch (v->type) {
  case HD_VALUE_NONE:
    value_clear(&r->value);
    return HD_OK;
  case HD_VALUE_INT64:
    hd_result_set_int64(r, v->u.i64);
    return HD_OK;
  case HD_VALUE_DOUBLE:
    hd_result_set_double(r, v->u.f64);
    return HD_OK;
  default:
    return HD_EINVAL;
  }
}

void hd_result_set_error(hd_result *r, hd_err err, const char *fmt, ...) {
  char *msg = NULL;
  va_list ap;

  if (r == NULL)
    return;
  if (fmt != NULL) {
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
      msg = NULL; /* out of memory: the error code alone still tells */
    va_end(ap);
  }
  free(r->message);
  r->message = msg;
  /* HD_OK is not a failure; keep the result failed with something useful. */
  r->err = err == HD_OK ? HD_EHANDLER : err;
}

/* ---- the list ---------------------------------------------------------- */

hd_results *hd_results_new(void) {
  return calloc(1, sizeof(hd_results));
}

void hd_results_free(hd_results *rs) {
  if (rs == NULL)
    return;
  for (size_t i = 0; i < rs->count; i++)
    result_release(&rs->items[i]);
  free(rs->items);
  free(rs);
}

size_t hd_results_count(const hd_results *rs) {
  return rs == NULL ? 0 : rs->count;
}

hd_result *hd_results_at(const hd_results *rs, size_t i) {
  if (rs == NULL || i >= rs->count)
    return NULL;
  return &rs->items[i];
}

/* Makes room for `more` results. Doubling keeps appends amortised O(1). */
static hd_err reserve(hd_results *rs, size_t more) {
  size_t need, cap;
  hd_result *items;

  if (more > SIZE_MAX / sizeof(hd_result) - rs->count)
    return HD_ENOMEM;
  need = rs->count + more;
  if (need <= rs->cap)
    return HD_OK;
  cap = rs->cap ? rs->cap : 4;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 / sizeof(hd_result) ? need : cap * 2;
  items = realloc(rs->items, cap * sizeof(hd_result));
  if (items == NULL)
    return HD_ENOMEM;
  rs->items = items;
  rs->cap = cap;
  return HD_OK;
}

hd_result *hd_results_append(hd_results *rs) {
  hd_result *r;

  if (rs == NULL || reserve(rs, 1) != HD_OK)
    return NULL;
  r = &rs->items[rs->count++];
  memset(r, 0, sizeof(*r));
  return r;
}

hd_err hd_results_take(hd_results *to, hd_results *from) {
  hd_err err;

  if (to == NULL || from == NULL || to == from)
    return HD_EINVAL;
  if (from->count == 0)
    return HD_OK;
  /* Reserve first: on ENOMEM both lists are left as they were. */
  err = reserve(to, from->count);
  if (err != HD_OK)
    return err;
  memcpy(&to->items[to->count], from->items, from->count * sizeof(hd_result));
  to->count += from->count;
  from->count = 0;
  return HD_OK;
}
