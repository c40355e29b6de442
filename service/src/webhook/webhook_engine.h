/*
 * The webhook delivery engine: its life (config, start, stop) and the jobs
 * the handler kind (kinds/webhook_kind.c) submits to it.
 *
 * The kind builds one job per event (URL, body, the headers that stay the
 * same on every attempt, signing key, limits, completion) and submits it;
 * the engine owns it from then on: it adds webhook-timestamp and
 * webhook-signature per attempt, retries, and completes the job exactly
 * once with one result, from the engine thread (or from the submitting
 * thread when the engine is stopping).
 *
 * A delivery that fails for good is logged at warn, at most one line per
 * handler per HD_WEBHOOK_FAILURE_LOG_WINDOW_S (later failures in the window
 * are counted and summed up in one line at its end): key, handler id, the
 * URL's host and port (never its path or query, a header or the secret),
 * attempts, last HTTP status, code and message.
 */
#ifndef HD_WEBHOOK_ENGINE_H
#define HD_WEBHOOK_ENGINE_H

#include "handlerd/handlerd.h"
#include "webhook_sign.h"

#define HD_WEBHOOK_CACHED_HOSTS 16 /* hosts whose idle connections are kept */
/* Defaults of the engine's limits (--max-webhook-response-bytes,
 * --max-webhook-inflight). */
#define HD_WEBHOOK_DEFAULT_MAX_RESPONSE 65536
#define HD_WEBHOOK_DEFAULT_MAX_IN_FLIGHT 10000

typedef struct hd_webhook_engine hd_webhook_engine;

typedef struct hd_webhook_engine_config {
  const char *instance;      /* names this handlerd in CloudEvents source */
  int deny_private;          /* --webhook-deny-private */
  long max_host_connections; /* per host; default 16 */
  int64_t backoff_base_ms;   /* first retry delay; default 100 */
  int64_t backoff_max_ms;    /* cap; default 10000 */
  /* PEM CA bundle that https:// webhooks are verified against (a private
   * CA); NULL: the system's (ca-certificates). Copied at start. */
  const char *ca_file;
  /* Bytes of a response body kept as the result; reading stops there and
   * the result is marked truncated. Default 64 KiB. */
  size_t max_response_bytes;
  /* Deliveries submitted and not yet completed; past it, a new delivery
   * fails at once with RESOURCE_EXHAUSTED. Default 10000. */
  int max_in_flight;
} hd_webhook_engine_config;

void hd_webhook_engine_config_init(hd_webhook_engine_config *cfg);

/* Starts the delivery thread. Stop with hd_webhook_engine_stop. */
hd_err hd_webhook_engine_start(const hd_webhook_engine_config *cfg,
                               hd_webhook_engine **out);

/* Stops the thread: deliveries still pending complete with a failed result
 * ("handlerd is shutting down"), then frees the engine. NULL is fine. Call
 * it after the gRPC server stopped and before the registry is freed. */
void hd_webhook_engine_stop(hd_webhook_engine *e);

/* Deliveries submitted and not yet completed (a gauge for /metrics). */
int hd_webhook_engine_in_flight(const hd_webhook_engine *e);

#define HD_WEBHOOK_FAILURE_LOG_WINDOW_S 10

/* A request body: immutable once made, reference counted. The jobs of one
 * event's fan-out share one (webhook_kind.c builds it once for the K
 * webhooks that get the event); the last reference frees it. The count is
 * atomic: jobs are freed on the engine thread while the submitting thread
 * may still hold its own reference. */
typedef struct hd_webhook_body hd_webhook_body;

/* A body of the NUL-terminated malloc'd `text`, which it takes (frees on
 * ENOMEM too), with one reference; NULL when `text` is NULL or on ENOMEM. */
hd_webhook_body *hd_webhook_body_take(char *text);
/* One more reference; `b` back. */
hd_webhook_body *hd_webhook_body_ref(hd_webhook_body *b);
/* Drops one; the last frees the body. NULL is fine. Any thread. */
void hd_webhook_body_unref(hd_webhook_body *b);
const char *hd_webhook_body_text(const hd_webhook_body *b);
size_t hd_webhook_body_len(const hd_webhook_body *b);

/* What one delivery's result does not say, for a caller that keeps its own
 * schedule (the outbox, which submits one attempt at a time). */
typedef struct hd_webhook_outcome {
  int attempted;          /* a request was started (not: shutdown, busy) */
  int retryable;          /* the sync path would retry this failure */
  int64_t retry_after_ms; /* the answer's Retry-After; -1: none */
  /* The first bytes of the last answer's body, whatever its status (the
   * result has the body only for a 2xx): history shows why it failed. */
  unsigned char head[1024];
  size_t head_len;
} hd_webhook_outcome;

typedef struct hd_webhook_job {
  char *url;      /* owned */
  char **headers; /* owned "name: value" lines, sent on every attempt */
  size_t n_headers;
  hd_webhook_body *body; /* one reference, dropped with the job */
  char msg_id[37];       /* webhook-id: the CloudEvent id */
  unsigned char key[HD_SECRET_MAX_BYTES]; /* signing key; wiped on free */
  size_t key_len;                         /* 0: requests are not signed */
  /* A rotation's previous key (RotateSecret): a second signature while
   * real time is before prev_until_ns (CLOCK_REALTIME); wiped on free. */
  unsigned char prev_key[HD_SECRET_MAX_BYTES];
  size_t prev_key_len; /* 0: none */
  int64_t prev_until_ns;
  long timeout_ms;                        /* per attempt, > 0 */
  int max_attempts;                       /* >= 1 */
  int64_t deadline_ns;                    /* CLOCK_REALTIME ns; 0: none */
  char handler_id[HD_HANDLER_ID_MAX + 1]; /* the result's handler_id */
  char registry_key[HD_KEY_MAX + 1];      /* for the log ("": unknown) */
  hd_done_fn *done;                       /* called once with one result */
  void *done_data;
  hd_webhook_outcome *outcome; /* NULL, or filled in before done runs */
} hd_webhook_job;

/* A zeroed job (with room for the engine's own state), or NULL on ENOMEM. */
hd_webhook_job *hd_webhook_job_new(void);

/* Frees a job that was never submitted, with everything it owns (the key
 * is wiped). NULL is fine. */
void hd_webhook_job_free(hd_webhook_job *job);

/* Hands `job` to the engine, which owns it from now on and calls
 * job->done exactly once: from the engine thread when the delivery ends,
 * or before this returns when the engine is stopping or stopped. */
void hd_webhook_engine_submit(hd_webhook_engine *e, hd_webhook_job *job);

/* The engine is reference counted so that handlers may outlive
 * hd_webhook_engine_stop (which drops the starter's reference): the memory
 * goes with the last reference, a stopped engine fails every submission. */
hd_webhook_engine *hd_webhook_engine_ref(hd_webhook_engine *e);
void hd_webhook_engine_unref(hd_webhook_engine *e);

/* The configuration the engine was started with, defaults filled in
 * (instance is never NULL). Valid while a reference is held. */
const hd_webhook_engine_config *
hd_webhook_engine_config_of(const hd_webhook_engine *e);

#endif
