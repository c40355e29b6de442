/*
 * DispatchStream: many events on one call, replies in request order, at
 * most --stream-window requests handled ahead of their replies.
 *
 * Dispatches complete on any thread; the stream's state is guarded by the
 * call's mutex. The read side (stream_recv) and the life of the stream
 * (stream_life) are named states; a reply being written is send_busy.
 */
#include "clock.h"
#include "dispatch.h"
#include "proto_event.h"
#include "rpc.h"

#include <stdlib.h>
#include <string.h>

/* One request, queued until its reply can be sent. */
typedef struct stream_item {
  struct stream_item *next;
  call *c;
  uint64_t seq;
  hd_arena *arena;
  hd_event ev;
  int64_t start_ns; /* CLOCK_MONOTONIC, for the latency metric */
  int ready;
  grpc_byte_buffer *reply;
} stream_item;

static void stream_recv_next(call *c);
static void on_stream_sent(void *owner, int ok);

static void item_free(stream_item *it) {
  if (it->reply)
    grpc_byte_buffer_destroy(it->reply);
  hd_arena_free(it->arena);
  free(it);
}

static void item_set_reply(stream_item *it, int code, const char *msg,
                           const hd_results *rs) {
  Handlers__V1__DispatchStreamReply r =
      HANDLERS__V1__DISPATCH_STREAM_REPLY__INIT;
  r.sequence = it->seq;
  r.code = code;
  r.message = (char *)(msg ? msg : "");
  if (rs && hd_proto_from_results(it->arena, rs, &r.results, &r.n_results)) {
    r.code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    r.message = (char *)"out of memory";
    r.n_results = 0;
  }
  it->reply = rpc_pack(&r.base);
}

/* Sends what can be sent, in request order; ends the stream when the client
 * has half-closed and every reply is out. Called with c->lock held. */
static void stream_pump(call *c) {
  call_stream *s = &c->u.stream;
  while (s->life == STREAM_BROKEN && s->head && s->head->ready) {
    stream_item *it = s->head;
    s->head = it->next;
    s->pending--;
    item_free(it);
  }
  if (!s->head)
    s->tail = NULL;
  if (s->life == STREAM_OPEN && !s->send_busy && s->head && s->head->ready) {
    stream_item *it = s->head;
    s->head = it->next;
    if (!s->head)
      s->tail = NULL;
    s->pending--;
    c->send_buf = it->reply;
    it->reply = NULL;
    item_free(it);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = c->send_buf;
    /* More replies ready behind this one: let gRPC buffer it and flush them
     * together, one write for many small messages. */
    if (s->head && s->head->ready)
      op.flags = GRPC_WRITE_BUFFER_HINT;
    s->send_busy = 1;
    c->t_send = (rpc_tag){on_stream_sent, c};
    if (call_start_batch(c, &op, 1, &c->t_send) != 0) {
      s->send_busy = 0;
      s->life = STREAM_BROKEN;
      grpc_byte_buffer_destroy(c->send_buf);
      c->send_buf = NULL;
    }
  }
  if (s->recv == STREAM_PAUSED && s->life == STREAM_OPEN &&
      s->pending < (size_t)c->srv->cfg.stream_window) {
    s->recv = STREAM_READING;
    stream_recv_next(c);
  }
  if (s->recv == STREAM_READ_DONE && !s->head && !s->send_busy &&
      s->life != STREAM_ENDED) {
    if (s->life == STREAM_OPEN)
      call_finish(c, GRPC_STATUS_OK, "%s", "");
    s->life = STREAM_ENDED;
  }
}

/* The client is gone, or writing to it failed. */
static void stream_break(call_stream *s) {
  if (s->life == STREAM_OPEN)
    s->life = STREAM_BROKEN;
}

static void on_stream_sent(void *owner, int ok) {
  call *c = owner;
  pthread_mutex_lock(&c->lock);
  grpc_byte_buffer_destroy(c->send_buf);
  c->send_buf = NULL;
  c->u.stream.send_busy = 0;
  if (!ok)
    stream_break(&c->u.stream);
  stream_pump(c);
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

static void stream_dispatch_done(hd_results *rs, void *ud) {
  stream_item *it = ud;
  call *c = it->c;
  rpc_count_dispatch(&it->ev, rs, it->start_ns, call_deadline_ns(c));
  item_set_reply(it, GRPC_STATUS_OK, NULL, rs);
  hd_results_free(rs);
  pthread_mutex_lock(&c->lock);
  it->ready = 1;
  stream_pump(c);
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

static void on_stream_recv(void *owner, int ok) {
  call *c = owner;
  call_stream *s = &c->u.stream;
  if (!ok || !c->recv_buf) {
    pthread_mutex_lock(&c->lock);
    s->recv = STREAM_READ_DONE;
    if (!ok)
      stream_break(s);
    stream_pump(c);
    pthread_mutex_unlock(&c->lock);
    call_unref(c);
    return;
  }
  grpc_slice body = rpc_read_all(c->recv_buf);
  grpc_byte_buffer_destroy(c->recv_buf);
  c->recv_buf = NULL;

  stream_item *it = calloc(1, sizeof(*it));
  if (it)
    it->arena = hd_arena_new(2048);
  if (!it || !it->arena) {
    free(it);
    grpc_slice_unref(body);
    pthread_mutex_lock(&c->lock);
    s->recv = STREAM_READ_DONE;
    stream_break(s);
    pthread_mutex_unlock(&c->lock);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                 "out of memory", NULL);
    call_unref(c);
    return;
  }
  it->c = c;
  pthread_mutex_lock(&c->lock);
  it->seq = s->next_seq++;
  if (s->tail)
    s->tail->next = it;
  else
    s->head = it;
  s->tail = it;
  s->pending++;
  pthread_mutex_unlock(&c->lock);

  /* Outside the lock: a local handler completes before this returns. */
  char msg[RPC_MSG_MAX];
  call_ref(c);
  it->start_ns = mono_ns();
  grpc_status_code st =
      rpc_start_dispatch(c->srv, it->arena, body, call_deadline_ns(c), &it->ev,
                         stream_dispatch_done, it, msg, sizeof(msg));
  grpc_slice_unref(body);
  if (st != GRPC_STATUS_OK)
    hd_metrics_dispatch(it->ev.name, st, -1);
  pthread_mutex_lock(&c->lock);
  if (st != GRPC_STATUS_OK) {
    call_unref(c); /* the dispatch never started: refs stay > 0 (recv) */
    item_set_reply(it, st, msg, NULL);
    it->ready = 1;
  }
  if (s->pending < (size_t)c->srv->cfg.stream_window && s->life == STREAM_OPEN)
    stream_recv_next(c);
  else
    s->recv = STREAM_PAUSED;
  stream_pump(c);
  pthread_mutex_unlock(&c->lock);
  call_unref(c);
}

/* Reads the next stream message. Called with c->lock held (or before the
 * call is shared). */
static void stream_recv_next(call *c) {
  if (call_start_recv(c, on_stream_recv) != 0) {
    c->u.stream.recv = STREAM_READ_DONE;
    stream_break(&c->u.stream);
  }
}

const rpc_method rpc_stream_methods[] = {
    {.path = "/handlers.v1.Handlers/DispatchStream",
     .auth = RPC_AUTH_DISPATCH,
     .hot = 1,
     .start = stream_recv_next,
     .on_close = call_on_batch_done},
    {.path = NULL},
};
