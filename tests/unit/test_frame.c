/*
 * Unit tests: a dispatch's frames (frame.h). With a scope open for the
 * event, every level's bookkeeping comes from the caller's arena; without
 * one, from another event or on another thread, from the heap. The caller
 * may free the arena as soon as the outermost completion has run, even when
 * that runs on another thread while handle() is still unwinding.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

#include "arena.h"
#include "frame.h"
#include "registry_select.h"
#include "test_util.h"

/* ---- the primitives ------------------------------------------------------ */

static void test_heap_without_scope(void **state) {
  hd_event ev = {.key = "k", .name = "update"};
  unsigned char heap = 0;
  void *p;

  (void)state;
  p = hd_frame_alloc(&ev, 64, &heap);
  assert_non_null(p);
  assert_int_equal(heap, 1);
  hd_frame_free(p, heap);
}

static void test_arena_for_the_scope_event_only(void **state) {
  hd_event ev = {.key = "k", .name = "update"}, other = ev;
  hd_arena *a = hd_arena_new(1024);
  hd_frame_scope s;
  unsigned char heap = 1;
  size_t used;
  void *p;

  (void)state;
  hd_frame_begin(&s, a, &ev);
  used = hd_arena_used(a);
  p = hd_frame_alloc(&ev, 40, &heap);
  assert_non_null(p);
  assert_int_equal(heap, 0);
  assert_true(hd_arena_used(a) >= used + 40);
  hd_frame_free(p, heap); /* a no-op: the arena owns it */

  /* Another event (one a plugin built) is not the scope's. */
  used = hd_arena_used(a);
  p = hd_frame_alloc(&other, 40, &heap);
  assert_int_equal(heap, 1);
  assert_int_equal(hd_arena_used(a), used);
  hd_frame_free(p, heap);
  hd_frame_end(&s);

  /* Closed: the heap again. */
  p = hd_frame_alloc(&ev, 40, &heap);
  assert_int_equal(heap, 1);
  hd_frame_free(p, heap);
  hd_arena_free(a);
}

static void test_nested_scopes(void **state) {
  hd_event outer_ev = {.key = "k", .name = "update"}, inner_ev = outer_ev;
  hd_arena *outer_a = hd_arena_new(512), *inner_a = hd_arena_new(512);
  hd_frame_scope outer, inner;
  unsigned char heap = 1;
  size_t used_outer;
  void *p;

  (void)state;
  hd_frame_begin(&outer, outer_a, &outer_ev);
  hd_frame_begin(&inner, inner_a, &inner_ev);
  used_outer = hd_arena_used(outer_a);
  /* Only the innermost scope counts. */
  p = hd_frame_alloc(&outer_ev, 16, &heap);
  assert_int_equal(heap, 1);
  hd_frame_free(p, heap);
  p = hd_frame_alloc(&inner_ev, 16, &heap);
  assert_int_equal(heap, 0);
  hd_frame_end(&inner);
  /* The outer one is back. */
  p = hd_frame_alloc(&outer_ev, 16, &heap);
  assert_int_equal(heap, 0);
  assert_true(hd_arena_used(outer_a) > used_outer);
  hd_frame_end(&outer);
  hd_arena_free(inner_a);
  hd_arena_free(outer_a);
}

static void test_follow(void **state) {
  hd_event ev = {.key = "k", .name = "update"}, derived = ev, stray = ev;
  hd_arena *a = hd_arena_new(512);
  hd_frame_scope s, f;
  unsigned char heap = 1;
  void *p;

  (void)state;
  hd_frame_begin(&s, a, &ev);
  hd_frame_follow(&f, &ev, &derived);
  p = hd_frame_alloc(&derived, 16, &heap);
  assert_int_equal(heap, 0);
  hd_frame_end(&f);
  /* Following an event that is not the scope's gives heap frames. */
  hd_frame_follow(&f, &stray, &derived);
  p = hd_frame_alloc(&derived, 16, &heap);
  assert_int_equal(heap, 1);
  hd_frame_free(p, heap);
  hd_frame_end(&f);
  hd_frame_end(&s);
  hd_arena_free(a);
}

struct alloc_probe {
  const hd_event *ev;
  unsigned char heap;
};

static void *alloc_elsewhere(void *arg) {
  struct alloc_probe *probe = arg;
  void *p = hd_frame_alloc(probe->ev, 16, &probe->heap);
  hd_frame_free(p, probe->heap);
  return NULL;
}

/* The arena has no lock: another thread never allocates from it, even for
 * the scope's own event. */
static void test_scope_is_the_threads(void **state) {
  hd_event ev = {.key = "k", .name = "update"};
  hd_arena *a = hd_arena_new(512);
  struct alloc_probe probe = {.ev = &ev, .heap = 0};
  hd_frame_scope s;
  pthread_t t;
  size_t used;

  (void)state;
  hd_frame_begin(&s, a, &ev);
  used = hd_arena_used(a);
  assert_int_equal(pthread_create(&t, NULL, alloc_elsewhere, &probe), 0);
  pthread_join(t, NULL);
  assert_int_equal(probe.heap, 1);
  assert_int_equal(hd_arena_used(a), used);
  hd_frame_end(&s);
  hd_arena_free(a);
}

/* ---- a dispatch through the model ---------------------------------------- */

/* A member that completes later on a thread of its own, when the test
 * opens its gate; it allocates nothing from the frame itself. */
struct later {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int open;
  pthread_t thread;
  int started;
  hd_done_fn *done;
  void *done_data;
  hd_handler *h;
};

static void *later_thread(void *arg) {
  struct later *l = arg;
  hd_results *rs = hd_results_new();
  hd_result *r = hd_results_append(rs);

  pthread_mutex_lock(&l->lock);
  while (!l->open)
    pthread_cond_wait(&l->cond, &l->lock);
  pthread_mutex_unlock(&l->lock);
  strcpy(r->handler_id, hd_handler_id(l->h));
  hd_result_set_string(r, "later");
  l->done(rs, l->done_data);
  return NULL;
}

static hd_err later_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                           void *done_data) {
  struct later *l = hd_handler_user_data(h);

  (void)ev;
  l->h = h;
  l->done = done;
  l->done_data = done_data;
  l->started = 1;
  assert_int_equal(pthread_create(&l->thread, NULL, later_thread, l), 0);
  return HD_OK;
}

static const hd_handler_ops later_ops = {.kind = "later",
                                         .handle = later_handle};

/* The caller of the dispatch: frees the arena in its completion, as the
 * gRPC front does when the call ends. */
struct caller {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  hd_arena *arena;
  hd_results *results;
  int calls;
};

static void caller_done(hd_results *rs, void *ud) {
  struct caller *c = ud;

  pthread_mutex_lock(&c->lock);
  hd_arena_free(c->arena); /* every frame of the dispatch with it */
  c->arena = NULL;
  c->results = rs;
  c->calls++;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
}

static hd_results *caller_wait(struct caller *c) {
  pthread_mutex_lock(&c->lock);
  while (c->calls == 0)
    pthread_cond_wait(&c->cond, &c->lock);
  pthread_mutex_unlock(&c->lock);
  return c->results;
}

/* Builds key "k" -> set { sayer "one", stream { update -> derive(set {
 * sayer "two", `last` }) } }, taking the caller's reference on `last`: a
 * forward, timed calls, a set's gather and a derived event at several
 * levels. */
static hd_registry *nested_registry(hd_handler *last) {
  hd_registry *reg = NULL;
  hd_handler *stream = NULL, *inner = NULL, *derive = NULL;

  assert_int_equal(hd_registry_new(&reg), HD_OK);
  assert_int_equal(hd_set_new(&inner), HD_OK);
  hd_handler *two = sayer("two");
  assert_int_equal(hd_set_add(inner, two), HD_OK);
  hd_handler_unref(two);
  assert_int_equal(hd_set_add(inner, last), HD_OK);
  hd_handler_unref(last);
  assert_int_equal(hd_derive_old_value_new(inner, &derive), HD_OK);
  hd_handler_unref(inner);
  assert_int_equal(hd_stream_new(&stream), HD_OK);
  assert_int_equal(hd_stream_route(stream, "update", derive), HD_OK);
  hd_handler_unref(derive);
  hd_handler *one = sayer("one");
  assert_int_equal(hd_registry_add(reg, "k", one), HD_OK);
  hd_handler_unref(one);
  assert_int_equal(hd_registry_add(reg, "k", stream), HD_OK);
  hd_handler_unref(stream);
  return reg;
}

/* An update of `path` with a value, so derive_old_value remembers it. */
static hd_event update_of(const char *path) {
  return (hd_event){.key = "k",
                    .name = "update",
                    .args_kind = HD_ARGS_UPDATE,
                    .topic = {.path = path,
                              .value = {.type = HD_VALUE_STRING,
                                        .u.bytes = {.data = "v", .len = 1}}}};
}

static void assert_words(const hd_results *rs, const char *const *words,
                         size_t n) {
  assert_int_equal(hd_results_count(rs), n);
  for (size_t i = 0; i < n; i++) {
    const hd_result *r = hd_results_at(rs, i);
    assert_int_equal(r->err, HD_OK);
    assert_int_equal(r->value.type, HD_VALUE_STRING);
    assert_int_equal(r->value.u.bytes.len, strlen(words[i]));
    assert_memory_equal(r->value.u.bytes.data, words[i], strlen(words[i]));
  }
}

/* Every level takes its frames from the arena: a dispatch inside a scope
 * takes none from the heap, the same dispatch without one does. The
 * completion runs inline and frees the arena before the dispatch has
 * returned: nothing may touch a frame afterwards (AddressSanitizer and
 * valgrind check the reads). */
static void test_dispatch_takes_frames_from_the_arena(void **state) {
  static const char *const words[] = {"one", "two", "three"};
  hd_registry *reg = nested_registry(sayer("three"));
  hd_event ev = update_of("a/b");
  struct caller c = {.lock = PTHREAD_MUTEX_INITIALIZER,
                     .cond = PTHREAD_COND_INITIALIZER};
  hd_frame_scope s;
  unsigned long heap;

  (void)state;
  /* The 2nd round derives an old value: one level more. */
  for (int round = 0; round < 2; round++) {
    c.arena = hd_arena_new(4096);
    c.calls = 0;
    heap = hd_frame_heap_count();
    hd_frame_begin(&s, c.arena, &ev);
    assert_int_equal(hd_registry_dispatch(reg, &ev, caller_done, &c), HD_OK);
    hd_frame_end(&s);
    assert_int_equal(hd_frame_heap_count(), heap);
    hd_results *rs = caller_wait(&c);
    assert_null(c.arena);
    assert_words(rs, words, 3);
    hd_results_free(rs);
  }

  /* Without a scope: the heap, as before (and nothing leaks). */
  heap = hd_frame_heap_count();
  c.calls = 0;
  c.arena = NULL;
  assert_int_equal(hd_registry_dispatch(reg, &ev, caller_done, &c), HD_OK);
  hd_results_free(caller_wait(&c));
  /* A forward, five timed calls, two gathers with their snapshots, a
   * derived event: eleven. */
  assert_true(hd_frame_heap_count() - heap >= 11);
  hd_registry_free(reg);
}

/* The outermost completion runs on the member's thread, after handle()
 * returned, and frees the arena there: nothing of the dispatch may touch a
 * frame afterwards (AddressSanitizer and valgrind check the reads). */
static void test_arena_freed_by_a_late_completion(void **state) {
  static const char *const words[] = {"one", "two", "later"};
  struct later l = {.lock = PTHREAD_MUTEX_INITIALIZER,
                    .cond = PTHREAD_COND_INITIALIZER};
  hd_handler *late = NULL;
  hd_registry *reg;
  hd_event ev = update_of("a/b");
  struct caller c = {.lock = PTHREAD_MUTEX_INITIALIZER,
                     .cond = PTHREAD_COND_INITIALIZER};
  hd_frame_scope s;

  (void)state;
  assert_int_equal(hd_handler_new(&later_ops, &l, &late), HD_OK);
  reg = nested_registry(late);
  c.arena = hd_arena_new(256); /* small: frames span several blocks */
  hd_frame_begin(&s, c.arena, &ev);
  assert_int_equal(hd_registry_dispatch(reg, &ev, caller_done, &c), HD_OK);
  hd_frame_end(&s);
  assert_true(l.started);
  pthread_mutex_lock(&c.lock);
  assert_int_equal(c.calls, 0); /* waiting for `late` */
  pthread_mutex_unlock(&c.lock);
  pthread_mutex_lock(&l.lock);
  l.open = 1;
  pthread_cond_broadcast(&l.cond);
  pthread_mutex_unlock(&l.lock);
  hd_results *rs = caller_wait(&c);
  pthread_join(l.thread, NULL);
  assert_null(c.arena);
  assert_words(rs, words, 3);
  hd_results_free(rs);
  hd_registry_free(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_heap_without_scope),
      cmocka_unit_test(test_arena_for_the_scope_event_only),
      cmocka_unit_test(test_nested_scopes),
      cmocka_unit_test(test_follow),
      cmocka_unit_test(test_scope_is_the_threads),
      cmocka_unit_test(test_dispatch_takes_frames_from_the_arena),
      cmocka_unit_test(test_arena_freed_by_a_late_completion),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
