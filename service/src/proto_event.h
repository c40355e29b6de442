/*
 * Conversions between the wire messages (protobuf-c, handlers.v1) and the
 * core library's hd_event / hd_results. Everything allocated lives in the
 * caller's arena.
 */
#ifndef HD_PROTO_EVENT_H
#define HD_PROTO_EVENT_H

#include "arena.h"
#include "handlerd/handlerd.h"
#include "handlers/v1/handlers.pb-c.h"

/* Unpacks a DispatchRequest from `len` bytes into the arena. HD_EINVAL with
 * a message when the bytes are not a valid message. */
hd_err hd_proto_decode_dispatch(hd_arena *a, const void *data, size_t len,
                                Handlers__V1__DispatchRequest **out, char *msg,
                                size_t msg_size);

/* Fills `ev` from `req`; `ev` borrows from `req` and the arena. Validates
 * with hd_event_validate: HD_EINVAL with a message naming the problem. */
hd_err hd_proto_to_event(hd_arena *a, const Handlers__V1__DispatchRequest *req,
                         hd_event *ev, char *msg, size_t msg_size);

/* Converts a TopicValue (NULL: none) into `out` (borrowing its bytes).
 * HD_EINVAL when the value is present with no case set. */
hd_err hd_proto_to_value(const Handlers__V1__TopicValue *tv, hd_value *out);

/* Builds the repeated HandlerResult field for `rs` in the arena. */
hd_err hd_proto_from_results(hd_arena *a, const hd_results *rs,
                             Handlers__V1__HandlerResult ***out, size_t *n);

/* The gRPC status code for an hd_err returned by dispatch or control. */
int hd_proto_status_of(hd_err err);

#endif
