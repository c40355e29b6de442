/*
 * frame_bench - what a dispatch's bookkeeping costs when every level takes
 * its frame from the call's arena (model/frame.h), against the same
 * dispatch with a malloc/free pair per frame (no frame scope), in the same
 * run, alternating.
 *
 *   frame_bench [events] [rounds] [threads]
 *
 * The key holds the nesting a registration can reach: a set of two
 * functions and an event-stream routing "update" to derive_old_value over
 * a set of two more functions (a forward, five timed calls, two gathers and
 * their snapshots, a derived event: eleven frames per event). Each event
 * gets a fresh 4 KiB arena as a gRPC call does; the heap run makes and
 * frees one too, so the two differ only in where the frames go. `threads`
 * dispatch at once (default 2, the machine's cores): the allocator's
 * cross-thread cost is part of what the arena saves. Prints ns per event
 * for both and heap/arena (above 1: the arena is cheaper).
 */
#include "handlerd/handlerd.h"
#include "bench_util.h"
#include "arena.h"
#include "frame.h"
#include "registry_select.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void must(hd_err err, const char *what) {
  if (err != HD_OK) {
    fprintf(stderr, "frame_bench: %s: %s\n", what, hd_strerror(err));
    exit(1);
  }
}

static hd_handler *function(void) {
  hd_handler *h = NULL;
  must(hd_simple_new(bench_nothing, NULL, NULL, &h), "hd_simple_new");
  return h;
}

static hd_registry *nested(void) {
  hd_registry *reg = NULL;
  hd_handler *inner = NULL, *derive = NULL, *stream = NULL, *h;

  must(hd_registry_new(&reg), "hd_registry_new");
  must(hd_set_new(&inner), "hd_set_new");
  for (int i = 0; i < 2; i++) {
    must(hd_set_add(inner, h = function()), "hd_set_add");
    hd_handler_unref(h);
  }
  must(hd_derive_old_value_new(inner, &derive), "derive");
  hd_handler_unref(inner);
  must(hd_stream_new(&stream), "hd_stream_new");
  must(hd_stream_route(stream, "update", derive), "hd_stream_route");
  hd_handler_unref(derive);
  for (int i = 0; i < 2; i++) {
    must(hd_registry_add(reg, "k", h = function()), "hd_registry_add");
    hd_handler_unref(h);
  }
  must(hd_registry_add(reg, "k", stream), "hd_registry_add");
  hd_handler_unref(stream);
  return reg;
}

/* Every member is a function: the dispatch completes before it returns. */
static void done(hd_results *rs, void *ud) {
  *(size_t *)ud += hd_results_count(rs);
  hd_results_free(rs);
}

struct run {
  hd_registry *reg;
  long events;
  int arena;
  int thread;
  size_t results;
};

static void *dispatch_loop(void *arg) {
  struct run *r = arg;
  char path[32];
  hd_event ev = {.key = "k",
                 .name = "update",
                 .args_kind = HD_ARGS_UPDATE,
                 .topic = {.path = path,
                           .value = {.type = HD_VALUE_STRING,
                                     .u.bytes = {.data = "42", .len = 2}}}};

  /* One path per thread: derive_old_value has an old value from the 2nd
   * event on, as a topic's updates do. */
  snprintf(path, sizeof(path), "feed/%d/price", r->thread);
  for (long i = 0; i < r->events; i++) {
    hd_arena *a = hd_arena_new(4096);
    hd_frame_scope s;
    if (r->arena)
      hd_frame_begin(&s, a, &ev);
    must(hd_registry_dispatch(r->reg, &ev, done, &r->results), "dispatch");
    if (r->arena)
      hd_frame_end(&s);
    hd_arena_free(a);
  }
  return NULL;
}

/* ns per event over `threads` threads dispatching `events` each. */
static double measure(hd_registry *reg, long events, int arena, int threads) {
  pthread_t t[16];
  struct run runs[16];
  double start = bench_now_s();

  for (int i = 0; i < threads; i++) {
    runs[i] = (struct run){reg, events, arena, i, 0};
    pthread_create(&t[i], NULL, dispatch_loop, &runs[i]);
  }
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    if (runs[i].results != (size_t)events * 4) {
      fprintf(stderr, "frame_bench: %zu results, expected %ld\n",
              runs[i].results, events * 4);
      exit(1);
    }
  }
  return (bench_now_s() - start) * 1e9 / ((double)events * threads);
}

int main(int argc, char **argv) {
  long events = argc > 1 ? atol(argv[1]) : 500000;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  int threads = argc > 3 ? atoi(argv[3]) : 2;
  double heap = 0, arena = 0;
  hd_registry *reg;

  if (events <= 0 || rounds <= 0 || threads <= 0 || threads > 16) {
    fprintf(stderr, "usage: frame_bench [events] [rounds] [threads<=16]\n");
    return 2;
  }
  hd_log_set_level(HD_LOG_WARN);
  reg = nested();
  measure(reg, events / 10 + 1, 1, threads); /* warm up */
  measure(reg, events / 10 + 1, 0, threads);
  for (int r = 0; r < rounds; r++) {
    double h = measure(reg, events, 0, threads);
    double a = measure(reg, events, 1, threads);
    printf("round %d: heap frames %.0f ns/event, arena frames %.0f ns/event, "
           "heap/arena %.3f\n",
           r + 1, h, a, h / a);
    heap += h;
    arena += a;
  }
  printf("events=%ld threads=%d rounds=%d (4 results and 11 frames per "
         "event)\n",
         events, threads, rounds);
  printf("heap frames:  %.0f ns/event\narena frames: %.0f ns/event\n"
         "frame_heap_over_arena %.3f\n",
         heap / rounds, arena / rounds, heap / arena);
  hd_registry_free(reg);
  return 0;
}
