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
  static const char *const v6_public[] = {"fbff::1", "fe00::1", "2001:db8::1",
                                          "::2", "::ffff:93.184.216.34"};

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
      cmocka_unit_test(test_addr_other_families_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
