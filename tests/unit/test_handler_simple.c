/*
 * Unit tests: the generic handler object (ids, references, timing,
 * run_sync) and the "simple" kind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

#include "test_util.h"

static const hd_event update_ev = {.key = "k", .name = "update"};

/* Echoes the event name and records the id the function saw. */
static hd_err echo_name(const hd_event *ev, void *ud, hd_result *out) {
  char *seen_id = ud;

  if (seen_id != NULL)
    strcpy(seen_id, out->handler_id);
  return hd_result_set_string(out, ev->name);
}

static hd_err fail_plain(const hd_event *ev, void *ud, hd_result *out) {
  (void)ev;
  (void)ud;
  (void)out;
  return HD_EINVAL;
}

static hd_err fail_with_message(const hd_event *ev, void *ud, hd_result *out) {
  (void)ev;
  (void)ud;
  hd_result_set_error(out, HD_EHANDLER, "custom: %d", 42);
  return HD_EHANDLER;
}

static hd_err sleep_2ms(const hd_event *ev, void *ud, hd_result *out) {
  struct timespec ts = {0, 2000000};

  (void)ev;
  (void)ud;
  (void)out;
  nanosleep(&ts, NULL);
  return HD_OK;
}

static int freed_count;
static void count_free(void *p) {
  freed_count++;
  free(p);
}

static int is_random_id(const char *id) {
  if (strlen(id) != 14 || strncmp(id, "h-", 2) != 0)
    return 0;
  for (int i = 2; i < 14; i++) {
    if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
      return 0;
  }
  return 1;
}

static void test_handler_new_gets_random_hex_id(void **state) {
  hd_handler *a, *b;

  (void)state;
  assert_int_equal(hd_simple_new(echo_name, NULL, NULL, &a), HD_OK);
  assert_int_equal(hd_simple_new(echo_name, NULL, NULL, &b), HD_OK);
  assert_true(is_random_id(hd_handler_id(a)));
  assert_true(is_random_id(hd_handler_id(b)));
  assert_string_not_equal(hd_handler_id(a), hd_handler_id(b));
  assert_string_equal(hd_handler_kind(a), "simple");
  hd_handler_unref(a);
  hd_handler_unref(b);
}

static void test_handler_set_id_checks_length(void **state) {
  char longest[HD_HANDLER_ID_MAX + 2];
  hd_handler *h;

  (void)state;
  assert_int_equal(hd_simple_new(echo_name, NULL, NULL, &h), HD_OK);
  assert_int_equal(hd_handler_set_id(h, "saved-1"), HD_OK);
  assert_string_equal(hd_handler_id(h), "saved-1");
  assert_int_equal(hd_handler_set_id(h, ""), HD_EINVAL);
  memset(longest, 'x', sizeof(longest));
  longest[HD_HANDLER_ID_MAX + 1] = '\0'; /* one too many */
  assert_int_equal(hd_handler_set_id(h, longest), HD_EINVAL);
  assert_string_equal(hd_handler_id(h), "saved-1");
  longest[HD_HANDLER_ID_MAX] = '\0'; /* exactly the limit */
  assert_int_equal(hd_handler_set_id(h, longest), HD_OK);
  assert_string_equal(hd_handler_id(h), longest);
  hd_handler_unref(h);
}

static void test_handler_new_rejects_missing_handle(void **state) {
  static const hd_handler_ops no_handle = {.kind = "broken"};
  hd_handler *h = (hd_handler *)&h;

  (void)state;
  assert_int_equal(hd_handler_new(&no_handle, NULL, &h), HD_EINVAL);
  assert_ptr_equal(h, (hd_handler *)&h); /* untouched */
  assert_int_equal(hd_handler_new(NULL, NULL, &h), HD_EINVAL);
}

static void test_simple_result_carries_handler_id_and_value(void **state) {
  char seen[HD_HANDLER_ID_MAX + 1] = "";
  hd_results *rs = NULL;
  hd_handler *h;
  hd_result *r;

  (void)state;
  assert_int_equal(hd_simple_new(echo_name, seen, NULL, &h), HD_OK);
  assert_int_equal(hd_handler_run_sync(h, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 1);
  r = hd_results_at(rs, 0);
  assert_string_equal(seen, hd_handler_id(h)); /* set before fn ran */
  assert_string_equal(r->handler_id, hd_handler_id(h));
  assert_int_equal(r->err, HD_OK);
  assert_null(r->message);
  assert_int_equal(r->value.type, HD_VALUE_STRING);
  assert_string_equal(r->value.u.bytes.data, "update");
  assert_true(r->duration_ns > 0);
  hd_results_free(rs);
  hd_handler_unref(h);
}

static void test_simple_function_error_becomes_failed_result(void **state) {
  hd_results *rs = NULL;
  hd_handler *h;
  hd_result *r;

  (void)state;
  assert_int_equal(hd_simple_new(fail_plain, NULL, NULL, &h), HD_OK);
  /* The handler itself succeeds: the failure is in the result. */
  assert_int_equal(hd_handler_run_sync(h, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 1);
  r = hd_results_at(rs, 0);
  assert_int_equal(r->err, HD_EINVAL);
  assert_non_null(r->message);
  assert_string_equal(r->message, "function failed: invalid argument");
  assert_string_equal(r->handler_id, hd_handler_id(h));
  hd_results_free(rs);
  hd_handler_unref(h);
}

static void test_simple_function_own_error_message_is_kept(void **state) {
  hd_results *rs = NULL;
  hd_handler *h;

  (void)state;
  assert_int_equal(hd_simple_new(fail_with_message, NULL, NULL, &h), HD_OK);
  assert_int_equal(hd_handler_run_sync(h, &update_ev, &rs), HD_OK);
  assert_int_equal(hd_results_at(rs, 0)->err, HD_EHANDLER);
  assert_string_equal(hd_results_at(rs, 0)->message, "custom: 42");
  hd_results_free(rs);
  hd_handler_unref(h);
}

static void test_simple_duration_covers_the_function(void **state) {
  hd_results *rs = NULL;
  hd_handler *h;

  (void)state;
  assert_int_equal(hd_simple_new(sleep_2ms, NULL, NULL, &h), HD_OK);
  assert_int_equal(hd_handler_run_sync(h, &update_ev, &rs), HD_OK);
  assert_true(hd_results_at(rs, 0)->duration_ns >= 2000000);
  assert_true(hd_results_at(rs, 0)->duration_ns < 2000000000);
  hd_results_free(rs);
  hd_handler_unref(h);
}

static void test_simple_user_data_freed_once_on_last_unref(void **state) {
  hd_handler *h;

  (void)state;
  freed_count = 0;
  assert_int_equal(hd_simple_new(echo_name, malloc(64), count_free, &h), HD_OK);
  hd_handler_ref(h);
  hd_handler_unref(h);
  assert_int_equal(freed_count, 0);
  hd_handler_unref(h);
  assert_int_equal(freed_count, 1);
}

static void test_simple_remove_is_unsupported(void **state) {
  hd_handler *h;

  (void)state;
  assert_int_equal(hd_simple_new(echo_name, NULL, NULL, &h), HD_OK);
  assert_int_equal(hd_handler_remove(h, "anything"), HD_EUNSUPPORTED);
  hd_handler_unref(h);
}

/* A kind that reports no duration: hd_handler_handle fills it in. */
static hd_err untimed_handle(hd_handler *h, const hd_event *ev,
                             hd_done_fn *done, void *done_data) {
  hd_results *rs = hd_results_new();
  struct timespec ts = {0, 1000000};

  (void)h;
  (void)ev;
  hd_results_append(rs);
  hd_results_append(rs)->duration_ns = 7; /* already timed: kept */
  nanosleep(&ts, NULL);
  done(rs, done_data);
  return HD_OK;
}

static void test_handler_handle_fills_missing_durations(void **state) {
  static const hd_handler_ops untimed = {.kind = "untimed",
                                         .handle = untimed_handle};
  hd_results *rs = NULL;
  hd_handler *h;

  (void)state;
  assert_int_equal(hd_handler_new(&untimed, NULL, &h), HD_OK);
  assert_string_equal(hd_handler_kind(h), "untimed");
  assert_ptr_equal(hd_handler_ops_of(h), &untimed);
  assert_int_equal(hd_handler_run_sync(h, &update_ev, &rs), HD_OK);
  assert_true(hd_results_at(rs, 0)->duration_ns >= 1000000);
  assert_int_equal(hd_results_at(rs, 1)->duration_ns, 7);
  hd_results_free(rs);
  hd_handler_unref(h);
}

static void test_run_sync_returns_handle_error(void **state) {
  static const hd_handler_ops refusing = {.kind = "refusing",
                                          .handle = refusing_handle};
  hd_results *rs = (hd_results *)&rs;
  hd_handler *h;

  (void)state;
  assert_int_equal(hd_handler_new(&refusing, NULL, &h), HD_OK);
  assert_int_equal(hd_handler_run_sync(h, &update_ev, &rs), HD_EBUSY);
  assert_ptr_equal(rs, (hd_results *)&rs); /* untouched */
  hd_handler_unref(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handler_new_gets_random_hex_id),
      cmocka_unit_test(test_handler_set_id_checks_length),
      cmocka_unit_test(test_handler_new_rejects_missing_handle),
      cmocka_unit_test(test_simple_result_carries_handler_id_and_value),
      cmocka_unit_test(test_simple_function_error_becomes_failed_result),
      cmocka_unit_test(test_simple_function_own_error_message_is_kept),
      cmocka_unit_test(test_simple_duration_covers_the_function),
      cmocka_unit_test(test_simple_user_data_freed_once_on_last_unref),
      cmocka_unit_test(test_simple_remove_is_unsupported),
      cmocka_unit_test(test_handler_handle_fills_missing_durations),
      cmocka_unit_test(test_run_sync_returns_handle_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
