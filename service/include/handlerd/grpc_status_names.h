/*
 * grpc_status_names.h - the canonical names of gRPC status codes 0..16
 * ("OK", "NOT_FOUND", ...), shared by the service (metrics labels) and the
 * client library (handlerctl output).
 *
 * Header-only on purpose: the client library must not link the service
 * core, and one table here keeps the two from drifting apart.
 */
#ifndef HANDLERD_GRPC_STATUS_NAMES_H
#define HANDLERD_GRPC_STATUS_NAMES_H

/* How many status codes there are: 0 (OK) .. 16 (UNAUTHENTICATED). */
#define HD_GRPC_STATUS_COUNT 17

/* The canonical name of gRPC status `code`, or "UNRECOGNIZED" for a number
 * outside 0..HD_GRPC_STATUS_COUNT-1. Static; never NULL. */
static inline const char *hd_grpc_status_name(int code) {
  static const char *const names[HD_GRPC_STATUS_COUNT] = {
      "OK",
      "CANCELLED",
      "UNKNOWN",
      "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED",
      "NOT_FOUND",
      "ALREADY_EXISTS",
      "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION",
      "ABORTED",
      "OUT_OF_RANGE",
      "UNIMPLEMENTED",
      "INTERNAL",
      "UNAVAILABLE",
      "DATA_LOSS",
      "UNAUTHENTICATED",
  };

  if (code < 0 || code >= HD_GRPC_STATUS_COUNT)
    return "UNRECOGNIZED";
  return names[code];
}

#endif
