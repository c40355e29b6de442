/*
 * webhook_response.c - a webhook's HTTP answer: the body up to its limit,
 * Retry-After, and the result they make (see webhook_response.h).
 */
#include "webhook_response.h"

#include "utf8.h"
#include "webhook_retry.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void hd_webhook_response_init(hd_webhook_response *resp, size_t max) {
  memset(resp, 0, sizeof(*resp));
  resp->max = max;
  resp->retry_after_ms = -1;
}

void hd_webhook_response_reset(hd_webhook_response *resp) {
  resp->len = 0;
  if (resp->body != NULL)
    resp->body[0] = '\0';
  resp->truncated = 0;
  resp->write_failed = 0;
  resp->retry_after_ms = -1;
}

void hd_webhook_response_free(hd_webhook_response *resp) {
  free(resp->body);
  hd_webhook_response_init(resp, resp->max);
}

/* ---- reading the answer --------------------------------------------------
 */

size_t hd_webhook_response_on_body(char *data, size_t size, size_t nmemb,
                                   void *ud) {
  hd_webhook_response *resp = ud;
  size_t len = size * nmemb;
  size_t room = resp->max - resp->len;
  size_t keep = len < room ? len : room;

  /* Past the limit, stop reading: the rest could be 100 MB the result
   * would drop anyway. The short return ends the transfer with
   * CURLE_WRITE_ERROR, which the engine takes as a complete answer. */
  if (keep < len)
    resp->truncated = 1;
  if (keep == 0)
    return 0;
  if (resp->len + keep + 1 > resp->cap) {
    size_t cap = resp->cap ? resp->cap : 1024;
    char *p;
    while (cap < resp->len + keep + 1)
      cap *= 2;
    /* Never more than the limit needs, however the chunks come. */
    if (cap > resp->max + 1)
      cap = resp->max + 1;
    p = realloc(resp->body, cap);
    if (p == NULL) {
      resp->write_failed = 1;
      return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    resp->body = p;
    resp->cap = cap;
  }
  memcpy(resp->body + resp->len, data, keep);
  resp->len += keep;
  resp->body[resp->len] = '\0';
  return keep < len ? 0 : len;
}

void hd_webhook_response_header(hd_webhook_response *resp, const char *line,
                                size_t len, time_t now) {
  static const char name[] = "retry-after:";

  /* A status line starts a new response (after a 1xx): forget the last
   * one's headers. */
  if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    resp->retry_after_ms = -1;
  } else if (len > sizeof(name) - 1 &&
             strncasecmp(line, name, sizeof(name) - 1) == 0) {
    char value[128];
    size_t n = len - (sizeof(name) - 1);
    const char *v = line + sizeof(name) - 1;

    while (n > 0 && (*v == ' ' || *v == '\t')) {
      v++;
      n--;
    }
    while (n > 0 && isspace((unsigned char)v[n - 1]))
      n--;
    /* A longer value is no number or date we would take anyway. */
    if (n < sizeof(value)) {
      memcpy(value, v, n);
      value[n] = '\0';
      resp->retry_after_ms = hd_retry_after_ms(value, now);
    }
  }
}

size_t hd_webhook_response_on_header(char *data, size_t size, size_t nmemb,
                                     void *ud) {
  size_t len = size * nmemb;

  hd_webhook_response_header(ud, data, len, time(NULL));
  return len;
}

/* ---- what it means ---------------------------------------------------------
 */

/* Length of the longest prefix of `s` that is well-formed UTF-8 without NUL
 * bytes. */
static size_t utf8_prefix(const unsigned char *s, size_t len) {
  size_t i = 0;

  while (i < len && s[i] != 0) {
    size_t n = hd_utf8_char_len(s + i, len - i);
    if (n == 0)
      break;
    i += n;
  }
  return i;
}

/* 1 when `s` (1 to 3 bytes) is the start of a UTF-8 sequence that was cut
 * short: a lead byte followed by fewer continuation bytes than it needs. */
static int incomplete_char(const unsigned char *s, size_t len) {
  size_t need;

  if (s[0] >= 0xc2 && s[0] <= 0xdf)
    need = 2;
  else if (s[0] >= 0xe0 && s[0] <= 0xef)
    need = 3;
  else if (s[0] >= 0xf0 && s[0] <= 0xf4)
    need = 4;
  else
    return 0;
  if (len >= need)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  }
  return 1;
}

static hd_err set_value(hd_result *r, const char *body, size_t len,
                        int truncated) {
  const unsigned char *u = (const unsigned char *)body;
  size_t text;

  if (len == 0)
    return HD_OK;
  /* jansson accepts a scalar followed by a NUL ("4\0"); JSON text has no
   * raw NUL, and the reply's json_value could not carry it anyway. */
  if (!truncated && memchr(body, '\0', len) == NULL) {
    json_t *j = json_loadb(body, len, JSON_DECODE_ANY, NULL);
    if (j != NULL) {
      json_decref(j);
      return hd_result_set_bytes(r, HD_VALUE_JSON, body, len);
    }
  }
  text = utf8_prefix(u, len);
  if (text == len ||
      (truncated && len - text < 4 && incomplete_char(u + text, len - text)))
    return hd_result_set_bytes(r, HD_VALUE_STRING, body, text);
  return hd_result_set_bytes(r, HD_VALUE_BINARY, body, len);
}

hd_err hd_webhook_response_to_result(const hd_webhook_response *resp,
                                     hd_result *r) {
  hd_err err = set_value(r, resp->body, resp->len, resp->truncated);

  if (err == HD_OK)
    r->truncated = resp->truncated;
  return err;
}

int hd_webhook_response_grpc_code(long status) {
  switch (status) {
  case 400:
    return 3; /* INVALID_ARGUMENT */
  case 401:
    return 16; /* UNAUTHENTICATED */
  case 403:
    return 7; /* PERMISSION_DENIED */
  case 404:
  case 410:
    return 5; /* NOT_FOUND */
  case 408:
  case 504:
    return 4; /* DEADLINE_EXCEEDED */
  case 409:
    return 10; /* ABORTED */
  case 429:
    return 8; /* RESOURCE_EXHAUSTED */
  case 501:
    return 12; /* UNIMPLEMENTED */
  case 502:
  case 503:
    return 14; /* UNAVAILABLE */
  default:
    break;
  }
  if (status >= 300 && status < 500)
    return 9; /* FAILED_PRECONDITION: redirects and other 4xx */
  if (status >= 500 && status < 600)
    return 13; /* INTERNAL */
  return 2;    /* UNKNOWN */
}
