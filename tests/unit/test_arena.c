/*
 * Unit tests: the per-call bump allocator (arena.c) and its protobuf-c
 * allocator.
 */
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"
#include "handlers/v1/handlers.pb-c.h"

static int setup(void **state) {
  hd_arena *a = hd_arena_new(64);

  if (!a)
    return -1;
  *state = a;
  return 0;
}

static int teardown(void **state) {
  hd_arena_free(*state);
  return 0;
}

static void assert_max_aligned(const void *p) {
  assert_non_null(p);
  assert_int_equal((uintptr_t)p % alignof(max_align_t), 0);
}

static void test_arena_every_allocation_is_max_aligned(void **state) {
  hd_arena *a = *state;

  /* Odd sizes, zero included, across several blocks. */
  for (size_t size = 0; size < 200; size++)
    assert_max_aligned(hd_arena_alloc(a, size));
  assert_max_aligned(hd_arena_calloc(a, 3, 7));
  assert_max_aligned(hd_arena_strdup(a, "x"));
  assert_max_aligned(hd_arena_alloc(a, 1));
}

static void test_arena_distinct_allocations_do_not_overlap(void **state) {
  hd_arena *a = *state;
  unsigned char *p = hd_arena_alloc(a, 1);
  unsigned char *q = hd_arena_alloc(a, 1);
  unsigned char *z = hd_arena_alloc(a, 0);

  assert_non_null(p);
  assert_non_null(q);
  assert_non_null(z);
  assert_ptr_not_equal(p, q);
  assert_ptr_not_equal(q, z);
  *p = 0xAA;
  *q = 0xBB;
  assert_int_equal(*p, 0xAA);
}

static void test_arena_allocation_larger_than_first_block(void **state) {
  hd_arena *a = *state; /* first block: 64 bytes */
  size_t big = 64 * 1024 + 3;
  unsigned char *p = hd_arena_alloc(a, big);

  assert_max_aligned(p);
  memset(p, 0x5C, big); /* the sanitizer/valgrind would flag an overrun */
  assert_int_equal(p[0], 0x5C);
  assert_int_equal(p[big - 1], 0x5C);
  /* Small allocations still work after the big one. */
  unsigned char *s = hd_arena_alloc(a, 8);
  assert_max_aligned(s);
  memset(s, 1, 8);
  assert_int_equal(p[big - 1], 0x5C);
}

static void
test_arena_many_small_allocations_keep_earlier_contents(void **state) {
  hd_arena *a = *state;
  enum { N = 5000 };
  unsigned char *ptrs[N];

  for (size_t i = 0; i < N; i++) {
    size_t len = 1 + i % 23;
    ptrs[i] = hd_arena_alloc(a, len);
    assert_non_null(ptrs[i]);
    memset(ptrs[i], (int)(i & 0xFF), len);
  }
  for (size_t i = 0; i < N; i++) {
    size_t len = 1 + i % 23;
    for (size_t k = 0; k < len; k++)
      assert_int_equal(ptrs[i][k], i & 0xFF);
  }
}

static void test_arena_calloc_zeroes(void **state) {
  hd_arena *a = *state;
  /* Dirty the arena first so reused bytes would show through. */
  unsigned char *dirty = hd_arena_alloc(a, 40);
  memset(dirty, 0xFF, 40);
  uint32_t *z = hd_arena_calloc(a, 100, sizeof(*z));

  assert_max_aligned(z);
  for (size_t i = 0; i < 100; i++)
    assert_int_equal(z[i], 0);
  assert_int_equal(dirty[39], 0xFF);
}

static void test_arena_calloc_refuses_multiplication_overflow(void **state) {
  hd_arena *a = *state;

  assert_null(hd_arena_calloc(a, SIZE_MAX / 2 + 1, 2));
  assert_null(hd_arena_calloc(a, 2, SIZE_MAX / 2 + 1));
  assert_null(hd_arena_calloc(a, SIZE_MAX, SIZE_MAX));
  /* The arena is still usable afterwards. */
  assert_non_null(hd_arena_calloc(a, 4, 4));
}

static void test_arena_refuses_sizes_that_would_wrap(void **state) {
  hd_arena *a = *state;

  /* Rounding up to the alignment, or the block header, would wrap around
   * and hand out a tiny block for a huge request. */
  assert_null(hd_arena_alloc(a, SIZE_MAX));
  assert_null(hd_arena_alloc(a, SIZE_MAX - 20));
  assert_null(hd_arena_alloc(a, SIZE_MAX / 2 + 1));
  assert_null(hd_arena_calloc(a, 1, SIZE_MAX));
  assert_non_null(hd_arena_alloc(a, 64));
}

static void test_arena_strdup_copies(void **state) {
  hd_arena *a = *state;
  char src[] = "hello, arena";
  char *d = hd_arena_strdup(a, src);
  char *e = hd_arena_strdup(a, "");

  assert_non_null(d);
  assert_ptr_not_equal(d, src);
  assert_string_equal(d, "hello, arena");
  src[0] = 'J'; /* a copy, not an alias */
  assert_string_equal(d, "hello, arena");
  assert_non_null(e);
  assert_string_equal(e, "");
}

static void test_arena_wipe_zeroes_what_was_handed_out(void **state) {
  hd_arena *a = *state;
  /* Several blocks: the first (64 bytes), a large one, more small ones. */
  char *s1 = hd_arena_strdup(a, "whsec_first-block-secret");
  unsigned char *big = hd_arena_alloc(a, 4096);
  memset(big, 0x77, 4096);
  char *s2 = hd_arena_strdup(a, "whsec_later-block-secret");
  unsigned char *tail[50];
  for (size_t i = 0; i < 50; i++) {
    tail[i] = hd_arena_alloc(a, 17);
    memset(tail[i], 0x42, 17);
  }

  hd_arena_wipe(a);
  for (size_t i = 0; i < strlen("whsec_first-block-secret"); i++)
    assert_int_equal(s1[i], 0);
  for (size_t i = 0; i < strlen("whsec_later-block-secret"); i++)
    assert_int_equal(s2[i], 0);
  for (size_t i = 0; i < 4096; i++)
    assert_int_equal(big[i], 0);
  for (size_t i = 0; i < 50; i++)
    for (size_t k = 0; k < 17; k++)
      assert_int_equal(tail[i][k], 0);
  hd_arena_wipe(NULL); /* documented no-op */
}

static void test_arena_free_null_is_fine(void **state) {
  (void)state;
  hd_arena_free(NULL);
  /* And a zero initial size still gives a working arena. */
  hd_arena *a = hd_arena_new(0);
  assert_non_null(a);
  assert_max_aligned(hd_arena_alloc(a, 10));
  hd_arena_free(a);
}

static void test_arena_pb_allocator_unpacks_a_message(void **state) {
  hd_arena *a = *state;
  Handlers__V1__DispatchRequest req = HANDLERS__V1__DISPATCH_REQUEST__INIT;
  Handlers__V1__UpdateArgs up = HANDLERS__V1__UPDATE_ARGS__INIT;
  Handlers__V1__TopicValue tv = HANDLERS__V1__TOPIC_VALUE__INIT;
  static const uint8_t bin[] = {0x00, 0x01, 0x00, 0xFF};
  char path[600]; /* bigger than the first block: forces more blocks */

  memset(path, 'p', sizeof(path) - 1);
  path[sizeof(path) - 1] = '\0';
  tv.value_case = HANDLERS__V1__TOPIC_VALUE__VALUE_BINARY_VALUE;
  tv.binary_value.data = (uint8_t *)bin;
  tv.binary_value.len = sizeof(bin);
  up.topic_path = path;
  up.topic_value = &tv;
  req.key = "the-key";
  req.event = "update";
  req.args_case = HANDLERS__V1__DISPATCH_REQUEST__ARGS_UPDATE;
  req.update = &up;

  size_t len = handlers__v1__dispatch_request__get_packed_size(&req);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  assert_int_equal(handlers__v1__dispatch_request__pack(&req, buf), len);

  Handlers__V1__DispatchRequest *got = handlers__v1__dispatch_request__unpack(
      hd_arena_pb_allocator(a), len, buf);
  memset(buf, 0, len); /* the unpacked message must not borrow from buf */
  free(buf);
  assert_non_null(got);
  assert_string_equal(got->key, "the-key");
  assert_string_equal(got->event, "update");
  assert_int_equal(got->args_case, HANDLERS__V1__DISPATCH_REQUEST__ARGS_UPDATE);
  assert_non_null(got->update);
  assert_string_equal(got->update->topic_path, path);
  assert_non_null(got->update->topic_value);
  assert_int_equal(got->update->topic_value->value_case,
                   HANDLERS__V1__TOPIC_VALUE__VALUE_BINARY_VALUE);
  assert_int_equal(got->update->topic_value->binary_value.len, sizeof(bin));
  assert_memory_equal(got->update->topic_value->binary_value.data, bin,
                      sizeof(bin));
  assert_null(got->update->old_value);
  assert_null(got->update->topic_spec);
  /* Freeing through the arena allocator is a no-op; the arena frees all. */
  handlers__v1__dispatch_request__free_unpacked(got, hd_arena_pb_allocator(a));
}

static void test_arena_pb_allocator_is_stable(void **state) {
  hd_arena *a = *state;
  ProtobufCAllocator *pa = hd_arena_pb_allocator(a);

  assert_non_null(pa);
  assert_ptr_equal(pa, hd_arena_pb_allocator(a));
  void *p = pa->alloc(pa->allocator_data, 24);
  assert_max_aligned(p);
  memset(p, 3, 24);
  pa->free(pa->allocator_data, p);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_arena_every_allocation_is_max_aligned),
      T(test_arena_distinct_allocations_do_not_overlap),
      T(test_arena_allocation_larger_than_first_block),
      T(test_arena_many_small_allocations_keep_earlier_contents),
      T(test_arena_calloc_zeroes),
      T(test_arena_calloc_refuses_multiplication_overflow),
      T(test_arena_refuses_sizes_that_would_wrap),
      T(test_arena_strdup_copies),
      T(test_arena_wipe_zeroes_what_was_handed_out),
      T(test_arena_free_null_is_fine),
      T(test_arena_pb_allocator_unpacks_a_message),
      T(test_arena_pb_allocator_is_stable),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
