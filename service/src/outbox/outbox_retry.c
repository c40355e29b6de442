/*
 * outbox_retry.c - the retry schedule of async deliveries: Svix's default,
 * the --retry-schedule text, and the delay before the next attempt.
 */
#include "errmsg.h"
#include "outbox_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SECOND 1000LL
#define MINUTE (60 * SECOND)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)

/* After a 429 or a timeout the receiver is struggling: never sooner. */
#define SLOW_DOWN_MS (60 * SECOND)
/* A step of a schedule may not be longer than this. */
#define STEP_MAX_MS (7 * DAY)

void hd_outbox_config_init(hd_outbox_config *cfg) {
  static const int64_t svix[] = {5 * SECOND, 5 * MINUTE, 30 * MINUTE, 2 * HOUR,
                                 5 * HOUR,   10 * HOUR,  10 * HOUR};

  memset(cfg, 0, sizeof(*cfg));
  memcpy(cfg->retry_schedule_ms, svix, sizeof(svix));
  cfg->n_retry_schedule = sizeof(svix) / sizeof(svix[0]);
  cfg->retention_ms = 7 * DAY;
  cfg->disable_after_ms = 5 * DAY;
  cfg->max_pending = 100000;
  cfg->max_attempts_in_flight = 1000;
  cfg->jitter = 1;
  cfg->lease_ms = 30 * SECOND;
}

/* One duration: digits and a unit (ms, s, m, h, d; none: s). -1 when it
 * is not one. */
static int64_t parse_duration(const char *s, size_t len) {
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {{"ms", 1},   {"s", SECOND}, {"m", MINUTE},
               {"h", HOUR}, {"d", DAY},    {"", SECOND}};
  size_t digits = 0;
  int64_t n = 0;

  while (digits < len && isdigit((unsigned char)s[digits])) {
    if (n > STEP_MAX_MS)
      return -1;
    n = n * 10 + (s[digits++] - '0');
  }
  if (digits == 0)
    return -1;
  for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
    size_t ul = strlen(units[u].unit);
    if (len - digits == ul && strncmp(s + digits, units[u].unit, ul) == 0)
      return n > STEP_MAX_MS / units[u].ms ? -1 : n * units[u].ms;
  }
  return -1;
}

hd_err hd_outbox_parse_schedule(const char *text, hd_outbox_config *cfg,
                                char *msg, size_t msg_size) {
  int64_t steps[HD_OUTBOX_SCHEDULE_MAX + 1];
  size_t n = 0;
  const char *p = text;

  if (text == NULL || text[0] == '\0')
    return hd_errmsg(msg, msg_size, HD_EINVAL, "retry schedule: empty");
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    int64_t ms = parse_duration(p, len);

    if (ms < 0)
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "retry schedule: entry %zu ('%.*s') is not a duration "
                       "such as 500ms, 5s, 5m, 2h or 1d (at most 7d)",
                       n + 1, (int)(len > 32 ? 32 : len), p);
    if (n == HD_OUTBOX_SCHEDULE_MAX + 1)
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "retry schedule: more than %d entries",
                       HD_OUTBOX_SCHEDULE_MAX + 1);
    steps[n++] = ms;
    if (end == NULL)
      break;
    p = end + 1;
  }
  if (steps[0] != 0)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "retry schedule: the first entry is the first attempt, "
                     "which is made at once: it must be 0s");
  memcpy(cfg->retry_schedule_ms, steps + 1, (n - 1) * sizeof(steps[0]));
  cfg->n_retry_schedule = n - 1;
  return HD_OK;
}

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

int64_t ob_retry_delay_ms(const hd_outbox *o, const hd_outbox_endpoint *ep,
                          int attempts, int http_status, int timed_out,
                          int64_t retry_after_ms, uint64_t *rng) {
  const int64_t *sched = o->cfg.retry_schedule_ms;
  size_t n = o->cfg.n_retry_schedule;
  int64_t base, delay;

  if (ep != NULL && ep->n_schedule > 0) {
    sched = ep->schedule;
    n = ep->n_schedule;
  }
  if (attempts < 1 || (size_t)attempts > n)
    return -1;
  base = sched[attempts - 1];
  delay = base;
  if (o->cfg.jitter && base > 0) /* +-20 %, so retries do not march */
    delay =
        base * 4 / 5 + (int64_t)(xorshift(rng) % (uint64_t)(base * 2 / 5 + 1));
  if (retry_after_ms >= 0) /* honoured within [base, 2 x base] */
    delay = retry_after_ms < base       ? base
            : retry_after_ms > 2 * base ? 2 * base
                                        : retry_after_ms;
  if ((http_status == 429 || timed_out) && delay < SLOW_DOWN_MS)
    delay = SLOW_DOWN_MS;
  return delay;
}
