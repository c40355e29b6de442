/*
 * Unit tests: the address handlerctl and the client library connect to
 * (client/src/target.c): one host:port and gRPC URIs pass through unchanged,
 * a comma-separated list of IP addresses becomes one ipv4:/ipv6: target with
 * round_robin, a bad list is refused with a message naming the address; and
 * the channel's service config (round_robin, retries of the idempotent
 * methods only). Linked with hcli_base (tests/CMakeLists.txt), which links
 * the client library and jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "target.h"

/* ---- helpers ------------------------------------------------------------ */

/* `addrs` must be taken; returns what it became (clear it). */
static hc_channel_target target_ok(const char *addrs) {
  hc_channel_target t;
  char msg[512] = "";
  hc_err err = hc__target_from_addrs(addrs, &t, msg, sizeof msg);
  if (err != HC_OK)
    fail_msg("'%s' refused (%s): %s", addrs, hc_strerror(err), msg);
  assert_non_null(t.target);
  return t;
}

/* `addrs` must be refused with HC_EINVAL, its message containing `why` and
 * `names` (the entry at fault; NULL: not checked). */
static void target_bad(const char *addrs, const char *why, const char *names) {
  hc_channel_target t;
  char msg[512] = "";
  hc_err err = hc__target_from_addrs(addrs, &t, msg, sizeof msg);
  if (err != HC_EINVAL)
    fail_msg("'%s' gave %s (target '%s'), expected HC_EINVAL", addrs,
             hc_strerror(err), t.target ? t.target : "(null)");
  assert_null(t.target);
  assert_null(t.authority);
  if (strstr(msg, why) == NULL)
    fail_msg("'%s': message '%s' lacks '%s'", addrs, msg, why);
  if (names != NULL && strstr(msg, names) == NULL)
    fail_msg("'%s': message '%s' does not name '%s'", addrs, msg, names);
  /* The public check says the same. */
  char msg2[512] = "";
  assert_int_equal(hc_addr_check(addrs, msg2, sizeof msg2), HC_EINVAL);
  assert_string_equal(msg, msg2);
}

/* ---- one address, URIs ---------------------------------------------------
 */

static void test_single_address_unchanged(void **state) {
  (void)state;
  const char *cases[] = {"127.0.0.1:50051", "localhost:50051",
                         "[::1]:50051",     "handlerd.example.test:443",
                         "localhost",       "127.0.0.1"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hc_channel_target t = target_ok(cases[i]);
    assert_string_equal(t.target, cases[i]);
    assert_null(t.authority);
    assert_int_equal(t.n_addrs, 1);
    assert_int_equal(t.round_robin, 0); /* pick_first, as always */
    hc__channel_target_clear(&t);
    assert_null(t.target);
  }
}

static void test_uris_pass_through(void **state) {
  (void)state;
  struct {
    const char *uri;
    size_t n;
    int rr;
  } cases[] = {
      {"unix:/run/handlerd.sock", 1, 0},
      {"unix:///run/handlerd.sock", 1, 0},
      {"unix-abstract:handlerd", 1, 0},
      {"dns:///handlerd-headless.ns.svc:50051", 1, 1},
      {"dns:localhost:50051", 1, 1},
      {"ipv4:127.0.0.1:7001", 1, 0},
      {"ipv4:127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003", 3, 1},
      {"ipv6:[::1]:7001,[::1]:7002", 2, 1},
      {"IPV4:127.0.0.1:1", 1, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hc_channel_target t = target_ok(cases[i].uri);
    assert_string_equal(t.target, cases[i].uri);
    assert_null(t.authority);
    assert_int_equal(t.n_addrs, cases[i].n);
    assert_int_equal(t.round_robin, cases[i].rr);
    hc__channel_target_clear(&t);
  }
}

/* ---- lists ------------------------------------------------------------ */

static void test_ipv4_list(void **state) {
  (void)state;
  hc_channel_target t = target_ok("127.0.0.1:7001,127.0.0.1:7002");
  assert_string_equal(t.target, "ipv4:127.0.0.1:7001,127.0.0.1:7002");
  assert_string_equal(t.authority, "127.0.0.1:7001");
  assert_int_equal(t.n_addrs, 2);
  assert_int_equal(t.round_robin, 1);
  hc__channel_target_clear(&t);

  t = target_ok("10.0.0.1:1,10.0.0.2:65535,10.0.0.3:50051");
  assert_string_equal(t.target,
                      "ipv4:10.0.0.1:1,10.0.0.2:65535,10.0.0.3:50051");
  assert_int_equal(t.n_addrs, 3);
  hc__channel_target_clear(&t);

  /* The same address twice is allowed (two connections' worth of it). */
  t = target_ok("127.0.0.1:1,127.0.0.1:1");
  assert_int_equal(t.n_addrs, 2);
  hc__channel_target_clear(&t);
}

static void test_ipv6_list(void **state) {
  (void)state;
  hc_channel_target t = target_ok("[::1]:7001,[::1]:7002");
  assert_string_equal(t.target, "ipv6:[::1]:7001,[::1]:7002");
  assert_string_equal(t.authority, "[::1]:7001");
  assert_int_equal(t.n_addrs, 2);
  assert_int_equal(t.round_robin, 1);
  hc__channel_target_clear(&t);

  t = target_ok("[2001:db8::1]:443,[fe80::1%eth0]:443");
  assert_string_equal(t.target, "ipv6:[2001:db8::1]:443,[fe80::1%eth0]:443");
  hc__channel_target_clear(&t);
}

static void test_empty(void **state) {
  (void)state;
  target_bad("", "empty", NULL);
  target_bad(",", "address 1 of ',' is empty", NULL);
  target_bad("127.0.0.1:1,", "address 2 of '127.0.0.1:1,' is empty", NULL);
  target_bad(",127.0.0.1:1", "address 1 of ',127.0.0.1:1' is empty", NULL);
  target_bad("127.0.0.1:1,,127.0.0.1:2", "address 2 of", "is empty");
  hc_channel_target t;
  assert_int_equal(hc__target_from_addrs(NULL, &t, NULL, 0), HC_EINVAL);
  assert_int_equal(hc__target_from_addrs("127.0.0.1:1", NULL, NULL, 0),
                   HC_EINVAL);
}

static void test_spaces(void **state) {
  (void)state;
  target_bad("127.0.0.1:1, 127.0.0.1:2", "contains a space", "' 127.0.0.1:2'");
  target_bad("127.0.0.1:1 ,127.0.0.1:2", "contains a space", "'127.0.0.1:1 '");
  target_bad("127.0.0.1:1,127.0.0.1:2\t", "contains a space", NULL);
}

static void test_ports(void **state) {
  (void)state;
  target_bad("127.0.0.1,127.0.0.1:2", "has no port", "'127.0.0.1'");
  target_bad("127.0.0.1:1,127.0.0.1:", "has no port", "'127.0.0.1:'");
  target_bad("[::1],[::1]:2", "has no port", "'[::1]'");
  target_bad("[::1]:,[::1]:2", "has no port", "'[::1]:'");
  target_bad("[::1]x1,[::1]:2", "has no port", "'[::1]x1'");
  target_bad("127.0.0.1:http,127.0.0.1:2", "bad port 'http'", "127.0.0.1:http");
  target_bad("127.0.0.1:0,127.0.0.1:2", "bad port '0'", NULL);
  target_bad("127.0.0.1:65536,127.0.0.1:2", "bad port '65536'", NULL);
  target_bad("127.0.0.1:1,127.0.0.1:-2", "bad port '-2'", NULL);
  target_bad("127.0.0.1:1,127.0.0.1:123456", "bad port", NULL);
}

static void test_not_ip_addresses(void **state) {
  (void)state;
  /* gRPC C core resolves one DNS name per target: names cannot be listed. */
  target_bad("localhost:7001,localhost:7002", "is a host name",
             "'localhost:7001'");
  target_bad("127.0.0.1:7001,replica-b.example:7002", "dns:///NAME:PORT",
             "'replica-b.example:7002'");
  target_bad("::1:7001,::1:7002", "goes in brackets", "'::1:7001'");
  target_bad("[::1:7001,[::1]:7002", "not an IPv6 address", "'[::1:7001'");
  target_bad("[127.0.0.1]:1,[::1]:2", "not an IPv6 address", "'[127.0.0.1]:1'");
  target_bad("[]:1,[::1]:2", "not an IPv6 address", NULL);
  target_bad(":1,127.0.0.1:2", "not an IPv4 address", "':1'");
  target_bad("127.0.0.256:1,127.0.0.1:2", "not an IPv4 address",
             "'127.0.0.256:1'");
  target_bad("1.2.3:1,127.0.0.1:2", "not an IPv4 address", "'1.2.3:1'");
  target_bad("unknown:1,127.0.0.1:2", "is a host name", "'unknown:1'");
}

static void test_mixed_families(void **state) {
  (void)state;
  target_bad("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6", "'[::1]:2'");
  target_bad("[::1]:2,127.0.0.1:1", "mixes IPv4 and IPv6", "'127.0.0.1:1'");
}

static void test_too_many(void **state) {
  (void)state;
  char list[2048] = "";
  for (int i = 1; i <= HC_ADDRS_MAX; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s127.0.0.1:%d",
             i > 1 ? "," : "", 7000 + i);
  hc_channel_target t = target_ok(list); /* exactly the most */
  assert_int_equal(t.n_addrs, HC_ADDRS_MAX);
  hc__channel_target_clear(&t);
  strcat(list, ",127.0.0.1:9999");
  char want[64];
  snprintf(want, sizeof want, "lists %d addresses: at most %d",
           HC_ADDRS_MAX + 1, HC_ADDRS_MAX);
  target_bad(list, want, "'127.0.0.1:7001,");
  /* Counted before the entries are read: empty ones too. */
  memset(list, ',', HC_ADDRS_MAX);
  list[HC_ADDRS_MAX] = '\0';
  target_bad(list, "at most", NULL);
}

static void test_message_cut_to_fit(void **state) {
  (void)state;
  hc_channel_target t;
  char small[16];
  memset(small, 'x', sizeof small);
  assert_int_equal(
      hc__target_from_addrs("127.0.0.1:1,,", &t, small, sizeof small),
      HC_EINVAL);
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_int_equal(hc_addr_check("127.0.0.1:1,,", NULL, 0), HC_EINVAL);
  assert_int_equal(hc_addr_check("127.0.0.1:1,127.0.0.1:2", NULL, 0), HC_OK);
}

/* ---- the service config ------------------------------------------------ */

/* The names of the methods `sc` retries, as "service/method" joined by
 * spaces, in `out`. Checks the retry policy on the way. */
static void retried_methods(json_t *sc, char *out, size_t size) {
  json_t *mc = json_object_get(sc, "methodConfig");
  assert_true(json_is_array(mc));
  assert_int_equal(json_array_size(mc), 1);
  json_t *entry = json_array_get(mc, 0);
  json_t *rp = json_object_get(entry, "retryPolicy");
  assert_non_null(rp);
  json_int_t attempts = json_integer_value(json_object_get(rp, "maxAttempts"));
  assert_true(attempts >= 3 && attempts <= 5);
  assert_string_equal(json_string_value(json_object_get(rp, "initialBackoff")),
                      "0.1s");
  assert_string_equal(json_string_value(json_object_get(rp, "maxBackoff")),
                      "1s");
  assert_true(json_number_value(json_object_get(rp, "backoffMultiplier")) ==
              2.0);
  json_t *codes = json_object_get(rp, "retryableStatusCodes");
  assert_int_equal(json_array_size(codes), 1);
  assert_string_equal(json_string_value(json_array_get(codes, 0)),
                      "UNAVAILABLE");
  out[0] = '\0';
  size_t i;
  json_t *name;
  json_array_foreach(json_object_get(entry, "name"), i, name) {
    snprintf(out + strlen(out), size - strlen(out), "%s%s/%s", i ? " " : "",
             json_string_value(json_object_get(name, "service")),
             json_string_value(json_object_get(name, "method")));
  }
}

static void test_service_config(void **state) {
  (void)state;
  static const char retried[] =
      "grpc.health.v1.Health/Check handlers.v1.Handlers/ListHandlers "
      "handlers.v1.Handlers/GetStats handlers.v1.Handlers/ListDeliveries "
      "handlers.v1.Handlers/GetDelivery";
  for (int rr = 0; rr <= 1; rr++) {
    json_error_t jerr;
    json_t *sc = json_loads(hc__service_config(rr), 0, &jerr);
    if (sc == NULL)
      fail_msg("service config %d is not JSON: %s: %s", rr, jerr.text,
               hc__service_config(rr));
    json_t *lb = json_object_get(sc, "loadBalancingConfig");
    if (rr) {
      assert_int_equal(json_array_size(lb), 1);
      assert_non_null(json_object_get(json_array_get(lb, 0), "round_robin"));
    } else {
      assert_null(lb); /* gRPC's default: pick_first */
    }
    char names[1024];
    retried_methods(sc, names, sizeof names);
    assert_string_equal(names, retried);
    /* Never what changes something or delivers an event. */
    const char *never[] = {"Dispatch",      "AddHandler",   "RemoveHandler",
                           "UpdateHandler", "Redeliver",    "Replay",
                           "RotateSecret",  "EnableWebhook"};
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
      char m[64];
      snprintf(m, sizeof m, "/%s", never[i]);
      if (strstr(names, m) != NULL)
        fail_msg("%s is retried", never[i]);
    }
    json_decref(sc);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_address_unchanged),
      cmocka_unit_test(test_uris_pass_through),
      cmocka_unit_test(test_ipv4_list),
      cmocka_unit_test(test_ipv6_list),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_spaces),
      cmocka_unit_test(test_ports),
      cmocka_unit_test(test_not_ip_addresses),
      cmocka_unit_test(test_mixed_families),
      cmocka_unit_test(test_too_many),
      cmocka_unit_test(test_message_cut_to_fit),
      cmocka_unit_test(test_service_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
