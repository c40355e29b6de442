/*
 * Webhook URL and address policy. Every check here is on literal addresses
 * or "localhost": nothing is sent anywhere and no outside DNS is needed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "webhook_url.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void assert_url_ok(const char *url, int deny_private) {
  char msg[256] = "";
  if (hd_webhook_url_check(url, deny_private, msg, sizeof msg) != HD_OK)
    fail_msg("%s (deny_private=%d) refused: %s", url, deny_private, msg);
}

/* Asserts a refusal whose message contains `why`. */
static void assert_url_refused(const char *url, int deny_private,
                               const char *why) {
  char msg[256] = "";
  const char *shown = url ? url : "(null)"; /* the NULL-URL case */
  if (hd_webhook_url_check(url, deny_private, msg, sizeof msg) != HD_EINVAL)
    fail_msg("%s (deny_private=%d) accepted", shown, deny_private);
  if (!strstr(msg, why))
    fail_msg("%s: message \"%s\" does not mention \"%s\"", shown, msg, why);
}

static int allowed_v4(const char *text, int deny_private) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  assert_int_equal(inet_pton(AF_INET, text, &sa.sin_addr), 1);
  return hd_addr_allowed((struct sockaddr *)&sa, deny_private);
}

static int allowed_v6(const char *text, int deny_private) {
  struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
  assert_int_equal(inet_pton(AF_INET6, text, &sa.sin6_addr), 1);
  return hd_addr_allowed((struct sockaddr *)&sa, deny_private);
}

static void test_loopback_url_accepted_unless_deny_private(void **state) {
  (void)state;
  assert_url_ok("http://127.0.0.1:8080/x", 0);
  assert_url_refused("http://127.0.0.1:8080/x", 1, "loopback");
  assert_url_ok("https://[::1]:8443/hook?a=b", 0);
  assert_url_refused("https://[::1]:8443/hook", 1, "loopback");
}

static void test_public_literal_accepted_with_deny_private(void **state) {
  (void)state;
  assert_url_ok("http://93.184.216.34/hook", 1);
  assert_url_ok("https://93.184.216.34:8443/hook", 1);
  assert_url_ok("https://[2606:2800:220:1:248:1893:25c8:1946]/", 1);
}

static void test_metadata_address_always_refused(void **state) {
  (void)state;
  assert_url_refused("http://169.254.169.254/latest/meta-data/", 0,
                     "link-local");
  assert_url_refused("http://169.254.169.254/latest/meta-data/", 1,
                     "link-local");
  /* the same address spelled as the resolver also accepts it */
  assert_url_refused("http://2852039166/", 0, "link-local");
  assert_url_refused("http://0xa9.0xfe.0xa9.0xfe/", 0, "link-local");
  assert_url_refused("http://169.254.169.254./", 0, "link-local");
}

static void test_ipv6_link_local_always_refused(void **state) {
  (void)state;
  assert_url_refused("http://[fe80::1]/", 0, "link-local");
  assert_url_refused("http://[fe80::1%25eth0]/", 0, "link-local");
  assert_url_refused("http://[febf::1]/", 0, "link-local");
}

static void test_ipv4_mapped_link_local_refused(void **state) {
  (void)state;
  assert_url_refused("http://[::ffff:169.254.1.1]/", 0, "link-local");
  assert_url_refused("http://[::ffff:a9fe:101]/", 0, "link-local");
  assert_url_refused("http://[::ffff:127.0.0.1]/", 1, "loopback");
  assert_url_ok("http://[::ffff:127.0.0.1]/", 0);
}

static void test_other_schemes_refused(void **state) {
  (void)state;
  assert_url_refused("ftp://93.184.216.34/x", 0, "scheme");
  assert_url_refused("file:///etc/passwd", 0, "scheme");
  assert_url_refused("gopher://93.184.216.34/", 0, "");
  assert_url_refused("93.184.216.34/hook", 0, "");
}

static void test_url_without_host_refused(void **state) {
  (void)state;
  assert_url_refused("http://", 0, "no host");
  assert_url_refused("http://:8080/x", 0, "no host");
}

static void test_url_with_credentials_refused(void **state) {
  (void)state;
  assert_url_refused("http://user:pass@93.184.216.34/", 0, "user:password");
  assert_url_refused("http://user@93.184.216.34/", 0, "user:password");
  assert_url_refused("http://:pass@93.184.216.34/", 0, "user:password");
}

static void test_garbage_refused(void **state) {
  (void)state;
  assert_url_refused("", 0, "empty");
  assert_url_refused("not a url", 0, "");
  assert_url_refused("http://exa mple.com/", 0, "parse");
  assert_url_refused("http://[::1/", 0, "parse");
  assert_url_refused(NULL, 0, "empty");
}

static void test_url_over_2048_bytes_refused(void **state) {
  (void)state;
  const char *head = "http://93.184.216.34/";
  size_t n = strlen(head);
  char *url = malloc(2050);
  assert_non_null(url);
  memcpy(url, head, n);
  memset(url + n, 'a', 2048 - n);
  url[2048] = '\0';
  assert_url_ok(url, 1); /* exactly 2048 is fine */
  url[2048] = 'a';
  url[2049] = '\0';
  assert_url_refused(url, 1, "2048");
  free(url);
}

static void test_localhost_name_refused_with_deny_private(void **state) {
  (void)state;
  assert_url_refused("http://localhost:8080/x", 1, "loopback");
  assert_url_refused("http://LOCALHOST./x", 1, "loopback");
  assert_url_refused("http://api.localhost/x", 1, "loopback");
  assert_url_ok("http://localhost:8080/x", 0);
}

static void test_addr_link_local_refused_always(void **state) {
  (void)state;
  assert_false(allowed_v4("169.254.0.1", 0));
  assert_false(allowed_v4("169.254.255.255", 0));
  assert_true(allowed_v4("169.253.255.255", 1));
  assert_true(allowed_v4("169.255.0.0", 1));
  assert_false(allowed_v6("fe80::1", 0));
  assert_false(allowed_v6("febf:ffff::1", 0));
  assert_true(allowed_v6("fec0::1", 0));
  assert_false(allowed_v6("::ffff:169.254.169.254", 0));
  assert_false(allowed_v6("64:ff9b::169.254.169.254", 0)); /* NAT64 */
}

static void test_addr_private_ranges_refused_with_deny_private(void **state) {
  (void)state;
  static const char *const v4[] = {
      "127.0.0.1",  "127.255.255.254", "10.0.0.1",    "10.255.255.255",
      "172.16.0.1", "172.31.255.255",  "192.168.0.1", "192.168.255.255",
      "100.64.0.1", "100.127.255.255", "0.0.0.0",     "0.1.2.3"};
  static const char *const v4_public[] = {
      "9.255.255.255",   "11.0.0.1",        "172.15.255.255", "172.32.0.0",
      "192.167.255.255", "192.169.0.0",     "100.63.255.255", "100.128.0.0",
      "1.0.0.0",         "126.255.255.255", "128.0.0.0",      "93.184.216.34"};
  static const char *const v6[] = {"::1",
                                   "::",
                                   "fc00::1",
                                   "fdff::1",
                                   "::ffff:10.1.2.3",
                                   "::ffff:127.0.0.1",
                                   "::ffff:0.0.0.0"};
  /* (fbff::1, fe00::1, ::2 and 2001:db8::1 were here: none is global
   * unicast, they are refused now; see test_addr_special_purpose_ranges.) */
  static const char *const v6_public[] = {"2606:2800:220:1::1",
                                          "::ffff:93.184.216.34"};

  for (size_t i = 0; i < sizeof v4 / sizeof v4[0]; i++) {
    if (allowed_v4(v4[i], 1))
      fail_msg("%s allowed with deny_private", v4[i]);
    if (!allowed_v4(v4[i], 0))
      fail_msg("%s refused without deny_private", v4[i]);
  }
  for (size_t i = 0; i < sizeof v4_public / sizeof v4_public[0]; i++)
    if (!allowed_v4(v4_public[i], 1))
      fail_msg("%s refused", v4_public[i]);
  for (size_t i = 0; i < sizeof v6 / sizeof v6[0]; i++) {
    if (allowed_v6(v6[i], 1))
      fail_msg("%s allowed with deny_private", v6[i]);
    if (!allowed_v6(v6[i], 0))
      fail_msg("%s refused without deny_private", v6[i]);
  }
  for (size_t i = 0; i < sizeof v6_public / sizeof v6_public[0]; i++)
    if (!allowed_v6(v6_public[i], 1))
      fail_msg("%s refused", v6_public[i]);
}

/* ---- every range of the deny table, in and just outside -------------- */

typedef struct addr_case {
  const char *addr;
  const char *why; /* with deny_private: the reason; NULL: allowed */
  int always;      /* refused without deny_private too */
} addr_case;

#define ALLOWED NULL

/* For each range: its first and last address, then the addresses just
 * below and just above it (allowed, or in a neighbouring range with its
 * own reason). */
static const addr_case v4_cases[] = {
    /* 0.0.0.0/8 */
    {"0.0.0.0", "unspecified", 0},
    {"0.255.255.255", "unspecified", 0},
    {"1.0.0.0", ALLOWED, 0},
    /* 10.0.0.0/8 */
    {"10.0.0.0", "private", 0},
    {"10.255.255.255", "private", 0},
    {"9.255.255.255", ALLOWED, 0},
    {"11.0.0.0", ALLOWED, 0},
    /* 100.64.0.0/10 */
    {"100.64.0.0", "shared (CGNAT)", 0},
    {"100.127.255.255", "shared (CGNAT)", 0},
    {"100.63.255.255", ALLOWED, 0},
    {"100.128.0.0", ALLOWED, 0},
    /* 127.0.0.0/8 */
    {"127.0.0.0", "loopback", 0},
    {"127.255.255.255", "loopback", 0},
    {"126.255.255.255", ALLOWED, 0},
    {"128.0.0.0", ALLOWED, 0},
    /* 169.254.0.0/16, always */
    {"169.254.0.0", "link-local", 1},
    {"169.254.255.255", "link-local", 1},
    {"169.253.255.255", ALLOWED, 0},
    {"169.255.0.0", ALLOWED, 0},
    /* 172.16.0.0/12 */
    {"172.16.0.0", "private", 0},
    {"172.31.255.255", "private", 0},
    {"172.15.255.255", ALLOWED, 0},
    {"172.32.0.0", ALLOWED, 0},
    /* 192.0.0.0/24 */
    {"192.0.0.0", "IETF protocol assignments", 0},
    {"192.0.0.9", "IETF protocol assignments", 0},
    {"192.0.0.170", "IETF protocol assignments", 0},
    {"192.0.0.255", "IETF protocol assignments", 0},
    {"191.255.255.255", ALLOWED, 0},
    {"192.0.1.0", ALLOWED, 0},
    /* 192.0.2.0/24 */
    {"192.0.2.0", "TEST-NET-1", 0},
    {"192.0.2.255", "TEST-NET-1", 0},
    {"192.0.1.255", ALLOWED, 0},
    {"192.0.3.0", ALLOWED, 0},
    /* 192.88.99.0/24 */
    {"192.88.99.0", "6to4 relay", 0},
    {"192.88.99.255", "6to4 relay", 0},
    {"192.88.98.255", ALLOWED, 0},
    {"192.88.100.0", ALLOWED, 0},
    /* 192.168.0.0/16 */
    {"192.168.0.0", "private", 0},
    {"192.168.255.255", "private", 0},
    {"192.167.255.255", ALLOWED, 0},
    {"192.169.0.0", ALLOWED, 0},
    /* 198.18.0.0/15 */
    {"198.18.0.0", "benchmarking", 0},
    {"198.19.255.255", "benchmarking", 0},
    {"198.17.255.255", ALLOWED, 0},
    {"198.20.0.0", ALLOWED, 0},
    /* 198.51.100.0/24 */
    {"198.51.100.0", "TEST-NET-2", 0},
    {"198.51.100.255", "TEST-NET-2", 0},
    {"198.51.99.255", ALLOWED, 0},
    {"198.51.101.0", ALLOWED, 0},
    /* 203.0.113.0/24 */
    {"203.0.113.0", "TEST-NET-3", 0},
    {"203.0.113.255", "TEST-NET-3", 0},
    {"203.0.112.255", ALLOWED, 0},
    {"203.0.114.0", ALLOWED, 0},
    /* 224.0.0.0/4 */
    {"224.0.0.0", "multicast", 0},
    {"239.255.255.255", "multicast", 0},
    {"223.255.255.255", ALLOWED, 0},
    /* 240.0.0.0/4 (above it: 255.255.255.255 below) */
    {"240.0.0.0", "reserved", 0},
    {"255.255.255.254", "reserved", 0},
    /* 255.255.255.255/32 */
    {"255.255.255.255", "broadcast", 0},
    /* globally reachable special-purpose blocks stay allowed */
    {"192.31.196.1", ALLOWED, 0},  /* AS112-v4 */
    {"192.52.193.1", ALLOWED, 0},  /* AMT */
    {"192.175.48.1", ALLOWED, 0},  /* AS112 direct delegation */
    {"93.184.216.34", ALLOWED, 0}, /* an ordinary public address */
};

static const addr_case v6_cases[] = {
    /* ::/128, ::1/128 */
    {"::", "unspecified", 0},
    {"::1", "loopback", 0},
    /* ::/96 IPv4-compatible: the IPv4 rules, then refused as deprecated */
    {"::127.0.0.1", "loopback", 0},
    {"::10.1.2.3", "private", 0},
    {"::169.254.169.254", "link-local", 1},
    {"::2", "unspecified", 0},
    {"::8.8.8.8", "IPv4-compatible", 0},
    {"::255.255.255.254", "reserved", 0},
    {"::1:0:0", "not global unicast", 0}, /* just above ::/96 */
    /* ::ffff:0:0/96 IPv4-mapped: the IPv4 rules only */
    {"::ffff:127.0.0.1", "loopback", 0},
    {"::ffff:169.254.169.254", "link-local", 1},
    {"::ffff:198.18.0.1", "benchmarking", 0},
    {"::ffff:8.8.8.8", ALLOWED, 0},
    {"::fffe:ffff:ffff", "not global unicast", 0}, /* just below */
    {"::1:0:0:0", "not global unicast", 0},        /* just above */
    /* 64:ff9b::/96 NAT64 well-known (globally reachable): IPv4 rules */
    {"64:ff9b::8.8.8.8", ALLOWED, 0},
    {"64:ff9b::127.0.0.1", "loopback", 0},
    {"64:ff9b::169.254.169.254", "link-local", 1},
    {"64:ff9b::192.0.0.1", "IETF protocol assignments", 0},
    {"64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", "not global unicast", 0},
    {"64:ff9b::1:0:0", "not global unicast", 0},
    /* 64:ff9b:1::/48 local-use NAT64 */
    {"64:ff9b:1::", "local-use NAT64", 0},
    {"64:ff9b:1::8.8.8.8", "local-use NAT64", 0},
    {"64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "local-use NAT64", 0},
    {"64:ff9b:1::169.254.169.254", "link-local", 1},
    {"64:ff9b:0:ffff:ffff:ffff:ffff:ffff", "not global unicast", 0},
    {"64:ff9b:2::", "not global unicast", 0},
    /* 100::/64 discard-only */
    {"100::", "discard-only", 0},
    {"100::ffff:ffff:ffff:ffff", "discard-only", 0},
    {"ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "not global unicast", 0},
    {"100:0:0:1::", "not global unicast", 0}, /* dummy prefix, RFC 9780 */
    /* 2001::/23 IETF protocol assignments (Teredo, ORCHID, ...) */
    {"2001::", "IETF protocol assignments", 0},
    {"2001:0:4136:e378:8000:63bf:3fff:fdd2", "IETF protocol assignments", 0},
    {"2001:2::1", "IETF protocol assignments", 0},
    {"2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "IETF protocol assignments", 0},
    {"2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ALLOWED, 0},
    {"2001:200::", ALLOWED, 0},
    /* Teredo to a link-local client (169.254.169.254 XOR ffffffff) */
    {"2001::5601:5601", "link-local", 1},
    /* 2001:db8::/32 documentation */
    {"2001:db8::", "documentation", 0},
    {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation", 0},
    {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", ALLOWED, 0},
    {"2001:db9::", ALLOWED, 0},
    /* 2002::/16 6to4: the IPv4 rules on the embedded address */
    {"2002:808:808::1", ALLOWED, 0},
    {"2002:7f00:1::1", "loopback", 0},
    {"2002:a9fe:a9fe::1", "link-local", 1},
    {"2002:c0a8:101::1", "private", 0},
    /* 3fff::/20 documentation */
    {"3fff::", "documentation", 0},
    {"3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "documentation", 0},
    {"3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ALLOWED, 0},
    {"3fff:1000::", ALLOWED, 0},
    /* 5f00::/16 SRv6 SIDs (outside 2000::/3 around it) */
    {"5f00::", "SRv6", 0},
    {"5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "SRv6", 0},
    {"5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "not global unicast", 0},
    {"5f01::", "not global unicast", 0},
    /* fc00::/7 unique-local */
    {"fc00::", "private", 0},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "private", 0},
    {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "not global unicast", 0},
    {"fe00::", "not global unicast", 0},
    /* fe80::/10 link-local, always */
    {"fe80::", "link-local", 1},
    {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local", 1},
    {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "not global unicast", 0},
    /* fec0::/10 site-local */
    {"fec0::", "site-local", 0},
    {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "site-local", 0},
    /* ff00::/8 multicast */
    {"ff00::", "multicast", 0},
    {"ff02::1", "multicast", 0},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast", 0},
    /* outside 2000::/3: not global unicast; 2000::/3 itself allowed */
    {"1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "not global unicast", 0},
    {"2000::", ALLOWED, 0},
    {"3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ALLOWED, 0},
    {"4000::", "not global unicast", 0},
    {"8000::", "not global unicast", 0},
    /* globally reachable */
    {"2620:4f:8000::1", ALLOWED, 0},      /* AS112 direct delegation */
    {"2001:4860:4860::8888", ALLOWED, 0}, /* an ordinary public address */
};

static void check_case(const addr_case *c, int v6) {
  for (int deny = 0; deny <= 1; deny++) {
    const char *why = deny ? c->why : (c->always ? c->why : NULL);
    int ok = v6 ? allowed_v6(c->addr, deny) : allowed_v4(c->addr, deny);
    if (ok != (why == NULL))
      fail_msg("%s with deny_private=%d: %s, expected %s", c->addr, deny,
               ok ? "allowed" : "refused", why ? why : "allowed");
    /* The same through the URL check, with the reason in the message. */
    char url[128], msg[256] = "";
    snprintf(url, sizeof url, v6 ? "http://[%s]/hook" : "http://%s/hook",
             c->addr);
    hd_err err = hd_webhook_url_check(url, deny, msg, sizeof msg);
    if ((err == HD_OK) != (why == NULL))
      fail_msg("%s with deny_private=%d: %s (%s)", url, deny,
               err == HD_OK ? "accepted" : "refused", msg);
    if (why && !strstr(msg, why))
      fail_msg("%s: message \"%s\" does not say \"%s\"", url, msg, why);
  }
}

static void test_addr_special_purpose_ranges_v4(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof v4_cases / sizeof v4_cases[0]; i++)
    check_case(&v4_cases[i], 0);
}

static void test_addr_special_purpose_ranges_v6(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof v6_cases / sizeof v6_cases[0]; i++)
    check_case(&v6_cases[i], 1);
}

/* The gaps the outside review found, as URLs. */
static void test_reported_gaps_refused_with_deny_private(void **state) {
  (void)state;
  assert_url_refused("http://[fec0::1]/", 1, "site-local");
  assert_url_refused("http://[64:ff9b:1::a00:1]/", 1, "local-use NAT64");
  assert_url_refused("http://198.18.0.1/", 1, "benchmarking");
  assert_url_refused("http://192.0.0.1/", 1, "IETF protocol assignments");
  assert_url_refused("http://224.0.0.1/", 1, "multicast");
  assert_url_refused("http://240.0.0.1/", 1, "reserved");
  assert_url_refused("http://[::127.0.0.1]:8080/", 1, "loopback");
  assert_url_refused("http://[ff02::1]/", 1, "multicast");
  assert_url_ok("http://[::127.0.0.1]:8080/", 0);
  assert_url_ok("http://198.18.0.1/", 0);
}

static void test_addr_other_families_refused(void **state) {
  (void)state;
  struct sockaddr sa = {.sa_family = AF_UNIX};
  assert_false(hd_addr_allowed(&sa, 0));
  assert_false(hd_addr_allowed(NULL, 0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_loopback_url_accepted_unless_deny_private),
      cmocka_unit_test(test_public_literal_accepted_with_deny_private),
      cmocka_unit_test(test_metadata_address_always_refused),
      cmocka_unit_test(test_ipv6_link_local_always_refused),
      cmocka_unit_test(test_ipv4_mapped_link_local_refused),
      cmocka_unit_test(test_other_schemes_refused),
      cmocka_unit_test(test_url_without_host_refused),
      cmocka_unit_test(test_url_with_credentials_refused),
      cmocka_unit_test(test_garbage_refused),
      cmocka_unit_test(test_url_over_2048_bytes_refused),
      cmocka_unit_test(test_localhost_name_refused_with_deny_private),
      cmocka_unit_test(test_addr_link_local_refused_always),
      cmocka_unit_test(test_addr_private_ranges_refused_with_deny_private),
      cmocka_unit_test(test_addr_special_purpose_ranges_v4),
      cmocka_unit_test(test_addr_special_purpose_ranges_v6),
      cmocka_unit_test(test_reported_gaps_refused_with_deny_private),
      cmocka_unit_test(test_addr_other_families_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
