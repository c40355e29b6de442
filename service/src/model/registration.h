/*
 * registration.h - what a registration says, in plain C: the one spec that
 * the control plane builds handlers from, the store keeps and ListHandlers
 * describes. The gRPC edge converts AddHandlerRequest to it and back
 * (grpc/registration_pb.c); nothing below the gRPC front sees a protobuf
 * type, and the storage format follows this spec, not the API.
 *
 * Ownership: a registration and everything it points to belong to whoever
 * filled it (an arena at the gRPC edge, the store's decoder, ...); the
 * functions that take one borrow it for the call and copy what they keep.
 */
#ifndef HD_REGISTRATION_H
#define HD_REGISTRATION_H

#include "handlerd/error.h"

#include <stddef.h>
#include <stdint.h>

/* One custom header of a webhook. */
typedef struct hd_header_spec {
  const char *name;
  const char *value;
} hd_header_spec;

/* The settings of a webhook target. 0 means the default for the numbers. */
typedef struct hd_webhook_spec {
  const char *url;
  const char *secret; /* "whsec_..."; NULL or "": none */
  /* A rotation in progress (RotateSecret): the old secret is still sent
   * (a second signature) until previous_until_ms (Unix ms). */
  const char *previous_secret; /* NULL or "": none */
  int64_t previous_until_ms;
  int new_secret; /* generate one (returned once by AddHandler) */
  hd_header_spec *headers;
  size_t n_headers;
  uint32_t timeout_ms;   /* per attempt */
  uint32_t max_attempts; /* attempts in all */
  int binary_mode;       /* CloudEvents binary mode instead of structured */
  /* Durable out-of-band delivery (outbox/outbox.h); the rest is async only. */
  int async;
  int ordered; /* one at a time per ordering key (the topic path) */
  const uint32_t *retry_schedule_ms; /* delays after each failure; */
  size_t n_retry_schedule;           /* 0: the service's schedule */
  uint32_t max_inflight;             /* deliveries at once; 0: no limit */
  double max_rps;                    /* attempts per second; 0: no limit */
} hd_webhook_spec;

/* What a target is; each has one row in the kind table (kinds/kinds.h). */
typedef enum hd_target_kind {
  HD_TARGET_NONE = 0, /* not set */
  HD_TARGET_LOCAL,    /* an in-process function, by name */
  HD_TARGET_WEBHOOK,  /* an HTTP endpoint */
} hd_target_kind;

typedef struct hd_target_spec {
  hd_target_kind kind;
  const char *local;       /* HD_TARGET_LOCAL: the function's name */
  hd_webhook_spec webhook; /* HD_TARGET_WEBHOOK */
} hd_target_spec;

/* An event-stream route: events named `event` go to `target`. */
typedef struct hd_route_spec {
  const char *event;
  hd_target_spec target;
} hd_route_spec;

/* A registration: a key and either one target (a simple handler, for every
 * event or only `events`) or routes (an event-stream handler). */
typedef struct hd_registration {
  const char *key;
  hd_target_spec target; /* kind HD_TARGET_NONE when routes are used */
  hd_route_spec *routes;
  size_t n_routes;
  const char **events;
  size_t n_events;
  const char *selector; /* a Diffusion topic selector; NULL or "": none */
  int derive_old_value; /* fill an update's absent old_value */
} hd_registration;

#endif
