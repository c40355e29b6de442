/*
 * Built-in functions: log, count, last_value, echo, run through the handlers
 * hd_functions_make_handler() makes, as the daemon does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "handlerd/handlerd.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
  hd_functions *fns;
  char log_path[64];
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  strcpy(f->log_path, "/tmp/hd_test_builtins_XXXXXX");
  int fd = mkstemp(f->log_path);
  if (fd < 0)
    return -1;
  close(fd);
  if (hd_functions_new(&f->fns) != HD_OK ||
      hd_builtins_register(f->fns, f->log_path) != HD_OK)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  hd_functions_free(f->fns);
  unlink(f->log_path);
  free(f);
  return 0;
}

static hd_handler *make(void **state, const char *name) {
  struct fixture *f = *state;
  hd_handler *h = NULL;
  assert_int_equal(hd_functions_make_handler(f->fns, name, &h), HD_OK);
  assert_non_null(h);
  return h;
}

/* Runs `h` on `ev`; returns its single, successful result's list. */
static hd_results *run(hd_handler *h, const hd_event *ev) {
  hd_results *rs = NULL;
  assert_int_equal(hd_handler_run_sync(h, ev, &rs), HD_OK);
  assert_int_equal(hd_results_count(rs), 1);
  hd_result *r = hd_results_at(rs, 0);
  if (r->err != HD_OK)
    fail_msg("handler failed: %s", r->message ? r->message : "?");
  return rs;
}

static int64_t run_count(hd_handler *h, const char *key, const char *name) {
  hd_event ev = {.key = key, .name = name};
  hd_results *rs = run(h, &ev);
  hd_result *r = hd_results_at(rs, 0);
  assert_int_equal(r->value.type, HD_VALUE_INT64);
  int64_t n = r->value.u.i64;
  hd_results_free(rs);
  return n;
}

static void test_builtins_are_registered(void **state) {
  const char *names[] = {"count", "echo", "last_value", "log"};
  for (size_t i = 0; i < 4; i++)
    hd_handler_unref(make(state, names[i]));
}

static void test_register_twice_fails_with_eexist(void **state) {
  struct fixture *f = *state;
  assert_int_equal(hd_builtins_register(f->fns, NULL), HD_EEXIST);
}

static void test_register_with_unwritable_log_path_fails(void **state) {
  (void)state;
  hd_functions *fns;
  assert_int_equal(hd_functions_new(&fns), HD_OK);
  assert_int_equal(hd_builtins_register(fns, "/nonexistent/dir/x.log"), HD_EIO);
  hd_functions_free(fns);
}

static void test_count_increments_per_key_and_event(void **state) {
  hd_handler *h = make(state, "count");
  assert_int_equal(run_count(h, "k1", "update"), 1);
  assert_int_equal(run_count(h, "k1", "update"), 2);
  assert_int_equal(run_count(h, "k1", "subscribe"), 1);
  assert_int_equal(run_count(h, "k2", "update"), 1);
  /* Names of the same length count apart too. */
  assert_int_equal(run_count(h, "k1", "close"), 1);
  assert_int_equal(run_count(h, "k1", "error"), 1);
  assert_int_equal(run_count(h, "k1", "update"), 3);
  /* "ab"+"c" and "a"+"bc" are different pairs. */
  assert_int_equal(run_count(h, "ab", "c"), 1);
  assert_int_equal(run_count(h, "a", "bc"), 1);
  hd_handler_unref(h);
}

static void test_count_is_per_handler(void **state) {
  hd_handler *a = make(state, "count");
  hd_handler *b = make(state, "count");
  assert_int_equal(run_count(a, "k", "e"), 1);
  assert_int_equal(run_count(a, "k", "e"), 2);
  assert_int_equal(run_count(b, "k", "e"), 1);
  hd_handler_unref(a);
  hd_handler_unref(b);
}

static hd_event update(const char *path, const char *json) {
  hd_event ev = {.key = "k", .name = "update", .args_kind = HD_ARGS_UPDATE};
  ev.topic.path = path;
  if (json) {
    ev.topic.value.type = HD_VALUE_JSON;
    ev.topic.value.u.bytes.data = json;
    ev.topic.value.u.bytes.len = strlen(json);
  }
  return ev;
}

/* The JSON text of the last_value result for `ev`, or NULL for NONE. The
 * caller frees. */
static char *run_last_value(hd_handler *h, const hd_event *ev) {
  hd_results *rs = run(h, ev);
  hd_result *r = hd_results_at(rs, 0);
  char *text = NULL;
  if (r->value.type != HD_VALUE_NONE) {
    assert_int_equal(r->value.type, HD_VALUE_JSON);
    text = strndup(r->value.u.bytes.data, r->value.u.bytes.len);
  }
  hd_results_free(rs);
  return text;
}

static void assert_last_value(hd_handler *h, const hd_event *ev,
                              const char *want) {
  char *got = run_last_value(h, ev);
  if (want) {
    assert_non_null(got);
    assert_string_equal(got, want);
  } else {
    assert_null(got);
  }
  free(got);
}

static void test_last_value_keeps_the_last_value_per_path(void **state) {
  hd_handler *h = make(state, "last_value");
  hd_event ev = update("a", "1");
  assert_last_value(h, &ev, "1");
  ev = update("b", "\"x\"");
  assert_last_value(h, &ev, "\"x\"");
  ev = update("a", "2");
  assert_last_value(h, &ev, "2");

  /* An event without a value returns what is stored for its path. */
  hd_event sub = {
      .key = "k", .name = "subscribe", .args_kind = HD_ARGS_SUBSCRIBE};
  sub.topic.path = "a";
  assert_last_value(h, &sub, "2");
  sub.topic.path = "b";
  assert_last_value(h, &sub, "\"x\"");
  sub.topic.path = "never";
  assert_last_value(h, &sub, NULL);
  hd_handler_unref(h);
}

static void test_last_value_owns_its_copy(void **state) {
  hd_handler *h = make(state, "last_value");
  char json[] = "[1,2]";
  hd_event ev = update("p", json);
  assert_last_value(h, &ev, "[1,2]");
  memcpy(json, "[9,9]", 5);
  hd_event sub = {
      .key = "k", .name = "subscribe", .args_kind = HD_ARGS_SUBSCRIBE};
  sub.topic.path = "p";
  assert_last_value(h, &sub, "[1,2]");
  hd_handler_unref(h);
}

static void test_last_value_is_none_without_topic_args(void **state) {
  hd_handler *h = make(state, "last_value");
  hd_event ev = update("p", "1");
  assert_last_value(h, &ev, "1");
  hd_event err = {.key = "k", .name = "error", .args_kind = HD_ARGS_ERROR};
  assert_last_value(h, &err, NULL);
  hd_handler_unref(h);
}

static void test_last_value_is_per_handler(void **state) {
  hd_handler *a = make(state, "last_value");
  hd_handler *b = make(state, "last_value");
  hd_event ev = update("p", "1");
  assert_last_value(a, &ev, "1");
  hd_event sub = {
      .key = "k", .name = "subscribe", .args_kind = HD_ARGS_SUBSCRIBE};
  sub.topic.path = "p";
  assert_last_value(b, &sub, NULL);
  hd_handler_unref(a);
  hd_handler_unref(b);
}

static void test_echo_returns_the_event_json(void **state) {
  hd_handler *h = make(state, "echo");
  hd_event ev = update("a/b", "{\"v\":3}");
  hd_results *rs = run(h, &ev);
  hd_result *r = hd_results_at(rs, 0);
  assert_int_equal(r->value.type, HD_VALUE_JSON);

  json_t *got =
      json_loadb(r->value.u.bytes.data, r->value.u.bytes.len, 0, NULL);
  json_t *want = json_loads("{\"key\":\"k\",\"event\":\"update\",\"topicPath\":"
                            "\"a/b\",\"topicValue\":{\"jsonValue\":{\"v\":3}}}",
                            0, NULL);
  assert_non_null(got);
  assert_true(json_equal(got, want));
  json_decref(got);
  json_decref(want);
  hd_results_free(rs);
  hd_handler_unref(h);
}

static void test_log_writes_one_json_line_per_event(void **state) {
  struct fixture *f = *state;
  hd_handler *h = make(state, "log");
  hd_event a = update("p", "1");
  hd_event b = {.key = "k2", .name = "ping"};
  hd_results *rs = run(h, &a);
  assert_int_equal(hd_results_at(rs, 0)->value.type, HD_VALUE_NONE);
  hd_results_free(rs);
  hd_results_free(run(h, &b));
  hd_handler_unref(h);

  /* Written and flushed already: read it back while the table is open. */
  FILE *in = fopen(f->log_path, "r");
  assert_non_null(in);
  char line[512];
  const char *want[] = {
      "{\"key\":\"k\",\"event\":\"update\",\"topicPath\":\"p\","
      "\"topicValue\":{\"jsonValue\":1}}",
      "{\"key\":\"k2\",\"event\":\"ping\"}"};
  size_t n = 0;
  while (fgets(line, sizeof line, in)) {
    assert_true(n < 2);
    size_t len = strlen(line);
    assert_true(len > 0 && line[len - 1] == '\n');
    line[len - 1] = '\0';
    json_t *got = json_loads(line, 0, NULL);
    json_t *exp = json_loads(want[n], 0, NULL);
    assert_non_null(got);
    assert_true(json_equal(got, exp));
    json_decref(got);
    json_decref(exp);
    n++;
  }
  assert_int_equal(n, 2);
  fclose(in);
}

static void test_log_appends_to_an_existing_file(void **state) {
  struct fixture *f = *state;
  /* Replace the fixture's table with one opened on a file that has data. */
  hd_functions_free(f->fns);
  FILE *out = fopen(f->log_path, "w");
  assert_non_null(out);
  fputs("old\n", out);
  fclose(out);
  assert_int_equal(hd_functions_new(&f->fns), HD_OK);
  assert_int_equal(hd_builtins_register(f->fns, f->log_path), HD_OK);

  hd_handler *h = make(state, "log");
  hd_event ev = {.key = "k", .name = "x"};
  hd_results_free(run(h, &ev));
  hd_handler_unref(h);

  FILE *in = fopen(f->log_path, "r");
  char buf[256] = "";
  size_t n = fread(buf, 1, sizeof buf - 1, in);
  fclose(in);
  buf[n] = '\0';
  assert_string_equal(buf, "old\n{\"key\":\"k\",\"event\":\"x\"}\n");
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_builtins_are_registered),
      T(test_register_twice_fails_with_eexist),
      cmocka_unit_test(test_register_with_unwritable_log_path_fails),
      T(test_count_increments_per_key_and_event),
      T(test_count_is_per_handler),
      T(test_last_value_keeps_the_last_value_per_path),
      T(test_last_value_owns_its_copy),
      T(test_last_value_is_none_without_topic_args),
      T(test_last_value_is_per_handler),
      T(test_echo_returns_the_event_json),
      T(test_log_writes_one_json_line_per_event),
      T(test_log_appends_to_an_existing_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
