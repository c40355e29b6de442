/*
 * Unit tests: hd_result setters and the hd_results list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

static void test_results_append_returns_zeroed_result(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r;

  (void)state;
  assert_non_null(rs);
  assert_int_equal(hd_results_count(rs), 0);
  r = hd_results_append(rs);
  assert_non_null(r);
  assert_int_equal(hd_results_count(rs), 1);
  assert_ptr_equal(hd_results_at(rs, 0), r);
  assert_int_equal(r->err, HD_OK);
  assert_null(r->message);
  assert_int_equal(r->value.type, HD_VALUE_NONE);
  assert_int_equal(r->duration_ns, 0);
  assert_string_equal(r->handler_id, "");
  assert_null(hd_results_at(rs, 1));
  hd_results_free(rs);
}

static void test_results_grow_keeps_every_result(void **state) {
  hd_results *rs = hd_results_new();

  (void)state;
  for (int i = 0; i < 100; i++) {
    hd_result *r = hd_results_append(rs);
    assert_non_null(r);
    hd_result_set_int64(r, i);
  }
  assert_int_equal(hd_results_count(rs), 100);
  for (int i = 0; i < 100; i++) {
    assert_int_equal(hd_results_at(rs, (size_t)i)->value.type, HD_VALUE_INT64);
    assert_int_equal(hd_results_at(rs, (size_t)i)->value.u.i64, i);
  }
  hd_results_free(rs);
}

static void test_results_take_moves_in_order_and_empties_source(void **state) {
  hd_results *to = hd_results_new(), *from = hd_results_new();

  (void)state;
  assert_int_equal(hd_result_set_string(hd_results_append(to), "a"), HD_OK);
  assert_int_equal(hd_result_set_string(hd_results_append(from), "b"), HD_OK);
  assert_int_equal(hd_result_set_json(hd_results_append(from), "[1]"), HD_OK);
  assert_int_equal(hd_results_take(to, from), HD_OK);
  assert_int_equal(hd_results_count(from), 0);
  assert_int_equal(hd_results_count(to), 3);
  assert_string_equal(hd_results_at(to, 0)->value.u.bytes.data, "a");
  assert_string_equal(hd_results_at(to, 1)->value.u.bytes.data, "b");
  assert_int_equal(hd_results_at(to, 2)->value.type, HD_VALUE_JSON);
  assert_string_equal(hd_results_at(to, 2)->value.u.bytes.data, "[1]");
  /* `from` stays usable after the move. */
  assert_non_null(hd_results_append(from));
  assert_int_equal(hd_results_take(to, to), HD_EINVAL);
  hd_results_free(from); /* must not free the moved bytes (ASan/valgrind) */
  hd_results_free(to);
}

static void test_result_set_bytes_copies_and_nul_terminates(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r = hd_results_append(rs);
  char buf[4] = {'x', '\0', 'y', 'z'};

  (void)state;
  assert_int_equal(hd_result_set_bytes(r, HD_VALUE_BINARY, buf, 4), HD_OK);
  buf[0] = 'Q'; /* the result owns a copy */
  assert_int_equal(r->value.type, HD_VALUE_BINARY);
  assert_int_equal(r->value.u.bytes.len, 4);
  assert_memory_equal(r->value.u.bytes.data, "x\0yz", 4);
  assert_int_equal(r->value.u.bytes.data[4], '\0');
  /* Replacing the value frees the old bytes (checked by the sanitizers). */
  assert_int_equal(hd_result_set_string(r, "hello"), HD_OK);
  assert_int_equal(r->value.type, HD_VALUE_STRING);
  assert_int_equal(r->value.u.bytes.len, 5);
  assert_string_equal(r->value.u.bytes.data, "hello");
  hd_result_set_double(r, 2.5);
  assert_int_equal(r->value.type, HD_VALUE_DOUBLE);
  assert_true(r->value.u.f64 == 2.5);
  assert_int_equal(hd_result_set_bytes(r, HD_VALUE_INT64, "1", 1), HD_EINVAL);
  assert_int_equal(hd_result_set_bytes(r, HD_VALUE_BINARY, NULL, 0), HD_OK);
  assert_int_equal(r->value.u.bytes.len, 0);
  hd_results_free(rs);
}

static void test_result_set_value_copies_borrowed_bytes(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r = hd_results_append(rs);
  char text[] = "{\"a\":1}";
  hd_value v = {.type = HD_VALUE_JSON};

  (void)state;
  v.u.bytes.data = text;
  v.u.bytes.len = strlen(text);
  assert_int_equal(hd_result_set_value(r, &v), HD_OK);
  text[0] = 'X';
  assert_int_equal(r->value.type, HD_VALUE_JSON);
  assert_string_equal(r->value.u.bytes.data, "{\"a\":1}");
  assert_ptr_not_equal(r->value.u.bytes.data, text);

  v.type = HD_VALUE_INT64;
  v.u.i64 = -7;
  assert_int_equal(hd_result_set_value(r, &v), HD_OK);
  assert_int_equal(r->value.type, HD_VALUE_INT64);
  assert_int_equal(r->value.u.i64, -7);

  v.type = HD_VALUE_NONE;
  assert_int_equal(hd_result_set_value(r, &v), HD_OK);
  assert_int_equal(r->value.type, HD_VALUE_NONE);
  hd_results_free(rs);
}

static void test_result_set_error_formats_message(void **state) {
  hd_results *rs = hd_results_new();
  hd_result *r = hd_results_append(rs);

  (void)state;
  hd_result_set_error(r, HD_ETIMEOUT, "took %d ms", 12);
  assert_int_equal(r->err, HD_ETIMEOUT);
  assert_string_equal(r->message, "took 12 ms");
  /* A second error replaces the first message without leaking it. */
  hd_result_set_error(r, HD_EIO, "%s", "broken pipe");
  assert_int_equal(r->err, HD_EIO);
  assert_string_equal(r->message, "broken pipe");
  hd_results_free(rs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_results_append_returns_zeroed_result),
      cmocka_unit_test(test_results_grow_keeps_every_result),
      cmocka_unit_test(test_results_take_moves_in_order_and_empties_source),
      cmocka_unit_test(test_result_set_bytes_copies_and_nul_terminates),
      cmocka_unit_test(test_result_set_value_copies_borrowed_bytes),
      cmocka_unit_test(test_result_set_error_formats_message),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
