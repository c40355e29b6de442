/*
 * Unit tests: the process-wide counters, gauges and the /metrics endpoint
 * (metrics.c). The counters are global to this binary, so each test uses
 * its own method slots, or compares before and after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

/* ---- helpers ---------------------------------------------------------------
 */

/* The value on the sample line that starts with `series` (the metric name
 * and labels, exactly), or -1 when there is no such line. */
static long long sample(const char *text, const char *series) {
  size_t n = strlen(series);

  for (const char *line = text; line && *line;) {
    if (strncmp(line, series, n) == 0 && line[n] == ' ')
      return strtoll(line + n + 1, NULL, 10);
    line = strchr(line, '\n');
    if (line)
      line++;
  }
  return -1;
}

/* sample() on a fresh rendering. */
static long long current(const char *series) {
  char *text = hd_metrics_render();
  assert_non_null(text);
  long long v = sample(text, series);
  free(text);
  return v;
}

/* current(), with an absent series (a counter not yet rendered) as 0. */
static long long current_or_zero(const char *series) {
  long long v = current(series);
  return v < 0 ? 0 : v;
}

static int count_occurrences(const char *text, const char *needle) {
  int n = 0;

  for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/* ---- counters --------------------------------------------------------------
 */

static void test_calls_are_counted_by_method_name_and_code(void **state) {
  (void)state;
  hd_metrics_set_method_name(0, "/handlers.v1.Handlers/Dispatch");
  hd_metrics_set_method_name(1, "/handlers.v1.Handlers/AddHandler");
  for (int i = 0; i < 3; i++)
    hd_metrics_call(0, 0);
  hd_metrics_call(0, 5);
  hd_metrics_call(1, 3);
  hd_metrics_call(1, 16);

  char *text = hd_metrics_render();
  assert_non_null(text);
  assert_non_null(strstr(text, "# TYPE handlerd_grpc_calls_total counter\n"));
  assert_int_equal(sample(text, "handlerd_grpc_calls_total{method=\"/"
                                "handlers.v1.Handlers/Dispatch\",code=\"OK\"}"),
                   3);
  assert_int_equal(
      sample(text, "handlerd_grpc_calls_total{method=\"/handlers.v1.Handlers/"
                   "Dispatch\",code=\"NOT_FOUND\"}"),
      1);
  assert_int_equal(
      sample(text, "handlerd_grpc_calls_total{method=\"/handlers.v1.Handlers/"
                   "AddHandler\",code=\"INVALID_ARGUMENT\"}"),
      1);
  assert_int_equal(
      sample(text, "handlerd_grpc_calls_total{method=\"/handlers.v1.Handlers/"
                   "AddHandler\",code=\"UNAUTHENTICATED\"}"),
      1);
  /* A pair never counted is not rendered. */
  assert_int_equal(
      sample(text, "handlerd_grpc_calls_total{method=\"/handlers.v1.Handlers/"
                   "AddHandler\",code=\"OK\"}"),
      -1);
  free(text);
}

static void test_out_of_range_method_and_code_go_to_unknown(void **state) {
  (void)state;
  hd_metrics_set_method_name(2, "/test/Two");
  hd_metrics_call(HD_METRICS_METHODS, 0); /* past the table */
  hd_metrics_call(-1, 0);
  hd_metrics_call(1000, 0);
  hd_metrics_call(2, 17); /* past the status codes */
  hd_metrics_call(2, -4);

  char *text = hd_metrics_render();
  assert_non_null(text);
  /* The last slot has no name: "unknown". */
  assert_int_equal(
      sample(text, "handlerd_grpc_calls_total{method=\"unknown\",code=\"OK\"}"),
      3);
  assert_int_equal(sample(text, "handlerd_grpc_calls_total{method=\"/test/"
                                "Two\",code=\"UNKNOWN\"}"),
                   2);
  assert_null(strstr(text, "UNRECOGNIZED"));
  free(text);
}

static void test_refused_calls_are_counted_by_reason(void **state) {
  static const char *const reasons[] = {"unauthenticated",    "max_calls",
                                        "max_health_watches", "max_connections",
                                        "out_of_descriptors", "shutting_down"};
  long long before[6];
  char series[128];

  (void)state;
  for (int i = 0; i < 6; i++) {
    snprintf(series, sizeof(series),
             "handlerd_calls_refused_total{reason=\"%s\"}", reasons[i]);
    before[i] = current(series);
    /* Every named reason is rendered from the start, 0 included. */
    assert_true(before[i] >= 0);
  }
  assert_int_equal(current("handlerd_calls_refused_total{reason=\"other\"}"),
                   -1);
  for (int i = 0; i < 6; i++)
    for (int k = 0; k <= i; k++)
      hd_metrics_call_refused(reasons[i]);
  hd_metrics_call_refused("no such reason");
  hd_metrics_call_refused(NULL);

  char *text = hd_metrics_render();
  assert_non_null(text);
  assert_non_null(
      strstr(text, "# TYPE handlerd_calls_refused_total counter\n"));
  for (int i = 0; i < 6; i++) {
    snprintf(series, sizeof(series),
             "handlerd_calls_refused_total{reason=\"%s\"}", reasons[i]);
    assert_int_equal(sample(text, series), before[i] + i + 1);
  }
  assert_int_equal(
      sample(text, "handlerd_calls_refused_total{reason=\"other\"}"), 2);
  free(text);
}

static void test_unnamed_slot_renders_as_unknown(void **state) {
  (void)state;
  hd_metrics_set_method_name(HD_METRICS_METHODS, "/ignored"); /* no slot */
  hd_metrics_set_method_name(-1, "/ignored");
  hd_metrics_call(3, 13); /* slot 3 never named */

  char *text = hd_metrics_render();
  assert_non_null(text);
  assert_int_equal(sample(text, "handlerd_grpc_calls_total{method=\"unknown\","
                                "code=\"INTERNAL\"}"),
                   1);
  assert_null(strstr(text, "/ignored"));
  free(text);
}

static void test_results_are_counted_by_kind_and_outcome(void **state) {
  (void)state;
  const char *ok =
      "handlerd_handler_results_total{kind=\"webhook\",outcome=\"ok\"}";
  const char *failed =
      "handlerd_handler_results_total{kind=\"webhook\",outcome=\"error\"}";
  const char *other =
      "handlerd_handler_results_total{kind=\"other\",outcome=\"ok\"}";
  long long ok0 = current(ok), failed0 = current(failed),
            other0 = current(other);

  /* Every kind's lines are always there, zero included. */
  assert_true(ok0 >= 0 && failed0 >= 0 && other0 >= 0);
  hd_metrics_result("webhook", 1);
  hd_metrics_result("webhook", 42); /* any non-zero is ok */
  hd_metrics_result("webhook", 0);
  hd_metrics_result("brand-new-kind", 1);
  hd_metrics_result(NULL, 1);
  assert_int_equal(current(ok), ok0 + 2);
  assert_int_equal(current(failed), failed0 + 1);
  assert_int_equal(current(other), other0 + 2);
}

static void test_dispatches_by_event_and_code_with_latency(void **state) {
  (void)state;
  const char *upd = "handlerd_dispatches_total{event=\"update\",code=\"OK\"}";
  const char *bad =
      "handlerd_dispatches_total{event=\"other\",code=\"INVALID_ARGUMENT\"}";
  const char *le1ms = "handlerd_dispatch_duration_seconds_bucket{le=\"0.001\"}";
  const char *inf = "handlerd_dispatch_duration_seconds_bucket{le=\"+Inf\"}";
  const char *count = "handlerd_dispatch_duration_seconds_count";
  long long upd0 = current_or_zero(upd), bad0 = current_or_zero(bad);
  long long le0 = current(le1ms), inf0 = current(inf), count0 = current(count);

  hd_metrics_dispatch("update", 0, 500000);     /* 0.5 ms */
  hd_metrics_dispatch("update", 0, 2000000000); /* 2 s */
  hd_metrics_dispatch("made-up", 3, -1);        /* never ran: no latency */
  assert_int_equal(current(upd), upd0 + 2);
  assert_int_equal(current(bad), bad0 + 1);
  assert_int_equal(current(le1ms), le0 + 1);
  assert_int_equal(current(inf), inf0 + 2);
  assert_int_equal(current(count), count0 + 2);
}

static void test_webhook_attempts_retries_and_deliveries(void **state) {
  (void)state;
  const char *attempts = "handlerd_webhook_attempts_total";
  const char *retries = "handlerd_webhook_retries_total";
  const char *timeouts =
      "handlerd_webhook_deliveries_total{code=\"DEADLINE_EXCEEDED\"}";
  const char *count = "handlerd_webhook_delivery_duration_seconds_count";
  long long a0 = current(attempts), r0 = current(retries),
            t0 = current_or_zero(timeouts), c0 = current(count);

  assert_true(a0 >= 0 && r0 >= 0);
  hd_metrics_webhook_attempt(0);
  for (int i = 0; i < 4; i++)
    hd_metrics_webhook_attempt(1);
  hd_metrics_webhook_delivery(4, 1000000);
  assert_int_equal(current(attempts), a0 + 5);
  assert_int_equal(current(retries), r0 + 4);
  assert_int_equal(current(timeouts), t0 + 1);
  assert_int_equal(current(count), c0 + 1);
}

static void test_build_info(void **state) {
  (void)state;
  assert_int_equal(current("handlerd_build_info{version=\"" HD_VERSION "\"}"),
                   1);
}

/* ---- gauges ----------------------------------------------------------------
 */

static int64_t read_int64(void *ud) {
  return *(int64_t *)ud;
}

static int64_t minus_seven(void *ud) {
  (void)ud;
  return -7;
}

static void test_gauge_renders_its_callbacks_value(void **state) {
  (void)state;
  int64_t v = 17;

  hd_metrics_set_gauge("handlerd_test_things", "Things, for the test.",
                       read_int64, &v);
  char *text = hd_metrics_render();
  assert_non_null(text);
  assert_non_null(strstr(text,
                         "# HELP handlerd_test_things Things, for the test.\n"
                         "# TYPE handlerd_test_things gauge\n"
                         "handlerd_test_things 17\n"));
  free(text);
  v = 123456789012LL; /* read at every rendering */
  assert_true(current("handlerd_test_things") == 123456789012LL);
  /* Leave no pointer to this stack frame behind. */
  hd_metrics_set_gauge("handlerd_test_things", "Things, for the test.",
                       minus_seven, NULL);
}

/* A counter reads like a gauge and says TYPE counter: Prometheus' rate()
 * and increase() need that. */
static void test_counter_renders_as_a_counter(void **state) {
  static int64_t v = 42;
  (void)state;

  hd_metrics_set_counter("handlerd_test_things_total", "Things so far.",
                         read_int64, &v);
  char *text = hd_metrics_render();
  assert_non_null(text);
  assert_non_null(strstr(text, "# HELP handlerd_test_things_total Things so "
                               "far.\n"
                               "# TYPE handlerd_test_things_total counter\n"
                               "handlerd_test_things_total 42\n"));
  free(text);
}

/* handlerd registers 14 gauges with --state-dir (main.c and the outbox):
 * every one must be rendered (a cap of 8 once dropped six in silence). */
static void test_twenty_gauges_all_render(void **state) {
  static char names[20][32];
  static int64_t values[20];
  char *text;

  (void)state;
  for (int i = 0; i < 20; i++) {
    snprintf(names[i], sizeof(names[i]), "handlerd_test_many_%d", i);
    values[i] = 1000 + i;
    hd_metrics_set_gauge(names[i], "Many.", read_int64, &values[i]);
  }
  text = hd_metrics_render();
  assert_non_null(text);
  for (int i = 0; i < 20; i++)
    assert_int_equal(sample(text, names[i]), 1000 + i);
  free(text);
}

static void test_reregistering_a_gauge_replaces_its_callback(void **state) {
  (void)state;
  static int64_t a = 1, b = 2;

  hd_metrics_set_gauge("handlerd_test_replaced", "Replaced.", read_int64, &a);
  hd_metrics_set_gauge("handlerd_test_other", "Other.", read_int64, &b);
  assert_int_equal(current("handlerd_test_replaced"), 1);
  hd_metrics_set_gauge("handlerd_test_replaced", "Replaced.", minus_seven,
                       NULL);

  char *text = hd_metrics_render();
  assert_non_null(text);
  assert_int_equal(sample(text, "handlerd_test_replaced"), -7);
  assert_int_equal(sample(text, "handlerd_test_other"), 2);
  /* Replaced, not registered twice. */
  assert_int_equal(count_occurrences(text, "\nhandlerd_test_replaced "), 1);
  assert_int_equal(count_occurrences(text, "# TYPE handlerd_test_replaced "),
                   1);
  free(text);
}

/* ---- the HTTP endpoint -----------------------------------------------------
 */

/* A port free on 127.0.0.1 right now. */
static int free_port(void) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  close(fd);
  return ntohs(sa.sin_port);
}

typedef struct body {
  char *data;
  size_t len;
} body;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  body *b = ud;
  char *grown = realloc(b->data, b->len + size * n + 1);

  if (!grown)
    return 0;
  memcpy(grown + b->len, p, size * n);
  b->len += size * n;
  grown[b->len] = '\0';
  b->data = grown;
  return size * n;
}

/* Fetches `url` (POST when `post`); returns the HTTP status, fills `out`
 * (caller frees out->data) and `ctype` (content type, may be empty). */
static long http_get(const char *url, int post, body *out, char *ctype,
                     size_t ctype_size) {
  CURL *c = curl_easy_init();
  long status = 0;
  char *ct = NULL;

  assert_non_null(c);
  out->data = NULL;
  out->len = 0;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  if (post)
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "x=1");
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK)
    fail_msg("GET %s: %s", url, curl_easy_strerror(rc));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
  snprintf(ctype, ctype_size, "%s", ct ? ct : "");
  curl_easy_cleanup(c);
  return status;
}

static void test_server_serves_metrics_and_404_elsewhere(void **state) {
  (void)state;
  char addr[64], url[128], ctype[128], msg[256] = "";
  hd_metrics_server *s = NULL;
  body b;
  hd_err err = HD_EIO;
  int port = 0;

  /* The free port may be taken again between the probe and the bind. */
  for (int tries = 0; tries < 5 && err == HD_EIO; tries++) {
    port = free_port();
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    err = hd_metrics_server_start(addr, &s, msg, sizeof(msg));
  }
  if (err != HD_OK)
    fail_msg("cannot start the metrics server: %s", msg);
  assert_non_null(s);

  hd_metrics_set_method_name(4, "/test/Scraped");
  hd_metrics_call(4, 14);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
  assert_int_equal(http_get(url, 0, &b, ctype, sizeof(ctype)), 200);
  assert_non_null(b.data);
  assert_non_null(strstr(ctype, "text/plain"));
  assert_non_null(strstr(b.data, "# TYPE handlerd_webhook_attempts_total"));
  assert_int_equal(sample(b.data, "handlerd_grpc_calls_total{method=\"/test/"
                                  "Scraped\",code=\"UNAVAILABLE\"}"),
                   1);
  free(b.data);

  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
  assert_int_equal(http_get(url, 0, &b, ctype, sizeof(ctype)), 404);
  assert_non_null(b.data);
  assert_non_null(strstr(b.data, "/metrics"));
  free(b.data);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics/x", port);
  assert_int_equal(http_get(url, 0, &b, ctype, sizeof(ctype)), 404);
  free(b.data);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
  assert_int_equal(http_get(url, 1, &b, ctype, sizeof(ctype)), 405);
  free(b.data);

  hd_metrics_server_stop(s);
  hd_metrics_server_stop(NULL); /* documented no-op */
}

static void test_server_bad_address_is_einval(void **state) {
  (void)state;
  static const char *const bad[] = {
      "nonsense",        /* no port */
      "127.0.0.1:70000", /* port out of range */
      "127.0.0.1:-1",    /* negative port */
      "localhost:9464",  /* not an IPv4 literal */
      "256.0.0.1:9464",  /* not an IPv4 address */
      "::1:9464",        /* IPv6 */
      "127.0.0.1:",      /* empty port */
      "127.0.0.1:abc",   /* not a number */
      "127.0.0.1:80x",   /* trailing garbage */
  };

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    hd_metrics_server *s = NULL;
    char msg[256] = "";
    hd_err err = hd_metrics_server_start(bad[i], &s, msg, sizeof(msg));
    if (err != HD_EINVAL)
      fail_msg("'%s': %s, want EINVAL", bad[i], hd_strerror(err));
    assert_null(s);
    assert_non_null(strstr(msg, bad[i]));
  }
}

static void test_server_port_in_use_is_eio(void **state) {
  (void)state;
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  char addr[64], msg[256] = "";
  hd_metrics_server *s = NULL;

  assert_true(fd >= 0);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 1), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));

  assert_int_equal(hd_metrics_server_start(addr, &s, msg, sizeof(msg)), HD_EIO);
  assert_null(s);
  /* It names the address and the port and says why. */
  assert_non_null(strstr(msg, addr));
  assert_non_null(strstr(msg, "--metrics-listen"));
  snprintf(addr, sizeof(addr), "port %d is already in use", ntohs(sa.sin_port));
  if (strstr(msg, addr) == NULL)
    fail_msg("the message does not say the port is in use: %s", msg);
  close(fd);
}

static void test_server_stop_frees_the_port(void **state) {
  char addr[64], msg[256] = "";
  hd_metrics_server *s = NULL;
  hd_err err = HD_EIO;

  (void)state;
  for (int tries = 0; tries < 5 && err == HD_EIO; tries++) {
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", free_port());
    err = hd_metrics_server_start(addr, &s, msg, sizeof(msg));
  }
  if (err != HD_OK)
    fail_msg("cannot start the metrics server: %s", msg);
  /* While it runs the port is taken; once stopped it can serve again. */
  hd_metrics_server *again = NULL;
  assert_int_equal(hd_metrics_server_start(addr, &again, msg, sizeof(msg)),
                   HD_EIO);
  hd_metrics_server_stop(s);
  if (hd_metrics_server_start(addr, &again, msg, sizeof(msg)) != HD_OK)
    fail_msg("the port stayed taken after stop: %s", msg);
  hd_metrics_server_stop(again);
}

static int group_setup(void **state) {
  (void)state;
  return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  curl_global_cleanup();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_calls_are_counted_by_method_name_and_code),
      cmocka_unit_test(test_out_of_range_method_and_code_go_to_unknown),
      cmocka_unit_test(test_unnamed_slot_renders_as_unknown),
      cmocka_unit_test(test_refused_calls_are_counted_by_reason),
      cmocka_unit_test(test_results_are_counted_by_kind_and_outcome),
      cmocka_unit_test(test_dispatches_by_event_and_code_with_latency),
      cmocka_unit_test(test_build_info),
      cmocka_unit_test(test_webhook_attempts_retries_and_deliveries),
      cmocka_unit_test(test_gauge_renders_its_callbacks_value),
      cmocka_unit_test(test_counter_renders_as_a_counter),
      cmocka_unit_test(test_reregistering_a_gauge_replaces_its_callback),
      cmocka_unit_test(test_server_serves_metrics_and_404_elsewhere),
      cmocka_unit_test(test_twenty_gauges_all_render),
      cmocka_unit_test(test_server_bad_address_is_einval),
      cmocka_unit_test(test_server_port_in_use_is_eio),
      cmocka_unit_test(test_server_stop_frees_the_port),
  };

  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
