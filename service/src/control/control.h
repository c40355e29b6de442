/*
 * The control plane behind AddHandler, RemoveHandler, ListHandlers,
 * UpdateHandler and RotateSecret, in plain C: turns a registration
 * (model/registration.h) into a handler in the registry, keeps it in the store,
 * and describes what is registered. Kinds come from the kind table
 * (kinds/kinds.h); wire types stay at the gRPC edge (grpc/registration_pb.h
 * converts).
 */
#ifndef HD_CONTROL_H
#define HD_CONTROL_H

#include "arena.h"
#include "handlerd/handlerd.h"
#include "kinds.h"
#include "registration.h"
#include "store.h"

typedef struct hd_control hd_control;

/* Limits on one registration, checked before any work is done for it. */
typedef struct hd_control_limits {
  int max_events;  /* names in hd_registration.events */
  int max_routes;  /* entries in hd_registration.routes */
  int max_headers; /* headers of one webhook target */
} hd_control_limits;

/* Fills `l` with the defaults (256 events, 256 routes, 64 headers). */
void hd_control_limits_init(hd_control_limits *l);

/* Replaces the registration limits (copied). Set before serving. */
void hd_control_set_limits(hd_control *c, const hd_control_limits *l);

/* Borrows `reg` and `fns`, which must outlive the control. `fns` is the
 * context of the "local" kind. */
hd_err hd_control_new(hd_registry *reg, hd_functions *fns, hd_control **out);
void hd_control_free(hd_control *c);

/* Gives the kind `kind`'s builder its context (borrowed; must outlive the
 * handlers built with it): the webhook engine for HD_TARGET_WEBHOOK. A kind
 * whose row needs a context and has none is HD_EUNSUPPORTED ("<what>:
 * webhook targets are not supported"). Set before serving. */
void hd_control_set_kind_context(hd_control *c, hd_target_kind kind, void *ctx);

/* Replaces the row of `k->kind` for this control only (borrowed, like
 * `ctx`): a test's stand-in for a kind. HD_EINVAL when `k->kind` has no row
 * in the table. */
hd_err hd_control_set_kind(hd_control *c, const hd_kind *k, void *ctx);

/* Makes every change durable in `store` (borrowed; NULL: memory only)
 * before it is acknowledged. Set before serving. */
void hd_control_set_store(hd_control *c, hd_store *store);

/* Replays the store's registrations into the registry, keeping their ids
 * and order; `loaded` says how many. A registration that cannot be
 * restored (its saved form does not read back, or no longer builds: its
 * plugin function is gone, its webhook URL is no longer allowed, ...) stops
 * the load with that error and a message naming its id, key and the
 * reason: serving without it would silently drop an acknowledged
 * registration. It stays in the store. The exception is a registry limit
 * (HD_EBUSY, only when limits are set before loading): logged, skipped,
 * kept in the store. A store failure fills `msg` with "cannot load
 * registrations: <file>: <cause>". After a failure the registry may hold
 * the registrations restored before it: the caller is expected to stop. */
hd_err hd_control_load(hd_control *c, size_t *loaded, char *msg,
                       size_t msg_size);

/* How many handlers are registered (a gauge for /metrics). */
size_t hd_control_count(hd_control *c);

/* What AddHandler answers. */
typedef struct hd_control_added {
  char handler_id[HD_HANDLER_ID_MAX + 1];
  /* The secret handlerd generated (a webhook's new_secret), shown once: in
   * the arena given to hd_control_add (the caller wipes it with the arena);
   * "" when none was generated. */
  const char *secret;
} hd_control_added;

/* A shared store (store.h: changes, several replicas on one database):
 * brings this replica's registry to what the store holds now, writing
 * nothing back. A registration added elsewhere is built and registered
 * under its id, a changed one replaces the handler in place, one removed
 * elsewhere is removed. The first call registers everything (instead of
 * hd_control_load). A registration this replica cannot build (a plugin it
 * lacks) is logged and skipped. *changed (may be NULL) gets how many
 * handlers changed. HD_EIO with `msg` when the store cannot be read (the
 * registry stays as it was). Does nothing for a store of one process. */
hd_err hd_control_sync(hd_control *c, size_t *changed, char *msg,
                       size_t msg_size);

/* AddHandler. Borrows `reg` for the call (copies what it keeps). `id` (may
 * be NULL) forces the handler id, for replaying saved registrations.
 * A selector (registration.h) is compiled here and the handler joins its
 * key's set with it; derive_old_value wraps the handler (registry_select.h).
 * HD_EINVAL (bad key, neither or both of target/routes, unknown function,
 * bad URL, a selector that does not compile: "selector: ..." naming the
 * position) with a message in `msg`. A new registration (no forced id) is
 * first held against the limits (hd_control_set_limits), counting only,
 * then every string must be UTF-8: both HD_EINVAL naming the field or the
 * flag. A forced id skips both, so registrations saved under other limits
 * still load. HD_EEXIST when the id is already registered (under any key).
 * When the store cannot save it: "cannot save the registration: <file>:
 * <cause>" and HD_EBUSY (no room left), HD_ENOMEM or HD_EIO (read-only
 * database, I/O error, ...); nothing changes then. `out` (may be NULL) is
 * filled on HD_OK, its secret in `a`. */
hd_err hd_control_add(hd_control *c, const hd_registration *reg, const char *id,
                      hd_arena *a, hd_control_added *out, char *msg,
                      size_t msg_size);

/* RemoveHandler. HD_ENOKEY / HD_ENOTFOUND with a message; HD_EINVAL when
 * the key or id matches nothing and is not UTF-8. When the store
 * cannot delete it: "cannot delete the registration: <file>: <cause>" and
 * HD_EBUSY, HD_ENOMEM or HD_EIO as for add; the handler stays. */
hd_err hd_control_remove(hd_control *c, const char *key, const char *id,
                         char *msg, size_t msg_size);

/* UpdateHandler: replaces the registration of handler `id` under `key` by
 * `reg` (borrowed; its key is ignored: `key` is the handler's), keeping the
 * id, its place under the key (in dispatch order and in the store's load
 * order) and, for async webhooks, their deliveries. `reg` is built as
 * AddHandler builds one (limits, UTF-8, shape, kinds, selector), under the
 * same id; the store's record is replaced and committed; then the registry
 * swaps the handler (each dispatch sees the old one or the new one). All
 * or nothing: a build or store failure changes nothing, and nothing is
 * visible before the commit. A webhook of `reg` with an empty secret and
 * new_secret 0 keeps the secret and any rotation in progress of the webhook
 * at the same place in the current registration (the target for the
 * target, the route of the same event name for a route); a new secret or
 * new_secret replaces both. A generated secret goes to *secret (in `a`; ""
 * when none; `secret` may be NULL). Errors: HD_ENOKEY / HD_ENOTFOUND (no
 * such key or id; HD_EINVAL when they are not UTF-8), the errors of
 * hd_control_add, and of the store ("cannot save the registration: ...":
 * HD_EBUSY, HD_ENOMEM, HD_EIO). */
hd_err hd_control_update(hd_control *c, const char *key, const char *id,
                         const hd_registration *reg, hd_arena *a,
                         const char **secret, char *msg, size_t msg_size);

/* RemoveHandler with a route: removes the route `route` (an event name) of
 * event-stream handler `id` (every route of that name), persisted and
 * applied as an update that leaves it out (same id, same place). Removing
 * the last route removes the handler (hd_control_remove); `route` NULL or ""
 * is hd_control_remove. HD_ENOTFOUND "handler <id> has no route '<route>'"
 * when there is no such route (a simple handler has none); otherwise the
 * errors of hd_control_update. */
hd_err hd_control_remove_route(hd_control *c, const char *key, const char *id,
                               const char *route, char *msg, size_t msg_size);

/* The longest overlap RotateSecret allows, and its default. */
#define HD_ROTATE_OVERLAP_MAX_MS (30LL * 24 * 3600 * 1000)
#define HD_ROTATE_OVERLAP_DEFAULT_MS (24LL * 3600 * 1000)

/* RotateSecret: the webhook of handler `id` at `route` ("" or NULL: the
 * target of a simple handler) signs with `new_secret` ("whsec_...", checked
 * by the kind; NULL or "": the kind generates one) from now on, and with its
 * current secret too (a second signature) until now + `overlap_ms` (0: the
 * default, 24 h). Persisted and applied as an update (same id, same place;
 * the rest of the registration as it is). *secret gets the new secret (in
 * `a`), *expires_ms when the old secret stops being sent (Unix ms; 0 when
 * the webhook had no secret, so nothing is sent twice). A rotation during
 * another replaces it: the current secret becomes the previous one, the one
 * before is no longer sent. Errors: HD_EINVAL (overlap_ms negative or over
 * 30 days, a bad secret, no route named for an event-stream handler);
 * HD_ENOKEY / HD_ENOTFOUND (no such key, id or route: "handler <id> has no
 * route '<route>'"); HD_EUNSUPPORTED "... is not a webhook" (the target is
 * of another kind: FAILED_PRECONDITION at the gRPC edge); the store's, as
 * hd_control_update. */
hd_err hd_control_rotate_secret(hd_control *c, const char *key, const char *id,
                                const char *route, int64_t overlap_ms,
                                const char *new_secret, hd_arena *a,
                                const char **secret, int64_t *expires_ms,
                                char *msg, size_t msg_size);

/* The shape of a registration, as ListHandlers' HandlerKind says it. */
typedef enum hd_handler_shape {
  HD_SHAPE_SIMPLE = 1,       /* one target (maybe filtered by events) */
  HD_SHAPE_EVENT_STREAM = 2, /* routes */
} hd_handler_shape;

/* One route as listed: event name -> target description. */
typedef struct hd_route_info {
  const char *event;
  const char *target; /* "<kind name>:<detail>", e.g. "local:echo" */
} hd_route_info;

/* One registered handler, as ListHandlers shows it. */
typedef struct hd_handler_info {
  const char *key;
  const char *handler_id;
  hd_handler_shape kind;
  const char *target;    /* "<kind name>:<detail>"; "" for an event stream */
  hd_route_info *routes; /* in request order */
  size_t n_routes;
  const char **events; /* the simple handler's filter, in request order */
  size_t n_events;
  int secret_set;       /* a webhook target signs (secret given or generated) */
  int async;            /* the target, or a route's, is delivered out of band */
  const char *selector; /* the topic selector; "" when none */
  int derive_old_value;
  /* "replica" when the handler keeps state between events (count,
   * last_value, derive_old_value's memory): per process, not shared by
   * replicas; "" when it keeps none. Static. */
  const char *state_scope;
} hd_handler_info;

/* The listing: handlers in key order, then in the order they were added. */
typedef struct hd_handler_list {
  hd_handler_info *handlers;
  size_t n_handlers;
} hd_handler_list;

/* ListHandlers for `key` ("" or NULL: every key): fills `out`, every string
 * and array in the arena. HD_ENOKEY when `key` is non-empty and unknown
 * (HD_EINVAL when it is also not UTF-8). Bytes that are not UTF-8 (in a
 * registration saved before that was checked) are listed as U+FFFD, so
 * every listing decodes. */
hd_err hd_control_list(hd_control *c, hd_arena *a, const char *key,
                       hd_handler_list *out, char *msg, size_t msg_size);

#endif
