/*
 * control_internal.h - what the control plane's files share (control.c:
 * life, the ids, the store, add/load; control_build.c: a registration into
 * a registered handler; control_update.c: remove, update, remove a route,
 * rotate a secret; control_spec.c: the registration each handler keeps,
 * and the secrets an update keeps; control_check.c: the checks on a
 * registration; registered.c: the handler that carries a registration's
 * listing, and ListHandlers). Not for other layers.
 */
#ifndef HD_CONTROL_INTERNAL_H
#define HD_CONTROL_INTERNAL_H

#include "control.h"
#include "selector.h"
#include "strmap.h"

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
  /* Held by every change (add, remove, update, remove a route, rotate),
   * from reading what is registered to the registry's change: an update
   * builds on the registration it read, which no other change may replace
   * or remove meanwhile. The gRPC front already runs them on one thread;
   * this makes it so for any caller. Never held by listing or dispatch. */
  pthread_mutex_t change;
  /* A shared store (control_sync.c), all under `change`: each
   * registration's version as this replica last wrote or applied it (id ->
   * synced_reg), the highest version seen, the current sync's generation,
   * and `applying`: a sync is registering what the store already holds,
   * so nothing is written back. */
  hd_strmap *versions;
  int64_t synced;
  unsigned sync_gen;
  int applying;
};

/* One registration of a shared store as this replica has it. */
typedef struct synced_reg {
  int64_t version;
  unsigned seen; /* the sync generation that last saw it */
  char *key;
  char id[HD_HANDLER_ID_MAX + 1];
} synced_reg;

/* How a registered handler was made: what ListHandlers shows, and the
 * registration itself (what the store has). Immutable once registered, so
 * listing reads it without a lock; a change registers a new record. */
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
  /* The registration as saved (a generated secret in place of new_secret,
   * an ended rotation left out), every byte in spec_arena: an update keeps
   * the secrets it does not change from here, a route's removal and a
   * rotation start from it. It holds secrets: the arena is wiped when the
   * record is cleared. */
  hd_arena *spec_arena;
  hd_registration spec;
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

/* Fills `rec` (zeroed) from `reg`: what ListHandlers will show, and the
 * kept registration (hd_ctl_spec_keep) with `secret` (the generated one, or
 * NULL). HD_ENOMEM (then hd_record_clear it). */
hd_err hd_record_fill(const hd_control *c, record *rec,
                      const hd_registration *reg, const char *secret);
/* Frees what `r` holds, wiping the kept registration. */
void hd_record_clear(record *r);
/* The registered handler around `inner` (taking a new reference on it),
 * with `inner`'s id and the kind of `built` (the handler the kind built:
 * `inner` may be a wrapper of it, derive_old_value's, whose kind must not
 * replace the kind's in results and metrics), taking `rec` (zeroed on
 * success). */
hd_err hd_registered_new(hd_handler *inner, const hd_handler *built,
                         record *rec, hd_handler **out);
/* The record of a registry member, or NULL when the control plane did not
 * register it. */
const record *hd_registered_record(hd_handler *member);

/* ---- control_spec.c ---- */

/* A deep copy of `reg` in `a` as a handler keeps it (record.spec): every
 * string and array copied, `secret` (the generated one; NULL: none) in place
 * of the new_secret that asked for it (the kind's keep_secret), and a
 * previous secret whose window ended before `now_ms` left out. HD_ENOMEM. */
hd_err hd_ctl_spec_keep(const hd_control *c, hd_arena *a,
                        const hd_registration *reg, const char *secret,
                        int64_t now_ms, hd_registration *out);

/* UpdateHandler's rule for secrets: in `reg`, a webhook with no secret and
 * no new_secret takes the secret and the rotation in progress of the
 * webhook at the same place in `cur` (the target for the target, the route
 * of the same event name for a route), so an update that does not mention
 * the secret keeps it. `reg`'s routes are copied into `a` first (the
 * caller's stay as they were); strings are borrowed from `cur`. HD_ENOMEM. */
hd_err hd_ctl_keep_secrets(hd_arena *a, hd_registration *reg,
                           const hd_registration *cur);

/* ---- control_build.c ---- */

/* What a registration is built into: the handler to register (the
 * registered wrapper, its record inside) and its selector. */
typedef struct hd_built {
  hd_handler *h;    /* a reference */
  hd_selector *sel; /* a reference; NULL: none */
  char *secret;     /* a generated secret (malloc'd), or NULL */
} hd_built;

/* Builds `reg` under `id` (NULL: a fresh one): the selector compiled, the
 * kind table's handlers (routes, event filter), the derive_old_value
 * wrapper, the record. Nothing is registered or saved. HD_EINVAL /
 * HD_EUNSUPPORTED from the selector or a kind with their messages
 * ("selector: ...", "webhook.url: ..."), HD_ENOMEM ("out of memory"). */
hd_err hd_ctl_build(hd_control *c, const hd_registration *reg, const char *id,
                    hd_built *out, char *msg, size_t msg_size);
/* Drops what `b` holds; a generated secret is wiped. */
void hd_built_clear(hd_built *b);

/* ---- control.c: the store and the ids, for control_update.c ---- */

/* Saves `reg` (a kept registration: record.spec) under `id`, replacing a
 * record with that id in its place. "cannot save the registration: ..."
 * and the store's code (HD_EBUSY, HD_ENOMEM, else HD_EIO). */
hd_err hd_ctl_persist(hd_control *c, const hd_registration *reg, const char *id,
                      char *msg, size_t msg_size);
/* What a store failure answers: HD_EBUSY and HD_ENOMEM as they are,
 * anything else HD_EIO. */
hd_err hd_ctl_store_code(hd_err err);
void hd_ctl_drop_id(hd_control *c, const char *id);

/* ---- control_update.c ---- */

/* RemoveHandler with c->change held. */
hd_err hd_ctl_remove_locked(hd_control *c, const char *key, const char *id,
                            char *msg, size_t msg_size);
/* Replaces handler `id` under `key` by `reg` as saved (a kept registration:
 * its secrets are in place), with c->change held: a sync's update. */
hd_err hd_ctl_replace_locked(hd_control *c, const char *key, const char *id,
                             const hd_registration *reg, char *msg,
                             size_t msg_size);

/* ---- control.c, for control_sync.c ---- */

/* AddHandler's work with c->change held; `id` forced, nothing saved. */
hd_err hd_ctl_add_saved(hd_control *c, const hd_registration *reg,
                        const char *id, char *msg, size_t msg_size);

/* ---- control_sync.c ---- */

/* Notes that this replica wrote version `version` of `id` under `key` (a
 * put to a shared store), or forgot it (key NULL). ENOMEM is only logged:
 * the next sync rebuilds that handler once more. */
void hd_ctl_synced_note(hd_control *c, const char *id, const char *key,
                        int64_t version);
void hd_ctl_synced_free(hd_control *c);

#endif
