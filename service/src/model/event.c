/*
 * Events: which args each known event name takes, validation against the
 * contract (proto/handlers/v1/handlers.proto), and deep copies.
 * The JSON mapping lives in event_json.c.
 */
#include "handlerd/handlerd.h"

#include "errmsg.h"
#include "utf8.h"

#include <jansson.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The seed's event names and the args case each takes. */
static const struct {
  const char *name;
  hd_args_kind kind;
} known_events[] = {
    {"subscribe", HD_ARGS_SUBSCRIBE}, {"close", HD_ARGS_SUBSCRIBE},
    {"update", HD_ARGS_UPDATE},       {"unsubscribe", HD_ARGS_UNSUBSCRIBE},
    {"error", HD_ARGS_ERROR},         {"response", HD_ARGS_RESPONSE},
};

const char *hd_event_topic_path(const hd_event *ev) {
  const char *path = NULL;

  switch (ev->args_kind) {
  case HD_ARGS_SUBSCRIBE:
  case HD_ARGS_UPDATE:
  case HD_ARGS_UNSUBSCRIBE:
    path = ev->topic.path;
    break;
  case HD_ARGS_RESPONSE:
    path = ev->response.path;
    break;
  default:
    break;
  }
  return path != NULL && path[0] != '\0' ? path : NULL;
}

hd_args_kind hd_event_expected_args(const char *name, int *known) {
  if (name) {
    for (size_t i = 0; i < sizeof known_events / sizeof known_events[0]; i++) {
      if (strcmp(name, known_events[i].name) == 0) {
        if (known)
          *known = 1;
        return known_events[i].kind;
      }
    }
  }
  if (known)
    *known = 0;
  return HD_ARGS_NONE;
}

/* The oneof case's name in handlers.proto, for messages. */
static const char *args_name(hd_args_kind kind) {
  switch (kind) {
  case HD_ARGS_NONE:
    return "no";
  case HD_ARGS_SUBSCRIBE:
    return "subscribe";
  case HD_ARGS_UPDATE:
    return "update";
  case HD_ARGS_UNSUBSCRIBE:
    return "unsubscribe";
  case HD_ARGS_ERROR:
    return "error";
  case HD_ARGS_RESPONSE:
    return "response";
  }
  return "unknown";
}

static int is_topic_args(hd_args_kind kind) {
  return kind == HD_ARGS_SUBSCRIBE || kind == HD_ARGS_UPDATE ||
         kind == HD_ARGS_UNSUBSCRIBE;
}

/* A required string of 1 to `max` bytes. strnlen so that an over-long (or
 * unterminated) string is not scanned further than needed. */
static hd_err check_length(const char *field, const char *s, size_t max,
                           char *msg, size_t msg_size) {
  size_t len = s ? strnlen(s, max + 1) : 0;
  if (len == 0)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "%s is empty", field);
  if (len > max) {
    len += strlen(s + len);
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "%s is %zu bytes, the limit is %zu", field, len, max);
  }
  if (!hd_utf8_valid(s, len))
    return hd_errmsg(msg, msg_size, HD_EINVAL, "%s is not valid UTF-8", field);
  return HD_OK;
}

static hd_err check_value(const char *field, const hd_value *v, char *msg,
                          size_t msg_size) {
  switch (v->type) {
  case HD_VALUE_NONE:
  case HD_VALUE_INT64:
  case HD_VALUE_DOUBLE:
    return HD_OK;
  case HD_VALUE_STRING:
  case HD_VALUE_BINARY:
  case HD_VALUE_RECORD_V2:
  case HD_VALUE_JSON:
    break;
  default:
    return hd_errmsg(msg, msg_size, HD_EINVAL, "%s has unknown type %d", field,
                     (int)v->type);
  }
  if (!v->u.bytes.data && v->u.bytes.len > 0)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "%s has a length but no data",
                     field);
  if (v->type == HD_VALUE_STRING &&
      !hd_utf8_valid(v->u.bytes.data, v->u.bytes.len))
    return hd_errmsg(msg, msg_size, HD_EINVAL, "%s is not valid UTF-8", field);
  if (v->type != HD_VALUE_JSON)
    return HD_OK;

  /* JSON_ALLOW_NUL: "\u0000" is valid JSON. Note that jansson refuses
   * integers outside int64 although JSON allows them. */
  json_error_t jerr;
  json_t *j = json_loadb(v->u.bytes.data ? v->u.bytes.data : "", v->u.bytes.len,
                         JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
  if (!j)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "%s is not valid JSON: %s",
                     field, jerr.text);
  json_decref(j);
  return HD_OK;
}

hd_err hd_event_validate(const hd_event *ev, char *msg, size_t msg_size) {
  hd_err err;

  if (msg && msg_size > 0)
    msg[0] = '\0';
  if (!ev)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "no event");
  if ((err = check_length("key", ev->key, HD_KEY_MAX, msg, msg_size)))
    return err;
  if ((err = check_length("event name", ev->name, HD_EVENT_NAME_MAX, msg,
                          msg_size)))
    return err;
  if (ev->args_kind < HD_ARGS_NONE || ev->args_kind > HD_ARGS_RESPONSE)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "unknown args kind %d",
                     (int)ev->args_kind);

  int known;
  hd_args_kind want = hd_event_expected_args(ev->name, &known);
  if (known && ev->args_kind != want)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "event '%s' takes %s args, got %s args", ev->name,
                     args_name(want), args_name(ev->args_kind));

  if (is_topic_args(ev->args_kind)) {
    if ((err = check_length("topic_path", ev->topic.path, HD_TOPIC_PATH_MAX,
                            msg, msg_size)))
      return err;
    if ((err = check_value("topic_value", &ev->topic.value, msg, msg_size)))
      return err;
    if (ev->topic.n_properties > 0 && !ev->topic.properties)
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "topic_spec has properties but no array");
    for (size_t i = 0; i < ev->topic.n_properties; i++) {
      if (!ev->topic.properties[i].name || !ev->topic.properties[i].value)
        return hd_errmsg(msg, msg_size, HD_EINVAL,
                         "topic_spec property %zu is NULL", i);
    }
  }
  if (ev->args_kind == HD_ARGS_UPDATE &&
      (err = check_value("old_value", &ev->topic.old_value, msg, msg_size)))
    return err;
  if (ev->args_kind == HD_ARGS_UNSUBSCRIBE &&
      (ev->topic.reason < HD_UNSUB_REQUESTED ||
       ev->topic.reason > HD_UNSUB_BRANCH_MAPPINGS))
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "reason %d is not an unsubscribe reason (0 to 6)",
                     (int)ev->topic.reason);
  if (ev->args_kind == HD_ARGS_RESPONSE &&
      (err = check_value("response", &ev->response.response, msg, msg_size)))
    return err;
  return HD_OK;
}

/* ---- copies ------------------------------------------------------------- */

/*
 * A copy is one block: the hd_event, then the property array, then every
 * string and value's bytes. Sizing and copying walk the same fields through
 * one function, `layout`, so the two cannot disagree: with `dst` NULL it only
 * counts bytes; otherwise it copies into the block at `*cursor`.
 */
struct layout {
  char *cursor; /* next free byte; NULL while sizing */
  size_t size;  /* bytes needed so far */
  int overflow;
};

static const char *put_bytes(struct layout *l, const char *s, size_t len) {
  if (len == SIZE_MAX || l->size > SIZE_MAX - (len + 1)) {
    l->overflow = 1;
    return NULL;
  }
  l->size += len + 1; /* NUL-terminated even for binary values */
  if (!l->cursor)
    return NULL;
  char *d = l->cursor;
  if (len > 0)
    memcpy(d, s, len);
  d[len] = '\0';
  l->cursor += len + 1;
  return d;
}

/* NULL stays NULL: an absent description is not an empty one. */
static const char *put_str(struct layout *l, const char *s) {
  return s ? put_bytes(l, s, strlen(s)) : NULL;
}

static void put_value(struct layout *l, hd_value *dst, const hd_value *src) {
  switch (src->type) {
  case HD_VALUE_JSON:
  case HD_VALUE_STRING:
  case HD_VALUE_BINARY:
  case HD_VALUE_RECORD_V2: {
    /* NULL data with a length is rejected by validation; copy it empty. */
    size_t len = src->u.bytes.data ? src->u.bytes.len : 0;
    const char *d = put_bytes(l, src->u.bytes.data, len);
    if (dst) {
      dst->u.bytes.data = d;
      dst->u.bytes.len = len;
    }
    break;
  }
  default:
    break;
  }
}

/* Walks the variable part of `src`. `dst` (NULL while sizing) already holds
 * a shallow copy whose pointers this replaces; `n_props` properties are
 * copied into the array that follows it. */
static void layout_event(struct layout *l, hd_event *dst, const hd_event *src,
                         size_t n_props) {
  const char *p;

  p = put_str(l, src->key);
  if (dst)
    dst->key = p;
  p = put_str(l, src->name);
  if (dst)
    dst->name = p;

  if (is_topic_args(src->args_kind)) {
    p = put_str(l, src->topic.path);
    if (dst)
      dst->topic.path = p;
    put_value(l, dst ? &dst->topic.value : NULL, &src->topic.value);
    put_value(l, dst ? &dst->topic.old_value : NULL, &src->topic.old_value);
    for (size_t i = 0; i < n_props; i++) {
      const char *n = put_str(l, src->topic.properties[i].name);
      const char *v = put_str(l, src->topic.properties[i].value);
      if (dst) {
        hd_property *props = (hd_property *)dst->topic.properties;
        props[i].name = n;
        props[i].value = v;
      }
    }
  } else if (src->args_kind == HD_ARGS_ERROR) {
    p = put_str(l, src->error.description);
    if (dst)
      dst->error.description = p;
  } else if (src->args_kind == HD_ARGS_RESPONSE) {
    p = put_str(l, src->response.conversation_id);
    if (dst)
      dst->response.conversation_id = p;
    p = put_str(l, src->response.sender_session_id);
    if (dst)
      dst->response.sender_session_id = p;
    p = put_str(l, src->response.path);
    if (dst)
      dst->response.path = p;
    put_value(l, dst ? &dst->response.response : NULL, &src->response.response);
  }
}

/* hd_event is 8-byte aligned and so is its size, so the property array can
 * follow it directly; the static assert keeps that true if it grows. */
_Static_assert(sizeof(hd_event) % alignof(hd_property) == 0,
               "the property array must be aligned after the event");

hd_event *hd_event_copy(const hd_event *ev) {
  if (!ev)
    return NULL;
  int topic = is_topic_args(ev->args_kind);
  size_t n_props = topic && ev->topic.properties ? ev->topic.n_properties : 0;
  if (n_props > (SIZE_MAX - sizeof(hd_event)) / sizeof(hd_property))
    return NULL;

  struct layout l = {NULL, sizeof(hd_event) + n_props * sizeof(hd_property), 0};
  layout_event(&l, NULL, ev, n_props);
  if (l.overflow)
    return NULL;

  hd_event *copy = malloc(l.size);
  if (!copy)
    return NULL;

  /* Shallow copy first, then drop what the copy must not share: the fields
   * of other args kinds (a producer may leave them unset) and `reserved`,
   * whose meaning this version does not know. */
  *copy = *ev;
  memset(copy->reserved, 0, sizeof copy->reserved);
  if (!topic)
    memset(&copy->topic, 0, sizeof copy->topic);
  if (ev->args_kind != HD_ARGS_ERROR)
    memset(&copy->error, 0, sizeof copy->error);
  if (ev->args_kind != HD_ARGS_RESPONSE)
    memset(&copy->response, 0, sizeof copy->response);
  copy->topic.n_properties = n_props;
  copy->topic.properties = n_props ? (hd_property *)(copy + 1) : NULL;

  l.cursor = (char *)(copy + 1) + n_props * sizeof(hd_property);
  l.size = 0;
  layout_event(&l, copy, ev, n_props);
  return copy;
}

void hd_event_free(hd_event *ev) {
  free(ev);
}
