/*
 * One gRPC call and its lifetime. Every operation completes as a tag
 * {fn, owner} on the call's completion queue. A call holds one reference
 * per batch in flight, one per dispatch in flight and one per control-plane
 * job queued; the last unref releases the grpc_call and the call's arena.
 * grpc_call_start_batch is legal from any thread, so handlers completing on
 * other threads (webhooks, the control thread) answer directly; state that
 * several threads touch (streams, watches) is guarded by the call's mutex.
 */
#ifndef HD_CALL_H
#define HD_CALL_H

#include "arena.h"
#include "handlerd/handlerd.h"
#include "server.h"

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define RPC_MSG_MAX 512

typedef struct call call;
typedef struct rpc_method rpc_method;

typedef void rpc_tag_fn(void *owner, int ok);
typedef struct rpc_tag {
  rpc_tag_fn *fn;
  void *owner;
} rpc_tag;

/* Unary Dispatch: the event and where its results wait for their hop. */
typedef struct call_dispatch {
  hd_event ev;
  int64_t start_ns;        /* CLOCK_MONOTONIC, for the latency metric */
  hd_results *hop_results; /* results waiting for t_hop */
  rpc_tag t_hop;
} call_dispatch;

/* DispatchStream's read side. */
typedef enum stream_recv {
  STREAM_READING,   /* a read is in flight */
  STREAM_PAUSED,    /* the window is full: no read until replies go out */
  STREAM_READ_DONE, /* the client half-closed, or reading failed */
} stream_recv;

typedef enum stream_life {
  STREAM_OPEN,
  STREAM_BROKEN, /* the client is gone: replies are dropped, no status */
  STREAM_ENDED,  /* every reply is out and the status sent (or given up) */
} stream_life;

typedef struct call_stream {
  struct stream_item *head, *tail; /* replies in request order */
  size_t pending;                  /* items in the list */
  uint64_t next_seq;
  stream_recv recv;
  stream_life life;
  int send_busy; /* a reply is being written */
} call_stream;

typedef enum watch_state {
  WATCH_IDLE,
  WATCH_SENDING,
  WATCH_SENDING_THEN_END, /* the final NOT_SERVING goes once this send is out */
  WATCH_ENDED,            /* the final status went */
} watch_state;

/* Health Watch: linked into the server's watchers until it ends. */
typedef struct call_watch {
  call *next;
  watch_state state;
} call_watch;

/* ListHandlers, AddHandler, RemoveHandler: queued for the control thread. */
typedef struct call_admin {
  call *next;
  void (*run)(call *c, void *req);
  void *req; /* in c->arena */
} call_admin;

struct call {
  hd_server *srv;
  grpc_completion_queue *cq;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array md;
  const rpc_method *method; /* NULL: an unknown method */
  size_t m_index;           /* into srv->methods; n_methods when unknown */
  gpr_timespec deadline;
  atomic_int refs;
  int counted;           /* included in srv->in_flight */
  int counted_watch;     /* included in srv->watches */
  atomic_int holds_slot; /* included in srv->holding_slots */
  int md_sent;
  int close_started; /* RECV_CLOSE_ON_SERVER is in a batch */
  int cancelled;     /* written by RECV_CLOSE_ON_SERVER */
  rpc_tag t_new, t_recv, t_send, t_close, t_status;
  grpc_byte_buffer *recv_buf, *send_buf;
  hd_arena *arena; /* calls that read one request: request and reply */
  pthread_mutex_t lock;
  union {
    call_dispatch dispatch;
    call_stream stream;
    call_watch watch;
    call_admin admin;
  } u;
};

/* Set in the completion-queue threads: results that arrive on another
 * thread (the webhook engine's) hop back to one of them to be sent. */
extern __thread int rpc_in_cq_thread;

/* A new call of method `i` (an index into srv->methods, n_methods for an
 * unknown one) on `cq`, before gRPC has matched it; NULL when out of
 * memory. */
call *call_new(hd_server *srv, grpc_completion_queue *cq, size_t i);
/* Frees a call that never held a reference (or whose last one is gone). */
void call_free(call *c);
void call_ref(call *c);
void call_unref(call *c);

/* Hands tag `t` to gRPC: a release store that the queue thread's acquire
 * load pairs with. It costs nothing on x86 and makes visible to
 * ThreadSanitizer the ordering gRPC's own (uninstrumented) synchronisation
 * provides between whatever this thread wrote for the tag and the thread
 * that completes it. */
void rpc_tag_publish(rpc_tag *t);

/* Starts a batch holding a reference; drops it again if the batch is
 * refused (the call is gone), so the caller never has to. 0 when started. */
int call_start_batch(call *c, const grpc_op *ops, size_t n, rpc_tag *t);
/* A tag function that only drops the batch's reference. */
void call_on_batch_done(void *owner, int ok);

/* Appends SEND_INITIAL_METADATA to `ops` unless it went already. */
void call_add_initial_metadata(call *c, grpc_op *ops, size_t *n);
/* Appends RECV_CLOSE_ON_SERVER unless it is in a batch already. Unary
 * calls ask for it in their last batch: one batch and one completion fewer
 * per call. */
void call_add_close(call *c, grpc_op *ops, size_t *n);

/* Counts the call's final status in the metrics and gives back its --max-calls
 * slot: called just before the status batch is started, once per call. */
void call_count(call *c, int code);
/* Gives back the call's --max-calls slot if it still holds one; safe from
 * any thread and more than once. */
void call_release_slot(call *c);
/* Ends the call with a status (a message for a non-OK one). */
void call_finish(call *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends a unary reply and an OK status in one batch. */
void call_send_reply(call *c, const ProtobufCMessage *msg);
/* Sends `reply`, or the status for `err` with `msg` (hd_strerror when
 * empty). */
void call_answer(call *c, hd_err err, const char *msg,
                 const ProtobufCMessage *reply);

/* Starts reading the call's next message into c->recv_buf, sending the
 * initial metadata first if it has not gone yet; `on_recv` runs when the
 * read completes. Returns call_start_batch's answer. */
int call_start_recv(call *c, rpc_tag_fn *on_recv);

/* Unpacks the request into the call's arena, or ends the call with
 * INVALID_ARGUMENT naming the expected message or the bad field and
 * returns NULL. */
void *call_unpack(call *c, grpc_slice body,
                  const ProtobufCMessageDescriptor *desc);

/* The caller's deadline as CLOCK_REALTIME ns; 0 when there is none. */
int64_t call_deadline_ns(const call *c);

grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg);
/* The message's bytes as one slice of our own. */
grpc_slice rpc_read_all(grpc_byte_buffer *bb);

#endif
