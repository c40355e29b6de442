#include "proto_event.h"

#include <grpc/status.h>
#include <stdio.h>
#include <string.h>

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
  return HD_OK;
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
