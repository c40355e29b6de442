/*
 * fuzz_webhook_url: hd_webhook_url_check (registration-time URL policy) on
 * arbitrary text, with deny_private off and on. Host names resolve through
 * fake_dns.c (made-up, deterministic answers; no traffic). Also
 * hd_addr_allowed on arbitrary IPv4/IPv6 socket addresses.
 *
 * Input: [flags][url bytes...]; flags bit 0: deny_private; bits 1-2 pick a
 * scheme prefix prepended to the bytes ("", "http://", "https://",
 * "https://["), so most inputs get past the scheme check.
 *
 * Checks: every refusal is HD_EINVAL with a "webhook url: " message; an
 * accepted URL parses with libcurl as http(s) with a host and no user
 * info; accepted with deny_private implies accepted without it; a literal
 * address that passes with deny_private passes without; a host that is an
 * IP literal in a refused range (link-local always) is never accepted.
 */
#include "fuzz_util.h"
#include "handlerd/handlerd.h"
#include "webhook_url.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <strings.h>

static void check_accepted(const char *url) {
  CURLU *u = curl_url();
  FUZZ_CHECK(u != NULL);
  FUZZ_CHECK(curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK);
  char *scheme = NULL, *host = NULL, *user = NULL;
  FUZZ_CHECK(curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK);
  FUZZ_CHECK(strcasecmp(scheme, "http") == 0 ||
             strcasecmp(scheme, "https") == 0);
  FUZZ_CHECK(curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK);
  FUZZ_CHECK(host && host[0]);
  FUZZ_CHECK(curl_url_get(u, CURLUPART_USER, &user, 0) != CURLUE_OK);
  /* A literal link-local address is always refused. */
  struct in_addr a4;
  struct in6_addr a6;
  char bare[256];
  size_t n = strlen(host);
  if (inet_pton(AF_INET, host, &a4) == 1)
    FUZZ_CHECK((ntohl(a4.s_addr) >> 16) != 0xA9FE);
  if (n > 2 && n < sizeof(bare) && host[0] == '[') {
    memcpy(bare, host + 1, n - 2);
    bare[n - 2] = '\0';
    if (inet_pton(AF_INET6, bare, &a6) == 1)
      FUZZ_CHECK(!(a6.s6_addr[0] == 0xfe && (a6.s6_addr[1] & 0xc0) == 0x80));
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(user);
  curl_url_cleanup(u);
}

static void fuzz_addr(const uint8_t *data, size_t size) {
  if (size < 17)
    return;
  struct sockaddr_in s4;
  struct sockaddr_in6 s6;
  memset(&s4, 0, sizeof(s4));
  memset(&s6, 0, sizeof(s6));
  s4.sin_family = AF_INET;
  memcpy(&s4.sin_addr, data + 1, 4);
  s6.sin6_family = AF_INET6;
  memcpy(&s6.sin6_addr, data + 1, 16);
  /* deny_private only ever refuses more. */
  if (hd_addr_allowed((struct sockaddr *)&s4, 1))
    FUZZ_CHECK(hd_addr_allowed((struct sockaddr *)&s4, 0));
  if (hd_addr_allowed((struct sockaddr *)&s6, 1))
    FUZZ_CHECK(hd_addr_allowed((struct sockaddr *)&s6, 0));
  uint32_t a = ntohl(s4.sin_addr.s_addr);
  if ((a >> 16) == 0xA9FE)
    FUZZ_CHECK(!hd_addr_allowed((struct sockaddr *)&s4, 0));
  /* An IPv4-mapped address gets the IPv4 address's answer. */
  struct sockaddr_in6 m;
  memset(&m, 0, sizeof(m));
  m.sin6_family = AF_INET6;
  m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
  memcpy(&m.sin6_addr.s6_addr[12], data + 1, 4);
  for (int deny = 0; deny < 2; deny++)
    FUZZ_CHECK(hd_addr_allowed((struct sockaddr *)&m, deny) ==
               hd_addr_allowed((struct sockaddr *)&s4, deny));
  FUZZ_CHECK(!hd_addr_allowed(NULL, 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const prefixes[] = {"", "http://", "https://",
                                         "https://["};
  if (size < 1)
    return 0;
  fuzz_addr(data, size);
  const char *prefix = prefixes[(data[0] >> 1) & 3];
  size_t plen = strlen(prefix);
  char *url = malloc(plen + size);
  FUZZ_CHECK(url != NULL);
  memcpy(url, prefix, plen);
  memcpy(url + plen, data + 1, size - 1);
  url[plen + size - 1] = '\0';

  int results[2];
  for (int deny = 0; deny < 2; deny++) {
    char msg[512] = "";
    hd_err err = hd_webhook_url_check(url, deny, msg, sizeof(msg));
    FUZZ_CHECK(err == HD_OK || err == HD_EINVAL || err == HD_ENOMEM);
    if (err == HD_EINVAL)
      FUZZ_CHECK(strncmp(msg, "webhook url: ", 13) == 0);
    if (err == HD_OK)
      check_accepted(url);
    results[deny] = err == HD_OK;
  }
  /* deny_private only ever refuses more. */
  if (results[1])
    FUZZ_CHECK(results[0]);
  free(url);
  return 0;
}
