/*
 * selector_bench - what topic selectors cost a dispatch (issue: "dispatch
 * cost must not grow linearly with the number of handlers that have
 * selectors").
 *
 *   selector_bench [N] [events]
 *
 * Builds one set (one key) with N handlers, each with its own selector (a
 * third path selectors ">feed/<i>/price", a third split-path patterns
 * "?feed/<i>/.*", a third full-path patterns "*feed/<i>/(bid|ask)"), and
 * dispatches `events` updates of random "feed/<j>/price" paths through it,
 * each reaching the few handlers whose selector selects it. In the same
 * run, the reference: the same events through a set of 10 such handlers,
 * and the cost of what an index avoids, matching all N selectors per
 * event. Prints ns per event for each and the ratios; the figure that
 * matters is indexed(N) / indexed(10), which stays near 1 when the cost
 * does not grow with N.
 */
#include "handlerd/handlerd.h"
#include "bench_util.h"
#include "registry_select.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static hd_selector *selector_for(int i) {
  char text[96], msg[256];
  hd_selector *s = NULL;

  switch (i % 3) {
  case 0:
    snprintf(text, sizeof(text), ">feed/%d/price", i);
    break;
  case 1:
    snprintf(text, sizeof(text), "?feed/%d/.*", i);
    break;
  default:
    snprintf(text, sizeof(text), "*feed/%d/(bid|ask|price)", i);
    break;
  }
  if (hd_selector_compile(text, &s, msg, sizeof(msg)) != HD_OK) {
    fprintf(stderr, "selector_bench: %s: %s\n", text, msg);
    exit(1);
  }
  return s;
}

/* A set of n selected handlers; their selectors in *sels (referenced). */
static hd_handler *make_set(int n, hd_selector ***sels) {
  hd_handler *set = NULL;

  *sels = calloc((size_t)n, sizeof(**sels));
  if (*sels == NULL || hd_set_new(&set) != HD_OK)
    exit(1);
  for (int i = 0; i < n; i++) {
    hd_handler *h = NULL;
    if (hd_simple_new(bench_nothing, NULL, NULL, &h) != HD_OK)
      exit(1);
    (*sels)[i] = selector_for(i);
    if (hd_set_add_selected(set, h, (*sels)[i]) != HD_OK)
      exit(1);
    hd_handler_unref(h);
  }
  return set;
}

/* ns per event through `set`, for paths of feeds below `range`. */
static double run_set(hd_handler *set, int range, int events, size_t *hits) {
  char path[64];
  hd_event ev = {.key = "k", .name = "update", .args_kind = HD_ARGS_UPDATE};
  double t0 = bench_now_s();

  *hits = 0;
  ev.topic.path = path;
  srand(7);
  for (int e = 0; e < events; e++) {
    hd_results *rs = NULL;
    snprintf(path, sizeof(path), "feed/%d/price", rand() % range);
    if (hd_handler_run_sync(set, &ev, &rs) != HD_OK)
      exit(1);
    *hits += hd_results_count(rs);
    hd_results_free(rs);
  }
  return (bench_now_s() - t0) * 1e9 / events;
}

/* ns per event matching every selector, as a set without an index would. */
static double run_scan(hd_selector **sels, int n, int events, size_t *hits) {
  char path[64];
  double t0 = bench_now_s();

  *hits = 0;
  srand(7);
  for (int e = 0; e < events; e++) {
    size_t len =
        (size_t)snprintf(path, sizeof(path), "feed/%d/price", rand() % n);
    for (int i = 0; i < n; i++)
      *hits += (size_t)hd_selector_matches(sels[i], path, len);
  }
  return (bench_now_s() - t0) * 1e9 / events;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 10000;
  int events = argc > 2 ? atoi(argv[2]) : 200000;
  hd_selector **big_sels, **small_sels;
  hd_handler *big, *small;
  size_t big_hits, small_hits, scan_hits;
  double t_big, t_small, t_scan;

  if (n < 10 || events < 1) {
    fprintf(stderr, "usage: selector_bench [N >= 10] [events]\n");
    return 2;
  }
  big = make_set(n, &big_sels);
  small = make_set(10, &small_sels);
  run_set(big, n, events / 10 + 1, &big_hits); /* warm up */
  t_small = run_set(small, 10, events, &small_hits);
  t_big = run_set(big, n, events, &big_hits);
  t_scan = run_scan(big_sels, n, events / 100 + 1, &scan_hits);
  printf("selectors_per_key %d\n", n);
  printf("indexed_ns_per_event_10 %.0f (hits/event %.2f)\n", t_small,
         (double)small_hits / events);
  printf("indexed_ns_per_event_%d %.0f (hits/event %.2f)\n", n, t_big,
         (double)big_hits / events);
  printf("scan_ns_per_event_%d %.0f\n", n, t_scan);
  printf("selector_indexed_ratio %.2f\n", t_big / t_small);
  printf("selector_scan_ratio %.2f\n", t_scan / t_small);
  for (int i = 0; i < n; i++)
    hd_selector_unref(big_sels[i]);
  for (int i = 0; i < 10; i++)
    hd_selector_unref(small_sels[i]);
  free(big_sels);
  free(small_sels);
  hd_handler_unref(big);
  hd_handler_unref(small);
  return 0;
}
