/*
 * handlerctl client library: from what the user gives as an address to the
 * gRPC target and service config of the channel (not installed).
 *
 * An address is one of:
 *   - a gRPC target URI whose scheme gRPC C core resolves ("dns:///h:1",
 *     "ipv4:1.2.3.4:1,1.2.3.4:2", "unix:/run/h.sock", ...): passed through
 *     unchanged;
 *   - one "host:port" (no comma): passed through unchanged, as it always
 *     was (gRPC resolves it through DNS);
 *   - a comma-separated list of several IP "addr:port" entries, all IPv4
 *     ("127.0.0.1:7001,127.0.0.1:7002") or all IPv6 ("[::1]:7001,[::1]:7002"):
 *     one "ipv4:" or "ipv6:" target that gRPC resolves to all of them.
 *     Host names cannot be listed: gRPC C core resolves one DNS name per
 *     target (dns:///NAME:PORT, for a name with several addresses).
 */
#ifndef HANDLERCTL_TARGET_H
#define HANDLERCTL_TARGET_H

#include <stddef.h>

#include "handlerctl/client.h"

/* The most entries an address list may have. */
#define HC_ADDRS_MAX 32

/* What hc__target_from_addrs makes of an address. */
typedef struct hc_channel_target {
  char *target;    /* for grpc_channel_create (malloc'd) */
  char *authority; /* a list: its first entry, the channel's default
                      authority (malloc'd); NULL otherwise */
  size_t n_addrs;  /* entries of a list, or of an ipv4:/ipv6: URI; else 1 */
  int round_robin; /* nonzero: spread calls over the addresses (several
                      addresses, or a dns: name that may have several) */
} hc_channel_target;

/*
 * Reads `addrs` (see above). On HC_OK fills *out (release it with
 * hc__channel_target_clear). On HC_EINVAL (NULL or empty addrs, an empty
 * entry, a space, a missing or bad port, a host name in a list, IPv4 and
 * IPv6 mixed, more than HC_ADDRS_MAX entries) *out is zeroed and `msg`
 * (may be NULL) says why, naming the entry: "address 2 of
 * '127.0.0.1:1,,127.0.0.1:2' is empty". HC_ENOMEM.
 */
hc_err hc__target_from_addrs(const char *addrs, hc_channel_target *out,
                             char *msg, size_t msg_len);

/* Frees what `t` points to and zeroes it. */
void hc__channel_target_clear(hc_channel_target *t);

/*
 * The JSON service config of a channel (GRPC_ARG_SERVICE_CONFIG), static:
 * the round_robin load-balancing policy when `round_robin` (else none:
 * gRPC's default, pick_first), and a retry policy for UNAVAILABLE on the
 * idempotent methods only (health, ListHandlers, GetStats, ListDeliveries,
 * GetDelivery): HC_RETRY_MAX_ATTEMPTS attempts, backoff 0.1 s doubling up
 * to 1 s.
 */
const char *hc__service_config(int round_robin);

#define HC_RETRY_MAX_ATTEMPTS 4

#endif
