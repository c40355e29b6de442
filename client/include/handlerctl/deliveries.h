/*
 * handlerctl client library: async webhook deliveries (ListDeliveries,
 * GetDelivery, Redeliver, Replay, EnableWebhook of handlers.v1.Handlers).
 *
 * An async webhook (hc_webhook.async) does not deliver inside Dispatch:
 * handlerd stores the event, answers `accepted` with a delivery id
 * (hc_result.accepted, .delivery_id) and delivers it later, retrying on a
 * schedule. These calls look at those deliveries and act on them.
 *
 * Conventions are client.h's: every call returns an hc_err (text from
 * hc_strerror); HC_ERPC puts the server's code and message in the optional
 * hc_status; request pointers are borrowed for the call; each result kind
 * has exactly one function that frees it (hc_delivery_page_free,
 * hc_delivery_detail_free). Times are Unix milliseconds (UTC).
 */
#ifndef HANDLERCTL_DELIVERIES_H
#define HANDLERCTL_DELIVERIES_H

#include "handlerctl/client.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where a delivery is; numbered as handlers.v1.DeliveryState. */
typedef enum hc_delivery_state {
  HC_DELIVERY_ANY = 0,     /* unspecified: in filters, any state */
  HC_DELIVERY_PENDING = 1, /* accepted, waiting for an attempt or its turn */
  HC_DELIVERY_IN_FLIGHT = 2,
  HC_DELIVERY_SUCCEEDED = 3, /* the receiver answered 2xx */
  HC_DELIVERY_FAILED = 4,    /* an attempt failed; the next is scheduled */
  HC_DELIVERY_DEAD = 5       /* schedule exhausted or a final answer */
} hc_delivery_state;

/* "pending", "in_flight", "succeeded", "failed", "dead" (the names the
 * service's log and metrics use), "any" for HC_DELIVERY_ANY, "unknown"
 * otherwise. Static; never NULL. */
const char *hc_delivery_state_name(hc_delivery_state s);

/* One delivery: one event to one webhook. Strings are owned by the
 * enclosing page or detail and never NULL ("" when absent). */
typedef struct hc_delivery {
  char *delivery_id;
  char *event_id; /* the CloudEvent id and webhook-id: the same on every
                     attempt and on redelivery */
  char *key;
  char *handler_id;
  char *route; /* event-stream handlers: the route's event; "" otherwise */
  char *event;
  char *ordering_key; /* the topic path; "" when none */
  hc_delivery_state state;
  unsigned attempts;
  int64_t created_at_ms;
  int64_t next_attempt_at_ms; /* PENDING, FAILED: when due; 0 otherwise */
  int last_http_status;       /* 0: no HTTP answer */
  char *last_error;           /* "" when none */
} hc_delivery;

/* ---- ListDeliveries ---------------------------------------------------- */

/* What to list; zero-initialise and set what applies. NULL / "" strings,
 * HC_DELIVERY_ANY and 0 mean "any". */
typedef struct hc_delivery_filter {
  const char *key;
  const char *handler_id;
  hc_delivery_state state;
  int64_t since_ms;       /* created at or after */
  int64_t until_ms;       /* created before */
  unsigned page_size;     /* 1 to 1000; 0: the server's 100 */
  const char *page_token; /* the previous page's next_page_token */
} hc_delivery_filter;

/* One page of deliveries, newest first, without their bodies. */
typedef struct hc_delivery_page {
  size_t count;
  hc_delivery *items;
  char *next_page_token; /* pass it back for the next page; "" at the end */
} hc_delivery_page;

/* Frees `p` and everything it points to (NULL is ignored). */
void hc_delivery_page_free(hc_delivery_page *p);

/* ListDeliveries. On HC_OK *out is the page (free with
 * hc_delivery_page_free); otherwise *out is NULL. Errors: HC_EINVAL (NULL
 * conn/filter/out, a state out of range), HC_ENOMEM, HC_ERPC (3
 * INVALID_ARGUMENT for a bad page token or size), HC_EPROTO. */
hc_err hc_list_deliveries(hc_conn *c, const hc_delivery_filter *f,
                          int deadline_ms, hc_delivery_page **out,
                          hc_status *st);

/* ---- GetDelivery -------------------------------------------------------- */

/* One attempt at a delivery. Owned by the enclosing hc_delivery_detail. */
typedef struct hc_delivery_attempt {
  unsigned number; /* 1-based */
  int manual;      /* nonzero: made by Redeliver or Replay */
  int64_t started_at_ms;
  int64_t duration_ms;
  int http_status;     /* 0: no HTTP answer (connection error, timeout) */
  char *error;         /* "" on success */
  char *response_head; /* the first bytes (at most 1024) of the response
                          body; NUL-terminated after response_head_len */
  size_t response_head_len;
} hc_delivery_attempt;

/* A delivery with its request and every attempt. */
typedef struct hc_delivery_detail {
  hc_delivery delivery;
  char *body; /* the request body as sent; NUL-terminated after body_len */
  size_t body_len;
  char **headers; /* "name: value", the headers handlerd sets per event */
  size_t n_headers;
  hc_delivery_attempt *attempts; /* oldest first */
  size_t n_attempts;
} hc_delivery_detail;

/* Frees `d` and everything it points to (NULL is ignored). */
void hc_delivery_detail_free(hc_delivery_detail *d);

/* GetDelivery. On HC_OK *out is the delivery (free with
 * hc_delivery_detail_free); otherwise *out is NULL. Errors: HC_EINVAL,
 * HC_ENOMEM, HC_ERPC (5 NOT_FOUND: no such id), HC_EPROTO. */
hc_err hc_get_delivery(hc_conn *c, const char *delivery_id, int deadline_ms,
                       hc_delivery_detail **out, hc_status *st);

/* ---- acting on deliveries ---------------------------------------------- */

/* Redeliver: one more (manual) attempt at `delivery_id`, now, whatever its
 * state. HC_ERPC with 5 NOT_FOUND when there is no such id. */
hc_err hc_redeliver(hc_conn *c, const char *delivery_id, int deadline_ms,
                    hc_status *st);

/* Which deliveries Replay queues again. */
typedef struct hc_replay_spec {
  const char *handler_id;  /* required by the server */
  int64_t since_ms;        /* created at or after; required by the server */
  int64_t until_ms;        /* created before; 0: now */
  hc_delivery_state state; /* ANY: succeeded, failed and dead */
  unsigned limit;          /* 1 to 10000; 0: the server's 1000 */
} hc_replay_spec;

/* Replay: delivers again every delivery of a handler in a time range. On
 * HC_OK *replayed_out (optional) is how many were queued and
 * *truncated_out (optional) is nonzero when more matched than the limit.
 * Errors: HC_EINVAL (NULL conn/spec, a state out of range), HC_ENOMEM,
 * HC_ERPC (3 INVALID_ARGUMENT without handler_id or since_ms), HC_EPROTO. */
hc_err hc_replay(hc_conn *c, const hc_replay_spec *spec, int deadline_ms,
                 unsigned *replayed_out, int *truncated_out, hc_status *st);

/* EnableWebhook: resumes handler `handler_id`'s async webhooks under `key`
 * that were disabled after failing; their pending deliveries go on. On
 * HC_OK *enabled_out (optional) is how many were disabled and are enabled
 * now (0: none was). HC_ERPC with 5 NOT_FOUND when there is no such handler
 * under the key. */
hc_err hc_enable_webhook(hc_conn *c, const char *key, const char *handler_id,
                         int deadline_ms, unsigned *enabled_out, hc_status *st);

#ifdef __cplusplus
}
#endif
#endif
