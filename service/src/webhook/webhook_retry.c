/*
 * Webhook retry policy: which failures are worth another attempt and how
 * long to wait. Pure functions of their arguments (the jitter state is passed
 * in), so the engine owns all timing and these are trivial to test.
 */
#include "webhook_retry.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

/* Longest wait a Retry-After can ask for. A server asking for more is
 * treated as asking for a day: the caller's deadline cuts it short anyway,
 * and it keeps the millisecond arithmetic far from overflow. */
#define RETRY_AFTER_MAX_S 86400

int hd_retry_should(int curl_code, long http_status) {
  switch (curl_code) {
  case CURLE_OK:
    break;
  /* Transient by nature: the next attempt may find the network, the DNS
   * server or the peer in a better state. */
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SSL_CONNECT_ERROR: /* includes a reset mid-handshake */
  case CURLE_GOT_NOTHING:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
    return 1;
  default:
    /* Malformed URL, certificate mismatch, response too large, aborted by
     * us...: the same request would fail the same way. */
    return 0;
  }
  /* 408 and 429 are the server saying "not now"; 5xx may be a restart.
   * Other 4xx are the request's fault; 2xx/3xx are answers. */
  return http_status == 408 || http_status == 429 ||
         (http_status >= 500 && http_status <= 599);
}

static uint64_t xorshift64(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9E3779B97F4A7C15u; /* 0 would stay 0 forever */
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x;
}

int64_t hd_retry_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms,
                            uint64_t *rng) {
  if (attempt < 2 || base_ms <= 0 || max_ms <= 0)
    return 0; /* the first attempt does not wait */
  int64_t d = base_ms < max_ms ? base_ms : max_ms;
  /* Doubling by steps rather than base << n: no overflow, however large
   * attempt is. */
  for (int i = 2; i < attempt && d < max_ms; i++)
    d = d > max_ms / 2 ? max_ms : d * 2;
  if (!rng)
    return d;
  /* Jitter keeps many handlers that failed together (an endpoint restart)
   * from retrying in lockstep; the lower half-bound keeps the backoff. */
  int64_t lo = d / 2;
  return lo + (int64_t)(xorshift64(rng) % (uint64_t)(d - lo + 1));
}

static int is_ows(char c) {
  return c == ' ' || c == '\t';
}

int64_t hd_retry_after_ms(const char *value, time_t now) {
  char buf[64];
  struct tm tm;

  if (!value)
    return -1;
  while (is_ows(*value))
    value++;
  size_t n = strlen(value);
  while (n && is_ows(value[n - 1]))
    n--;
  if (n == 0 || n >= sizeof buf)
    return -1;
  memcpy(buf, value, n);
  buf[n] = '\0';

  /* delta-seconds: 1*DIGIT */
  if (strspn(buf, "0123456789") == n) {
    int64_t s = 0;
    for (size_t i = 0; i < n && s < RETRY_AFTER_MAX_S; i++)
      s = s * 10 + (buf[i] - '0');
    return (s < RETRY_AFTER_MAX_S ? s : RETRY_AFTER_MAX_S) * 1000;
  }

  /* HTTP-date: IMF-fixdate, plus the two obsolete forms that recipients
   * must still accept (RFC 9110 5.6.7). Day and month names are English,
   * which is what strptime expects in the C locale handlerd runs in. */
  static const char *const formats[] = {
      "%a, %d %b %Y %H:%M:%S GMT", /* Sun, 06 Nov 1994 08:49:37 GMT */
      "%A, %d-%b-%y %H:%M:%S GMT", /* Sunday, 06-Nov-94 08:49:37 GMT */
      "%a %b %e %H:%M:%S %Y",      /* Sun Nov  6 08:49:37 1994 */
  };
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(buf, formats[i], &tm);
    if (!end || *end)
      continue;
    time_t t = timegm(&tm);
    if (t <= now)
      return 0; /* already passed: retry now */
    int64_t s = (int64_t)t - (int64_t)now;
    return (s < RETRY_AFTER_MAX_S ? s : RETRY_AFTER_MAX_S) * 1000;
  }
  return -1;
}
