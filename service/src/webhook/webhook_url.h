/*
 * Which webhook URLs and addresses handlerd will send to. Only http and
 * https. Link-local (169.254.0.0/16, fe80::/10: cloud metadata lives there)
 * is always refused; with deny_private also every block of the IANA IPv4
 * and IPv6 special-purpose address registries that is not globally
 * reachable (loopback, private, shared, unspecified, documentation,
 * benchmarking, IETF protocol assignments, local-use NAT64, discard-only,
 * ...), multicast, reserved 240.0.0.0/4 and broadcast, site-local
 * fec0::/10, and any IPv6 address outside 2000::/3 (webhook_url.c has the
 * table, one comment per range). Addresses that embed an IPv4 address
 * (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4) get that
 * address's rules. Addresses are checked after DNS resolution, at connect
 * time, so a name that resolves somewhere forbidden never gets a
 * connection.
 */
#ifndef HD_WEBHOOK_URL_H
#define HD_WEBHOOK_URL_H

#include "handlerd/handlerd.h"

#include <sys/socket.h>

/* Validates `url` at registration time: parses it (libcurl's URL API),
 * scheme http/https, a host, no user:password, at most 2048 bytes; when the
 * host is an IP literal it must pass hd_addr_allowed; with deny_private a
 * host name is resolved (getaddrinfo) and every address must pass. HD_EINVAL
 * with a message naming the problem.
 * Also: IP literals in any form inet_aton takes ("2852039166") count as
 * literals; with deny_private, "localhost"/"*.localhost" are refused without
 * a lookup and a name that does not resolve is refused. The lookup blocks:
 * call it off the event loop. HD_ENOMEM when libcurl cannot allocate. */
hd_err hd_webhook_url_check(const char *url, int deny_private, char *msg,
                            size_t msg_size);

/* 1 when handlerd may connect to `sa` (AF_INET or AF_INET6), else 0.
 * Other families and NULL: 0. NAT64 (64:ff9b::/96) addresses get the rules
 * of the IPv4 address they embed, like IPv4-mapped ones; IPv4-compatible
 * (::a.b.c.d) and 6to4 (2002::/16) ones get them too, before their own
 * (local-use NAT64 64:ff9b:1::/48 and Teredo 2001::/32 embedding a
 * link-local address are refused even without deny_private). */
int hd_addr_allowed(const struct sockaddr *sa, int deny_private);

#endif
