/*
 * webhook_engine_internal.h - what the files of the delivery engine share:
 * the engine, a delivery (a job with the engine's own state), and the
 * functions that one file of the engine calls in another. Not for use
 * outside webhook/.
 *
 *   webhook_engine.c   the engine's life: start, stop, submit, the thread
 *                      loop, references; jobs and their completion
 *   webhook_attempt.c  one attempt: easy handle, headers and signature,
 *                      the address check, retry or not, the deadline cut
 *   webhook_failure.c  a failure in words, and the rate-limited failure log
 *   webhook_body.c     the shared request body
 */
#ifndef HD_WEBHOOK_ENGINE_INTERNAL_H
#define HD_WEBHOOK_ENGINE_INTERNAL_H

#include "webhook_engine.h"
#include "webhook_response.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Idle easy handles kept for reuse. */
#define POOL_MAX 8
/* Hash buckets of the failure log (webhook_failure.c). */
#define FAIL_LOG_BUCKETS 256

/* What an attempt that ran out of time was waiting for. */
typedef enum phase {
  PHASE_CONNECT = 0, /* name resolution and TCP connect */
  PHASE_TLS,         /* the TLS handshake */
  PHASE_RESPONSE,    /* the request is out (or going): the answer */
  PHASE_REST,        /* the answer began: the rest of it */
} phase;

typedef struct delivery {
  hd_webhook_job job; /* first: a job pointer is a delivery pointer */
  struct hd_webhook_engine *engine; /* set by submit; counts it in flight */
  struct delivery *prev, *next; /* the queue (next only) or the thread's list */
  hd_results *results;          /* allocated up front: completion cannot fail */
  int deny_private;
  int64_t start_ns;    /* CLOCK_MONOTONIC at submission */
  int64_t deadline_ns; /* CLOCK_MONOTONIC; 0: none */
  int64_t next_ns;     /* CLOCK_MONOTONIC time of the next attempt */
  int attempts;        /* attempts started */

  /* The attempt in flight (easy != NULL) or the last one. */
  CURL *easy;
  struct curl_slist *req_headers;
  long attempt_timeout_ms;
  int deadline_cut;         /* this attempt's timeout was cut to the deadline */
  hd_webhook_response resp; /* body (up to the limit), Retry-After */
  int addr_refused;
  char refused_addr[INET6_ADDRSTRLEN];
  char errbuf[CURL_ERROR_SIZE];
  phase phase;          /* where the last attempt was when it ended */
  int no_log;           /* a failure that is not the receiver's (shutdown) */
  int retryable;        /* the last attempt's failure is worth retrying */
  char *host;           /* "host:port" of the URL, made on first use; owned */
  size_t host_name_len; /* the length of its host part */
} delivery;

/* The failures of one handler within its log window (webhook_failure.c). */
typedef struct fail_entry fail_entry;

struct hd_webhook_engine {
  atomic_uint refs;
  atomic_int in_flight; /* submitted, not yet completed */
  hd_webhook_engine_config cfg;
  char *instance; /* cfg.instance points here */
  char *ca_file;  /* cfg.ca_file points here */

  pthread_mutex_t lock; /* guards queue and stopping */
  delivery *queue_head, *queue_tail;
  int stopping;

  /* The engine thread's (then hd_webhook_engine_stop's). */
  pthread_t thread;
  CURLM *multi;
  delivery *jobs;
  CURL *pool[POOL_MAX];
  int n_pool;
  uint64_t rng;

  /* The failure log's rate limit: any thread may complete a failed job. */
  pthread_mutex_t fail_lock;
  fail_entry *fail_buckets[FAIL_LOG_BUCKETS];
  fail_entry *fail_head, *fail_tail; /* by window end */
  int n_fail;
  int fail_closed;           /* stopped: nothing more is logged */
  uint64_t fail_overflow;    /* failures of handlers past FAIL_LOG_MAX */
  int64_t fail_overflow_end; /* the overflow counter's window; 0: none */
};

/* ---- webhook_engine.c ---------------------------------------------------- */

/* Fails the job with `err`, a gRPC code and a message, and completes it. */
void hd_wh_complete_error(delivery *d, hd_err err, int grpc_code,
                          const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Completes the job with the attempt's HTTP status and response. */
void hd_wh_complete_ok(delivery *d, long status);
/* Takes `d` off the thread's job list. */
void hd_wh_list_unlink(hd_webhook_engine *e, delivery *d);

/* ---- webhook_attempt.c --------------------------------------------------- */

void hd_wh_release_easy(hd_webhook_engine *e, delivery *d);
void hd_wh_attempt_start(hd_webhook_engine *e, delivery *d, int64_t now);
void hd_wh_attempt_done(hd_webhook_engine *e, delivery *d, CURLcode code);
void hd_wh_attempt_cut_at_deadline(hd_webhook_engine *e, delivery *d);

/* ---- webhook_failure.c --------------------------------------------------- */

const char *hd_wh_delivery_host(delivery *d);
void hd_wh_note_phase(delivery *d);
void hd_wh_complete_failure(delivery *d, CURLcode code, long status,
                            long os_errno, const char *why_stop);
void hd_wh_log_failure(hd_webhook_engine *e, delivery *d, const hd_result *r);
void hd_wh_fail_log_flush_locked(hd_webhook_engine *e, int64_t now, int all);
void hd_wh_fail_log_flush(hd_webhook_engine *e, int64_t now);

#endif
