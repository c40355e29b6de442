/*
 * Unit tests: UTF-8 well-formedness (utf8.c): one character, whole
 * strings, and the repair that listings use for strings saved before
 * handlerd checked them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

#define LEN(s) (sizeof(s) - 1)

static void test_char_len_of_each_sequence_length(void **state) {
  (void)state;
  assert_int_equal(hd_utf8_char_len((const unsigned char *)"a", 1), 1);
  assert_int_equal(hd_utf8_char_len((const unsigned char *)"", 1), 1); /* NUL */
  assert_int_equal(hd_utf8_char_len((const unsigned char *)"\xc3\xa9", 2), 2);
  assert_int_equal(hd_utf8_char_len((const unsigned char *)"\xe2\x82\xac", 3),
                   3);
  assert_int_equal(
      hd_utf8_char_len((const unsigned char *)"\xf0\x9f\x98\x80", 4), 4);
  assert_int_equal(
      hd_utf8_char_len((const unsigned char *)"\xf4\x8f\xbf\xbf", 4), 4);
}

static void test_char_len_refuses_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {"\x80",         /* stray continuation */
                                    "\xff",         /* never a lead byte */
                                    "\xc3",         /* cut short */
                                    "\xe2\x82",     /* cut short */
                                    "\xc3\x28",     /* continuation missing */
                                    "\xc0\x80",     /* overlong NUL */
                                    "\xe0\x80\xaf", /* overlong '/' */
                                    "\xf0\x82\x82\xac", /* overlong euro */
                                    "\xed\xa0\x80",     /* surrogate U+D800 */
                                    "\xed\xbf\xbf",     /* surrogate U+DFFF */
                                    "\xf4\x90\x80\x80", /* U+110000 */
                                    "\xf8\x88\x80\x80\x80"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (hd_utf8_char_len((const unsigned char *)bad[i], strlen(bad[i])) != 0)
      fail_msg("case %zu accepted", i);
}

static void test_valid_prefix_points_at_the_first_bad_byte(void **state) {
  (void)state;
  assert_int_equal(hd_utf8_valid_prefix("", 0), 0);
  assert_int_equal(hd_utf8_valid_prefix("plain ascii", 11), 11);
  assert_int_equal(hd_utf8_valid_prefix("caf\xc3\xa9", 5), 5);
  assert_int_equal(hd_utf8_valid_prefix("caf\xc3", 4), 3);
  assert_int_equal(hd_utf8_valid_prefix("ab\xff"
                                        "cd",
                                        5),
                   2);
  assert_int_equal(hd_utf8_valid_prefix("\xe2\x82\xac\xed\xa0\x80", 6), 3);
  /* NUL bytes are characters: the length says where the string ends */
  assert_int_equal(hd_utf8_valid_prefix("a\0b", 3), 3);
}

static void test_valid(void **state) {
  (void)state;
  assert_true(hd_utf8_valid("", 0));
  assert_true(hd_utf8_valid("\xf0\x9f\x98\x80 ok", LEN("\xf0\x9f\x98\x80 ok")));
  assert_false(hd_utf8_valid("k\xff", 2));
  assert_false(hd_utf8_valid("\xc3", 1));
}

static void test_repair_replaces_each_bad_byte(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(hd_utf8_repaired_size(4), 13);
  assert_int_equal(hd_utf8_repair(out,
                                  "k\xff"
                                  "x",
                                  3),
                   5);
  assert_string_equal(out, "k\xef\xbf\xbdx");
  /* a cut sequence: its lead byte replaced, the rest kept */
  assert_int_equal(hd_utf8_repair(out, "\xe2\x82", 2), 6);
  assert_string_equal(out, "\xef\xbf\xbd\xef\xbf\xbd");
  /* valid input comes out the same */
  assert_int_equal(hd_utf8_repair(out, "caf\xc3\xa9", 5), 5);
  assert_string_equal(out, "caf\xc3\xa9");
  assert_true(hd_utf8_valid(out, strlen(out)));
  assert_int_equal(hd_utf8_repair(out, "", 0), 0);
  assert_string_equal(out, "");
}

static void test_repair_output_is_always_valid(void **state) {
  (void)state;
  unsigned char in[64];
  char out[3 * sizeof(in) + 1];
  uint32_t x = 2463534242u; /* xorshift32: the same bytes every run */

  for (int round = 0; round < 2000; round++) {
    size_t len = x % sizeof(in);
    for (size_t i = 0; i < len; i++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      in[i] = (unsigned char)(x | 1); /* no NUL: C strings */
    }
    size_t n = hd_utf8_repair(out, in, len);
    assert_true(n <= 3 * len);
    assert_int_equal(strlen(out), n);
    assert_true(hd_utf8_valid(out, n));
    if (hd_utf8_valid(in, len))
      assert_memory_equal(out, in, len);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_char_len_of_each_sequence_length),
      cmocka_unit_test(test_char_len_refuses_malformed),
      cmocka_unit_test(test_valid_prefix_points_at_the_first_bad_byte),
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_repair_replaces_each_bad_byte),
      cmocka_unit_test(test_repair_output_is_always_valid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
