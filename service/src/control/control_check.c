/*
 * control_check.c - the checks on a registration, before any work is done
 * for it (control_internal.h).
 */
#include "control_internal.h"

#include "utf8.h"

#include <stdio.h>
#include <string.h>

/* ---- checks on a new registration ----------------------------------------
 *
 * In this order, each before any work for the next: the sizes
 * (hd_control_limits: counts only, O(1) per target), then every string
 * (UTF-8), then the shape of the request (check_request). All are
 * HD_EINVAL: a request over a limit is refused as a bad argument, like an
 * over-long topic path (--max-topic-path-bytes), because sending it again
 * can never succeed; RESOURCE_EXHAUSTED is kept for what the server runs
 * out of (--max-keys, --max-handlers-per-key, a full store) and may have
 * again later. Registrations replayed from the store (a forced id) skip the
 * limits and the UTF-8 check: they were acknowledged under the options and
 * the version they were made with, and must still load. What a target of
 * a kind must hold is its row's business (kinds.h). */

static hd_err check_target_limits(const hd_control *c, const hd_target_spec *t,
                                  const char *what, char *msg,
                                  size_t msg_size) {
  const hd_kind *k = hd_control_row(c, t->kind, NULL);
  hd_target_limits l = {.max_headers = c->limits.max_headers};
  if (!k || !k->check_limits)
    return HD_OK;
  return k->check_limits(t, &l, what, msg, msg_size);
}

hd_err hd_control_check_limits(const hd_control *c, const hd_registration *reg,
                               char *msg, size_t msg_size) {
  const hd_control_limits *l = &c->limits;
  if (reg->n_events > (size_t)l->max_events) {
    snprintf(msg, msg_size,
             "%zu event names, the limit is %d (--max-events-per-handler)",
             reg->n_events, l->max_events);
    return HD_EINVAL;
  }
  if (reg->n_routes > (size_t)l->max_routes) {
    snprintf(msg, msg_size,
             "%zu routes, the limit is %d (--max-routes-per-handler)",
             reg->n_routes, l->max_routes);
    return HD_EINVAL;
  }
  hd_err err = check_target_limits(c, &reg->target, "target", msg, msg_size);
  for (size_t i = 0; err == HD_OK && i < reg->n_routes; i++) {
    char what[48];
    snprintf(what, sizeof(what), "routes[%zu].value", i);
    err = check_target_limits(c, &reg->routes[i].target, what, msg, msg_size);
  }
  return err;
}

static hd_err check_target_utf8(const hd_control *c, const hd_target_spec *t,
                                const char *what, char *msg, size_t msg_size) {
  const hd_kind *k = hd_control_row(c, t->kind, NULL);
  if (!k || !k->check_strings)
    return HD_OK;
  return k->check_strings(t, what, msg, msg_size);
}

/* Every string of the registration, named by its path in the request
 * (repeated fields and map entries by their index). */
hd_err hd_control_check_strings(const hd_control *c, const hd_registration *reg,
                                char *msg, size_t msg_size) {
  char what[48];
  hd_err err = hd_kind_check_utf8("", "key", hd_str(reg->key), msg, msg_size);
  if (err == HD_OK)
    err = hd_kind_check_utf8("", "selector", hd_str(reg->selector), msg,
                             msg_size);
  if (err == HD_OK)
    err = check_target_utf8(c, &reg->target, "target", msg, msg_size);
  for (size_t i = 0; err == HD_OK && i < reg->n_events; i++) {
    const char *e = hd_str(reg->events[i]);
    if (hd_utf8_valid(e, strlen(e)))
      continue; /* the name is formatted only for a bad one */
    snprintf(what, sizeof(what), "events[%zu]", i);
    err = hd_kind_check_utf8(what, "", e, msg, msg_size);
  }
  for (size_t i = 0; err == HD_OK && i < reg->n_routes; i++) {
    snprintf(what, sizeof(what), "routes[%zu]", i);
    err = hd_kind_check_utf8(what, ".key", hd_str(reg->routes[i].event), msg,
                             msg_size);
    if (err == HD_OK) {
      snprintf(what, sizeof(what), "routes[%zu].value", i);
      err = check_target_utf8(c, &reg->routes[i].target, what, msg, msg_size);
    }
  }
  return err;
}

hd_err hd_control_check_request(const hd_registration *reg, char *msg,
                                size_t msg_size) {
  size_t klen = strlen(hd_str(reg->key));
  if (klen == 0) {
    snprintf(msg, msg_size, "key is empty");
    return HD_EINVAL;
  }
  if (klen > HD_KEY_MAX) {
    snprintf(msg, msg_size, "key is %zu bytes, the limit is %d", klen,
             HD_KEY_MAX);
    return HD_EINVAL;
  }
  if (!hd_registration_has_target(reg) == !reg->n_routes) {
    snprintf(msg, msg_size,
             hd_registration_has_target(reg)
                 ? "give either target or routes, not both"
                 : "give a target or routes");
    return HD_EINVAL;
  }
  if (reg->n_routes && reg->n_events) {
    snprintf(msg, msg_size,
             "events filters a simple handler; routes already "
             "name their events");
    return HD_EINVAL;
  }
  for (size_t i = 0; i < reg->n_routes; i++) {
    size_t n = strlen(hd_str(reg->routes[i].event));
    if (n == 0 || n > HD_EVENT_NAME_MAX) {
      snprintf(msg, msg_size, "route event name must be 1 to %d bytes",
               HD_EVENT_NAME_MAX);
      return HD_EINVAL;
    }
  }
  for (size_t i = 0; i < reg->n_events; i++) {
    size_t n = strlen(hd_str(reg->events[i]));
    if (n == 0 || n > HD_EVENT_NAME_MAX) {
      snprintf(msg, msg_size, "events[%zu] must be 1 to %d bytes", i,
               HD_EVENT_NAME_MAX);
      return HD_EINVAL;
    }
  }
  return HD_OK;
}

/* A key or handler id that names nothing and is not UTF-8 is a bad
 * argument, not a missing handler. Checked once nothing matched, so a
 * handler saved before handlerd refused such keys can still be removed. */
hd_err hd_control_check_lookup_utf8(const char *key, const char *id, char *msg,
                                    size_t msg_size) {
  hd_err err = hd_kind_check_utf8("", "key", key, msg, msg_size);
  if (err == HD_OK && id)
    err = hd_kind_check_utf8("", "handler_id", id, msg, msg_size);
  return err;
}
