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

/* Checks every `string` field, at any depth, of the message of type `desc`
 * encoded in `len` bytes at `data`: each must be UTF-8 (RFC 3629) without a
 * NUL byte. protobuf-c checks neither, and hands strings over as C strings,
 * so a NUL would silently cut the string there: such a string is refused,
 * never cut. HD_EINVAL with a message naming the field by its path in the
 * message, repeated fields and map entries by their index in the request:
 * "events[3] is not valid UTF-8 (at byte 2)", "error.description contains a
 * NUL byte (at byte 1): ...", "target.webhook.headers[0].value ...". Call it
 * on bytes that protobuf-c unpacked (a malformed message is also HD_EINVAL,
 * "request is not a valid <type>"). One pass over the bytes, no allocation. */
hd_err hd_proto_check_strings(const ProtobufCMessageDescriptor *desc,
                              const void *data, size_t len, char *msg,
                              size_t msg_size);

/* hd_proto_check_strings as the gRPC front calls it on every request it
 * unpacks (AddHandler, RemoveHandler, ListHandlers, ...): the same, except
 * that in a RemoveHandlerRequest or ListHandlersRequest only NUL bytes are
 * refused here; their UTF-8 is the control plane's to check
 * (hd_control_remove / hd_control_list), which answers INVALID_ARGUMENT
 * only once the key names nothing, so a handler saved before handlerd
 * checked UTF-8 can still be removed by its exact key. */
hd_err hd_proto_check_request(const ProtobufCMessageDescriptor *desc,
                              const void *data, size_t len, char *msg,
                              size_t msg_size);

/* Unpacks a DispatchRequest from `len` bytes into the arena. HD_EINVAL with
 * a message when the bytes are not a valid message, or when a string field
 * is not UTF-8 or holds a NUL byte (hd_proto_check_strings). */
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
