/*
 * webhook_response.h - a webhook's HTTP answer as the delivery engine reads
 * it: the body kept up to a size limit, the Retry-After header, and what
 * they become in the handler's result (the value of a 2xx body, the gRPC
 * code of a failed status). The rules are the ones kinds/webhook_kind.h
 * promises its callers.
 *
 * A module of its own, without libcurl, so that the body and header
 * callbacks can be driven directly by tests and by
 * tests/fuzz/fuzz_webhook_body.c with the bytes a receiver could send.
 *
 * Threads: a response belongs to one delivery, which belongs to one thread
 * at a time (the engine thread while a transfer runs); nothing here locks.
 */
#ifndef HD_WEBHOOK_RESPONSE_H
#define HD_WEBHOOK_RESPONSE_H

#include "handlerd/handlerd.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* What one attempt got back. The fields are for reading; they change only
 * through the functions below. */
typedef struct hd_webhook_response {
  /* The kept bytes of the body, NUL-terminated after `len` (so that a
   * value can be read as text without a copy); NULL until the first byte.
   * Owned by the response: freed by hd_webhook_response_free. */
  char *body;
  size_t len;
  size_t cap;             /* bytes allocated at `body` */
  size_t max;             /* bytes kept at most (max_response_bytes) */
  int truncated;          /* the body went past `max`: reading stopped */
  int write_failed;       /* out of memory while storing the body */
  int64_t retry_after_ms; /* -1: no usable Retry-After */
} hd_webhook_response;

/* An empty response that keeps at most `max` body bytes. */
void hd_webhook_response_init(hd_webhook_response *resp, size_t max);

/* Empties it for the next attempt; the buffer and `max` stay. */
void hd_webhook_response_reset(hd_webhook_response *resp);

/* Frees the body; `resp` is then as after init with the same `max`. */
void hd_webhook_response_free(hd_webhook_response *resp);

/*
 * libcurl's CURLOPT_WRITEFUNCTION with CURLOPT_WRITEDATA = the response:
 * appends the size * nmemb bytes at `data` (which it only reads) up to
 * `max`. Returns size * nmemb, or 0 to stop the transfer: past the limit
 * (truncated = 1: the rest could be 100 MB the result would drop anyway;
 * the caller takes the CURLE_WRITE_ERROR as a complete answer) or out of
 * memory (write_failed = 1).
 */
size_t hd_webhook_response_on_body(char *data, size_t size, size_t nmemb,
                                   void *resp);

/* libcurl's CURLOPT_HEADERFUNCTION with CURLOPT_HEADERDATA = the response:
 * hd_webhook_response_header() at the current time. Returns size * nmemb. */
size_t hd_webhook_response_on_header(char *data, size_t size, size_t nmemb,
                                     void *resp);

/* One header line (`len` bytes, CRLF included or not, not NUL-terminated):
 * a status line forgets the headers before it (a 1xx answer's); a
 * Retry-After sets retry_after_ms relative to `now` (hd_retry_after_ms: -1
 * when unusable, at most one day). Other lines are ignored. */
void hd_webhook_response_header(hd_webhook_response *resp, const char *line,
                                size_t len, time_t now);

/*
 * The value of a 2xx answer into `r` (replacing its value), and
 * r->truncated: nothing for an empty body; JSON when the whole body parses
 * and holds no NUL byte (JSON text has none, though jansson accepts a
 * scalar followed by one); else STRING when the body is UTF-8 without NUL;
 * else BINARY. A truncated body is never JSON, and a character cut in two
 * at the limit is dropped so that the rest can still be STRING. The bytes
 * are copied. HD_ENOMEM leaves `r` without a value.
 */
hd_err hd_webhook_response_to_result(const hd_webhook_response *resp,
                                     hd_result *r);

/* The gRPC code (0..16) of a delivery that ended with final HTTP status
 * `status` (any number; the table is in kinds/webhook_kind.h): 404 ->
 * NOT_FOUND, 503 -> UNAVAILABLE, other 4xx FAILED_PRECONDITION, other 5xx
 * INTERNAL, anything else UNKNOWN. */
int hd_webhook_response_grpc_code(long status);

#endif
