/*
 * control_internal.h - what the control plane's files share (control.c:
 * life, building, the store, add/load/remove; control_check.c: the checks
 * on a registration; registered.c: the handler that carries a
 * registration's listing, and ListHandlers). Not for other layers.
 */
#ifndef HD_CONTROL_INTERNAL_H
#define HD_CONTROL_INTERNAL_H

#include "control.h"

#include <pthread.h>

struct hd_control {
  hd_registry *reg;
  hd_store *store;
  hd_control_limits limits;
  /* The kind table's rows (replaceable per control: tests) and the context
   * each row's builder gets; indexed like hd_kinds_all(). */
  const hd_kind **kinds;
  void **ctx;
  size_t n_kinds;
  /* The ids in use, sorted. Not a second index of registrations (the
   * registry is that, and the records hang off its handlers): ids must be
   * unique across keys because the store's records are keyed by id alone,
   * and the registry, keyed by key, cannot say whether an id is taken
   * under another key without walking every key. Also the count. */
  pthread_mutex_t lock;
  char (*ids)[HD_HANDLER_ID_MAX + 1];
  size_t n_ids, cap_ids;
};

/* How a registered handler was made: what ListHandlers shows. Immutable
 * once registered, so listing reads it without a lock. */
typedef struct record {
  char *key;
  hd_handler_shape shape;
  char *target; /* "<kind name>:<detail>"; NULL for an event stream */
  size_t n_routes;
  char **route_events, **route_targets;
  size_t n_events;
  char **events;
  int secret_set;
  int async; /* a target is delivered out of band (its row's is_async) */
} record;

/* A string of the registration; NULL reads as "" (registration.h). */
static inline const char *hd_str(const char *s) {
  return s ? s : "";
}

/* A simple registration (one target) rather than routes. */
static inline int hd_registration_has_target(const hd_registration *reg) {
  return reg->target.kind != HD_TARGET_NONE;
}

/* The row (this control's) and its context for target kind `kind` (`ctx`
 * may be NULL), or NULL when no row has it. */
const hd_kind *hd_control_row(const hd_control *c, hd_target_kind kind,
                              void **ctx);

/* ---- control_check.c: HD_EINVAL with a message naming the field. ---- */

/* The sizes against c->limits (counts only). */
hd_err hd_control_check_limits(const hd_control *c, const hd_registration *reg,
                               char *msg, size_t msg_size);
/* Every string is UTF-8. */
hd_err hd_control_check_strings(const hd_control *c, const hd_registration *reg,
                                char *msg, size_t msg_size);
/* The shape: key, target or routes, event names. */
hd_err hd_control_check_request(const hd_registration *reg, char *msg,
                                size_t msg_size);
/* A key (and id, may be NULL) that named nothing is a bad argument when it
 * is not UTF-8. */
hd_err hd_control_check_lookup_utf8(const char *key, const char *id, char *msg,
                                    size_t msg_size);

/* ---- registered.c ---- */

/* Fills `rec` (zeroed) from `reg`: what ListHandlers will show. HD_ENOMEM
 * (then hd_record_clear it). */
hd_err hd_record_fill(const hd_control *c, record *rec,
                      const hd_registration *reg);
void hd_record_clear(record *r);
/* The registered handler around `inner` (taking a new reference on it),
 * with `inner`'s id and kind, taking `rec` (zeroed on success). */
hd_err hd_registered_new(hd_handler *inner, record *rec, hd_handler **out);
/* The record of a registry member, or NULL when the control plane did not
 * register it. */
const record *hd_registered_record(hd_handler *member);

#endif
