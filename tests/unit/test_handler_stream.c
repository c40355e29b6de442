/*
 * Unit tests: the "event-stream" kind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

#include "test_util.h"

static hd_results *run(hd_handler *h, const char *event_name) {
  hd_event ev = {.key = "k", .name = event_name};
  hd_results *rs = NULL;

  assert_int_equal(hd_handler_run_sync(h, &ev, &rs), HD_OK);
  assert_non_null(rs);
  return rs;
}

static void test_stream_routes_event_to_its_sub_handler(void **state) {
  hd_handler *s, *up = sayer("U"), *sub = sayer("S");
  hd_results *rs;

  (void)state;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_string_equal(hd_handler_kind(s), "event-stream");
  assert_int_equal(hd_stream_route(s, "update", up), HD_OK);
  assert_int_equal(hd_stream_route(s, "subscribe", sub), HD_OK);

  rs = run(s, "update");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->value.u.bytes.data, "U");
  assert_string_equal(hd_results_at(rs, 0)->handler_id, hd_handler_id(up));
  hd_results_free(rs);
  rs = run(s, "subscribe");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->value.u.bytes.data, "S");
  hd_results_free(rs);

  hd_handler_unref(up);
  hd_handler_unref(sub);
  hd_handler_unref(s);
}

static void test_stream_unknown_event_yields_no_result(void **state) {
  hd_handler *s, *up = sayer("U");
  hd_event no_name = {.key = "k"};
  hd_results *rs;

  (void)state;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_int_equal(hd_stream_route(s, "update", up), HD_OK);
  hd_log_set_level(HD_LOG_DEBUG); /* exercise the debug line too */
  rs = run(s, "unsubscribe");
  hd_log_set_level(HD_LOG_INFO);
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
  rs = NULL;
  assert_int_equal(hd_handler_run_sync(s, &no_name, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
  hd_handler_unref(up);
  hd_handler_unref(s);
}

static void test_stream_holds_a_reference_on_routes(void **state) {
  hd_handler *s, *up = sayer("U");
  hd_results *rs;

  (void)state;
  destroyed = 0;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_int_equal(hd_stream_route(s, "update", up), HD_OK);
  hd_handler_unref(up); /* the stream's reference keeps it */
  assert_int_equal(destroyed, 0);
  rs = run(s, "update");
  assert_string_equal(hd_results_at(rs, 0)->value.u.bytes.data, "U");
  hd_results_free(rs);
  hd_handler_unref(s);
  assert_int_equal(destroyed, 1);
}

static void test_stream_route_replaces_existing_route(void **state) {
  hd_handler *s, *old = sayer("old"), *new = sayer("new");
  hd_results *rs;

  (void)state;
  destroyed = 0;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_int_equal(hd_stream_route(s, "update", old), HD_OK);
  hd_handler_unref(old);
  assert_int_equal(hd_stream_route(s, "update", new), HD_OK);
  assert_int_equal(destroyed, 1); /* the old route's reference dropped */
  rs = run(s, "update");
  assert_int_equal(hd_results_count(rs), 1);
  assert_string_equal(hd_results_at(rs, 0)->value.u.bytes.data, "new");
  hd_results_free(rs);
  hd_handler_unref(new);
  hd_handler_unref(s);
  assert_int_equal(destroyed, 2);
}

static void test_stream_remove_unknown_event_fails(void **state) {
  hd_handler *s, *up = sayer("U");
  hd_results *rs;

  (void)state;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_int_equal(hd_stream_route(s, "update", up), HD_OK);
  assert_int_equal(hd_handler_remove(s, "subscribe"), HD_ENOTFOUND);
  /* A member id is not a route name. */
  assert_int_equal(hd_handler_remove(s, hd_handler_id(up)), HD_ENOTFOUND);
  assert_int_equal(hd_handler_remove(s, "update"), HD_OK);
  assert_int_equal(hd_handler_remove(s, "update"), HD_ENOTFOUND);
  rs = run(s, "update");
  assert_int_equal(hd_results_count(rs), 0);
  hd_results_free(rs);
  hd_handler_unref(up);
  hd_handler_unref(s);
}

struct seen {
  char names[8][16];
  hd_handler *subs[8];
  int n;
};

static void collect(const char *name, hd_handler *sub, void *ud) {
  struct seen *seen = ud;

  strcpy(seen->names[seen->n], name);
  seen->subs[seen->n++] = sub;
}

static void test_stream_foreach_in_name_order(void **state) {
  hd_handler *s, *a = sayer("a"), *b = sayer("b"), *c = sayer("c");
  struct seen seen = {.n = 0};

  (void)state;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_int_equal(hd_stream_route(s, "update", a), HD_OK);
  assert_int_equal(hd_stream_route(s, "error", b), HD_OK);
  assert_int_equal(hd_stream_route(s, "subscribe", c), HD_OK);
  hd_stream_foreach(s, collect, &seen);
  assert_int_equal(seen.n, 3);
  assert_string_equal(seen.names[0], "error");
  assert_string_equal(seen.names[1], "subscribe");
  assert_string_equal(seen.names[2], "update");
  assert_ptr_equal(seen.subs[0], b);
  assert_ptr_equal(seen.subs[1], c);
  assert_ptr_equal(seen.subs[2], a);
  hd_handler_unref(a);
  hd_handler_unref(b);
  hd_handler_unref(c);
  hd_handler_unref(s);
}

static void test_stream_route_rejects_bad_arguments(void **state) {
  hd_handler *s, *plain = sayer("x");
  char too_long[HD_EVENT_NAME_MAX + 2];

  (void)state;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_int_equal(hd_stream_route(plain, "update", s), HD_EINVAL);
  assert_int_equal(hd_stream_route(s, "", plain), HD_EINVAL);
  assert_int_equal(hd_stream_route(s, NULL, plain), HD_EINVAL);
  assert_int_equal(hd_stream_route(s, "update", s), HD_EINVAL);
  memset(too_long, 'n', sizeof(too_long) - 1);
  too_long[sizeof(too_long) - 1] = '\0';
  assert_int_equal(hd_stream_route(s, too_long, plain), HD_EINVAL);
  hd_handler_unref(plain);
  hd_handler_unref(s);
}

static hd_err busy_handle(hd_handler *h, const hd_event *ev, hd_done_fn *done,
                          void *done_data) {
  (void)h;
  (void)ev;
  (void)done;
  (void)done_data;
  return HD_EBUSY;
}

static int busy_destroyed;
static void busy_destroy(hd_handler *h) {
  (void)h;
  busy_destroyed++;
}

static void test_stream_sub_handler_error_is_returned(void **state) {
  static const hd_handler_ops busy_ops = {
      .kind = "busy", .handle = busy_handle, .destroy = busy_destroy};
  hd_handler *s, *busy;
  hd_event ev = {.key = "k", .name = "update"};
  hd_results *rs = NULL;

  (void)state;
  busy_destroyed = 0;
  assert_int_equal(hd_stream_new(&s), HD_OK);
  assert_int_equal(hd_handler_new(&busy_ops, NULL, &busy), HD_OK);
  assert_int_equal(hd_stream_route(s, "update", busy), HD_OK);
  hd_handler_unref(busy);
  assert_int_equal(hd_handler_run_sync(s, &ev, &rs), HD_EBUSY);
  assert_null(rs);
  /* The reference taken for the call was given back. */
  hd_handler_unref(s);
  assert_int_equal(busy_destroyed, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stream_routes_event_to_its_sub_handler),
      cmocka_unit_test(test_stream_unknown_event_yields_no_result),
      cmocka_unit_test(test_stream_holds_a_reference_on_routes),
      cmocka_unit_test(test_stream_route_replaces_existing_route),
      cmocka_unit_test(test_stream_remove_unknown_event_fails),
      cmocka_unit_test(test_stream_foreach_in_name_order),
      cmocka_unit_test(test_stream_route_rejects_bad_arguments),
      cmocka_unit_test(test_stream_sub_handler_error_is_returned),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
