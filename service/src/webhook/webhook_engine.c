/*
 * webhook_engine.c - delivers webhook jobs: one libcurl multi handle driven
 * by one thread.
 *
 * Threads: hd_webhook_engine_submit() runs on any thread; it only appends
 * the job to a queue under `lock` and wakes the loop (curl_multi_wakeup).
 * Everything else - the multi handle, the easy handles, the job list, the
 * retry timers - belongs to the engine thread until it has been joined,
 * and then to hd_webhook_engine_stop(). No lock is held during a transfer,
 * and every transfer is non-blocking inside the multi handle, so one slow
 * receiver only ever delays itself.
 *
 * A job lives in the thread's list from the moment the thread takes it off
 * the queue until it completes: either waiting for its next attempt
 * (easy == NULL, next_ns set) or in flight (easy != NULL).
 */
#include "webhook_engine_internal.h"
#include "clock.h"

#include "metrics.h"
#include "webhook_response.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* Longest sleep in curl_multi_poll. */
#define POLL_MAX_MS 1000
#define BUSY_POLL_MAX_MS 20
#define DEFAULT_MAX_HOST_CONNECTIONS 16
#define DEFAULT_BACKOFF_BASE_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000

/* ---- jobs -----------------------------------------------------------------
 */

hd_webhook_job *hd_webhook_job_new(void) {
  delivery *d = calloc(1, sizeof(*d));

  if (d == NULL)
    return NULL;
  d->results = hd_results_new();
  if (d->results == NULL || hd_results_append(d->results) == NULL) {
    hd_results_free(d->results);
    free(d);
    return NULL;
  }
  hd_webhook_response_init(&d->resp, 0); /* the limit comes with submit */
  return &d->job;
}

void hd_webhook_job_free(hd_webhook_job *job) {
  delivery *d = (delivery *)job;

  if (d == NULL)
    return;
  free(job->url);
  for (size_t i = 0; i < job->n_headers; i++)
    free(job->headers[i]);
  free(job->headers);
  hd_webhook_body_unref(job->body);
  explicit_bzero(job->key, sizeof(job->key));
  explicit_bzero(job->prev_key, sizeof(job->prev_key));
  free(d->host);
  curl_slist_free_all(d->req_headers);
  hd_webhook_response_free(&d->resp);
  hd_results_free(d->results);
  free(d);
}

/* ---- completion -------------------------------------------------------------
 */

/* Calls the job's completion with its result and frees the job. */
static void complete(delivery *d) {
  hd_result *r = hd_results_at(d->results, 0);
  hd_results *rs = d->results;
  int64_t took = mono_ns() - d->start_ns;

  memcpy(r->handler_id, d->job.handler_id, sizeof(r->handler_id));
  r->attempts = d->attempts;
  r->duration_ns = took > 0 ? took : 1;
  if (r->err != HD_OK && !d->no_log && d->engine != NULL)
    hd_wh_log_failure(d->engine, d, r);
  hd_metrics_webhook_delivery(r->err == HD_OK ? 0 : r->grpc_code,
                              r->duration_ns);
  if (d->job.outcome != NULL) {
    /* A delivery cut short by our shutdown was not the receiver's
     * failure: the outbox makes it again rather than count it. */
    d->job.outcome->attempted = d->attempts > 0 && !d->no_log;
    d->job.outcome->retryable = d->retryable;
    d->job.outcome->retry_after_ms = d->resp.retry_after_ms;
    d->job.outcome->head_len = 0;
    if (d->resp.body != NULL) {
      size_t n = d->resp.len < sizeof(d->job.outcome->head)
                     ? d->resp.len
                     : sizeof(d->job.outcome->head);
      memcpy(d->job.outcome->head, d->resp.body, n);
      d->job.outcome->head_len = n;
    }
  }
  d->results = NULL;
  if (d->engine != NULL)
    atomic_fetch_sub_explicit(&d->engine->in_flight, 1, memory_order_relaxed);
  d->job.done(rs, d->job.done_data);
  hd_webhook_job_free(&d->job);
}

void hd_wh_complete_error(delivery *d, hd_err err, int grpc_code,
                          const char *fmt, ...) {
  hd_result *r = hd_results_at(d->results, 0);
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  hd_result_set_error(r, err, "%s", msg);
  r->grpc_code = grpc_code;
  complete(d);
}

static void complete_shutdown(delivery *d) {
  d->no_log = 1; /* ours, not the receiver's: the log says we stop */
  hd_wh_complete_error(d, HD_EHANDLER, 14, "handlerd is shutting down");
}

void hd_wh_complete_ok(delivery *d, long status) {
  hd_result *r = hd_results_at(d->results, 0);

  r->http_status = (int)status;
  if (hd_webhook_response_to_result(&d->resp, r) != HD_OK) {
    hd_wh_complete_error(d, HD_ENOMEM, 13,
                         "out of memory storing the response");
    return;
  }
  complete(d);
}

/* ---- the thread
 * ------------------------------------------------------------------ */

void hd_wh_list_unlink(hd_webhook_engine *e, delivery *d) {
  if (d->prev != NULL)
    d->prev->next = d->next;
  else
    e->jobs = d->next;
  if (d->next != NULL)
    d->next->prev = d->prev;
  d->prev = d->next = NULL;
}

static int past_deadline(const delivery *d, int64_t now) {
  return d->easy != NULL && d->deadline_ns != 0 && d->deadline_ns <= now;
}

static void *engine_thread(void *arg) {
  hd_webhook_engine *e = arg;

  for (;;) {
    delivery *got, *d, *next;
    int64_t now, wait_ns = (int64_t)POLL_MAX_MS * 1000000;
    CURLMsg *msg;
    int running, left;

    pthread_mutex_lock(&e->lock);
    if (e->stopping) {
      pthread_mutex_unlock(&e->lock);
      break;
    }
    got = e->queue_head;
    e->queue_head = e->queue_tail = NULL;
    pthread_mutex_unlock(&e->lock);
    for (d = got; d != NULL; d = next) {
      next = d->next;
      d->prev = NULL;
      d->next = e->jobs;
      if (e->jobs != NULL)
        e->jobs->prev = d;
      e->jobs = d;
    }

    now = mono_ns();
    for (d = e->jobs; d != NULL; d = next) {
      next = d->next;
      if (d->easy == NULL && d->next_ns <= now)
        hd_wh_attempt_start(e, d, now);
      else if (past_deadline(d, now))
        hd_wh_attempt_cut_at_deadline(e, d);
    }

    curl_multi_perform(e->multi, &running);
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
      if (msg->msg != CURLMSG_DONE)
        continue;
      CURL *h = msg->easy_handle;
      CURLcode code = msg->data.result;
      char *priv = NULL;
      curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
      hd_wh_attempt_done(e, (delivery *)(void *)priv, code);
    }

    /* Sleep until libcurl has work (it lowers the timeout to its own
     * timers), a retry is due, or a submission wakes us. */
    now = mono_ns();
    hd_wh_fail_log_flush(e, now);
    for (d = e->jobs; d != NULL; d = d->next) {
      if (d->easy == NULL && d->next_ns - now < wait_ns)
        wait_ns = d->next_ns - now;
      if (d->easy != NULL && d->deadline_ns != 0 &&
          d->deadline_ns - now < wait_ns)
        wait_ns = d->deadline_ns - now;
    }
    /* While transfers run, wake at least every BUSY_POLL_MAX_MS: libcurl
     * 7.88 can leave a transfer queued for a connection (per-host cap)
     * without lowering the poll timeout, which stalled the last async
     * deliveries of a burst for the whole POLL_MAX_MS. */
    if (running > 0 && wait_ns > (int64_t)BUSY_POLL_MAX_MS * 1000000)
      wait_ns = (int64_t)BUSY_POLL_MAX_MS * 1000000;
    if (wait_ns < 0)
      wait_ns = 0;
    curl_multi_poll(e->multi, NULL, 0, (int)((wait_ns + 999999) / 1000000),
                    NULL);
  }
  return NULL;
}

/* ---- the engine
 * ------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void) {
  curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void hd_webhook_engine_config_init(hd_webhook_engine_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->max_host_connections = DEFAULT_MAX_HOST_CONNECTIONS;
  cfg->backoff_base_ms = DEFAULT_BACKOFF_BASE_MS;
  cfg->backoff_max_ms = DEFAULT_BACKOFF_MAX_MS;
  cfg->max_in_flight = HD_WEBHOOK_DEFAULT_MAX_IN_FLIGHT;
  cfg->max_response_bytes = HD_WEBHOOK_DEFAULT_MAX_RESPONSE;
}

static void engine_free(hd_webhook_engine *e) {
  pthread_mutex_destroy(&e->fail_lock);
  pthread_mutex_destroy(&e->lock);
  free(e->instance);
  free(e->ca_file);
  free(e);
}

hd_err hd_webhook_engine_start(const hd_webhook_engine_config *cfg,
                               hd_webhook_engine **out) {
  hd_webhook_engine *e;
  char host[256];

  if (cfg == NULL || out == NULL)
    return HD_EINVAL;
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK)
    return HD_EIO;
  e = calloc(1, sizeof(*e));
  if (e == NULL)
    return HD_ENOMEM;
  atomic_init(&e->refs, 1);
  e->cfg = *cfg;
  if (e->cfg.max_in_flight <= 0)
    e->cfg.max_in_flight = HD_WEBHOOK_DEFAULT_MAX_IN_FLIGHT;
  if (e->cfg.max_host_connections <= 0)
    e->cfg.max_host_connections = DEFAULT_MAX_HOST_CONNECTIONS;
  if (e->cfg.backoff_base_ms <= 0)
    e->cfg.backoff_base_ms = DEFAULT_BACKOFF_BASE_MS;
  if (e->cfg.backoff_max_ms < e->cfg.backoff_base_ms)
    e->cfg.backoff_max_ms = e->cfg.backoff_base_ms > DEFAULT_BACKOFF_MAX_MS
                                ? e->cfg.backoff_base_ms
                                : DEFAULT_BACKOFF_MAX_MS;
  if (cfg->instance != NULL && cfg->instance[0] != '\0') {
    e->instance = strdup(cfg->instance);
  } else {
    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
      snprintf(host, sizeof(host), "handlerd");
    host[sizeof(host) - 1] = '\0';
    e->instance = strdup(host);
  }
  if (e->instance == NULL) {
    free(e);
    return HD_ENOMEM;
  }
  e->cfg.instance = e->instance;
  if (cfg->ca_file != NULL && cfg->ca_file[0] != '\0') {
    e->ca_file = strdup(cfg->ca_file);
    if (e->ca_file == NULL) {
      free(e->instance);
      free(e);
      return HD_ENOMEM;
    }
  }
  e->cfg.ca_file = e->ca_file;
  if (getrandom(&e->rng, sizeof(e->rng), 0) != (ssize_t)sizeof(e->rng) ||
      e->rng == 0)
    e->rng = (uint64_t)mono_ns() | 1;
  pthread_mutex_init(&e->lock, NULL);
  pthread_mutex_init(&e->fail_lock, NULL);
  e->multi = curl_multi_init();
  if (e->multi == NULL) {
    engine_free(e);
    return HD_ENOMEM;
  }
  curl_multi_setopt(e->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                    e->cfg.max_host_connections);
  curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  /* libcurl's default cache holds 4 x the transfers attached right now, so
   * between bursts it closes idle keep-alive connections and the next burst
   * reconnects (measured: one new connection per ~30 deliveries). Keep a
   * full set per host for a good number of hosts instead. */
  curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS,
                    e->cfg.max_host_connections * HD_WEBHOOK_CACHED_HOSTS);
  if (pthread_create(&e->thread, NULL, engine_thread, e) != 0) {
    curl_multi_cleanup(e->multi);
    engine_free(e);
    return HD_EIO;
  }
  pthread_setname_np(e->thread, "hd-webhooks");
  *out = e;
  return HD_OK;
}

void hd_webhook_engine_stop(hd_webhook_engine *e) {
  delivery *d, *next;

  if (e == NULL)
    return;
  pthread_mutex_lock(&e->lock);
  e->stopping = 1;
  curl_multi_wakeup(e->multi);
  pthread_mutex_unlock(&e->lock);
  pthread_join(e->thread, NULL);

  /* The thread is gone: its jobs and the queue are ours. Nothing is
   * appended to the queue once `stopping` is set. */
  for (d = e->jobs; d != NULL; d = next) {
    next = d->next;
    hd_wh_release_easy(e, d);
    hd_wh_list_unlink(e, d);
    complete_shutdown(d);
  }
  for (d = e->queue_head; d != NULL; d = next) {
    next = d->next;
    complete_shutdown(d);
  }
  e->queue_head = e->queue_tail = NULL;
  while (e->n_pool > 0)
    curl_easy_cleanup(e->pool[--e->n_pool]);
  curl_multi_cleanup(e->multi);
  e->multi = NULL;
  /* What the failure log still counts is written now, not lost. */
  pthread_mutex_lock(&e->fail_lock);
  hd_wh_fail_log_flush_locked(e, mono_ns(), 1);
  e->fail_closed = 1;
  pthread_mutex_unlock(&e->fail_lock);
  hd_webhook_engine_unref(e);
}

void hd_webhook_engine_submit(hd_webhook_engine *e, hd_webhook_job *job) {
  delivery *d = (delivery *)job;
  int64_t now = mono_ns();

  d->start_ns = now;
  d->next_ns = now;
  d->deny_private = e->cfg.deny_private;
  hd_webhook_response_init(&d->resp, e->cfg.max_response_bytes); /* empty */
  d->engine = e;
  if (atomic_fetch_add_explicit(&e->in_flight, 1, memory_order_relaxed) >=
      e->cfg.max_in_flight) {
    hd_wh_complete_error(d, HD_EBUSY, 8,
                         "not sent: %d webhook deliveries in flight, the limit "
                         "(--max-webhook-inflight)",
                         e->cfg.max_in_flight);
    return;
  }
  if (job->deadline_ns != 0) {
    int64_t left = job->deadline_ns - real_ns();
    d->deadline_ns = now + (left > 0 ? left : 0);
    if (d->deadline_ns == 0)
      d->deadline_ns = 1; /* 0 means "none" */
  }
  d->next = NULL;
  pthread_mutex_lock(&e->lock);
  if (e->stopping) {
    pthread_mutex_unlock(&e->lock);
    complete_shutdown(d);
    return;
  }
  int was_empty = e->queue_tail == NULL;
  if (e->queue_tail != NULL)
    e->queue_tail->next = d;
  else
    e->queue_head = d;
  e->queue_tail = d;
  /* The loop takes the whole queue at once, so only the first job of a
   * batch needs to wake it: a set of K webhooks costs one wakeup, not K.
   * Under the lock: stop() cannot free the multi handle meanwhile. */
  if (was_empty)
    curl_multi_wakeup(e->multi);
  pthread_mutex_unlock(&e->lock);
}

hd_webhook_engine *hd_webhook_engine_ref(hd_webhook_engine *e) {
  if (e != NULL)
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
  return e;
}

void hd_webhook_engine_unref(hd_webhook_engine *e) {
  if (e == NULL)
    return;
  if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
    engine_free(e);
}

int hd_webhook_engine_in_flight(const hd_webhook_engine *e) {
  return atomic_load_explicit(&e->in_flight, memory_order_relaxed);
}

const hd_webhook_engine_config *
hd_webhook_engine_config_of(const hd_webhook_engine *e) {
  return &e->cfg;
}
