/*
 * Unit tests: the outbox's retry schedule (outbox/outbox_retry.c): the
 * defaults, the --retry-schedule text and the delay before the next attempt
 * (jitter, Retry-After, the floor after a 429 or a timeout, a webhook's own
 * schedule).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "outbox_internal.h"

#define S 1000LL
#define M (60 * S)
#define H (60 * M)
#define D (24 * H)

static const int64_t svix[] = {5 * S, 5 * M,  30 * M, 2 * H,
                               5 * H, 10 * H, 10 * H};
#define N_SVIX (sizeof(svix) / sizeof(svix[0]))

/* An outbox with only its configuration filled in: what the delay reads. */
static void outbox_of(struct hd_outbox *o, int jitter) {
  memset(o, 0, sizeof(*o));
  hd_outbox_config_init(&o->cfg);
  o->cfg.jitter = jitter;
}

/* ---- defaults ------------------------------------------------------------ */

static void test_config_defaults(void **state) {
  hd_outbox_config cfg;

  (void)state;
  memset(&cfg, 0xab, sizeof(cfg));
  hd_outbox_config_init(&cfg);
  assert_int_equal(cfg.n_retry_schedule, N_SVIX);
  for (size_t i = 0; i < N_SVIX; i++)
    assert_int_equal(cfg.retry_schedule_ms[i], svix[i]);
  for (size_t i = N_SVIX; i < HD_OUTBOX_SCHEDULE_MAX; i++)
    assert_int_equal(cfg.retry_schedule_ms[i], 0);
  assert_int_equal(cfg.retention_ms, 7 * D);
  assert_int_equal(cfg.disable_after_ms, 5 * D);
  assert_int_equal(cfg.max_pending, 100000);
  assert_int_equal(cfg.max_attempts_in_flight, 1000);
  assert_int_equal(cfg.jitter, 1);
}

/* ---- parsing ------------------------------------------------------------- */

static void parse_ok(const char *text, const int64_t *want, size_t n) {
  hd_outbox_config cfg;
  char msg[256] = "";

  hd_outbox_config_init(&cfg);
  assert_int_equal(hd_outbox_parse_schedule(text, &cfg, msg, sizeof(msg)),
                   HD_OK);
  assert_int_equal(cfg.n_retry_schedule, n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(cfg.retry_schedule_ms[i], want[i]);
}

/* Refused: the message contains each of `parts` (NULL-terminated), and the
 * configuration is unchanged. */
static void parse_bad(const char *text, const char *const *parts) {
  hd_outbox_config cfg, before;
  char msg[256] = "";

  hd_outbox_config_init(&cfg);
  before = cfg;
  assert_int_equal(hd_outbox_parse_schedule(text, &cfg, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_true(msg[0] != '\0');
  for (; *parts; parts++) {
    if (strstr(msg, *parts) == NULL)
      fail_msg("'%s': message '%s' does not say '%s'", text ? text : "(null)",
               msg, *parts);
  }
  assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void test_parse_good(void **state) {
  (void)state;
  /* The default, written out. */
  parse_ok("0s,5s,5m,30m,2h,5h,10h,10h", svix, N_SVIX);
  /* Every unit, and bare numbers in seconds. */
  parse_ok("0,500ms,2,3s,1m,1h,1d",
           (const int64_t[]){500, 2 * S, 3 * S, M, H, D}, 6);
  parse_ok("0ms,1ms", (const int64_t[]){1}, 1);
  /* Only the first attempt: no retries. */
  parse_ok("0s", NULL, 0);
  parse_ok("0", NULL, 0);
  /* The longest step there is, in each unit. */
  parse_ok("0s,7d,168h,10080m,604800s,604800000ms",
           (const int64_t[]){7 * D, 7 * D, 7 * D, 7 * D, 7 * D}, 5);
  /* As many entries as there may be: 1 + HD_OUTBOX_SCHEDULE_MAX. */
  {
    char text[512] = "0s";
    int64_t want[HD_OUTBOX_SCHEDULE_MAX];
    for (int i = 0; i < HD_OUTBOX_SCHEDULE_MAX; i++) {
      snprintf(text + strlen(text), sizeof(text) - strlen(text), ",%dms",
               i + 1);
      want[i] = i + 1;
    }
    parse_ok(text, want, HD_OUTBOX_SCHEDULE_MAX);
  }
}

static void test_parse_first_not_zero(void **state) {
  (void)state;
  parse_bad("5s,5m", (const char *const[]){"first", "0s", NULL});
  parse_bad("1ms", (const char *const[]){"first", "0s", NULL});
  parse_bad("1", (const char *const[]){"first", NULL});
}

static void test_parse_junk_named(void **state) {
  (void)state;
  parse_bad("0s,5s,abc,1m", (const char *const[]){"entry 3", "abc", NULL});
  parse_bad("0s,5x", (const char *const[]){"entry 2", "5x", NULL});
  parse_bad("0s,,5s", (const char *const[]){"entry 2", NULL});
  parse_bad("0s,5s,", (const char *const[]){"entry 3", NULL});
  parse_bad("0s,-5s", (const char *const[]){"entry 2", "-5s", NULL});
  parse_bad("0s,1.5s", (const char *const[]){"entry 2", NULL});
  parse_bad("s", (const char *const[]){"entry 1", NULL});
  parse_bad("0s,5ss", (const char *const[]){"entry 2", NULL});
  parse_bad("", (const char *const[]){"empty", NULL});
  parse_bad(NULL, (const char *const[]){"empty", NULL});
}

static void test_parse_too_many(void **state) {
  char text[512] = "0s", want[64];

  (void)state;
  for (int i = 0; i < HD_OUTBOX_SCHEDULE_MAX + 1; i++)
    snprintf(text + strlen(text), sizeof(text) - strlen(text), ",1s");
  snprintf(want, sizeof(want), "more than %d entries",
           HD_OUTBOX_SCHEDULE_MAX + 1);
  parse_bad(text, (const char *const[]){want, NULL});
}

static void test_parse_over_a_week(void **state) {
  (void)state;
  parse_bad("0s,8d", (const char *const[]){"entry 2", "8d", "7d", NULL});
  parse_bad("0s,5s,169h", (const char *const[]){"entry 3", "169h", NULL});
  parse_bad("0s,10081m", (const char *const[]){"entry 2", NULL});
  parse_bad("0s,604801", (const char *const[]){"entry 2", NULL});
  parse_bad("0s,604800001ms", (const char *const[]){"entry 2", NULL});
  /* Digits enough to overflow 64 bits, were they multiplied out. */
  parse_bad("0s,99999999999999999999999999d",
            (const char *const[]){"entry 2", NULL});
  parse_bad("0s,99999999999999999999999999ms",
            (const char *const[]){"entry 2", NULL});
}

/* ---- the delay ----------------------------------------------------------- */

static void test_delay_exact_without_jitter(void **state) {
  struct hd_outbox o;
  uint64_t rng = 12345;

  (void)state;
  outbox_of(&o, 0);
  for (size_t i = 0; i < N_SVIX; i++)
    assert_int_equal(ob_retry_delay_ms(&o, NULL, (int)i + 1, 500, 0, -1, &rng),
                     svix[i]);
  /* Exhausted, and nonsense. */
  assert_int_equal(
      ob_retry_delay_ms(&o, NULL, (int)N_SVIX + 1, 500, 0, -1, &rng), -1);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 100, 500, 0, -1, &rng), -1);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 0, 500, 0, -1, &rng), -1);
  /* An empty schedule: no retry at all. */
  o.cfg.n_retry_schedule = 0;
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 500, 0, -1, &rng), -1);
}

static void test_delay_jitter_bounds(void **state) {
  struct hd_outbox o;
  uint64_t rng = 0x9e3779b97f4a7c15ull;

  (void)state;
  outbox_of(&o, 1);
  for (size_t i = 0; i < N_SVIX; i++) {
    int64_t base = svix[i], lo = INT64_MAX, hi = 0, first = -1;
    int varied = 0;
    for (int k = 0; k < 10000; k++) {
      int64_t d = ob_retry_delay_ms(&o, NULL, (int)i + 1, 503, 0, -1, &rng);
      if (d < base * 4 / 5 || d > base * 6 / 5)
        fail_msg("attempt %zu: %lld ms is not within 20 %% of %lld ms", i + 1,
                 (long long)d, (long long)base);
      if (first < 0)
        first = d;
      varied |= d != first;
      lo = d < lo ? d : lo;
      hi = d > hi ? d : hi;
    }
    assert_true(varied);
    /* Spread over the whole band, not a sliver of it. */
    assert_true(lo < base * 17 / 20); /* below -15 % */
    assert_true(hi > base * 23 / 20); /* above +15 % */
  }
  /* Exhausted stays exhausted with jitter. */
  assert_int_equal(
      ob_retry_delay_ms(&o, NULL, (int)N_SVIX + 1, 503, 0, -1, &rng), -1);
}

static void test_delay_retry_after_clamped(void **state) {
  struct hd_outbox o;
  uint64_t rng = 777;

  (void)state;
  outbox_of(&o, 1); /* Retry-After replaces the jittered delay */
  /* Attempt 1: base 5 s. */
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 503, 0, 0, &rng), 5 * S);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 503, 0, 1 * S, &rng), 5 * S);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 503, 0, 5 * S, &rng), 5 * S);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 503, 0, 7 * S, &rng), 7 * S);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 503, 0, 10 * S, &rng),
                   10 * S);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 503, 0, 11 * S, &rng),
                   10 * S);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 503, 0, 3 * H, &rng), 10 * S);
  /* Attempt 3: base 30 min. */
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 3, 503, 0, 45 * M, &rng),
                   45 * M);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 3, 503, 0, 5 * H, &rng), 60 * M);
  assert_int_equal(ob_retry_delay_ms(&o, NULL, 3, 503, 0, 1 * S, &rng), 30 * M);
  /* A Retry-After does not revive an exhausted schedule. */
  assert_int_equal(
      ob_retry_delay_ms(&o, NULL, (int)N_SVIX + 1, 503, 0, 5 * S, &rng), -1);
}

static void test_delay_slow_down(void **state) {
  struct hd_outbox o;
  uint64_t rng = 4242;

  (void)state;
  for (int jitter = 0; jitter <= 1; jitter++) {
    outbox_of(&o, jitter);
    for (int k = 0; k < 1000; k++) {
      /* 429, with and without a Retry-After below the floor. */
      assert_true(ob_retry_delay_ms(&o, NULL, 1, 429, 0, -1, &rng) >= 60 * S);
      assert_true(ob_retry_delay_ms(&o, NULL, 1, 429, 0, 7 * S, &rng) >=
                  60 * S);
      /* A timeout (no status). */
      assert_true(ob_retry_delay_ms(&o, NULL, 1, 0, 1, -1, &rng) >= 60 * S);
      /* A 503 or a connection error has no floor. */
      assert_true(ob_retry_delay_ms(&o, NULL, 1, 503, 0, -1, &rng) < 60 * S);
      assert_true(ob_retry_delay_ms(&o, NULL, 1, 0, 0, -1, &rng) < 60 * S);
      /* The floor only raises: a longer step stays as it is. */
      int64_t d = ob_retry_delay_ms(&o, NULL, 3, 429, 0, -1, &rng);
      assert_true(d >= 30 * M * 4 / 5 && d <= 30 * M * 6 / 5);
      d = ob_retry_delay_ms(&o, NULL, 2, 0, 1, -1, &rng);
      assert_true(d >= 5 * M * 4 / 5 && d <= 5 * M * 6 / 5);
    }
    assert_int_equal(ob_retry_delay_ms(&o, NULL, 1, 429, 0, -1, &rng), 60 * S);
    /* Nor does a floor revive an exhausted schedule. */
    assert_int_equal(
        ob_retry_delay_ms(&o, NULL, (int)N_SVIX + 1, 429, 1, -1, &rng), -1);
  }
}

static void test_delay_endpoint_schedule(void **state) {
  struct hd_outbox o;
  struct hd_outbox_endpoint ep;
  uint64_t rng = 99;

  (void)state;
  outbox_of(&o, 0);
  memset(&ep, 0, sizeof(ep));
  ep.schedule[0] = 100;
  ep.schedule[1] = 250;
  ep.n_schedule = 2;
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 1, 500, 0, -1, &rng), 100);
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 2, 500, 0, -1, &rng), 250);
  /* Exhausted after its own 2 steps, though the outbox's has 7. */
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 3, 500, 0, -1, &rng), -1);
  /* Retry-After is clamped to the endpoint's step. */
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 1, 503, 0, 10 * S, &rng), 200);
  /* A longer endpoint schedule outlasts the outbox's. */
  o.cfg.n_retry_schedule = 1;
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 2, 500, 0, -1, &rng), 250);
  /* No steps of its own: the outbox's. */
  hd_outbox_config_init(&o.cfg);
  o.cfg.jitter = 0;
  ep.n_schedule = 0;
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 1, 500, 0, -1, &rng), 5 * S);
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 7, 500, 0, -1, &rng), 10 * H);
  assert_int_equal(ob_retry_delay_ms(&o, &ep, 8, 500, 0, -1, &rng), -1);
  /* With jitter, the endpoint's steps are jittered too. */
  o.cfg.jitter = 1;
  ep.schedule[0] = 1000;
  ep.n_schedule = 1;
  for (int k = 0; k < 1000; k++) {
    int64_t d = ob_retry_delay_ms(&o, &ep, 1, 500, 0, -1, &rng);
    assert_true(d >= 800 && d <= 1200);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_defaults),
      cmocka_unit_test(test_parse_good),
      cmocka_unit_test(test_parse_first_not_zero),
      cmocka_unit_test(test_parse_junk_named),
      cmocka_unit_test(test_parse_too_many),
      cmocka_unit_test(test_parse_over_a_week),
      cmocka_unit_test(test_delay_exact_without_jitter),
      cmocka_unit_test(test_delay_jitter_bounds),
      cmocka_unit_test(test_delay_retry_after_clamped),
      cmocka_unit_test(test_delay_slow_down),
      cmocka_unit_test(test_delay_endpoint_schedule),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
