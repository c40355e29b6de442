/*
 * Process-wide counters and a Prometheus text endpoint (libmicrohttpd) for
 * them: `handlerd --metrics-listen 127.0.0.1:9464` serves GET /metrics.
 * Counting is a relaxed atomic add: free enough for the hot path.
 */
#ifndef HD_METRICS_H
#define HD_METRICS_H

#include "handlerd/error.h"

#include <stddef.h>

#include <stdint.h>

/* Method slots; the last is "unknown". The server's 15 methods and room
 * for more: one past the table is not served (server.c logs it). */
#define HD_METRICS_METHODS 20

/* Names method slot `i` (the server's method table order). */
void hd_metrics_set_method_name(int i, const char *name);
/* One gRPC call of method slot `method` ended with status `code` (0..16). */
void hd_metrics_call(int method, int code);
/* One dispatched event (`event`: its name; a unary call or one stream item)
 * ended with status `code`; `duration_ns` < 0 when it never ran. */
void hd_metrics_dispatch(const char *event, int code, int64_t duration_ns);
/* One handler result of a dispatch; `kind` is hd_result.kind. */
void hd_metrics_result(const char *kind, int ok);
/* Gives handler kind `kind` (static string) a label of its own in
 * handlerd_handler_results_total, rendered even at zero; until then it
 * counts as "other". main.c adds every row of the kind table (kinds.h), so
 * a new kind needs nothing here. HD_EBUSY past 16 labels. Call before
 * serving: not thread-safe with hd_metrics_result. */
hd_err hd_metrics_add_result_kind(const char *kind);
/* One webhook attempt made (HTTP request sent); `retry`: not the first. */
void hd_metrics_webhook_attempt(int retry);
/* One webhook delivery completed with result code `code` (0: ok). */
void hd_metrics_webhook_delivery(int code, int64_t duration_ns);

/* One gRPC call refused before it ran: `reason` is "unauthenticated",
 * "max_calls", "max_health_watches", "max_connections",
 * "out_of_descriptors" or "shutting_down"
 * (anything else counts as "other"). Rendered as
 * handlerd_calls_refused_total{reason="..."}. */
void hd_metrics_call_refused(const char *reason);

/* A gauge read when /metrics is scraped. */
typedef int64_t hd_gauge_fn(void *ud);
void hd_metrics_set_gauge(const char *name, const char *help, hd_gauge_fn *fn,
                          void *ud);
/* As a gauge, for a value that only grows (rendered with TYPE counter;
 * `name` ends in _total). */
void hd_metrics_set_counter(const char *name, const char *help, hd_gauge_fn *fn,
                            void *ud);

/* The exposition text; malloc'd, caller frees. NULL on ENOMEM. */
char *hd_metrics_render(void);

typedef struct hd_metrics_server hd_metrics_server;
/* Serves /metrics on `listen` ("host:port"; IPv4). HD_EINVAL with a message
 * for a bad address; HD_EIO with a message naming the address and the
 * reason when it cannot listen there ("... 127.0.0.1:9464: port 9464 is
 * already in use"). libmicrohttpd's own messages go through hd_log. */
hd_err hd_metrics_server_start(const char *listen, hd_metrics_server **out,
                               char *msg, size_t msg_size);
void hd_metrics_server_stop(hd_metrics_server *s);

#endif
