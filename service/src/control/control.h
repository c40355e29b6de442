/*
 * The control plane behind AddHandler, RemoveHandler and ListHandlers: turns
 * a registration request into a handler in the registry and remembers how
 * it was made, so ListHandlers can describe it (and a store can replay it).
 */
#ifndef HD_CONTROL_H
#define HD_CONTROL_H

#include "arena.h"
#include "handlerd/handlerd.h"
#include "store.h"
#include "handlers/v1/handlers.pb-c.h"

typedef struct hd_control hd_control;

/* Makes the handler for a webhook target. Installed by the webhook module;
 * without it, webhook targets are HD_EUNSUPPORTED. On HD_EINVAL writes a
 * message. `secret_out` receives a generated secret (malloc'd) when the
 * webhook asks for one. */
typedef hd_err hd_webhook_factory_fn(void *ud, const char *key,
                                     const Handlers__V1__Webhook *wh,
                                     hd_handler **out, char **secret_out,
                                     char *msg, size_t msg_size);

/* Limits on one registration, checked before any work is done for it. */
typedef struct hd_control_limits {
  int max_events;  /* names in AddHandlerRequest.events */
  int max_routes;  /* entries in AddHandlerRequest.routes */
  int max_headers; /* headers of one webhook target */
} hd_control_limits;

/* Fills `l` with the defaults (256 events, 256 routes, 64 headers). */
void hd_control_limits_init(hd_control_limits *l);

/* Replaces the registration limits (copied). Set before serving. */
void hd_control_set_limits(hd_control *c, const hd_control_limits *l);

/* Borrows `reg` and `fns`, which must outlive the control. */
hd_err hd_control_new(hd_registry *reg, hd_functions *fns, hd_control **out);
void hd_control_free(hd_control *c);
void hd_control_set_webhook_factory(hd_control *c, hd_webhook_factory_fn *fn,
                                    void *ud);

/* Makes every change durable in `store` (borrowed; NULL: memory only)
 * before it is acknowledged. Set before serving. */
void hd_control_set_store(hd_control *c, hd_store *store);

/* Replays the store's registrations into the registry, keeping their ids
 * and order; `loaded` says how many. A registration that cannot be
 * restored (its saved request does not parse, or no longer builds: its
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

/* AddHandler. Fills `reply` (strings in the arena). `id` (may be NULL) forces
 * the handler id, for replaying saved registrations. HD_EINVAL (bad key,
 * neither or both of target/routes, unknown function, bad URL) with a message
 * in `msg`. A new registration (no forced id) is first held against the
 * limits (hd_control_set_limits), counting only, then every string must be
 * UTF-8: both HD_EINVAL naming the field or the flag. A forced id skips both,
 * so registrations saved under other limits still load. When the store cannot
 * save it: "cannot save the registration: <file>: <cause>" and HD_EBUSY (no
 * room left), HD_ENOMEM or HD_EIO (read-only database, I/O error, ...); nothing
 * changes then. */
hd_err hd_control_add(hd_control *c, hd_arena *a,
                      const Handlers__V1__AddHandlerRequest *req,
                      const char *id, Handlers__V1__AddHandlerReply *reply,
                      char *msg, size_t msg_size);

/* RemoveHandler. HD_ENOKEY / HD_ENOTFOUND with a message; HD_EINVAL when
 * the key or id matches nothing and is not UTF-8. When the store
 * cannot delete it: "cannot delete the registration: <file>: <cause>" and
 * HD_EBUSY, HD_ENOMEM or HD_EIO as for add; the handler stays. */
hd_err hd_control_remove(hd_control *c, const char *key, const char *id,
                         char *msg, size_t msg_size);

/* ListHandlers: fills `reply` in the arena. HD_ENOKEY when `key` is non-empty
 * and unknown (HD_EINVAL when it is also not UTF-8). Bytes that are not
 * UTF-8 (in a registration saved before that was checked) are listed as
 * U+FFFD, so every listing decodes. */
hd_err hd_control_list(hd_control *c, hd_arena *a, const char *key,
                       Handlers__V1__ListHandlersReply *reply, char *msg,
                       size_t msg_size);

#endif
