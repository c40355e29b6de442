/*
 * The function table: registration, lookup, handlers made from functions.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "handlerd/handlerd.h"

#include "test_util.h"

#include "functions_internal.h"
#include "kinds.h"

#include <stdlib.h>
#include <string.h>

static hd_err return_user_data(const hd_event *ev, void *user_data,
                               hd_result *out) {
  (void)ev;
  hd_result_set_int64(out, *(int64_t *)user_data);
  return HD_OK;
}

static int64_t run_int64(hd_handler *h) {
  hd_event ev = {.key = "k", .name = "custom"};
  hd_results *rs = NULL;
  assert_int_equal(hd_handler_run_sync(h, &ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 1);
  hd_result *r = hd_results_at(rs, 0);
  assert_int_equal(r->err, HD_OK);
  assert_int_equal(r->value.type, HD_VALUE_INT64);
  int64_t v = r->value.u.i64;
  hd_results_free(rs);
  return v;
}

static void test_register_copies_the_name(void **state) {
  hd_functions *fns = *state;
  static int64_t seven = 7;
  char name[] = "seven";
  hd_function_def def = {name, return_user_data, &seven, NULL, NULL};
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);
  name[0] = 'X';

  hd_handler *h = NULL;
  assert_int_equal(hd_functions_make_handler(fns, "seven", &h), HD_OK);
  assert_int_equal(run_int64(h), 7);
  hd_handler_unref(h);
}

static void test_register_duplicate_name_fails_with_eexist(void **state) {
  hd_functions *fns = *state;
  hd_function_def def = {"f", noop, NULL, NULL, NULL};
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);
  assert_int_equal(hd_functions_register(fns, &def), HD_EEXIST);
}

static void test_register_rejects_empty_name_and_null_fn(void **state) {
  hd_functions *fns = *state;
  hd_function_def def = {"", noop, NULL, NULL, NULL};
  assert_int_equal(hd_functions_register(fns, &def), HD_EINVAL);
  def.name = NULL;
  assert_int_equal(hd_functions_register(fns, &def), HD_EINVAL);
  def = (hd_function_def){"g", NULL, NULL, NULL, NULL};
  assert_int_equal(hd_functions_register(fns, &def), HD_EINVAL);
}

static void
test_make_handler_for_unknown_name_fails_with_enotfound(void **state) {
  hd_functions *fns = *state;
  hd_handler *h = (hd_handler *)0x1;
  assert_int_equal(hd_functions_make_handler(fns, "nope", &h), HD_ENOTFOUND);
  assert_ptr_equal(h, (hd_handler *)0x1);
}

static void collect(const char *name, void *ud) {
  char *buf = ud;
  strcat(buf, name);
  strcat(buf, ",");
}

static void test_foreach_lists_names_in_order(void **state) {
  hd_functions *fns = *state;
  const char *names[] = {"m", "b", "z", "a"};
  for (size_t i = 0; i < 4; i++) {
    hd_function_def def = {names[i], noop, NULL, NULL, NULL};
    assert_int_equal(hd_functions_register(fns, &def), HD_OK);
  }
  char buf[64] = "";
  hd_functions_foreach(fns, collect, buf);
  assert_string_equal(buf, "a,b,m,z,");
}

/* Per-handler state: a counter each handler owns. */
static int instances_live;

static hd_err inst_new(void *user_data, void **instance) {
  int64_t *n = malloc(sizeof *n);
  if (!n)
    return HD_ENOMEM;
  *n = *(int64_t *)user_data;
  instances_live++;
  *instance = n;
  return HD_OK;
}

static void inst_free(void *instance) {
  instances_live--;
  free(instance);
}

static hd_err bump(const hd_event *ev, void *user_data, hd_result *out) {
  (void)ev;
  int64_t *n = user_data;
  hd_result_set_int64(out, ++*n);
  return HD_OK;
}

static void test_instances_are_per_handler_and_freed_with_it(void **state) {
  hd_functions *fns = *state;
  static int64_t start = 100;
  hd_function_def def = {"bump", bump, &start, inst_new, inst_free};
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);

  instances_live = 0;
  hd_handler *a = NULL, *b = NULL;
  assert_int_equal(hd_functions_make_handler(fns, "bump", &a), HD_OK);
  assert_int_equal(hd_functions_make_handler(fns, "bump", &b), HD_OK);
  assert_int_equal(instances_live, 2);
  assert_int_equal(run_int64(a), 101);
  assert_int_equal(run_int64(a), 102);
  assert_int_equal(run_int64(b), 101);
  hd_handler_unref(a);
  assert_int_equal(instances_live, 1);
  hd_handler_unref(b);
  assert_int_equal(instances_live, 0);
  assert_int_equal(start, 100);
}

static hd_err inst_fail(void *user_data, void **instance) {
  (void)user_data;
  (void)instance;
  return HD_EIO;
}

static void test_make_handler_passes_on_instance_new_failure(void **state) {
  hd_functions *fns = *state;
  hd_function_def def = {"broken", noop, NULL, inst_fail, inst_free};
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);
  hd_handler *h = NULL;
  assert_int_equal(hd_functions_make_handler(fns, "broken", &h), HD_EIO);
  assert_null(h);
}

static int owned_freed;
static void free_owned(void *p) {
  owned_freed++;
  free(p);
}

static void test_owned_user_data_is_freed_with_the_table(void **state) {
  (void)state;
  hd_functions *fns;
  assert_int_equal(hd_functions_new(&fns), HD_OK);
  owned_freed = 0;
  hd_function_def def = {"owned", noop, malloc(16), NULL, NULL};
  assert_int_equal(hd_functions_register_owned(fns, &def, free_owned), HD_OK);
  /* A failed registration does not take the user data. */
  assert_int_equal(hd_functions_register_owned(fns, &def, free_owned),
                   HD_EEXIST);
  assert_int_equal(owned_freed, 0);
  hd_functions_free(fns);
  assert_int_equal(owned_freed, 1);
}

static void test_unregister_removes_the_name(void **state) {
  hd_functions *fns = *state;
  hd_function_def def = {"gone", noop, NULL, NULL, NULL};
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);
  assert_int_equal(hd_functions_unregister(fns, "gone"), HD_OK);
  hd_handler *h = NULL;
  assert_int_equal(hd_functions_make_handler(fns, "gone", &h), HD_ENOTFOUND);
  assert_int_equal(hd_functions_unregister(fns, "gone"), HD_ENOTFOUND);
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);
}

/* ---- the "local" row of the kind table ---------------------------------- */

static void test_local_kind_builds_describes_and_checks(void **state) {
  hd_functions *fns = *state;
  static int64_t seven = 7;
  hd_function_def def = {
      .name = "seven", .fn = return_user_data, .user_data = &seven};
  hd_target_spec t = {.kind = HD_TARGET_LOCAL, .local = "seven"};
  const hd_kind *k = hd_kind_of(HD_TARGET_LOCAL);
  hd_handler *h = NULL;
  char msg[128] = "";

  assert_ptr_equal(k, &hd_kind_local);
  assert_string_equal(k->name, "local");
  assert_string_equal(k->handler_kind, "simple");
  assert_string_equal(k->detail(&t), "seven");
  assert_int_equal(hd_functions_register(fns, &def), HD_OK);
  assert_int_equal(k->build(fns, &(hd_kind_site){"key", "h-1", "", "target"},
                            &t, &h, NULL, msg, sizeof(msg)),
                   HD_OK);
  assert_string_equal(hd_handler_kind(h), k->handler_kind);
  assert_int_equal(run_int64(h), 7);
  hd_handler_unref(h);

  t.local = "missing";
  assert_int_equal(k->build(fns,
                            &(hd_kind_site){"key", "h-1", "x", "route 'x'"}, &t,
                            &h, NULL, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_string_equal(msg, "route 'x': no local function named 'missing'");
  t.local = "bad\xff";
  assert_int_equal(k->check_strings(&t, "target", msg, sizeof(msg)), HD_EINVAL);
  assert_string_equal(msg, "target.local is not valid UTF-8 (at byte 3)");
}

static void test_kind_table_rows_are_complete(void **state) {
  size_t n = 0;
  const hd_kind *const *rows = hd_kinds_all(&n);
  (void)state;
  assert_true(n >= 2);
  for (size_t i = 0; i < n; i++) {
    /* What the control plane calls without checking. */
    assert_non_null(rows[i]->name);
    assert_non_null(rows[i]->handler_kind);
    assert_non_null(rows[i]->detail);
    assert_non_null(rows[i]->build);
    assert_true(rows[i]->kind != HD_TARGET_NONE);
    assert_ptr_equal(hd_kind_of(rows[i]->kind), rows[i]);
    /* keep_secret comes with wants_new_secret. */
    assert_true(!rows[i]->keep_secret == !rows[i]->wants_new_secret);
  }
  assert_null(hd_kind_of(HD_TARGET_NONE));
  assert_string_equal(hd_kinds_names(), "neither local nor webhook");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_register_copies_the_name,
                                      functions_setup, functions_teardown),
      cmocka_unit_test_setup_teardown(
          test_register_duplicate_name_fails_with_eexist, functions_setup,
          functions_teardown),
      cmocka_unit_test_setup_teardown(
          test_register_rejects_empty_name_and_null_fn, functions_setup,
          functions_teardown),
      cmocka_unit_test_setup_teardown(
          test_make_handler_for_unknown_name_fails_with_enotfound,
          functions_setup, functions_teardown),
      cmocka_unit_test_setup_teardown(test_foreach_lists_names_in_order,
                                      functions_setup, functions_teardown),
      cmocka_unit_test_setup_teardown(
          test_instances_are_per_handler_and_freed_with_it, functions_setup,
          functions_teardown),
      cmocka_unit_test_setup_teardown(
          test_make_handler_passes_on_instance_new_failure, functions_setup,
          functions_teardown),
      cmocka_unit_test(test_owned_user_data_is_freed_with_the_table),
      cmocka_unit_test_setup_teardown(
          test_local_kind_builds_describes_and_checks, functions_setup,
          functions_teardown),
      cmocka_unit_test(test_kind_table_rows_are_complete),
      cmocka_unit_test_setup_teardown(test_unregister_removes_the_name,
                                      functions_setup, functions_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
