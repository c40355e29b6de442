/*
 * fuzz_webhook_body: what the delivery engine does with a webhook's HTTP
 * answer (webhook/webhook_response.h): the header callback (Retry-After),
 * the body callback (size limit, truncation, stopping the transfer) and
 * hd_webhook_response_to_result (body -> the handler's result: JSON, text
 * or bytes), then the result as it goes back on the wire
 * (hd_proto_from_results, packed).
 *
 * Input: [limit][chunking][status hi][status lo], then header lines
 * ("Name: value\r\n"...) up to an empty line ("\r\n\r\n"), then the body.
 * limit % 8 picks the engine's max_response_bytes (1 to 64 KiB); limit bit
 * 7 repeats the body to over 64 KiB. Chunking picks the sizes libcurl would
 * hand the body over in. (The engine does not look at content-type.)
 *
 * Checks (webhook_kind.h's contract): at most max bytes kept, truncated
 * exactly when the body was longer, the kept bytes are the body's prefix;
 * empty -> no value; JSON only when not truncated and it parses; STRING is
 * UTF-8 without NULs, the whole body or (truncated) all but a cut last
 * character; BINARY is the kept bytes; Retry-After is -1 or 0..1 day.
 */
#include "webhook_response.h"

#include "arena.h"
#include "fuzz_util.h"
#include "proto_event.h"
#include "utf8.h"
#include "webhook_retry.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const size_t limits[] = {1, 2, 7, 64, 255, 1000, 4096, 65536};

static int utf8_ok(const unsigned char *s, size_t len) {
  for (size_t i = 0; i < len;) {
    if (s[i] == 0)
      return 0;
    size_t n = hd_utf8_char_len(s + i, len - i);
    if (n == 0)
      return 0;
    i += n;
  }
  return 1;
}

static void feed_headers(hd_webhook_response *resp, const uint8_t *h,
                         size_t len) {
  char line[1024];
  while (len > 0) {
    const uint8_t *eol = memmem(h, len, "\r\n", 2);
    size_t n = eol ? (size_t)(eol - h) : len;
    if (n + 2 <= sizeof(line)) {
      memcpy(line, h, n);
      memcpy(line + n, "\r\n", 2);
      FUZZ_CHECK(hd_webhook_response_on_header(line, 1, n + 2, resp) == n + 2);
      FUZZ_CHECK(resp->retry_after_ms >= -1 &&
                 resp->retry_after_ms <= 86400000);
    }
    n += eol ? 2 : 0;
    h += n;
    len -= n;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4)
    return 0;
  size_t max = limits[data[0] & 7];
  int inflate = data[0] >> 7;
  uint8_t chunking = data[1];
  long status = (long)data[2] << 8 | data[3];
  data += 4;
  size -= 4;

  /* Retry decisions and status mapping: total functions. */
  int code = hd_webhook_response_grpc_code(status);
  FUZZ_CHECK(code >= 0 && code <= 16);
  (void)hd_retry_should(0, status);

  hd_webhook_response resp;
  hd_webhook_response_init(&resp, max);

  const uint8_t *body = data;
  size_t body_len = size;
  const uint8_t *end = memmem(data, size, "\r\n\r\n", 4);
  if (end) {
    feed_headers(&resp, data, (size_t)(end - data) + 2);
    body = end + 4;
    body_len = size - (size_t)(end + 4 - data);
  }

  /* The body as libcurl hands it over: repeated past 64 KiB if asked. */
  uint8_t *full = NULL;
  size_t full_len = body_len;
  if (inflate && body_len > 0) {
    size_t reps = 65536 / body_len + 2;
    full_len = body_len * reps;
    full = malloc(full_len);
    FUZZ_CHECK(full != NULL);
    for (size_t i = 0; i < reps; i++)
      memcpy(full + i * body_len, body, body_len);
    body = full;
  }
  size_t fed = 0, step = 1 + chunking % 64;
  int stopped = 0;
  while (fed < full_len && !stopped) {
    size_t n = step;
    if (chunking & 0x80)
      n = 1 + (fed * 31 + chunking) % 257; /* uneven chunks */
    if (inflate)
      n *= 251;
    if (n > full_len - fed)
      n = full_len - fed;
    /* A private copy: the callback must not read past what it is given. */
    char *chunk = malloc(n);
    FUZZ_CHECK(chunk != NULL);
    memcpy(chunk, body + fed, n);
    size_t took = hd_webhook_response_on_body(chunk, 1, n, &resp);
    free(chunk);
    FUZZ_CHECK(took == n || took == 0);
    stopped = took != n;
    fed += n;
  }
  FUZZ_CHECK(resp.len <= max);
  FUZZ_CHECK(resp.truncated == (full_len > max));
  FUZZ_CHECK(stopped == resp.truncated);
  FUZZ_CHECK(resp.len == (full_len > max ? max : full_len));
  if (resp.len) {
    FUZZ_CHECK(memcmp(resp.body, body, resp.len) == 0);
    FUZZ_CHECK(resp.body[resp.len] == '\0');
  }

  hd_results *rs = hd_results_new();
  FUZZ_CHECK(rs != NULL);
  hd_result *r = hd_results_append(rs);
  FUZZ_CHECK(r != NULL);
  FUZZ_CHECK(hd_webhook_response_to_result(&resp, r) == HD_OK);
  FUZZ_CHECK(r->truncated == resp.truncated);
  r->http_status = (int)status;
  const hd_value *v = &r->value;
  const unsigned char *kept = (const unsigned char *)resp.body;
  switch (v->type) {
  case HD_VALUE_NONE:
    FUZZ_CHECK(resp.len == 0);
    break;
  case HD_VALUE_JSON: {
    FUZZ_CHECK(!resp.truncated);
    FUZZ_CHECK(v->u.bytes.len == resp.len &&
               memcmp(v->u.bytes.data, kept, resp.len) == 0);
    FUZZ_CHECK(strlen(v->u.bytes.data) == v->u.bytes.len);
    json_t *j =
        json_loadb(v->u.bytes.data, v->u.bytes.len, JSON_DECODE_ANY, NULL);
    FUZZ_CHECK(j != NULL);
    json_decref(j);
    break;
  }
  case HD_VALUE_STRING:
    FUZZ_CHECK(memcmp(v->u.bytes.data, kept, v->u.bytes.len) == 0);
    FUZZ_CHECK(utf8_ok((const unsigned char *)v->u.bytes.data, v->u.bytes.len));
    if (resp.truncated)
      FUZZ_CHECK(resp.len - v->u.bytes.len < 4);
    else
      FUZZ_CHECK(v->u.bytes.len == resp.len);
    break;
  case HD_VALUE_BINARY:
    FUZZ_CHECK(v->u.bytes.len == resp.len &&
               memcmp(v->u.bytes.data, kept, resp.len) == 0);
    if (!resp.truncated)
      FUZZ_CHECK(!utf8_ok(kept, resp.len));
    break;
  default:
    FUZZ_CHECK(0);
  }

  /* The result on the wire. */
  hd_arena *a = hd_arena_new(1024);
  FUZZ_CHECK(a != NULL);
  Handlers__V1__DispatchReply reply = HANDLERS__V1__DISPATCH_REPLY__INIT;
  FUZZ_CHECK(hd_proto_from_results(a, rs, &reply.results, &reply.n_results) ==
             HD_OK);
  size_t plen = protobuf_c_message_get_packed_size(&reply.base);
  uint8_t *buf = malloc(plen ? plen : 1);
  FUZZ_CHECK(buf && protobuf_c_message_pack(&reply.base, buf) == plen);
  Handlers__V1__DispatchReply *back =
      handlers__v1__dispatch_reply__unpack(NULL, plen, buf);
  FUZZ_CHECK(back != NULL && back->n_results == 1);
  const Handlers__V1__TopicValue *tv = back->results[0]->value;
  if (v->type == HD_VALUE_JSON)
    FUZZ_CHECK(tv && strlen(tv->json_value) == v->u.bytes.len);
  if (v->type == HD_VALUE_STRING)
    FUZZ_CHECK(tv && strlen(tv->string_value) == v->u.bytes.len);
  handlers__v1__dispatch_reply__free_unpacked(back, NULL);
  free(buf);
  hd_arena_free(a);

  hd_results_free(rs);
  free(full);
  hd_webhook_response_free(&resp);
  return 0;
}
