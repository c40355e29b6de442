/*
 * Plugin loading, with the example plugin (HD_EXAMPLE_PLUGIN, built next to
 * handlerd). The plugin resolves hd_plugin_register_function and the result
 * setters against this binary, which exports its symbols for that.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "handlerd/plugin.h"

#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static int teardown(void **state) {
  functions_teardown(state);
  hd_plugins_unload_all();
  return 0;
}

static void load_example(hd_functions *fns) {
  char msg[512] = "";
  hd_err err = hd_plugin_load(fns, HD_EXAMPLE_PLUGIN, msg, sizeof msg);
  if (err != HD_OK)
    fail_msg("load failed: %s", msg);
}

/* Runs function `name` on an update event with `value`; returns the result
 * list (one result) for the caller to inspect and free. */
static hd_results *call(hd_functions *fns, const char *name,
                        const hd_value *value) {
  hd_handler *h = NULL;
  assert_int_equal(hd_functions_make_handler(fns, name, &h), HD_OK);
  hd_event ev = {.key = "k", .name = "update", .args_kind = HD_ARGS_UPDATE};
  ev.topic.path = "p";
  ev.topic.value = *value;
  hd_results *rs = NULL;
  assert_int_equal(hd_handler_run_sync(h, &ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 1);
  hd_handler_unref(h);
  return rs;
}

static void test_example_plugin_doubles_int64(void **state) {
  hd_functions *fns = *state;
  load_example(fns);
  hd_value v = {.type = HD_VALUE_INT64, .u.i64 = 21};
  hd_results *rs = call(fns, "double_it", &v);
  hd_result *r = hd_results_at(rs, 0);
  assert_int_equal(r->err, HD_OK);
  assert_int_equal(r->value.type, HD_VALUE_INT64);
  assert_int_equal(r->value.u.i64, 42);
  hd_results_free(rs);
}

static void test_example_plugin_doubles_double(void **state) {
  hd_functions *fns = *state;
  load_example(fns);
  hd_value v = {.type = HD_VALUE_DOUBLE, .u.f64 = 1.25};
  hd_results *rs = call(fns, "double_it", &v);
  hd_result *r = hd_results_at(rs, 0);
  assert_int_equal(r->err, HD_OK);
  assert_int_equal(r->value.type, HD_VALUE_DOUBLE);
  assert_true(r->value.u.f64 == 2.5);
  hd_results_free(rs);
}

static void test_example_double_it_fails_on_a_string(void **state) {
  hd_functions *fns = *state;
  load_example(fns);
  hd_value v = {.type = HD_VALUE_STRING};
  v.u.bytes.data = "x";
  v.u.bytes.len = 1;
  hd_results *rs = call(fns, "double_it", &v);
  hd_result *r = hd_results_at(rs, 0);
  assert_int_equal(r->err, HD_EINVAL);
  assert_non_null(r->message);
  assert_non_null(strstr(r->message, "int64 or double"));
  hd_results_free(rs);
}

static void test_example_double_it_refuses_overflow(void **state) {
  hd_functions *fns = *state;
  load_example(fns);
  hd_value v = {.type = HD_VALUE_INT64, .u.i64 = INT64_MAX};
  hd_results *rs = call(fns, "double_it", &v);
  assert_int_equal(hd_results_at(rs, 0)->err, HD_EINVAL);
  hd_results_free(rs);
}

static void test_example_upper_uppercases_a_string(void **state) {
  hd_functions *fns = *state;
  load_example(fns);
  hd_value v = {.type = HD_VALUE_STRING};
  v.u.bytes.data = "abc-\xc3\xa9z";
  v.u.bytes.len = 7;
  hd_results *rs = call(fns, "upper", &v);
  hd_result *r = hd_results_at(rs, 0);
  assert_int_equal(r->err, HD_OK);
  assert_int_equal(r->value.type, HD_VALUE_STRING);
  assert_int_equal(r->value.u.bytes.len, 7);
  assert_memory_equal(r->value.u.bytes.data, "ABC-\xc3\xa9Z", 7);
  hd_results_free(rs);
}

static void test_load_nonexistent_path_fails_with_message(void **state) {
  hd_functions *fns = *state;
  char msg[512] = "";
  assert_int_equal(
      hd_plugin_load(fns, "/nonexistent/plugin.so", msg, sizeof msg),
      HD_EINVAL);
  assert_non_null(strstr(msg, "/nonexistent/plugin.so"));
  /* dlerror()'s text is included. */
  assert_non_null(strstr(msg, "No such file"));
}

static void test_load_library_without_entry_points_fails(void **state) {
  hd_functions *fns = *state;
  char msg[512] = "";
  assert_int_equal(hd_plugin_load(fns, "libm.so.6", msg, sizeof msg),
                   HD_EINVAL);
  assert_string_equal(msg,
                      "plugin libm.so.6 does not export hd_plugin_version");
}

static void test_load_fails_when_a_name_is_taken_and_undoes_init(void **state) {
  hd_functions *fns = *state;
  /* The example registers double_it, then upper: taking "upper" makes init
   * fail after double_it was registered. */
  hd_function_def def = {"upper", noop, NULL, NULL, NULL};
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);
  char msg[512] = "";
  assert_int_equal(hd_plugin_load(fns, HD_EXAMPLE_PLUGIN, msg, sizeof msg),
                   HD_EEXIST);
  assert_non_null(strstr(msg, "failed to initialise"));
  hd_handler *h = NULL;
  assert_int_equal(hd_functions_make_handler(fns, "double_it", &h),
                   HD_ENOTFOUND);
}

static void test_load_twice_into_one_table_fails_with_eexist(void **state) {
  hd_functions *fns = *state;
  load_example(fns);
  char msg[512] = "";
  assert_int_equal(hd_plugin_load(fns, HD_EXAMPLE_PLUGIN, msg, sizeof msg),
                   HD_EEXIST);
  /* The first load's functions are still there. */
  hd_handler *h = NULL;
  assert_int_equal(hd_functions_make_handler(fns, "double_it", &h), HD_OK);
  hd_handler_unref(h);
}

static void test_register_function_rejects_null_plugin(void **state) {
  (void)state;
  assert_int_equal(hd_plugin_register_function(NULL, "x", noop, NULL),
                   HD_EINVAL);
  hd_function_def def = {"x", noop, NULL, NULL, NULL};
  assert_int_equal(hd_plugin_register(NULL, &def), HD_EINVAL);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, functions_setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_example_plugin_doubles_int64),
      T(test_example_plugin_doubles_double),
      T(test_example_double_it_fails_on_a_string),
      T(test_example_double_it_refuses_overflow),
      T(test_example_upper_uppercases_a_string),
      T(test_load_nonexistent_path_fails_with_message),
      T(test_load_library_without_entry_points_fails),
      T(test_load_fails_when_a_name_is_taken_and_undoes_init),
      T(test_load_twice_into_one_table_fails_with_eexist),
      T(test_register_function_rejects_null_plugin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
