/*
 * Clock readings in nanoseconds. Monotonic for durations and timers;
 * real time for deadlines, which gRPC gives as wall-clock instants.
 */
#ifndef HD_CLOCK_H
#define HD_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t hd_clock_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t mono_ns(void) {
  return hd_clock_ns(CLOCK_MONOTONIC);
}

static inline int64_t real_ns(void) {
  return hd_clock_ns(CLOCK_REALTIME);
}

#endif
