/*
 * log.c - one-line diagnostics on stderr:
 *   2026-11-25T15:21:14.123Z handlerd[1234] INFO message
 *
 * The threshold is an atomic so hd_log() can test it on every call without a
 * lock; the line is built in memory first and written with a single call so
 * lines from concurrent threads do not interleave.
 */
#include "handlerd/handlerd.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int hd_log_threshold = HD_LOG_INFO;

static const char *const hd_log_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void hd_log_set_level(hd_log_level level) {
  if ((unsigned)level > HD_LOG_DEBUG)
    level = HD_LOG_DEBUG;
  atomic_store_explicit(&hd_log_threshold, (int)level, memory_order_relaxed);
}

hd_log_level hd_log_get_level(void) {
  return (hd_log_level)atomic_load_explicit(&hd_log_threshold,
                                            memory_order_relaxed);
}

hd_err hd_log_level_parse(const char *name, hd_log_level *out) {
  static const char *const lower[] = {"error", "warn", "info", "debug"};

  if (name == NULL || out == NULL)
    return HD_EINVAL;
  for (size_t i = 0; i < sizeof(lower) / sizeof(lower[0]); i++) {
    if (strcasecmp(name, lower[i]) == 0) {
      *out = (hd_log_level)i;
      return HD_OK;
    }
  }
  return HD_EINVAL;
}

/* Writes all of buf, retrying short writes; a failing stderr is ignored
 * because there is nowhere left to report it. */
static void write_all(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, buf, len);
    if (n <= 0)
      return;
    buf += n;
    len -= (size_t)n;
  }
}

void hd_log(hd_log_level level, const char *fmt, ...) {
  char stack[1024];
  char *line = stack;
  size_t cap = sizeof(stack);
  struct timespec ts;
  struct tm tm;
  int head, body;
  va_list ap;

  if ((int)level >
          atomic_load_explicit(&hd_log_threshold, memory_order_relaxed) ||
      (unsigned)level > HD_LOG_DEBUG)
    return;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  head = snprintf(
      line, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ handlerd[%ld] %s ",
      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
      tm.tm_sec, ts.tv_nsec / 1000000L, (long)getpid(), hd_log_names[level]);
  if (head < 0 || (size_t)head >= cap)
    return;

  va_start(ap, fmt);
  body = vsnprintf(line + head, cap - (size_t)head, fmt, ap);
  va_end(ap);
  if (body < 0)
    return;
  /* Rare long message: format again into a heap buffer of the exact size;
   * if that fails the stack copy is written truncated rather than lost. */
  if ((size_t)head + (size_t)body + 2 > cap) {
    char *big = malloc((size_t)head + (size_t)body + 2);
    if (big != NULL) {
      memcpy(big, line, (size_t)head);
      va_start(ap, fmt);
      vsnprintf(big + head, (size_t)body + 1, fmt, ap);
      va_end(ap);
      line = big;
      cap = (size_t)head + (size_t)body + 2;
    } else {
      body = (int)(cap - (size_t)head - 2);
    }
  }

  /* One event, one line: embedded newlines (e.g. from a client-supplied
   * name) would let a message forge extra log lines. */
  for (char *p = line + head; p < line + head + body; p++) {
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  }
  line[head + body] = '\n';
  write_all(line, (size_t)head + (size_t)body + 1);
  if (line != stack)
    free(line);
}
