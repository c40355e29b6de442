/*
 * When to retry a webhook delivery and how long to wait.
 */
#ifndef HD_WEBHOOK_RETRY_H
#define HD_WEBHOOK_RETRY_H

#include <stdint.h>
#include <time.h>

/* 1 when an attempt that ended with libcurl result `curl_code` (0: the
 * transfer completed) and HTTP status `http_status` should be retried:
 * connection errors and timeouts, 408, 429, 5xx. 2xx and other 4xx: 0.
 * (Retried curl results: resolve/connect failures, timeouts, TLS handshake
 * errors, send/receive errors, empty replies, HTTP/2 stream errors.) Note: an
 * address refused by an open-socket callback (hd_addr_allowed) surfaces from
 * libcurl as CURLE_COULDNT_CONNECT; the caller must remember that refusal and
 * not retry it. */
int hd_retry_should(int curl_code, long http_status);

/* Delay before attempt number `attempt` (2 = the first retry): exponential
 * from base_ms, doubling, capped at max_ms, with "full jitter" in
 * [delay/2, delay] drawn from *rng (xorshift state, never 0). Returns 0 for
 * attempt < 2 or non-positive base/max; no jitter when rng is NULL. The rng
 * state is not locked: one per thread (or per delivery). */
int64_t hd_retry_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms,
                            uint64_t *rng);

/* Parses a Retry-After header value: delta-seconds or an HTTP-date, relative
 * to `now`. Returns milliseconds >= 0, or -1 when unparsable. A date in the
 * past gives 0; any wait is capped at one day (86400000 ms). */
int64_t hd_retry_after_ms(const char *value, time_t now);

#endif
