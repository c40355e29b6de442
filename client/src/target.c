/*
 * handlerctl client library: an address (one host:port, a gRPC target URI
 * or a comma-separated list of IP addresses) as the target and service
 * config of a gRPC channel. See target.h.
 */
#include "target.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Schemes gRPC C core resolves itself: such a target passes through. */
static const char *const uri_schemes[] = {
    "dns",  "ipv4",          "ipv6",
    "unix", "unix-abstract", "vsock",
    "xds",  "google-c2p",    "google-c2p-experimental"};

/* The idempotent (read-only) methods whose UNAVAILABLE is retried. Every
 * other method (Dispatch, DispatchStream, AddHandler, RemoveHandler,
 * UpdateHandler, RotateSecret, Redeliver, Replay, EnableWebhook) changes
 * something or delivers an event: a retry could do it twice. */
#define HC_RETRY_NAMES                                                         \
  "[{\"service\":\"grpc.health.v1.Health\",\"method\":\"Check\"},"             \
  "{\"service\":\"handlers.v1.Handlers\",\"method\":\"ListHandlers\"},"        \
  "{\"service\":\"handlers.v1.Handlers\",\"method\":\"GetStats\"},"            \
  "{\"service\":\"handlers.v1.Handlers\",\"method\":\"ListDeliveries\"},"      \
  "{\"service\":\"handlers.v1.Handlers\",\"method\":\"GetDelivery\"}]"

#define HC_STRINGIFY_(x) #x
#define HC_STRINGIFY(x) HC_STRINGIFY_(x)

#define HC_METHOD_CONFIG                                                       \
  "\"methodConfig\":[{\"name\":" HC_RETRY_NAMES ","                            \
  "\"retryPolicy\":{\"maxAttempts\":" HC_STRINGIFY(                            \
      HC_RETRY_MAX_ATTEMPTS) ","                                               \
                             "\"initialBackoff\":\"0.1s\","                    \
                             "\"maxBackoff\":\"1s\","                          \
                             "\"backoffMultiplier\":2,"                        \
                             "\"retryableStatusCodes\":[\"UNAVAILABLE\"]}}]"

const char *hc__service_config(int round_robin) {
  static const char with_rr[] =
      "{\"loadBalancingConfig\":[{\"round_robin\":{}}]," HC_METHOD_CONFIG "}";
  static const char without[] = "{" HC_METHOD_CONFIG "}";
  return round_robin ? with_rr : without;
}

static void set_msg(char *msg, size_t msg_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t msg_len, const char *fmt, ...) {
  if (msg == NULL || msg_len == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, msg_len, fmt, ap);
  va_end(ap);
}

void hc__channel_target_clear(hc_channel_target *t) {
  if (t == NULL)
    return;
  free(t->target);
  free(t->authority);
  memset(t, 0, sizeof *t);
}

/* The length of the URI scheme `s` starts with when it is one gRPC
 * resolves ("dns" of "dns:///h:1"), else 0. */
static size_t grpc_scheme(const char *s) {
  size_t n = strcspn(s, ":");
  if (s[n] != ':')
    return 0;
  for (size_t i = 0; i < sizeof uri_schemes / sizeof uri_schemes[0]; i++)
    if (strlen(uri_schemes[i]) == n && strncasecmp(s, uri_schemes[i], n) == 0)
      return n;
  return 0;
}

/* 0 when `s` (length n) is a decimal port 1..65535. */
static int parse_port(const char *s, size_t n) {
  if (n == 0 || n > 5)
    return -1;
  unsigned long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i]))
      return -1;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  return v >= 1 && v <= 65535 ? 0 : -1;
}

enum { FAMILY_V4 = 4, FAMILY_V6 = 6 };

/* Checks entry `e` (length n, no comma) of list `all`: FAMILY_V4 or
 * FAMILY_V6, or 0 with `msg` set. */
static int check_entry(const char *all, size_t index, const char *e, size_t n,
                       char *msg, size_t msg_len) {
  char host[64];
  const char *port;
  size_t port_len;
  int family;
  if (n == 0) {
    set_msg(msg, msg_len,
            "address %zu of '%s' is empty (separate addresses with one comma, "
            "no comma at either end)",
            index, all);
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    if (isspace((unsigned char)e[i])) {
      set_msg(msg, msg_len,
              "address '%.*s' of '%s' contains a space (separate addresses "
              "with a comma only)",
              (int)n, e, all);
      return 0;
    }
  if (e[0] == '[') {
    const char *close = memchr(e, ']', n);
    size_t hlen = close != NULL ? (size_t)(close - e - 1) : 0;
    if (close == NULL || hlen == 0 || hlen >= sizeof host) {
      set_msg(msg, msg_len, "address '%.*s' is not an IPv6 address [ADDR]:PORT",
              (int)n, e);
      return 0;
    }
    memcpy(host, e + 1, hlen);
    host[hlen] = '\0';
    host[strcspn(host, "%")] = '\0'; /* a zone: fe80::1%eth0 */
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) != 1) {
      set_msg(msg, msg_len, "address '%.*s' is not an IPv6 address [ADDR]:PORT",
              (int)n, e);
      return 0;
    }
    size_t rest = n - (size_t)(close + 1 - e);
    if (rest == 0 || close[1] != ':' || rest == 1) {
      set_msg(msg, msg_len, "address '%.*s' has no port ([ADDR]:PORT)", (int)n,
              e);
      return 0;
    }
    port = close + 2;
    port_len = rest - 1;
    family = FAMILY_V6;
  } else {
    const char *colon = memchr(e, ':', n);
    if (colon != NULL && memchr(colon + 1, ':', n - (size_t)(colon + 1 - e))) {
      set_msg(msg, msg_len,
              "address '%.*s': an IPv6 address goes in brackets: "
              "[ADDR]:PORT",
              (int)n, e);
      return 0;
    }
    size_t hlen = colon != NULL ? (size_t)(colon - e) : n;
    if (colon == NULL || colon + 1 == e + n) {
      set_msg(msg, msg_len, "address '%.*s' has no port (ADDR:PORT)", (int)n,
              e);
      return 0;
    }
    struct in_addr a4;
    if (hlen == 0 || hlen >= sizeof host) {
      set_msg(msg, msg_len, "address '%.*s' is not an IPv4 address ADDR:PORT",
              (int)n, e);
      return 0;
    }
    memcpy(host, e, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, &a4) != 1 &&
        strspn(host, "0123456789.") == hlen) {
      set_msg(msg, msg_len, "address '%.*s' is not an IPv4 address ADDR:PORT",
              (int)n, e);
      return 0;
    }
    if (inet_pton(AF_INET, host, &a4) != 1) {
      set_msg(msg, msg_len,
              "address '%.*s' is a host name, not an IP address: a list of "
              "several addresses takes IP addresses only (gRPC resolves one "
              "name per target: give dns:///NAME:PORT alone for a name with "
              "several addresses, or list their IP addresses)",
              (int)n, e);
      return 0;
    }
    port = colon + 1;
    port_len = n - hlen - 1;
    family = FAMILY_V4;
  }
  if (parse_port(port, port_len) != 0) {
    set_msg(msg, msg_len, "address '%.*s' has a bad port '%.*s' (1-65535)",
            (int)n, e, (int)port_len, port);
    return 0;
  }
  return family;
}

/* Fills `out` for a target that passes through unchanged. */
static hc_err pass_through(const char *addrs, size_t n_addrs, int round_robin,
                           hc_channel_target *out) {
  out->target = strdup(addrs);
  if (out->target == NULL)
    return HC_ENOMEM;
  out->n_addrs = n_addrs;
  out->round_robin = round_robin;
  return HC_OK;
}

hc_err hc__target_from_addrs(const char *addrs, hc_channel_target *out,
                             char *msg, size_t msg_len) {
  if (msg != NULL && msg_len > 0)
    msg[0] = '\0';
  if (out == NULL) {
    set_msg(msg, msg_len, "no output");
    return HC_EINVAL;
  }
  memset(out, 0, sizeof *out);
  if (addrs == NULL || *addrs == '\0') {
    set_msg(msg, msg_len, "the address is empty (HOST:PORT)");
    return HC_EINVAL;
  }

  size_t scheme = grpc_scheme(addrs);
  if (scheme > 0) {
    /* A gRPC URI, as is. ipv4:/ipv6: may list several addresses; a dns:
     * name may resolve to several. */
    size_t n = 1;
    int is_ip = (scheme == 4 && (strncasecmp(addrs, "ipv4", 4) == 0 ||
                                 strncasecmp(addrs, "ipv6", 4) == 0));
    if (is_ip)
      for (const char *p = addrs; *p != '\0'; p++)
        n += *p == ',';
    int dns = scheme == 3 && strncasecmp(addrs, "dns", 3) == 0;
    return pass_through(addrs, n, n > 1 || dns, out);
  }
  if (strchr(addrs, ',') == NULL)
    return pass_through(addrs, 1, 0, out); /* one host:port, as always */

  size_t n = 1;
  for (const char *p = addrs; *p != '\0'; p++)
    n += *p == ',';
  if (n > HC_ADDRS_MAX) {
    set_msg(msg, msg_len,
            "'%.48s%s' lists %zu addresses: at most %d (put a load balancer "
            "in front of more replicas)",
            addrs, strlen(addrs) > 48 ? "..." : "", n, HC_ADDRS_MAX);
    return HC_EINVAL;
  }

  int family = 0;
  size_t index = 0;
  const char *first = addrs;
  size_t first_len = strcspn(addrs, ",");
  for (const char *e = addrs;; e++) {
    size_t len = strcspn(e, ",");
    index++;
    int f = check_entry(addrs, index, e, len, msg, msg_len);
    if (f == 0)
      return HC_EINVAL;
    if (family != 0 && f != family) {
      set_msg(msg, msg_len,
              "'%s' mixes IPv4 and IPv6 addresses ('%.*s' and '%.*s'): gRPC "
              "takes one family per target",
              addrs, (int)first_len, first, (int)len, e);
      return HC_EINVAL;
    }
    family = f;
    e += len;
    if (*e == '\0')
      break;
  }

  out->n_addrs = n;
  out->round_robin = 1;
  if (asprintf(&out->target, "%s:%s", family == FAMILY_V6 ? "ipv6" : "ipv4",
               addrs) < 0) {
    out->target = NULL;
    return HC_ENOMEM;
  }
  out->authority = strndup(first, first_len);
  if (out->authority == NULL) {
    hc__channel_target_clear(out);
    return HC_ENOMEM;
  }
  return HC_OK;
}
