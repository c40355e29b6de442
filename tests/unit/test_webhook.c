/*
 * Unit tests: webhook handlers and the delivery engine, against a real HTTP
 * receiver (test_rx.h: libmicrohttpd on 127.0.0.1) that records what it
 * gets and answers from a script. Only loopback traffic.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"
#include "kinds.h"
#include "webhook_kind.h"
#include "webhook_sign.h"

#include "test_rx.h"

/* ---- time (mono_ms, scaled_ms: test_rx.h) -------------------------------- */

static int64_t real_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- fixtures
 * ------------------------------------------------------------------- */

/* The engine (test_rx.h) retries fast: 10 ms, at most 100 ms. */
static int group_setup(void **state) {
  (void)state;
  return engine_start(10, 100);
}

static const hd_event *update_event(void) {
  static hd_event ev;

  memset(&ev, 0, sizeof(ev));
  ev.key = "k";
  ev.name = "update";
  ev.args_kind = HD_ARGS_UPDATE;
  ev.topic.path = "a/b";
  ev.topic.value.type = HD_VALUE_JSON;
  ev.topic.value.u.bytes.data = "{\"x\":1}";
  ev.topic.value.u.bytes.len = strlen("{\"x\":1}");
  return &ev;
}

static void webhook_init(hd_webhook_spec *wh, const char *url) {
  memset(wh, 0, sizeof(*wh));
  wh->url = url;
  wh->secret = "";
}

static hd_handler *make_on(hd_webhook_engine *e, const hd_webhook_spec *wh) {
  hd_handler *h = NULL;
  char msg[256] = "";
  hd_err err = hd_webhook_factory(e, "k", wh, &h, NULL, msg, sizeof(msg));

  if (err != HD_OK)
    print_error("factory: %s: %s\n", hd_strerror(err), msg);
  assert_int_equal(err, HD_OK);
  assert_string_equal(hd_handler_kind(h), "webhook");
  return h;
}

static hd_handler *make(const hd_webhook_spec *wh) {
  return make_on(engine, wh);
}

/* Runs `h` once on `ev` and returns its only result's list. */
static hd_results *run(hd_handler *h, const hd_event *ev) {
  hd_results *rs = NULL;

  assert_int_equal(hd_handler_run_sync(h, ev, &rs), HD_OK);
  assert_non_null(rs);
  return rs;
}

/* One delivery test's receiver, webhook and handler. hook_start starts the
 * receiver and points `wh` at it; the test may change `wh`, then
 * hook_deliver makes the handler (unless the test made it) and runs it;
 * hook_end frees what there is. */
typedef struct hook {
  rx *r;
  hd_webhook_spec wh;
  hd_handler *h;
  hd_results *rs;
  hd_event ev;      /* the event hook_deliver_timed delivers */
  int64_t start_ms; /* when hook_deliver_timed began (mono_ms) */
} hook;

static void hook_start(hook *k, const rx_step *steps, int n) {
  k->r = rx_start(steps, n);
  webhook_init(&k->wh, k->r->url);
  k->h = NULL;
  k->rs = NULL;
}

/* Runs the handler once on `ev`; returns its first result. */
static hd_result *hook_deliver(hook *k, const hd_event *ev) {
  if (k->h == NULL)
    k->h = make(&k->wh);
  k->rs = run(k->h, ev);
  return hd_results_at(k->rs, 0);
}

/* Starts a receiver answering `steps` and delivers the update event to it
 * once; returns the first result. */
static hd_result *hook_run(hook *k, const rx_step *steps, int n) {
  hook_start(k, steps, n);
  return hook_deliver(k, update_event());
}

/* Makes the handler (unless the test made it) before the clock starts, then
 * delivers the update event with a deadline `deadline_ms` from now (none
 * when 0), noting in k->start_ms when the delivery began. */
static hd_result *hook_deliver_timed(hook *k, int64_t deadline_ms) {
  if (k->h == NULL)
    k->h = make(&k->wh);
  k->ev = *update_event();
  if (deadline_ms > 0)
    k->ev.deadline_ns = real_ns() + deadline_ms * 1000000LL;
  k->start_ms = mono_ms();
  return hook_deliver(k, &k->ev);
}

static void hook_end(hook *k) {
  hd_results_free(k->rs);
  hd_handler_unref(k->h);
  rx_stop(k->r);
}

/* Expects `factory` to refuse `wh` with a message containing `want`. */
static void expect_refused(const hd_webhook_spec *wh, const char *want) {
  hd_handler *h = NULL;
  char msg[256] = "";

  assert_int_equal(
      hd_webhook_factory(engine, "k", wh, &h, NULL, msg, sizeof(msg)),
      HD_EINVAL);
  assert_null(h);
  if (strstr(msg, want) == NULL)
    fail_msg("message '%s' does not contain '%s'", msg, want);
}

/* ---- delivery
 * ------------------------------------------------------------------- */

static void test_delivers_structured_cloudevent(void **state) {
  static const rx_step ok = {.status = 204};
  hook k;
  hd_header_spec hdr = {0};
  hd_header_spec *hdrs = &hdr;
  hd_result *res;
  json_t *ce;
  const char *id, *ts;
  int64_t now_s = real_ns() / 1000000000;

  (void)state;
  hook_start(&k, &ok, 1);
  hdr.name = "X-Custom";
  hdr.value = "hello";
  k.wh.n_headers = 1;
  k.wh.headers = hdrs;
  hook_deliver(&k, update_event());
  assert_int_equal(hd_results_count(k.rs), 1);
  res = hd_results_at(k.rs, 0);
  assert_int_equal(res->err, HD_OK);
  assert_string_equal(res->handler_id, hd_handler_id(k.h));
  assert_int_equal(res->http_status, 204);
  assert_int_equal(res->attempts, 1);
  assert_int_equal(res->value.type, HD_VALUE_NONE);
  assert_true(res->duration_ns > 0);

  assert_int_equal(rx_count(k.r), 1);
  assert_string_equal(k.r->reqs[0].method, "POST");
  assert_string_equal(rx_header(k.r, 0, "content-type"),
                      "application/cloudevents+json");
  assert_string_equal(rx_header(k.r, 0, "user-agent"), "handlerd/" HD_VERSION);
  assert_string_equal(rx_header(k.r, 0, "x-custom"), "hello");
  assert_null(rx_header(k.r, 0, "webhook-signature"));
  id = rx_header(k.r, 0, "webhook-id");
  ts = rx_header(k.r, 0, "webhook-timestamp");
  assert_non_null(id);
  assert_non_null(ts);
  assert_true(llabs(atoll(ts) - now_s) <= 5);

  ce = json_loadb(k.r->reqs[0].body, k.r->reqs[0].body_len, 0, NULL);
  assert_non_null(ce);
  assert_string_equal(json_string_value(json_object_get(ce, "specversion")),
                      "1.0");
  assert_string_equal(json_string_value(json_object_get(ce, "id")), id);
  assert_string_equal(json_string_value(json_object_get(ce, "source")),
                      "//handlerd/test/keys/k");
  assert_string_equal(json_string_value(json_object_get(ce, "type")),
                      "handlers.v1.update");
  assert_string_equal(json_string_value(json_object_get(ce, "subject")), "a/b");
  assert_non_null(json_object_get(ce, "time"));
  assert_true(json_is_object(json_object_get(ce, "data")));
  json_decref(ce);
  hook_end(&k);
}

static void test_binary_mode_sends_attributes_as_ce_headers(void **state) {
  static const rx_step ok = {.status = 200};
  hook k;
  json_t *data;

  (void)state;
  hook_start(&k, &ok, 1);
  k.wh.binary_mode = 1;
  hook_deliver(&k, update_event());
  assert_int_equal(hd_results_at(k.rs, 0)->err, HD_OK);
  assert_int_equal(rx_count(k.r), 1);
  assert_string_equal(rx_header(k.r, 0, "content-type"), "application/json");
  assert_string_equal(rx_header(k.r, 0, "ce-specversion"), "1.0");
  assert_string_equal(rx_header(k.r, 0, "ce-id"),
                      rx_header(k.r, 0, "webhook-id"));
  assert_string_equal(rx_header(k.r, 0, "ce-source"), "//handlerd/test/keys/k");
  assert_string_equal(rx_header(k.r, 0, "ce-type"), "handlers.v1.update");
  assert_string_equal(rx_header(k.r, 0, "ce-subject"), "a/b");
  assert_non_null(rx_header(k.r, 0, "ce-time"));
  /* The body is the data alone, not an envelope. */
  data = json_loadb(k.r->reqs[0].body, k.r->reqs[0].body_len, 0, NULL);
  assert_non_null(data);
  assert_null(json_object_get(data, "specversion"));
  json_decref(data);
  hook_end(&k);
}

static void test_generated_secret_signs_every_attempt(void **state) {
  static const rx_step steps[] = {{.status = 503}, {.status = 200}};
  hook k;
  char *secret = NULL, msg[256] = "";
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;

  (void)state;
  hook_start(&k, steps, 2);
  k.wh.new_secret = 1;
  assert_int_equal(
      hd_webhook_factory(engine, "k", &k.wh, &k.h, &secret, msg, sizeof(msg)),
      HD_OK);
  assert_non_null(secret);
  assert_int_equal(strncmp(secret, HD_SECRET_PREFIX, 6), 0);
  assert_int_equal(hd_secret_parse(secret, key, &key_len, NULL, 0), HD_OK);
  hook_deliver(&k, update_event());
  assert_int_equal(hd_results_at(k.rs, 0)->err, HD_OK);
  assert_int_equal(rx_count(k.r), 2);
  for (int i = 0; i < 2; i++) {
    const char *id = rx_header(k.r, i, "webhook-id");
    const char *ts = rx_header(k.r, i, "webhook-timestamp");
    const char *got = rx_header(k.r, i, "webhook-signature");
    char want[HD_SIGNATURE_MAX];

    assert_non_null(id);
    assert_non_null(ts);
    assert_non_null(got);
    assert_int_equal(hd_webhook_sign(key, key_len, id, atoll(ts),
                                     k.r->reqs[i].body, k.r->reqs[i].body_len,
                                     want, sizeof(want)),
                     HD_OK);
    assert_string_equal(got, want);
  }
  /* A retry is the same message: same id, same body. */
  assert_string_equal(rx_header(k.r, 0, "webhook-id"),
                      rx_header(k.r, 1, "webhook-id"));
  assert_int_equal(k.r->reqs[0].body_len, k.r->reqs[1].body_len);
  assert_memory_equal(k.r->reqs[0].body, k.r->reqs[1].body,
                      k.r->reqs[0].body_len);
  free(secret);
  hook_end(&k);
}

/* Asserts that `sig` (a webhook-signature signature, "v1,...") signs
 * request `i` of `r` with `secret`. */
static void assert_signs(rx *r, int i, const char *sig, const char *secret) {
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;
  char want[HD_SIGNATURE_MAX];

  assert_int_equal(hd_secret_parse(secret, key, &key_len, NULL, 0), HD_OK);
  assert_int_equal(hd_webhook_sign(key, key_len, rx_header(r, i, "webhook-id"),
                                   atoll(rx_header(r, i, "webhook-timestamp")),
                                   r->reqs[i].body, r->reqs[i].body_len, want,
                                   sizeof(want)),
                   HD_OK);
  assert_string_equal(sig, want);
}

#define ROTATED_NEW "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGQ=="
#define ROTATED_OLD "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/* A secret rotation in progress (RotateSecret): an attempt before the end
 * of the window carries "v1,<new> v1,<old>", each verifying with its own
 * secret; an attempt after it (the same handler: decided per attempt) only
 * the new one. */
static void test_rotation_signs_twice_until_the_window_ends(void **state) {
  static const rx_step steps[] = {{.status = 200}};
  int64_t window_ms = scaled_ms(1500);
  hook k;
  char both[2 * HD_SIGNATURE_MAX], *space;

  (void)state;
  hook_start(&k, steps, 1);
  k.wh.secret = ROTATED_NEW;
  k.wh.previous_secret = ROTATED_OLD;
  k.wh.previous_until_ms = real_ns() / 1000000 + window_ms;
  assert_int_equal(hook_deliver(&k, update_event())->err, HD_OK);
  assert_int_equal(rx_count(k.r), 1);
  snprintf(both, sizeof(both), "%s", rx_header(k.r, 0, "webhook-signature"));
  space = strchr(both, ' ');
  if (space == NULL)
    fail_msg("one signature during the overlap: '%s'", both);
  *space = '\0';
  assert_signs(k.r, 0, both, ROTATED_NEW);
  assert_signs(k.r, 0, space + 1, ROTATED_OLD);

  /* After the window: the same handler signs with the new secret only. */
  while (real_ns() / 1000000 <= k.wh.previous_until_ms)
    usleep(20 * 1000);
  hd_results_free(k.rs);
  k.rs = NULL;
  assert_int_equal(hook_deliver(&k, update_event())->err, HD_OK);
  assert_int_equal(rx_count(k.r), 2);
  const char *one = rx_header(k.r, 1, "webhook-signature");
  assert_null(strchr(one, ' '));
  assert_signs(k.r, 1, one, ROTATED_NEW);
  hook_end(&k);
}

/* A rotation whose window has already passed is not kept (one signature);
 * a previous secret that does not parse, or without a current secret, is
 * refused naming the field. */
static void test_rotation_ended_or_malformed(void **state) {
  static const rx_step steps[] = {{.status = 200}};
  hook k;

  (void)state;
  hook_start(&k, steps, 1);
  k.wh.secret = ROTATED_NEW;
  k.wh.previous_secret = ROTATED_OLD;
  k.wh.previous_until_ms = real_ns() / 1000000 - 1;
  assert_int_equal(hook_deliver(&k, update_event())->err, HD_OK);
  const char *one = rx_header(k.r, 0, "webhook-signature");
  assert_null(strchr(one, ' '));
  assert_signs(k.r, 0, one, ROTATED_NEW);

  k.wh.previous_until_ms = real_ns() / 1000000 + 60000;
  k.wh.previous_secret = "whsec_nope";
  expect_refused(&k.wh, "webhook.previous_secret: ");
  k.wh.previous_secret = ROTATED_OLD;
  k.wh.secret = "";
  expect_refused(&k.wh, "webhook.previous_secret: only with a secret");
  hook_end(&k);
}

static void test_json_response_becomes_json_result(void **state) {
  static const char body[] = "{\"ok\":true,\"n\":[1,2]}";
  static const rx_step ok = {
      .status = 200, .body = body, .body_len = sizeof(body) - 1};
  hook k;
  hd_result *res;

  (void)state;
  res = hook_run(&k, &ok, 1);
  assert_int_equal(res->err, HD_OK);
  assert_int_equal(res->value.type, HD_VALUE_JSON);
  assert_string_equal(res->value.u.bytes.data, body);
  assert_int_equal(res->truncated, 0);
  hook_end(&k);
}

static void test_text_response_becomes_string_result(void **state) {
  static const rx_step ok = {.status = 200, .body = "hello", .body_len = 5};
  hook k;
  hd_result *res;

  (void)state;
  res = hook_run(&k, &ok, 1);
  assert_int_equal(res->err, HD_OK);
  assert_int_equal(res->value.type, HD_VALUE_STRING);
  assert_string_equal(res->value.u.bytes.data, "hello");
  hook_end(&k);
}

/* Found by fuzz_webhook_body: jansson parses "4" followed by a NUL, which
 * is not JSON text; such a body is bytes, not a cut-short JSON value. */
static void test_json_then_nul_is_binary(void **state) {
  static const rx_step ok = {.status = 200, .body = "4\0 ", .body_len = 3};
  hook k;
  hd_result *res;

  (void)state;
  res = hook_run(&k, &ok, 1);
  assert_int_equal(res->err, HD_OK);
  assert_int_equal(res->value.type, HD_VALUE_BINARY);
  assert_int_equal(res->value.u.bytes.len, 3);
  assert_memory_equal(res->value.u.bytes.data, "4\0 ", 3);
  hook_end(&k);
}

static void test_large_response_is_truncated(void **state) {
  size_t len = 100 * 1024;
  char *big = malloc(len);
  rx_step ok = {.status = 200, .body_len = len};
  hook k;
  hd_result *res;

  (void)state;
  assert_non_null(big);
  memset(big, 'x', len);
  big[0] = '"'; /* would start a JSON string: a cut one is not JSON */
  ok.body = big;
  res = hook_run(&k, &ok, 1);
  assert_int_equal(res->err, HD_OK);
  assert_int_equal(res->truncated, 1);
  assert_int_equal(res->value.type, HD_VALUE_STRING);
  assert_int_equal(res->value.u.bytes.len, HD_WEBHOOK_DEFAULT_MAX_RESPONSE);
  assert_memory_equal(res->value.u.bytes.data, big,
                      HD_WEBHOOK_DEFAULT_MAX_RESPONSE);
  hook_end(&k);
  free(big);
}

/* ---- retries
 * ---------------------------------------------------------------------- */

static void test_server_errors_are_retried_until_success(void **state) {
  static const rx_step steps[] = {{.status = 500},
                                  {.status = 500},
                                  {.status = 200, .body = "1", .body_len = 1}};
  hook k;
  hd_result *res;

  (void)state;
  res = hook_run(&k, steps, 3);
  assert_int_equal(res->err, HD_OK);
  assert_int_equal(res->attempts, 3);
  assert_int_equal(res->http_status, 200);
  assert_int_equal(res->value.type, HD_VALUE_JSON);
  assert_int_equal(rx_count(k.r), 3);
  hook_end(&k);
}

static void test_not_found_fails_after_one_attempt(void **state) {
  static const rx_step steps[] = {{.status = 404}, {.status = 200}};
  hook k;
  hd_result *res;

  (void)state;
  res = hook_run(&k, steps, 2);
  assert_int_equal(res->err, HD_EHANDLER);
  assert_int_equal(res->grpc_code, 5);
  assert_int_equal(res->http_status, 404);
  assert_int_equal(res->attempts, 1);
  assert_string_equal(res->message, "HTTP 404 after 1 attempt");
  assert_string_equal(res->handler_id, hd_handler_id(k.h));
  usleep((useconds_t)scaled_ms(100) * 1000); /* a wrong retry shows by now */
  assert_int_equal(rx_count(k.r), 1);
  hook_end(&k);
}

static void test_retry_after_is_respected(void **state) {
  static const rx_step steps[] = {{.status = 429, .retry_after = "1"},
                                  {.status = 200}};
  hook k;
  hd_result *res;

  (void)state;
  hook_start(&k, steps, 2);
  res = hook_deliver_timed(&k, 0);
  assert_int_equal(res->err, HD_OK);
  assert_int_equal(res->attempts, 2);
  /* The backoff alone would be 10 ms or less. */
  assert_true(mono_ms() - k.start_ms >= 950);
  hook_end(&k);
}

static void test_retry_after_beyond_deadline_fails_now(void **state) {
  char retry_after[32];
  rx_step steps[] = {{.status = 503, .retry_after = retry_after},
                     {.status = 200}};
  hook k;
  hd_result *res;

  (void)state;
  /* Retry-After 5 s, deadline 2 s: it fails at once, not at the deadline
   * (all three scaled alike). */
  snprintf(retry_after, sizeof(retry_after), "%lld",
           (long long)scaled_ms(5000) / 1000);
  hook_start(&k, steps, 2);
  res = hook_deliver_timed(&k, scaled_ms(2000));
  assert_int_equal(res->err, HD_EHANDLER);
  assert_int_equal(res->grpc_code, 14);
  assert_int_equal(res->attempts, 1);
  assert_non_null(strstr(res->message, "HTTP 503 after 1 attempt"));
  assert_non_null(strstr(res->message, "deadline"));
  assert_true(mono_ms() - k.start_ms < scaled_ms(1000));
  hook_end(&k);
}

static void test_connection_refused_uses_all_attempts(void **state) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  hd_webhook_spec wh;
  char url[64];
  hd_handler *h;
  hd_results *rs;
  hd_result *res;

  (void)state;
  /* A port that was just free: bind it, learn it, close it. */
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  close(fd);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(sa.sin_port));
  webhook_init(&wh, url);
  wh.max_attempts = 3;
  h = make(&wh);
  rs = run(h, update_event());
  res = hd_results_at(rs, 0);
  assert_int_equal(res->err, HD_EHANDLER);
  assert_int_equal(res->grpc_code, 14);
  assert_int_equal(res->attempts, 3);
  assert_int_equal(res->http_status, 0);
  assert_string_equal(res->message, "connection refused after 3 attempts");
  hd_results_free(rs);
  hd_handler_unref(h);
}

static void test_deadline_bounds_retries(void **state) {
  static const rx_step always = {.status = 500};
  hook k;
  hd_result *res;

  (void)state;
  hook_start(&k, &always, 1);
  k.wh.max_attempts = HD_WEBHOOK_MAX_ATTEMPTS;
  res = hook_deliver_timed(&k, 500);
  assert_int_not_equal(res->err, HD_OK);
  assert_int_equal(res->http_status, 500);
  assert_true(res->attempts >= 2);
  assert_true(res->attempts < HD_WEBHOOK_MAX_ATTEMPTS);
  assert_true(res->attempts == rx_count(k.r));
  assert_non_null(strstr(res->message, "deadline"));
  /* The deadline, and a margin for the last attempt and the thread. */
  assert_true(mono_ms() - k.start_ms <= 500 + scaled_ms(200));
  hook_end(&k);
}

static void test_deadline_cuts_a_hanging_attempt(void **state) {
  static const rx_step hang = {.status = 200, .delay_ms = 10000};
  hook k;
  hd_result *res;
  char want[128];

  (void)state;
  hook_start(&k, &hang, 1);
  k.wh.timeout_ms = 5000;
  res = hook_deliver_timed(&k, 300);
  assert_int_equal(res->err, HD_ETIMEOUT);
  assert_int_equal(res->grpc_code, 4);
  assert_int_equal(res->attempts, 1);
  snprintf(want, sizeof(want),
           "deadline exceeded after 1 attempt, waiting for the response from "
           "127.0.0.1:%d",
           k.r->port);
  assert_string_equal(res->message, want);
  /* The deadline (300 ms) and a margin, well before the 5 s timeout. */
  assert_true(mono_ms() - k.start_ms < 300 + scaled_ms(700));
  hook_end(&k);
}

/* ---- isolation
 * ------------------------------------------------------------------------ */

static void test_hanging_receiver_does_not_delay_another(void **state) {
  static const rx_step hang = {.status = 200, .delay_ms = 10000};
  static const rx_step ok = {.status = 200, .body = "\"fast\"", .body_len = 6};
  hd_webhook_spec wh;
  rx *slow = rx_start(&hang, 1), *fast = rx_start(&ok, 1);
  hd_handler *set = NULL, *hs, *hf;
  hd_results *rs;
  hd_result *rslow, *rfast;
  /* The fast one must be done well before the slow one's timeout. */
  int64_t timeout_ms = scaled_ms(300);
  char want[128];

  (void)state;
  webhook_init(&wh, slow->url);
  wh.timeout_ms = (uint32_t)timeout_ms;
  wh.max_attempts = 1;
  hs = make(&wh);
  webhook_init(&wh, fast->url);
  hf = make(&wh);
  assert_int_equal(hd_set_new(&set), HD_OK);
  assert_int_equal(hd_set_add(set, hs), HD_OK);
  assert_int_equal(hd_set_add(set, hf), HD_OK);
  rs = run(set, update_event());
  assert_int_equal(hd_results_count(rs), 2);
  rslow = hd_results_at(rs, 0);
  rfast = hd_results_at(rs, 1);
  assert_string_equal(rslow->handler_id, hd_handler_id(hs));
  assert_string_equal(rfast->handler_id, hd_handler_id(hf));
  assert_int_equal(rslow->err, HD_ETIMEOUT);
  assert_int_equal(rslow->grpc_code, 4);
  snprintf(want, sizeof(want),
           "timeout (%lld ms) after 1 attempt, waiting for the response from "
           "127.0.0.1:%d",
           (long long)timeout_ms, slow->port);
  assert_string_equal(rslow->message, want);
  assert_true(rslow->duration_ns >= (timeout_ms - 10) * 1000000LL);
  assert_int_equal(rfast->err, HD_OK);
  assert_int_equal(rfast->value.type, HD_VALUE_JSON);
  assert_true(rfast->duration_ns < scaled_ms(250) * 1000000LL);
  hd_results_free(rs);
  hd_handler_unref(set);
  hd_handler_unref(hs);
  hd_handler_unref(hf);
  rx_stop(slow);
  rx_stop(fast);
}

/* One event, K webhooks of one key (a set): the CloudEvent is built once
 * and shared. Every delivery carries the same id (webhook-id = the
 * CloudEvent id, see cloudevents.h), the structured ones the same bytes, the
 * binary one the same id in ce-id; each is signed with its own key; the
 * next event has a new id. */
static void test_fanout_shares_one_cloudevent(void **state) {
  static const rx_step ok = {.status = 200};
  static const char *const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  rx *r = rx_start(&ok, 1);
  hd_webhook_spec wh;
  hd_handler *set = NULL, *h[4];
  hd_results *rs;
  unsigned char key[HD_SECRET_MAX_BYTES];
  size_t key_len = 0;
  const char *id0, *structured = NULL;
  size_t structured_len = 0;
  int binary_seen = 0;
  char first_id[37];

  (void)state;
  assert_int_equal(hd_secret_parse(secret, key, &key_len, NULL, 0), HD_OK);
  assert_int_equal(hd_set_new(&set), HD_OK);
  for (int i = 0; i < 4; i++) {
    webhook_init(&wh, r->url);
    wh.max_attempts = 1;
    wh.binary_mode = i == 2;
    if (i == 1)
      wh.secret = secret;
    h[i] = make(&wh);
    assert_int_equal(hd_set_add(set, h[i]), HD_OK);
  }
  rs = run(set, update_event());
  assert_int_equal(hd_results_count(rs), 4);
  for (int i = 0; i < 4; i++)
    assert_int_equal(hd_results_at(rs, i)->err, HD_OK);
  hd_results_free(rs);
  assert_int_equal(rx_count(r), 4);
  id0 = rx_header(r, 0, "webhook-id");
  assert_non_null(id0);
  for (int i = 0; i < 4; i++) {
    const char *ct = rx_header(r, i, "content-type");
    const char *sig = rx_header(r, i, "webhook-signature");

    assert_non_null(ct);
    assert_string_equal(rx_header(r, i, "webhook-id"), id0);
    if (strcmp(ct, "application/json") == 0) {
      binary_seen++;
      assert_string_equal(rx_header(r, i, "ce-id"), id0);
    } else if (structured == NULL) {
      json_t *ce = json_loadb(r->reqs[i].body, r->reqs[i].body_len, 0, NULL);
      assert_non_null(ce);
      assert_string_equal(json_string_value(json_object_get(ce, "id")), id0);
      json_decref(ce);
      structured = r->reqs[i].body;
      structured_len = r->reqs[i].body_len;
    } else {
      assert_int_equal(r->reqs[i].body_len, structured_len);
      assert_memory_equal(r->reqs[i].body, structured, structured_len);
    }
    if (sig != NULL) {
      char want[HD_SIGNATURE_MAX];
      assert_int_equal(
          hd_webhook_sign(
              key, key_len, id0, atoll(rx_header(r, i, "webhook-timestamp")),
              r->reqs[i].body, r->reqs[i].body_len, want, sizeof(want)),
          HD_OK);
      assert_string_equal(sig, want);
    }
  }
  assert_int_equal(binary_seen, 1);
  snprintf(first_id, sizeof(first_id), "%s", id0);

  /* The next event is another CloudEvent. */
  rs = run(set, update_event());
  hd_results_free(rs);
  assert_int_equal(rx_count(r), 8);
  for (int i = 4; i < 8; i++) {
    assert_string_not_equal(rx_header(r, i, "webhook-id"), first_id);
    assert_string_equal(rx_header(r, i, "webhook-id"),
                        rx_header(r, 4, "webhook-id"));
  }
  hd_handler_unref(set);
  for (int i = 0; i < 4; i++)
    hd_handler_unref(h[i]);
  rx_stop(r);
}

/* ---- shutdown
 * ---------------------------------------------------------------------- */

struct waiter {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  hd_results *rs;
  int calls;
};

static void waiter_done(hd_results *rs, void *data) {
  struct waiter *w = data;

  pthread_mutex_lock(&w->lock);
  w->rs = rs;
  w->calls++;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

static void test_stop_fails_the_delivery_in_flight(void **state) {
  static const rx_step hang = {.status = 200, .delay_ms = 10000};
  hd_webhook_engine_config cfg;
  hd_webhook_engine *e = NULL;
  hd_webhook_spec wh;
  rx *r = rx_start(&hang, 1);
  struct waiter w = {.rs = NULL, .calls = 0};
  hd_handler *h;
  hd_result *res;
  hd_results *rs;
  int64_t start;

  (void)state;
  pthread_mutex_init(&w.lock, NULL);
  pthread_cond_init(&w.cond, NULL);
  hd_webhook_engine_config_init(&cfg);
  assert_int_equal(hd_webhook_engine_start(&cfg, &e), HD_OK);
  webhook_init(&wh, r->url);
  h = make_on(e, &wh);
  assert_int_equal(hd_handler_handle(h, update_event(), waiter_done, &w),
                   HD_OK);
  assert_int_equal(rx_wait(r, 1, (int)scaled_ms(5000)), 1);
  pthread_mutex_lock(&w.lock);
  assert_int_equal(w.calls, 0);
  pthread_mutex_unlock(&w.lock);
  start = mono_ms();
  hd_webhook_engine_stop(e); /* the handler still holds a reference */
  assert_true(mono_ms() - start < scaled_ms(1000)); /* not the 10 s hang */
  pthread_mutex_lock(&w.lock);
  assert_int_equal(w.calls, 1);
  pthread_mutex_unlock(&w.lock);
  res = hd_results_at(w.rs, 0);
  assert_int_equal(res->err, HD_EHANDLER);
  assert_int_equal(res->grpc_code, 14);
  assert_int_equal(res->attempts, 1);
  assert_string_equal(res->message, "handlerd is shutting down");
  hd_results_free(w.rs);

  /* Events after the stop fail at once, without a request. */
  rs = run(h, update_event());
  res = hd_results_at(rs, 0);
  assert_int_equal(res->grpc_code, 14);
  assert_int_equal(res->attempts, 0);
  assert_string_equal(res->message, "handlerd is shutting down");
  assert_int_equal(rx_count(r), 1);
  hd_results_free(rs);
  hd_handler_unref(h); /* the engine's memory goes with it */
  rx_stop(r);
  pthread_cond_destroy(&w.cond);
  pthread_mutex_destroy(&w.lock);
}

/* ---- the factory
 * ------------------------------------------------------------------------ */

/* Per-test state of the factory tests: a webhook the factory would accept
 * (a plain http URL, nothing else set) for the test to spoil. */
static int factory_setup(void **state) {
  static hd_webhook_spec wh;

  webhook_init(&wh, "http://127.0.0.1:9/");
  *state = &wh;
  return 0;
}

static void test_factory_refuses_ftp_url(void **state) {
  hd_webhook_spec *wh = *state;

  wh->url = "ftp://127.0.0.1/x";
  expect_refused(wh, "webhook.url: ");
  expect_refused(wh, "ftp");
}

static void test_factory_refuses_too_many_attempts(void **state) {
  hd_webhook_spec *wh = *state;

  wh->max_attempts = 50;
  expect_refused(wh, "webhook.max_attempts: 50 is over the limit of 20");
}

static void test_factory_refuses_long_timeout(void **state) {
  hd_webhook_spec *wh = *state;

  wh->timeout_ms = 60001;
  expect_refused(wh, "webhook.timeout_ms: 60001 is over the limit of 60000");
}

static void test_factory_refuses_bad_secret(void **state) {
  hd_webhook_spec *wh = *state;

  wh->secret = "not-a-secret";
  expect_refused(wh, "webhook.secret: ");
  wh->new_secret = 1;
  expect_refused(wh, "webhook.new_secret: ");
}

static void test_factory_refuses_reserved_and_malformed_headers(void **state) {
  static const struct {
    const char *name, *value, *want;
  } cases[] = {
      {"Content-Type", "text/plain", "'Content-Type' is set by handlerd"},
      {"webhook-id", "x", "'webhook-id' is set by handlerd"},
      {"ce-type", "x", "'ce-type' is set by handlerd"},
      {"bad name", "x", "'bad name' is not a valid header name"},
      {"X-Ok", "a\r\nX-Injected: 1", "control character"},
      {"", "x", "empty header name"},
  };
  hd_webhook_spec *wh = *state;
  hd_header_spec e = {0};
  hd_header_spec *entries = &e;

  wh->n_headers = 1;
  wh->headers = entries;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    e.name = cases[i].name;
    e.value = cases[i].value;
    expect_refused(wh, "webhook.headers");
    expect_refused(wh, cases[i].want);
  }
  /* The fixture outlives this frame: do not leave it pointing into it. */
  wh->n_headers = 0;
  wh->headers = NULL;
}

/* ---- the "webhook" row of the kind table -------------------------------- */

static void test_webhook_kind_row(void **state) {
  const hd_kind *k = hd_kind_of(HD_TARGET_WEBHOOK);
  hd_header_spec hs[2] = {{"X-A", "1"}, {"X-B", "ok\xc3"}};
  hd_target_spec t = {.kind = HD_TARGET_WEBHOOK};
  hd_target_limits l = {.max_headers = 1};
  hd_handler *h = NULL;
  char msg[256] = "";

  (void)state;
  webhook_init(&t.webhook, "http://127.0.0.1:9/");
  assert_ptr_equal(k, &hd_kind_webhook);
  assert_string_equal(k->name, "webhook");
  assert_string_equal(k->handler_kind, "webhook");
  assert_string_equal(k->detail(&t), "http://127.0.0.1:9/");
  assert_false(k->secret_set(&t));
  assert_false(k->wants_new_secret(&t));
  t.webhook.headers = hs;
  t.webhook.n_headers = 2;
  assert_int_equal(k->check_limits(&t, &l, "routes[1].value", msg, sizeof(msg)),
                   HD_EINVAL);
  assert_string_equal(msg, "routes[1].value.webhook.headers: 2 headers, the "
                           "limit is 1 (--max-webhook-headers)");
  l.max_headers = 2;
  assert_int_equal(k->check_limits(&t, &l, "target", msg, sizeof(msg)), HD_OK);
  assert_int_equal(k->check_strings(&t, "target", msg, sizeof(msg)), HD_EINVAL);
  assert_string_equal(msg, "target.webhook.headers[1].value is not valid "
                           "UTF-8 (at byte 2)");
  t.webhook.n_headers = 1;
  assert_int_equal(k->check_strings(&t, "target", msg, sizeof(msg)), HD_OK);

  /* A generated secret replaces new_secret in the saved copy. */
  t.webhook.new_secret = 1;
  assert_true(k->wants_new_secret(&t));
  assert_true(k->secret_set(&t));
  k->keep_secret(&t, "whsec_Z2l2ZW4=");
  assert_false(t.webhook.new_secret);
  assert_string_equal(t.webhook.secret, "whsec_Z2l2ZW4=");

  /* build is the factory, with the engine (and no outbox) as its context:
   * async is then refused, naming the flag it needs. */
  t.webhook.secret = "";
  hd_webhook_kind_ctx ctx = {engine, NULL};
  hd_kind_site site = {"k", "h-1", "", "target"};
  t.webhook.async = 1;
  assert_int_equal(k->build(&ctx, &site, &t, &h, NULL, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_non_null(strstr(msg, "--state-dir"));
  t.webhook.async = 0;
  t.webhook.ordered = 1;
  assert_int_equal(k->build(&ctx, &site, &t, &h, NULL, msg, sizeof(msg)),
                   HD_EINVAL);
  assert_string_equal(msg, "webhook.ordered: only for async webhooks (set "
                           "async)");
  t.webhook.ordered = 0;
  assert_int_equal(k->build(&ctx, &site, &t, &h, NULL, msg, sizeof(msg)),
                   HD_OK);
  assert_string_equal(hd_handler_kind(h), k->handler_kind);
  hd_handler_unref(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_delivers_structured_cloudevent),
      cmocka_unit_test(test_webhook_kind_row),
      cmocka_unit_test(test_binary_mode_sends_attributes_as_ce_headers),
      cmocka_unit_test(test_generated_secret_signs_every_attempt),
      cmocka_unit_test(test_rotation_signs_twice_until_the_window_ends),
      cmocka_unit_test(test_rotation_ended_or_malformed),
      cmocka_unit_test(test_json_response_becomes_json_result),
      cmocka_unit_test(test_text_response_becomes_string_result),
      cmocka_unit_test(test_json_then_nul_is_binary),
      cmocka_unit_test(test_large_response_is_truncated),
      cmocka_unit_test(test_server_errors_are_retried_until_success),
      cmocka_unit_test(test_not_found_fails_after_one_attempt),
      cmocka_unit_test(test_retry_after_is_respected),
      cmocka_unit_test(test_retry_after_beyond_deadline_fails_now),
      cmocka_unit_test(test_connection_refused_uses_all_attempts),
      cmocka_unit_test(test_deadline_bounds_retries),
      cmocka_unit_test(test_deadline_cuts_a_hanging_attempt),
      cmocka_unit_test(test_hanging_receiver_does_not_delay_another),
      cmocka_unit_test(test_stop_fails_the_delivery_in_flight),
      cmocka_unit_test(test_fanout_shares_one_cloudevent),
      cmocka_unit_test_setup(test_factory_refuses_ftp_url, factory_setup),
      cmocka_unit_test_setup(test_factory_refuses_too_many_attempts,
                             factory_setup),
      cmocka_unit_test_setup(test_factory_refuses_long_timeout, factory_setup),
      cmocka_unit_test_setup(test_factory_refuses_bad_secret, factory_setup),
      cmocka_unit_test_setup(
          test_factory_refuses_reserved_and_malformed_headers, factory_setup),
  };

  return cmocka_run_group_tests(tests, group_setup, engine_teardown);
}
