/*
 * utf8.h - UTF-8 well-formedness (RFC 3629), for the checks on client
 * strings (event.c, control.c, proto_event.c), on webhook responses
 * (webhook_response.c) and for listings that must stay UTF-8 (control.c).
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

/* Offset of the first byte of `s[0..len)` that does not start a well-formed
 * character (as hd_utf8_char_len), or `len` when all of it is UTF-8. NUL
 * bytes count as characters. */
size_t hd_utf8_valid_prefix(const void *s, size_t len);

/* 1 when the `len` bytes at `s` are well-formed UTF-8, else 0. */
int hd_utf8_valid(const void *s, size_t len);

/* Copies `len` bytes from `src` to `dst`, each byte that does not start a
 * well-formed character replaced by U+FFFD (EF BF BD), and NUL-terminates.
 * `dst` must hold hd_utf8_repaired_size(len) bytes. Returns the length
 * written (without the NUL). */
size_t hd_utf8_repair(char *dst, const void *src, size_t len);

/* Bytes hd_utf8_repair may need for `len` input bytes, the NUL included
 * (3 * len + 1; SIZE_MAX when that overflows). */
size_t hd_utf8_repaired_size(size_t len);

#endif
