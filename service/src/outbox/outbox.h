/*
 * outbox.h - durable, out-of-band webhook delivery ("async" webhooks).
 *
 * Dispatch hands an async webhook's event to the outbox (hd_outbox_accept);
 * the outbox writes it to the journal (journal.h) and calls back once it is
 * committed; only then is the event acknowledged. Concurrent accepts share
 * one transaction (group commit): the outbox thread takes everything that
 * arrived since its last commit and writes it at once.
 *
 * The outbox then delivers each one through the webhook engine, one attempt
 * at a time (webhook_engine.h), and journals each attempt and each change
 * of state. Failures are retried on the retry schedule (hd_outbox_config,
 * or the webhook's own), jittered by +-20 %; a Retry-After is honoured
 * within [delay, 2 x delay]; after a 429 or a timeout the wait is at least
 * 60 s. Which answers are retried is the sync path's rule (connection
 * errors, timeouts, 408, 429, 5xx); any other answer is final: a 2xx
 * succeeds, a 4xx is dead at once. When the schedule is exhausted the
 * delivery is dead (kept, listable, redeliverable).
 *
 * Shared journals (several replicas on one database, journal.h: claim):
 * the in-memory queue holds only what this process leases. An accepted
 * event is leased to the replica that accepted it, except an ordered one,
 * which any replica claims at the head of its key, and one of a webhook
 * with max_inflight or max_rps, which any replica claims within those
 * limits (they hold across replicas), and any past the 2048 a replica
 * holds leased at once (each renewal rewrites them all); a delivery that
 * failed gives its lease back with its retry time, for whichever replica claims
 * it when it is due. The thread claims every 200 ms (at once after an
 * accept it did not lease), renews its leases every third of a lease, and
 * reaps expired ones every lease.
 *
 * The queue is in memory (one process owns it); the journal is what a
 * restart resumes from: every unfinished delivery is loaded by
 * hd_outbox_run and delivered at its scheduled time (an attempt in flight
 * at a crash is made again: at least once; the webhook-id lets receivers
 * de-duplicate).
 *
 * Endpoints: each async webhook registers itself (hd_outbox_endpoint_add)
 * under its handler id and route when it is built and leaves when it is
 * destroyed; a delivery is made with the endpoint's settings as they are
 * when the attempt starts (URL, headers, secrets, timeout). A delivery whose
 * endpoint is gone (the handler was removed) is dead. Per endpoint:
 * ordered delivery per ordering key, max_inflight, max_rps (token bucket):
 * deliveries wait, none is dropped. An endpoint whose attempts have only
 * failed for disable_after is disabled (logged, counted, journaled); its
 * deliveries wait until hd_outbox_enable.
 *
 * Threads: every function may be called from any thread. Callbacks run on
 * the outbox thread (or in hd_outbox_stop).
 */
#ifndef HD_OUTBOX_H
#define HD_OUTBOX_H

#include "arena.h"
#include "handlerd/handlerd.h"
#include "journal.h"
#include "webhook_engine.h"

#include <stddef.h>
#include <stdint.h>

typedef struct hd_outbox hd_outbox;

#define HD_OUTBOX_SCHEDULE_MAX 32 /* steps of a retry schedule */

typedef struct hd_outbox_config {
  /* Delays before attempts 2, 3, ... (ms). Default Svix's: 5 s, 5 min,
   * 30 min, 2 h, 5 h, 10 h, 10 h. */
  int64_t retry_schedule_ms[HD_OUTBOX_SCHEDULE_MAX];
  size_t n_retry_schedule;
  int64_t retention_ms;       /* finished deliveries kept; default 7 days */
  int64_t disable_after_ms;   /* failing only this long disables; 5 days */
  size_t max_pending;         /* unfinished deliveries; past it accept is
                               * HD_EBUSY; default 100000 (bodies are
                               * held in memory) */
  int max_attempts_in_flight; /* engine jobs at once; default 1000 */
  int jitter;                 /* 1: +-20 % (default); 0 for tests */
  /* A shared journal's lease (journal.h: claim): renewed every third of
   * it, expired leases reaped every lease. Default 30 s. */
  int64_t lease_ms;
} hd_outbox_config;

void hd_outbox_config_init(hd_outbox_config *cfg);

/* Parses "0s,5s,5m,30m,2h,5h,10h,10h" (units ms, s, m, h, d; a bare number
 * is seconds) into cfg's schedule. The first entry is the delay of the
 * first attempt and must be 0 ("at once"): it is not stored. HD_EINVAL with
 * a message naming the entry. */
hd_err hd_outbox_parse_schedule(const char *text, hd_outbox_config *cfg,
                                char *msg, size_t msg_size);

/* A new outbox on `journal` (borrowed; must outlive it) delivering through
 * `engine` (a reference is taken). Nothing runs until hd_outbox_run, so
 * endpoints can be added first (the registrations' replay). */
hd_err hd_outbox_new(const hd_outbox_config *cfg, hd_journal *journal,
                     hd_webhook_engine *engine, hd_outbox **out);

/* Loads the unfinished deliveries and the endpoints' health from the
 * journal and starts the outbox thread. A journal failure fills `msg`. */
hd_err hd_outbox_run(hd_outbox *o, char *msg, size_t msg_size);

/* Stops the thread: accepts not yet committed are committed (or fail),
 * attempts in flight are abandoned (made again after a restart), then
 * frees the outbox. NULL is fine. Call after the gRPC server has stopped
 * and before the engine stops. */
void hd_outbox_stop(hd_outbox *o);

/* ---- endpoints (the webhook kind) ------------------------------------- */

typedef struct hd_outbox_endpoint hd_outbox_endpoint;

typedef struct hd_endpoint_spec {
  const char *handler_id;
  const char *route; /* "" for a simple handler */
  const char *key;
  const char *url;
  const char *const *headers; /* custom "name: value" lines */
  size_t n_headers;
  const unsigned char *sign_key; /* 0 length: unsigned */
  size_t sign_key_len;
  /* A rotation's previous key (0 length: none): attempts before
   * prev_until_ns (CLOCK_REALTIME) carry its signature too. */
  const unsigned char *prev_sign_key;
  size_t prev_sign_key_len;
  int64_t prev_until_ns;
  long timeout_ms; /* per attempt */
  const uint32_t *retry_schedule_ms;
  size_t n_retry_schedule; /* 0: the outbox's */
  int ordered;
  uint32_t max_inflight; /* 0: no limit */
  double max_rps;        /* 0: no limit */
} hd_endpoint_spec;

/* Registers the endpoint of (handler_id, route), copying `spec`. The
 * returned handle is the caller's until hd_outbox_endpoint_drop. Health and
 * queued deliveries belong to the name, not to a handle. While earlier
 * handles of the same name are held, a later add waits: the settings in
 * force are those of the oldest handle still held, so a webhook rebuilt by
 * UpdateHandler or RotateSecret applies once the old webhook is dropped
 * (after the commit and the registry's swap), and a rebuild abandoned
 * before its commit (its handle dropped first) never applies. With no
 * handle left, the name's deliveries are dead. NULL on ENOMEM. */
hd_outbox_endpoint *hd_outbox_endpoint_add(hd_outbox *o,
                                           const hd_endpoint_spec *spec);
void hd_outbox_endpoint_drop(hd_outbox *o, hd_outbox_endpoint *ep);

/* ---- accepting events (Dispatch) -------------------------------------- */

typedef struct hd_outbox_event {
  const hd_outbox_endpoint *ep;
  const char *event_id; /* the CloudEvent id */
  const char *event_name;
  const char *ordering_key; /* the topic path; NULL or "": none */
  const unsigned char *body;
  size_t body_len;
  const char *headers; /* the event's header lines, each ending in "\n" */
} hd_outbox_event;

/* Called once: err HD_OK and the delivery's id when it is committed, else
 * the error and a message (the journal's: disk full is HD_EBUSY). */
typedef void hd_outbox_accepted_fn(void *data, hd_err err,
                                   const char *delivery_id, const char *msg);

/* Queues `ev` (copied) for the next commit. HD_EBUSY at once when
 * max_pending deliveries are unfinished, HD_EUNSUPPORTED when the outbox is
 * stopping (msg says which); `cb` is then never called. */
hd_err hd_outbox_accept(hd_outbox *o, const hd_outbox_event *ev,
                        hd_outbox_accepted_fn *cb, void *data, char *msg,
                        size_t msg_size);

/* A batch: the deliveries of one Dispatch (the async webhooks of one
 * fan-out), accepted together so that one transaction commits them all:
 * either every one is acknowledged or none. Fill it on one thread. */
typedef struct hd_outbox_batch hd_outbox_batch;

/* An empty batch for `o`; NULL on ENOMEM. */
hd_outbox_batch *hd_outbox_batch_new(hd_outbox *o);
hd_outbox *hd_outbox_batch_outbox(const hd_outbox_batch *b);

/* Adds `ev` (copied) with its callback, as hd_outbox_accept would. HD_ENOMEM
 * (cb is then never called). */
hd_err hd_outbox_batch_add(hd_outbox_batch *b, const hd_outbox_event *ev,
                           hd_outbox_accepted_fn *cb, void *data);

/* Queues every event of `b` for the same commit and frees `b`. Each
 * callback is called once: after the commit, or before this returns with
 * the refusal (HD_EBUSY past max_pending, counting the whole batch;
 * HD_EUNSUPPORTED when stopping; HD_ENOMEM) and its message. */
void hd_outbox_batch_submit(hd_outbox_batch *b);

/* ---- history and repair (the admin RPCs) ------------------------------ */

/* A delivery as listed, in `a`. */
typedef struct hd_delivery_info {
  hd_delivery_row row;      /* its strings, body and headers are in the arena */
  hd_attempt_row *attempts; /* hd_outbox_get only, number order */
  size_t n_attempts;
} hd_delivery_info;

/* The deliveries matching `f` (newest first; f->limit at most), in `a`.
 * The state shown is the live one (a delivery in flight says so). */
hd_err hd_outbox_list(hd_outbox *o, const hd_delivery_filter *f, hd_arena *a,
                      hd_delivery_info **out, size_t *n, char *msg,
                      size_t msg_size);

/* One delivery with body and attempts. HD_ENOTFOUND with a message. */
hd_err hd_outbox_get(hd_outbox *o, const char *id, hd_arena *a,
                     hd_delivery_info *out, char *msg, size_t msg_size);

/* Delivers `id` again now, whatever its state; the attempt is manual.
 * HD_ENOTFOUND; HD_EINVAL when its endpoint is gone. Returns once the
 * change is journaled. */
hd_err hd_outbox_redeliver(hd_outbox *o, const char *id, char *msg,
                           size_t msg_size);

/* Redelivers the deliveries of `handler_id` created in [since, until) (0:
 * now) in `state` (0: SUCCEEDED, FAILED and DEAD), at most `limit`;
 * *replayed gets how many, *truncated 1 when more matched. */
hd_err hd_outbox_replay(hd_outbox *o, const char *handler_id, int64_t since_ms,
                        int64_t until_ms, int state, size_t limit,
                        size_t *replayed, int *truncated, char *msg,
                        size_t msg_size);

/* Enables the disabled endpoints of `handler_id` (any route); *enabled gets
 * how many were disabled. Their deliveries resume. */
hd_err hd_outbox_enable(hd_outbox *o, const char *handler_id, size_t *enabled,
                        char *msg, size_t msg_size);

/* 1 when (handler_id, route) is registered and disabled (ListHandlers). */
int hd_outbox_endpoint_disabled(hd_outbox *o, const char *handler_id,
                                const char *route);

/* ---- figures (/metrics) ------------------------------------------------ */

typedef struct hd_outbox_stats {
  size_t pending; /* unfinished: pending, failed or in flight */
  size_t in_flight;
  int64_t oldest_pending_ms; /* age of the oldest unfinished; 0: none */
  uint64_t accepted;         /* totals since start */
  uint64_t attempts;
  uint64_t succeeded;
  uint64_t failed_attempts;
  uint64_t dead;
  size_t disabled_endpoints;
  uint64_t disabled_total; /* endpoints disabled since start */
  uint64_t commits;        /* journal transactions */
} hd_outbox_stats;

/* The figures; oldest_pending_ms only `with_oldest` (it walks every
 * unfinished delivery). */
void hd_outbox_get_stats(hd_outbox *o, int with_oldest, hd_outbox_stats *out);

/* Puts the figures on /metrics (handlerd_async_*). NULL is fine (none).
 * Call once, before serving; `o` must outlive the metrics server. */
void hd_outbox_set_metrics(hd_outbox *o);

#endif
