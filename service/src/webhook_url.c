/*
 * Webhook URL and address policy. Two checks, because neither is enough
 * alone: the URL check at registration gives the caller an early, readable
 * error, but DNS answers change (and can be made to change: DNS rebinding),
 * so the delivery engine also calls hd_addr_allowed() on every address it is
 * about to connect to. Registration never opens a connection.
 */
#include "webhook_url.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HD_WEBHOOK_URL_MAX 2048

/* Why an IPv4 address (host order) is refused, or NULL when it is not. */
static const char *v4_refusal(uint32_t a, int deny_private) {
  if ((a >> 16) == 0xA9FE) /* 169.254/16 */
    return "link-local";
  if (!deny_private)
    return NULL;
  if ((a >> 24) == 0)
    return "unspecified"; /* 0.0.0.0/8: Linux connects that to localhost */
  if ((a >> 24) == 127)
    return "loopback";
  if ((a >> 24) == 10 || (a >> 20) == 0xAC1 || (a >> 16) == 0xC0A8)
    return "private"; /* 10/8, 172.16/12, 192.168/16 */
  if ((a >> 22) == (0x64400000u >> 22))
    return "shared (CGNAT)"; /* 100.64/10 */
  return NULL;
}

static uint32_t v4_at(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
         b[3];
}

static const char *v6_refusal(const struct in6_addr *in, int deny_private) {
  const unsigned char *b = in->s6_addr;
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                           0, 0, 0, 0, 0xff, 0xff};
  /* NAT64's well-known prefix: on a NAT64 network 64:ff9b::a9fe:a9fe is a
   * route to 169.254.169.254, so it gets the IPv4 rules too. */
  static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};

  if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
    return v4_refusal(v4_at(b + 12), deny_private);
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) /* fe80::/10 */
    return "link-local";
  if (!deny_private)
    return NULL;
  if (IN6_IS_ADDR_UNSPECIFIED(in))
    return "unspecified";
  if (IN6_IS_ADDR_LOOPBACK(in))
    return "loopback";
  if ((b[0] & 0xfe) == 0xfc) /* fc00::/7 */
    return "private";
  return NULL;
}

/* Why `sa` is refused, or NULL when handlerd may connect to it. */
static const char *addr_refusal(const struct sockaddr *sa, int deny_private) {
  if (!sa)
    return "no address";
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    return v4_refusal(ntohl(s4->sin_addr.s_addr), deny_private);
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    return v6_refusal(&s6->sin6_addr, deny_private);
  }
  return "not an IP address";
}

int hd_addr_allowed(const struct sockaddr *sa, int deny_private) {
  return addr_refusal(sa, deny_private) == NULL;
}

static hd_err fail(char *msg, size_t msg_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* HD_EINVAL, with "webhook url: <why>" in msg. */
static hd_err fail(char *msg, size_t msg_size, const char *fmt, ...) {
  if (msg && msg_size) {
    va_list ap;
    int n = snprintf(msg, msg_size, "webhook url: ");
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < msg_size)
      vsnprintf(msg + n, msg_size - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return HD_EINVAL;
}

/* Checks every address of `ai`; on a refusal writes it into msg. */
static hd_err check_addrinfo(const struct addrinfo *ai, const char *host,
                             int deny_private, char *msg, size_t msg_size) {
  for (; ai; ai = ai->ai_next) {
    const char *why = addr_refusal(ai->ai_addr, deny_private);
    if (!why)
      continue;
    char text[INET6_ADDRSTRLEN] = "?";
    getnameinfo(ai->ai_addr, ai->ai_addrlen, text, sizeof text, NULL, 0,
                NI_NUMERICHOST);
    if (msg && msg_size)
      snprintf(msg, msg_size, "webhook url: host %s: address %s is %s", host,
               text, why);
    return HD_EINVAL;
  }
  return HD_OK;
}

/* curl treats "localhost" and "*.localhost" as loopback without asking DNS
 * (RFC 6761), so resolving them here could disagree with what curl does. */
static int is_localhost(const char *host) {
  size_t n = strlen(host);
  if (n && host[n - 1] == '.')
    n--;
  return (n == 9 && strncasecmp(host, "localhost", 9) == 0) ||
         (n > 10 && strncasecmp(host + n - 10, ".localhost", 10) == 0);
}

static hd_err check_host(const char *host, int deny_private, char *msg,
                         size_t msg_size) {
  char bare[256];
  size_t n = strlen(host);
  struct addrinfo hints = {0}, *ai = NULL;
  hd_err err;

  /* The URL API keeps IPv6 literals in brackets. */
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    host++;
    n -= 2;
  }
  if (n == 0)
    return fail(msg, msg_size, "no host");
  if (n >= sizeof bare)
    return fail(msg, msg_size, "host name too long");
  memcpy(bare, host, n);
  bare[n] = '\0';
  /* "127.0.0.1." is the same address to curl but not to inet_aton. */
  if (n > 1 && bare[n - 1] == '.' && bare[n - 2] != '.')
    bare[--n] = '\0';

  /* An IP literal, in any form the resolver accepts ("127.1", "0x7f.1",
   * "2130706433" all mean 127.0.0.1): checked whatever deny_private says,
   * since link-local is always refused. No DNS traffic. */
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  /* (The URL API gives the IPv6 zone id as a separate part, so a bracketed
   * literal parses here whatever interface it names.) */
  if (getaddrinfo(bare, NULL, &hints, &ai) == 0) {
    err = check_addrinfo(ai, bare, deny_private, msg, msg_size);
    freeaddrinfo(ai);
    return err;
  }
  if (!deny_private)
    return HD_OK; /* names are checked at connect time only */
  if (is_localhost(bare))
    return fail(msg, msg_size, "host %s is loopback", bare);

  /* Every address must pass, not just the first: curl may try any of them.
   * A name that does not resolve now is refused, as it cannot be checked. */
  hints.ai_flags = AI_IDN;
  int rc = getaddrinfo(bare, NULL, &hints, &ai);
  if (rc != 0)
    return fail(msg, msg_size, "cannot resolve host %s: %s", bare,
                gai_strerror(rc));
  err = check_addrinfo(ai, bare, deny_private, msg, msg_size);
  freeaddrinfo(ai);
  return err;
}

/* Nonzero when `part` of the URL is present. */
static int has_part(CURLU *u, CURLUPart part) {
  char *v = NULL;
  CURLUcode rc = curl_url_get(u, part, &v, 0);
  curl_free(v);
  return rc == CURLUE_OK;
}

hd_err hd_webhook_url_check(const char *url, int deny_private, char *msg,
                            size_t msg_size) {
  char *scheme = NULL, *host = NULL;
  hd_err err = HD_OK;

  if (!url || !*url)
    return fail(msg, msg_size, "empty");
  if (strlen(url) > HD_WEBHOOK_URL_MAX)
    return fail(msg, msg_size, "longer than %d bytes", HD_WEBHOOK_URL_MAX);

  CURLU *u = curl_url();
  if (!u)
    return HD_ENOMEM;
  /* No CURLU_DEFAULT_SCHEME / CURLU_GUESS_SCHEME: "example.com/x" is an
   * error, not a guess. No CURLU_NON_SUPPORT_SCHEME: unknown schemes fail
   * here; known but unwanted ones (ftp, file) are refused below. */
  CURLUcode rc = curl_url_set(u, CURLUPART_URL, url, 0);
  if (rc == CURLUE_NO_HOST) {
    err = fail(msg, msg_size, "no host");
    goto out;
  }
  if (rc != CURLUE_OK) {
    err = fail(msg, msg_size, "cannot parse: %s", curl_url_strerror(rc));
    goto out;
  }
  if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
    err = fail(msg, msg_size, "scheme must be http or https, not %s",
               scheme ? scheme : "none");
    goto out;
  }
  /* Credentials in a URL end up in logs and in listings of handlers. */
  if (has_part(u, CURLUPART_USER) || has_part(u, CURLUPART_PASSWORD)) {
    err = fail(msg, msg_size, "must not contain user:password");
    goto out;
  }
  rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
  if (rc != CURLUE_OK || !host || !*host) {
    err = fail(msg, msg_size, "no host");
    goto out;
  }
  err = check_host(host, deny_private, msg, msg_size);
out:
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(u);
  return err;
}
