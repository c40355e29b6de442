/*
 * bench_util.h - what the in-process C benchmarks share.
 */
#ifndef HD_BENCH_UTIL_H
#define HD_BENCH_UTIL_H

#include "handlerd/handlerd.h"

#include <time.h>

/* A local function that does nothing: the dispatch is what is measured. */
static inline hd_err bench_nothing(const hd_event *ev, void *ud,
                                   hd_result *out) {
  (void)ev, (void)ud, (void)out;
  return HD_OK;
}

/* Monotonic seconds. */
static inline double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
