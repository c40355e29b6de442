/*
 * Webhook handlers: a handler kind (vtable) whose handle() hands a
 * CloudEvents POST to the delivery engine: one libcurl multi handle on its
 * own thread (curl_multi_poll + curl_multi_wakeup), keep-alive and HTTP/2
 * reuse, a cap on connections per host, retries with backoff inside the
 * caller's deadline. The endpoint's answer becomes the handler's result.
 */
#ifndef HD_WEBHOOK_H
#define HD_WEBHOOK_H

#include "handlerd/handlerd.h"
#include "handlers/v1/handlers.pb-c.h"

#define HD_WEBHOOK_DEFAULT_TIMEOUT_MS 5000
#define HD_WEBHOOK_DEFAULT_MAX_ATTEMPTS 5
#define HD_WEBHOOK_MAX_ATTEMPTS 20
#define HD_WEBHOOK_MAX_RESPONSE 65536 /* bytes of body kept as the result */

typedef struct hd_webhook_engine hd_webhook_engine;

typedef struct hd_webhook_engine_config {
  const char *instance;      /* names this handlerd in CloudEvents source */
  int deny_private;          /* --webhook-deny-private */
  long max_host_connections; /* per host; default 16 */
  int64_t backoff_base_ms;   /* first retry delay; default 100 */
  int64_t backoff_max_ms;    /* cap; default 10000 */
} hd_webhook_engine_config;

void hd_webhook_engine_config_init(hd_webhook_engine_config *cfg);

/* Starts the delivery thread. Stop with hd_webhook_engine_stop. */
hd_err hd_webhook_engine_start(const hd_webhook_engine_config *cfg,
                               hd_webhook_engine **out);

/* Stops the thread: deliveries still pending complete with a failed result
 * ("handlerd is shutting down"), then frees the engine. NULL is fine. Call
 * it after the gRPC server stopped and before the registry is freed. */
void hd_webhook_engine_stop(hd_webhook_engine *e);

/* The control plane's webhook factory (hd_webhook_factory_fn, `ud` is the
 * engine): validates the webhook (URL, secret, headers, limits) and makes a
 * handler. With new_secret, generates one into *secret_out. */
hd_err hd_webhook_factory(void *engine, const char *key,
                          const Handlers__V1__Webhook *wh, hd_handler **out,
                          char **secret_out, char *msg, size_t msg_size);

#endif
