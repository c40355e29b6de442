/*
 * Inside the gRPC front: the server's state and the method table that each
 * RPC family (dispatch.c, dispatch_stream.c, admin.c, health.c,
 * deliveries.c) fills with its own rows, so server.c accepts calls without
 * naming any handler.
 */
#ifndef HD_RPC_H
#define HD_RPC_H

#include "admin.h"
#include "auth.h"
#include "call.h"
#include "health.h"
#include "metrics.h"
#include "server.h"

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>

/* Who may make a call when handlerd has a token. */
typedef enum rpc_auth {
  RPC_AUTH_NONE,     /* health: load balancers probe without a token */
  RPC_AUTH_CONTROL,  /* always needs the token */
  RPC_AUTH_DISPATCH, /* needs it with --auth-dispatch */
} rpc_auth;

struct rpc_method {
  const char *path; /* "/package.Service/Method" */
  rpc_auth auth;
  /* Data path: many calls are requested ahead on each queue, so a burst
   * never waits for a re-request. */
  int hot;
  /* The request may carry a secret: its bytes and the call's arena are
   * wiped once used. */
  int secret;
  /* Counted under --max-health-watches instead of --max-calls, so
   * long-lived watches never lock out the RPCs. */
  int watch;
  /* Calls that read one request: handles it (c->arena is ready) and must
   * end the call or hold a reference until it does. */
  void (*handle)(call *c, grpc_slice body);
  /* Streams: starts reading; runs with c->lock held. */
  void (*start)(call *c);
  /* Streams: runs when the client's close arrives, which they ask for at
   * once to learn that the client left. */
  rpc_tag_fn *on_close;
};

/* Each family's rows, ending with a row whose path is NULL. */
extern const rpc_method rpc_dispatch_methods[];
extern const rpc_method rpc_stream_methods[];
extern const rpc_method rpc_admin_methods[];
extern const rpc_method rpc_health_methods[];
extern const rpc_method rpc_delivery_methods[];

/* The last metrics slot counts calls of unknown methods. */
#define RPC_MAX_METHODS (HD_METRICS_METHODS - 1)

struct hd_server {
  grpc_server *server;
  const rpc_method *methods[RPC_MAX_METHODS];
  void *registered[RPC_MAX_METHODS]; /* grpc_server_register_method handles */
  size_t n_methods;
  int n_cq;
  grpc_completion_queue **cqs;
  pthread_t *threads;
  hd_registry *reg;
  hd_control *ctl;
  hd_server_config cfg;
  int port;
  atomic_int in_flight;
  atomic_int watches; /* Health/Watch streams, also in in_flight */
  /* Calls under --max-calls whose final status is not handed to gRPC yet.
   * A call leaves in_flight only when its last batch completes, which can
   * be after its caller has the status; counting the limit on this instead
   * means a caller that waited for its answer always finds the slot free. */
  atomic_int holding_slots;
  /* Set just before gRPC's shutdown: until then calls keep being requested,
   * so a call arriving while draining is answered, not left pending. */
  atomic_int grpc_stopping;
  atomic_int shutting_down;
  atomic_int stopped;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int shutdown_done;
  rpc_tag t_shutdown;
  rpc_auth_state auth;
  rpc_health_state health;
  rpc_admin_state admin;
};

#endif
