/*
 * errmsg.c - formatting a refusal into the caller's buffer (errmsg.h).
 */
#include "errmsg.h"

#include <stdarg.h>
#include <stdio.h>

hd_err hd_errmsg(char *msg, size_t msg_size, hd_err err, const char *fmt, ...) {
  if (msg != NULL && msg_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msg_size, fmt, ap);
    va_end(ap);
  }
  return err;
}
