/*
 * Unit tests: the arguments of handlerctl's async delivery options and
 * commands (client/cli/delivery_args.c): durations, the retry schedule of
 * `add --retry-schedule`, the times of --since/--until (RFC 3339 or a
 * duration ago), the delivery states of --state, --max-rps and the text of
 * a time. Linked with hcli_base (tests/CMakeLists.txt).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

/* 2026-11-30T12:00:00Z, as Python's calendar.timegm gives it. */
#define T_2026_11_30_NOON_MS 1796040000000LL

/* ---- helpers ------------------------------------------------------------ */

static uint64_t duration_ok(const char *s) {
  uint64_t ms = 12345;
  char err[256] = "";
  if (hcli_parse_duration_ms(s, &ms, err, sizeof err) != 0)
    fail_msg("duration '%s' refused: %s", s, err);
  return ms;
}

/* A refused duration; its message must contain `why`. */
static void duration_bad(const char *s, const char *why) {
  uint64_t ms;
  char err[256] = "";
  if (hcli_parse_duration_ms(s, &ms, err, sizeof err) == 0)
    fail_msg("duration '%s' taken as %llu ms", s, (unsigned long long)ms);
  if (strstr(err, why) == NULL)
    fail_msg("duration '%s': message '%s' lacks '%s'", s, err, why);
}

/* Parses `s` as a schedule that must be taken; returns the delays. */
static size_t schedule_ok(const char *s, uint32_t *out) {
  size_t n = 999;
  char err[256] = "";
  if (hcli_parse_retry_schedule(s, out, &n, err, sizeof err) != 0)
    fail_msg("schedule '%s' refused: %s", s, err);
  return n;
}

static void schedule_bad(const char *s, const char *why) {
  uint32_t out[HCLI_RETRY_SCHEDULE_MAX];
  size_t n = 0;
  char err[256] = "";
  if (hcli_parse_retry_schedule(s, out, &n, err, sizeof err) == 0)
    fail_msg("schedule '%s' taken (%zu retries)", s, n);
  if (strstr(err, why) == NULL)
    fail_msg("schedule '%s': message '%s' lacks '%s'", s, err, why);
}

/* `now` for the relative times: any fixed instant will do. */
#define NOW_MS T_2026_11_30_NOON_MS

static int64_t time_ok(const char *s) {
  int64_t ms = -12345;
  char err[256] = "";
  if (hcli_parse_time_ms(s, NOW_MS, &ms, err, sizeof err) != 0)
    fail_msg("time '%s' refused: %s", s, err);
  return ms;
}

static void time_bad(const char *s, const char *why) {
  int64_t ms;
  char err[256] = "";
  if (hcli_parse_time_ms(s, NOW_MS, &ms, err, sizeof err) == 0)
    fail_msg("time '%s' taken as %lld", s, (long long)ms);
  if (strstr(err, why) == NULL)
    fail_msg("time '%s': message '%s' lacks '%s'", s, err, why);
}

/* ---- durations ---------------------------------------------------------- */

static void test_durations_with_every_unit(void **state) {
  (void)state;
  assert_int_equal(duration_ok("250ms"), 250);
  assert_int_equal(duration_ok("5s"), 5000);
  assert_int_equal(duration_ok("5m"), 300000);
  assert_int_equal(duration_ok("2h"), 7200000);
  assert_int_equal(duration_ok("1d"), 86400000);
  assert_int_equal(duration_ok("0"), 0);
  assert_int_equal(duration_ok("0ms"), 0);
  /* A bare number is seconds, not milliseconds. */
  assert_int_equal(duration_ok("5"), 5000);
  assert_int_equal(duration_ok("10000d"), 10000ULL * 86400000ULL);
}

static void test_bad_durations_are_refused(void **state) {
  (void)state;
  duration_bad("", "not a duration");
  duration_bad("s", "not a duration");
  duration_bad("5x", "not a duration");
  duration_bad("-1s", "not a duration");
  duration_bad("1.5s", "not a duration");
  duration_bad("5 s", "not a duration");
  duration_bad("5S", "not a duration"); /* units are lower case: m vs M */
  duration_bad("5sec", "not a duration");
  duration_bad("10001d", "not a duration");
  duration_bad("99999999999999999999999", "not a duration");
}

/* ---- retry schedules ---------------------------------------------------- */

static void test_schedule_sends_the_delays_after_the_first(void **state) {
  uint32_t d[HCLI_RETRY_SCHEDULE_MAX];

  (void)state;
  /* The brief's example: "0s,1s,5m" sends [1000, 300000]. */
  assert_int_equal(schedule_ok("0s,1s,5m", d), 2);
  assert_int_equal(d[0], 1000);
  assert_int_equal(d[1], 300000);
  /* Bare numbers are seconds; spaces around entries are fine. */
  assert_int_equal(schedule_ok("0, 1 ,2", d), 2);
  assert_int_equal(d[0], 1000);
  assert_int_equal(d[1], 2000);
  assert_int_equal(schedule_ok("0ms,250ms,1d", d), 2);
  assert_int_equal(d[0], 250);
  assert_int_equal(d[1], 86400000);
  /* The longest delay that fits the API's uint32 milliseconds. */
  assert_int_equal(schedule_ok("0s,49d", d), 1);
  assert_int_equal(d[0], 49U * 86400000U);
}

static void test_schedule_first_entry_must_be_zero(void **state) {
  (void)state;
  schedule_bad("1s,2s", "the first entry is the first attempt");
  schedule_bad("1s,2s", "must be 0");
  schedule_bad("1s,2s", "'1s'");
  schedule_bad("5m", "must be 0");
  schedule_bad("1ms,0s", "must be 0");
}

static void test_bad_schedules_are_refused(void **state) {
  (void)state;
  schedule_bad("", "empty");
  /* The API's empty list is the service's schedule, not "no retries". */
  schedule_bad("0s", "no retry after the first attempt");
  schedule_bad("0", "no retry after the first attempt");
  schedule_bad("0s,,1s", "entry '' is not a duration");
  schedule_bad("0s,1s,", "entry '' is not a duration");
  schedule_bad("0s,1x", "entry '1x' is not a duration");
  schedule_bad("0s;1s", "entry '0s;1s' is not a duration");
  schedule_bad("0s,50d", "entry '50d' is too long");
}

static void test_schedule_holds_at_most_the_service_limit(void **state) {
  char text[512] = "0s";
  uint32_t d[HCLI_RETRY_SCHEDULE_MAX];

  (void)state;
  for (int i = 1; i <= HCLI_RETRY_SCHEDULE_MAX; i++)
    snprintf(text + strlen(text), sizeof text - strlen(text), ",%ds", i);
  assert_int_equal(schedule_ok(text, d), HCLI_RETRY_SCHEDULE_MAX);
  assert_int_equal(d[0], 1000);
  assert_int_equal(d[HCLI_RETRY_SCHEDULE_MAX - 1],
                   HCLI_RETRY_SCHEDULE_MAX * 1000);
  strcat(text, ",1h");
  schedule_bad(text, "more than 32 retries");
}

/* ---- times -------------------------------------------------------------- */

static void test_rfc3339_times(void **state) {
  (void)state;
  assert_int_equal(time_ok("2026-11-30T12:00:00Z"), T_2026_11_30_NOON_MS);
  assert_int_equal(time_ok("2026-11-30t12:00:00z"), T_2026_11_30_NOON_MS);
  /* An offset is the same instant. */
  assert_int_equal(time_ok("2026-11-30T14:30:00+02:30"), T_2026_11_30_NOON_MS);
  assert_int_equal(time_ok("2026-11-30T07:00:00-05:00"), T_2026_11_30_NOON_MS);
  /* Fractions: milliseconds kept, finer digits dropped. */
  assert_int_equal(time_ok("2026-11-30T12:00:00.5Z"),
                   T_2026_11_30_NOON_MS + 500);
  assert_int_equal(time_ok("2026-11-30T12:00:00.123456789Z"),
                   T_2026_11_30_NOON_MS + 123);
  assert_int_equal(time_ok("1970-01-01T00:00:00Z"), 0);
  assert_int_equal(time_ok("2000-02-29T00:00:00Z"), 951782400000LL);
  assert_int_equal(time_ok("9999-12-31T23:59:59Z"), 253402300799000LL);
}

static void test_bad_rfc3339_times_are_refused(void **state) {
  (void)state;
  time_bad("2026-11-30T12:00:00", "not a time"); /* no zone */
  time_bad("2026-11-30 12:00:00Z", "not a time");
  time_bad("2026-11-30T12:00Z", "not a time");
  time_bad("2026-13-01T00:00:00Z", "not a time");
  time_bad("2026-11-31T00:00:00Z", "not a time");
  time_bad("2025-02-29T00:00:00Z", "not a time"); /* not a leap year */
  time_bad("1900-02-29T00:00:00Z", "not a time");
  time_bad("2026-11-30T24:00:00Z", "not a time");
  time_bad("2026-11-30T12:60:00Z", "not a time");
  time_bad("2026-11-30T12:00:00.Z", "not a time");
  time_bad("2026-11-30T12:00:00Zjunk", "not a time");
  time_bad("2026-11-30T12:00:00+0200", "not a time");
  time_bad("2026-11-30", "has no time of day");
  time_bad("1969-12-31T23:59:59Z", "before 1970");
  time_bad("1970-01-01T00:30:00+01:00", "before 1970");
}

static void test_relative_times_are_before_now(void **state) {
  (void)state;
  assert_int_equal(time_ok("1h"), NOW_MS - 3600000);
  assert_int_equal(time_ok("30m"), NOW_MS - 1800000);
  assert_int_equal(time_ok("90s"), NOW_MS - 90000);
  assert_int_equal(time_ok("2d"), NOW_MS - 2 * 86400000LL);
  assert_int_equal(time_ok("250ms"), NOW_MS - 250);
  assert_int_equal(time_ok("0s"), NOW_MS);
  /* A bare number could be seconds ago or a Unix time. */
  time_bad("3600", "needs a unit");
  time_bad("1796040000", "needs a unit");
  time_bad("-1h", "not a time");
  time_bad("1 h", "not a time");
  time_bad("yesterday", "not a time");
  time_bad("", "not a time");
  /* Further back than 1970 from a `now` early in 1970. */
  int64_t ms;
  char err[256] = "";
  assert_int_equal(hcli_parse_time_ms("2h", 3600000, &ms, err, sizeof err), -1);
  assert_non_null(strstr(err, "before 1970"));
}

static void test_time_text_is_rfc3339_utc(void **state) {
  char buf[40];

  (void)state;
  assert_string_equal(hcli_time_text(T_2026_11_30_NOON_MS, buf, sizeof buf),
                      "2026-11-30T12:00:00Z");
  assert_string_equal(hcli_time_text(T_2026_11_30_NOON_MS + 7, buf, sizeof buf),
                      "2026-11-30T12:00:00.007Z");
  assert_string_equal(hcli_time_text(0, buf, sizeof buf), "-");
  /* What it writes reads back as the same instant. */
  hcli_time_text(951782400123LL, buf, sizeof buf);
  assert_int_equal(time_ok(buf), 951782400123LL);
}

/* ---- states and rates --------------------------------------------------- */

static void test_delivery_states(void **state) {
  static const struct {
    const char *text;
    hc_delivery_state want;
  } ok[] = {{"pending", HC_DELIVERY_PENDING},
            {"in_flight", HC_DELIVERY_IN_FLIGHT},
            {"in-flight", HC_DELIVERY_IN_FLIGHT},
            {"succeeded", HC_DELIVERY_SUCCEEDED},
            {"failed", HC_DELIVERY_FAILED},
            {"dead", HC_DELIVERY_DEAD},
            {"DEAD", HC_DELIVERY_DEAD},
            {"Pending", HC_DELIVERY_PENDING}};
  static const char *const bad[] = {"",
                                    "bogus",
                                    "any",
                                    "unspecified",
                                    "dead ",
                                    "succeded",
                                    "in flight",
                                    "5",
                                    "DELIVERY_STATE_UNSPECIFIED"};

  (void)state;
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    hc_delivery_state s = HC_DELIVERY_ANY;
    assert_int_equal(hcli_parse_delivery_state(ok[i].text, &s), 0);
    assert_int_equal(s, ok[i].want);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    hc_delivery_state s = HC_DELIVERY_ANY;
    if (hcli_parse_delivery_state(bad[i], &s) == 0)
      fail_msg("unknown state '%s' taken as %d", bad[i], (int)s);
  }
  /* Every state's printed name reads back as that state. */
  for (int s = HC_DELIVERY_PENDING; s <= HC_DELIVERY_DEAD; s++) {
    hc_delivery_state back = HC_DELIVERY_ANY;
    assert_int_equal(hcli_parse_delivery_state(
                         hc_delivery_state_name((hc_delivery_state)s), &back),
                     0);
    assert_int_equal(back, s);
  }
}

static void test_rates(void **state) {
  static const char *const bad[] = {"",    "0",     "0.0", "-1", "+1", "nan",
                                    "inf", "1e999", "1/s", "0x", " 1"};
  double r = 0;

  (void)state;
  assert_int_equal(hcli_parse_rate("0.5", &r), 0);
  assert_true(r == 0.5);
  assert_int_equal(hcli_parse_rate("20", &r), 0);
  assert_true(r == 20.0);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (hcli_parse_rate(bad[i], &r) == 0)
      fail_msg("rate '%s' taken as %g", bad[i], r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_durations_with_every_unit),
      cmocka_unit_test(test_bad_durations_are_refused),
      cmocka_unit_test(test_schedule_sends_the_delays_after_the_first),
      cmocka_unit_test(test_schedule_first_entry_must_be_zero),
      cmocka_unit_test(test_bad_schedules_are_refused),
      cmocka_unit_test(test_schedule_holds_at_most_the_service_limit),
      cmocka_unit_test(test_rfc3339_times),
      cmocka_unit_test(test_bad_rfc3339_times_are_refused),
      cmocka_unit_test(test_relative_times_are_before_now),
      cmocka_unit_test(test_time_text_is_rfc3339_utc),
      cmocka_unit_test(test_delivery_states),
      cmocka_unit_test(test_rates),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
