/*
 * Conversions between the plain-C client structs and protobuf-c messages:
 * hc_event -> DispatchRequest bytes, HandlerResult[] -> hc_results, and
 * the copy of a message's repeated strings.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* NULL -> "" for protobuf-c string fields (which we never modify). */
static char *str(const char *s) {
  return (char *)(s != NULL ? s : "");
}

/* Sets `pb` from `v`; returns NULL for HC_VALUE_NONE (the field stays
 * absent), `pb` otherwise. *bad is set for an unknown type. */
static Handlers__V1__TopicValue *
value_to_pb(const hc_value *v, Handlers__V1__TopicValue *pb, int *bad) {
  handlers__v1__topic_value__init(pb);
  switch (v->type) {
  case HC_VALUE_NONE:
    return NULL;
  case HC_VALUE_JSON:
    pb->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_JSON_VALUE;
    pb->json_value = str(v->data);
    break;
  case HC_VALUE_STRING:
    pb->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_STRING_VALUE;
    pb->string_value = str(v->data);
    break;
  case HC_VALUE_INT64:
    pb->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_INT64_VALUE;
    pb->int64_value = v->i64;
    break;
  case HC_VALUE_DOUBLE:
    pb->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_DOUBLE_VALUE;
    pb->double_value = v->f64;
    break;
  case HC_VALUE_BINARY:
    pb->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_BINARY_VALUE;
    pb->binary_value.data = (uint8_t *)v->data;
    pb->binary_value.len = v->data != NULL ? v->len : 0;
    break;
  case HC_VALUE_RECORD_V2:
    pb->value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_RECORD_V2_VALUE;
    pb->record_v2_value.data = (uint8_t *)v->data;
    pb->record_v2_value.len = v->data != NULL ? v->len : 0;
    break;
  default:
    *bad = 1;
    return NULL;
  }
  return pb;
}

static hc_args_kind default_args(const char *event) {
  static const struct {
    const char *name;
    hc_args_kind kind;
  } known[] = {
      {"subscribe", HC_ARGS_SUBSCRIBE}, {"close", HC_ARGS_SUBSCRIBE},
      {"update", HC_ARGS_UPDATE},       {"unsubscribe", HC_ARGS_UNSUBSCRIBE},
      {"error", HC_ARGS_ERROR},         {"response", HC_ARGS_RESPONSE}};
  for (size_t i = 0; event != NULL && i < sizeof known / sizeof known[0]; i++)
    if (strcmp(event, known[i].name) == 0)
      return known[i].kind;
  return HC_ARGS_NONE;
}

hc_err hc__encode_event(const hc_event *ev, uint8_t **buf, size_t *len) {
  Handlers__V1__DispatchRequest req = HANDLERS__V1__DISPATCH_REQUEST__INIT;
  Handlers__V1__SubHandlerArgs sub = HANDLERS__V1__SUB_HANDLER_ARGS__INIT;
  Handlers__V1__UpdateArgs upd = HANDLERS__V1__UPDATE_ARGS__INIT;
  Handlers__V1__UnsubscribeArgs unsub = HANDLERS__V1__UNSUBSCRIBE_ARGS__INIT;
  Handlers__V1__ErrorArgs err_args = HANDLERS__V1__ERROR_ARGS__INIT;
  Handlers__V1__FilterResponseArgs resp =
      HANDLERS__V1__FILTER_RESPONSE_ARGS__INIT;
  Handlers__V1__TopicSpecification spec =
      HANDLERS__V1__TOPIC_SPECIFICATION__INIT;
  Handlers__V1__TopicValue value, old_value;
  Handlers__V1__TopicSpecification__PropertiesEntry *entries = NULL;
  Handlers__V1__TopicSpecification__PropertiesEntry **entry_ptrs = NULL;

  *buf = NULL;
  *len = 0;
  if ((ev->n_properties > 0 && ev->properties == NULL) ||
      (unsigned)ev->topic_type > HC_TOPIC_RECORD_V2 ||
      (unsigned)ev->reason > HC_UNSUB_BRANCH_MAPPINGS)
    return HC_EINVAL;

  int bad = 0;
  Handlers__V1__TopicValue *pv = value_to_pb(&ev->value, &value, &bad);
  Handlers__V1__TopicValue *pold =
      value_to_pb(&ev->old_value, &old_value, &bad);
  if (bad)
    return HC_EINVAL;

  Handlers__V1__TopicSpecification *pspec = NULL;
  if (ev->topic_type != HC_TOPIC_UNSPECIFIED || ev->n_properties > 0) {
    spec.type = (Handlers__V1__TopicType)ev->topic_type;
    if (ev->n_properties > 0) {
      entries = calloc(ev->n_properties, sizeof *entries);
      entry_ptrs = calloc(ev->n_properties, sizeof *entry_ptrs);
      if (entries == NULL || entry_ptrs == NULL) {
        free(entries);
        free(entry_ptrs);
        return HC_ENOMEM;
      }
      for (size_t i = 0; i < ev->n_properties; i++) {
        handlers__v1__topic_specification__properties_entry__init(&entries[i]);
        entries[i].key = str(ev->properties[i].name);
        entries[i].value = str(ev->properties[i].value);
        entry_ptrs[i] = &entries[i];
      }
      spec.n_properties = ev->n_properties;
      spec.properties = entry_ptrs;
    }
    pspec = &spec;
  }

  req.key = str(ev->key);
  req.event = str(ev->event);
  hc_args_kind kind =
      ev->args == HC_ARGS_DEFAULT ? default_args(ev->event) : ev->args;
  hc_err err = HC_OK;
  switch (kind) {
  case HC_ARGS_DEFAULT:
  case HC_ARGS_NONE:
    break;
  case HC_ARGS_SUBSCRIBE:
    sub.topic_path = str(ev->topic_path);
    sub.topic_value = pv;
    sub.topic_spec = pspec;
    req.args_case = HANDLERS__V1__DISPATCH_REQUEST__ARGS_SUBSCRIBE;
    req.subscribe = &sub;
    break;
  case HC_ARGS_UPDATE:
    upd.topic_path = str(ev->topic_path);
    upd.topic_value = pv;
    upd.topic_spec = pspec;
    upd.old_value = pold;
    req.args_case = HANDLERS__V1__DISPATCH_REQUEST__ARGS_UPDATE;
    req.update = &upd;
    break;
  case HC_ARGS_UNSUBSCRIBE:
    unsub.topic_path = str(ev->topic_path);
    unsub.topic_value = pv;
    unsub.topic_spec = pspec;
    unsub.reason = (Handlers__V1__UnsubscribeReason)ev->reason;
    req.args_case = HANDLERS__V1__DISPATCH_REQUEST__ARGS_UNSUBSCRIBE;
    req.unsubscribe = &unsub;
    break;
  case HC_ARGS_ERROR:
    err_args.code = ev->error_code;
    err_args.description = str(ev->error_description);
    req.args_case = HANDLERS__V1__DISPATCH_REQUEST__ARGS_ERROR;
    req.error = &err_args;
    break;
  case HC_ARGS_RESPONSE:
    resp.conversation_id = str(ev->conversation_id);
    resp.sender_session_id = str(ev->sender_session_id);
    resp.path = str(ev->topic_path);
    resp.expected = ev->expected;
    resp.received = ev->received;
    resp.response = pv;
    req.args_case = HANDLERS__V1__DISPATCH_REQUEST__ARGS_RESPONSE;
    req.response = &resp;
    break;
  default:
    err = HC_EINVAL;
  }

  if (err == HC_OK) {
    size_t n = handlers__v1__dispatch_request__get_packed_size(&req);
    *buf = malloc(n > 0 ? n : 1);
    if (*buf == NULL)
      err = HC_ENOMEM;
    else
      *len = handlers__v1__dispatch_request__pack(&req, *buf);
  }
  free(entries);
  free(entry_ptrs);
  return err;
}

char *hc__copy_bytes(const void *data, size_t len) {
  char *p = malloc(len + 1);
  if (p == NULL)
    return NULL;
  if (len > 0)
    memcpy(p, data, len);
  p[len] = '\0';
  return p;
}

static hc_err value_from_pb(const Handlers__V1__TopicValue *pb, hc_value *v) {
  memset(v, 0, sizeof *v);
  if (pb == NULL)
    return HC_OK;
  const void *data = NULL;
  size_t len = 0;
  switch (pb->value_case) {
  case HANDLERS__V1__TOPIC_VALUE__VALUE_JSON_VALUE:
    v->type = HC_VALUE_JSON;
    data = pb->json_value;
    len = strlen(pb->json_value);
    break;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_STRING_VALUE:
    v->type = HC_VALUE_STRING;
    data = pb->string_value;
    len = strlen(pb->string_value);
    break;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_INT64_VALUE:
    v->type = HC_VALUE_INT64;
    v->i64 = pb->int64_value;
    return HC_OK;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_DOUBLE_VALUE:
    v->type = HC_VALUE_DOUBLE;
    v->f64 = pb->double_value;
    return HC_OK;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_BINARY_VALUE:
    v->type = HC_VALUE_BINARY;
    data = pb->binary_value.data;
    len = pb->binary_value.len;
    break;
  case HANDLERS__V1__TOPIC_VALUE__VALUE_RECORD_V2_VALUE:
    v->type = HC_VALUE_RECORD_V2;
    data = pb->record_v2_value.data;
    len = pb->record_v2_value.len;
    break;
  default:
    return HC_OK; /* present but no case: no value */
  }
  char *copy = hc__copy_bytes(data, len);
  if (copy == NULL) {
    v->type = HC_VALUE_NONE;
    return HC_ENOMEM;
  }
  v->data = copy;
  v->len = len;
  return HC_OK;
}

static void result_clear(hc_result *r) {
  free(r->handler_id);
  free(r->error_message);
  free(r->delivery_id);
  free((char *)r->value.data);
}

void hc__results_clear(hc_results *r) {
  for (size_t i = 0; i < r->count; i++)
    result_clear(&r->items[i]);
  free(r->items);
  r->items = NULL;
  r->count = 0;
}

void hc_results_free(hc_results *r) {
  if (r == NULL)
    return;
  hc__results_clear(r);
  free(r);
}

hc_err hc__results_from_pb(Handlers__V1__HandlerResult *const *pb, size_t n,
                           hc_results *out) {
  out->count = 0;
  out->items = NULL;
  if (n == 0)
    return HC_OK;
  out->items = calloc(n, sizeof *out->items);
  if (out->items == NULL)
    return HC_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const Handlers__V1__HandlerResult *p = pb[i];
    hc_result *r = &out->items[i];
    out->count = i + 1;
    r->ok = p->ok != 0;
    r->duration_ns = p->duration_ns;
    r->truncated = p->truncated != 0;
    r->accepted = p->accepted != 0;
    r->handler_id = hc__strdup(p->handler_id);
    r->delivery_id = hc__strdup(p->delivery_id);
    const Handlers__V1__HandlerError *e = p->error;
    r->error_message = hc__strdup(e != NULL ? e->message : NULL);
    if (e != NULL) {
      r->error_code = e->code;
      r->http_status = e->http_status;
      r->attempts = e->attempts;
    }
    if (r->handler_id == NULL || r->error_message == NULL ||
        r->delivery_id == NULL || value_from_pb(p->value, &r->value) != HC_OK) {
      hc__results_clear(out);
      return HC_ENOMEM;
    }
  }
  return HC_OK;
}

hc_err hc__strings_copy(char *const *in, size_t n, char ***out, size_t *n_out) {
  if (n == 0)
    return HC_OK;
  *out = calloc(n, sizeof **out);
  if (*out == NULL)
    return HC_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    *n_out = i + 1;
    (*out)[i] = hc__strdup(in[i]);
    if ((*out)[i] == NULL)
      return HC_ENOMEM;
  }
  return HC_OK;
}
