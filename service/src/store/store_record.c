/*
 * store_record.c - hd_registration <-> handlerd.store.v1.Registration.
 *
 * Text fields are protobuf `bytes` (see the .proto for why); a C string
 * goes in without its NUL, and a decoded one with a NUL inside is refused
 * rather than silently cut short.
 */
#include "store_record.h"
#include "store_decode.h"

#include "handlerd/store/v1/registration.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Handlerd__Store__V1__Registration pb_reg;
typedef Handlerd__Store__V1__Target pb_target;
typedef Handlerd__Store__V1__Webhook pb_webhook;
typedef Handlerd__Store__V1__Header pb_header;
typedef Handlerd__Store__V1__Route pb_route;

static void set_why(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t why_size, const char *fmt, ...) {
  va_list ap;
  if (!why || why_size == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(why, why_size, fmt, ap);
  va_end(ap);
}

/* ---- encoding ------------------------------------------------------------
 * The protobuf-c structs are built in an arena that borrows every string
 * from `reg` (no copies of a secret to wipe), then packed into one malloc.
 */

static ProtobufCBinaryData text(const char *s) {
  ProtobufCBinaryData b = {s ? strlen(s) : 0, (uint8_t *)s};
  return b;
}

/* `t` as a Target in `a`; *async is raised when it is delivered out of
 * band (the record's version depends on it). */
static hd_err enc_target(hd_arena *a, const hd_target_spec *t,
                         const char *where, pb_target **out, int *async,
                         char *why, size_t why_size) {
  pb_target *pt = hd_arena_alloc(a, sizeof(*pt));
  if (!pt)
    return HD_ENOMEM;
  handlerd__store__v1__target__init(pt);
  switch (t->kind) {
  case HD_TARGET_LOCAL:
    if (!t->local) {
      set_why(why, why_size, "%s: a local target without a name", where);
      return HD_EINVAL;
    }
    pt->kind_case = HANDLERD__STORE__V1__TARGET__KIND_LOCAL;
    pt->local = text(t->local);
    break;
  case HD_TARGET_WEBHOOK: {
    const hd_webhook_spec *w = &t->webhook;
    pb_webhook *pw = hd_arena_alloc(a, sizeof(*pw));
    if (!pw)
      return HD_ENOMEM;
    handlerd__store__v1__webhook__init(pw);
    if (!w->url || (w->n_headers && !w->headers) ||
        (w->n_retry_schedule && !w->retry_schedule_ms)) {
      set_why(why, why_size,
              "%s: a webhook without a URL, headers or retry schedule", where);
      return HD_EINVAL;
    }
    pw->url = text(w->url);
    pw->secret = text(w->secret);
    pw->previous_secret = text(w->previous_secret);
    pw->previous_until_ms = w->previous_until_ms;
    pw->new_secret = w->new_secret != 0;
    pw->timeout_ms = w->timeout_ms;
    pw->max_attempts = w->max_attempts;
    pw->binary_mode = w->binary_mode != 0;
    if (w->n_headers) {
      pw->headers = hd_arena_calloc(a, w->n_headers, sizeof(*pw->headers));
      if (!pw->headers)
        return HD_ENOMEM;
    }
    for (size_t i = 0; i < w->n_headers; i++) {
      pb_header *h = hd_arena_alloc(a, sizeof(*h));
      if (!h)
        return HD_ENOMEM;
      handlerd__store__v1__header__init(h);
      if (!w->headers[i].name || !w->headers[i].value) {
        set_why(why, why_size, "%s: header %zu has no name or value", where, i);
        return HD_EINVAL;
      }
      h->name = text(w->headers[i].name);
      h->value = text(w->headers[i].value);
      pw->headers[pw->n_headers++] = h;
    }
    pw->async = w->async != 0;
    pw->ordered = w->ordered != 0;
    /* Borrowed, like the strings: packing only reads it. */
    pw->retry_schedule_ms = (uint32_t *)w->retry_schedule_ms;
    pw->n_retry_schedule_ms = w->n_retry_schedule;
    pw->max_inflight = w->max_inflight;
    pw->max_rps = w->max_rps;
    if (pw->async)
      *async = 1;
    pt->kind_case = HANDLERD__STORE__V1__TARGET__KIND_WEBHOOK;
    pt->webhook = pw;
    break;
  }
  default:
    set_why(why, why_size, "%s: unknown target kind %d", where, (int)t->kind);
    return HD_EINVAL;
  }
  *out = pt;
  return HD_OK;
}

static hd_err enc_build(hd_arena *a, const hd_registration *reg, pb_reg *pr,
                        char *why, size_t why_size) {
  hd_err err = HD_OK;
  char where[64];
  int async = 0;

  handlerd__store__v1__registration__init(pr);
  if (!reg->key || (reg->n_routes && !reg->routes) ||
      (reg->n_events && !reg->events)) {
    set_why(why, why_size, "a registration without a key, routes or events");
    return HD_EINVAL;
  }
  pr->key = text(reg->key);
  if (reg->target.kind != HD_TARGET_NONE &&
      (err = enc_target(a, &reg->target, "target", &pr->target, &async, why,
                        why_size)) != HD_OK)
    return err;
  if (reg->n_routes &&
      !(pr->routes = hd_arena_calloc(a, reg->n_routes, sizeof(*pr->routes))))
    return HD_ENOMEM;
  for (size_t i = 0; i < reg->n_routes; i++) {
    pb_route *r = hd_arena_alloc(a, sizeof(*r));
    if (!r)
      return HD_ENOMEM;
    handlerd__store__v1__route__init(r);
    snprintf(where, sizeof(where), "route %zu", i);
    if (!reg->routes[i].event) {
      set_why(why, why_size, "%s: no event name", where);
      return HD_EINVAL;
    }
    r->event = text(reg->routes[i].event);
    if ((err = enc_target(a, &reg->routes[i].target, where, &r->target, &async,
                          why, why_size)) != HD_OK)
      return err;
    pr->routes[pr->n_routes++] = r;
  }
  if (reg->n_events &&
      !(pr->events = hd_arena_calloc(a, reg->n_events, sizeof(*pr->events))))
    return HD_ENOMEM;
  for (size_t i = 0; i < reg->n_events; i++) {
    if (!reg->events[i]) {
      set_why(why, why_size, "event %zu is NULL", i);
      return HD_EINVAL;
    }
    pr->events[pr->n_events++] = text(reg->events[i]);
  }
  pr->selector = text(reg->selector);
  pr->derive_old_value = reg->derive_old_value != 0;
  /* The oldest version that holds it: an older handlerd still reads a
   * registration with none of the newer settings, and refuses one it would
   * deliver differently: synchronously, unfiltered (store_record.h). */
  if (pr->selector.len > 0 || pr->derive_old_value)
    pr->version = HD_STORE_RECORD_VERSION_SELECT;
  else if (async)
    pr->version = HD_STORE_RECORD_VERSION_ASYNC;
  else
    pr->version = HD_STORE_RECORD_VERSION_BASE;
  return HD_OK;
}

hd_err hd_store_record_encode(const hd_registration *reg, uint8_t **out,
                              size_t *len, char *why, size_t why_size) {
  pb_reg pr;
  *out = NULL;
  *len = 0;
  hd_arena *a = hd_arena_new(1024);
  if (!a)
    return HD_ENOMEM;
  hd_err err = enc_build(a, reg, &pr, why, why_size);
  if (err == HD_OK) {
    size_t n = handlerd__store__v1__registration__get_packed_size(&pr);
    *out = malloc(n ? n : 1);
    if (*out) {
      *len = handlerd__store__v1__registration__pack(&pr, *out);
    } else {
      err = HD_ENOMEM;
    }
  }
  hd_arena_free(a); /* pointers only: the strings were borrowed */
  return err;
}

/* ---- decoding ------------------------------------------------------------
 * protobuf-c unpacks into the caller's arena; the C strings are copied
 * into it too, so wiping that one arena wipes every copy of a secret.
 */

/* A NUL-terminated copy of `b` in `a`; NULL with *err set. */
static const char *dec_text(hd_arena *a, ProtobufCBinaryData b,
                            const char *field, hd_err *err, char *why,
                            size_t why_size) {
  if (b.len && memchr(b.data, '\0', b.len)) {
    set_why(why, why_size, "%s holds a NUL byte", field);
    *err = HD_EINVAL;
    return NULL;
  }
  char *s = hd_arena_alloc(a, b.len + 1);
  if (!s) {
    *err = HD_ENOMEM;
    return NULL;
  }
  if (b.len)
    memcpy(s, b.data, b.len);
  s[b.len] = '\0';
  return s;
}

#define DEC(dst, b, field)                                                     \
  do {                                                                         \
    if (!((dst) = dec_text(a, (b), (field), &err, why, why_size)))             \
      return err;                                                              \
  } while (0)

static hd_err dec_target(hd_arena *a, const pb_target *pt, hd_target_spec *t,
                         char *why, size_t why_size) {
  hd_err err = HD_OK;
  memset(t, 0, sizeof(*t));
  if (!pt)
    return HD_OK;
  switch (pt->kind_case) {
  case HANDLERD__STORE__V1__TARGET__KIND_LOCAL:
    t->kind = HD_TARGET_LOCAL;
    DEC(t->local, pt->local, "target.local");
    break;
  case HANDLERD__STORE__V1__TARGET__KIND_WEBHOOK: {
    const pb_webhook *pw = pt->webhook;
    hd_webhook_spec *w = &t->webhook;
    t->kind = HD_TARGET_WEBHOOK;
    DEC(w->url, pw->url, "webhook.url");
    DEC(w->secret, pw->secret, "webhook.secret");
    DEC(w->previous_secret, pw->previous_secret, "webhook.previous_secret");
    w->previous_until_ms = pw->previous_until_ms;
    if (hd_store_dec_webhook_plain(a, w, pw->new_secret, pw->timeout_ms,
                                   pw->max_attempts, pw->binary_mode,
                                   pw->n_headers) != HD_OK)
      return HD_ENOMEM;
    for (size_t i = 0; i < pw->n_headers; i++) {
      DEC(w->headers[i].name, pw->headers[i]->name, "webhook header name");
      DEC(w->headers[i].value, pw->headers[i]->value, "webhook header value");
    }
    w->n_headers = pw->n_headers;
    w->async = pw->async != 0;
    w->ordered = pw->ordered != 0;
    if (pw->n_retry_schedule_ms) {
      /* Copied into `a`, like the headers' strings: the registration must
       * not point into the unpacked message, whatever allocated it. */
      uint32_t *sched =
          hd_arena_calloc(a, pw->n_retry_schedule_ms, sizeof(*sched));
      if (!sched)
        return HD_ENOMEM;
      memcpy(sched, pw->retry_schedule_ms,
             pw->n_retry_schedule_ms * sizeof(*sched));
      w->retry_schedule_ms = sched;
      w->n_retry_schedule = pw->n_retry_schedule_ms;
    }
    w->max_inflight = pw->max_inflight;
    w->max_rps = pw->max_rps;
    break;
  }
  default:
    /* A kind this format version does not have: the writer should have
     * raised the version. Refused: restoring it as "no target" would
     * silently change what was registered. */
    set_why(why, why_size, "a target of no kind this handlerd knows");
    return HD_EIO;
  }
  return HD_OK;
}

hd_err hd_store_record_decode(const void *buf, size_t len, hd_arena *a,
                              hd_registration *out, char *why,
                              size_t why_size) {
  hd_err err = HD_OK;
  memset(out, 0, sizeof(*out));
  pb_reg *pr = handlerd__store__v1__registration__unpack(
      hd_arena_pb_allocator(a), len, buf);
  if (!pr) {
    set_why(why, why_size,
            "not a handlerd.store.v1.Registration record (%zu bytes)", len);
    return HD_EINVAL;
  }
  if (pr->version > HD_STORE_RECORD_VERSION || pr->version == 0) {
    set_why(why, why_size,
            "record format version %u; this handlerd reads 1 to %d",
            pr->version, HD_STORE_RECORD_VERSION);
    return HD_EIO;
  }
  DEC(out->key, pr->key, "key");
  if (pr->target &&
      (err = dec_target(a, pr->target, &out->target, why, why_size)) != HD_OK)
    return err;
  if (pr->n_routes &&
      !(out->routes = hd_arena_calloc(a, pr->n_routes, sizeof(*out->routes))))
    return HD_ENOMEM;
  for (size_t i = 0; i < pr->n_routes; i++) {
    DEC(out->routes[i].event, pr->routes[i]->event, "route event");
    if ((err = dec_target(a, pr->routes[i]->target, &out->routes[i].target, why,
                          why_size)) != HD_OK)
      return err;
  }
  out->n_routes = pr->n_routes;
  if (pr->n_events &&
      !(out->events = hd_arena_calloc(a, pr->n_events, sizeof(*out->events))))
    return HD_ENOMEM;
  for (size_t i = 0; i < pr->n_events; i++)
    DEC(out->events[i], pr->events[i], "event");
  out->n_events = pr->n_events;
  DEC(out->selector, pr->selector, "selector");
  out->derive_old_value = pr->derive_old_value != 0;
  return HD_OK;
}
