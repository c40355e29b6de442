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
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HD_WEBHOOK_URL_MAX 2048

/* ---- the address policy -------------------------------------------------
 *
 * The ranges come from the IANA IPv4 and IPv6 Special-Purpose Address
 * Registries (RFC 6890; iana.org/assignments/iana-ipv4-special-registry,
 * iana-ipv6-special-registry, as of 2025), plus multicast and the reserved
 * blocks of the IPv4 and IPv6 address-space registries. Rule: with
 * --webhook-deny-private every block that IANA does not mark "globally
 * reachable" is refused, whole: the few globally reachable anycast entries
 * nested inside a refused block (192.0.0.9/32 PCP and 192.0.0.10/32 TURN in
 * 192.0.0.0/24; 2001:1::1-3, 2001:3::/32 AMT, 2001:4:112::/48 AS112,
 * 2001:20::/28 ORCHIDv2, 2001:30::/28 DETs in 2001::/23) are no webhook
 * receivers either. Globally reachable blocks on their own (AS112
 * 192.31.196.0/24, 192.175.48.0/24, 2620:4f:8000::/48; AMT 192.52.193.0/24;
 * NAT64 64:ff9b::/96) stay allowed. In IPv6 only 2000::/3 is global unicast
 * (IPv6 address-space registry), so everything outside it is refused too.
 * Link-local (where cloud metadata lives) is refused whatever the flag says.
 * First match wins: a narrow range goes before a wider one it sits in. */

typedef struct v4_range {
  uint32_t prefix; /* host order */
  unsigned len;
  int always; /* refused even without deny_private */
  const char *why;
} v4_range;

static const v4_range v4_ranges[] = {
    /* "This network", RFC 791 3.2; Linux connects 0.0.0.0 to localhost */
    {0x00000000u, 8, 0, "unspecified (\"this network\")"},
    /* Private-Use, RFC 1918 */
    {0x0A000000u, 8, 0, "private"},
    /* Shared Address Space (carrier-grade NAT), RFC 6598 */
    {0x64400000u, 10, 0, "shared (CGNAT)"},
    /* Loopback, RFC 1122 3.2.1.3 */
    {0x7F000000u, 8, 0, "loopback"},
    /* Link Local, RFC 3927: 169.254.169.254 is the cloud metadata service */
    {0xA9FE0000u, 16, 1, "link-local"},
    /* Private-Use, RFC 1918 */
    {0xAC100000u, 12, 0, "private"},
    /* IETF Protocol Assignments, RFC 6890 2.1 (DS-Lite 192.0.0.0/29, NAT64
     * discovery 192.0.0.170-171, dummy 192.0.0.8, PCP/TURN anycast) */
    {0xC0000000u, 24, 0, "reserved for IETF protocol assignments"},
    /* Documentation (TEST-NET-1), RFC 5737 */
    {0xC0000200u, 24, 0, "documentation (TEST-NET-1)"},
    /* 6to4 Relay Anycast, deprecated by RFC 7526 (and 6a44, RFC 6751) */
    {0xC0586300u, 24, 0, "6to4 relay anycast (deprecated)"},
    /* Private-Use, RFC 1918 */
    {0xC0A80000u, 16, 0, "private"},
    /* Benchmarking, RFC 2544 */
    {0xC6120000u, 15, 0, "benchmarking"},
    /* Documentation (TEST-NET-2), RFC 5737 */
    {0xC6336400u, 24, 0, "documentation (TEST-NET-2)"},
    /* Documentation (TEST-NET-3), RFC 5737 */
    {0xCB007100u, 24, 0, "documentation (TEST-NET-3)"},
    /* Multicast, RFC 5771 (IPv4 Multicast Address Space registry) */
    {0xE0000000u, 4, 0, "multicast"},
    /* Limited Broadcast, RFC 919 7 / RFC 8190 */
    {0xFFFFFFFFu, 32, 0, "broadcast"},
    /* Reserved (former class E), RFC 1112 4 */
    {0xF0000000u, 4, 0, "reserved"},
};

typedef struct v6_range {
  unsigned char prefix[16];
  unsigned len;
  int always;
  const char *why;
} v6_range;

static const v6_range v6_ranges[] = {
    /* ::/128 Unspecified, RFC 4291 */
    {{0}, 128, 0, "unspecified"},
    /* ::1/128 Loopback, RFC 4291 */
    {{[15] = 1}, 128, 0, "loopback"},
    /* ::/96 IPv4-compatible, deprecated by RFC 4291 2.5.5.1 (the IPv4
     * address in it got its own rules first, see v6_refusal) */
    {{0}, 96, 0, "IPv4-compatible (deprecated)"},
    /* 64:ff9b:1::/48 IPv4-IPv6 Translation, local use, RFC 8215 */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, 0, "local-use NAT64"},
    /* 100::/64 Discard-Only, RFC 6666 (and 100:0:0:1::/64 dummy prefix,
     * RFC 9780: the catch-all below) */
    {{0x01, 0x00}, 64, 0, "discard-only"},
    /* 2001:db8::/32 Documentation, RFC 3849 */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, 0, "documentation"},
    /* 2001::/23 IETF Protocol Assignments, RFC 2928: Teredo 2001::/32
     * (RFC 4380), benchmarking 2001:2::/48 (RFC 5180), ORCHID 2001:10::/28
     * and ORCHIDv2 2001:20::/28 (RFC 7343), anycast 2001:1::1-3, AMT, AS112,
     * DETs 2001:30::/28 (RFC 9374) */
    {{0x20, 0x01, 0x00, 0x00}, 23, 0, "reserved for IETF protocol assignments"},
    /* 3fff::/20 Documentation, RFC 9637 */
    {{0x3f, 0xff}, 20, 0, "documentation"},
    /* 5f00::/16 Segment Routing (SRv6) SIDs, RFC 9602 */
    {{0x5f, 0x00}, 16, 0, "SRv6 SIDs"},
    /* fc00::/7 Unique-Local, RFC 4193 */
    {{0xfc}, 7, 0, "private"},
    /* fe80::/10 Link-Local Unicast, RFC 4291 */
    {{0xfe, 0x80}, 10, 1, "link-local"},
    /* fec0::/10 Site-Local, deprecated by RFC 3879 */
    {{0xfe, 0xc0}, 10, 0, "site-local (deprecated)"},
    /* ff00::/8 Multicast, RFC 4291 */
    {{0xff}, 8, 0, "multicast"},
    /* Everything outside 2000::/3, the only block IANA allocates global
     * unicast from (IPv6 Address Space registry): ::/3, 4000::/2, 8000::/1 */
    {{0x00}, 3, 0, "not global unicast"},
    {{0x40}, 2, 0, "not global unicast"},
    {{0x80}, 1, 0, "not global unicast"},
};

static int v4_in(uint32_t a, const v4_range *r) {
  uint32_t mask = r->len ? 0xFFFFFFFFu << (32 - r->len) : 0;
  return (a & mask) == r->prefix;
}

static int v6_in(const unsigned char *b, const v6_range *r) {
  unsigned full = r->len / 8, rest = r->len % 8;
  if (memcmp(b, r->prefix, full) != 0)
    return 0;
  if (rest == 0)
    return 1;
  unsigned char mask = (unsigned char)(0xFF << (8 - rest));
  return (b[full] & mask) == r->prefix[full];
}

/* Why an IPv4 address (host order) is refused, or NULL when it is not. */
static const char *v4_refusal(uint32_t a, int deny_private) {
  for (size_t i = 0; i < sizeof(v4_ranges) / sizeof(v4_ranges[0]); i++)
    if (v4_in(a, &v4_ranges[i]))
      return v4_ranges[i].always || deny_private ? v4_ranges[i].why : NULL;
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
  static const unsigned char zeros[12] = {0};
  /* NAT64's well-known prefix: on a NAT64 network 64:ff9b::a9fe:a9fe is a
   * route to 169.254.169.254, so it gets the IPv4 rules (and only those:
   * IANA marks it globally reachable). */
  static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
  static const unsigned char nat64_local[6] = {0, 0x64, 0xff, 0x9b, 0, 1};
  const char *why = NULL;

  if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
    return v4_refusal(v4_at(b + 12), deny_private);
  /* Other forms that carry an IPv4 address a connection may end up at get
   * its rules first, then the table's: IPv4-compatible ::a.b.c.d (but not
   * :: and ::1) and 6to4 2002:AABB:CCDD::/48; local-use NAT64 (the IPv4
   * address last, as with a /96 prefix) and Teredo 2001:0:<server>:..:
   * <client XOR ffffffff> only for link-local, as the table refuses them
   * whole with deny_private. */
  if (memcmp(b, zeros, 12) == 0 && v4_at(b + 12) > 1)
    why = v4_refusal(v4_at(b + 12), deny_private);
  else if (b[0] == 0x20 && b[1] == 0x02)
    why = v4_refusal(v4_at(b + 2), deny_private);
  else if (memcmp(b, nat64_local, 6) == 0) /* refused whole below */
    why = v4_refusal(v4_at(b + 12), 0);
  else if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0) /* same */
    why = v4_refusal(~v4_at(b + 12), 0);
  if (why)
    return why;
  for (size_t i = 0; i < sizeof(v6_ranges) / sizeof(v6_ranges[0]); i++)
    if (v6_in(b, &v6_ranges[i]))
      return v6_ranges[i].always || deny_private ? v6_ranges[i].why : NULL;
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
