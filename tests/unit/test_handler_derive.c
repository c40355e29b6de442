/*
 * Unit tests: derive_old_value (model/handler_derive.c): an update without
 * old_value gets the last value seen for its path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

#include "registry_select.h"
#include "test_util.h"

/* Answers with the event's old_value as a string ("-" when absent). */
static hd_err old_of(const hd_event *ev, void *ud, hd_result *out) {
  (void)ud;
  if (ev->topic.old_value.type == HD_VALUE_NONE)
    return hd_result_set_string(out, "-");
  return hd_result_set_value(out, &ev->topic.old_value);
}

static const char *run_update(hd_handler *h, const char *path,
                              const char *value, const char *old, char *buf,
                              size_t size) {
  hd_event ev = {.key = "k", .name = "update", .args_kind = HD_ARGS_UPDATE};
  hd_results *rs = NULL;

  ev.topic.path = path;
  ev.topic.value.type = HD_VALUE_STRING;
  ev.topic.value.u.bytes.data = value;
  ev.topic.value.u.bytes.len = strlen(value);
  if (old != NULL) {
    ev.topic.old_value.type = HD_VALUE_STRING;
    ev.topic.old_value.u.bytes.data = old;
    ev.topic.old_value.u.bytes.len = strlen(old);
  }
  assert_int_equal(hd_handler_run_sync(h, &ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 1);
  snprintf(buf, size, "%.*s", (int)hd_results_at(rs, 0)->value.u.bytes.len,
           hd_results_at(rs, 0)->value.u.bytes.data);
  hd_results_free(rs);
  return buf;
}

static void run_unsubscribe(hd_handler *h, const char *path) {
  hd_event ev = {
      .key = "k", .name = "unsubscribe", .args_kind = HD_ARGS_UNSUBSCRIBE};
  hd_results *rs = NULL;

  ev.topic.path = path;
  assert_int_equal(hd_handler_run_sync(h, &ev, &rs), HD_OK);
  hd_results_free(rs);
}

static void test_derives_old_value_per_path(void **state) {
  hd_handler *inner = NULL, *h = NULL;
  char buf[64];

  (void)state;
  assert_int_equal(hd_simple_new(old_of, NULL, NULL, &inner), HD_OK);
  assert_int_equal(hd_derive_old_value_new(inner, &h), HD_OK);
  assert_string_equal(hd_handler_id(h), hd_handler_id(inner));
  /* The first update of a path has none, as the seed says. */
  assert_string_equal(run_update(h, "a", "1", NULL, buf, sizeof(buf)), "-");
  assert_string_equal(run_update(h, "a", "2", NULL, buf, sizeof(buf)), "1");
  assert_string_equal(run_update(h, "b", "x", NULL, buf, sizeof(buf)), "-");
  assert_string_equal(run_update(h, "a", "3", NULL, buf, sizeof(buf)), "2");
  /* A sender's own old_value wins, and its value is still remembered. */
  assert_string_equal(run_update(h, "a", "4", "given", buf, sizeof(buf)),
                      "given");
  assert_string_equal(run_update(h, "a", "5", NULL, buf, sizeof(buf)), "4");
  /* An unsubscribe forgets the path. */
  run_unsubscribe(h, "a");
  assert_string_equal(run_update(h, "a", "6", NULL, buf, sizeof(buf)), "-");
  hd_handler_unref(h);
  hd_handler_unref(inner);
}

static void test_without_wrapper_old_value_stays_absent(void **state) {
  hd_handler *inner = NULL;
  char buf[64];

  (void)state;
  assert_int_equal(hd_simple_new(old_of, NULL, NULL, &inner), HD_OK);
  assert_string_equal(run_update(inner, "a", "1", NULL, buf, sizeof(buf)), "-");
  assert_string_equal(run_update(inner, "a", "2", NULL, buf, sizeof(buf)), "-");
  hd_handler_unref(inner);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_derives_old_value_per_path),
      cmocka_unit_test(test_without_wrapper_old_value_stays_absent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
