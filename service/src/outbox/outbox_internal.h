/*
 * outbox_internal.h - what the files of the outbox share. Not for use
 * outside outbox/.
 *
 *   outbox.c           life (new, run, stop), accept, the thread's loop and
 *                      its group commit
 *   outbox_queue.c     the in-memory queue: the due heap, ordering per
 *                      key, flow control, attempts
 *   outbox_endpoint.c  async webhooks by name and their settings
 *   outbox_retry.c     the retry schedule: defaults, parsing, the delay
 *   outbox_admin.c     list, get, redeliver, replay, enable, figures
 *   outbox_shared.c    a shared journal's leases: claim, renew, reap
 *
 * Locking: `lock` guards everything in struct hd_outbox and every dlv and
 * ob_name. The journal is called without it (it has its own), and so are
 * the engine (whose submit may complete a job at once) and callbacks.
 */
#ifndef HD_OUTBOX_INTERNAL_H
#define HD_OUTBOX_INTERNAL_H

#include "outbox.h"
#include "strmap.h"
#include "webhook_sign.h"

#include <pthread.h>
#include <stdatomic.h>

/* Where a delivery is in memory. */
typedef enum dlv_where {
  DLV_NOWHERE = 0, /* just made, or finished */
  DLV_HEAP,        /* waiting for next_ms */
  DLV_BLOCKED,     /* due, held by its endpoint (disabled, max_inflight) */
  DLV_KEY_WAIT,    /* ordered: behind its key's head */
  DLV_IN_FLIGHT,   /* an attempt runs */
} dlv_where;

typedef struct ob_name ob_name;

/* One unfinished delivery. row's strings are owned (malloc'd); the body is
 * in `body` (row.body points into it). */
typedef struct dlv {
  hd_delivery_row row;
  hd_outbox *owner; /* set while an attempt is in flight */
  hd_webhook_body *body;
  ob_name *name;
  int ordered; /* held in its key's queue */
  int manual;  /* the next attempt is a manual one */
  int redo;    /* Redeliver came while an attempt was in flight */
  dlv_where where;
  size_t heap_at;
  struct dlv *next;    /* the blocked list, or a work list */
  struct dlv *kq_next; /* its key's queue (ordered) */
  /* Accepting: the caller's callback. */
  hd_outbox_accepted_fn *accepted;
  void *accepted_data;
  /* The attempt in flight, then its outcome. */
  int64_t started_ms;
  int64_t took_ms;
  hd_results *results;
  hd_webhook_outcome outcome;
} dlv;

/* An ordered endpoint's queue for one ordering key: head is the one being
 * delivered (or retried); the rest wait. */
typedef struct ob_keyq {
  dlv *head, *tail;
} ob_keyq;

/* One async webhook by name (handler id, route): its health, flow control
 * and queues, which outlive a change of its settings. */
struct ob_name {
  char *handler_id;
  char *route;
  /* The current settings (a reference): the oldest handle still held, the
   * head of the held list (next_held); NULL: gone. */
  hd_outbox_endpoint *ep;
  int failures;
  int64_t first_failure_ms;
  int64_t disabled_ms;
  int health_dirty; /* to journal at the next commit */
  int in_flight;
  double tokens;
  int64_t tokens_ms;
  dlv *blocked_head, *blocked_tail;
  hd_strmap *keys; /* ordering key -> ob_keyq (ordered deliveries) */
  ob_name *next_all;
};

/* Settings: immutable once made, reference counted. */
struct hd_outbox_endpoint {
  atomic_int refs;
  ob_name *name;
  char *key;
  char *url;
  char **headers;
  size_t n_headers;
  unsigned char sign_key[HD_SECRET_MAX_BYTES];
  size_t sign_key_len;
  /* A rotation's previous key: a second signature until prev_until_ns. */
  unsigned char prev_sign_key[HD_SECRET_MAX_BYTES];
  size_t prev_sign_key_len;
  int64_t prev_until_ns;
  long timeout_ms;
  int64_t schedule[HD_OUTBOX_SCHEDULE_MAX];
  size_t n_schedule; /* 0: the outbox's */
  int ordered;
  uint32_t max_inflight;
  double max_rps;
  /* The next handle of the same name still held, added later (its
   * settings apply once this one is dropped: outbox_endpoint.c). The name
   * holds a reference on each. Locked. */
  struct hd_outbox_endpoint *next_held;
};

struct hd_outbox {
  atomic_int refs; /* the owner's, and one per attempt in flight */
  hd_outbox_config cfg;
  hd_journal *journal;
  hd_webhook_engine *engine;

  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_t thread;
  int running;
  int stopping;
  int stopped; /* the thread is gone: completions only free */

  dlv *accepts, *accepts_tail;   /* waiting for the next commit */
  dlv *finished, *finished_tail; /* attempts done, to journal */
  hd_strmap *live;               /* delivery id -> dlv (every unfinished one) */
  hd_strmap *names;              /* "handler_id\0route" -> ob_name */
  ob_name *all_names;
  dlv **heap;
  size_t n_heap, cap_heap;
  int in_flight;
  uint64_t rng;
  int64_t next_prune_ms;
  /* A shared journal (outbox_shared.c): when to claim, renew, reap next. */
  int shared;
  int claim_now;
  int64_t next_claim_ms, next_renew_ms, next_reap_ms;
  int64_t shared_quiet_ms; /* no warning before: outbox_shared.c */
  hd_outbox_stats stats;   /* counters; pending/in_flight are computed */
};

/* ---- outbox.c ------------------------------------------------------------ */

int64_t ob_now_ms(void);
void ob_unref(hd_outbox *o);
void ob_dlv_free(dlv *d);
/* A delivery owning copies of `row` (its strings and body); NULL on ENOMEM. */
dlv *ob_dlv_copy(const hd_delivery_row *row);

/* ---- outbox_endpoint.c --------------------------------------------------- */

/* The name of (handler_id, route), made when missing; NULL on ENOMEM. */
ob_name *ob_name_get(hd_outbox *o, const char *handler_id, const char *route,
                     int create);
void ob_names_free(hd_outbox *o);

/* ---- outbox_queue.c ------------------------------------------------------ */

/* Puts an accepted or loaded delivery in the queue (heap or key queue). */
void ob_enqueue(hd_outbox *o, dlv *d);
/* Moves `d` to the heap at `at_ms` wherever it waits (not in flight). */
void ob_heap_put(hd_outbox *o, dlv *d);
void ob_heap_remove(hd_outbox *o, dlv *d);
void ob_heap_fix(hd_outbox *o, dlv *d);
/* Starts every due delivery it may: jobs to submit (after unlocking) go to
 * *jobs; returns the time of the next due one (0: none). */
int64_t ob_start_due(hd_outbox *o, int64_t now, dlv **jobs);
/* Submits the jobs of ob_start_due (unlocked). */
void ob_submit(hd_outbox *o, dlv *jobs);
/* An attempt's outcome: fills the update and attempt rows and the name's
 * health, decides the state. Locked. Returns 1 when the delivery is
 * finished (succeeded or dead). */
int ob_settle(hd_outbox *o, dlv *d, int64_t now, hd_delivery_update *up,
              hd_attempt_row *at);
/* After the commit: a finished delivery leaves (its key's next goes on),
 * an unfinished one waits for its next attempt. Locked. */
void ob_after_attempt(hd_outbox *o, dlv *d, int finished);
/* Releases what waits behind the name's limits now that they may allow it. */
void ob_unblock(hd_outbox *o, ob_name *n);

/* A shared journal: the deliveries this replica holds leased at most (its
 * queue; each renewal rewrites them all). */
#define OB_LEASE_AHEAD 2048

/* ---- outbox_shared.c ----------------------------------------------------- */

/* A shared journal's turn: renews, reaps and claims what is due (the
 * claimed deliveries join the queue). Called locked, returns locked. */
void ob_shared_turn(hd_outbox *o, int64_t now);
/* The earliest of the shared turn's next times (0: not shared). Locked. */
int64_t ob_shared_next(const hd_outbox *o);
/* At stop: gives back every lease this process holds. */
void ob_shared_release_all(hd_outbox *o);
/* A delivery of a shared journal leaving this process's queue unfinished
 * (its lease was ended by the commit, or will expire). Locked. */
void ob_shared_drop(hd_outbox *o, dlv *d);

/* ---- outbox_retry.c ------------------------------------------------------ */

/* The delay before the next attempt after `attempts` attempts failed, or
 * -1 when the schedule is exhausted. */
int64_t ob_retry_delay_ms(const hd_outbox *o, const hd_outbox_endpoint *ep,
                          int attempts, int http_status, int timed_out,
                          int64_t retry_after_ms, uint64_t *rng);

#endif
