/*
 * Webhook retry policy: what is retried, backoff bounds, Retry-After.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "webhook_retry.h"

#include <curl/curl.h>
#include <stdio.h>
#include <time.h>

/* Wed, 21 Oct 2015 07:28:00 GMT */
#define T_2015 ((time_t)1445412480)

static void test_should_retry_table(void **state) {
  (void)state;
  static const struct {
    int curl_code;
    long status;
    int want;
  } rows[] = {
      {CURLE_OK, 200, 0},
      {CURLE_OK, 204, 0},
      {CURLE_OK, 301, 0},
      {CURLE_OK, 400, 0},
      {CURLE_OK, 401, 0},
      {CURLE_OK, 404, 0},
      {CURLE_OK, 413, 0},
      {CURLE_OK, 408, 1},
      {CURLE_OK, 429, 1},
      {CURLE_OK, 500, 1},
      {CURLE_OK, 502, 1},
      {CURLE_OK, 503, 1},
      {CURLE_OK, 599, 1},
      {CURLE_OK, 600, 0},
      {CURLE_OK, 0, 0},
      {CURLE_COULDNT_CONNECT, 0, 1},
      {CURLE_OPERATION_TIMEDOUT, 0, 1},
      {CURLE_COULDNT_RESOLVE_HOST, 0, 1},
      {CURLE_RECV_ERROR, 0, 1},
      {CURLE_GOT_NOTHING, 0, 1},
      {CURLE_URL_MALFORMAT, 0, 0},
      {CURLE_PEER_FAILED_VERIFICATION, 0, 0},
      {CURLE_ABORTED_BY_CALLBACK, 0, 0},
  };
  assert_int_equal(CURLE_COULDNT_CONNECT, 7);
  assert_int_equal(CURLE_OPERATION_TIMEDOUT, 28);
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    if (hd_retry_should(rows[i].curl_code, rows[i].status) != rows[i].want)
      fail_msg("curl %d, status %ld: want %d", rows[i].curl_code,
               rows[i].status, rows[i].want);
}

static void test_backoff_doubles_within_jitter_bounds(void **state) {
  (void)state;
  uint64_t rng = 42;
  int64_t want = 100; /* the undelayed value for each attempt */

  for (int attempt = 2; attempt <= 8; attempt++, want *= 2) {
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 200; i++) {
      int64_t d = hd_retry_backoff_ms(attempt, 100, 100000, &rng);
      if (d < want / 2 || d > want)
        fail_msg("attempt %d: %lld not in [%lld, %lld]", attempt, (long long)d,
                 (long long)(want / 2), (long long)want);
      lo = d < lo ? d : lo;
      hi = d > hi ? d : hi;
    }
    /* jitter actually spreads the delays over the range */
    assert_true(hi - lo > want / 4);
  }
}

static void test_backoff_without_rng_is_the_full_delay(void **state) {
  (void)state;
  assert_int_equal(hd_retry_backoff_ms(2, 100, 10000, NULL), 100);
  assert_int_equal(hd_retry_backoff_ms(3, 100, 10000, NULL), 200);
  assert_int_equal(hd_retry_backoff_ms(5, 100, 10000, NULL), 800);
}

static void test_backoff_stays_under_cap(void **state) {
  (void)state;
  uint64_t rng = 7;
  for (int attempt = 2; attempt < 200; attempt++) {
    int64_t d = hd_retry_backoff_ms(attempt, 100, 10000, &rng);
    assert_in_range(d, attempt >= 9 ? 5000 : 50, 10000);
  }
  assert_int_equal(hd_retry_backoff_ms(1000, 100, 10000, NULL), 10000);
  /* huge inputs do not overflow */
  assert_int_equal(hd_retry_backoff_ms(100, INT64_MAX / 3, INT64_MAX, NULL),
                   INT64_MAX);
  /* a base above the cap is cut to the cap */
  assert_int_equal(hd_retry_backoff_ms(2, 5000, 1000, NULL), 1000);
}

static void test_backoff_first_attempt_does_not_wait(void **state) {
  (void)state;
  uint64_t rng = 1;
  assert_int_equal(hd_retry_backoff_ms(1, 100, 10000, &rng), 0);
  assert_int_equal(hd_retry_backoff_ms(0, 100, 10000, &rng), 0);
}

static void test_backoff_survives_zero_rng_state(void **state) {
  (void)state;
  uint64_t rng = 0;
  int64_t d = hd_retry_backoff_ms(4, 100, 10000, &rng);
  assert_in_range(d, 200, 400);
  assert_true(rng != 0);
}

static void test_retry_after_delta_seconds(void **state) {
  (void)state;
  assert_int_equal(hd_retry_after_ms("3", T_2015), 3000);
  assert_int_equal(hd_retry_after_ms("0", T_2015), 0);
  assert_int_equal(hd_retry_after_ms(" 120 ", T_2015), 120000);
  /* capped at a day, without overflowing on absurd values */
  assert_int_equal(hd_retry_after_ms("99999999999999999999999999", T_2015),
                   86400000);
}

static void test_retry_after_http_date_ahead(void **state) {
  (void)state;
  time_t now = T_2015 - 10;
  assert_int_equal(hd_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", now),
                   10000);
  /* the two obsolete forms HTTP still requires */
  assert_int_equal(hd_retry_after_ms("Wednesday, 21-Oct-15 07:28:00 GMT", now),
                   10000);
  assert_int_equal(hd_retry_after_ms("Wed Oct 21 07:28:00 2015", now), 10000);
}

static void test_retry_after_http_date_from_clock(void **state) {
  (void)state;
  char buf[64];
  time_t now = time(NULL);
  time_t later = now + 10;
  struct tm tm;
  gmtime_r(&later, &tm);
  strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  int64_t ms = hd_retry_after_ms(buf, now);
  assert_in_range(ms, 9000, 10000);
}

static void test_retry_after_past_date_is_zero(void **state) {
  (void)state;
  assert_int_equal(
      hd_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", T_2015 + 3600), 0);
  assert_int_equal(hd_retry_after_ms("Thu, 01 Jan 1970 00:00:00 GMT", T_2015),
                   0);
}

static void test_retry_after_garbage_is_minus_one(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "   ",
      "soon",
      "-5",
      "3.5",
      "3s",
      "0x10",
      "Wed, 21 Oct 2015 07:28:00",
      "Wed, 21 Oct 2015 07:28:00 GMT trailing",
      "Wed, 32 Oct 2015 07:28:00 GMT",
      "Wed, 21 Foo 2015 07:28:00 GMT",
      "Wed, 21 Oct 2015 07:28:00 GMT and a very long tail that goes past "
      "every buffer",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (hd_retry_after_ms(bad[i], T_2015) != -1)
      fail_msg("\"%s\" parsed", bad[i]);
  assert_int_equal(hd_retry_after_ms(NULL, T_2015), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_should_retry_table),
      cmocka_unit_test(test_backoff_doubles_within_jitter_bounds),
      cmocka_unit_test(test_backoff_without_rng_is_the_full_delay),
      cmocka_unit_test(test_backoff_stays_under_cap),
      cmocka_unit_test(test_backoff_first_attempt_does_not_wait),
      cmocka_unit_test(test_backoff_survives_zero_rng_state),
      cmocka_unit_test(test_retry_after_delta_seconds),
      cmocka_unit_test(test_retry_after_http_date_ahead),
      cmocka_unit_test(test_retry_after_http_date_from_clock),
      cmocka_unit_test(test_retry_after_past_date_is_zero),
      cmocka_unit_test(test_retry_after_garbage_is_minus_one),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
