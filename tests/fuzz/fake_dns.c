/*
 * A resolver for the fuzz targets: numeric hosts go to the C library's
 * getaddrinfo (no traffic), every other name gets made-up addresses chosen
 * by a hash of the name - public, private, loopback, link-local, IPv6,
 * IPv4-mapped, NAT64 - or no answer. Fuzzing never waits on DNS, and the
 * answers are deterministic, so a crash reproduces.
 *
 * It replaces getaddrinfo for the whole executable (ASan's interceptor is a
 * weak symbol). The made-up results are one malloc'd block per node with no
 * canonical name, which is what glibc's freeaddrinfo frees.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int gai_fn(const char *, const char *, const struct addrinfo *,
                   struct addrinfo **);

static const char *const fake_addrs[] = {
    "93.184.216.34",   "10.1.2.3",       "127.0.0.1",
    "169.254.169.254", "172.16.0.9",     "192.168.1.1",
    "100.64.0.1",      "0.0.0.0",        "2001:db8::1",
    "fe80::1",         "fc00::1",        "::1",
    "::ffff:10.0.0.1", "::ffff:8.8.8.8", "64:ff9b::a9fe:a9fe",
    "2606:4700::1111"};
#define N_FAKE (sizeof(fake_addrs) / sizeof(fake_addrs[0]))

static struct addrinfo *fake_node(const char *text, int socktype) {
  struct {
    struct addrinfo ai;
    struct sockaddr_in6 sa; /* room for either family */
  } *b = calloc(1, sizeof(*b));
  if (!b)
    return NULL;
  b->ai.ai_socktype = socktype;
  b->ai.ai_addr = (struct sockaddr *)&b->sa;
  struct sockaddr_in *s4 = (struct sockaddr_in *)&b->sa;
  if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    b->ai.ai_family = AF_INET;
    b->ai.ai_addrlen = sizeof(*s4);
  } else {
    inet_pton(AF_INET6, text, &b->sa.sin6_addr);
    b->sa.sin6_family = AF_INET6;
    b->ai.ai_family = AF_INET6;
    b->ai.ai_addrlen = sizeof(b->sa);
  }
  return &b->ai;
}

int getaddrinfo(const char *node, const char *service,
                const struct addrinfo *hints, struct addrinfo **res) {
  static gai_fn *real;
  if (!real)
    real = (gai_fn *)dlsym(RTLD_NEXT, "getaddrinfo");
  if (!node || (hints && (hints->ai_flags & AI_NUMERICHOST)))
    return real ? real(node, service, hints, res) : EAI_FAIL;

  uint32_t h = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)node; *p; p++)
    h = (h ^ *p) * 16777619u;
  if (h % 7 == 0)
    return EAI_NONAME;
  int socktype = hints ? hints->ai_socktype : 0;
  size_t n = 1 + (h >> 8) % 3;
  struct addrinfo *head = NULL, **tail = &head;
  for (size_t i = 0; i < n; i++) {
    /* Mostly public addresses, so that some names pass deny_private. */
    uint32_t pick = (h >> (12 + 4 * i)) & 0xff;
    const char *text = pick < 128
                           ? (pick & 1 ? "93.184.216.34" : "2606:4700::1111")
                           : fake_addrs[pick % N_FAKE];
    struct addrinfo *ai = fake_node(text, socktype);
    if (!ai) {
      freeaddrinfo(head);
      return EAI_MEMORY;
    }
    *tail = ai;
    tail = &ai->ai_next;
  }
  *res = head;
  return 0;
}
