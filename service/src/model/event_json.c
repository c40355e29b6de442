/*
 * hd_event_to_json: an event as the proto3 JSON mapping of its
 * DispatchRequest args (camelCase names), plus "key" and "event". This is
 * what the log/echo built-ins emit and what webhooks receive, so it must be
 * stable: fields come out in a fixed order.
 *
 * Choices where the mapping leaves room:
 *   - a JSON topic value is embedded as JSON ({"jsonValue":{...}}), not as a
 *     string, so consumers need not parse twice; text that does not parse
 *     (an event that skipped validation) is embedded as a string instead;
 *   - the scalar fields of the event's args are always written, default
 *     values included ("reason":"REQUESTED", "code":0), so a consumer sees
 *     the same shape every time; absent values and specs are left out;
 *   - text that is not valid UTF-8 has each bad byte replaced by U+FFFD, as
 *     JSON cannot carry it.
 */
#include "event_json.h"
#include "handlerd/handlerd.h"

#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    else if (c == 0xED)
      hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0)
      lo = 0x90; /* overlong */
    else if (c == 0xF4)
      hi = 0x8F; /* beyond U+10FFFF */
  } else
    return 0;
  if (n < len || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80)
      return 0;
  return len;
}

/* A JSON string of `len` bytes of `s`, repaired when not UTF-8. */
static json_t *jstrn(const char *s, size_t len) {
  if (!s)
    return json_string("");
  json_t *j = json_stringn(s, len);
  if (j)
    return j;

  /* Invalid UTF-8 (or out of memory): each bad byte becomes U+FFFD, which
   * is three bytes, so the text at most triples. */
  if (len > (SIZE_MAX - 1) / 3)
    return NULL;
  char *buf = malloc(len * 3 + 1);
  if (!buf)
    return NULL;
  const unsigned char *u = (const unsigned char *)s;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq_len(u + i, len - i);
    if (n == 0) {
      memcpy(buf + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i++;
    } else {
      memcpy(buf + o, u + i, n);
      o += n;
      i += n;
    }
  }
  j = json_stringn(buf, o);
  free(buf);
  return j;
}

static json_t *jstr(const char *s) {
  return jstrn(s, s ? strlen(s) : 0);
}

/* Sets obj[name] = v, taking v; fails (returns -1) when v is NULL. */
static int set(json_t *obj, const char *name, json_t *v) {
  return json_object_set_new(obj, name, v);
}

/* Standard, padded base64 (OpenSSL's encoder), as proto3 JSON wants for
 * bytes. Values are bounded by the gRPC message limit, far below INT_MAX. */
static json_t *jbase64(const char *data, size_t len) {
  if (len > (size_t)INT_MAX / 4 * 3 - 3)
    return NULL;
  unsigned char *b = malloc(4 * ((len + 2) / 3) + 1);
  if (!b)
    return NULL;
  int n = EVP_EncodeBlock(b, (const unsigned char *)data, (int)len);
  json_t *j = json_stringn((const char *)b, (size_t)n);
  free(b);
  return j;
}

/* proto3 JSON writes non-finite doubles as strings. */
static json_t *jdouble(double d) {
  if (isnan(d))
    return json_string("NaN");
  if (isinf(d))
    return json_string(d > 0 ? "Infinity" : "-Infinity");
  return json_real(d);
}

/* A TopicValue message: {"<case>Value": ...}. */
static json_t *value_json(const hd_value *v) {
  const char *data = v->u.bytes.data ? v->u.bytes.data : "";
  size_t len = v->u.bytes.data ? v->u.bytes.len : 0;
  json_t *obj = json_object();
  json_t *inner = NULL;
  const char *name = NULL;
  char num[32];

  if (!obj)
    return NULL;
  switch (v->type) {
  case HD_VALUE_JSON:
    name = "jsonValue";
    inner = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!inner)
      inner = jstrn(data, len);
    break;
  case HD_VALUE_STRING:
    name = "stringValue";
    inner = jstrn(data, len);
    break;
  case HD_VALUE_INT64: /* a string: JSON numbers lose int64 precision */
    name = "int64Value";
    snprintf(num, sizeof num, "%lld", (long long)v->u.i64);
    inner = json_string(num);
    break;
  case HD_VALUE_DOUBLE:
    name = "doubleValue";
    inner = jdouble(v->u.f64);
    break;
  case HD_VALUE_BINARY:
    name = "binaryValue";
    inner = jbase64(data, len);
    break;
  case HD_VALUE_RECORD_V2:
    name = "recordV2Value";
    inner = jbase64(data, len);
    break;
  default: /* NONE never gets here; an unknown type maps to an empty value */
    return obj;
  }
  if (set(obj, name, inner) != 0) {
    json_decref(obj);
    return NULL;
  }
  return obj;
}

/* Adds obj[name] = value unless the value is absent. */
static int set_value(json_t *obj, const char *name, const hd_value *v) {
  if (v->type == HD_VALUE_NONE)
    return 0;
  return set(obj, name, value_json(v));
}

static const char *const topic_type_names[] = {"TOPIC_TYPE_UNSPECIFIED",
                                               "JSON",
                                               "STRING",
                                               "INT64",
                                               "DOUBLE",
                                               "BINARY",
                                               "TIME_SERIES",
                                               "RECORD_V2"};

static const char *const reason_names[] = {"REQUESTED",
                                           "CONTROL",
                                           "REMOVAL",
                                           "AUTHORIZATION",
                                           "UNKNOWN_UNSUBSCRIBE_REASON",
                                           "BACK_PRESSURE",
                                           "BRANCH_MAPPINGS"};

/* An enum by name, or by number when this version does not know it (as the
 * proto3 mapping does for open enums). */
static json_t *jenum(const char *const *names, size_t n, int v) {
  if (v >= 0 && (size_t)v < n)
    return json_string(names[v]);
  return json_integer(v);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static int add_topic_args(json_t *obj, const hd_event *ev) {
  if (set(obj, "topicPath", jstr(ev->topic.path)) ||
      set_value(obj, "topicValue", &ev->topic.value))
    return -1;
  if (ev->topic.has_spec) {
    json_t *spec = json_object();
    if (set(obj, "topicSpec", spec) ||
        set(spec, "type",
            jenum(topic_type_names, N(topic_type_names), (int)ev->topic.type)))
      return -1;
    json_t *props = json_object();
    if (set(spec, "properties", props))
      return -1;
    for (size_t i = 0; i < ev->topic.n_properties; i++) {
      const hd_property *p = &ev->topic.properties[i];
      if (!p->name)
        continue;
      /* Object keys must be UTF-8 too; go through a checked string. */
      json_t *name = jstr(p->name);
      if (!name)
        return -1;
      int rc =
          json_object_set_new(props, json_string_value(name), jstr(p->value));
      json_decref(name);
      if (rc)
        return -1;
    }
  }
  if (ev->args_kind == HD_ARGS_UPDATE &&
      set_value(obj, "oldValue", &ev->topic.old_value))
    return -1;
  if (ev->args_kind == HD_ARGS_UNSUBSCRIBE &&
      set(obj, "reason",
          jenum(reason_names, N(reason_names), (int)ev->topic.reason)))
    return -1;
  return 0;
}

static int add_args(json_t *obj, const hd_event *ev) {
  switch (ev->args_kind) {
  case HD_ARGS_SUBSCRIBE:
  case HD_ARGS_UPDATE:
  case HD_ARGS_UNSUBSCRIBE:
    return add_topic_args(obj, ev);
  case HD_ARGS_ERROR:
    return set(obj, "code", json_integer(ev->error.code)) ||
                   set(obj, "description", jstr(ev->error.description))
               ? -1
               : 0;
  case HD_ARGS_RESPONSE:
    return set(obj, "conversationId", jstr(ev->response.conversation_id)) ||
                   set(obj, "senderSessionId",
                       jstr(ev->response.sender_session_id)) ||
                   set(obj, "path", jstr(ev->response.path)) ||
                   set(obj, "expected", json_integer(ev->response.expected)) ||
                   set(obj, "received", json_integer(ev->response.received)) ||
                   set_value(obj, "response", &ev->response.response)
               ? -1
               : 0;
  default:
    return 0;
  }
}

json_t *hd_event_json_object(const hd_event *ev) {
  if (!ev)
    return NULL;
  json_t *obj = json_object();
  if (obj &&
      (set(obj, "key", jstr(ev->key)) != 0 ||
       set(obj, "event", jstr(ev->name)) != 0 || add_args(obj, ev) != 0)) {
    json_decref(obj);
    obj = NULL;
  }
  return obj;
}

char *hd_event_to_json(const hd_event *ev) {
  json_t *obj = hd_event_json_object(ev);
  if (!obj)
    return NULL;
  char *text = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(obj);
  return text;
}
