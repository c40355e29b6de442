/*
 * Unit tests: the registration flags handlerctl's `add` and `update` share
 * (client/cli/handler_args.c: --selector, --derive-old-value, targets,
 * routes, events, webhook and async options and their conflicts), the
 * arguments of `rotate-secret --overlap` and of `--route EVENT` (remove,
 * rotate-secret), and the listing's new fields in JSON. Command lines go
 * through getopt_long with the option table the commands use
 * (HCLI_HANDLER_OPTIONS). Linked with hcli_base (tests/CMakeLists.txt).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "handler_args.h"

/* ---- helpers ------------------------------------------------------------ */

static const struct option table[] = {HCLI_HANDLER_OPTIONS, {0, 0, 0, 0}};

/* Parses `args` (NULL-terminated, without the command name) as `add` and
 * `update` do: each option through hcli_handler_option, then
 * hcli_handler_check. Returns 0 with *out set (free with
 * hcli_handler_args_free), or -1 with the reason in `err`. */
static int parse(hcli_handler_args **out, char *err, size_t err_size, ...) {
  char *argv[64];
  int argc = 0;
  argv[argc++] = (char *)"add";
  va_list ap;
  va_start(ap, err_size);
  for (char *s; (s = va_arg(ap, char *)) != NULL && argc < 63;)
    argv[argc++] = s;
  va_end(ap);
  argv[argc] = NULL;

  hcli_handler_args *a = hcli_handler_args_new();
  assert_non_null(a);
  int rc = 0, c;
  optind = 0; /* glibc: full re-initialisation */
  opterr = 0;
  while (rc == 0 && (c = getopt_long(argc, argv, ":", table, NULL)) != -1) {
    if (c == '?' || c == ':')
      fail_msg("getopt_long refused '%s'", argv[optind - 1]);
    rc = hcli_handler_option(a, c, optarg, err, err_size);
    if (rc == 1)
      fail_msg("option %d of the table not taken", c);
  }
  if (rc == 0 && optind < argc)
    fail_msg("positional argument '%s'", argv[optind]);
  if (rc == 0)
    rc = hcli_handler_check(a, err, err_size);
  if (rc != 0) {
    hcli_handler_args_free(a);
    return -1;
  }
  *out = a;
  return 0;
}

#define PARSE_OK(a, ...)                                                       \
  do {                                                                         \
    char why_[512] = "";                                                       \
    if (parse(&(a), why_, sizeof why_, __VA_ARGS__, (char *)NULL) != 0)        \
      fail_msg("refused: %s", why_);                                           \
  } while (0)

/* The command line must be refused with a message containing `why`. */
#define PARSE_BAD(why, ...)                                                    \
  do {                                                                         \
    char why_[512] = "";                                                       \
    hcli_handler_args *a_ = NULL;                                              \
    if (parse(&a_, why_, sizeof why_, __VA_ARGS__, (char *)NULL) == 0) {       \
      hcli_handler_args_free(a_);                                              \
      fail_msg("taken, expected a refusal with '%s'", (why));                  \
    }                                                                          \
    if (strstr(why_, (why)) == NULL)                                           \
      fail_msg("message '%s' lacks '%s'", why_, (why));                        \
  } while (0)

/* ---- --selector, --derive-old-value ------------------------------------- */

static void test_selector_is_passed_as_written(void **state) {
  /* The client does not judge selectors: handlerd parses them and names
   * the position of a mistake, so even an invalid one goes through. */
  static const char *const selectors[] = {
      ">prices/eur", "?prices/.*", "*prices/e.*", "#>a////>b",
      "?prices//",   "?prices/",   "prices//",    "prices/",
      "?prices/(",   "a b/c d",    "-leading",    "\xc3\xa9t\xc3\xa9/x"};
  (void)state;
  for (size_t i = 0; i < sizeof selectors / sizeof selectors[0]; i++) {
    hcli_handler_args *a;
    PARSE_OK(a, "--key", "k", "--local", "echo", "--selector", selectors[i]);
    const hc_handler_spec *spec = hcli_handler_spec(a);
    assert_non_null(spec->selector);
    assert_string_equal(spec->selector, selectors[i]);
    assert_int_equal(spec->derive_old_value, 0);
    hcli_handler_args_free(a);
  }
}

static void test_selector_and_derive_on_every_kind(void **state) {
  hcli_handler_args *a;
  (void)state;
  PARSE_OK(a, "--key", "k", "--route", "update=local:echo", "--route",
           "error=http://127.0.0.1:1/h", "--selector=?a/.*",
           "--derive-old-value");
  const hc_handler_spec *spec = hcli_handler_spec(a);
  assert_string_equal(spec->selector, "?a/.*");
  assert_int_equal(spec->derive_old_value, 1);
  assert_int_equal(spec->n_routes, 2);
  hcli_handler_args_free(a);

  PARSE_OK(a, "--key", "k", "--webhook", "http://127.0.0.1:1/h",
           "--derive-old-value");
  spec = hcli_handler_spec(a);
  assert_null(spec->selector); /* none given: every topic */
  assert_int_equal(spec->derive_old_value, 1);
  hcli_handler_args_free(a);
}

static void test_selector_empty_or_twice_is_refused(void **state) {
  (void)state;
  PARSE_BAD("--selector must not be empty", "--key", "k", "--local", "echo",
            "--selector", "");
  PARSE_BAD("--selector given twice", "--key", "k", "--local", "echo",
            "--selector", ">a", "--selector", ">b");
}

/* ---- targets, routes and their conflicts --------------------------------- */

static void test_spec_from_routes(void **state) {
  hcli_handler_args *a;
  (void)state;
  PARSE_OK(a, "--key", "prices", "--route", "update=http://127.0.0.1:1/u",
           "--route", "subscribe=local:count", "--new-secret", "--header",
           "X-Team: pricing", "--timeout-ms", "2000");
  const hc_handler_spec *spec = hcli_handler_spec(a);
  assert_string_equal(spec->key, "prices");
  assert_null(spec->target.local);
  assert_null(spec->target.webhook);
  assert_int_equal(spec->n_routes, 2);
  assert_string_equal(spec->routes[0].event, "update");
  const hc_webhook *w = spec->routes[0].target.webhook;
  assert_non_null(w);
  assert_string_equal(w->url, "http://127.0.0.1:1/u");
  assert_int_equal(w->new_secret, 1);
  assert_int_equal(w->timeout_ms, 2000);
  assert_int_equal(w->n_headers, 1);
  assert_string_equal(w->headers[0].name, "X-Team");
  assert_string_equal(w->headers[0].value, "pricing");
  assert_string_equal(spec->routes[1].event, "subscribe");
  assert_string_equal(spec->routes[1].target.local, "count");
  assert_null(spec->routes[1].target.webhook);
  hcli_handler_args_free(a);
}

static void test_spec_from_a_webhook_without_secret(void **state) {
  /* update: no --secret and no --new-secret sends neither, so the server
   * keeps the webhook's secret. */
  hcli_handler_args *a;
  (void)state;
  PARSE_OK(a, "--key", "k", "--webhook", "https://example.test/h", "--events",
           "update, subscribe", "--events", "error");
  const hc_handler_spec *spec = hcli_handler_spec(a);
  const hc_webhook *w = spec->target.webhook;
  assert_non_null(w);
  assert_string_equal(w->url, "https://example.test/h");
  assert_null(w->secret);
  assert_int_equal(w->new_secret, 0);
  assert_int_equal(spec->n_events, 3);
  assert_string_equal(spec->events[0], "update");
  assert_string_equal(spec->events[1], "subscribe");
  assert_string_equal(spec->events[2], "error");
  hcli_handler_args_free(a);
}

static void test_flag_conflicts(void **state) {
  (void)state;
  PARSE_BAD("missing --key", "--local", "echo");
  PARSE_BAD("missing --key", "--key", "", "--local", "echo");
  PARSE_BAD("give one of --local NAME, --webhook URL or --route", "--key", "k");
  PARSE_BAD("exclude each other", "--key", "k", "--local", "echo", "--webhook",
            "http://x/");
  PARSE_BAD("exclude each other", "--key", "k", "--local", "echo", "--route",
            "update=local:echo");
  PARSE_BAD("--local given twice", "--key", "k", "--local", "echo", "--local",
            "count");
  PARSE_BAD("--webhook given twice", "--key", "k", "--webhook", "http://x/",
            "--webhook", "http://y/");
  PARSE_BAD("--events is for --local/--webhook", "--key", "k", "--route",
            "update=local:echo", "--events", "update");
  PARSE_BAD("--secret and --new-secret exclude each other", "--key", "k",
            "--webhook", "http://x/", "--secret", "whsec_x", "--new-secret");
  PARSE_BAD("webhook options need --webhook URL or a URL route", "--key", "k",
            "--local", "echo", "--new-secret");
  PARSE_BAD("webhook options need", "--key", "k", "--route",
            "update=local:echo", "--header", "A: b");
  PARSE_BAD("--ordered is for async webhooks: add --async", "--key", "k",
            "--webhook", "http://x/", "--ordered");
  PARSE_BAD("--max-rps is for async webhooks", "--key", "k", "--webhook",
            "http://x/", "--max-rps", "2");
  PARSE_BAD("--max-attempts does not apply to --async", "--key", "k",
            "--webhook", "http://x/", "--async", "--max-attempts", "3");
}

static void test_bad_values_name_their_flag(void **state) {
  (void)state;
  PARSE_BAD("--route takes EVENT=TARGET", "--key", "k", "--route", "update");
  PARSE_BAD("--route takes EVENT=TARGET", "--key", "k", "--route",
            "=local:echo");
  PARSE_BAD("--route takes EVENT=TARGET", "--key", "k", "--route", "update=");
  PARSE_BAD("two routes for event 'update'", "--key", "k", "--route",
            "update=local:echo", "--route", "update=local:count");
  PARSE_BAD("neither local:NAME nor an http(s) URL", "--key", "k", "--route",
            "update=ftp://x");
  PARSE_BAD("neither local:NAME nor", "--key", "k", "--route", "update=local:");
  PARSE_BAD("--header takes 'NAME: VALUE'", "--key", "k", "--webhook",
            "http://x/", "--header", "nocolon");
  PARSE_BAD("--timeout-ms needs a positive number", "--key", "k", "--webhook",
            "http://x/", "--timeout-ms", "0");
  PARSE_BAD("--max-attempts needs a positive number", "--key", "k", "--webhook",
            "http://x/", "--max-attempts", "many");
  PARSE_BAD("--retry-schedule: ", "--key", "k", "--webhook", "http://x/",
            "--async", "--retry-schedule", "1s");
  PARSE_BAD("--max-inflight needs a positive number", "--key", "k", "--webhook",
            "http://x/", "--async", "--max-inflight", "0");
}

static void test_option_outside_the_table_is_not_taken(void **state) {
  hcli_handler_args *a = hcli_handler_args_new();
  char err[64] = "";
  (void)state;
  assert_int_equal(hcli_handler_option(a, 'q', NULL, err, sizeof err), 1);
  assert_int_equal(hcli_handler_option(a, HCLI_H_END, "x", err, sizeof err), 1);
  assert_string_equal(err, "");
  hcli_handler_args_free(a);
}

/* ---- --route EVENT (remove, rotate-secret) ------------------------------- */

static void test_route_names(void **state) {
  char err[256];
  (void)state;
  assert_int_equal(hcli_check_route_name("update", err, sizeof err), 0);
  assert_int_equal(hcli_check_route_name("my-custom.event", err, sizeof err),
                   0);
  assert_int_equal(hcli_check_route_name("", err, sizeof err), -1);
  assert_non_null(strstr(err, "--route needs an event name"));
  assert_int_equal(hcli_check_route_name(NULL, err, sizeof err), -1);
  assert_int_equal(hcli_check_route_name("update=local:echo", err, sizeof err),
                   -1);
  assert_non_null(strstr(err, "not EVENT=TARGET"));
  assert_non_null(strstr(err, "'update=local:echo'"));
}

/* ---- --overlap ------------------------------------------------------------
 */

static int64_t overlap_ok(const char *s) {
  int64_t ms = -1;
  char err[256] = "";
  if (hcli_parse_overlap_ms(s, &ms, err, sizeof err) != 0)
    fail_msg("overlap '%s' refused: %s", s, err);
  return ms;
}

static void overlap_bad(const char *s, const char *why) {
  int64_t ms = -1;
  char err[256] = "";
  if (hcli_parse_overlap_ms(s, &ms, err, sizeof err) == 0)
    fail_msg("overlap '%s' taken as %lld ms", s, (long long)ms);
  if (strstr(err, why) == NULL)
    fail_msg("overlap '%s': message '%s' lacks '%s'", s, err, why);
  if (ms != -1)
    fail_msg("overlap '%s' refused but wrote %lld", s, (long long)ms);
}

static void test_overlap_durations(void **state) {
  (void)state;
  assert_int_equal(overlap_ok("24h"), 86400000LL);
  assert_int_equal(overlap_ok("300ms"), 300);
  assert_int_equal(overlap_ok("1ms"), 1);
  assert_int_equal(overlap_ok("90s"), 90000);
  assert_int_equal(overlap_ok("15m"), 900000);
  assert_int_equal(overlap_ok("7d"), 7LL * 86400000LL);
  assert_int_equal(overlap_ok("30d"), 30LL * 86400000LL);
  assert_int_equal(overlap_ok("45"), 45000); /* a bare number: seconds */
}

static void test_bad_overlaps_are_refused(void **state) {
  (void)state;
  /* 0 would be the API's "default" (24 h), the opposite of what it says. */
  overlap_bad("0", "must be longer than 0");
  overlap_bad("0ms", "must be longer than 0");
  overlap_bad("0h", "leave it out for the default, 24h");
  overlap_bad("", "--overlap: ");
  overlap_bad("soon", "is not a duration");
  overlap_bad("-5m", "is not a duration");
  overlap_bad("1.5h", "is not a duration");
  overlap_bad("1h30m", "is not a duration");
  overlap_bad("24 h", "is not a duration");
  overlap_bad("2w", "is not a duration");
  overlap_bad("10001d", "is not a duration");
}

/* ---- the listing ----------------------------------------------------------
 */

static void test_list_json_has_selector_and_derive(void **state) {
  char *events[] = {(char *)"update"};
  hc_handler_info items[2];
  (void)state;
  memset(items, 0, sizeof items);
  items[0] = (hc_handler_info){.key = (char *)"k",
                               .handler_id = (char *)"h-1",
                               .kind = HC_KIND_SIMPLE,
                               .target = (char *)"local:echo",
                               .events = events,
                               .n_events = 1,
                               .selector = (char *)"?prices/.*",
                               .derive_old_value = 1};
  items[1] = (hc_handler_info){.key = (char *)"k",
                               .handler_id = (char *)"h-2",
                               .kind = HC_KIND_SIMPLE,
                               .target = (char *)"local:count",
                               .selector = (char *)""};
  hc_handler_list l = {2, items};
  json_t *doc = hcli_list_json(&l);
  json_t *hs = json_object_get(doc, "handlers");
  assert_int_equal(json_array_size(hs), 2);
  json_t *h0 = json_array_get(hs, 0), *h1 = json_array_get(hs, 1);
  assert_string_equal(json_string_value(json_object_get(h0, "selector")),
                      "?prices/.*");
  assert_true(json_is_true(json_object_get(h0, "derive_old_value")));
  assert_string_equal(json_string_value(json_object_get(h1, "selector")), "");
  assert_true(json_is_false(json_object_get(h1, "derive_old_value")));
  json_decref(doc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_selector_is_passed_as_written),
      cmocka_unit_test(test_selector_and_derive_on_every_kind),
      cmocka_unit_test(test_selector_empty_or_twice_is_refused),
      cmocka_unit_test(test_spec_from_routes),
      cmocka_unit_test(test_spec_from_a_webhook_without_secret),
      cmocka_unit_test(test_flag_conflicts),
      cmocka_unit_test(test_bad_values_name_their_flag),
      cmocka_unit_test(test_option_outside_the_table_is_not_taken),
      cmocka_unit_test(test_route_names),
      cmocka_unit_test(test_overlap_durations),
      cmocka_unit_test(test_bad_overlaps_are_refused),
      cmocka_unit_test(test_list_json_has_selector_and_derive),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
