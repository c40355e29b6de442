/*
 * Webhook handlers (the kind): a handler kind (vtable) whose handle() hands a
 * CloudEvents POST to the delivery engine: one libcurl multi handle on its
 * own thread (curl_multi_poll + curl_multi_wakeup), keep-alive and HTTP/2
 * reuse, a cap on connections per host, retries with backoff inside the
 * caller's deadline. The endpoint's answer becomes the handler's result.
 *
 * Requests: POST of the CloudEvent, body and ce-* headers as cloudevents.h's
 * HTTP binding builds them (structured or binary mode). Always user-agent
 * "handlerd/<version>", webhook-id (the CloudEvent id, the same on every
 * retry), webhook-timestamp (unix seconds of the attempt) and, with a secret,
 * webhook-signature (Standard Webhooks, recomputed per attempt), then the
 * custom headers. Redirects are not followed; environment proxies are not used;
 * addresses are checked with hd_addr_allowed() at connect time.
 *
 * Result of a 2xx answer: ok, http_status and attempts set, and the value
 *   - none for an empty body;
 *   - HD_VALUE_JSON (the body text) when the whole body parses as JSON;
 *   - else HD_VALUE_STRING when the body is UTF-8 without NUL bytes;
 *   - else HD_VALUE_BINARY (the bytes).
 * A body over max_response_bytes is cut there (reading stops) and truncated=1;
 * it is never JSON (a cut character at the end is dropped for STRING).
 *
 * Retries: connection errors, timeouts, 408, 429 and 5xx (hd_retry_should),
 * up to max_attempts, after hd_retry_backoff_ms or Retry-After if longer.
 * A Retry-After over 60 s, or a retry that would start less than
 * 50 ms before the event's deadline, ends the delivery now (the message
 * says why). Each attempt's timeout is min(timeout_ms, time to deadline).
 *
 * Failures: hd_result err / grpc_code, message "<what> after N attempt(s)":
 *   timeout (per-attempt or deadline)   HD_ETIMEOUT   4 DEADLINE_EXCEEDED
 *   connection refused/reset, DNS, TLS  HD_EHANDLER  14 UNAVAILABLE
 *   address refused by the policy       HD_EHANDLER   7 PERMISSION_DENIED
 *   engine shutting down                HD_EHANDLER  14 UNAVAILABLE
 *   max_in_flight deliveries pending    HD_EBUSY      8 RESOURCE_EXHAUSTED
 *   out of memory                       HD_ENOMEM    13 INTERNAL
 *   final HTTP status ("HTTP 404 after 1 attempt"), err HD_EHANDLER:
 *     400 -> 3 INVALID_ARGUMENT      401 -> 16 UNAUTHENTICATED
 *     403 -> 7 PERMISSION_DENIED     404, 410 -> 5 NOT_FOUND
 *     408, 504 -> 4 DEADLINE_EXCEEDED 409 -> 10 ABORTED
 *     429 -> 8 RESOURCE_EXHAUSTED    501 -> 12 UNIMPLEMENTED
 *     502, 503 -> 14 UNAVAILABLE     other 5xx -> 13 INTERNAL
 *     3xx (not followed), other 4xx -> 9 FAILED_PRECONDITION
 *     anything else -> 2 UNKNOWN
 * http_status is the last HTTP status seen (0: none), attempts the number
 * of attempts started, duration_ns the time from handle() to completion.
 */
#ifndef HD_WEBHOOK_KIND_H
#define HD_WEBHOOK_KIND_H

#include "handlerd/handlerd.h"
#include "outbox.h"
#include "registration.h"
#include "webhook_engine.h"

#define HD_WEBHOOK_DEFAULT_TIMEOUT_MS 5000
#define HD_WEBHOOK_DEFAULT_MAX_ATTEMPTS 5
#define HD_WEBHOOK_MAX_ATTEMPTS 20
/* The webhook kind's builder (its row in kinds.h is hd_kind_webhook, whose
 * context is the engine): validates the webhook (URL, secret, headers, limits)
 * and makes a handler of kind "webhook" that holds a reference on the engine
 * (handlers may outlive hd_webhook_engine_stop; they then fail every event with
 * "handlerd is shutting down"). Defaults: timeout_ms 5000 (limit 60000),
 * max_attempts 5 (limit HD_WEBHOOK_MAX_ATTEMPTS). Custom headers must have
 * token names, no control characters in values, and may not set
 * content-type, content-length, transfer-encoding, host, connection,
 * keep-alive, te, trailer, upgrade, expect, user-agent, proxy-*, webhook-*
 * or ce-*, and no name twice. How many headers a webhook may have is the
 * control plane's limit (--max-webhook-headers, checked on new
 * registrations only, so saved ones load whatever it says). With new_secret,
 * generates a secret, signs with it and returns it in *secret_out (malloc'd,
 * the caller wipes and frees it); new_secret with a NULL secret_out, or
 * together with secret, is HD_EINVAL. A previous_secret (a rotation in
 * progress, RotateSecret) is sent as a second signature ("v1,<new>
 * v1,<old>") on attempts made before previous_until_ms, then no more; one
 * whose window has already passed is ignored, one that does not parse (or
 * without a secret) is HD_EINVAL. Errors: HD_EINVAL with a message naming
 * the field ("webhook.max_attempts: 50 is over the limit of 20"), HD_ENOMEM,
 * HD_EIO (no randomness). */
hd_err hd_webhook_factory(void *engine, const char *key,
                          const hd_webhook_spec *wh, hd_handler **out,
                          char **secret_out, char *msg, size_t msg_size);

/* The webhook kind's context (hd_control_set_kind_context): the engine
 * every webhook delivers through, and the outbox async webhooks go to
 * (NULL: no --state-dir, async webhooks are refused). Borrowed; must
 * outlive the handlers. */
typedef struct hd_webhook_kind_ctx {
  hd_webhook_engine *engine;
  hd_outbox *outbox;
} hd_webhook_kind_ctx;

/* hd_webhook_factory with the whole context and the webhook's place: its
 * registration's handler id and route ("" for a simple handler), under
 * which an async webhook joins the outbox (hd_outbox_endpoint_add; it
 * leaves when the handler is destroyed). With async: the event is stored
 * by the outbox and the result says accepted (hd_result.accepted,
 * delivery_id) once committed, or fails with RESOURCE_EXHAUSTED (no room)
 * or UNAVAILABLE; max_attempts does not apply, timeout_ms does. The async
 * settings (ordered, retry_schedule_ms, max_inflight, max_rps) without
 * async, async without an outbox, a schedule over HD_OUTBOX_SCHEDULE_MAX
 * steps or a step over 7 days, max_rps outside [0, 1e6]: HD_EINVAL naming
 * the field. */
hd_err hd_webhook_build(const hd_webhook_kind_ctx *ctx, const char *key,
                        const char *id, const char *route,
                        const hd_webhook_spec *wh, hd_handler **out,
                        char **secret_out, char *msg, size_t msg_size);

#endif
