/*
 * Dispatch: one event in, every handler's result out.
 */
#include "dispatch.h"
#include "clock.h"
#include "frame.h"
#include "proto_event.h"
#include "rpc.h"

#include <stdio.h>
#include <string.h>

void rpc_count_dispatch(const hd_event *ev, const hd_results *rs,
                        int64_t start_ns, int64_t deadline) {
  for (size_t i = 0, n = hd_results_count(rs); i < n; i++) {
    const hd_result *r = hd_results_at(rs, i);
    hd_metrics_result(r->kind, r->err == HD_OK);
  }
  int late = deadline != 0 && real_ns() >= deadline;
  hd_metrics_dispatch(ev->name,
                      late ? GRPC_STATUS_DEADLINE_EXCEEDED : GRPC_STATUS_OK,
                      mono_ns() - start_ns);
}

/* The part of a call's time kept for sending the reply: handlers get the
 * deadline minus this, so the results of those that answered go back in
 * time even when another one waits until its deadline. A quarter of the
 * time left, from 10 ms to 250 ms (README: "Deadlines"). */
int64_t hd_server_reply_margin_ns(int64_t left_ns) {
  const int64_t lo = 10 * 1000000LL, hi = 250 * 1000000LL;
  int64_t m = left_ns / 4;
  return m < lo ? lo : m > hi ? hi : m;
}

static void reply_with_results(call *c, hd_results *rs) {
  call_dispatch *d = &c->u.dispatch;
  rpc_count_dispatch(&d->ev, rs, d->start_ns, call_deadline_ns(c));
  Handlers__V1__DispatchReply reply = HANDLERS__V1__DISPATCH_REPLY__INIT;
  if (hd_proto_from_results(c->arena, rs, &reply.results, &reply.n_results) !=
      HD_OK)
    call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  else
    call_send_reply(c, &reply.base);
  hd_results_free(rs);
}

static void on_results_hop(void *owner, int ok) {
  call *c = owner;
  hd_results *rs = c->u.dispatch.hop_results;
  (void)ok; /* an empty batch: nothing failed, the results still go out */
  c->u.dispatch.hop_results = NULL;
  reply_with_results(c, rs);
  call_unref(c);
}

static void dispatch_done(hd_results *rs, void *ud) {
  call *c = ud;
  if (!rpc_in_cq_thread) {
    /* An empty batch completes at once on the call's queue: encoding and
     * the gRPC write then run there, not on the webhook engine's thread,
     * which is the busiest one under webhook load. */
    c->u.dispatch.hop_results = rs;
    c->u.dispatch.t_hop = (rpc_tag){on_results_hop, c};
    if (call_start_batch(c, NULL, 0, &c->u.dispatch.t_hop) == 0) {
      call_unref(c);
      return;
    }
    c->u.dispatch.hop_results = NULL;
  }
  reply_with_results(c, rs);
  call_unref(c);
}

grpc_status_code rpc_start_dispatch(hd_server *srv, hd_arena *a,
                                    grpc_slice body, int64_t deadline,
                                    hd_event *ev, hd_done_fn *done,
                                    void *done_data, char *msg,
                                    size_t msg_size) {
  Handlers__V1__DispatchRequest *req;
  hd_err err =
      hd_proto_decode_dispatch(a, GRPC_SLICE_START_PTR(body),
                               GRPC_SLICE_LENGTH(body), &req, msg, msg_size);
  if (err == HD_OK)
    err = hd_proto_to_event(a, req, ev, msg, msg_size);
  if (err != HD_OK)
    return hd_proto_status_of(err);
  if (ev->topic.path &&
      strlen(ev->topic.path) > (size_t)srv->cfg.max_topic_path) {
    snprintf(
        msg, msg_size,
        "topic_path is %zu bytes, the limit is %d (--max-topic-path-bytes)",
        strlen(ev->topic.path), srv->cfg.max_topic_path);
    return GRPC_STATUS_INVALID_ARGUMENT;
  }
  if (deadline) {
    int64_t left = deadline - real_ns();
    if (left <= 0) {
      snprintf(msg, msg_size, "deadline passed before dispatch");
      return GRPC_STATUS_DEADLINE_EXCEEDED;
    }
    deadline -= hd_server_reply_margin_ns(left);
  }
  ev->deadline_ns = deadline;
  /* Every level's bookkeeping goes in the call's arena beside the event,
   * which lives as long (frame.h). */
  hd_frame_scope frames;
  hd_frame_begin(&frames, a, ev);
  err = hd_registry_dispatch(srv->reg, ev, done, done_data);
  hd_frame_end(&frames);
  if (err == HD_ENOKEY)
    snprintf(msg, msg_size, "no handler registered for key '%s'", ev->key);
  else if (err != HD_OK)
    snprintf(msg, msg_size, "dispatch failed: %s", hd_strerror(err));
  return hd_proto_status_of(err);
}

static void handle_dispatch(call *c, grpc_slice body) {
  char msg[RPC_MSG_MAX];
  call_dispatch *d = &c->u.dispatch;
  call_ref(c); /* held by the dispatch until dispatch_done */
  d->start_ns = mono_ns();
  grpc_status_code st =
      rpc_start_dispatch(c->srv, c->arena, body, call_deadline_ns(c), &d->ev,
                         dispatch_done, c, msg, sizeof(msg));
  if (st != GRPC_STATUS_OK) {
    hd_metrics_dispatch(d->ev.name, st, -1);
    call_finish(c, st, "%s", msg);
    call_unref(c);
  }
}

const rpc_method rpc_dispatch_methods[] = {
    {.path = "/handlers.v1.Handlers/Dispatch",
     .auth = RPC_AUTH_DISPATCH,
     .hot = 1,
     .handle = handle_dispatch},
    {.path = NULL},
};
