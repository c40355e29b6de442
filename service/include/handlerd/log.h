/*
 * handlerd/log.h - the process-wide logger: levels, text or JSON lines on
 * stderr, control characters escaped.
 */
#ifndef HANDLERD_LOG_H
#define HANDLERD_LOG_H

#include "handlerd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hd_log_level {
  HD_LOG_ERROR = 0,
  HD_LOG_WARN,
  HD_LOG_INFO,
  HD_LOG_DEBUG
} hd_log_level;

/* Sets the process-wide log threshold (default HD_LOG_INFO). */
void hd_log_set_level(hd_log_level level);
hd_log_level hd_log_get_level(void);
/* Parses "error", "warn", "info", "debug". HD_EINVAL when unknown. */
hd_err hd_log_level_parse(const char *name, hd_log_level *out);
typedef enum hd_log_format {
  HD_LOG_FORMAT_TEXT = 0,
  HD_LOG_FORMAT_JSON
} hd_log_format;
/* Text lines (the default) or one JSON object per line:
 * {"ts":"...Z","level":"info","pid":N,"msg":"..."}. */
void hd_log_set_format(hd_log_format format);
/* Parses "text" or "json". HD_EINVAL when unknown. */
hd_err hd_log_format_parse(const char *name, hd_log_format *out);
/* Writes one line to stderr when `level` passes the threshold. Thread-safe. */
void hd_log(hd_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
