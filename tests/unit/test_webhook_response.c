/*
 * Webhook responses (webhook/webhook_response.c): the body kept up to its
 * limit, Retry-After, the value a 2xx body becomes and the gRPC code of a
 * final HTTP status. Driven directly, as libcurl would call the callbacks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "webhook_response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Wed, 21 Oct 2015 07:28:00 GMT */
#define T_2015 ((time_t)1445412480)

/* Feeds `len` bytes of `body` in chunks of `chunk`, as libcurl would, until
 * the callback stops the transfer. Returns 1 when it did. */
static int feed(hd_webhook_response *resp, const char *body, size_t len,
                size_t chunk) {
  for (size_t at = 0; at < len;) {
    size_t n = len - at < chunk ? len - at : chunk;
    /* A copy of just this chunk: the callback may read only that. */
    char *copy = malloc(n);

    assert_non_null(copy);
    memcpy(copy, body + at, n);
    size_t took = hd_webhook_response_on_body(copy, 1, n, resp);
    free(copy);
    if (took != n) {
      assert_int_equal(took, 0);
      return 1;
    }
    at += n;
  }
  return 0;
}

/* One header line as libcurl hands it over, at T_2015. */
static void header(hd_webhook_response *resp, const char *line) {
  hd_webhook_response_header(resp, line, strlen(line), T_2015);
}

/* The result of a 2xx answer with body `body` (`len` bytes) under `max`:
 * `r` holds its value; returns the truncated flag. */
static int value_of(hd_results *rs, const char *body, size_t len, size_t max,
                    hd_result **out) {
  hd_webhook_response resp;
  hd_result *r = hd_results_append(rs);

  assert_non_null(r);
  hd_webhook_response_init(&resp, max);
  feed(&resp, body, len, 7);
  assert_int_equal(hd_webhook_response_to_result(&resp, r), HD_OK);
  assert_int_equal(r->truncated, resp.truncated);
  int truncated = resp.truncated;
  hd_webhook_response_free(&resp);
  *out = r;
  return truncated;
}

static void assert_value(const hd_result *r, hd_value_type type,
                         const char *bytes, size_t len) {
  assert_int_equal(r->value.type, type);
  assert_int_equal(r->value.u.bytes.len, len);
  assert_memory_equal(r->value.u.bytes.data, bytes, len);
  /* Text types are read as C strings too. */
  assert_int_equal(r->value.u.bytes.data[len], '\0');
}

/* ---- the body ------------------------------------------------------------ */

static void test_body_under_the_limit_is_kept_whole(void **state) {
  static const char body[] = "{\"a\": [1, 2, 3], \"b\": \"some text\"}";
  hd_webhook_response resp;

  (void)state;
  hd_webhook_response_init(&resp, 1000);
  assert_null(resp.body);
  assert_int_equal(resp.retry_after_ms, -1);
  assert_false(feed(&resp, body, sizeof(body) - 1, 5));
  assert_int_equal(resp.len, sizeof(body) - 1);
  assert_string_equal(resp.body, body);
  assert_false(resp.truncated);
  assert_false(resp.write_failed);
  hd_webhook_response_free(&resp);
  assert_null(resp.body);
  assert_int_equal(resp.len, 0);
  assert_int_equal(resp.max, 1000);
}

/* Exactly the limit is not truncated; one byte more stops the transfer and
 * keeps the prefix, however the chunks fall. */
static void test_body_past_the_limit_stops_at_it(void **state) {
  char body[300];
  hd_webhook_response resp;

  (void)state;
  for (size_t i = 0; i < sizeof(body); i++)
    body[i] = (char)('a' + i % 26);
  for (size_t chunk = 1; chunk <= sizeof(body); chunk += 37) {
    hd_webhook_response_init(&resp, 100);
    assert_false(feed(&resp, body, 100, chunk));
    assert_false(resp.truncated);
    hd_webhook_response_free(&resp);

    hd_webhook_response_init(&resp, 100);
    assert_true(feed(&resp, body, sizeof(body), chunk));
    assert_true(resp.truncated);
    assert_false(resp.write_failed);
    assert_int_equal(resp.len, 100);
    assert_memory_equal(resp.body, body, 100);
    assert_int_equal(resp.body[100], '\0');
    /* The buffer never grows past what the limit needs. */
    assert_true(resp.cap <= 101);
    hd_webhook_response_free(&resp);
  }
}

/* A new attempt starts empty, with no Retry-After from the last one. */
static void test_reset_empties_for_the_next_attempt(void **state) {
  static const char first[] = "first answer, too long";
  hd_webhook_response resp;

  (void)state;
  hd_webhook_response_init(&resp, 10);
  assert_true(feed(&resp, first, sizeof(first) - 1, 64));
  header(&resp, "Retry-After: 3\r\n");
  assert_int_equal(resp.retry_after_ms, 3000);
  hd_webhook_response_reset(&resp);
  assert_int_equal(resp.len, 0);
  assert_false(resp.truncated);
  assert_int_equal(resp.retry_after_ms, -1);
  assert_int_equal(resp.max, 10);
  assert_false(feed(&resp, "ok", 2, 64));
  assert_string_equal(resp.body, "ok");
  hd_webhook_response_free(&resp);
}

/* ---- headers ------------------------------------------------------------- */

static void test_retry_after_header(void **state) {
  hd_webhook_response resp;

  (void)state;
  hd_webhook_response_init(&resp, 10);
  header(&resp, "Content-Type: text/plain\r\n");
  assert_int_equal(resp.retry_after_ms, -1);
  /* Any case, blanks around the value, with or without CRLF. */
  header(&resp, "retry-AFTER: \t 7 \r\n");
  assert_int_equal(resp.retry_after_ms, 7000);
  header(&resp, "Retry-After: 2");
  assert_int_equal(resp.retry_after_ms, 2000);
  /* An HTTP-date, relative to the time given. */
  header(&resp, "Retry-After: Wed, 21 Oct 2015 07:28:30 GMT\r\n");
  assert_int_equal(resp.retry_after_ms, 30000);
  /* Unusable: -1, not the last good value. */
  header(&resp, "Retry-After: soon\r\n");
  assert_int_equal(resp.retry_after_ms, -1);
  /* A value too long to be a number or a date. */
  char longer[200];
  snprintf(longer, sizeof(longer), "Retry-After: %0150d\r\n", 5);
  header(&resp, "Retry-After: 4\r\n");
  header(&resp, longer);
  assert_int_equal(resp.retry_after_ms, 4000);
  /* Capped at one day. */
  header(&resp, "Retry-After: 999999999\r\n");
  assert_int_equal(resp.retry_after_ms, 86400000);
  hd_webhook_response_free(&resp);
}

/* A 100 Continue's headers are not the final answer's. */
static void test_status_line_forgets_earlier_headers(void **state) {
  hd_webhook_response resp;

  (void)state;
  hd_webhook_response_init(&resp, 10);
  header(&resp, "HTTP/1.1 100 Continue\r\n");
  header(&resp, "Retry-After: 5\r\n");
  assert_int_equal(resp.retry_after_ms, 5000);
  header(&resp, "HTTP/1.1 503 Unavailable\r\n");
  assert_int_equal(resp.retry_after_ms, -1);
  hd_webhook_response_free(&resp);
}

/* The libcurl callback takes the whole line, whatever it holds. */
static void test_header_callback_takes_every_line(void **state) {
  char line[] = "Retry-After: 1\r\n";
  hd_webhook_response resp;

  (void)state;
  hd_webhook_response_init(&resp, 10);
  assert_int_equal(hd_webhook_response_on_header(line, 1, 16, &resp), 16);
  assert_int_equal(resp.retry_after_ms, 1000);
  assert_int_equal(hd_webhook_response_on_header(line, 2, 8, &resp), 16);
  hd_webhook_response_free(&resp);
}

/* ---- the value ----------------------------------------------------------- */

static void test_value_kinds(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r;

  (void)state;
  assert_non_null(rs);
  assert_false(value_of(rs, "", 0, 100, &r));
  assert_int_equal(r->value.type, HD_VALUE_NONE);
  value_of(rs, "{\"ok\":true}", 11, 100, &r);
  assert_value(r, HD_VALUE_JSON, "{\"ok\":true}", 11);
  value_of(rs, "42", 2, 100, &r);
  assert_value(r, HD_VALUE_JSON, "42", 2);
  value_of(rs, "caf\xc3\xa9 ok", 8, 100, &r);
  assert_value(r, HD_VALUE_STRING, "caf\xc3\xa9 ok", 8);
  value_of(rs, "\xff\xfe\x01", 3, 100, &r);
  assert_value(r, HD_VALUE_BINARY, "\xff\xfe\x01", 3);
  hd_results_free(rs);
}

/* Found by fuzz_webhook_body (commit c128451; seeds json-true-then-nul and
 * json-body-with-nul): jansson accepts a JSON scalar followed by a NUL
 * byte, so "4\0" was JSON, which the reply's json_value (a C string) could
 * not carry. It is bytes: JSON text has no raw NUL, and neither does a
 * STRING. */
static void test_json_scalar_then_nul_is_bytes(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r;

  (void)state;
  assert_non_null(rs);
  value_of(rs, "4\0", 2, 100, &r);
  assert_value(r, HD_VALUE_BINARY, "4\0", 2);
  value_of(rs, "true\0", 5, 100, &r);
  assert_value(r, HD_VALUE_BINARY, "true\0", 5);
  value_of(rs, "{\"a\":1}\0junk", 12, 100, &r);
  assert_value(r, HD_VALUE_BINARY, "{\"a\":1}\0junk", 12);
  /* An escaped NUL has no raw NUL byte, but jansson refuses it (no
   * JSON_ALLOW_NUL): the body is UTF-8 text, a STRING. */
  value_of(rs, "\"a\\u0000b\"", 10, 100, &r);
  assert_value(r, HD_VALUE_STRING, "\"a\\u0000b\"", 10);
  hd_results_free(rs);
}

/* A truncated body is never JSON, even when its prefix parses. */
static void test_truncated_body_is_not_json(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r;

  (void)state;
  assert_non_null(rs);
  assert_true(value_of(rs, "12345678", 8, 4, &r));
  assert_true(r->truncated);
  assert_value(r, HD_VALUE_STRING, "1234", 4);
  hd_results_free(rs);
}

/* A character cut in two at the limit is dropped, the rest stays text;
 * a body that was not UTF-8 before the cut stays bytes. */
static void test_truncation_at_a_character_boundary(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r;

  (void)state;
  assert_non_null(rs);
  /* "ab" + U+00E9 (2 bytes) cut after its first byte. */
  assert_true(value_of(rs, "ab\xc3\xa9xyz", 7, 3, &r));
  assert_value(r, HD_VALUE_STRING, "ab", 2);
  /* U+20AC (3 bytes) cut after 2. */
  assert_true(value_of(rs, "a\xe2\x82\xac!", 5, 3, &r));
  assert_value(r, HD_VALUE_STRING, "a", 1);
  /* U+1F600 (4 bytes) cut after 3. */
  assert_true(value_of(rs, "\xf0\x9f\x98\x80!", 5, 3, &r));
  assert_value(r, HD_VALUE_STRING, "", 0);
  /* Cut exactly after a whole character: nothing dropped. */
  assert_true(value_of(rs, "a\xc3\xa9z", 4, 3, &r));
  assert_value(r, HD_VALUE_STRING, "a\xc3\xa9", 3);
  /* A bad byte before the cut: bytes, all that was kept. */
  assert_true(value_of(rs,
                       "\xff"
                       "ab\xc3\xa9",
                       5, 4, &r));
  assert_value(r, HD_VALUE_BINARY,
               "\xff"
               "ab\xc3",
               4);
  /* A lone lead byte at the end of a whole body is not a cut: bytes. */
  assert_false(value_of(rs, "ab\xc3", 3, 10, &r));
  assert_value(r, HD_VALUE_BINARY, "ab\xc3", 3);
  hd_results_free(rs);
}

/* ---- status codes -------------------------------------------------------- */

static void test_grpc_code_for_http_status(void **state) {
  static const struct {
    long status;
    int code;
  } rows[] = {
      {400, 3},  {401, 16}, {403, 7}, {404, 5},  {410, 5},  {408, 4},
      {504, 4},  {409, 10}, {429, 8}, {501, 12}, {502, 14}, {503, 14},
      {500, 13}, {599, 13}, {301, 9}, {302, 9},  {418, 9},  {499, 9},
      {0, 2},    {200, 2},  {600, 2}, {-1, 2},   {100, 2},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
    if (hd_webhook_response_grpc_code(rows[i].status) != rows[i].code)
      fail_msg("HTTP %ld: %d, want %d", rows[i].status,
               hd_webhook_response_grpc_code(rows[i].status), rows[i].code);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_body_under_the_limit_is_kept_whole),
      cmocka_unit_test(test_body_past_the_limit_stops_at_it),
      cmocka_unit_test(test_reset_empties_for_the_next_attempt),
      cmocka_unit_test(test_retry_after_header),
      cmocka_unit_test(test_status_line_forgets_earlier_headers),
      cmocka_unit_test(test_header_callback_takes_every_line),
      cmocka_unit_test(test_value_kinds),
      cmocka_unit_test(test_json_scalar_then_nul_is_bytes),
      cmocka_unit_test(test_truncated_body_is_not_json),
      cmocka_unit_test(test_truncation_at_a_character_boundary),
      cmocka_unit_test(test_grpc_code_for_http_status),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
