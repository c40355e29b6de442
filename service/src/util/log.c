/*
 * log.c - one-line diagnostics on stderr, as text for a terminal:
 *   2026-11-25T15:21:14.123Z handlerd[1234] INFO message
 * or as one JSON object per line for a collector:
 *   {"ts":"2026-11-25T15:21:14.123Z","level":"info","pid":1234,"msg":"message"}
 *
 * The threshold is an atomic so hd_log() can test it on every call without a
 * lock; the line is built in memory first and written with a single call so
 * lines from concurrent threads do not interleave.
 *
 * A message is data, often from a client (a key, an event name): in a text
 * line every control character is escaped (\n, \r, \t, else \xNN; also
 * DEL, the C1 controls and bytes that are not UTF-8), so a message can
 * neither forge a line nor send a terminal an escape sequence.
 */
#include "handlerd/log.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static _Atomic int hd_log_threshold = HD_LOG_INFO;
static _Atomic int hd_log_json;

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

void hd_log_set_format(hd_log_format format) {
  atomic_store_explicit(&hd_log_json, format == HD_LOG_FORMAT_JSON,
                        memory_order_relaxed);
}

hd_err hd_log_format_parse(const char *name, hd_log_format *out) {
  if (name == NULL || out == NULL)
    return HD_EINVAL;
  if (strcasecmp(name, "text") == 0)
    *out = HD_LOG_FORMAT_TEXT;
  else if (strcasecmp(name, "json") == 0)
    *out = HD_LOG_FORMAT_JSON;
  else
    return HD_EINVAL;
  return HD_OK;
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

/* 1 when the UTF-8 character of `n` bytes at `u` is a C1 control
 * (U+0080..U+009F), which some terminals obey like an ESC sequence. */
static int is_c1(const unsigned char *u, size_t n) {
  return n == 2 && u[0] == 0xc2 && u[1] < 0xa0;
}

/* Appends `s` as JSON string content to the buffer at *at; bytes that are
 * not UTF-8 become U+FFFD so a collector's parser never chokes. Returns 0,
 * or -1 when `cap` is too small. */
static int json_escape(char *buf, size_t cap, size_t *at, const char *s,
                       size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, o = *at;

  while (i < len) {
    size_t n = hd_utf8_char_len(u + i, len - i);
    if (o + 7 > cap)
      return -1;
    if (n == 0) { /* not UTF-8 */
      memcpy(buf + o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    } else if (is_c1(u + i, n)) {
      memcpy(buf + o, "\\u00", 4);
      buf[o + 4] = hex[u[i + 1] >> 4];
      buf[o + 5] = hex[u[i + 1] & 15];
      o += 6;
      i += 2;
    } else if (n > 1) {
      memcpy(buf + o, u + i, n);
      o += n;
      i += n;
    } else if (u[i] == '"' || u[i] == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)u[i++];
    } else if (u[i] < 0x20 || u[i] == 0x7f) {
      memcpy(buf + o, "\\u00", 4);
      buf[o + 4] = hex[u[i] >> 4];
      buf[o + 5] = hex[u[i] & 15];
      o += 6;
      i++;
    } else {
      buf[o++] = (char)u[i++];
    }
  }
  *at = o;
  return 0;
}

/* Rewrites a formatted text line (header `head` bytes, message after it) as
 * a JSON object into a new malloc'd buffer; NULL when out of memory. */
static char *json_line(const char *ts, hd_log_level level, const char *message,
                       size_t len, size_t *out_len) {
  static const char *const lower[] = {"error", "warn", "info", "debug"};
  size_t cap = len * 6 + 128, at;
  char *buf = malloc(cap);

  if (buf == NULL)
    return NULL;
  at = (size_t)snprintf(
      buf, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"pid\":%ld,\"msg\":\"", ts,
      lower[level], (long)getpid());
  if (json_escape(buf, cap, &at, message, len) != 0) {
    free(buf);
    return NULL;
  }
  memcpy(buf + at, "\"}\n", 3);
  *out_len = at + 3;
  return buf;
}

/* 1 when a text line's message has a byte text_escape() escapes. */
static int text_needs_escape(const unsigned char *u, size_t len) {
  for (size_t i = 0; i < len;) {
    size_t n = hd_utf8_char_len(u + i, len - i);
    if (n == 0 || (n == 1 && (u[i] < 0x20 || u[i] == 0x7f)) || is_c1(u + i, n))
      return 1;
    i += n;
  }
  return 0;
}

/* Writes the `len` bytes at `s` into `out` (room for 4 * len) with every
 * control character, C1 control and byte that is not UTF-8 escaped: \n,
 * \r, \t or \xNN. Returns the length written. */
static size_t text_escape(char *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t o = 0;

  for (size_t i = 0; i < len;) {
    size_t n = hd_utf8_char_len(u + i, len - i), esc;

    if (n == 0) {
      esc = 1; /* not UTF-8: this byte */
    } else if (is_c1(u + i, n)) {
      esc = 2;
    } else if (n == 1 && (u[i] < 0x20 || u[i] == 0x7f)) {
      esc = 1;
    } else {
      memcpy(out + o, u + i, n);
      o += n;
      i += n;
      continue;
    }
    for (size_t k = 0; k < esc; k++, i++) {
      out[o++] = '\\';
      if (u[i] == '\n') {
        out[o++] = 'n';
      } else if (u[i] == '\r') {
        out[o++] = 'r';
      } else if (u[i] == '\t') {
        out[o++] = 't';
      } else {
        out[o++] = 'x';
        out[o++] = hex[u[i] >> 4];
        out[o++] = hex[u[i] & 15];
      }
    }
  }
  return o;
}

void hd_log(hd_log_level level, const char *fmt, ...) {
  char stack[1024];
  char *line = stack;
  size_t cap = sizeof(stack);
  struct timespec ts;
  struct tm tm;
  char stamp[80];
  int head, body;
  va_list ap;

  if ((int)level >
          atomic_load_explicit(&hd_log_threshold, memory_order_relaxed) ||
      (unsigned)level > HD_LOG_DEBUG)
    return;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
           tm.tm_sec, ts.tv_nsec / 1000000L);
  head = snprintf(line, cap, "%s handlerd[%ld] %s ", stamp, (long)getpid(),
                  hd_log_names[level]);
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

  if (atomic_load_explicit(&hd_log_json, memory_order_relaxed)) {
    size_t json_len;
    char *json = json_line(stamp, level, line + head, (size_t)body, &json_len);
    if (json != NULL)
      write_all(json, json_len);
    free(json);
    if (line != stack)
      free(line);
    return;
  }
  /* One event, one line, and nothing a terminal would obey: a message
   * with a control character (e.g. from a client-supplied name) is written
   * escaped. */
  if (text_needs_escape((const unsigned char *)line + head, (size_t)body)) {
    char *esc = malloc((size_t)head + 4 * (size_t)body + 1);
    if (esc != NULL) {
      size_t n;
      memcpy(esc, line, (size_t)head);
      n = text_escape(esc + head, line + head, (size_t)body);
      esc[(size_t)head + n] = '\n';
      write_all(esc, (size_t)head + n + 1);
      free(esc);
    } else { /* out of memory: at least keep it one line, no ESC */
      for (char *p = line + head; p < line + head + body; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
          *p = ' ';
      }
      line[head + body] = '\n';
      write_all(line, (size_t)head + (size_t)body + 1);
    }
  } else {
    line[head + body] = '\n';
    write_all(line, (size_t)head + (size_t)body + 1);
  }
  if (line != stack)
    free(line);
}
