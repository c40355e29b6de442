/*
 * utf8.h - UTF-8 well-formedness (RFC 3629), for the checks on client
 * strings (event.c) and on webhook responses (webhook_engine.c).
 */
#ifndef HD_UTF8_H
#define HD_UTF8_H

#include <stddef.h>

/* Length (1 to 4) of the well-formed UTF-8 character at the start of the
 * `len` bytes at `s`, or 0 when they do not start with one: a stray
 * continuation or invalid lead byte, a sequence cut short, an overlong form,
 * a surrogate or a value past U+10FFFF. `len` must be at least 1. A NUL byte
 * is a character of length 1. */
size_t hd_utf8_char_len(const unsigned char *s, size_t len);

#endif
