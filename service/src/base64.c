/*
 * Base64 encoding. Small enough that it is not worth a libcrypto dependency
 * for the core library.
 */
#include "base64.h"

#include <stdint.h>

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t hd_base64_size(size_t len) {
  size_t groups = len / 3 + (len % 3 != 0);
  if (groups > (SIZE_MAX - 1) / 4)
    return 0;
  return groups * 4 + 1;
}

size_t hd_base64_encode(const void *data, size_t len, char *out) {
  const unsigned char *in = data;
  char *o = out;
  size_t i = 0;

  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *o++ = alphabet[v >> 18 & 63];
    *o++ = alphabet[v >> 12 & 63];
    *o++ = alphabet[v >> 6 & 63];
    *o++ = alphabet[v & 63];
  }
  if (i < len) { /* one or two bytes left: pad to a full group */
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < len)
      v |= (uint32_t)in[i + 1] << 8;
    *o++ = alphabet[v >> 18 & 63];
    *o++ = alphabet[v >> 12 & 63];
    *o++ = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
    *o++ = '=';
  }
  *o = '\0';
  return (size_t)(o - out);
}
