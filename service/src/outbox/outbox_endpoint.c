/*
 * outbox_endpoint.c - async webhooks by name (handler id, route) and the
 * settings each name delivers with (hd_outbox_endpoint_add/drop).
 *
 * A name outlives its settings: health, flow control and queued deliveries
 * stay with the name when a webhook is rebuilt (UpdateHandler,
 * RotateSecret). A rebuild makes the new settings before the old ones go,
 * and is committed or abandoned only after that: so a name keeps every
 * handle still held, in the order they were added, and delivers with the
 * oldest. A committed rebuild drops the old handle (the old handler goes
 * once the registry has swapped it out) and the new settings apply from
 * then; an abandoned one drops the new handle, which never applied.
 * Nothing of a rebuild is seen before its commit. Under the outbox's
 * lock.
 */
#include "outbox_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names --------------------------------------------------------------- */

static size_t name_key(const char *handler_id, const char *route, char *buf,
                       size_t size) {
  int n = snprintf(buf, size, "%s%c%s", handler_id, '\0', route);
  return n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
}

ob_name *ob_name_get(hd_outbox *o, const char *handler_id, const char *route,
                     int create) {
  char key[HD_HANDLER_ID_MAX + HD_EVENT_NAME_MAX + 4];
  size_t len = name_key(handler_id, route, key, sizeof(key));
  ob_name *n = hd_strmap_get(o->names, key, len);

  if (n != NULL || !create)
    return n;
  n = calloc(1, sizeof(*n));
  if (n == NULL)
    return NULL;
  n->handler_id = strdup(handler_id);
  n->route = strdup(route);
  n->keys = hd_strmap_new(free);
  if (!n->handler_id || !n->route || !n->keys ||
      hd_strmap_put(o->names, key, len, n) != HD_OK) {
    free(n->handler_id);
    free(n->route);
    hd_strmap_free(n->keys);
    free(n);
    return NULL;
  }
  n->tokens = -1; /* full, once a rate is known */
  n->next_all = o->all_names;
  o->all_names = n;
  return n;
}

static void endpoint_unref(hd_outbox_endpoint *ep) {
  if (ep == NULL || atomic_fetch_sub(&ep->refs, 1) != 1)
    return;
  free(ep->key);
  free(ep->url);
  for (size_t i = 0; i < ep->n_headers; i++)
    free(ep->headers[i]);
  free(ep->headers);
  explicit_bzero(ep->sign_key, sizeof(ep->sign_key));
  explicit_bzero(ep->prev_sign_key, sizeof(ep->prev_sign_key));
  free(ep);
}

void ob_names_free(hd_outbox *o) {
  for (ob_name *n = o->all_names, *next; n; n = next) {
    next = n->next_all;
    for (hd_outbox_endpoint *ep = n->ep, *later; ep; ep = later) {
      later = ep->next_held;
      endpoint_unref(ep); /* the name's */
    }
    free(n->handler_id);
    free(n->route);
    hd_strmap_free(n->keys);
    free(n);
  }
  o->all_names = NULL;
  hd_strmap_free(o->names);
  o->names = NULL;
}

/* ---- settings -------------------------------------------------------------
 */

hd_outbox_endpoint *hd_outbox_endpoint_add(hd_outbox *o,
                                           const hd_endpoint_spec *spec) {
  hd_outbox_endpoint *ep;
  ob_name *n;

  if (o == NULL || spec == NULL || spec->handler_id == NULL ||
      spec->n_retry_schedule > HD_OUTBOX_SCHEDULE_MAX ||
      spec->sign_key_len > sizeof(ep->sign_key) ||
      spec->prev_sign_key_len > sizeof(ep->prev_sign_key))
    return NULL;
  ep = calloc(1, sizeof(*ep));
  if (ep == NULL)
    return NULL;
  atomic_init(&ep->refs, 1);
  ep->key = strdup(spec->key ? spec->key : "");
  ep->url = strdup(spec->url ? spec->url : "");
  ep->headers = calloc(spec->n_headers + 1, sizeof(char *));
  if (!ep->key || !ep->url || !ep->headers)
    goto fail;
  for (; ep->n_headers < spec->n_headers; ep->n_headers++) {
    ep->headers[ep->n_headers] = strdup(spec->headers[ep->n_headers]);
    if (ep->headers[ep->n_headers] == NULL)
      goto fail;
  }
  if (spec->sign_key_len > 0) /* NULL with 0: unsigned */
    memcpy(ep->sign_key, spec->sign_key, spec->sign_key_len);
  ep->sign_key_len = spec->sign_key_len;
  if (spec->prev_sign_key_len > 0)
    memcpy(ep->prev_sign_key, spec->prev_sign_key, spec->prev_sign_key_len);
  ep->prev_sign_key_len = spec->prev_sign_key_len;
  ep->prev_until_ns = spec->prev_until_ns;
  ep->timeout_ms = spec->timeout_ms;
  for (size_t i = 0; i < spec->n_retry_schedule; i++)
    ep->schedule[i] = spec->retry_schedule_ms[i];
  ep->n_schedule = spec->n_retry_schedule;
  ep->ordered = spec->ordered;
  ep->max_inflight = spec->max_inflight;
  ep->max_rps = spec->max_rps;

  pthread_mutex_lock(&o->lock);
  n = ob_name_get(o, spec->handler_id, spec->route ? spec->route : "", 1);
  if (n != NULL) {
    hd_outbox_endpoint **at = &n->ep;
    ep->name = n;
    atomic_fetch_add(&ep->refs, 1); /* the name's */
    while (*at != NULL) /* after the handles still held: see above */
      at = &(*at)->next_held;
    *at = ep;
    if (n->ep == ep) {
      n->tokens = -1;
      if (o->running) /* what waited for it may go now */
        ob_unblock(o, n);
      pthread_cond_signal(&o->wake);
    }
  }
  pthread_mutex_unlock(&o->lock);
  if (n == NULL)
    goto fail;
  /* Handlers may outlive hd_outbox_stop (the registry goes last): their
   * drop needs the outbox's memory. */
  atomic_fetch_add(&o->refs, 1);
  return ep;
fail:
  endpoint_unref(ep);
  return NULL;
}

void hd_outbox_endpoint_drop(hd_outbox *o, hd_outbox_endpoint *ep) {
  if (o == NULL || ep == NULL)
    return;
  pthread_mutex_lock(&o->lock);
  if (ep->name != NULL) {
    ob_name *n = ep->name;
    hd_outbox_endpoint **at = &n->ep;
    while (*at != NULL && *at != ep)
      at = &(*at)->next_held;
    if (*at == ep) {
      int was_current = n->ep == ep;
      *at = ep->next_held;
      ep->next_held = NULL;
      endpoint_unref(ep); /* the name's */
      /* The next handle held (a committed rebuild's) applies from now;
       * with none, the name's deliveries are dead. */
      if (was_current) {
        n->tokens = -1;
        if (n->ep != NULL && o->running)
          ob_unblock(o, n);
        pthread_cond_signal(&o->wake);
      }
    }
  }
  pthread_mutex_unlock(&o->lock);
  endpoint_unref(ep);
  ob_unref(o);
}
