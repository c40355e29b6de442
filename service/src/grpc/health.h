/*
 * grpc.health.v1: Check, and Watch streams that hear NOT_SERVING when
 * shutdown starts. Services: "" and "handlers.v1.Handlers" (the server),
 * "handlerd.database" (Check: NOT_SERVING while the shared database cannot
 * be reached).
 */
#ifndef HD_HEALTH_H
#define HD_HEALTH_H

#include "server.h"

#include <pthread.h>

typedef struct call call;

typedef struct rpc_health_state {
  pthread_mutex_t lock; /* guards watchers and the shutting_down flip */
  call *watchers;       /* each holds a reference while listed */
} rpc_health_state;

void rpc_health_init(rpc_health_state *h);
void rpc_health_destroy(rpc_health_state *h);

/* Sets srv->shutting_down, so Check answers NOT_SERVING, and ends every
 * Watch with NOT_SERVING; a Watch starting later ends at once. */
void rpc_health_shutdown(hd_server *srv);

#endif
