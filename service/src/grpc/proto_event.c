#include "proto_event.h"

#include "utf8.h"

#include <grpc/status.h>
#include <stdio.h>
#include <string.h>

/* ---- string fields on the wire -------------------------------------------
 *
 * protobuf-c hands a `string` field over as a NUL-terminated char * and
 * drops its length, so "a\0b" arrives as "a": the rest would be cut without
 * a word. And it does not check that strings are UTF-8, as proto3 says they
 * must be (other languages' clients then fail to read them back). So the
 * encoded bytes are walked once, with the descriptor, and every string
 * field (at any depth, in repeated fields and map entries too) must be
 * UTF-8 without a NUL byte. Decision: a NUL is refused, not delivered: every
 * consumer of these strings (handlers, the C plugin API, CloudEvents, the
 * reply, protobuf-c itself when it packs) takes C strings, so "intact" is
 * not on offer. Bytes fields are the way to send such data.
 */

#define WALK_MAX_DEPTH 32  /* handlers.proto nests 4 deep */
#define WALK_MAX_FIELDS 64 /* fields counted for "[i]" in a path */

typedef struct walk {
  char path[256]; /* "update.topic_value.string_value" */
  int utf8;       /* check UTF-8 too, not only NUL bytes */
  char *msg;
  size_t msg_size;
} walk;

/* A varint of at most 10 bytes; 0 when cut short or too long. */
static size_t read_varint(const uint8_t *p, size_t len, uint64_t *v) {
  uint64_t r = 0;
  for (size_t i = 0; i < len && i < 10; i++) {
    r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      *v = r;
      return i + 1;
    }
  }
  return 0;
}

static hd_err check_string(walk *w, const uint8_t *s, size_t len) {
  size_t bad = w->utf8 ? hd_utf8_valid_prefix(s, len) : len;
  if (bad < len) {
    snprintf(w->msg, w->msg_size, "%s is not valid UTF-8 (at byte %zu)",
             w->path, bad);
    return HD_EINVAL;
  }
  const uint8_t *nul = memchr(s, '\0', len);
  if (nul) {
    snprintf(w->msg, w->msg_size,
             "%s contains a NUL byte (at byte %zu): handlerd cannot pass it "
             "on intact, so it is refused rather than cut there",
             w->path, (size_t)(nul - s));
    return HD_EINVAL;
  }
  return HD_OK;
}

static hd_err walk_message(walk *w, size_t plen,
                           const ProtobufCMessageDescriptor *desc,
                           const uint8_t *p, size_t len, int depth) {
  size_t counts[WALK_MAX_FIELDS] = {0};

  if (depth > WALK_MAX_DEPTH) {
    snprintf(w->msg, w->msg_size, "%s: messages nested too deep", w->path);
    return HD_EINVAL;
  }
  while (len > 0) {
    uint64_t tag, n;
    size_t used = read_varint(p, len, &tag);
    if (used == 0)
      goto malformed;
    p += used;
    len -= used;
    const ProtobufCFieldDescriptor *f =
        tag >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(
                                     desc, (unsigned)(tag >> 3))
                               : NULL;
    switch (tag & 7) {
    case 0: /* varint */
      if ((used = read_varint(p, len, &n)) == 0)
        goto malformed;
      break;
    case 1: /* 64-bit */
      used = 8;
      break;
    case 5: /* 32-bit */
      used = 4;
      break;
    case 2: { /* length-delimited */
      size_t hl = read_varint(p, len, &n);
      if (hl == 0 || n > len - hl)
        goto malformed;
      p += hl;
      len -= hl;
      used = (size_t)n;
      if (!f || (f->type != PROTOBUF_C_TYPE_STRING &&
                 f->type != PROTOBUF_C_TYPE_MESSAGE))
        break;
      /* The field's name in the path, with its index when repeated. */
      size_t at = (size_t)(f - desc->fields);
      int wrote;
      if (f->label == PROTOBUF_C_LABEL_REPEATED && at < WALK_MAX_FIELDS)
        wrote = snprintf(w->path + plen, sizeof(w->path) - plen, "%s%s[%zu]",
                         plen ? "." : "", f->name, counts[at]++);
      else
        wrote = snprintf(w->path + plen, sizeof(w->path) - plen, "%s%s",
                         plen ? "." : "", f->name);
      size_t sub = plen + (wrote > 0 ? (size_t)wrote : 0);
      if (sub >= sizeof(w->path))
        sub = sizeof(w->path) - 1;
      hd_err err =
          f->type == PROTOBUF_C_TYPE_STRING
              ? check_string(w, p, used)
              : walk_message(w, sub, f->descriptor, p, used, depth + 1);
      if (err != HD_OK)
        return err;
      w->path[plen] = '\0';
      break;
    }
    default: /* groups: protobuf-c refuses them */
      goto malformed;
    }
    if (used > len)
      goto malformed;
    p += used;
    len -= used;
  }
  return HD_OK;
malformed:
  snprintf(w->msg, w->msg_size, "request is not a valid %s%s%s", desc->name,
           w->path[0] ? " at " : "", w->path);
  return HD_EINVAL;
}

hd_err hd_proto_check_strings(const ProtobufCMessageDescriptor *desc,
                              const void *data, size_t len, char *msg,
                              size_t msg_size) {
  walk w = {.utf8 = 1, .msg = msg, .msg_size = msg_size};
  return walk_message(&w, 0, desc, data, len, 0);
}

hd_err hd_proto_check_request(const ProtobufCMessageDescriptor *desc,
                              const void *data, size_t len, char *msg,
                              size_t msg_size) {
  /* RemoveHandler and ListHandlers name what is registered: the control
   * plane checks their UTF-8 itself once nothing matched, so a handler
   * saved before handlerd checked can still be removed by its exact key. */
  int lookup = desc == &handlers__v1__remove_handler_request__descriptor ||
               desc == &handlers__v1__list_handlers_request__descriptor;
  walk w = {.utf8 = !lookup, .msg = msg, .msg_size = msg_size};
  return walk_message(&w, 0, desc, data, len, 0);
}

hd_err hd_proto_decode_dispatch(hd_arena *a, const void *data, size_t len,
                                Handlers__V1__DispatchRequest **out, char *msg,
                                size_t msg_size) {
  *out = handlers__v1__dispatch_request__unpack(hd_arena_pb_allocator(a), len,
                                                data);
  if (!*out) {
    snprintf(msg, msg_size,
             "request is not a valid handlers.v1.DispatchRequest (%zu bytes)",
             len);
    return HD_EINVAL;
  }
  /* After the unpack, so a malformed message keeps its message above. */
  hd_err err = hd_proto_check_strings(
      &handlers__v1__dispatch_request__descriptor, data, len, msg, msg_size);
  if (err != HD_OK)
    *out = NULL;
  return err;
}

hd_err hd_proto_to_value(const Handlers__V1__TopicValue *tv, hd_value *out) {
  memset(out, 0, sizeof(*out));
  if (!tv)
    return HD_OK;
  switch (tv->value_case) {
  case HANDLERS__V1__TOPIC_VALUE__VALUE_JSON_VALUE:
    out->type = HD_VALUE_JSON;
    out->u.bytes.data = tv->json_value;
    out->u.bytes.len = strlen(tv->json_value);
    return HD_OK;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_STRING_VALUE:
    out->type = HD_VALUE_STRING;
    out->u.bytes.data = tv->string_value;
    out->u.bytes.len = strlen(tv->string_value);
    return HD_OK;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_INT64_VALUE:
    out->type = HD_VALUE_INT64;
    out->u.i64 = tv->int64_value;
    return HD_OK;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_DOUBLE_VALUE:
    out->type = HD_VALUE_DOUBLE;
    out->u.f64 = tv->double_value;
    return HD_OK;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_BINARY_VALUE:
    out->type = HD_VALUE_BINARY;
    out->u.bytes.data = (const char *)tv->binary_value.data;
    out->u.bytes.len = tv->binary_value.len;
    return HD_OK;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_RECORD_V2_VALUE:
    out->type = HD_VALUE_RECORD_V2;
    out->u.bytes.data = (const char *)tv->record_v2_value.data;
    out->u.bytes.len = tv->record_v2_value.len;
    return HD_OK;
  default:
    return HD_EINVAL;
  }
}

/* The fields SubHandlerArgs, UpdateArgs and UnsubscribeArgs share. */
static hd_err topic_fields(hd_arena *a, hd_event *ev, const char *path,
                           const Handlers__V1__TopicValue *value,
                           const Handlers__V1__TopicSpecification *spec,
                           char *msg, size_t msg_size) {
  ev->topic.path = path;
  if (hd_proto_to_value(value, &ev->topic.value) != HD_OK) {
    snprintf(msg, msg_size, "topic_value is present but has no value set");
    return HD_EINVAL;
  }
  if (spec) {
    ev->topic.has_spec = 1;
    ev->topic.type = (hd_topic_type)spec->type;
    if (spec->n_properties) {
      hd_property *props =
          hd_arena_calloc(a, spec->n_properties, sizeof(*props));
      if (!props)
        return HD_ENOMEM;
      for (size_t i = 0; i < spec->n_properties; i++) {
        props[i].name = spec->properties[i]->key;
        props[i].value = spec->properties[i]->value;
      }
      ev->topic.properties = props;
      ev->topic.n_properties = spec->n_properties;
    }
  }
  return HD_OK;
}

hd_err hd_proto_to_event(hd_arena *a, const Handlers__V1__DispatchRequest *req,
                         hd_event *ev, char *msg, size_t msg_size) {
  hd_err err = HD_OK;
  memset(ev, 0, sizeof(*ev));
  ev->key = req->key;
  ev->name = req->event;
  switch (req->args_case) {
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_SUBSCRIBE:
    ev->args_kind = HD_ARGS_SUBSCRIBE;
    err = topic_fields(a, ev, req->subscribe->topic_path,
                       req->subscribe->topic_value, req->subscribe->topic_spec,
                       msg, msg_size);
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_UPDATE:
    ev->args_kind = HD_ARGS_UPDATE;
    err = topic_fields(a, ev, req->update->topic_path, req->update->topic_value,
                       req->update->topic_spec, msg, msg_size);
    if (err == HD_OK &&
        hd_proto_to_value(req->update->old_value, &ev->topic.old_value)) {
      snprintf(msg, msg_size, "old_value is present but has no value set");
      err = HD_EINVAL;
    }
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_UNSUBSCRIBE:
    ev->args_kind = HD_ARGS_UNSUBSCRIBE;
    err = topic_fields(a, ev, req->unsubscribe->topic_path,
                       req->unsubscribe->topic_value,
                       req->unsubscribe->topic_spec, msg, msg_size);
    ev->topic.reason = (hd_unsubscribe_reason)req->unsubscribe->reason;
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_ERROR:
    ev->args_kind = HD_ARGS_ERROR;
    ev->error.code = req->error->code;
    ev->error.description = req->error->description;
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_RESPONSE:
    ev->args_kind = HD_ARGS_RESPONSE;
    ev->response.conversation_id = req->response->conversation_id;
    ev->response.sender_session_id = req->response->sender_session_id;
    ev->response.path = req->response->path;
    ev->response.expected = req->response->expected;
    ev->response.received = req->response->received;
    if (hd_proto_to_value(req->response->response, &ev->response.response)) {
      snprintf(msg, msg_size, "response is present but has no value set");
      err = HD_EINVAL;
    }
    break;
  default:
    ev->args_kind = HD_ARGS_NONE;
    break;
  }
  if (err != HD_OK)
    return err;
  return hd_event_validate(ev, msg, msg_size);
}

static Handlers__V1__TopicValue *value_to_proto(hd_arena *a,
                                                const hd_value *v) {
  if (v->type == HD_VALUE_NONE)
    return NULL;
  Handlers__V1__TopicValue *tv = hd_arena_alloc(a, sizeof(*tv));
  if (!tv)
    return NULL;
  handlers__v1__topic_value__init(tv);
  switch (v->type) {
  case HD_VALUE_JSON:
    tv->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_JSON_VALUE;
    tv->json_value = (char *)v->u.bytes.data;
    break;
  case HD_VALUE_STRING:
    tv->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_STRING_VALUE;
    tv->string_value = (char *)v->u.bytes.data;
    break;
  case HD_VALUE_INT64:
    tv->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_INT64_VALUE;
    tv->int64_value = v->u.i64;
    break;
  case HD_VALUE_DOUBLE:
    tv->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_DOUBLE_VALUE;
    tv->double_value = v->u.f64;
    break;
  case HD_VALUE_BINARY:
    tv->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_BINARY_VALUE;
    tv->binary_value.data = (uint8_t *)v->u.bytes.data;
    tv->binary_value.len = v->u.bytes.len;
    break;
  case HD_VALUE_RECORD_V2:
    tv->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_RECORD_V2_VALUE;
    tv->record_v2_value.data = (uint8_t *)v->u.bytes.data;
    tv->record_v2_value.len = v->u.bytes.len;
    break;
  default:
    break;
  }
  return tv;
}

/* A handler's failure that carries no gRPC code of its own. */
static int failure_code(const hd_result *r) {
  if (r->grpc_code)
    return r->grpc_code;
  switch (r->err) {
  case HD_ETIMEOUT:
    return GRPC_STATUS_DEADLINE_EXCEEDED;
  case HD_EINVAL:
    return GRPC_STATUS_INVALID_ARGUMENT;
  case HD_EIO:
    return GRPC_STATUS_UNAVAILABLE;
  default:
    return GRPC_STATUS_INTERNAL;
  }
}

hd_err hd_proto_from_results(hd_arena *a, const hd_results *rs,
                             Handlers__V1__HandlerResult ***out, size_t *n) {
  size_t count = hd_results_count(rs);
  *out = NULL;
  *n = 0;
  if (count == 0)
    return HD_OK;
  Handlers__V1__HandlerResult **arr = hd_arena_calloc(a, count, sizeof(*arr));
  Handlers__V1__HandlerResult *items =
      hd_arena_calloc(a, count, sizeof(*items));
  if (!arr || !items)
    return HD_ENOMEM;
  for (size_t i = 0; i < count; i++) {
    const hd_result *r = hd_results_at(rs, i);
    Handlers__V1__HandlerResult *pr = &items[i];
    handlers__v1__handler_result__init(pr);
    pr->handler_id = (char *)r->handler_id;
    pr->ok = r->err == HD_OK;
    pr->duration_ns = r->duration_ns;
    pr->truncated = r->truncated != 0;
    pr->accepted = r->accepted != 0;
    if (r->accepted)
      pr->delivery_id = (char *)r->delivery_id;
    pr->value = value_to_proto(a, &r->value);
    if (r->value.type != HD_VALUE_NONE && !pr->value)
      return HD_ENOMEM;
    if (!pr->ok) {
      Handlers__V1__HandlerError *he = hd_arena_alloc(a, sizeof(*he));
      if (!he)
        return HD_ENOMEM;
      handlers__v1__handler_error__init(he);
      he->code = failure_code(r);
      he->message = (char *)(r->message ? r->message : hd_strerror(r->err));
      he->http_status = r->http_status;
      he->attempts = r->attempts;
      pr->error = he;
    }
    arr[i] = pr;
  }
  *out = arr;
  *n = count;
  return HD_OK;
}

int hd_proto_status_of(hd_err err) {
  switch (err) {
  case HD_OK:
    return GRPC_STATUS_OK;
  case HD_EINVAL:
    return GRPC_STATUS_INVALID_ARGUMENT;
  case HD_ENOKEY:
  case HD_ENOTFOUND:
    return GRPC_STATUS_NOT_FOUND;
  case HD_EEXIST:
    return GRPC_STATUS_ALREADY_EXISTS;
  case HD_EUNSUPPORTED:
    return GRPC_STATUS_UNIMPLEMENTED;
  case HD_ETIMEOUT:
    return GRPC_STATUS_DEADLINE_EXCEEDED;
  case HD_EBUSY:
  case HD_ENOMEM:
    return GRPC_STATUS_RESOURCE_EXHAUSTED;
  case HD_EIO:
    return GRPC_STATUS_UNAVAILABLE;
  default:
    return GRPC_STATUS_INTERNAL;
  }
}
