/*
 * Events: expected args, validation, copies, the JSON mapping.
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

static hd_event topic_event(const char *name, hd_args_kind kind,
                            const char *path) {
  hd_event ev = {0};
  ev.key = "k";
  ev.name = name;
  ev.args_kind = kind;
  ev.topic.path = path;
  return ev;
}

static hd_value json_value(const char *text) {
  hd_value v = {.type = HD_VALUE_JSON};
  v.u.bytes.data = text;
  v.u.bytes.len = strlen(text);
  return v;
}

/* Asserts that validation fails with exactly `want` as the message. */
static void assert_invalid(const hd_event *ev, const char *want) {
  char msg[256] = "untouched";
  assert_int_equal(hd_event_validate(ev, msg, sizeof msg), HD_EINVAL);
  assert_string_equal(msg, want);
}

static void assert_valid(const hd_event *ev) {
  char msg[256] = "";
  hd_err err = hd_event_validate(ev, msg, sizeof msg);
  if (err != HD_OK)
    fail_msg("unexpectedly invalid: %s", msg);
}

/* Asserts that the event's JSON parses and equals the JSON `want`. */
static void assert_json(const hd_event *ev, const char *want) {
  char *text = hd_event_to_json(ev);
  assert_non_null(text);
  json_error_t e;
  json_t *got = json_loads(text, 0, &e);
  json_t *exp = json_loads(want, 0, &e);
  assert_non_null(got);
  assert_non_null(exp);
  if (!json_equal(got, exp))
    fail_msg("got %s\nwant %s", text, want);
  json_decref(got);
  json_decref(exp);
  free(text);
}

/* ---- expected args ------------------------------------------------------ */

static void test_expected_args_of_known_names(void **state) {
  (void)state;
  static const struct {
    const char *name;
    hd_args_kind kind;
  } cases[] = {
      {"subscribe", HD_ARGS_SUBSCRIBE}, {"close", HD_ARGS_SUBSCRIBE},
      {"update", HD_ARGS_UPDATE},       {"unsubscribe", HD_ARGS_UNSUBSCRIBE},
      {"error", HD_ARGS_ERROR},         {"response", HD_ARGS_RESPONSE}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int known = 0;
    assert_int_equal(hd_event_expected_args(cases[i].name, &known),
                     cases[i].kind);
    assert_int_equal(known, 1);
  }
}

static void
test_expected_args_of_custom_name_is_none_and_unknown(void **state) {
  (void)state;
  int known = 1;
  assert_int_equal(hd_event_expected_args("price_alert", &known), HD_ARGS_NONE);
  assert_int_equal(known, 0);
  known = 1;
  assert_int_equal(hd_event_expected_args("Update", &known), HD_ARGS_NONE);
  assert_int_equal(known, 0);
}

/* ---- validation -------------------------------------------------------- */

static void test_validate_accepts_well_formed_events(void **state) {
  (void)state;
  hd_event ev = topic_event("update", HD_ARGS_UPDATE, "prices/eur");
  ev.topic.value = json_value("{\"bid\":1.5}");
  ev.topic.old_value = json_value("null");
  assert_valid(&ev);

  hd_event err = {.key = "k", .name = "error", .args_kind = HD_ARGS_ERROR};
  assert_valid(&err);
}

static void test_validate_rejects_empty_key(void **state) {
  (void)state;
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "a");
  ev.key = "";
  assert_invalid(&ev, "key is empty");
  ev.key = NULL;
  assert_invalid(&ev, "key is empty");
}

static void test_validate_rejects_key_over_limit(void **state) {
  (void)state;
  char key[HD_KEY_MAX + 2];
  memset(key, 'k', sizeof key - 1);
  key[sizeof key - 1] = '\0';
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "a");
  ev.key = key;
  assert_invalid(&ev, "key is 257 bytes, the limit is 256");
  key[HD_KEY_MAX] = '\0'; /* exactly the limit is fine */
  assert_valid(&ev);
}

static void test_validate_rejects_empty_and_long_event_name(void **state) {
  (void)state;
  hd_event ev = {.key = "k", .name = ""};
  assert_invalid(&ev, "event name is empty");
  char name[HD_EVENT_NAME_MAX + 2];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  ev.name = name;
  assert_invalid(&ev, "event name is 129 bytes, the limit is 128");
}

static void test_validate_rejects_empty_topic_path(void **state) {
  (void)state;
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "");
  assert_invalid(&ev, "topic_path is empty");
  ev.topic.path = NULL;
  assert_invalid(&ev, "topic_path is empty");
}

static void test_validate_rejects_topic_path_over_limit(void **state) {
  (void)state;
  char *path = malloc(70001);
  memset(path, 'p', 70000);
  path[70000] = '\0';
  hd_event ev = topic_event("unsubscribe", HD_ARGS_UNSUBSCRIBE, path);
  assert_invalid(&ev, "topic_path is 70000 bytes, the limit is 65536");
  path[HD_TOPIC_PATH_MAX] = '\0';
  assert_valid(&ev);
  free(path);
}

static void test_validate_rejects_known_event_with_other_args(void **state) {
  (void)state;
  hd_event ev = topic_event("update", HD_ARGS_SUBSCRIBE, "a");
  assert_invalid(&ev, "event 'update' takes update args, got subscribe args");
  ev = topic_event("close", HD_ARGS_UNSUBSCRIBE, "a");
  assert_invalid(&ev,
                 "event 'close' takes subscribe args, got unsubscribe args");
  ev = (hd_event){.key = "k", .name = "error", .args_kind = HD_ARGS_RESPONSE};
  assert_invalid(&ev, "event 'error' takes error args, got response args");
}

static void test_validate_rejects_known_event_without_args(void **state) {
  (void)state;
  hd_event ev = {.key = "k", .name = "update", .args_kind = HD_ARGS_NONE};
  assert_invalid(&ev, "event 'update' takes update args, got no args");
}

static void test_validate_accepts_custom_event_with_any_args(void **state) {
  (void)state;
  hd_event ev = {.key = "k", .name = "my_event"};
  assert_valid(&ev);
  ev.args_kind = HD_ARGS_ERROR;
  assert_valid(&ev);
  ev = topic_event("my_event", HD_ARGS_UPDATE, "a");
  assert_valid(&ev);
  /* ...but the args themselves are still checked. */
  ev.topic.path = "";
  assert_invalid(&ev, "topic_path is empty");
}

static void test_validate_rejects_topic_value_that_is_not_json(void **state) {
  (void)state;
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "a");
  ev.topic.value = json_value("{\"a\":");
  char msg[256];
  assert_int_equal(hd_event_validate(&ev, msg, sizeof msg), HD_EINVAL);
  assert_true(strncmp(msg, "topic_value is not valid JSON: ",
                      strlen("topic_value is not valid JSON: ")) == 0);
  assert_true(strlen(msg) > strlen("topic_value is not valid JSON: "));
}

static void test_validate_accepts_json_scalars(void **state) {
  (void)state;
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "a");
  ev.topic.value = json_value("42");
  assert_valid(&ev);
  ev.topic.value = json_value("\"text\"");
  assert_valid(&ev);
}

static void
test_validate_rejects_old_value_and_response_not_json(void **state) {
  (void)state;
  hd_event ev = topic_event("update", HD_ARGS_UPDATE, "a");
  ev.topic.value = json_value("1");
  ev.topic.old_value = json_value("nope");
  char msg[256];
  assert_int_equal(hd_event_validate(&ev, msg, sizeof msg), HD_EINVAL);
  assert_non_null(strstr(msg, "old_value is not valid JSON: "));

  hd_event r = {.key = "k", .name = "response", .args_kind = HD_ARGS_RESPONSE};
  r.response.response = json_value("[1,");
  assert_int_equal(hd_event_validate(&r, msg, sizeof msg), HD_EINVAL);
  assert_non_null(strstr(msg, "response is not valid JSON: "));
}

static void test_validate_rejects_bad_unsubscribe_reason(void **state) {
  (void)state;
  hd_event ev = topic_event("unsubscribe", HD_ARGS_UNSUBSCRIBE, "a");
  ev.topic.reason = HD_UNSUB_BRANCH_MAPPINGS;
  assert_valid(&ev);
  ev.topic.reason = (hd_unsubscribe_reason)7;
  assert_invalid(&ev, "reason 7 is not an unsubscribe reason (0 to 6)");
  ev.topic.reason = (hd_unsubscribe_reason)-1;
  assert_invalid(&ev, "reason -1 is not an unsubscribe reason (0 to 6)");
}

static void test_validate_rejects_invalid_utf8(void **state) {
  (void)state;
  hd_event ev =
      topic_event("update", HD_ARGS_UPDATE, "caf\xc3\xa9/\xe2\x82\xac");
  assert_valid(&ev); /* well-formed 2- and 3-byte sequences */
  ev.topic.path = "a/\xff";
  assert_invalid(&ev, "topic_path is not valid UTF-8");
  ev.topic.path = "a/\xc0\xaf"; /* overlong "/" */
  assert_invalid(&ev, "topic_path is not valid UTF-8");
  ev.topic.path = "a/\xed\xa0\x80"; /* a surrogate */
  assert_invalid(&ev, "topic_path is not valid UTF-8");
  ev.topic.path = "a/\xe2\x82"; /* truncated */
  assert_invalid(&ev, "topic_path is not valid UTF-8");
  ev.topic.path = "a";
  ev.key = "k\x80";
  assert_invalid(&ev, "key is not valid UTF-8");
  ev.key = "k";
  ev.topic.value.type = HD_VALUE_STRING;
  ev.topic.value.u.bytes.data = "\xf4\x90\x80\x80"; /* > U+10FFFF */
  ev.topic.value.u.bytes.len = 4;
  assert_invalid(&ev, "topic_value is not valid UTF-8");
}

static void test_validate_accepts_null_message_buffer(void **state) {
  (void)state;
  hd_event ev = {.key = "", .name = "x"};
  assert_int_equal(hd_event_validate(&ev, NULL, 0), HD_EINVAL);
}

/* ---- copies ------------------------------------------------------------ */

static void test_copy_survives_changes_to_the_original(void **state) {
  (void)state;
  char key[] = "key1", name[] = "update", path[] = "a/b";
  char val[] = "{\"x\":1}", old[] = "[2]";
  char pn[] = "PERSISTENT", pv[] = "true";
  hd_property *props = malloc(sizeof *props);
  props[0] = (hd_property){pn, pv};

  hd_event ev = topic_event(name, HD_ARGS_UPDATE, path);
  ev.key = key;
  ev.topic.value = json_value(val);
  ev.topic.old_value = json_value(old);
  ev.topic.has_spec = 1;
  ev.topic.type = HD_TOPIC_JSON;
  ev.topic.properties = props;
  ev.topic.n_properties = 1;
  ev.deadline_ns = 12345;

  hd_event *c = hd_event_copy(&ev);
  assert_non_null(c);
  memset(key, 'X', 4);
  memset(path, 'X', 3);
  memset(val, 'X', 7);
  memset(old, 'X', 3);
  memset(pn, 'X', 10);
  memset(pv, 'X', 4);
  name[0] = 'X';
  free(props);

  assert_string_equal(c->key, "key1");
  assert_string_equal(c->name, "update");
  assert_int_equal(c->args_kind, HD_ARGS_UPDATE);
  assert_string_equal(c->topic.path, "a/b");
  assert_int_equal(c->topic.value.type, HD_VALUE_JSON);
  assert_int_equal(c->topic.value.u.bytes.len, 7);
  assert_memory_equal(c->topic.value.u.bytes.data, "{\"x\":1}", 7);
  assert_int_equal(c->topic.value.u.bytes.data[7], '\0');
  assert_string_equal(c->topic.old_value.u.bytes.data, "[2]");
  assert_int_equal(c->topic.has_spec, 1);
  assert_int_equal(c->topic.type, HD_TOPIC_JSON);
  assert_int_equal(c->topic.n_properties, 1);
  assert_string_equal(c->topic.properties[0].name, "PERSISTENT");
  assert_string_equal(c->topic.properties[0].value, "true");
  assert_int_equal(c->deadline_ns, 12345);
  assert_int_equal(hd_event_validate(c, NULL, 0), HD_OK);
  hd_event_free(c);
}

static void test_copy_keeps_binary_bytes_with_nuls(void **state) {
  (void)state;
  unsigned char bytes[] = {0, 1, 2, 0, 255};
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "p");
  ev.topic.value.type = HD_VALUE_BINARY;
  ev.topic.value.u.bytes.data = (const char *)bytes;
  ev.topic.value.u.bytes.len = sizeof bytes;
  hd_event *c = hd_event_copy(&ev);
  assert_non_null(c);
  bytes[1] = 9;
  assert_int_equal(c->topic.value.u.bytes.len, 5);
  assert_memory_equal(c->topic.value.u.bytes.data, "\0\1\2\0\377", 5);
  hd_event_free(c);
}

static void test_copy_of_response_and_error_events(void **state) {
  (void)state;
  char conv[] = "c-1", desc[] = "boom";
  hd_event r = {.key = "k", .name = "response", .args_kind = HD_ARGS_RESPONSE};
  r.response.conversation_id = conv;
  r.response.sender_session_id = "s-1";
  r.response.path = "p";
  r.response.expected = 3;
  r.response.received = 2;
  r.response.response.type = HD_VALUE_INT64;
  r.response.response.u.i64 = -7;
  hd_event *c = hd_event_copy(&r);
  assert_non_null(c);
  conv[0] = 'X';
  assert_string_equal(c->response.conversation_id, "c-1");
  assert_string_equal(c->response.sender_session_id, "s-1");
  assert_string_equal(c->response.path, "p");
  assert_int_equal(c->response.expected, 3);
  assert_int_equal(c->response.received, 2);
  assert_int_equal(c->response.response.u.i64, -7);
  hd_event_free(c);

  hd_event e = {.key = "k", .name = "error", .args_kind = HD_ARGS_ERROR};
  e.error.code = 42;
  e.error.description = desc;
  c = hd_event_copy(&e);
  assert_non_null(c);
  desc[0] = 'X';
  assert_int_equal(c->error.code, 42);
  assert_string_equal(c->error.description, "boom");
  hd_event_free(c);
}

/* ---- JSON -------------------------------------------------------------- */

static void test_json_of_event_without_args(void **state) {
  (void)state;
  hd_event ev = {.key = "k", .name = "ping"};
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"ping\"}");
}

static void test_json_of_subscribe_with_spec_and_json_value(void **state) {
  (void)state;
  hd_property props[] = {{"PERSISTENT", "true"}, {"OWNER", "me"}};
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "a/b");
  ev.topic.value = json_value("{\"bid\":1,\"l\":[true,null]}");
  ev.topic.has_spec = 1;
  ev.topic.type = HD_TOPIC_JSON;
  ev.topic.properties = props;
  ev.topic.n_properties = 2;
  assert_json(&ev,
              "{\"key\":\"k\",\"event\":\"subscribe\",\"topicPath\":"
              "\"a/b\",\"topicValue\":{\"jsonValue\":{\"bid\":1,\"l\":"
              "[true,null]}},\"topicSpec\":{\"type\":\"JSON\","
              "\"properties\":{\"PERSISTENT\":\"true\",\"OWNER\":\"me\"}}}");
}

static void test_json_omits_absent_value_and_spec(void **state) {
  (void)state;
  hd_event ev = topic_event("close", HD_ARGS_SUBSCRIBE, "a");
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"close\",\"topicPath\":\"a\"}");
}

static void test_json_of_update_with_int64_as_string(void **state) {
  (void)state;
  hd_event ev = topic_event("update", HD_ARGS_UPDATE, "n");
  ev.topic.value.type = HD_VALUE_INT64;
  ev.topic.value.u.i64 = INT64_MAX;
  ev.topic.old_value.type = HD_VALUE_INT64;
  ev.topic.old_value.u.i64 = -123;
  ev.topic.has_spec = 1;
  ev.topic.type = HD_TOPIC_INT64;
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"update\",\"topicPath\":\"n\","
                   "\"topicValue\":{\"int64Value\":\"9223372036854775807\"},"
                   "\"topicSpec\":{\"type\":\"INT64\",\"properties\":{}},"
                   "\"oldValue\":{\"int64Value\":\"-123\"}}");
}

static void test_json_of_update_with_string_and_double(void **state) {
  (void)state;
  hd_event ev = topic_event("update", HD_ARGS_UPDATE, "s");
  ev.topic.value.type = HD_VALUE_STRING;
  ev.topic.value.u.bytes.data = "h\"i";
  ev.topic.value.u.bytes.len = 3;
  ev.topic.old_value.type = HD_VALUE_DOUBLE;
  ev.topic.old_value.u.f64 = 1.5;
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"update\",\"topicPath\":\"s\","
                   "\"topicValue\":{\"stringValue\":\"h\\\"i\"},"
                   "\"oldValue\":{\"doubleValue\":1.5}}");
}

static void test_json_of_binary_and_record_is_base64(void **state) {
  (void)state;
  hd_event ev = topic_event("unsubscribe", HD_ARGS_UNSUBSCRIBE, "b");
  ev.topic.value.type = HD_VALUE_BINARY;
  ev.topic.value.u.bytes.data = "\0\1\2\3\4";
  ev.topic.value.u.bytes.len = 5;
  ev.topic.reason = HD_UNSUB_REMOVAL;
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"unsubscribe\",\"topicPath\":"
                   "\"b\",\"topicValue\":{\"binaryValue\":\"AAECAwQ=\"},"
                   "\"reason\":\"REMOVAL\"}");

  ev.topic.value.type = HD_VALUE_RECORD_V2;
  ev.topic.value.u.bytes.data = "foobar";
  ev.topic.value.u.bytes.len = 6;
  ev.topic.reason = HD_UNSUB_REQUESTED;
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"unsubscribe\",\"topicPath\":"
                   "\"b\",\"topicValue\":{\"recordV2Value\":\"Zm9vYmFy\"},"
                   "\"reason\":\"REQUESTED\"}");

  ev.topic.value.u.bytes.data = "fo";
  ev.topic.value.u.bytes.len = 2;
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"unsubscribe\",\"topicPath\":"
                   "\"b\",\"topicValue\":{\"recordV2Value\":\"Zm8=\"},"
                   "\"reason\":\"REQUESTED\"}");
}

static void test_json_of_error_event(void **state) {
  (void)state;
  hd_event ev = {.key = "k", .name = "error", .args_kind = HD_ARGS_ERROR};
  ev.error.code = 13;
  ev.error.description = "stream broke";
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"error\",\"code\":13,"
                   "\"description\":\"stream broke\"}");
}

static void test_json_of_response_event(void **state) {
  (void)state;
  hd_event ev = {.key = "k", .name = "response", .args_kind = HD_ARGS_RESPONSE};
  ev.response.conversation_id = "c1";
  ev.response.sender_session_id = "s1";
  ev.response.path = "req/p";
  ev.response.expected = 4;
  ev.response.received = 1;
  ev.response.response = json_value("\"ok\"");
  assert_json(&ev, "{\"key\":\"k\",\"event\":\"response\",\"conversationId\":"
                   "\"c1\",\"senderSessionId\":\"s1\",\"path\":\"req/p\","
                   "\"expected\":4,\"received\":1,\"response\":{\"jsonValue\":"
                   "\"ok\"}}");
}

static void test_json_is_compact_single_line(void **state) {
  (void)state;
  hd_event ev = topic_event("subscribe", HD_ARGS_SUBSCRIBE, "a");
  ev.topic.value = json_value("{ \"a\" : [ 1 , 2 ] }");
  char *text = hd_event_to_json(&ev);
  assert_non_null(text);
  assert_string_equal(text, "{\"key\":\"k\",\"event\":\"subscribe\","
                            "\"topicPath\":\"a\",\"topicValue\":{"
                            "\"jsonValue\":{\"a\":[1,2]}}}");
  free(text);
}

static void test_json_repairs_invalid_utf8(void **state) {
  (void)state;
  hd_event ev = {.key = "k\xff", .name = "e"};
  assert_json(&ev, "{\"key\":\"k\\ufffd\",\"event\":\"e\"}");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_expected_args_of_known_names),
      cmocka_unit_test(test_expected_args_of_custom_name_is_none_and_unknown),
      cmocka_unit_test(test_validate_accepts_well_formed_events),
      cmocka_unit_test(test_validate_rejects_empty_key),
      cmocka_unit_test(test_validate_rejects_key_over_limit),
      cmocka_unit_test(test_validate_rejects_empty_and_long_event_name),
      cmocka_unit_test(test_validate_rejects_empty_topic_path),
      cmocka_unit_test(test_validate_rejects_topic_path_over_limit),
      cmocka_unit_test(test_validate_rejects_known_event_with_other_args),
      cmocka_unit_test(test_validate_rejects_known_event_without_args),
      cmocka_unit_test(test_validate_accepts_custom_event_with_any_args),
      cmocka_unit_test(test_validate_rejects_topic_value_that_is_not_json),
      cmocka_unit_test(test_validate_accepts_json_scalars),
      cmocka_unit_test(test_validate_rejects_old_value_and_response_not_json),
      cmocka_unit_test(test_validate_rejects_bad_unsubscribe_reason),
      cmocka_unit_test(test_validate_rejects_invalid_utf8),
      cmocka_unit_test(test_validate_accepts_null_message_buffer),
      cmocka_unit_test(test_copy_survives_changes_to_the_original),
      cmocka_unit_test(test_copy_keeps_binary_bytes_with_nuls),
      cmocka_unit_test(test_copy_of_response_and_error_events),
      cmocka_unit_test(test_json_of_event_without_args),
      cmocka_unit_test(test_json_of_subscribe_with_spec_and_json_value),
      cmocka_unit_test(test_json_omits_absent_value_and_spec),
      cmocka_unit_test(test_json_of_update_with_int64_as_string),
      cmocka_unit_test(test_json_of_update_with_string_and_double),
      cmocka_unit_test(test_json_of_binary_and_record_is_base64),
      cmocka_unit_test(test_json_of_error_event),
      cmocka_unit_test(test_json_of_response_event),
      cmocka_unit_test(test_json_is_compact_single_line),
      cmocka_unit_test(test_json_repairs_invalid_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
