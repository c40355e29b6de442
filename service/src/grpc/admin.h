/*
 * The admin RPCs: AddHandler, RemoveHandler, ListHandlers, UpdateHandler,
 * RotateSecret (the control plane, on a thread of their own) and GetStats. The
 * control thread also runs the delivery RPCs (deliveries.c), which read and
 * write the journal.
 */
#ifndef HD_ADMIN_H
#define HD_ADMIN_H

#include "server.h"

#include <pthread.h>

typedef struct call call;

/* The control thread's queue. The control plane writes to the store
 * synchronously, and a slow disk (or, later, a remote database) must not
 * hold a completion-queue thread: their calls wait here instead. */
typedef struct rpc_admin_state {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  call *head, *tail; /* each holds a reference while queued */
  int stop;
  int started;
  pthread_t thread;
} rpc_admin_state;

void rpc_admin_init(rpc_admin_state *a);
/* Starts the control thread. HD_ENOMEM when it cannot be created. */
hd_err rpc_admin_start(rpc_admin_state *a);
/* Runs what is queued, then stops and joins the thread (if started), and
 * frees the state. Call once no call is left. */
void rpc_admin_destroy(rpc_admin_state *a);
/* Queues `run(c, req)` for the control thread, holding a reference to `c`
 * until it returns; `run` must end the call. A call whose deadline passes
 * while queued is ended DEADLINE_EXCEEDED instead. Any work that may wait
 * on a database goes this way, never on a completion-queue thread. */
void rpc_admin_enqueue(call *c, void (*run)(call *c, void *req), void *req);

#endif
