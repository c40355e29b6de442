/*
 * Unit tests: the store's record format (store/store_record.c), below any
 * backend: the async webhook settings round trip, a record written before
 * they existed decodes with them zero, and the record's version is the
 * oldest that holds it (1 without an async target, 2 with one), so an
 * older handlerd refuses an async registration instead of delivering it
 * synchronously; 3 with a selector or derive_old_value, which an older
 * handlerd would drop; a secret rotation round trips without raising it.
 * (What every backend keeps is test_store.c's.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handlerd/store/v1/registration.pb-c.h"
#include "store_record.h"
#include "test_store_reg.h"

/* ---- helpers ------------------------------------------------------------- */

/* `reg` encoded (malloc'd; the caller frees), asserting it encodes. */
static uint8_t *encode_ok(const hd_registration *reg, size_t *len) {
  uint8_t *buf = NULL;
  char why[256] = "";
  hd_err err = hd_store_record_encode(reg, &buf, len, why, sizeof(why));
  if (err != HD_OK)
    fail_msg("encode: %s: %s", hd_strerror(err), why);
  assert_non_null(buf);
  return buf;
}

/* The `version` field of an encoded record, read with the generated
 * decoder rather than ours. */
static uint32_t version_of(const uint8_t *buf, size_t len) {
  Handlerd__Store__V1__Registration *pr =
      handlerd__store__v1__registration__unpack(NULL, len, buf);
  assert_non_null(pr);
  uint32_t v = pr->version;
  handlerd__store__v1__registration__free_unpacked(pr, NULL);
  return v;
}

/* `buf` decoded into `a`, asserting it decodes. */
static hd_registration decode_ok(const uint8_t *buf, size_t len, hd_arena *a) {
  hd_registration out;
  char why[256] = "";
  hd_err err = hd_store_record_decode(buf, len, a, &out, why, sizeof(why));
  if (err != HD_OK)
    fail_msg("decode: %s: %s", hd_strerror(err), why);
  return out;
}

/* Every async setting of `w` is zero, NULL or empty. */
static void assert_sync_defaults(const hd_webhook_spec *w) {
  assert_int_equal(w->async, 0);
  assert_int_equal(w->ordered, 0);
  assert_null(w->retry_schedule_ms);
  assert_int_equal(w->n_retry_schedule, 0);
  assert_int_equal(w->max_inflight, 0);
  assert_true(w->max_rps == 0.0);
}

/* ---- round trip ---------------------------------------------------------- */

static const uint32_t target_schedule[] = {100, 2000, 30000, 4294967295u};
static const uint32_t route_schedule[] = {5};

/* A simple async webhook with every async setting, none to its default. */
static hd_registration reg_async_target(void) {
  hd_registration r;
  memset(&r, 0, sizeof(r));
  r.key = "k-async";
  r.target.kind = HD_TARGET_WEBHOOK;
  r.target.webhook.url = "https://example.test/hook";
  r.target.webhook.timeout_ms = 1500;
  r.target.webhook.async = 1;
  r.target.webhook.ordered = 1;
  r.target.webhook.retry_schedule_ms = target_schedule;
  r.target.webhook.n_retry_schedule = 4;
  r.target.webhook.max_inflight = 8;
  r.target.webhook.max_rps = 2.5;
  return r;
}

static void test_async_settings_of_a_target_round_trip(void **state) {
  (void)state;
  hd_registration in = reg_async_target();
  size_t len;
  uint8_t *buf = encode_ok(&in, &len);
  hd_arena *a = hd_arena_new(1024);
  assert_non_null(a);

  hd_registration out = decode_ok(buf, len, a);
  /* The decoded schedule must not point into the bytes it came from: the
   * backend frees those once the load's callback returns. */
  memset(buf, 0xa5, len);
  free(buf);
  assert_string_equal(out.key, "k-async");
  assert_int_equal(out.target.kind, HD_TARGET_WEBHOOK);
  const hd_webhook_spec *w = &out.target.webhook;
  assert_string_equal(w->url, "https://example.test/hook");
  assert_int_equal(w->timeout_ms, 1500);
  assert_int_equal(w->async, 1);
  assert_int_equal(w->ordered, 1);
  assert_int_equal(w->n_retry_schedule, 4);
  assert_non_null(w->retry_schedule_ms);
  assert_true(w->retry_schedule_ms != target_schedule);
  assert_memory_equal(w->retry_schedule_ms, target_schedule,
                      sizeof(target_schedule));
  assert_int_equal(w->max_inflight, 8);
  assert_true(w->max_rps == 2.5);
  hd_arena_free(a);
}

/* Routes: each keeps its own settings; a route that is not async keeps
 * zeros (the settings of one do not leak into another). */
static void test_async_settings_of_routes_round_trip(void **state) {
  (void)state;
  hd_route_spec routes[3] = {
      route_webhook("update", "http://example.test/u"),
      route_webhook("close", "http://example.test/c"),
      route_local("error", "echo"),
  };
  routes[0].target.webhook.async = 1;
  routes[0].target.webhook.retry_schedule_ms = route_schedule;
  routes[0].target.webhook.n_retry_schedule = 1;
  routes[0].target.webhook.max_rps = 0.25;
  hd_registration in = reg_routes("k-routes", routes, 3);
  size_t len;
  uint8_t *buf = encode_ok(&in, &len);
  hd_arena *a = hd_arena_new(1024);
  assert_non_null(a);

  hd_registration out = decode_ok(buf, len, a);
  free(buf);
  assert_int_equal(out.n_routes, 3);
  const hd_webhook_spec *u = &out.routes[0].target.webhook;
  assert_int_equal(u->async, 1);
  assert_int_equal(u->ordered, 0);
  assert_int_equal(u->n_retry_schedule, 1);
  assert_int_equal(u->retry_schedule_ms[0], 5);
  assert_int_equal(u->max_inflight, 0);
  assert_true(u->max_rps == 0.25);
  assert_sync_defaults(&out.routes[1].target.webhook);
  assert_int_equal(out.routes[2].target.kind, HD_TARGET_LOCAL);
  assert_string_equal(out.routes[2].target.local, "echo");
  hd_arena_free(a);
}

/* ---- the record's version ------------------------------------------------ */

/* Version 2 exactly when a target (the simple one or a route's) is async:
 * a version-1 reader would restore it as a synchronous webhook. Settings
 * that apply to async webhooks only do not raise it on their own. */
static void test_version_is_2_only_with_an_async_target(void **state) {
  (void)state;
  size_t len;
  uint8_t *buf;

  hd_registration r = reg_async_target();
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 2);
  free(buf);

  /* The rest stays set: the webhook kind refuses that at registration,
   * but the record's version does not lean on it (they mean nothing
   * without async, so an older reader loses nothing). */
  r.target.webhook.async = 0;
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 1);
  free(buf);

  hd_route_spec routes[2] = {route_local("a", "echo"),
                             route_webhook("b", "http://example.test/b")};
  r = reg_routes("k", routes, 2);
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 1);
  free(buf);
  routes[1].target.webhook.async = 1; /* the last route only */
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 2);
  free(buf);
}

/* A version this handlerd does not know is refused with HD_EIO, naming it:
 * reading it as the versions it knows could change what was registered. */
static void test_a_newer_version_is_refused(void **state) {
  (void)state;
  /* Registration{version: 4, key: "k"} */
  static const uint8_t v4[] = {0x08, 0x04, 0x12, 0x01, 'k'};
  /* Registration{version: 3, key: "k"} */
  static const uint8_t v3[] = {0x08, 0x03, 0x12, 0x01, 'k'};
  hd_registration out;
  char why[256] = "";
  hd_arena *a = hd_arena_new(256);
  assert_non_null(a);

  assert_int_equal(
      hd_store_record_decode(v4, sizeof(v4), a, &out, why, sizeof(why)),
      HD_EIO);
  assert_string_equal(why, "record format version 4; this handlerd reads 1 "
                           "to 3");
  out = decode_ok(v3, sizeof(v3), a);
  assert_string_equal(out.key, "k");
  hd_arena_free(a);
}

/* ---- records written before the async settings --------------------------- */

/* What handlerd wrote before fields 8-12 existed (protoc --encode with that
 * release's registration.proto):
 *   version: 1  key: "k"
 *   routes { event: "update" target { webhook { url: "http://example.test/u"
 *     secret: "whsec_Z2l2ZW4=" headers { name: "X-A" value: "1" }
 *     timeout_ms: 1234 max_attempts: 7 binary_mode: true } } }
 *   routes { event: "close" target { local: "echo" } } */
static const uint8_t old_record[] = {
    0x08, 0x01, 0x12, 0x01, 0x6b, 0x22, 0x44, 0x0a, 0x06, 0x75, 0x70, 0x64,
    0x61, 0x74, 0x65, 0x12, 0x3a, 0x12, 0x38, 0x0a, 0x15, 0x68, 0x74, 0x74,
    0x70, 0x3a, 0x2f, 0x2f, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e,
    0x74, 0x65, 0x73, 0x74, 0x2f, 0x75, 0x12, 0x0e, 0x77, 0x68, 0x73, 0x65,
    0x63, 0x5f, 0x5a, 0x32, 0x6c, 0x32, 0x5a, 0x57, 0x34, 0x3d, 0x22, 0x08,
    0x0a, 0x03, 0x58, 0x2d, 0x41, 0x12, 0x01, 0x31, 0x28, 0xd2, 0x09, 0x30,
    0x07, 0x38, 0x01, 0x22, 0x0f, 0x0a, 0x05, 0x63, 0x6c, 0x6f, 0x73, 0x65,
    0x12, 0x06, 0x0a, 0x04, 0x65, 0x63, 0x68, 0x6f};

static void
test_an_old_record_decodes_with_the_async_settings_zero(void **state) {
  (void)state;
  hd_arena *a = hd_arena_new(1024);
  assert_non_null(a);
  /* Not zeroed: a field the decoder forgot to set would show the
   * pattern, not a lucky zero. */
  hd_registration out;
  memset(&out, 0xa5, sizeof(out));

  char why[256] = "";
  assert_int_equal(hd_store_record_decode(old_record, sizeof(old_record), a,
                                          &out, why, sizeof(why)),
                   HD_OK);
  assert_string_equal(out.key, "k");
  assert_int_equal(out.target.kind, HD_TARGET_NONE);
  assert_int_equal(out.n_routes, 2);
  assert_string_equal(out.routes[0].event, "update");
  assert_int_equal(out.routes[0].target.kind, HD_TARGET_WEBHOOK);
  const hd_webhook_spec *w = &out.routes[0].target.webhook;
  assert_string_equal(w->url, "http://example.test/u");
  assert_string_equal(w->secret, "whsec_Z2l2ZW4=");
  assert_int_equal(w->n_headers, 1);
  assert_string_equal(w->headers[0].name, "X-A");
  assert_string_equal(w->headers[0].value, "1");
  assert_int_equal(w->timeout_ms, 1234);
  assert_int_equal(w->max_attempts, 7);
  assert_int_equal(w->binary_mode, 1);
  assert_sync_defaults(w);
  assert_string_equal(out.routes[1].event, "close");
  assert_int_equal(out.routes[1].target.kind, HD_TARGET_LOCAL);
  assert_string_equal(out.routes[1].target.local, "echo");
  assert_int_equal(out.n_events, 0);
  /* The fields of version 3 and of a rotation: none. */
  assert_string_equal(out.selector, "");
  assert_int_equal(out.derive_old_value, 0);
  assert_string_equal(w->previous_secret, "");
  assert_int_equal(w->previous_until_ms, 0);

  /* Written again, it is the same bytes: still version 1, nothing added. */
  size_t len;
  uint8_t *again = encode_ok(&out, &len);
  assert_int_equal(len, sizeof(old_record));
  assert_memory_equal(again, old_record, len);
  free(again);
  hd_arena_free(a);
}

/* A schedule count without the schedule cannot be written. */
static void test_a_schedule_count_without_a_schedule_is_einval(void **state) {
  (void)state;
  hd_registration r = reg_async_target();
  uint8_t *buf = NULL;
  size_t len = 0;
  char why[256] = "";

  r.target.webhook.retry_schedule_ms = NULL;
  assert_int_equal(hd_store_record_encode(&r, &buf, &len, why, sizeof(why)),
                   HD_EINVAL);
  assert_null(buf);
  assert_non_null(strstr(why, "retry schedule"));
}

/* ---- selectors, derive_old_value, rotations ----------------------------- */

/* A selector or derive_old_value makes the record version 3, whatever else
 * it holds: an older handlerd would deliver every topic to the handler, or
 * updates without the derived old_value. Both round trip. */
static void test_selector_and_derive_make_version_3(void **state) {
  (void)state;
  hd_arena *a = hd_arena_new(1024);
  hd_registration r;
  size_t len;
  uint8_t *buf;

  assert_non_null(a);
  memset(&r, 0, sizeof(r));
  r.key = "k";
  r.target.kind = HD_TARGET_LOCAL;
  r.target.local = "echo";
  r.selector = "?a/b.*//";
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 3);
  hd_registration out = decode_ok(buf, len, a);
  free(buf);
  assert_string_equal(out.selector, "?a/b.*//");
  assert_int_equal(out.derive_old_value, 0);

  r.selector = "";
  r.derive_old_value = 1;
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 3);
  out = decode_ok(buf, len, a);
  free(buf);
  assert_string_equal(out.selector, "");
  assert_int_equal(out.derive_old_value, 1);

  /* With an async target too: still 3 (each version reads the older). */
  hd_registration as = reg_async_target();
  as.selector = ">a/b";
  buf = encode_ok(&as, &len);
  assert_int_equal(version_of(buf, len), 3);
  free(buf);
  as.selector = NULL; /* NULL is none, as "" */
  buf = encode_ok(&as, &len);
  assert_int_equal(version_of(buf, len), 2);
  free(buf);

  r.derive_old_value = 0;
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 1);
  free(buf);
  hd_arena_free(a);
}

/* A rotation in progress (the old secret and the end of its window) round
 * trips on a target and on a route, and stays version 1: an older handlerd
 * signs with the new secret only, as after the window. */
static void test_a_rotation_round_trips_as_version_1(void **state) {
  (void)state;
  hd_arena *a = hd_arena_new(1024);
  hd_route_spec routes[1];
  hd_registration r;
  size_t len;
  uint8_t *buf;

  assert_non_null(a);
  memset(&r, 0, sizeof(r));
  memset(routes, 0, sizeof(routes));
  r.key = "k";
  r.target.kind = HD_TARGET_WEBHOOK;
  r.target.webhook.url = "http://example.test/t";
  r.target.webhook.secret = "whsec_bmV3LW5ldy1uZXctbmV3LW5ldy1uZXc=";
  r.target.webhook.previous_secret = "whsec_b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQ=";
  r.target.webhook.previous_until_ms = 1767225600123;
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 1);
  hd_registration out = decode_ok(buf, len, a);
  free(buf);
  assert_string_equal(out.target.webhook.secret,
                      "whsec_bmV3LW5ldy1uZXctbmV3LW5ldy1uZXc=");
  assert_string_equal(out.target.webhook.previous_secret,
                      "whsec_b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQ=");
  assert_int_equal(out.target.webhook.previous_until_ms, 1767225600123);

  routes[0].event = "update";
  routes[0].target = r.target;
  routes[0].target.webhook.previous_until_ms = 42;
  memset(&r.target, 0, sizeof(r.target));
  r.routes = routes;
  r.n_routes = 1;
  buf = encode_ok(&r, &len);
  assert_int_equal(version_of(buf, len), 1);
  out = decode_ok(buf, len, a);
  free(buf);
  assert_int_equal(out.target.kind, HD_TARGET_NONE);
  assert_string_equal(out.routes[0].target.webhook.previous_secret,
                      "whsec_b2xkLW9sZC1vbGQtb2xkLW9sZC1vbGQ=");
  assert_int_equal(out.routes[0].target.webhook.previous_until_ms, 42);
  hd_arena_wipe(a);
  hd_arena_free(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_async_settings_of_a_target_round_trip),
      cmocka_unit_test(test_async_settings_of_routes_round_trip),
      cmocka_unit_test(test_version_is_2_only_with_an_async_target),
      cmocka_unit_test(test_a_newer_version_is_refused),
      cmocka_unit_test(test_an_old_record_decodes_with_the_async_settings_zero),
      cmocka_unit_test(test_a_schedule_count_without_a_schedule_is_einval),
      cmocka_unit_test(test_selector_and_derive_make_version_3),
      cmocka_unit_test(test_a_rotation_round_trips_as_version_1),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
