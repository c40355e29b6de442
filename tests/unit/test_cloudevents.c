/*
 * CloudEvents bodies: attributes, data, time format, ids.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cloudevents.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* 2026-11-25T15:21:14.123456789Z */
#define T_NS (1795620074LL * 1000000000LL + 123456789LL)
#define T_TEXT "2026-11-25T15:21:14.123456Z"

static const hd_ce_meta meta = {
    .id = "0b9c5a1e-8f3d-4c7a-9e21-3f4d5c6b7a80",
    .source = "//handlerd/test/keys/k1",
    .time_ns = T_NS,
};

static hd_value json_value(const char *text) {
  hd_value v = {.type = HD_VALUE_JSON};
  v.u.bytes.data = text;
  v.u.bytes.len = strlen(text);
  return v;
}

/* Parses hd_ce_structured(ev) and checks everything the event does not
 * decide; returns the object for the caller to check the rest. */
static json_t *structured(const hd_event *ev) {
  char *text = hd_ce_structured(ev, &meta);
  assert_non_null(text);
  json_error_t e;
  json_t *ce = json_loads(text, 0, &e);
  if (!ce)
    fail_msg("not JSON (%s): %s", e.text, text);
  free(text);
  assert_true(json_is_object(ce));
  assert_string_equal(json_string_value(json_object_get(ce, "specversion")),
                      "1.0");
  assert_string_equal(json_string_value(json_object_get(ce, "id")), meta.id);
  assert_string_equal(json_string_value(json_object_get(ce, "source")),
                      meta.source);
  assert_string_equal(json_string_value(json_object_get(ce, "time")), T_TEXT);
  assert_string_equal(json_string_value(json_object_get(ce, "datacontenttype")),
                      "application/json");
  return ce;
}

/* Asserts ce.data is an object equal to hd_event_to_json(ev). */
static void assert_data_is_event_json(json_t *ce, const hd_event *ev) {
  json_t *data = json_object_get(ce, "data");
  assert_true(json_is_object(data)); /* embedded, not a string */
  char *text = hd_event_to_json(ev);
  assert_non_null(text);
  json_t *want = json_loads(text, 0, NULL);
  assert_non_null(want);
  if (!json_equal(data, want)) {
    char *got = json_dumps(data, JSON_COMPACT);
    fail_msg("data %s\nwant %s", got, text);
  }
  json_decref(want);
  free(text);
}

static void assert_keys(json_t *ce, size_t n) {
  if (json_object_size(ce) != n) {
    char *got = json_dumps(ce, JSON_COMPACT);
    fail_msg("want %zu attributes: %s", n, got);
  }
}

static void test_update_event_attributes(void **state) {
  (void)state;
  hd_event ev = {.key = "k1", .name = "update", .args_kind = HD_ARGS_UPDATE};
  ev.topic.path = "a/b/c";
  ev.topic.value = json_value("{\"x\":1}");
  ev.topic.old_value = json_value("{\"x\":0}");

  json_t *ce = structured(&ev);
  assert_string_equal(json_string_value(json_object_get(ce, "type")),
                      "handlers.v1.update");
  assert_string_equal(json_string_value(json_object_get(ce, "subject")),
                      "a/b/c");
  assert_data_is_event_json(ce, &ev);
  /* the topic value stays JSON inside data, too */
  json_t *x = json_object_get(
      json_object_get(
          json_object_get(json_object_get(ce, "data"), "topicValue"),
          "jsonValue"),
      "x");
  assert_int_equal(json_integer_value(x), 1);
  assert_keys(ce, 8);
  json_decref(ce);
}

static void test_subscribe_event_attributes(void **state) {
  (void)state;
  hd_event ev = {
      .key = "k1", .name = "subscribe", .args_kind = HD_ARGS_SUBSCRIBE};
  ev.topic.path = "prices/EURUSD";
  ev.topic.has_spec = 1;
  ev.topic.type = HD_TOPIC_STRING;

  json_t *ce = structured(&ev);
  assert_string_equal(json_string_value(json_object_get(ce, "type")),
                      "handlers.v1.subscribe");
  assert_string_equal(json_string_value(json_object_get(ce, "subject")),
                      "prices/EURUSD");
  assert_data_is_event_json(ce, &ev);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(ce, "data"), "key")),
      "k1");
  assert_keys(ce, 8);
  json_decref(ce);
}

static void test_error_event_has_no_subject(void **state) {
  (void)state;
  hd_event ev = {.key = "k1", .name = "error", .args_kind = HD_ARGS_ERROR};
  ev.error.code = 3;
  ev.error.description = "session closed";

  json_t *ce = structured(&ev);
  assert_string_equal(json_string_value(json_object_get(ce, "type")),
                      "handlers.v1.error");
  assert_null(json_object_get(ce, "subject"));
  assert_data_is_event_json(ce, &ev);
  assert_int_equal(
      json_integer_value(json_object_get(json_object_get(ce, "data"), "code")),
      3);
  assert_keys(ce, 7);
  json_decref(ce);
}

static void test_response_event_subject_is_response_path(void **state) {
  (void)state;
  hd_event ev = {
      .key = "k1", .name = "response", .args_kind = HD_ARGS_RESPONSE};
  ev.response.conversation_id = "c1";
  ev.response.path = "requests/r1";

  json_t *ce = structured(&ev);
  assert_string_equal(json_string_value(json_object_get(ce, "subject")),
                      "requests/r1");
  json_decref(ce);

  ev.response.path = NULL;
  ce = structured(&ev);
  assert_null(json_object_get(ce, "subject"));
  json_decref(ce);
}

static void test_subject_repairs_invalid_utf8(void **state) {
  (void)state;
  hd_event ev = {.key = "k1", .name = "update", .args_kind = HD_ARGS_UPDATE};
  ev.topic.path = "a/\xff";

  json_t *ce = structured(&ev);
  assert_string_equal(json_string_value(json_object_get(ce, "subject")),
                      "a/\xEF\xBF\xBD");
  json_decref(ce);
}

static void test_binary_data_is_event_json(void **state) {
  (void)state;
  hd_event ev = {.key = "k1", .name = "update", .args_kind = HD_ARGS_UPDATE};
  ev.topic.path = "a/b";
  char *got = hd_ce_binary_data(&ev);
  char *want = hd_event_to_json(&ev);
  assert_non_null(got);
  assert_non_null(want);
  assert_string_equal(got, want);
  json_t *j = json_loads(got, 0, NULL);
  assert_true(json_is_object(j));
  assert_null(json_object_get(j, "specversion"));
  json_decref(j);
  free(got);
  free(want);
}

static void test_type_is_prefixed_event_name(void **state) {
  (void)state;
  hd_event ev = {.key = "k1", .name = "my_custom"};
  char buf[64];
  hd_ce_type(&ev, buf, sizeof buf);
  assert_string_equal(buf, "handlers.v1.my_custom");
  hd_ce_type(&ev, buf, 8);
  assert_string_equal(buf, "handler"); /* truncated, still terminated */
}

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ", digits where digits go. */
static void assert_rfc3339_us(const char *s) {
  const char *shape = "dddd-dd-ddTdd:dd:dd.ddddddZ";
  if (strlen(s) != strlen(shape))
    fail_msg("bad length: %s", s);
  for (size_t i = 0; shape[i]; i++) {
    int ok = shape[i] == 'd' ? isdigit((unsigned char)s[i]) : s[i] == shape[i];
    if (!ok)
      fail_msg("bad time %s at %zu", s, i);
  }
}

static void test_time_is_rfc3339_utc_with_microseconds(void **state) {
  (void)state;
  char buf[40];
  hd_ce_time(T_NS, buf, sizeof buf);
  assert_string_equal(buf, T_TEXT);
  assert_rfc3339_us(buf);
  hd_ce_time(0, buf, sizeof buf);
  assert_string_equal(buf, "1970-01-01T00:00:00.000000Z");
  hd_ce_time(-1, buf, sizeof buf); /* floors, not truncates */
  assert_string_equal(buf, "1969-12-31T23:59:59.999999Z");
  hd_ce_time(1000, buf, sizeof buf);
  assert_string_equal(buf, "1970-01-01T00:00:00.000001Z");
}

static void assert_uuid_v4(const char *s) {
  if (strlen(s) != 36)
    fail_msg("bad length: %s", s);
  for (size_t i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        fail_msg("no dash at %zu: %s", i, s);
    } else if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
      fail_msg("not lowercase hex at %zu: %s", i, s);
  }
  if (s[14] != '4')
    fail_msg("not version 4: %s", s);
  if (!strchr("89ab", s[19]))
    fail_msg("not the RFC 4122 variant: %s", s);
}

static void test_new_ids_are_uuid_v4_and_unique(void **state) {
  (void)state;
  enum { N = 256 };
  char(*ids)[37] = calloc(N, 37);
  assert_non_null(ids);
  for (int i = 0; i < N; i++) {
    memset(ids[i], 'x', 37);
    hd_ce_new_id(ids[i]);
    assert_uuid_v4(ids[i]);
    for (int j = 0; j < i; j++)
      if (strcmp(ids[i], ids[j]) == 0)
        fail_msg("duplicate id %s", ids[i]);
  }
  free(ids);
}

/* ---- the HTTP binding ------------------------------------------------------
 */

static void test_subject_is_the_path_or_none(void **state) {
  hd_event ev = {.key = "k", .name = "update", .args_kind = HD_ARGS_UPDATE};
  (void)state;
  assert_null(hd_ce_subject(&ev)); /* NULL path */
  ev.topic.path = "";
  assert_null(hd_ce_subject(&ev));
  ev.topic.path = "a/b";
  assert_string_equal(hd_ce_subject(&ev), "a/b");
  ev.args_kind = HD_ARGS_RESPONSE;
  ev.response.path = "r/p";
  assert_string_equal(hd_ce_subject(&ev), "r/p");
  ev.args_kind = HD_ARGS_ERROR;
  assert_null(hd_ce_subject(&ev));
}

static void test_source_percent_encodes_what_a_path_cannot_hold(void **state) {
  (void)state;
  char *s = hd_ce_source("in st", "a/b?c%");
  assert_non_null(s);
  assert_string_equal(s, "//handlerd/in%20st/keys/a/b%3Fc%25");
  free(s);
}

static void test_body_and_content_type_follow_the_mode(void **state) {
  hd_event ev = {.key = "k", .name = "close"};
  hd_ce_meta meta = {"id-1", "//handlerd/x/keys/k", 0};
  (void)state;
  char *structured = hd_ce_body(&ev, &meta, 0);
  char *binary = hd_ce_body(&ev, &meta, 1);
  char *data = hd_event_to_json(&ev);
  assert_non_null(structured);
  assert_non_null(strstr(structured, "\"specversion\":\"1.0\""));
  assert_string_equal(binary, data);
  assert_string_equal(hd_ce_content_type_line(0),
                      "content-type: application/cloudevents+json");
  assert_string_equal(hd_ce_content_type_line(1),
                      "content-type: application/json");
  free(structured);
  free(binary);
  free(data);
}

static void test_binary_headers_carry_the_attributes(void **state) {
  hd_event ev = {.key = "k", .name = "update", .args_kind = HD_ARGS_UPDATE};
  hd_ce_meta meta = {"id-1", "//handlerd/x/keys/k", 0};
  char *h[HD_CE_BINARY_HEADERS_MAX];
  (void)state;

  ev.topic.path = "a b\"%";
  size_t n = hd_ce_binary_headers(&ev, &meta, h);
  assert_int_equal(n, 6);
  assert_string_equal(h[0], "ce-specversion: 1.0");
  assert_string_equal(h[1], "ce-id: id-1");
  assert_string_equal(h[2], "ce-source: //handlerd/x/keys/k");
  assert_string_equal(h[3], "ce-type: handlers.v1.update");
  assert_string_equal(h[4], "ce-subject: a%20b%22%25");
  assert_string_equal(h[5], "ce-time: 1970-01-01T00:00:00.000000Z");
  for (size_t i = 0; i < n; i++)
    free(h[i]);
  ev.topic.path = NULL; /* no subject, no header */
  n = hd_ce_binary_headers(&ev, &meta, h);
  assert_int_equal(n, 5);
  for (size_t i = 0; i < n; i++) {
    assert_null(strstr(h[i], "ce-subject"));
    free(h[i]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_update_event_attributes),
      cmocka_unit_test(test_subscribe_event_attributes),
      cmocka_unit_test(test_error_event_has_no_subject),
      cmocka_unit_test(test_response_event_subject_is_response_path),
      cmocka_unit_test(test_subject_repairs_invalid_utf8),
      cmocka_unit_test(test_binary_data_is_event_json),
      cmocka_unit_test(test_type_is_prefixed_event_name),
      cmocka_unit_test(test_time_is_rfc3339_utc_with_microseconds),
      cmocka_unit_test(test_new_ids_are_uuid_v4_and_unique),
      cmocka_unit_test(test_subject_is_the_path_or_none),
      cmocka_unit_test(test_source_percent_encodes_what_a_path_cannot_hold),
      cmocka_unit_test(test_body_and_content_type_follow_the_mode),
      cmocka_unit_test(test_binary_headers_carry_the_attributes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
