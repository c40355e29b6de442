/*
 * journal.h - what the outbox (outbox.h) keeps in a database: deliveries,
 * their attempts and the health of each async webhook. A backend implements
 * the vtable (SQLite: store/store_sqlite_journal.c, as the store's
 * `journal`; PostgreSQL next); tests/unit/test_journal.c is the
 * conformance suite every backend runs.
 *
 * The outbox owns the queue (in memory, single process); the journal is what
 * survives a restart and what history and repair read. Every write is one
 * batch in one transaction, durable (fsync'd) before commit returns: the
 * outbox acknowledges an accepted event only after that.
 *
 * Strings in rows given to the journal are borrowed for the call; rows the
 * journal hands to a callback are valid during the call only (copy what you
 * keep). Every string in a row the journal hands out is non-NULL.
 *
 * Errors as store.h says (HD_EBUSY disk full, HD_ENOMEM, HD_EIO, ...), with
 * `msg` naming the database and the cause. A failed commit changes nothing.
 */
#ifndef HD_JOURNAL_H
#define HD_JOURNAL_H

#include "handlerd/error.h"

#include <stddef.h>
#include <stdint.h>

/* The numbers are the API's DeliveryState (handlers.proto) and are stored:
 * never renumber. */
typedef enum hd_delivery_state {
  HD_DELIVERY_PENDING = 1,   /* waiting for its first attempt or its turn */
  HD_DELIVERY_IN_FLIGHT = 2, /* an attempt is running */
  HD_DELIVERY_SUCCEEDED = 3, /* a 2xx came back */
  HD_DELIVERY_FAILED = 4,    /* failed; next_ms is the next attempt */
  HD_DELIVERY_DEAD = 5,      /* schedule exhausted or a final answer */
} hd_delivery_state;

/* "pending", "in_flight", "succeeded", "failed", "dead"; "unknown". */
const char *hd_delivery_state_name(int state);

#define HD_DELIVERY_ID_LEN 36 /* a UUID's text */

/* One delivery: one event to one async webhook. */
typedef struct hd_delivery_row {
  char id[HD_DELIVERY_ID_LEN + 1];
  char event_id[HD_DELIVERY_ID_LEN + 1]; /* the CloudEvent id = webhook-id */
  const char *key;
  const char *handler_id;
  const char *route;         /* event-stream route; "" for a simple handler */
  const char *event_name;    /* the event's name ("update", ...) */
  const char *ordering_key;  /* the topic path; "" when none */
  const unsigned char *body; /* the request body as sent */
  size_t body_len;
  const char *headers; /* the event's header lines, each ending in "\n" */
  int64_t seq;         /* the journal's insert order: set by commit */
  int64_t created_ms;  /* Unix ms */
  int64_t next_ms;     /* next attempt (PENDING, FAILED); 0 otherwise */
  int64_t updated_ms;  /* last change: what retention counts from */
  hd_delivery_state state;
  int attempts;
  int last_status;        /* HTTP status of the last attempt; 0: none */
  const char *last_error; /* "" when none */
  /* Shared journals (insert): 1 leases the row to this process, which
   * delivers it; 0 leaves it to whichever process claims it (ordered and
   * rate-limited webhooks: the claim keeps their rules across processes).
   * `ordered` says the claim must keep its ordering key's order. Ignored by
   * single-process journals. */
  int leased;
  int ordered;
  /* Shared journals (insert): the webhook's max_inflight and max_rps when
   * it was accepted (0: none), which the claim holds across processes. */
  uint32_t max_inflight;
  double max_rps;
} hd_delivery_row;

/* A change of state of a delivery already in the journal. */
typedef struct hd_delivery_update {
  const char *id;
  hd_delivery_state state;
  int attempts;
  int64_t next_ms;
  int64_t updated_ms;
  int last_status;
  const char *last_error;
} hd_delivery_update;

/* One attempt. (delivery_id, number) is unique. */
typedef struct hd_attempt_row {
  const char *delivery_id;
  int number; /* 1-based */
  int manual; /* made by Redeliver / Replay */
  int64_t started_ms;
  int64_t duration_ms;
  int http_status;
  const char *error; /* "" on success */
  const unsigned char *response_head;
  size_t response_head_len; /* at most HD_RESPONSE_HEAD_MAX */
} hd_attempt_row;

#define HD_RESPONSE_HEAD_MAX 1024

/* The health of one async webhook (handler id + route). Replaces the row
 * with the same (handler_id, route). */
typedef struct hd_endpoint_row {
  const char *handler_id;
  const char *route;
  int failures;             /* consecutive failed attempts */
  int64_t first_failure_ms; /* of this run of failures; 0: healthy */
  int64_t disabled_ms;      /* when it was disabled; 0: enabled */
} hd_endpoint_row;

/* What one commit writes, in one transaction: inserts (the journal sets
 * each row's seq), then updates, attempts and endpoint rows. An update of
 * an id that is not there is ignored (the delivery was pruned). */
typedef struct hd_journal_batch {
  hd_delivery_row *inserts;
  size_t n_inserts;
  const hd_delivery_update *updates;
  size_t n_updates;
  const hd_attempt_row *attempts;
  size_t n_attempts;
  const hd_endpoint_row *endpoints;
  size_t n_endpoints;
} hd_journal_batch;

/* ListDeliveries' filter. NULL/"" strings, state 0 and times 0 mean any. */
typedef struct hd_delivery_filter {
  const char *key;
  const char *handler_id;
  int state;
  int64_t since_ms;   /* created_ms >= since_ms */
  int64_t until_ms;   /* created_ms < until_ms */
  int64_t before_seq; /* seq < before_seq: the page cursor; 0: from the top */
  size_t limit;       /* rows at most; 0: no limit */
} hd_delivery_filter;

/* Row callbacks: a non-OK return stops the walk and is returned as is. */
typedef hd_err hd_delivery_row_fn(const hd_delivery_row *row, void *ud);
typedef hd_err hd_attempt_row_fn(const hd_attempt_row *row, void *ud);
typedef hd_err hd_endpoint_row_fn(const hd_endpoint_row *row, void *ud);

typedef struct hd_journal hd_journal;

typedef struct hd_journal_vtable {
  /* Writes the batch in one transaction, durable when it returns. */
  hd_err (*commit)(hd_journal *j, hd_journal_batch *b, char *msg,
                   size_t msg_size);
  /* The deliveries not yet finished (PENDING, IN_FLIGHT, FAILED), in seq
   * order, with their bodies. */
  hd_err (*load_pending)(hd_journal *j, hd_delivery_row_fn *fn, void *ud,
                         char *msg, size_t msg_size);
  /* Every endpoint row. */
  hd_err (*load_endpoints)(hd_journal *j, hd_endpoint_row_fn *fn, void *ud,
                           char *msg, size_t msg_size);
  /* The deliveries matching `f`, newest (highest seq) first; body and
   * headers may be left empty (NULL body, 0 length, ""). */
  hd_err (*list)(hd_journal *j, const hd_delivery_filter *f,
                 hd_delivery_row_fn *fn, void *ud, char *msg, size_t msg_size);
  /* One delivery with its body (row_fn once), then its attempts in number
   * order (att_fn may be NULL). HD_ENOTFOUND (no message) when no such id. */
  hd_err (*get)(hd_journal *j, const char *id, hd_delivery_row_fn *row_fn,
                hd_attempt_row_fn *att_fn, void *ud, char *msg,
                size_t msg_size);
  /* Deletes SUCCEEDED and DEAD deliveries (and their attempts) whose
   * updated_ms < before_ms; *pruned (may be NULL) gets how many. */
  hd_err (*prune)(hd_journal *j, int64_t before_ms, size_t *pruned, char *msg,
                  size_t msg_size);

  /* Shared journals only (several processes on one database, each
   * delivering what it leases; NULL otherwise). A lease lasts the journal's
   * lease time (its configuration) and names this process.
   * claim: leases up to `limit` due, unfinished deliveries that no live
   * lease holds, oldest due first (those of webhooks with max_inflight or
   * max_rps before the others, so a backlog without limits cannot starve
   * them), skipping rows another process is
   * claiming (FOR UPDATE SKIP LOCKED); an ordered delivery only when no
   * earlier delivery of its (handler, route, ordering key) is unfinished;
   * of a webhook with max_inflight, only while fewer of its deliveries
   * are leased; of one with max_rps, only as many as its shared token
   * bucket holds;
   * calls fn for each (with body and headers) after the claim committed.
   * renew: extends every lease this process holds.
   * reap: gives expired leases back (an in-flight state becomes pending),
   * and marks dead the unfinished deliveries of handlers no longer
   * registered; *reaped (may be NULL) gets how many leases came back.
   * release: gives back this process's lease on `id` (NULL: on all).
   * A commit's update of a leased delivery ends its lease. */
  hd_err (*claim)(hd_journal *j, int64_t now_ms, size_t limit,
                  hd_delivery_row_fn *fn, void *ud, char *msg, size_t msg_size);
  hd_err (*renew)(hd_journal *j, int64_t now_ms, char *msg, size_t msg_size);
  hd_err (*reap)(hd_journal *j, int64_t now_ms, size_t *reaped, char *msg,
                 size_t msg_size);
  hd_err (*release)(hd_journal *j, const char *id, char *msg, size_t msg_size);
} hd_journal_vtable;

/* A backend fills vt and impl. The journal lives as long as what made it
 * (the store: hd_store_close frees it). */
struct hd_journal {
  void *impl;
  const hd_journal_vtable *vt;
};

#endif
