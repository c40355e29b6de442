/*
 * Internal interfaces of the handlerctl client library (not installed).
 *   client.c  - connections, unary calls, status helpers, stats, health;
 *   handlers.c - handler administration (add, update, remove, rotate the
 *                secret, list);
 *   convert.c - hc_event -> protobuf bytes, protobuf results -> hc_results,
 *               repeated strings -> plain C;
 *   stream.c  - the DispatchStream session;
 *   target.c  - the address (one, a gRPC URI or a list of replicas) as a
 *               gRPC target and service config (target.h);
 *   deliveries.c - async deliveries (handlerctl/deliveries.h).
 */
#ifndef HANDLERCTL_INTERNAL_H
#define HANDLERCTL_INTERNAL_H

#include <grpc/grpc.h>
#include <grpc/byte_buffer.h>

#include "handlerctl/client.h"
#include "handlers/v1/handlers.pb-c.h"

#define HC_DEFAULT_DEADLINE_MS 10000
#define HC_METHOD_DISPATCH "/handlers.v1.Handlers/Dispatch"
#define HC_METHOD_DISPATCH_STREAM "/handlers.v1.Handlers/DispatchStream"
#define HC_METHOD_ADD "/handlers.v1.Handlers/AddHandler"
#define HC_METHOD_REMOVE "/handlers.v1.Handlers/RemoveHandler"
#define HC_METHOD_LIST "/handlers.v1.Handlers/ListHandlers"
#define HC_METHOD_UPDATE "/handlers.v1.Handlers/UpdateHandler"
#define HC_METHOD_ROTATE_SECRET "/handlers.v1.Handlers/RotateSecret"
#define HC_METHOD_STATS "/handlers.v1.Handlers/GetStats"
#define HC_METHOD_HEALTH "/grpc.health.v1.Health/Check"
#define HC_METHOD_LIST_DELIVERIES "/handlers.v1.Handlers/ListDeliveries"
#define HC_METHOD_GET_DELIVERY "/handlers.v1.Handlers/GetDelivery"
#define HC_METHOD_REDELIVER "/handlers.v1.Handlers/Redeliver"
#define HC_METHOD_REPLAY "/handlers.v1.Handlers/Replay"
#define HC_METHOD_ENABLE_WEBHOOK "/handlers.v1.Handlers/EnableWebhook"

struct hc_conn {
  grpc_channel *channel;
  int default_deadline_ms;
  int has_auth;
  grpc_metadata auth; /* authorization: Bearer <token>, when has_auth */
};

/* The absolute deadline for `ms` (see client.h: 0 default, < 0 none). */
gpr_timespec hc__deadline(const hc_conn *c, int ms);

/* Fills `st` (may be NULL) with `code` and a formatted message. */
void hc__status_set(hc_status *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A local failure before any gRPC status: fills `st` (grpc_code -1, the
 * text of `err`) and returns `err`. */
hc_err hc__local_error(hc_status *st, hc_err err);

/* Packs `msg`, calls `method` (a unary call), unpacks the reply with
 * `desc` into *reply (the caller frees it with protobuf_c_message_free_
 * unpacked). HC_EPROTO when the reply does not parse. */
hc_err hc__call_pb(hc_conn *c, const char *method, const ProtobufCMessage *msg,
                   const ProtobufCMessageDescriptor *desc, int deadline_ms,
                   ProtobufCMessage **reply, hc_status *st);

/* Copies a gRPC status into `st`; returns HC_OK for code 0, else HC_ERPC. */
hc_err hc__status_from_grpc(hc_status *st, grpc_status_code code,
                            grpc_slice details);

/* A byte buffer holding a copy of `len` bytes of `data`; NULL on ENOMEM. */
grpc_byte_buffer *hc__bb_from_bytes(const void *data, size_t len);

/* Flattens `bb` into malloc'd *out and *len (*out is NULL for an empty
 * message). HC_ENOMEM or HC_EPROTO (unreadable, e.g. bad compression). */
hc_err hc__bb_to_bytes(grpc_byte_buffer *bb, uint8_t **out, size_t *len);

/* Encodes `ev` as a DispatchRequest into malloc'd *buf and *len. HC_EINVAL for
 * out-of-range enums, HC_ENOMEM. */
hc_err hc__encode_event(const hc_event *ev, uint8_t **buf, size_t *len);

/* Converts `n` protobuf results into `out` (its previous contents are not
 * freed). On error `out` is left empty. */
hc_err hc__results_from_pb(Handlers__V1__HandlerResult *const *pb, size_t n,
                           hc_results *out);

/* Frees what `r` points to, not `r` itself; leaves it empty. */
void hc__results_clear(hc_results *r);

/* strdup that maps NULL to "". */
char *hc__strdup(const char *s);

/* (convert.c) Copies `n` strings (hc__strdup) into *out (calloc'd; left alone
 * when `n` is 0), counting them in *n_out as they are made, so that on
 * HC_ENOMEM the caller frees the *n_out made and *out. */
hc_err hc__strings_copy(char *const *in, size_t n, char ***out, size_t *n_out);

/* Copies `len` bytes into a NUL-terminated malloc'd buffer; NULL on
 * ENOMEM. */
char *hc__copy_bytes(const void *data, size_t len);

#endif
