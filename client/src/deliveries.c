/*
 * handlerctl client: async webhook deliveries (handlerctl/deliveries.h):
 * ListDeliveries, GetDelivery, Redeliver, Replay, EnableWebhook, and the
 * conversion of Delivery messages to plain C.
 */
#include "handlerctl/deliveries.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

const char *hc_delivery_state_name(hc_delivery_state s) {
  switch (s) {
  case HC_DELIVERY_ANY:
    return "any";
  case HC_DELIVERY_PENDING:
    return "pending";
  case HC_DELIVERY_IN_FLIGHT:
    return "in_flight";
  case HC_DELIVERY_SUCCEEDED:
    return "succeeded";
  case HC_DELIVERY_FAILED:
    return "failed";
  case HC_DELIVERY_DEAD:
    return "dead";
  }
  return "unknown";
}

/* A state a request may carry: the enum's range, nothing else, so a wild
 * value is the caller's error (HC_EINVAL) rather than the server's. */
static int state_ok(hc_delivery_state s) {
  return (unsigned)s <= HC_DELIVERY_DEAD;
}

static char *str(const char *s) {
  return (char *)(s != NULL ? s : "");
}

/* ---- Delivery ----------------------------------------------------------- */

static void delivery_clear(hc_delivery *d) {
  free(d->delivery_id);
  free(d->event_id);
  free(d->key);
  free(d->handler_id);
  free(d->route);
  free(d->event);
  free(d->ordering_key);
  free(d->last_error);
}

/* Converts one Delivery (NULL: an empty one); on ENOMEM what was allocated
 * stays in `d` for delivery_clear. */
static hc_err delivery_from_pb(const Handlers__V1__Delivery *pb,
                               hc_delivery *d) {
  static const Handlers__V1__Delivery empty = HANDLERS__V1__DELIVERY__INIT;
  if (pb == NULL)
    pb = &empty;
  /* A state this client does not know yet stays visible as its number. */
  d->state = (hc_delivery_state)pb->state;
  d->attempts = pb->attempts;
  d->created_at_ms = pb->created_at_ms;
  d->next_attempt_at_ms = pb->next_attempt_at_ms;
  d->last_http_status = pb->last_http_status;
  d->delivery_id = hc__strdup(pb->delivery_id);
  d->event_id = hc__strdup(pb->event_id);
  d->key = hc__strdup(pb->key);
  d->handler_id = hc__strdup(pb->handler_id);
  d->route = hc__strdup(pb->route);
  d->event = hc__strdup(pb->event);
  d->ordering_key = hc__strdup(pb->ordering_key);
  d->last_error = hc__strdup(pb->last_error);
  if (d->delivery_id == NULL || d->event_id == NULL || d->key == NULL ||
      d->handler_id == NULL || d->route == NULL || d->event == NULL ||
      d->ordering_key == NULL || d->last_error == NULL)
    return HC_ENOMEM;
  return HC_OK;
}

/* ---- ListDeliveries ----------------------------------------------------- */

void hc_delivery_page_free(hc_delivery_page *p) {
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->count; i++)
    delivery_clear(&p->items[i]);
  free(p->items);
  free(p->next_page_token);
  free(p);
}

static hc_err page_from_pb(const Handlers__V1__ListDeliveriesReply *pb,
                           hc_delivery_page *p) {
  p->next_page_token = hc__strdup(pb->next_page_token);
  if (p->next_page_token == NULL)
    return HC_ENOMEM;
  if (pb->n_deliveries == 0)
    return HC_OK;
  p->items = calloc(pb->n_deliveries, sizeof *p->items);
  if (p->items == NULL)
    return HC_ENOMEM;
  for (size_t i = 0; i < pb->n_deliveries; i++) {
    p->count = i + 1;
    hc_err err = delivery_from_pb(pb->deliveries[i], &p->items[i]);
    if (err != HC_OK)
      return err;
  }
  return HC_OK;
}

hc_err hc_list_deliveries(hc_conn *c, const hc_delivery_filter *f,
                          int deadline_ms, hc_delivery_page **out,
                          hc_status *st) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || f == NULL || out == NULL || !state_ok(f->state))
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__ListDeliveriesRequest req =
      HANDLERS__V1__LIST_DELIVERIES_REQUEST__INIT;
  req.key = str(f->key);
  req.handler_id = str(f->handler_id);
  req.state = (Handlers__V1__DeliveryState)f->state;
  req.since_ms = f->since_ms;
  req.until_ms = f->until_ms;
  req.page_size = f->page_size;
  req.page_token = str(f->page_token);
  Handlers__V1__ListDeliveriesReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_LIST_DELIVERIES, &req.base,
                           &handlers__v1__list_deliveries_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;
  hc_delivery_page *p = calloc(1, sizeof *p);
  err = p == NULL ? HC_ENOMEM : page_from_pb(reply, p);
  handlers__v1__list_deliveries_reply__free_unpacked(reply, NULL);
  if (err != HC_OK) {
    hc_delivery_page_free(p);
    return hc__local_error(st, err);
  }
  *out = p;
  return HC_OK;
}

/* ---- GetDelivery -------------------------------------------------------- */

void hc_delivery_detail_free(hc_delivery_detail *d) {
  if (d == NULL)
    return;
  delivery_clear(&d->delivery);
  free(d->body);
  for (size_t i = 0; i < d->n_headers; i++)
    free(d->headers[i]);
  free(d->headers);
  for (size_t i = 0; i < d->n_attempts; i++) {
    free(d->attempts[i].error);
    free(d->attempts[i].response_head);
  }
  free(d->attempts);
  free(d);
}

static hc_err attempt_from_pb(const Handlers__V1__DeliveryAttempt *pb,
                              hc_delivery_attempt *a) {
  a->number = pb->number;
  a->manual = pb->manual != 0;
  a->started_at_ms = pb->started_at_ms;
  a->duration_ms = pb->duration_ms;
  a->http_status = pb->http_status;
  a->error = hc__strdup(pb->error);
  a->response_head =
      hc__copy_bytes(pb->response_head.data, pb->response_head.len);
  a->response_head_len = pb->response_head.len;
  return a->error == NULL || a->response_head == NULL ? HC_ENOMEM : HC_OK;
}

static hc_err detail_from_pb(const Handlers__V1__GetDeliveryReply *pb,
                             hc_delivery_detail *d) {
  hc_err err = delivery_from_pb(pb->delivery, &d->delivery);
  if (err != HC_OK)
    return err;
  d->body = hc__copy_bytes(pb->body.data, pb->body.len);
  if (d->body == NULL)
    return HC_ENOMEM;
  d->body_len = pb->body.len;
  err =
      hc__strings_copy(pb->headers, pb->n_headers, &d->headers, &d->n_headers);
  if (err != HC_OK)
    return err;
  if (pb->n_attempts > 0) {
    d->attempts = calloc(pb->n_attempts, sizeof *d->attempts);
    if (d->attempts == NULL)
      return HC_ENOMEM;
    for (size_t i = 0; i < pb->n_attempts; i++) {
      d->n_attempts = i + 1;
      err = attempt_from_pb(pb->attempts[i], &d->attempts[i]);
      if (err != HC_OK)
        return err;
    }
  }
  return HC_OK;
}

hc_err hc_get_delivery(hc_conn *c, const char *delivery_id, int deadline_ms,
                       hc_delivery_detail **out, hc_status *st) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || out == NULL)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__GetDeliveryRequest req =
      HANDLERS__V1__GET_DELIVERY_REQUEST__INIT;
  req.delivery_id = str(delivery_id);
  Handlers__V1__GetDeliveryReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_GET_DELIVERY, &req.base,
                           &handlers__v1__get_delivery_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;
  hc_delivery_detail *d = calloc(1, sizeof *d);
  err = d == NULL ? HC_ENOMEM : detail_from_pb(reply, d);
  handlers__v1__get_delivery_reply__free_unpacked(reply, NULL);
  if (err != HC_OK) {
    hc_delivery_detail_free(d);
    return hc__local_error(st, err);
  }
  *out = d;
  return HC_OK;
}

/* ---- Redeliver, Replay, EnableWebhook ----------------------------------- */

hc_err hc_redeliver(hc_conn *c, const char *delivery_id, int deadline_ms,
                    hc_status *st) {
  if (c == NULL)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__RedeliverRequest req = HANDLERS__V1__REDELIVER_REQUEST__INIT;
  req.delivery_id = str(delivery_id);
  Handlers__V1__RedeliverReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_REDELIVER, &req.base,
                           &handlers__v1__redeliver_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err == HC_OK)
    handlers__v1__redeliver_reply__free_unpacked(reply, NULL);
  return err;
}

hc_err hc_replay(hc_conn *c, const hc_replay_spec *spec, int deadline_ms,
                 unsigned *replayed_out, int *truncated_out, hc_status *st) {
  if (replayed_out != NULL)
    *replayed_out = 0;
  if (truncated_out != NULL)
    *truncated_out = 0;
  if (c == NULL || spec == NULL || !state_ok(spec->state))
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__ReplayRequest req = HANDLERS__V1__REPLAY_REQUEST__INIT;
  req.handler_id = str(spec->handler_id);
  req.since_ms = spec->since_ms;
  req.until_ms = spec->until_ms;
  req.state = (Handlers__V1__DeliveryState)spec->state;
  req.limit = spec->limit;
  Handlers__V1__ReplayReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_REPLAY, &req.base,
                           &handlers__v1__replay_reply__descriptor, deadline_ms,
                           (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;
  if (replayed_out != NULL)
    *replayed_out = reply->replayed;
  if (truncated_out != NULL)
    *truncated_out = reply->truncated != 0;
  handlers__v1__replay_reply__free_unpacked(reply, NULL);
  return HC_OK;
}

hc_err hc_enable_webhook(hc_conn *c, const char *key, const char *handler_id,
                         int deadline_ms, unsigned *enabled_out,
                         hc_status *st) {
  if (enabled_out != NULL)
    *enabled_out = 0;
  if (c == NULL)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__EnableWebhookRequest req =
      HANDLERS__V1__ENABLE_WEBHOOK_REQUEST__INIT;
  req.key = str(key);
  req.handler_id = str(handler_id);
  Handlers__V1__EnableWebhookReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_ENABLE_WEBHOOK, &req.base,
                           &handlers__v1__enable_webhook_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;
  if (enabled_out != NULL)
    *enabled_out = reply->enabled;
  handlers__v1__enable_webhook_reply__free_unpacked(reply, NULL);
  return HC_OK;
}
