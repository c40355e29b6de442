/*
 * handlerctl: names of value types and enums, topic values from text or
 * JSON, base64, and the pool that keeps an event's borrowed strings alive.
 */
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- pool ---------------------------------------------------------------- */

void *hcli_pool_keep(hcli_pool *pool, void *p) {
  if (p == NULL)
    return NULL;
  if (pool->n == pool->cap) {
    size_t cap = pool->cap ? pool->cap * 2 : 16;
    void **items = realloc(pool->items, cap * sizeof *items);
    if (items == NULL) {
      free(p);
      return NULL;
    }
    pool->items = items;
    pool->cap = cap;
  }
  pool->items[pool->n++] = p;
  return p;
}

void hcli_pool_clear(hcli_pool *pool) {
  for (size_t i = 0; i < pool->n; i++)
    free(pool->items[i]);
  pool->n = 0;
}

/* ---- names --------------------------------------------------------------- */

typedef struct name_num {
  const char *name;
  int num;
} name_num;

static int lookup(const name_num *t, const char *s, int *out) {
  for (; t->name != NULL; t++)
    if (strcasecmp(t->name, s) == 0) {
      *out = t->num;
      return 0;
    }
  return -1;
}

static const name_num value_types[] = {{"json", HC_VALUE_JSON},
                                       {"string", HC_VALUE_STRING},
                                       {"int64", HC_VALUE_INT64},
                                       {"double", HC_VALUE_DOUBLE},
                                       {"binary", HC_VALUE_BINARY},
                                       {"record_v2", HC_VALUE_RECORD_V2},
                                       {NULL, 0}};

int hcli_parse_value_type(const char *s, hc_value_type *out) {
  int v;
  if (lookup(value_types, s, &v) != 0)
    return -1;
  *out = (hc_value_type)v;
  return 0;
}

const char *hcli_value_type_name(hc_value_type t) {
  for (const name_num *n = value_types; n->name != NULL; n++)
    if (n->num == (int)t)
      return n->name;
  return "none";
}

int hcli_parse_topic_type(const char *s, hc_topic_type *out) {
  static const name_num t[] = {
      {"json", HC_TOPIC_JSON},           {"string", HC_TOPIC_STRING},
      {"int64", HC_TOPIC_INT64},         {"double", HC_TOPIC_DOUBLE},
      {"binary", HC_TOPIC_BINARY},       {"time_series", HC_TOPIC_TIME_SERIES},
      {"record_v2", HC_TOPIC_RECORD_V2}, {NULL, 0}};
  int v;
  if (lookup(t, s, &v) != 0)
    return -1;
  *out = (hc_topic_type)v;
  return 0;
}

int hcli_parse_reason(const char *s, hc_unsubscribe_reason *out) {
  static const name_num t[] = {{"REQUESTED", HC_UNSUB_REQUESTED},
                               {"CONTROL", HC_UNSUB_CONTROL},
                               {"REMOVAL", HC_UNSUB_REMOVAL},
                               {"AUTHORIZATION", HC_UNSUB_AUTHORIZATION},
                               {"UNKNOWN", HC_UNSUB_UNKNOWN},
                               {"UNKNOWN_UNSUBSCRIBE_REASON", HC_UNSUB_UNKNOWN},
                               {"BACK_PRESSURE", HC_UNSUB_BACK_PRESSURE},
                               {"BRANCH_MAPPINGS", HC_UNSUB_BRANCH_MAPPINGS},
                               {NULL, 0}};
  int v;
  unsigned long n;
  if (lookup(t, s, &v) == 0) {
    *out = (hc_unsubscribe_reason)v;
    return 0;
  }
  if (hcli_parse_uint(s, HC_UNSUB_BRANCH_MAPPINGS, &n) == 0) {
    *out = (hc_unsubscribe_reason)n;
    return 0;
  }
  return -1;
}

int hcli_parse_args_kind(const char *s, hc_args_kind *out) {
  static const name_num t[] = {{"none", HC_ARGS_NONE},
                               {"subscribe", HC_ARGS_SUBSCRIBE},
                               {"update", HC_ARGS_UPDATE},
                               {"unsubscribe", HC_ARGS_UNSUBSCRIBE},
                               {"error", HC_ARGS_ERROR},
                               {"response", HC_ARGS_RESPONSE},
                               {NULL, 0}};
  int v;
  if (lookup(t, s, &v) != 0)
    return -1;
  *out = (hc_args_kind)v;
  return 0;
}

/* ---- base64 -------------------------------------------------------------- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *hcli_base64_encode(const void *data, size_t len) {
  const unsigned char *in = data;
  char *out = malloc(4 * ((len + 2) / 3) + 1);
  if (out == NULL)
    return NULL;
  char *o = out;
  size_t i = 0;
  for (; i + 2 < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *o++ = b64[v >> 18 & 63];
    *o++ = b64[v >> 12 & 63];
    *o++ = b64[v >> 6 & 63];
    *o++ = b64[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < len)
      v |= (uint32_t)in[i + 1] << 8;
    *o++ = b64[v >> 18 & 63];
    *o++ = b64[v >> 12 & 63];
    *o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
    *o++ = '=';
  }
  *o = '\0';
  return out;
}

unsigned char *hcli_base64_decode(const char *text, size_t *len) {
  size_t n = strlen(text);
  while (n > 0 && text[n - 1] == '=')
    n--;
  if (n % 4 == 1)
    return NULL;
  unsigned char *out = malloc(n * 3 / 4 + 1);
  if (out == NULL)
    return NULL;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    const char *p = text[i] != '\0' ? strchr(b64, text[i]) : NULL;
    if (p == NULL) {
      free(out);
      return NULL;
    }
    acc = acc << 6 | (uint32_t)(p - b64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits & 0xff);
    }
  }
  out[o] = '\0';
  *len = o;
  return out;
}

/* ---- values -------------------------------------------------------------- */

static int fail(char *err, size_t size, const char *msg) {
  snprintf(err, size, "%s", msg);
  return -1;
}

/* Fills a bytes value from base64 text. */
static int bytes_value(hc_value_type t, const char *text, hcli_pool *pool,
                       hc_value *out, char *err, size_t size) {
  size_t len = 0;
  unsigned char *bytes = hcli_base64_decode(text, &len);
  if (bytes == NULL)
    return fail(err, size, "is not valid base64");
  if (hcli_pool_keep(pool, bytes) == NULL)
    return fail(err, size, "out of memory");
  out->type = t;
  out->data = (const char *)bytes;
  out->len = len;
  return 0;
}

int hcli_value_from_text(hc_value_type t, const char *text, hcli_pool *pool,
                         hc_value *out, char *err, size_t size) {
  memset(out, 0, sizeof *out);
  char *end;
  switch (t) {
  case HC_VALUE_JSON: {
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (j == NULL) {
      snprintf(err, size, "is not valid JSON: %s", je.text);
      return -1;
    }
    json_decref(j);
    *out = hc_value_json(text);
    return 0;
  }
  case HC_VALUE_STRING:
    *out = hc_value_string(text);
    return 0;
  case HC_VALUE_INT64: {
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0)
      return fail(err, size, "is not a 64-bit integer");
    *out = hc_value_int64(v);
    return 0;
  }
  case HC_VALUE_DOUBLE: {
    errno = 0;
    double v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno == ERANGE)
      return fail(err, size, "is not a number");
    *out = hc_value_double(v);
    return 0;
  }
  case HC_VALUE_BINARY:
  case HC_VALUE_RECORD_V2:
    return bytes_value(t, text, pool, out, err, size);
  default:
    return fail(err, size, "has no type");
  }
}

int hcli_value_from_json(hc_value_type t, json_t *j, hcli_pool *pool,
                         hc_value *out, char *err, size_t size) {
  memset(out, 0, sizeof *out);
  switch (t) {
  case HC_VALUE_JSON: {
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    if (hcli_pool_keep(pool, text) == NULL)
      return fail(err, size, "cannot be encoded as JSON");
    *out = hc_value_json(text);
    return 0;
  }
  case HC_VALUE_STRING:
    if (!json_is_string(j))
      return fail(err, size, "must be a JSON string for type string");
    *out = hc_value_string(json_string_value(j));
    return 0;
  case HC_VALUE_INT64:
    if (!json_is_integer(j))
      return fail(err, size, "must be an integer for type int64");
    *out = hc_value_int64((int64_t)json_integer_value(j));
    return 0;
  case HC_VALUE_DOUBLE:
    if (!json_is_number(j))
      return fail(err, size, "must be a number for type double");
    *out = hc_value_double(json_number_value(j));
    return 0;
  case HC_VALUE_BINARY:
  case HC_VALUE_RECORD_V2:
    if (!json_is_string(j))
      return fail(err, size, "must be a base64 string for a bytes type");
    return bytes_value(t, json_string_value(j), pool, out, err, size);
  default:
    return fail(err, size, "has no type");
  }
}

int hcli_parse_uint(const char *s, unsigned long max, unsigned long *out) {
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max)
    return -1;
  *out = v;
  return 0;
}

int hcli_parse_int32(const char *s, int *out) {
  if (s == NULL || *s == '\0')
    return -1;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
    return -1;
  *out = (int)v;
  return 0;
}
