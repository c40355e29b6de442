/*
 * errmsg.h - the "message buffer" convention of handlerd's checks: a
 * function that can refuse its input takes `char *msg, size_t msg_size` and
 * explains the refusal there, for the client to read.
 */
#ifndef HD_ERRMSG_H
#define HD_ERRMSG_H

#include "handlerd/error.h"

#include <stddef.h>

/* Formats into `msg` (when msg is not NULL and msg_size > 0; truncated to
 * fit) and returns `err`, so checks read as
 * `return hd_errmsg(msg, msg_size, HD_EINVAL, "...", ...)`. */
hd_err hd_errmsg(char *msg, size_t msg_size, hd_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
