/*
 * kinds.h - the kind table: one row per hd_target_kind (model/registration.h),
 * what the control plane needs to check, build and describe a target of that
 * kind. The control plane, the metrics labels and main.c go through this
 * table; none of them names a kind.
 *
 * How to add a handler kind (say "grpc", a call to another service):
 *   1. model/registration.h: HD_TARGET_GRPC in hd_target_kind and its spec
 *      (hd_grpc_spec) in hd_target_spec.
 *   2. kinds/grpc_kind.c (+ .h if others need it): the handler (an
 *      hd_handler_ops) and `const hd_kind hd_kind_grpc = {...}`, the row
 *      below, with its checks, its builder and its description.
 *   3. kinds/kinds.c: one line, &hd_kind_grpc in the table.
 *   4. The API: its field in proto/handlers/v1/handlers.proto (Target's
 *      oneof) and its case in grpc/registration_pb.c (both directions).
 *   5. The store's own format: its target in
 *      proto/handlerd/store/v1/registration.proto and its case in
 *      store/store_record.c (encode and decode); without it a registration
 *      of the kind is refused once --state-dir is set.
 *   6. When its builder needs something made at startup (a channel pool),
 *      main.c hands it over with hd_control_set_kind_context(ctl,
 *      HD_TARGET_GRPC, pool).
 * Nothing else: the control plane loops over the table, ListHandlers shows
 * "<name>:<detail>", metrics learn the row's handler_kind label from
 * main.c's loop over the table.
 */
#ifndef HD_KINDS_H
#define HD_KINDS_H

#include "handlerd/handlerd.h"
#include "registration.h"

#include <stddef.h>

/* What a kind's size checks are held against (the control plane's limits on
 * new registrations; registrations replayed from the store skip them). */
typedef struct hd_target_limits {
  int max_headers; /* headers of one webhook target */
} hd_target_limits;

/* Where a target is built: a kind that keeps state outside the handler
 * (the outbox's endpoint of an async webhook) names it by id and route. */
typedef struct hd_kind_site {
  const char *key;   /* the registry key */
  const char *id;    /* the registration's handler id (the same on replay) */
  const char *route; /* the event-stream route's event name; "" for a target */
  const char *what;  /* its place in the request, for messages */
} hd_kind_site;

/* One row of the table. Every function gets the target (of this row's kind)
 * and `what`, the target's place in the request for messages ("target",
 * "routes[2].value", "route 'update'"); messages go to msg/msg_size (the
 * errmsg.h convention). Optional hooks may be NULL. */
typedef struct hd_kind {
  hd_target_kind kind;
  /* Its name: ListHandlers' target reads "<name>:<detail>" ("local:echo",
   * "webhook:https://...") and messages say "<name> targets". */
  const char *name;
  /* The hd_handler_ops.kind of the handlers it builds: their results'
   * hd_result.kind and the metrics label ("simple", "webhook"). */
  const char *handler_kind;
  /* Optional. Counts only, O(1): held before any other check on a new
   * registration. HD_EINVAL with a message naming the flag. */
  hd_err (*check_limits)(const hd_target_spec *t, const hd_target_limits *l,
                         const char *what, char *msg, size_t msg_size);
  /* Optional. Every string of the target is UTF-8 (hd_kind_check_utf8):
   * clients in other languages cannot read back a listing that is not. */
  hd_err (*check_strings)(const hd_target_spec *t, const char *what, char *msg,
                          size_t msg_size);
  /* Optional. 1 when the target asks handlerd to generate its secret (only
   * one target of a request may: AddHandlerReply has one secret). */
  int (*wants_new_secret)(const hd_target_spec *t);
  /* Optional. 1 when the target signs with a secret (ListHandlers'
   * secret_set). */
  int (*secret_set)(const hd_target_spec *t);
  /* Optional, with wants_new_secret: rewrites `t` (a shallow copy the
   * caller owns) to use `secret` instead of asking for one, so the saved
   * registration replays with the same secret. `secret` outlives `t`. */
  void (*keep_secret)(hd_target_spec *t, const char *secret);
  /* Optional. 1 when the target is delivered out of band (ListHandlers'
   * async). */
  int (*is_async)(const hd_target_spec *t);
  /* What ListHandlers shows after "<name>:" (borrowed from `t`). */
  const char *(*detail)(const hd_target_spec *t);
  /* Makes the handler for `t` at `site` (its key, the registration's id,
   * its route). `ctx` is what hd_control_set_kind_context gave for this kind
   * (NULL: nothing was; needs_context then makes the target
   * HD_EUNSUPPORTED before build runs). A generated secret goes to
   * *secret_out (malloc'd; the caller wipes and frees it). HD_EINVAL with a
   * message naming the field. */
  hd_err (*build)(void *ctx, const hd_kind_site *site, const hd_target_spec *t,
                  hd_handler **out, char **secret_out, char *msg,
                  size_t msg_size);
  int needs_context; /* build cannot run without a context */
} hd_kind;

/* The row for `kind`, or NULL (HD_TARGET_NONE, or a number no row has). */
const hd_kind *hd_kind_of(hd_target_kind kind);

/* The rows, in table order, for loops: `*n` gets their number. */
const hd_kind *const *hd_kinds_all(size_t *n);

/* "neither local nor webhook" / "none of local, webhook, grpc": the names
 * of every row, for the message about a target that sets none of them. */
const char *hd_kinds_names(void);

/* HD_EINVAL "<what><field> is not valid UTF-8 (at byte N)" when `s` is
 * not UTF-8. (A NUL inside a string cannot be seen here: the gRPC edge
 * refuses those on the encoded request, hd_proto_check_strings.) */
hd_err hd_kind_check_utf8(const char *what, const char *field, const char *s,
                          char *msg, size_t msg_size);

/* The rows (each in its kind's file). */
extern const hd_kind hd_kind_local;   /* functions.c: built-ins, plugins */
extern const hd_kind hd_kind_webhook; /* webhook_kind.c */

#endif
