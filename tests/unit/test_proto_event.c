/*
 * Unit tests: conversions between the wire messages and hd_event /
 * hd_results (proto_event.c). Requests are built and packed with the
 * protobuf-c generated API, then decoded as the server does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto_event.h"

/* ---- fixture: one arena per test ----------------------------------------- */

static int setup(void **state) {
  *state = hd_arena_new(256);
  return *state ? 0 : -1;
}

static int teardown(void **state) {
  hd_arena_free(*state);
  return 0;
}

/* Packs `req` into a malloc'd buffer; `*len` gets its size. */
static uint8_t *pack(const Handlers__V1__DispatchRequest *req, size_t *len) {
  *len = handlers__v1__dispatch_request__get_packed_size(req);
  uint8_t *buf = malloc(*len ? *len : 1);
  assert_non_null(buf);
  assert_int_equal(handlers__v1__dispatch_request__pack(req, buf), *len);
  return buf;
}

/* Packs `req`, decodes the bytes into the arena and converts them to `ev`,
 * as the server does. The packed bytes are freed (and scribbled over)
 * before the conversion, so `ev` must borrow only from the arena. Returns
 * hd_proto_to_event's result; `msg` gets its message. */
static hd_err roundtrip(hd_arena *a, const Handlers__V1__DispatchRequest *req,
                        hd_event *ev, char *msg, size_t msg_size) {
  size_t len;
  uint8_t *buf = pack(req, &len);
  Handlers__V1__DispatchRequest *got = NULL;

  assert_int_equal(hd_proto_decode_dispatch(a, buf, len, &got, msg, msg_size),
                   HD_OK);
  memset(buf, 0xA5, len);
  free(buf);
  assert_non_null(got);
  msg[0] = '\0';
  return hd_proto_to_event(a, got, ev, msg, msg_size);
}

/* ---- a request builder ----------------------------------------------------
 */

/* A DispatchRequest with room for every args case, its values and spec, and
 * what decoding it gives back. */
typedef struct {
  Handlers__V1__DispatchRequest req;
  Handlers__V1__SubHandlerArgs sub;
  Handlers__V1__UpdateArgs up;
  Handlers__V1__UnsubscribeArgs un;
  Handlers__V1__ErrorArgs er;
  Handlers__V1__FilterResponseArgs rs;
  Handlers__V1__TopicValue value;
  Handlers__V1__TopicValue old;
  Handlers__V1__TopicSpecification spec;
  hd_event ev;
  char msg[256];
} request;

/* Starts `r` as event `event` under key "k" with args case `args` (its args
 * message, left empty, is r->sub, r->up, r->un, r->er or r->rs). */
static void request_init(request *r, const char *event,
                         Handlers__V1__DispatchRequest__ArgsCase args) {
  static const Handlers__V1__DispatchRequest req =
      HANDLERS__V1__DISPATCH_REQUEST__INIT;
  static const Handlers__V1__SubHandlerArgs sub =
      HANDLERS__V1__SUB_HANDLER_ARGS__INIT;
  static const Handlers__V1__UpdateArgs up = HANDLERS__V1__UPDATE_ARGS__INIT;
  static const Handlers__V1__UnsubscribeArgs un =
      HANDLERS__V1__UNSUBSCRIBE_ARGS__INIT;
  static const Handlers__V1__ErrorArgs er = HANDLERS__V1__ERROR_ARGS__INIT;
  static const Handlers__V1__FilterResponseArgs rs =
      HANDLERS__V1__FILTER_RESPONSE_ARGS__INIT;
  static const Handlers__V1__TopicValue tv = HANDLERS__V1__TOPIC_VALUE__INIT;
  static const Handlers__V1__TopicSpecification spec =
      HANDLERS__V1__TOPIC_SPECIFICATION__INIT;

  memset(r, 0, sizeof(*r));
  r->req = req;
  r->sub = sub;
  r->up = up;
  r->un = un;
  r->er = er;
  r->rs = rs;
  r->value = tv;
  r->old = tv;
  r->spec = spec;
  r->req.key = "k";
  r->req.event = (char *)event;
  r->req.args_case = args;
  switch (args) {
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_SUBSCRIBE:
    r->req.subscribe = &r->sub;
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_UPDATE:
    r->req.update = &r->up;
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_UNSUBSCRIBE:
    r->req.unsubscribe = &r->un;
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_ERROR:
    r->req.error = &r->er;
    break;
  case HANDLERS__V1__DISPATCH_REQUEST__ARGS_RESPONSE:
    r->req.response = &r->rs;
    break;
  default:
    break;
  }
}

/* Round-trips r->req into r->ev and r->msg; returns hd_proto_to_event's
 * result. */
static hd_err decode(hd_arena *a, request *r) {
  return roundtrip(a, &r->req, &r->ev, r->msg, sizeof(r->msg));
}

#define ARGS(c) HANDLERS__V1__DISPATCH_REQUEST__ARGS_##c
#define VALUE(c) HANDLERS__V1__TOPIC_VALUE__VALUE_##c

/* Sets `tv` to a string-like value (string, JSON) and returns it. */
static Handlers__V1__TopicValue *
text_value(Handlers__V1__TopicValue *tv, Handlers__V1__TopicValue__ValueCase c,
           const char *s) {
  tv->value_case = c;
  if (c == VALUE(JSON_VALUE))
    tv->json_value = (char *)s;
  else
    tv->string_value = (char *)s;
  return tv;
}

/* Sets `tv` to a bytes value (binary, record v2) and returns it. */
static Handlers__V1__TopicValue *
bytes_value(Handlers__V1__TopicValue *tv, Handlers__V1__TopicValue__ValueCase c,
            const uint8_t *data, size_t len) {
  ProtobufCBinaryData b = {len, (uint8_t *)data};

  tv->value_case = c;
  if (c == VALUE(BINARY_VALUE))
    tv->binary_value = b;
  else
    tv->record_v2_value = b;
  return tv;
}

static Handlers__V1__TopicValue *int64_value(Handlers__V1__TopicValue *tv,
                                             int64_t v) {
  tv->value_case = VALUE(INT64_VALUE);
  tv->int64_value = v;
  return tv;
}

/* A bad byte string must be refused by the decoder with a message naming the
 * message type. */
static void assert_undecodable(hd_arena *a, const void *bytes, size_t len) {
  Handlers__V1__DispatchRequest *got = (void *)1;
  char msg[256] = "";

  assert_int_equal(
      hd_proto_decode_dispatch(a, bytes, len, &got, msg, sizeof(msg)),
      HD_EINVAL);
  assert_null(got);
  assert_non_null(strstr(msg, "DispatchRequest"));
}

static void assert_text_value(const hd_value *v, hd_value_type type,
                              const char *text) {
  assert_int_equal(v->type, type);
  assert_non_null(v->u.bytes.data);
  assert_int_equal(v->u.bytes.len, strlen(text));
  assert_string_equal(v->u.bytes.data, text);
}

static void assert_bytes_value(const hd_value *v, hd_value_type type,
                               const uint8_t *data, size_t len) {
  assert_int_equal(v->type, type);
  assert_int_equal(v->u.bytes.len, len);
  assert_memory_equal(v->u.bytes.data, data, len);
}

/* ---- args cases -----------------------------------------------------------
 */

static void test_subscribe_maps_path_json_value_and_spec(void **state) {
  Handlers__V1__TopicSpecification__PropertiesEntry p1 =
      HANDLERS__V1__TOPIC_SPECIFICATION__PROPERTIES_ENTRY__INIT;
  Handlers__V1__TopicSpecification__PropertiesEntry p2 =
      HANDLERS__V1__TOPIC_SPECIFICATION__PROPERTIES_ENTRY__INIT;
  Handlers__V1__TopicSpecification__PropertiesEntry *props[] = {&p1, &p2};
  request r;

  request_init(&r, "subscribe", ARGS(SUBSCRIBE));
  p1.key = "PERSISTENT";
  p1.value = "true";
  p2.key = "TIDY_ON_UNSUBSCRIBE";
  p2.value = "false";
  r.spec.type = HANDLERS__V1__TOPIC_TYPE__JSON;
  r.spec.n_properties = 2;
  r.spec.properties = props;
  r.sub.topic_path = "prices/eur";
  r.sub.topic_value =
      text_value(&r.value, VALUE(JSON_VALUE), "{\"price\": 1.5}");
  r.sub.topic_spec = &r.spec;
  r.req.key = "k1";

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_string_equal(r.ev.key, "k1");
  assert_string_equal(r.ev.name, "subscribe");
  assert_int_equal(r.ev.args_kind, HD_ARGS_SUBSCRIBE);
  assert_string_equal(r.ev.topic.path, "prices/eur");
  assert_text_value(&r.ev.topic.value, HD_VALUE_JSON, "{\"price\": 1.5}");
  assert_int_equal(r.ev.topic.has_spec, 1);
  assert_int_equal(r.ev.topic.type, HD_TOPIC_JSON);
  assert_int_equal(r.ev.topic.n_properties, 2);
  assert_non_null(r.ev.topic.properties);
  assert_string_equal(r.ev.topic.properties[0].name, "PERSISTENT");
  assert_string_equal(r.ev.topic.properties[0].value, "true");
  assert_string_equal(r.ev.topic.properties[1].name, "TIDY_ON_UNSUBSCRIBE");
  assert_string_equal(r.ev.topic.properties[1].value, "false");
  assert_int_equal(r.ev.topic.old_value.type, HD_VALUE_NONE);
  assert_int_equal(r.ev.deadline_ns, 0);
}

static void
test_close_takes_subscribe_args_without_value_or_spec(void **state) {
  request r;

  request_init(&r, "close", ARGS(SUBSCRIBE));
  r.sub.topic_path = "a/b";

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.args_kind, HD_ARGS_SUBSCRIBE);
  assert_string_equal(r.ev.name, "close");
  assert_string_equal(r.ev.topic.path, "a/b");
  assert_int_equal(r.ev.topic.value.type, HD_VALUE_NONE);
  assert_int_equal(r.ev.topic.has_spec, 0);
  assert_int_equal(r.ev.topic.n_properties, 0);
  assert_null(r.ev.topic.properties);
}

static void test_update_with_old_value_maps_both_values(void **state) {
  request r;

  request_init(&r, "update", ARGS(UPDATE));
  r.spec.type = HANDLERS__V1__TOPIC_TYPE__INT64;
  r.up.topic_path = "counters/x";
  r.up.topic_value = int64_value(&r.value, INT64_MIN);
  r.up.old_value = int64_value(&r.old, 9000000000LL);
  r.up.topic_spec = &r.spec;

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.args_kind, HD_ARGS_UPDATE);
  assert_string_equal(r.ev.topic.path, "counters/x");
  assert_int_equal(r.ev.topic.value.type, HD_VALUE_INT64);
  assert_true(r.ev.topic.value.u.i64 == INT64_MIN);
  assert_int_equal(r.ev.topic.old_value.type, HD_VALUE_INT64);
  assert_true(r.ev.topic.old_value.u.i64 == 9000000000LL);
  assert_int_equal(r.ev.topic.has_spec, 1);
  assert_int_equal(r.ev.topic.type, HD_TOPIC_INT64);
  assert_int_equal(r.ev.topic.n_properties, 0);
}

static void test_update_without_old_value_has_none(void **state) {
  request r;

  request_init(&r, "update", ARGS(UPDATE));
  r.value.value_case = VALUE(DOUBLE_VALUE);
  r.value.double_value = -2.25;
  r.up.topic_path = "d";
  r.up.topic_value = &r.value;

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.topic.value.type, HD_VALUE_DOUBLE);
  assert_true(r.ev.topic.value.u.f64 == -2.25);
  assert_int_equal(r.ev.topic.old_value.type, HD_VALUE_NONE);
  assert_int_equal(r.ev.topic.has_spec, 0);
}

static void
test_update_string_and_binary_values_keep_their_bytes(void **state) {
  static const uint8_t bin[] = {0x00, 'a', 0x00, 0x00, 0xFF, 'z', 0x00};
  request r;

  request_init(&r, "update", ARGS(UPDATE));
  r.up.topic_path = "bin";
  r.up.topic_value =
      bytes_value(&r.value, VALUE(BINARY_VALUE), bin, sizeof(bin));
  r.up.old_value = text_value(&r.old, VALUE(STRING_VALUE), "caf\xc3\xa9");

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_bytes_value(&r.ev.topic.value, HD_VALUE_BINARY, bin, sizeof(bin));
  assert_text_value(&r.ev.topic.old_value, HD_VALUE_STRING, "caf\xc3\xa9");
}

static void test_record_v2_value_keeps_its_bytes(void **state) {
  static const uint8_t rec[] = {0x01, 0x00, 0x02, 0x80};
  request r;

  request_init(&r, "subscribe", ARGS(SUBSCRIBE));
  r.spec.type = HANDLERS__V1__TOPIC_TYPE__RECORD_V2;
  r.sub.topic_path = "r";
  r.sub.topic_value =
      bytes_value(&r.value, VALUE(RECORD_V2_VALUE), rec, sizeof(rec));
  r.sub.topic_spec = &r.spec;

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_bytes_value(&r.ev.topic.value, HD_VALUE_RECORD_V2, rec, sizeof(rec));
  assert_int_equal(r.ev.topic.type, HD_TOPIC_RECORD_V2);
}

static void test_unsubscribe_maps_reason(void **state) {
  request r;

  request_init(&r, "unsubscribe", ARGS(UNSUBSCRIBE));
  r.un.topic_path = "t/u";
  r.un.topic_value = text_value(&r.value, VALUE(STRING_VALUE), "last");
  r.un.reason = HANDLERS__V1__UNSUBSCRIBE_REASON__BACK_PRESSURE;

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.args_kind, HD_ARGS_UNSUBSCRIBE);
  assert_string_equal(r.ev.topic.path, "t/u");
  assert_text_value(&r.ev.topic.value, HD_VALUE_STRING, "last");
  assert_int_equal(r.ev.topic.reason, HD_UNSUB_BACK_PRESSURE);
}

static void test_unsubscribe_unknown_reason_is_einval(void **state) {
  request r;

  request_init(&r, "unsubscribe", ARGS(UNSUBSCRIBE));
  r.un.topic_path = "t";
  r.un.reason = (Handlers__V1__UnsubscribeReason)9; /* open enum on the wire */

  assert_int_equal(decode(*state, &r), HD_EINVAL);
  assert_non_null(strstr(r.msg, "reason"));
}

static void test_error_maps_code_and_description(void **state) {
  request r;

  request_init(&r, "error", ARGS(ERROR));
  r.er.code = -17;
  r.er.description = "stream broke";

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.args_kind, HD_ARGS_ERROR);
  assert_int_equal(r.ev.error.code, -17);
  assert_string_equal(r.ev.error.description, "stream broke");
  assert_null(r.ev.topic.path);
}

static void test_response_maps_every_field(void **state) {
  request r;

  request_init(&r, "response", ARGS(RESPONSE));
  r.rs.conversation_id = "conv-1";
  r.rs.sender_session_id = "sess-2";
  r.rs.path = "filter/path";
  r.rs.expected = 5;
  r.rs.received = 3;
  r.rs.response = text_value(&r.value, VALUE(JSON_VALUE), "[1,2]");

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.args_kind, HD_ARGS_RESPONSE);
  assert_string_equal(r.ev.response.conversation_id, "conv-1");
  assert_string_equal(r.ev.response.sender_session_id, "sess-2");
  assert_string_equal(r.ev.response.path, "filter/path");
  assert_int_equal(r.ev.response.expected, 5);
  assert_int_equal(r.ev.response.received, 3);
  assert_text_value(&r.ev.response.response, HD_VALUE_JSON, "[1,2]");
}

static void test_response_without_value_has_none(void **state) {
  request r;

  request_init(&r, "response", ARGS(RESPONSE));
  r.rs.conversation_id = "c";

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.response.response.type, HD_VALUE_NONE);
}

static void test_custom_event_without_args_is_none(void **state) {
  request r;

  request_init(&r, "price-alert", ARGS(_NOT_SET));

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_string_equal(r.ev.name, "price-alert");
  assert_int_equal(r.ev.args_kind, HD_ARGS_NONE);
  assert_null(r.ev.topic.path);
  assert_int_equal(r.ev.topic.value.type, HD_VALUE_NONE);
}

static void test_custom_event_may_carry_update_args(void **state) {
  request r;

  request_init(&r, "my-update", ARGS(UPDATE));
  r.up.topic_path = "p";

  assert_int_equal(decode(*state, &r), HD_OK);
  assert_int_equal(r.ev.args_kind, HD_ARGS_UPDATE);
  assert_string_equal(r.ev.topic.path, "p");
}

/* ---- invalid requests -----------------------------------------------------
 */

static void test_topic_value_without_case_is_einval(void **state) {
  request r;

  request_init(&r, "subscribe", ARGS(SUBSCRIBE));
  r.sub.topic_path = "p";
  r.sub.topic_value = &r.value; /* present on the wire, no oneof case */

  assert_int_equal(decode(*state, &r), HD_EINVAL);
  assert_string_equal(r.msg, "topic_value is present but has no value set");
}

static void test_old_value_without_case_is_einval(void **state) {
  request r;

  request_init(&r, "update", ARGS(UPDATE));
  r.up.topic_path = "p";
  r.up.old_value = &r.old;

  assert_int_equal(decode(*state, &r), HD_EINVAL);
  assert_string_equal(r.msg, "old_value is present but has no value set");
}

static void test_response_value_without_case_is_einval(void **state) {
  request r;

  request_init(&r, "response", ARGS(RESPONSE));
  r.rs.response = &r.value;

  assert_int_equal(decode(*state, &r), HD_EINVAL);
  assert_string_equal(r.msg, "response is present but has no value set");
}

static void test_update_event_with_subscribe_args_is_einval(void **state) {
  request r;

  request_init(&r, "update", ARGS(SUBSCRIBE));
  r.sub.topic_path = "p";

  assert_int_equal(decode(*state, &r), HD_EINVAL);
  assert_non_null(strstr(r.msg, "update"));
}

static void test_invalid_json_value_is_einval(void **state) {
  request r;

  request_init(&r, "subscribe", ARGS(SUBSCRIBE));
  r.sub.topic_path = "p";
  r.sub.topic_value = text_value(&r.value, VALUE(JSON_VALUE), "{not json");

  assert_int_equal(decode(*state, &r), HD_EINVAL);
  assert_non_null(strstr(r.msg, "topic_value"));
}

static void test_empty_bytes_decode_but_missing_key_is_einval(void **state) {
  Handlers__V1__DispatchRequest *got = NULL;
  hd_event ev;
  char msg[256] = "";

  /* Zero bytes are a valid, empty proto3 message... */
  assert_int_equal(
      hd_proto_decode_dispatch(*state, "", 0, &got, msg, sizeof(msg)), HD_OK);
  assert_non_null(got);
  /* ...which the contract refuses: the key is required. */
  assert_int_equal(hd_proto_to_event(*state, got, &ev, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_non_null(strstr(msg, "key"));
}

static void test_truncated_message_is_einval(void **state) {
  request r;
  size_t len;

  request_init(&r, "update", ARGS(UPDATE));
  r.up.topic_path = "some/topic";
  r.up.topic_value =
      text_value(&r.value, VALUE(STRING_VALUE), "a value long enough to cut");
  r.req.key = "key";
  uint8_t *buf = pack(&r.req, &len);

  /* Every cut inside the nested update (field 4, the last one) breaks a
   * length prefix. */
  for (size_t cut = len - 1; cut > 13; cut--)
    assert_undecodable(*state, buf, cut);
  free(buf);
}

static void test_invalid_wire_type_is_einval(void **state) {
  /* Field 1 with wire type 7 (no such type). */
  static const uint8_t bad[] = {0x0F, 0x01, 0x02};
  /* Field 1 as a deprecated start-group (wire type 3). */
  static const uint8_t group[] = {0x0B, 0x0C};

  assert_undecodable(*state, bad, sizeof(bad));
  assert_undecodable(*state, group, sizeof(group));
}

static void test_length_prefix_past_the_end_is_einval(void **state) {
  /* key (field 1, length-delimited) claims 16 bytes, 2 follow. */
  static const uint8_t bad[] = {0x0A, 0x10, 'a', 'b'};
  /* A length varint that never ends. */
  static const uint8_t endless[] = {0x0A, 0xFF, 0xFF, 0xFF};

  assert_undecodable(*state, bad, sizeof(bad));
  assert_undecodable(*state, endless, sizeof(endless));
}

static void test_garbage_is_einval(void **state) {
  static const uint8_t garbage[] = {0xDE, 0xAD, 0xBE, 0xEF, 0x00,
                                    0x13, 0x37, 0xC0, 0xFF, 0xEE};
  uint8_t rnd[64];
  uint32_t x = 2463534242u; /* xorshift32: the same bytes every run */

  assert_undecodable(*state, garbage, sizeof(garbage));
  /* Whatever random bytes decode to, nothing crashes (the sanitizers
   * watch), and a failure always comes with the message. */
  for (int round = 0; round < 500; round++) {
    for (size_t i = 0; i < sizeof(rnd); i++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      rnd[i] = (uint8_t)x;
    }
    Handlers__V1__DispatchRequest *got = NULL;
    hd_event ev;
    char msg[256] = "";
    size_t len = 1 + x % sizeof(rnd);
    if (hd_proto_decode_dispatch(*state, rnd, len, &got, msg, sizeof(msg)) ==
        HD_OK) {
      assert_non_null(got);
      (void)hd_proto_to_event(*state, got, &ev, msg, sizeof(msg));
    } else {
      assert_null(got);
      /* Not a message at all, or a string field that is not UTF-8 or
       * holds a NUL (hd_proto_check_strings names the field). */
      if (!strstr(msg, "DispatchRequest") && !strstr(msg, "UTF-8") &&
          !strstr(msg, "NUL byte"))
        fail_msg("refused with \"%s\"", msg);
    }
  }
}

static void test_to_value_null_is_none_and_caseless_is_einval(void **state) {
  Handlers__V1__TopicValue empty = HANDLERS__V1__TOPIC_VALUE__INIT;
  hd_value v;

  (void)state;
  memset(&v, 0xFF, sizeof(v));
  assert_int_equal(hd_proto_to_value(NULL, &v), HD_OK);
  assert_int_equal(v.type, HD_VALUE_NONE);
  assert_int_equal(hd_proto_to_value(&empty, &v), HD_EINVAL);
}

/* ---- results --------------------------------------------------------------
 */

static hd_result *append(hd_results *rs, const char *id) {
  hd_result *r = hd_results_append(rs);

  assert_non_null(r);
  snprintf(r->handler_id, sizeof(r->handler_id), "%s", id);
  return r;
}

static void test_from_results_roundtrips_through_dispatch_reply(void **state) {
  hd_arena *a = *state;
  hd_results *rs = hd_results_new();
  hd_result *r;

  assert_non_null(rs);
  r = append(rs, "h-000000000001"); /* ok, int64 value */
  hd_result_set_int64(r, -42);
  r->duration_ns = 1234;
  r = append(rs, "h-000000000002"); /* timed out webhook */
  hd_result_set_error(r, HD_ETIMEOUT, "gave up after %d tries", 3);
  r->http_status = 504;
  r->attempts = 3;
  r->duration_ns = 99;
  r = append(rs, "h-000000000003"); /* I/O failure, no message */
  r->err = HD_EIO;
  r = append(rs, "h-000000000004"); /* explicit code kept */
  hd_result_set_error(r, HD_EHANDLER, "denied");
  r->grpc_code = 7;
  r = append(rs, "h-000000000005"); /* ok, no value */
  r = append(rs, "h-000000000006"); /* ok, truncated string */
  assert_int_equal(hd_result_set_string(r, "cut"), HD_OK);
  r->truncated = 1;

  Handlers__V1__DispatchReply reply = HANDLERS__V1__DISPATCH_REPLY__INIT;
  assert_int_equal(
      hd_proto_from_results(a, rs, &reply.results, &reply.n_results), HD_OK);
  assert_int_equal(reply.n_results, 6);
  size_t len = handlers__v1__dispatch_reply__get_packed_size(&reply);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  handlers__v1__dispatch_reply__pack(&reply, buf);
  hd_results_free(rs); /* the unpacked copy must stand alone */
  Handlers__V1__DispatchReply *got =
      handlers__v1__dispatch_reply__unpack(NULL, len, buf);
  free(buf);
  assert_non_null(got);
  assert_int_equal(got->n_results, 6);

  Handlers__V1__HandlerResult **res = got->results;
  assert_string_equal(res[0]->handler_id, "h-000000000001");
  assert_true(res[0]->ok);
  assert_null(res[0]->error);
  assert_non_null(res[0]->value);
  assert_int_equal(res[0]->value->value_case,
                   HANDLERS__V1__TOPIC_VALUE__VALUE_INT64_VALUE);
  assert_true(res[0]->value->int64_value == -42);
  assert_int_equal(res[0]->duration_ns, 1234);
  assert_false(res[0]->truncated);

  assert_string_equal(res[1]->handler_id, "h-000000000002");
  assert_false(res[1]->ok);
  assert_non_null(res[1]->error);
  assert_int_equal(res[1]->error->code, 4); /* DEADLINE_EXCEEDED */
  assert_string_equal(res[1]->error->message, "gave up after 3 tries");
  assert_int_equal(res[1]->error->http_status, 504);
  assert_int_equal(res[1]->error->attempts, 3);
  assert_int_equal(res[1]->duration_ns, 99);
  assert_null(res[1]->value);

  assert_false(res[2]->ok);
  assert_int_equal(res[2]->error->code, 14); /* UNAVAILABLE */
  assert_string_equal(res[2]->error->message, hd_strerror(HD_EIO));
  assert_int_equal(res[2]->error->http_status, 0);
  assert_int_equal(res[2]->error->attempts, 0);

  assert_false(res[3]->ok);
  assert_int_equal(res[3]->error->code, 7);
  assert_string_equal(res[3]->error->message, "denied");

  assert_string_equal(res[4]->handler_id, "h-000000000005");
  assert_true(res[4]->ok);
  assert_null(res[4]->error);
  assert_null(res[4]->value);

  assert_true(res[5]->ok);
  assert_true(res[5]->truncated);
  assert_int_equal(res[5]->value->value_case,
                   HANDLERS__V1__TOPIC_VALUE__VALUE_STRING_VALUE);
  assert_string_equal(res[5]->value->string_value, "cut");
  handlers__v1__dispatch_reply__free_unpacked(got, NULL);
}

static void test_from_results_maps_other_failures(void **state) {
  hd_results *rs = hd_results_new();
  Handlers__V1__HandlerResult **out = NULL;
  size_t n = 0;

  assert_non_null(rs);
  append(rs, "h-a")->err = HD_EINVAL;
  append(rs, "h-b")->err = HD_EHANDLER;
  append(rs, "h-c")->err = HD_ENOMEM;
  assert_int_equal(hd_proto_from_results(*state, rs, &out, &n), HD_OK);
  assert_int_equal(n, 3);
  assert_int_equal(out[0]->error->code, 3);  /* INVALID_ARGUMENT */
  assert_int_equal(out[1]->error->code, 13); /* INTERNAL */
  assert_int_equal(out[2]->error->code, 13);
  hd_results_free(rs);
}

static void test_from_results_empty_list_is_empty(void **state) {
  hd_results *rs = hd_results_new();
  Handlers__V1__HandlerResult **out = (void *)1;
  size_t n = 99;

  assert_non_null(rs);
  assert_int_equal(hd_proto_from_results(*state, rs, &out, &n), HD_OK);
  assert_null(out);
  assert_int_equal(n, 0);
  hd_results_free(rs);
}

static void test_status_of_every_error(void **state) {
  static const struct {
    hd_err err;
    int code;
  } want[] = {
      {HD_OK, 0},
      {HD_EINVAL, 3},
      {HD_ENOMEM, 8},
      {HD_ENOKEY, 5},
      {HD_ENOTFOUND, 5},
      {HD_EEXIST, 6},
      {HD_EUNSUPPORTED, 12},
      {HD_EHANDLER, 13},
      {HD_ETIMEOUT, 4},
      {HD_EIO, 14},
      {HD_EBUSY, 8},
      {HD_ELAST, 13},
  };

  (void)state;
  /* The table covers every code the enum has. */
  assert_int_equal(sizeof(want) / sizeof(want[0]), HD_ELAST + 1);
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    if (hd_proto_status_of(want[i].err) != want[i].code)
      fail_msg("%s: status %d, want %d", hd_strerror(want[i].err),
               hd_proto_status_of(want[i].err), want[i].code);
  }
}

/* ---- strings on the wire: UTF-8, no NUL ---------------------------------
 *
 * protobuf-c would hand "a\0b" over as "a". C strings cannot hold the NUL,
 * so requests are packed with '@' where the NUL goes and the '@' bytes are
 * replaced in the packed bytes (same length). */

/* Packs `req`, turns every '@' into a NUL and decodes the bytes as the
 * server does; returns the result, the message in `msg`. */
static hd_err decode_with_nuls(hd_arena *a,
                               const Handlers__V1__DispatchRequest *req,
                               char *msg, size_t msg_size) {
  size_t len;
  uint8_t *buf = pack(req, &len);
  Handlers__V1__DispatchRequest *got = (void *)1;
  for (size_t i = 0; i < len; i++)
    if (buf[i] == '@')
      buf[i] = '\0';
  msg[0] = '\0';
  hd_err err = hd_proto_decode_dispatch(a, buf, len, &got, msg, msg_size);
  if (err == HD_OK) {
    assert_non_null(got);
    hd_event ev;
    err = hd_proto_to_event(a, got, &ev, msg, msg_size);
  } else {
    assert_null(got);
  }
  free(buf);
  return err;
}

/* `req` must be refused with a message that contains `want`. */
static void assert_refused(hd_arena *a,
                           const Handlers__V1__DispatchRequest *req,
                           const char *want) {
  char msg[512];
  hd_err err = decode_with_nuls(a, req, msg, sizeof(msg));
  if (err != HD_EINVAL)
    fail_msg("accepted (%s), want a refusal saying \"%s\"", hd_strerror(err),
             want);
  if (!strstr(msg, want))
    fail_msg("message \"%s\" does not say \"%s\"", msg, want);
}

static void test_nul_in_string_value_is_refused_not_cut(void **state) {
  request r;
  request_init(&r, "update", ARGS(UPDATE));
  r.up.topic_path = "t";
  r.up.topic_value = text_value(&r.value, VALUE(STRING_VALUE), "a@b");
  assert_refused(*state, &r.req,
                 "update.topic_value.string_value contains a NUL byte (at "
                 "byte 1)");
  /* The same value without the NUL goes through. */
  char msg[256];
  r.up.topic_value = text_value(&r.value, VALUE(STRING_VALUE), "ab");
  assert_int_equal(decode_with_nuls(*state, &r.req, msg, sizeof(msg)), HD_OK);
}

static void test_nul_in_error_description_is_refused(void **state) {
  request r;
  request_init(&r, "error", ARGS(ERROR));
  r.er.code = 3;
  r.er.description = "x@y";
  assert_refused(*state, &r.req, "error.description contains a NUL byte");
}

static void test_nul_in_every_string_field_is_refused(void **state) {
  request r;
  Handlers__V1__TopicSpecification__PropertiesEntry p0 =
      HANDLERS__V1__TOPIC_SPECIFICATION__PROPERTIES_ENTRY__INIT;
  Handlers__V1__TopicSpecification__PropertiesEntry p1 = p0;
  Handlers__V1__TopicSpecification__PropertiesEntry *props[] = {&p0, &p1};

  request_init(&r, "n@me", ARGS(_NOT_SET));
  assert_refused(*state, &r.req, "event contains a NUL byte (at byte 1)");
  request_init(&r, "update", ARGS(UPDATE));
  r.req.key = "k@";
  assert_refused(*state, &r.req, "key contains a NUL byte");

  request_init(&r, "update", ARGS(UPDATE));
  r.up.topic_path = "a/@";
  assert_refused(*state, &r.req, "update.topic_path contains a NUL byte");
  r.up.topic_path = "a";
  r.up.topic_value = text_value(&r.value, VALUE(JSON_VALUE), "{}@junk");
  assert_refused(*state, &r.req,
                 "update.topic_value.json_value contains a NUL byte");
  r.up.topic_value = NULL;
  r.up.old_value = text_value(&r.old, VALUE(STRING_VALUE), "@");
  assert_refused(*state, &r.req,
                 "update.old_value.string_value contains a NUL byte");
  r.up.old_value = NULL;
  p0.key = "a";
  p0.value = "b";
  p1.key = "c";
  p1.value = "d@";
  r.spec.n_properties = 2;
  r.spec.properties = props;
  r.up.topic_spec = &r.spec;
  assert_refused(*state, &r.req,
                 "update.topic_spec.properties[1].value contains a NUL byte");

  request_init(&r, "subscribe", ARGS(SUBSCRIBE));
  r.sub.topic_path = "@";
  assert_refused(*state, &r.req, "subscribe.topic_path contains a NUL byte");
  request_init(&r, "unsubscribe", ARGS(UNSUBSCRIBE));
  r.un.topic_path = "@";
  assert_refused(*state, &r.req, "unsubscribe.topic_path contains a NUL");

  request_init(&r, "response", ARGS(RESPONSE));
  r.rs.conversation_id = "c@";
  assert_refused(*state, &r.req, "response.conversation_id contains a NUL");
  r.rs.conversation_id = "c";
  r.rs.sender_session_id = "@s";
  assert_refused(*state, &r.req, "response.sender_session_id contains a NUL");
  r.rs.sender_session_id = "s";
  r.rs.path = "p@";
  assert_refused(*state, &r.req, "response.path contains a NUL");
  r.rs.path = "p";
  r.rs.response = text_value(&r.value, VALUE(STRING_VALUE), "@");
  assert_refused(*state, &r.req,
                 "response.response.string_value contains a NUL");
}

static void test_invalid_utf8_in_strings_is_refused(void **state) {
  request r;
  Handlers__V1__TopicSpecification__PropertiesEntry p0 =
      HANDLERS__V1__TOPIC_SPECIFICATION__PROPERTIES_ENTRY__INIT;
  Handlers__V1__TopicSpecification__PropertiesEntry *props[] = {&p0};

  /* Fields hd_event_validate never looked at. */
  request_init(&r, "error", ARGS(ERROR));
  r.er.description = "caf\xc3";
  assert_refused(*state, &r.req,
                 "error.description is not valid UTF-8 (at byte 3)");
  request_init(&r, "response", ARGS(RESPONSE));
  r.rs.conversation_id = "\xff";
  assert_refused(*state, &r.req, "response.conversation_id is not valid UTF-8");
  request_init(&r, "update", ARGS(UPDATE));
  r.up.topic_path = "t";
  p0.key = "\xed\xa0\x80"; /* a surrogate */
  p0.value = "v";
  r.spec.n_properties = 1;
  r.spec.properties = props;
  r.up.topic_spec = &r.spec;
  assert_refused(*state, &r.req,
                 "update.topic_spec.properties[0].key is not valid UTF-8");
  /* And those it did, now named by their path. */
  r.up.topic_spec = NULL;
  r.up.topic_value = text_value(&r.value, VALUE(STRING_VALUE), "\xc0\x80");
  assert_refused(*state, &r.req,
                 "update.topic_value.string_value is not valid UTF-8");
  request_init(&r, "upd\xe2te", ARGS(_NOT_SET));
  assert_refused(*state, &r.req, "event is not valid UTF-8 (at byte 3)");
}

static void test_utf8_strings_and_any_bytes_pass(void **state) {
  static const uint8_t raw[] = {0x00, 0xff, 0xc3, 0x00};
  request r;
  char msg[256];

  request_init(&r, "update", ARGS(UPDATE));
  r.req.key = "pr\xc3\xa9x";                         /* é */
  r.up.topic_path = "\xf0\x9f\x98\x80/\xe2\x82\xac"; /* emoji, euro */
  r.up.topic_value =
      text_value(&r.value, VALUE(STRING_VALUE), "\xe6\x97\xa5\xe6\x9c\xac");
  assert_int_equal(decode_with_nuls(*state, &r.req, msg, sizeof(msg)), HD_OK);
  /* bytes fields carry anything, NULs and all */
  r.up.topic_value =
      bytes_value(&r.value, VALUE(BINARY_VALUE), raw, sizeof(raw));
  r.up.old_value =
      bytes_value(&r.old, VALUE(RECORD_V2_VALUE), raw, sizeof(raw));
  assert_int_equal(decode_with_nuls(*state, &r.req, msg, sizeof(msg)), HD_OK);
}

static void test_unknown_fields_are_not_checked(void **state) {
  request r;
  size_t len;
  char msg[256] = "";
  Handlers__V1__DispatchRequest *got = NULL;

  request_init(&r, "update", ARGS(UPDATE));
  r.up.topic_path = "t";
  uint8_t *packed = pack(&r.req, &len);
  /* + field 99, length-delimited, 3 bytes that are neither UTF-8 nor
   * NUL-free: a newer client's bytes field, say. */
  uint8_t *buf = malloc(len + 6);
  assert_non_null(buf);
  memcpy(buf, packed, len);
  memcpy(buf + len, "\x9a\x06\x03\xff\x00\xfe", 6);
  assert_int_equal(
      hd_proto_decode_dispatch(*state, buf, len + 6, &got, msg, sizeof(msg)),
      HD_OK);
  free(buf);
  free(packed);
}

/* The same check on the other requests (for the control RPCs). */
static void test_check_strings_names_fields_of_add_handler(void **state) {
  (void)state;
  char *events[] = {"a", "b", "c", "d@"};
  Handlers__V1__Webhook wh = HANDLERS__V1__WEBHOOK__INIT;
  Handlers__V1__Webhook__HeadersEntry h0 =
      HANDLERS__V1__WEBHOOK__HEADERS_ENTRY__INIT;
  Handlers__V1__Webhook__HeadersEntry *hs[] = {&h0};
  Handlers__V1__Target t = HANDLERS__V1__TARGET__INIT;
  Handlers__V1__Target local = HANDLERS__V1__TARGET__INIT;
  Handlers__V1__AddHandlerRequest__RoutesEntry r0 =
      HANDLERS__V1__ADD_HANDLER_REQUEST__ROUTES_ENTRY__INIT;
  Handlers__V1__AddHandlerRequest__RoutesEntry r1 = r0;
  Handlers__V1__AddHandlerRequest__RoutesEntry *routes[] = {&r0, &r1};
  Handlers__V1__AddHandlerRequest req = HANDLERS__V1__ADD_HANDLER_REQUEST__INIT;
  struct {
    const char *want; /* NULL: accepted */
  } step;
  char msg[512];
  uint8_t buf[512];
  size_t len;

  local.kind_case = HANDLERS__V1__TARGET__KIND_LOCAL;
  local.local = "echo";
  req.key = "k";
  req.target = &local;
  req.n_events = 4;
  req.events = events;
#define CHECK(want_)                                                           \
  do {                                                                         \
    step.want = (want_);                                                       \
    len = handlers__v1__add_handler_request__pack(&req, buf);                  \
    assert_true(len < sizeof(buf));                                            \
    for (size_t i = 0; i < len; i++)                                           \
      if (buf[i] == '@')                                                       \
        buf[i] = '\0';                                                         \
    msg[0] = '\0';                                                             \
    hd_err e_ =                                                                \
        hd_proto_check_strings(&handlers__v1__add_handler_request__descriptor, \
                               buf, len, msg, sizeof(msg));                    \
    if (step.want == NULL && e_ != HD_OK)                                      \
      fail_msg("refused: %s", msg);                                            \
    if (step.want && (e_ != HD_EINVAL || !strstr(msg, step.want)))             \
      fail_msg("\"%s\", want \"%s\"", msg, step.want);                         \
  } while (0)

  CHECK("events[3] contains a NUL byte (at byte 1)");
  events[3] = "d\xff";
  CHECK("events[3] is not valid UTF-8 (at byte 1)");
  events[3] = "d";
  CHECK(NULL);
  req.n_events = 0;
  req.target = NULL;
  wh.url = "http://example.test/";
  h0.key = "X-A";
  h0.value = "v\x80";
  wh.n_headers = 1;
  wh.headers = hs;
  t.kind_case = HANDLERS__V1__TARGET__KIND_WEBHOOK;
  t.webhook = &wh;
  r0.key = "update";
  r0.value = &local;
  r1.key = "subscribe";
  r1.value = &t;
  req.n_routes = 2;
  req.routes = routes;
  CHECK("routes[1].value.webhook.headers[0].value is not valid UTF-8");
  h0.value = "v";
  r1.key = "sub@";
  CHECK("routes[1].key contains a NUL byte");
  r1.key = "subscribe";
  wh.url = "http://example.test/@";
  CHECK("routes[1].value.webhook.url contains a NUL byte");
  wh.url = "http://example.test/";
  CHECK(NULL);
#undef CHECK
}

/* What the gRPC front checks: everything, except the UTF-8 of the keys
 * RemoveHandler and ListHandlers look up (the control plane's). */
static void test_check_request_leaves_lookup_utf8_to_control(void **state) {
  (void)state;
  Handlers__V1__RemoveHandlerRequest rm =
      HANDLERS__V1__REMOVE_HANDLER_REQUEST__INIT;
  Handlers__V1__ListHandlersRequest ls =
      HANDLERS__V1__LIST_HANDLERS_REQUEST__INIT;
  Handlers__V1__AddHandlerRequest add = HANDLERS__V1__ADD_HANDLER_REQUEST__INIT;
  uint8_t buf[64];
  char msg[256];
  size_t len;

  rm.key = "k\xff";
  rm.handler_id = "h-1";
  len = handlers__v1__remove_handler_request__pack(&rm, buf);
  assert_int_equal(
      hd_proto_check_request(&handlers__v1__remove_handler_request__descriptor,
                             buf, len, msg, sizeof(msg)),
      HD_OK);
  assert_int_equal(
      hd_proto_check_strings(&handlers__v1__remove_handler_request__descriptor,
                             buf, len, msg, sizeof(msg)),
      HD_EINVAL);
  rm.key = "k@";
  len = handlers__v1__remove_handler_request__pack(&rm, buf);
  buf[3] = '\0';
  assert_int_equal(
      hd_proto_check_request(&handlers__v1__remove_handler_request__descriptor,
                             buf, len, msg, sizeof(msg)),
      HD_EINVAL);
  assert_non_null(strstr(msg, "key contains a NUL byte (at byte 1)"));

  ls.key = "\xc3";
  len = handlers__v1__list_handlers_request__pack(&ls, buf);
  assert_int_equal(
      hd_proto_check_request(&handlers__v1__list_handlers_request__descriptor,
                             buf, len, msg, sizeof(msg)),
      HD_OK);

  add.key = "\xc3";
  len = handlers__v1__add_handler_request__pack(&add, buf);
  assert_int_equal(
      hd_proto_check_request(&handlers__v1__add_handler_request__descriptor,
                             buf, len, msg, sizeof(msg)),
      HD_EINVAL);
  assert_non_null(strstr(msg, "key is not valid UTF-8 (at byte 0)"));
}

static void test_check_strings_refuses_malformed_bytes(void **state) {
  (void)state;
  static const uint8_t cut[] = {0x0A, 0x10, 'a', 'b'};
  static const uint8_t group[] = {0x0B, 0x0C};
  char msg[256];

  assert_int_equal(
      hd_proto_check_strings(&handlers__v1__dispatch_request__descriptor, cut,
                             sizeof(cut), msg, sizeof(msg)),
      HD_EINVAL);
  assert_non_null(strstr(msg, "DispatchRequest"));
  assert_int_equal(
      hd_proto_check_strings(&handlers__v1__dispatch_request__descriptor, group,
                             sizeof(group), msg, sizeof(msg)),
      HD_EINVAL);
  assert_int_equal(
      hd_proto_check_strings(&handlers__v1__dispatch_request__descriptor, "", 0,
                             msg, sizeof(msg)),
      HD_OK);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_subscribe_maps_path_json_value_and_spec),
      T(test_close_takes_subscribe_args_without_value_or_spec),
      T(test_update_with_old_value_maps_both_values),
      T(test_update_without_old_value_has_none),
      T(test_update_string_and_binary_values_keep_their_bytes),
      T(test_record_v2_value_keeps_its_bytes),
      T(test_unsubscribe_maps_reason),
      T(test_unsubscribe_unknown_reason_is_einval),
      T(test_error_maps_code_and_description),
      T(test_response_maps_every_field),
      T(test_response_without_value_has_none),
      T(test_custom_event_without_args_is_none),
      T(test_custom_event_may_carry_update_args),
      T(test_topic_value_without_case_is_einval),
      T(test_old_value_without_case_is_einval),
      T(test_response_value_without_case_is_einval),
      T(test_update_event_with_subscribe_args_is_einval),
      T(test_invalid_json_value_is_einval),
      T(test_empty_bytes_decode_but_missing_key_is_einval),
      T(test_truncated_message_is_einval),
      T(test_invalid_wire_type_is_einval),
      T(test_length_prefix_past_the_end_is_einval),
      T(test_garbage_is_einval),
      T(test_to_value_null_is_none_and_caseless_is_einval),
      T(test_from_results_roundtrips_through_dispatch_reply),
      T(test_from_results_maps_other_failures),
      T(test_from_results_empty_list_is_empty),
      T(test_status_of_every_error),
      T(test_nul_in_string_value_is_refused_not_cut),
      T(test_nul_in_error_description_is_refused),
      T(test_nul_in_every_string_field_is_refused),
      T(test_invalid_utf8_in_strings_is_refused),
      T(test_utf8_strings_and_any_bytes_pass),
      T(test_unknown_fields_are_not_checked),
      T(test_check_strings_names_fields_of_add_handler),
      T(test_check_strings_refuses_malformed_bytes),
      T(test_check_request_leaves_lookup_utf8_to_control),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
