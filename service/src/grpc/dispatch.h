/*
 * What Dispatch and DispatchStream share: starting one dispatch from a
 * request's bytes, and its metrics.
 */
#ifndef HD_DISPATCH_H
#define HD_DISPATCH_H

#include "arena.h"
#include "handlerd/handlerd.h"
#include "server.h"

#include <grpc/grpc.h>

/* Decodes and starts one dispatch. On failure returns the status to send
 * with a message in `msg`; on success `done(…, done_data)` will run.
 * `deadline`: the caller's, CLOCK_REALTIME ns, 0 for none. */
grpc_status_code rpc_start_dispatch(hd_server *srv, hd_arena *a,
                                    grpc_slice body, int64_t deadline,
                                    hd_event *ev, hd_done_fn *done,
                                    void *done_data, char *msg,
                                    size_t msg_size);

/* Metrics for a dispatch that ran: its results and latency, and the status
 * the caller sees: a reply that leaves after the call's deadline
 * (`deadline`, CLOCK_REALTIME ns, 0: none) reaches it as
 * DEADLINE_EXCEEDED. */
void rpc_count_dispatch(const hd_event *ev, const hd_results *rs,
                        int64_t start_ns, int64_t deadline);

#endif
