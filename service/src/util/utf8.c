/*
 * utf8.c - decoding one UTF-8 character to check it, and whole strings
 * (utf8.h).
 */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

size_t hd_utf8_char_len(const unsigned char *s, size_t len) {
  /* The smallest value each sequence length may encode: below it the form
   * is overlong. */
  static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
  unsigned char c = s[0];
  size_t n; /* continuation bytes */
  uint32_t cp;

  if (c < 0x80)
    return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 1;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 2;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 3;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n >= len) /* truncated sequence */
    return 0;
  for (size_t k = 1; k <= n; k++) {
    if ((s[k] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[k] & 0x3F);
  }
  if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n + 1;
}

size_t hd_utf8_valid_prefix(const void *s, size_t len) {
  const unsigned char *u = s;
  size_t i = 0;

  while (i < len) {
    /* ASCII runs are the common case: skip them without decoding. */
    if (u[i] < 0x80) {
      i++;
      continue;
    }
    size_t n = hd_utf8_char_len(u + i, len - i);
    if (n == 0)
      return i;
    i += n;
  }
  return len;
}

int hd_utf8_valid(const void *s, size_t len) {
  return hd_utf8_valid_prefix(s, len) == len;
}

size_t hd_utf8_repaired_size(size_t len) {
  return len > (SIZE_MAX - 1) / 3 ? SIZE_MAX : 3 * len + 1;
}

size_t hd_utf8_repair(char *dst, const void *src, size_t len) {
  const unsigned char *u = src;
  size_t i = 0, o = 0;

  while (i < len) {
    size_t n = hd_utf8_char_len(u + i, len - i);
    if (n == 0) {
      memcpy(dst + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i++;
      continue;
    }
    memcpy(dst + o, u + i, n);
    o += n;
    i += n;
  }
  dst[o] = '\0';
  return o;
}
