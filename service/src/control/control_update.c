/*
 * control_update.c - changes to a registered handler: RemoveHandler (whole,
 * or one route), UpdateHandler and RotateSecret.
 *
 * An update is a new registration built under the same id, saved over the
 * old record (the store keeps its place in the load order), then swapped
 * into the same place of the key's set (hd_registry_replace): nothing is
 * visible before the commit, and a failure before the swap changes
 * nothing. A route's removal and a rotation are updates of the
 * registration the handler keeps (record.spec), so they keep what they do
 * not change, secrets included. Every change holds c->change
 * (control_internal.h).
 */
#include "control.h"
#include "control_internal.h"

#include "clock.h"
#include "registry_select.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- what is registered ---------------------------------------------------
 */

typedef struct lookup_ctx {
  const char *id;
  hd_handler *member; /* a reference, once found */
} lookup_ctx;

static void lookup_one(const char *key, hd_handler *member, void *ud) {
  lookup_ctx *lc = ud;
  (void)key;
  if (!lc->member && hd_registered_record(member) &&
      strcmp(hd_handler_id(member), lc->id) == 0)
    lc->member = hd_handler_ref(member);
}

/* The registered handler `id` under `key` into *member (a reference; its
 * record is immutable), or which of the two is missing, with the message
 * RemoveHandler has always given: HD_ENOKEY, HD_ENOTFOUND, or HD_EINVAL when
 * what named nothing is not UTF-8. */
static hd_err lookup(hd_control *c, const char *key, const char *id,
                     hd_handler **member, char *msg, size_t msg_size) {
  lookup_ctx lc = {id, NULL};
  hd_err err = hd_registry_foreach(c->reg, key, lookup_one, &lc);

  *member = NULL;
  if (err == HD_OK && !lc.member)
    err = HD_ENOTFOUND;
  if (err != HD_OK && err != HD_ENOMEM &&
      hd_control_check_lookup_utf8(key, id, msg, msg_size) != HD_OK)
    return HD_EINVAL;
  if (err == HD_ENOKEY)
    snprintf(msg, msg_size, "no handler registered for key '%s'", key);
  else if (err == HD_ENOTFOUND)
    snprintf(msg, msg_size, "no handler '%s' under key '%s'", id, key);
  else if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  if (err == HD_OK)
    *member = lc.member;
  return err;
}

/* lookup, and the registration the handler keeps (*cur, NULL on failure)
 * copied into *next for a change to start from. */
static hd_err lookup_saved(hd_control *c, const char *key, const char *id,
                           hd_handler **member, const hd_registration **cur,
                           hd_registration *next, char *msg, size_t msg_size) {
  hd_err err = lookup(c, key, id, member, msg, msg_size);
  *cur = err == HD_OK ? &hd_registered_record(*member)->spec : NULL;
  *next = *cur ? **cur : (hd_registration){0};
  return err;
}

/* ---- RemoveHandler --------------------------------------------------------
 */

hd_err hd_ctl_remove_locked(hd_control *c, const char *key, const char *id,
                            char *msg, size_t msg_size) {
  hd_handler *member = NULL;
  char why[512] = "";
  hd_err err = lookup(c, key, id, &member, msg, msg_size);

  hd_handler_unref(member);
  /* A member the control plane did not register (no record) is not in the
   * store, but the registry may still remove it. */
  if (err != HD_OK && err != HD_ENOTFOUND)
    return err;
  /* Forget it durably first: a crash between the two steps must not bring
   * back a handler whose removal was acknowledged. */
  if (err == HD_OK && c->store && !c->applying &&
      (err = hd_store_del(c->store, id, why, sizeof(why))) != HD_OK &&
      err != HD_ENOTFOUND) {
    snprintf(msg, msg_size, "cannot delete the registration: %s",
             why[0] ? why : hd_strerror(err));
    hd_log(HD_LOG_ERROR, "store: cannot delete handler %s under key '%s': %s",
           id, key, why[0] ? why : hd_strerror(err));
    return hd_ctl_store_code(err);
  }
  err = hd_registry_remove(c->reg, key, id);
  if (err == HD_ENOKEY)
    snprintf(msg, msg_size, "no handler registered for key '%s'", key);
  else if (err == HD_ENOTFOUND)
    snprintf(msg, msg_size, "no handler '%s' under key '%s'", id, key);
  else if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  else if (err == HD_OK)
    hd_ctl_drop_id(c, id);
  if (err == HD_OK && hd_store_shared(c->store))
    hd_ctl_synced_note(c, id, NULL, 0);
  return err;
}

hd_err hd_control_remove(hd_control *c, const char *key, const char *id,
                         char *msg, size_t msg_size) {
  pthread_mutex_lock(&c->change);
  hd_err err = hd_ctl_remove_locked(c, key, id, msg, msg_size);
  pthread_mutex_unlock(&c->change);
  return err;
}

/* ---- the update itself ----------------------------------------------------
 */

/* Builds `reg` under `id`, saves it over the record of `old` (the
 * registration it replaces) and swaps it in. All or nothing. */
static hd_err replace(hd_control *c, const char *key, const char *id,
                      const hd_registration *reg, const hd_registration *old,
                      hd_arena *a, const char **secret, char *msg,
                      size_t msg_size) {
  hd_built b = {0};
  char why[512] = "";
  hd_err err = hd_ctl_build(c, reg, id, &b, msg, msg_size);

  /* The answer is ready before anything is committed, as for AddHandler. */
  if (err == HD_OK && secret) {
    *secret = b.secret ? hd_arena_strdup(a, b.secret) : "";
    if (!*secret) {
      snprintf(msg, msg_size, "out of memory");
      err = HD_ENOMEM;
    }
  }
  if (err == HD_OK)
    err =
        hd_ctl_persist(c, &hd_registered_record(b.h)->spec, id, msg, msg_size);
  if (err == HD_OK &&
      (err = hd_registry_replace(c->reg, key, id, b.h, b.sel)) != HD_OK) {
    /* Only out of memory, with c->change held (nothing else can remove
     * it): the old handler still serves, so the store must say it again. */
    snprintf(msg, msg_size, "%s",
             err == HD_ENOMEM ? "out of memory"
                              : "the handler changed meanwhile");
    if (c->store && !c->applying &&
        hd_store_put_registration(c->store, id, old, why, sizeof(why)) != HD_OK)
      hd_log(HD_LOG_ERROR,
             "store: handler %s under key '%s' was not updated, but its "
             "update stays saved (it will be restored at the next start): %s",
             id, key, why);
  }
  hd_built_clear(&b);
  return err;
}

hd_err hd_ctl_replace_locked(hd_control *c, const char *key, const char *id,
                             const hd_registration *reg, char *msg,
                             size_t msg_size) {
  hd_handler *member = NULL;
  hd_err err = lookup(c, key, id, &member, msg, msg_size);
  if (err == HD_OK)
    err = replace(c, key, id, reg, &hd_registered_record(member)->spec, NULL,
                  NULL, msg, msg_size);
  hd_handler_unref(member); /* after the swap: may destroy the old one */
  return err;
}

hd_err hd_control_update(hd_control *c, const char *key, const char *id,
                         const hd_registration *reg, hd_arena *a,
                         const char **secret, char *msg, size_t msg_size) {
  hd_handler *member = NULL;
  hd_registration next = *reg;
  hd_arena *tmp = hd_arena_new(512); /* route copies, borrowed strings */
  hd_err err;

  if (secret)
    *secret = "";
  if (!tmp) {
    snprintf(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  next.key = key;
  pthread_mutex_lock(&c->change);
  err = lookup(c, key, id, &member, msg, msg_size);
  /* As AddHandler holds a new registration: limits, strings, shape. */
  if (err == HD_OK)
    err = hd_control_check_limits(c, &next, msg, msg_size);
  if (err == HD_OK)
    err = hd_control_check_strings(c, &next, msg, msg_size);
  if (err == HD_OK)
    err = hd_control_check_request(&next, msg, msg_size);
  const record *cur = err == HD_OK ? hd_registered_record(member) : NULL;
  if (err == HD_OK &&
      (err = hd_ctl_keep_secrets(tmp, &next, &cur->spec)) != HD_OK)
    snprintf(msg, msg_size, "out of memory");
  if (err == HD_OK)
    err = replace(c, key, id, &next, &cur->spec, a, secret, msg, msg_size);
  pthread_mutex_unlock(&c->change);
  hd_handler_unref(member); /* after the swap: may destroy the old one */
  hd_arena_free(tmp);
  return err;
}

/* ---- one route ------------------------------------------------------------
 */

static hd_err no_route(const char *id, const char *route, char *msg,
                       size_t msg_size) {
  /* A name that matched nothing is a bad argument when it is not UTF-8,
   * as a key or id is. */
  if (hd_kind_check_utf8("", "route", route, msg, msg_size) != HD_OK)
    return HD_EINVAL;
  snprintf(msg, msg_size, "handler %s has no route '%s'", id, route);
  return HD_ENOTFOUND;
}

hd_err hd_control_remove_route(hd_control *c, const char *key, const char *id,
                               const char *route, char *msg, size_t msg_size) {
  hd_handler *member = NULL;
  hd_arena *tmp;
  size_t kept = 0, gone = 0;
  hd_err err;

  if (!route || !*route)
    return hd_control_remove(c, key, id, msg, msg_size);
  if (!(tmp = hd_arena_new(512))) {
    snprintf(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  pthread_mutex_lock(&c->change);
  const hd_registration *cur;
  hd_registration next;
  err = lookup_saved(c, key, id, &member, &cur, &next, msg, msg_size);
  if (err == HD_OK && cur->n_routes &&
      !(next.routes =
            hd_arena_calloc(tmp, cur->n_routes, sizeof(*next.routes))))
    err = HD_ENOMEM;
  for (size_t i = 0; err == HD_OK && i < (cur ? cur->n_routes : 0); i++) {
    if (strcmp(hd_str(cur->routes[i].event), route) == 0)
      gone++; /* every route of the name: the later ones shadow nothing */
    else
      next.routes[kept++] = cur->routes[i];
  }
  next.n_routes = kept;
  if (err == HD_OK && gone == 0)
    err = no_route(id, route, msg, msg_size);
  else if (err == HD_OK && kept == 0)
    /* The seed's remove(sub_handler) of the last one: nothing is left to
     * handle anything, so the handler goes. */
    err = hd_ctl_remove_locked(c, key, id, msg, msg_size);
  else if (err == HD_OK)
    err = replace(c, key, id, &next, cur, NULL, NULL, msg, msg_size);
  if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  pthread_mutex_unlock(&c->change);
  hd_handler_unref(member);
  hd_arena_free(tmp);
  return err;
}

/* ---- RotateSecret ---------------------------------------------------------
 */

/* The place `route` names in `next` (whose routes are `tmp` copies): the
 * target for "", else the last route of that name (the one the stream
 * routes to). HD_EINVAL / HD_ENOTFOUND / HD_EUNSUPPORTED with a message. */
static hd_err rotate_place(hd_arena *tmp, hd_registration *next, const char *id,
                           const char *route, hd_target_spec **out, char *msg,
                           size_t msg_size) {
  *out = NULL;
  if (!route[0]) {
    if (!hd_registration_has_target(next)) {
      snprintf(msg, msg_size,
               "handler %s is an event stream: give the route of the webhook "
               "whose secret to rotate",
               id);
      return HD_EINVAL;
    }
    *out = &next->target;
  } else if (next->n_routes) {
    hd_route_spec *routes =
        hd_arena_calloc(tmp, next->n_routes, sizeof(*routes));
    if (!routes)
      return HD_ENOMEM;
    memcpy(routes, next->routes, next->n_routes * sizeof(*routes));
    next->routes = routes;
    for (size_t i = next->n_routes; !*out && i-- > 0;)
      if (strcmp(hd_str(routes[i].event), route) == 0)
        *out = &routes[i].target;
  }
  if (!*out)
    return no_route(id, route, msg, msg_size);
  if ((*out)->kind != HD_TARGET_WEBHOOK) {
    if (route[0])
      snprintf(msg, msg_size, "route '%s' of handler %s is not a webhook",
               route, id);
    else
      snprintf(msg, msg_size, "the target of handler %s is not a webhook", id);
    return HD_EUNSUPPORTED;
  }
  return HD_OK;
}

hd_err hd_control_rotate_secret(hd_control *c, const char *key, const char *id,
                                const char *route, int64_t overlap_ms,
                                const char *new_secret, hd_arena *a,
                                const char **secret, int64_t *expires_ms,
                                char *msg, size_t msg_size) {
  hd_handler *member = NULL;
  hd_target_spec *t = NULL;
  const char *generated = NULL, *given = NULL;
  int64_t until = 0;
  hd_arena *tmp;
  hd_err err;

  *secret = "";
  *expires_ms = 0;
  if (overlap_ms < 0 || overlap_ms > HD_ROTATE_OVERLAP_MAX_MS) {
    snprintf(msg, msg_size,
             "overlap_ms: %lld is not between 0 (24 h) and %lld (30 days)",
             (long long)overlap_ms, (long long)HD_ROTATE_OVERLAP_MAX_MS);
    return HD_EINVAL;
  }
  /* The answer is ready before anything is committed. */
  if (new_secret && new_secret[0] &&
      !(given = hd_arena_strdup(a, new_secret))) {
    snprintf(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  if (!(tmp = hd_arena_new(512))) {
    snprintf(msg, msg_size, "out of memory");
    return HD_ENOMEM;
  }
  pthread_mutex_lock(&c->change);
  const hd_registration *cur;
  hd_registration next;
  err = lookup_saved(c, key, id, &member, &cur, &next, msg, msg_size);
  if (err == HD_OK)
    err = rotate_place(tmp, &next, id, route ? route : "", &t, msg, msg_size);
  if (err == HD_OK) {
    hd_webhook_spec *w = &t->webhook;
    /* Its current secret goes on being sent beside the new one for the
     * overlap; a rotation already in progress ends here (two signatures at
     * most). A webhook that did not sign has nothing to keep. */
    if (w->secret && w->secret[0]) {
      until = real_ns() / 1000000 +
              (overlap_ms ? overlap_ms : HD_ROTATE_OVERLAP_DEFAULT_MS);
      w->previous_secret = w->secret;
      w->previous_until_ms = until;
    } else {
      w->previous_secret = NULL;
      w->previous_until_ms = 0;
    }
    /* A given secret is checked by the kind as AddHandler's is; none: the
     * kind generates one, as for new_secret. */
    w->new_secret = given == NULL;
    w->secret = given ? given : "";
    err = replace(c, key, id, &next, cur, a, &generated, msg, msg_size);
  }
  if (err == HD_OK) {
    *secret = given ? given : generated;
    *expires_ms = until;
  }
  if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  pthread_mutex_unlock(&c->change);
  hd_handler_unref(member);
  hd_arena_wipe(tmp);
  hd_arena_free(tmp);
  return err;
}
