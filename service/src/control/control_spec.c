/*
 * control_spec.c - the registration each registered handler keeps
 * (record.spec: what the store has, secrets included) and UpdateHandler's
 * rule for the secrets an update does not mention.
 *
 * The secret fields are the registration's (registration.h: a webhook's
 * secret and a rotation in progress), not a kind's business: they are what
 * an update keeps and a rotation sets. Only webhooks have them, so this is
 * the one file of the control plane that reads HD_TARGET_WEBHOOK's spec.
 */
#include "control_internal.h"

#include <stdint.h>
#include <string.h>

/* ---- a deep copy --------------------------------------------------------- */

/* `s` in `a`; NULL stays NULL. *err HD_ENOMEM on failure. */
static const char *dup_str(hd_arena *a, const char *s, hd_err *err) {
  char *d;

  if (s == NULL)
    return NULL;
  if ((d = hd_arena_strdup(a, s)) == NULL)
    *err = HD_ENOMEM;
  return d;
}

static hd_err copy_webhook(hd_arena *a, hd_webhook_spec *w, int64_t now_ms) {
  hd_err err = HD_OK;
  const hd_header_spec *headers = w->headers;
  const uint32_t *sched = w->retry_schedule_ms;

  w->url = dup_str(a, w->url, &err);
  w->secret = dup_str(a, w->secret, &err);
  if (w->previous_secret == NULL || w->previous_until_ms <= now_ms) {
    /* Ended: nothing would send it again, so it is not kept (nor saved). */
    w->previous_secret = NULL;
    w->previous_until_ms = 0;
  } else {
    w->previous_secret = dup_str(a, w->previous_secret, &err);
  }
  w->headers = NULL;
  if (w->n_headers &&
      !(w->headers = hd_arena_calloc(a, w->n_headers, sizeof(*w->headers))))
    return HD_ENOMEM;
  for (size_t i = 0; i < w->n_headers; i++) {
    w->headers[i].name = dup_str(a, headers[i].name, &err);
    w->headers[i].value = dup_str(a, headers[i].value, &err);
  }
  w->retry_schedule_ms = NULL;
  if (w->n_retry_schedule) {
    uint32_t *s = hd_arena_calloc(a, w->n_retry_schedule, sizeof(*s));
    if (!s)
      return HD_ENOMEM;
    memcpy(s, sched, w->n_retry_schedule * sizeof(*s));
    w->retry_schedule_ms = s;
  }
  return err;
}

/* `t` (a shallow copy) made deep in `a`, with `secret` in place of a
 * new_secret that asked for it. */
static hd_err copy_target(const hd_control *c, hd_arena *a, hd_target_spec *t,
                          const char *secret, int64_t now_ms) {
  hd_err err = HD_OK;
  const hd_kind *k = hd_control_row(c, t->kind, NULL);

  /* The kind says how a generated secret takes the request's place, so a
   * restart (and the next update) signs with the same secret. */
  if (secret && k && k->wants_new_secret && k->keep_secret &&
      k->wants_new_secret(t))
    k->keep_secret(t, secret);
  t->local = dup_str(a, t->local, &err);
  if (err == HD_OK && t->kind == HD_TARGET_WEBHOOK)
    err = copy_webhook(a, &t->webhook, now_ms);
  return err;
}

hd_err hd_ctl_spec_keep(const hd_control *c, hd_arena *a,
                        const hd_registration *reg, const char *secret,
                        int64_t now_ms, hd_registration *out) {
  hd_err err = HD_OK;
  const char *kept = NULL;

  *out = *reg;
  if (secret && !(kept = hd_arena_strdup(a, secret)))
    return HD_ENOMEM;
  out->key = dup_str(a, reg->key, &err);
  out->selector = dup_str(a, reg->selector, &err);
  if (err == HD_OK)
    err = copy_target(c, a, &out->target, kept, now_ms);
  out->routes = NULL;
  if (err == HD_OK && reg->n_routes &&
      !(out->routes = hd_arena_calloc(a, reg->n_routes, sizeof(*out->routes))))
    err = HD_ENOMEM;
  for (size_t i = 0; err == HD_OK && i < reg->n_routes; i++) {
    out->routes[i] = reg->routes[i];
    out->routes[i].event = dup_str(a, reg->routes[i].event, &err);
    if (err == HD_OK)
      err = copy_target(c, a, &out->routes[i].target, kept, now_ms);
  }
  out->events = NULL;
  if (err == HD_OK && reg->n_events &&
      !(out->events = hd_arena_calloc(a, reg->n_events, sizeof(char *))))
    err = HD_ENOMEM;
  for (size_t i = 0; err == HD_OK && i < reg->n_events; i++)
    out->events[i] = dup_str(a, reg->events[i], &err);
  return err;
}

/* ---- what an update keeps ------------------------------------------------ */

static int empty(const char *s) {
  return s == NULL || s[0] == '\0';
}

/* `t` keeps `old`'s secret and rotation when both are webhooks and `t`
 * asks for no secret of its own. */
static void keep_one(hd_target_spec *t, const hd_target_spec *old) {
  if (t->kind != HD_TARGET_WEBHOOK || old->kind != HD_TARGET_WEBHOOK ||
      !empty(t->webhook.secret) || t->webhook.new_secret)
    return;
  t->webhook.secret = old->webhook.secret;
  t->webhook.previous_secret = old->webhook.previous_secret;
  t->webhook.previous_until_ms = old->webhook.previous_until_ms;
}

/* The target of `cur`'s route `event` (the last of that name: the one the
 * stream routes to), or NULL. */
static const hd_target_spec *route_target(const hd_registration *cur,
                                          const char *event) {
  for (size_t i = cur->n_routes; i-- > 0;)
    if (strcmp(hd_str(cur->routes[i].event), event) == 0)
      return &cur->routes[i].target;
  return NULL;
}

hd_err hd_ctl_keep_secrets(hd_arena *a, hd_registration *reg,
                           const hd_registration *cur) {
  if (hd_registration_has_target(reg) && hd_registration_has_target(cur))
    keep_one(&reg->target, &cur->target);
  if (reg->n_routes == 0 || cur->n_routes == 0)
    return HD_OK;
  hd_route_spec *routes = hd_arena_calloc(a, reg->n_routes, sizeof(*routes));
  if (!routes)
    return HD_ENOMEM;
  memcpy(routes, reg->routes, reg->n_routes * sizeof(*routes));
  for (size_t i = 0; i < reg->n_routes; i++) {
    const hd_target_spec *old = route_target(cur, hd_str(routes[i].event));
    if (old)
      keep_one(&routes[i].target, old);
  }
  reg->routes = routes;
  return HD_OK;
}
