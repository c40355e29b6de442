/*
 * handlerctl: the arguments of the async delivery options and commands -
 * durations, retry schedules, times (RFC 3339 or relative) and delivery
 * states - and the text of a time. Part of hcli_base, so that the unit
 * tests (tests/unit/cli/test_cli_delivery_args.c) check the code handlerctl
 * runs.
 */
#include "cli.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int hcli_fail(char *err, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, size, fmt, ap);
  va_end(ap);
  return -1;
}

/* ---- durations ----------------------------------------------------------- */

/* The longest duration taken: 10000 days, far past any schedule, and small
 * enough that the arithmetic on it never overflows. */
#define MAX_DURATION_MS (10000ULL * 86400000ULL)

/* Reads a duration at *p ("250ms", "5s", "5m", "2h", "1d"; a bare number is
 * seconds) up to `end`. */
static int duration_span(const char *p, const char *end, uint64_t *out) {
  uint64_t v = 0;
  const char *q = p;
  for (; q < end && *q >= '0' && *q <= '9'; q++) {
    v = v * 10 + (uint64_t)(*q - '0');
    if (v > MAX_DURATION_MS)
      return -1;
  }
  if (q == p)
    return -1;
  static const struct {
    const char *name;
    uint64_t ms;
  } units[] = {
      {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  size_t ulen = (size_t)(end - q);
  uint64_t factor = 0;
  if (ulen == 0)
    factor = 1000;
  for (size_t i = 0; i < sizeof units / sizeof units[0] && !factor; i++)
    if (strlen(units[i].name) == ulen && memcmp(q, units[i].name, ulen) == 0)
      factor = units[i].ms;
  if (factor == 0 || v > MAX_DURATION_MS / factor)
    return -1;
  *out = v * factor;
  return 0;
}

int hcli_parse_duration_ms(const char *s, uint64_t *out, char *err,
                           size_t err_size) {
  if (s == NULL || duration_span(s, s + strlen(s), out) != 0)
    return hcli_fail(err, err_size,
                     "'%s' is not a duration (a whole number with ms, s, m, h "
                     "or d; a bare number is seconds)",
                     s != NULL ? s : "");
  return 0;
}

int hcli_parse_retry_schedule(const char *s, uint32_t *out, size_t *n,
                              char *err, size_t err_size) {
  *n = 0;
  if (s == NULL || *s == '\0')
    return hcli_fail(err, err_size, "empty: give e.g. 0s,1s,5m");
  size_t entry = 0;
  for (const char *p = s;; entry++) {
    const char *comma = strchr(p, ',');
    const char *end = comma != NULL ? comma : p + strlen(p);
    /* "0s, 1s" reads as well as "0s,1s". */
    while (p < end && *p == ' ')
      p++;
    while (end > p && end[-1] == ' ')
      end--;
    char text[64];
    snprintf(text, sizeof text, "%.*s", (int)(end - p), p);
    uint64_t ms;
    if (duration_span(p, end, &ms) != 0)
      return hcli_fail(
          err, err_size,
          "entry '%s' is not a duration (a whole number with ms, s, "
          "m, h or d; a bare number is seconds)",
          text);
    if (entry == 0 && ms != 0)
      return hcli_fail(err, err_size,
                       "the first entry is the first attempt, made at once: it "
                       "must be 0 (e.g. 0s,1s,5m), not '%s'",
                       text);
    if (entry > 0) {
      if (*n == HCLI_RETRY_SCHEDULE_MAX)
        return hcli_fail(err, err_size,
                         "more than %d retries after the first attempt",
                         HCLI_RETRY_SCHEDULE_MAX);
      if (ms > UINT32_MAX)
        return hcli_fail(err, err_size,
                         "entry '%s' is too long (at most 49 days)", text);
      out[(*n)++] = (uint32_t)ms;
    }
    if (comma == NULL)
      break;
    p = comma + 1;
  }
  /* The API cannot say "no retries": an empty list means the service's
   * own schedule, so a lone "0" would silently mean the opposite. */
  if (*n == 0)
    return hcli_fail(err, err_size,
                     "no retry after the first attempt; the service's "
                     "schedule applies when --retry-schedule is left out");
  return 0;
}

int hcli_parse_rate(const char *s, double *out) {
  /* strtod would skip spaces and take a sign, "inf" or hex: only plain
   * decimals are a rate. */
  if (s == NULL || !((*s >= '0' && *s <= '9') || *s == '.') ||
      strpbrk(s, "xX") != NULL)
    return -1;
  char *end;
  double v = strtod(s, &end);
  if (*end != '\0' || !isfinite(v) || v <= 0)
    return -1;
  *out = v;
  return 0;
}

/* ---- times --------------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (H.
 * Hinnant's days_from_civil): no timegm, so no dependence on TZ. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int days_in_month(int y, int m) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return days[m - 1] + (m == 2 && leap);
}

/* Reads exactly `n` digits at *p (advancing it); -1 when they are not. */
static int digits(const char **p, int n) {
  int v = 0;
  for (int i = 0; i < n; i++, (*p)++) {
    if (**p < '0' || **p > '9')
      return -1;
    v = v * 10 + (**p - '0');
  }
  return v;
}

/* RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM). */
static int rfc3339_ms(const char *s, int64_t *out) {
  const char *p = s;
  int y = digits(&p, 4);
  if (y < 0 || *p++ != '-')
    return -1;
  int mo = digits(&p, 2);
  if (mo < 1 || mo > 12 || *p++ != '-')
    return -1;
  int d = digits(&p, 2);
  if (d < 1 || d > days_in_month(y, mo) || (*p != 'T' && *p != 't'))
    return -1;
  p++;
  int h = digits(&p, 2);
  if (h < 0 || h > 23 || *p++ != ':')
    return -1;
  int mi = digits(&p, 2);
  if (mi < 0 || mi > 59 || *p++ != ':')
    return -1;
  int sec = digits(&p, 2);
  if (sec < 0 || sec > 60) /* 60: a leap second, read as the next one */
    return -1;
  int ms = 0;
  if (*p == '.') {
    p++;
    int n = 0;
    for (; *p >= '0' && *p <= '9'; p++, n++)
      if (n < 3)
        ms = ms * 10 + (*p - '0');
    if (n == 0)
      return -1;
    for (; n < 3; n++)
      ms *= 10;
  }
  int64_t offset_min = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p++ == '-' ? -1 : 1;
    int oh = digits(&p, 2);
    if (oh < 0 || oh > 23 || *p++ != ':')
      return -1;
    int om = digits(&p, 2);
    if (om < 0 || om > 59)
      return -1;
    offset_min = sign * (oh * 60 + om);
  } else {
    return -1;
  }
  if (*p != '\0')
    return -1;
  int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 +
                 h * 3600 + mi * 60 + sec - offset_min * 60;
  *out = secs * 1000 + ms;
  return 0;
}

int hcli_parse_time_ms(const char *s, int64_t now_ms, int64_t *out, char *err,
                       size_t err_size) {
  static const char form[] =
      "'%s' is not a time: give RFC 3339 (2026-11-30T12:00:00Z) or a "
      "duration ago (30m, 1h, 2d)";
  if (s == NULL || *s == '\0')
    return hcli_fail(err, err_size, form, "");
  if (strlen(s) > 10 && s[4] == '-') {
    if (rfc3339_ms(s, out) != 0)
      return hcli_fail(err, err_size, form, s);
  } else if (strlen(s) == 10 && s[4] == '-' && s[7] == '-') {
    return hcli_fail(err, err_size,
                     "'%s' has no time of day: give e.g. %sT00:00:00Z", s, s);
  } else if (strspn(s, "0123456789") == strlen(s)) {
    /* A bare number could be seconds ago or a Unix time: refuse it. */
    return hcli_fail(err, err_size,
                     "'%s' needs a unit to be a time ago (e.g. 90s, 30m, 1h); "
                     "for a point in time give RFC 3339",
                     s);
  } else {
    uint64_t ago;
    if (duration_span(s, s + strlen(s), &ago) != 0)
      return hcli_fail(err, err_size, form, s);
    *out = now_ms - (int64_t)ago;
  }
  if (*out < 0)
    return hcli_fail(err, err_size, "'%s' is before 1970-01-01T00:00:00Z", s);
  return 0;
}

int64_t hcli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *hcli_time_text(int64_t ms, char *buf, size_t size) {
  if (ms <= 0) {
    snprintf(buf, size, "-");
    return buf;
  }
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  if (gmtime_r(&secs, &tm) == NULL) {
    snprintf(buf, size, "%lld", (long long)ms);
    return buf;
  }
  char whole[32];
  strftime(whole, sizeof whole, "%Y-%m-%dT%H:%M:%S", &tm);
  if (ms % 1000 != 0)
    snprintf(buf, size, "%s.%03dZ", whole, (int)(ms % 1000));
  else
    snprintf(buf, size, "%sZ", whole);
  return buf;
}

/* ---- states -------------------------------------------------------------- */

int hcli_parse_delivery_state(const char *s, hc_delivery_state *out) {
  static const struct {
    const char *name;
    hc_delivery_state state;
  } t[] = {{"pending", HC_DELIVERY_PENDING},
           {"in_flight", HC_DELIVERY_IN_FLIGHT},
           {"in-flight", HC_DELIVERY_IN_FLIGHT},
           {"succeeded", HC_DELIVERY_SUCCEEDED},
           {"failed", HC_DELIVERY_FAILED},
           {"dead", HC_DELIVERY_DEAD}};
  for (size_t i = 0; s != NULL && i < sizeof t / sizeof t[0]; i++)
    if (strcasecmp(s, t[i].name) == 0) {
      *out = t[i].state;
      return 0;
    }
  return -1;
}
