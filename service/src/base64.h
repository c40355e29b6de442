/*
 * Base64 (RFC 4648, standard alphabet, padded), for the proto3 JSON mapping
 * of bytes fields. Encoding only: nothing in handlerd reads base64 yet.
 */
#ifndef HD_BASE64_H
#define HD_BASE64_H

#include <stddef.h>

/* Bytes hd_base64_encode() writes for `len` input bytes, NUL included, or 0
 * when that size does not fit in a size_t. */
size_t hd_base64_size(size_t len);

/* Encodes `len` bytes of `data` into `out`, which has room for
 * hd_base64_size(len) bytes, and NUL-terminates it. Returns the text length. */
size_t hd_base64_encode(const void *data, size_t len, char *out);

#endif
