/*
 * registration_pb.h - the adapter at the gRPC edge between the API's
 * messages (handlers.v1, protobuf-c) and the control plane's plain C types:
 * AddHandlerRequest (and UpdateHandlerRequest) <-> hd_registration
 * (model/registration.h), the listing (hd_handler_list, control.h) ->
 * ListHandlersReply. Below the gRPC front
 * nothing sees a protobuf type; a new handler kind adds its Target case
 * here, in both directions.
 *
 * Ownership: everything these functions build lives in the caller's arena
 * `a`, and may point into the message it was built from (strings are
 * borrowed, not copied; a webhook's retry schedule is copied into `a`):
 * keep that message alive as long as the result.
 */
#ifndef HD_REGISTRATION_PB_H
#define HD_REGISTRATION_PB_H

#include "arena.h"
#include "control.h"
#include "handlerd/handlerd.h"
#include "handlers/v1/handlers.pb-c.h"
#include "registration.h"

/* AddHandlerRequest -> hd_registration. A route whose Target is missing or
 * sets no kind becomes HD_TARGET_NONE (the control plane refuses it, naming
 * the route). A top-level Target that is present but sets no kind is
 * HD_EINVAL here ("target: target has neither local nor webhook set"):
 * hd_registration cannot tell it from no target at all, which with routes
 * would be accepted. HD_ENOMEM. */
hd_err hd_registration_from_pb(hd_arena *a,
                               const Handlers__V1__AddHandlerRequest *req,
                               hd_registration *out, char *msg,
                               size_t msg_size);

/* UpdateHandlerRequest -> hd_registration (its key is the request's),
 * as hd_registration_from_pb. */
hd_err hd_registration_from_update_pb(
    hd_arena *a, const Handlers__V1__UpdateHandlerRequest *req,
    hd_registration *out, char *msg, size_t msg_size);

/* hd_registration -> AddHandlerRequest (for tools and tests: round trips).
 * A target of kind HD_TARGET_NONE is no Target at all. HD_ENOMEM. */
hd_err hd_registration_to_pb(hd_arena *a, const hd_registration *reg,
                             Handlers__V1__AddHandlerRequest **out);

/* The listing -> ListHandlersReply (fills `reply`, pointers into `l`).
 * HandlerInfo.async comes from the listing; HandlerInfo.disabled is left
 * empty (grpc/admin.c fills it from the outbox). */
hd_err hd_handler_list_to_pb(hd_arena *a, const hd_handler_list *l,
                             Handlers__V1__ListHandlersReply *reply);

/* HD_EINVAL "the request does not survive re-encoding (a malformed unknown
 * field?): not registered" when `req`, packed again, does not unpack:
 * protobuf-c keeps unknown fields it accepted (even an overlong tag 0) and
 * writes them out in a form its own decoder refuses. A wire-format matter,
 * so it is checked here, on every AddHandler. (Found by fuzz_control.) */
hd_err
hd_registration_pb_check_reencode(const Handlers__V1__AddHandlerRequest *req,
                                  char *msg, size_t msg_size);
/* The same check for any request (UpdateHandler's); the message ends in
 * `outcome` ("not registered", "nothing changed"). */
hd_err hd_pb_check_reencode(const ProtobufCMessage *req, const char *outcome,
                            char *msg, size_t msg_size);

/* AddHandler as the gRPC front calls it: the re-encoding check,
 * hd_registration_from_pb, then hd_control_add (no forced id), and
 * `reply` filled (strings in `a`). Same errors and messages as those. */
hd_err hd_grpc_control_add(hd_control *c, hd_arena *a,
                           const Handlers__V1__AddHandlerRequest *req,
                           Handlers__V1__AddHandlerReply *reply, char *msg,
                           size_t msg_size);

/* UpdateHandler as the gRPC front calls it: the re-encoding check,
 * hd_registration_from_update_pb, then hd_control_update, and `reply`
 * filled (the generated secret in `a`). Same errors and messages. */
hd_err hd_grpc_control_update(hd_control *c, hd_arena *a,
                              const Handlers__V1__UpdateHandlerRequest *req,
                              Handlers__V1__UpdateHandlerReply *reply,
                              char *msg, size_t msg_size);

/* ListHandlers as the gRPC front calls it: hd_control_list, then
 * hd_handler_list_to_pb into `reply`. Same errors and messages. */
hd_err hd_grpc_control_list(hd_control *c, hd_arena *a, const char *key,
                            Handlers__V1__ListHandlersReply *reply, char *msg,
                            size_t msg_size);

#endif
