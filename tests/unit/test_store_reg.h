/*
 * test_store_reg.h - registrations for the store tests (test_store.c, the
 * conformance suite, and test_store_migration.c): a canonical text form
 * that says every field, so "every field round trips" is one string
 * compare, and a registration of every shape to store.
 *
 * The decoded registration a load hands over is valid only during the
 * call; the text form is how the tests keep it.
 */
#ifndef HD_TEST_STORE_REG_H
#define HD_TEST_STORE_REG_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registration.h"

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static inline void sb_add(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void sb_add(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  if (n > 0)
    b->n = b->n + (size_t)n < b->cap ? b->n + (size_t)n : b->cap - 1;
}

/* A string, or <NULL>; quoted so "" and NULL differ. */
#define SQ(s) ((s) ? "\"" : ""), ((s) ? (s) : "<NULL>"), ((s) ? "\"" : "")

static inline int cmp_header(const void *a, const void *b) {
  const hd_header_spec *x = a, *y = b;
  return strcmp(x->name, y->name);
}

static inline int cmp_route(const void *a, const void *b) {
  const hd_route_spec *x = a, *y = b;
  return strcmp(x->event, y->event);
}

static inline void target_str(sbuf *b, const hd_target_spec *t, int sort_maps) {
  switch (t->kind) {
  case HD_TARGET_NONE:
    sb_add(b, "none");
    break;
  case HD_TARGET_LOCAL:
    sb_add(b, "local(%s%s%s)", SQ(t->local));
    break;
  case HD_TARGET_WEBHOOK: {
    const hd_webhook_spec *w = &t->webhook;
    hd_header_spec hs[32];
    size_t n = w->n_headers < 32 ? w->n_headers : 32;
    if (n)
      memcpy(hs, w->headers, n * sizeof(hs[0]));
    if (sort_maps && n)
      qsort(hs, n, sizeof(hs[0]), cmp_header);
    /* registration.h: a NULL secret and "" both say "none". */
    sb_add(b, "webhook(url=%s%s%s secret=%s%s%s new_secret=%d headers=[",
           SQ(w->url), SQ(w->secret ? w->secret : ""), w->new_secret);
    for (size_t i = 0; i < n; i++)
      sb_add(b, "%s%s%s%s:%s%s%s", i ? " " : "", SQ(hs[i].name),
             SQ(hs[i].value));
    sb_add(b, "] timeout_ms=%u max_attempts=%u binary_mode=%d)", w->timeout_ms,
           w->max_attempts, w->binary_mode);
    break;
  }
  default:
    sb_add(b, "kind%d", (int)t->kind);
  }
}

/* The canonical text of `r` into buf. sort_maps: routes and headers by
 * name (they are maps in the API, whose order on the wire a client
 * library picks). */
static inline const char *reg_str(const hd_registration *r, int sort_maps,
                                  char *buf, size_t size) {
  sbuf b = {buf, 0, size};
  hd_route_spec rs[32];
  size_t n = r->n_routes < 32 ? r->n_routes : 32;
  buf[0] = '\0';
  if (n)
    memcpy(rs, r->routes, n * sizeof(rs[0]));
  if (sort_maps && n)
    qsort(rs, n, sizeof(rs[0]), cmp_route);
  sb_add(&b, "key=%s%s%s target=", SQ(r->key));
  target_str(&b, &r->target, sort_maps);
  sb_add(&b, " routes=[");
  for (size_t i = 0; i < n; i++) {
    sb_add(&b, "%s%s%s%s->", i ? " " : "", SQ(rs[i].event));
    target_str(&b, &rs[i].target, sort_maps);
  }
  sb_add(&b, "] events=[");
  for (size_t i = 0; i < r->n_events; i++)
    sb_add(&b, "%s%s%s%s", i ? " " : "", SQ(r->events[i]));
  sb_add(&b, "]");
  return buf;
}

/* ---- registrations of every shape --------------------------------------- */

/* Route `event` -> local:<where> or webhook:<where> (by `kind`), every
 * other field zero. */
static inline hd_route_spec route_to(const char *event, hd_target_kind kind,
                                     const char *where) {
  hd_route_spec rt;
  memset(&rt, 0, sizeof(rt));
  rt.event = event;
  rt.target.kind = kind;
  if (kind == HD_TARGET_WEBHOOK)
    rt.target.webhook.url = where;
  else
    rt.target.local = where;
  return rt;
}

static inline hd_route_spec route_webhook(const char *event, const char *url) {
  return route_to(event, HD_TARGET_WEBHOOK, url);
}

static inline hd_route_spec route_local(const char *event, const char *fn) {
  return route_to(event, HD_TARGET_LOCAL, fn);
}

/* An event stream under `key`: the `n` routes `routes` (not copied). */
static inline hd_registration reg_routes(const char *key, hd_route_spec *routes,
                                         size_t n) {
  hd_registration r;
  memset(&r, 0, sizeof(r));
  r.key = key;
  r.routes = routes;
  r.n_routes = n;
  return r;
}

static inline hd_registration reg_local(const char *key, const char *fn) {
  hd_registration r;
  memset(&r, 0, sizeof(r));
  r.key = key;
  r.target.kind = HD_TARGET_LOCAL;
  r.target.local = fn;
  return r;
}

/* Every field set, none to its default: a webhook with a secret, headers
 * (out of name order: order is kept), timeout, attempts, binary mode and
 * an event filter. */
static hd_header_spec full_headers[] = {
    {"X-Zulu", "last"}, {"Authorization", "Bearer t"}, {"X-Empty", ""}};
static const char *full_events[] = {"update", "close", "\xc3\xa9v\xc3\xa9nt"};

static inline hd_registration reg_full_webhook(const char *key) {
  hd_registration r;
  memset(&r, 0, sizeof(r));
  r.key = key;
  r.target.kind = HD_TARGET_WEBHOOK;
  r.target.webhook.url = "https://example.com/hook?q=1";
  r.target.webhook.secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
  r.target.webhook.headers = full_headers;
  r.target.webhook.n_headers = 3;
  r.target.webhook.timeout_ms = 1234;
  r.target.webhook.max_attempts = 7;
  r.target.webhook.binary_mode = 1;
  r.events = full_events;
  r.n_events = 3;
  return r;
}

/* Event-stream routes mixing kinds, out of name order; one webhook asks
 * for a new secret. */
static hd_route_spec stream_routes[3];

static inline hd_registration reg_stream(const char *key) {
  stream_routes[0] = route_webhook("update", "http://127.0.0.1:9/u");
  stream_routes[0].target.webhook.new_secret = 1;
  stream_routes[0].target.webhook.headers = full_headers + 1;
  stream_routes[0].target.webhook.n_headers = 1;
  stream_routes[1] = route_local("error", "count");
  stream_routes[2] = route_local("close", "");
  return reg_routes(key, stream_routes, 3);
}

#endif
