/*
 * Helpers shared by the fuzz targets: a reader that takes typed values off
 * the front of the input (like LLVM's FuzzedDataProvider), and FUZZ_CHECK,
 * which aborts (so libFuzzer keeps the input) when an invariant fails.
 */
#ifndef HD_FUZZ_UTIL_H
#define HD_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

typedef struct fz {
  const uint8_t *p;
  size_t n;
} fz;

static inline uint8_t fz_u8(fz *f) {
  if (f->n == 0)
    return 0;
  f->n--;
  return *f->p++;
}

static inline uint32_t fz_u32(fz *f) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v = v << 8 | fz_u8(f);
  return v;
}

static inline uint64_t fz_u64(fz *f) {
  return (uint64_t)fz_u32(f) << 32 | fz_u32(f);
}

/* Up to `max` bytes, length from one byte of the input (255: the rest);
 * the bytes are borrowed from the input. */
static inline const uint8_t *fz_bytes(fz *f, size_t max, size_t *len) {
  size_t want = fz_u8(f);
  if (want == 255) /* 255: as much as is left */
    want = f->n;
  if (want > max)
    want = max;
  if (want > f->n)
    want = f->n;
  const uint8_t *p = f->p;
  f->p += want;
  f->n -= want;
  *len = want;
  return p;
}

#endif
