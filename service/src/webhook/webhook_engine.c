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
#include "webhook_engine.h"
#include "clock.h"

#include "handlerd/grpc_status_names.h"
#include "metrics.h"
#include "webhook_response.h"
#include "webhook_retry.h"
#include "webhook_sign.h"
#include "webhook_url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Idle easy handles kept for reuse. */
#define POOL_MAX 8
/* Longest sleep in curl_multi_poll. */
#define POLL_MAX_MS 1000
/* A retry needs this much time before the deadline. */
#define MIN_ATTEMPT_MS 50
/* A longer Retry-After ends the delivery. */
#define RETRY_AFTER_MAX_MS 60000
#define DEFAULT_MAX_HOST_CONNECTIONS 16
#define DEFAULT_BACKOFF_BASE_MS 100
#define DEFAULT_BACKOFF_MAX_MS 10000
/* Handlers whose failures are rate-limited one by one; past that, the
 * failures of the others share one counter. */
#define FAIL_LOG_MAX 1024
#define FAIL_LOG_BUCKETS 256
#define FAIL_LOG_WINDOW_NS                                                     \
  ((int64_t)HD_WEBHOOK_FAILURE_LOG_WINDOW_S * 1000000000)
/* "host:port" of a URL: a DNS name is at most 253 bytes. */
#define HOST_MAX 300

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
  char *host;           /* "host:port" of the URL, made on first use; owned */
  size_t host_name_len; /* the length of its host part */
} delivery;

/* The failures of one handler within its log window. */
typedef struct fail_entry {
  struct fail_entry *next;  /* the window list, oldest window first */
  struct fail_entry *chain; /* the hash bucket */
  int64_t window_end_ns;    /* CLOCK_MONOTONIC */
  uint64_t suppressed;      /* failures in the window not logged */
  char handler_id[HD_HANDLER_ID_MAX + 1];
  /* The last suppressed failure, for the summary line. */
  char key[HD_KEY_MAX + 1];
  char host[HOST_MAX];
  int attempts, http_status, code;
  char message[256];
} fail_entry;

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

/* ---- bodies ------------------------------------------------------------- */

struct hd_webhook_body {
  atomic_uint refs;
  size_t len;
  char *text;
};

hd_webhook_body *hd_webhook_body_take(char *text) {
  hd_webhook_body *b;

  if (text == NULL)
    return NULL;
  b = malloc(sizeof(*b));
  if (b == NULL) {
    free(text);
    return NULL;
  }
  atomic_init(&b->refs, 1);
  b->len = strlen(text);
  b->text = text;
  return b;
}

hd_webhook_body *hd_webhook_body_ref(hd_webhook_body *b) {
  /* relaxed: the caller already holds a reference. */
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}

void hd_webhook_body_unref(hd_webhook_body *b) {
  if (b == NULL)
    return;
  /* acq_rel: the thread that frees sees every use by the others. */
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
    return;
  free(b->text);
  free(b);
}

const char *hd_webhook_body_text(const hd_webhook_body *b) {
  return b->text;
}

size_t hd_webhook_body_len(const hd_webhook_body *b) {
  return b->len;
}

/* ---- jobs ---------------------------------------------------------------- */

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
  free(d->host);
  curl_slist_free_all(d->req_headers);
  hd_webhook_response_free(&d->resp);
  hd_results_free(d->results);
  free(d);
}

/* ---- where a delivery goes -------------------------------------------------
 */

/* "host:port" of the job's URL (the port is the scheme's when the URL has
 * none): what messages and the log name, never the path, the query or a
 * user name. "?" when it does not parse (it did at registration). */
static const char *delivery_host(delivery *d) {
  CURLU *u;
  char *host = NULL, *port = NULL;

  if (d->host != NULL)
    return d->host;
  u = curl_url();
  if (u != NULL && curl_url_set(u, CURLUPART_URL, d->job.url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    if (asprintf(&d->host, "%s%s%s", host, port ? ":" : "", port ? port : "") <
        0)
      d->host = NULL;
    else
      d->host_name_len = strlen(host);
  }
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  return d->host != NULL ? d->host : "?";
}

/* The host part of delivery_host(), into `out`. */
static const char *delivery_host_name(delivery *d, char *out, size_t size) {
  const char *hp = delivery_host(d);
  size_t n = d->host != NULL ? d->host_name_len : strlen(hp);

  snprintf(out, size, "%.*s", (int)n, hp);
  return out;
}

/* "waiting for the response from host:port", ...: what the last attempt
 * was waiting for when it ended. */
static const char *phase_text(delivery *d, char *out, size_t size) {
  static const char *const what[] = {
      [PHASE_CONNECT] = "waiting to connect to",
      [PHASE_TLS] = "waiting for the TLS handshake with",
      [PHASE_RESPONSE] = "waiting for the response from",
      [PHASE_REST] = "waiting for the rest of the response from",
  };

  snprintf(out, size, "%s %s", what[d->phase], delivery_host(d));
  return out;
}

/* Notes how far the attempt on d->easy got (before the handle goes). */
static void note_phase(delivery *d) {
  curl_off_t connect = 0, app = 0, pre = 0, start = 0;

  curl_easy_getinfo(d->easy, CURLINFO_CONNECT_TIME_T, &connect);
  curl_easy_getinfo(d->easy, CURLINFO_APPCONNECT_TIME_T, &app);
  curl_easy_getinfo(d->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
  curl_easy_getinfo(d->easy, CURLINFO_STARTTRANSFER_TIME_T, &start);
  if (start > 0)
    d->phase = PHASE_REST;
  else if (pre > 0 || app > 0)
    d->phase = PHASE_RESPONSE;
  else if (connect > 0 && strncasecmp(d->job.url, "https:", 6) == 0)
    d->phase = PHASE_TLS;
  else
    d->phase = PHASE_CONNECT;
}

/* ---- the failure log --------------------------------------------------------
 *
 * A delivery that fails for good is one warn line, but a dead receiver must
 * not flood the log: per handler, the first failure is logged and starts a
 * window of FAIL_LOG_WINDOW_NS; the failures within it are counted, and at
 * its end one line gives their number and the last one (and starts the next
 * window). Entries live while their window does; the engine thread ends
 * windows (fail_log_flush), stop() writes what is left.
 */

static unsigned fail_bucket(const char *id) {
  unsigned h = 2166136261u; /* FNV-1a */

  for (const unsigned char *p = (const unsigned char *)id; *p; p++)
    h = (h ^ *p) * 16777619u;
  return h % FAIL_LOG_BUCKETS;
}

static void fail_summary(const fail_entry *f, double seconds) {
  hd_log(HD_LOG_WARN,
         "webhook deliveries failed: key=\"%s\" handler=%s host=%s: %" PRIu64
         " more in the last %.1f s (not logged one by one); the last: "
         "attempts=%d http_status=%d code=%s error=\"%s\"",
         f->key, f->handler_id, f->host, f->suppressed, seconds, f->attempts,
         f->http_status, hd_grpc_status_name(f->code), f->message);
}

/* Ends the windows that are over at `now` (all of them with `all`).
 * Under fail_lock. */
static void fail_log_flush_locked(hd_webhook_engine *e, int64_t now, int all) {
  while (e->fail_head != NULL && (all || e->fail_head->window_end_ns <= now)) {
    fail_entry *f = e->fail_head;
    int64_t began = f->window_end_ns - FAIL_LOG_WINDOW_NS;

    e->fail_head = f->next;
    if (e->fail_head == NULL)
      e->fail_tail = NULL;
    f->next = NULL;
    if (f->suppressed > 0) {
      fail_summary(f, (double)((all ? now : f->window_end_ns) - began) / 1e9);
      if (!all) { /* the summary line starts the next window */
        f->suppressed = 0;
        f->window_end_ns = now + FAIL_LOG_WINDOW_NS;
        if (e->fail_tail != NULL)
          e->fail_tail->next = f;
        else
          e->fail_head = f;
        e->fail_tail = f;
        continue;
      }
    }
    for (fail_entry **pp = &e->fail_buckets[fail_bucket(f->handler_id)];
         *pp != NULL; pp = &(*pp)->chain) {
      if (*pp == f) {
        *pp = f->chain;
        break;
      }
    }
    e->n_fail--;
    free(f);
  }
  if (e->fail_overflow_end != 0 && (all || e->fail_overflow_end <= now)) {
    if (e->fail_overflow > 0)
      hd_log(HD_LOG_WARN,
             "webhook deliveries failed: %" PRIu64 " more failures of other "
             "handlers not logged (more than %d handlers failing at once)",
             e->fail_overflow, FAIL_LOG_MAX);
    e->fail_overflow = 0;
    e->fail_overflow_end = 0;
  }
}

static void fail_log_flush(hd_webhook_engine *e, int64_t now) {
  pthread_mutex_lock(&e->fail_lock);
  if ((e->fail_head != NULL && e->fail_head->window_end_ns <= now) ||
      (e->fail_overflow_end != 0 && e->fail_overflow_end <= now))
    fail_log_flush_locked(e, now, 0);
  pthread_mutex_unlock(&e->fail_lock);
}

/* Logs (or counts) the failed result `r` of `d`. */
static void log_failure(hd_webhook_engine *e, delivery *d, const hd_result *r) {
  const char *id = d->job.handler_id[0] != '\0' ? d->job.handler_id : "?";
  const char *key = d->job.registry_key[0] != '\0' ? d->job.registry_key : "?";
  const char *msg = r->message != NULL ? r->message : "";
  const char *host = delivery_host(d);
  int64_t now = mono_ns();
  unsigned b = fail_bucket(id);
  fail_entry *f;

  pthread_mutex_lock(&e->fail_lock);
  if (e->fail_closed) {
    pthread_mutex_unlock(&e->fail_lock);
    return;
  }
  for (f = e->fail_buckets[b]; f != NULL; f = f->chain) {
    if (strcmp(f->handler_id, id) == 0)
      break;
  }
  if (f != NULL) { /* within its window: count it */
    f->suppressed++;
    snprintf(f->key, sizeof(f->key), "%s", key);
    snprintf(f->host, sizeof(f->host), "%s", host);
    snprintf(f->message, sizeof(f->message), "%s", msg);
    f->attempts = r->attempts;
    f->http_status = r->http_status;
    f->code = r->grpc_code;
    pthread_mutex_unlock(&e->fail_lock);
    return;
  }
  if (e->n_fail >= FAIL_LOG_MAX || (f = calloc(1, sizeof(*f))) == NULL) {
    /* Too many handlers failing: they share one window and counter. */
    if (e->fail_overflow_end != 0) {
      e->fail_overflow++;
      pthread_mutex_unlock(&e->fail_lock);
      return;
    }
    e->fail_overflow_end = now + FAIL_LOG_WINDOW_NS;
  } else {
    snprintf(f->handler_id, sizeof(f->handler_id), "%s", id);
    f->window_end_ns = now + FAIL_LOG_WINDOW_NS;
    f->chain = e->fail_buckets[b];
    e->fail_buckets[b] = f;
    if (e->fail_tail != NULL)
      e->fail_tail->next = f;
    else
      e->fail_head = f;
    e->fail_tail = f;
    e->n_fail++;
  }
  hd_log(HD_LOG_WARN,
         "webhook delivery failed: key=\"%s\" handler=%s host=%s attempts=%d "
         "http_status=%d code=%s error=\"%s\"",
         key, id, host, r->attempts, r->http_status,
         hd_grpc_status_name(r->grpc_code), msg);
  pthread_mutex_unlock(&e->fail_lock);
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
    log_failure(d->engine, d, r);
  hd_metrics_webhook_delivery(r->err == HD_OK ? 0 : r->grpc_code,
                              r->duration_ns);
  d->results = NULL;
  if (d->engine != NULL)
    atomic_fetch_sub_explicit(&d->engine->in_flight, 1, memory_order_relaxed);
  d->job.done(rs, d->job.done_data);
  hd_webhook_job_free(&d->job);
}

static void complete_error(delivery *d, hd_err err, int grpc_code,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void complete_error(delivery *d, hd_err err, int grpc_code,
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
  complete_error(d, HD_EHANDLER, 14, "handlerd is shutting down");
}

/* ---- connecting ------------------------------------------------------------
 */

/* Refuses connections to addresses the policy forbids; the name was
 * resolved by now, so this catches names that point somewhere forbidden. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose,
                                 struct curl_sockaddr *a) {
  delivery *d = ud;

  if (purpose == CURLSOCKTYPE_IPCXN &&
      !hd_addr_allowed(&a->addr, d->deny_private)) {
    const void *src = NULL;

    d->addr_refused = 1;
    if (a->family == AF_INET)
      src = &((const struct sockaddr_in *)(const void *)&a->addr)->sin_addr;
    else if (a->family == AF_INET6)
      src = &((const struct sockaddr_in6 *)(const void *)&a->addr)->sin6_addr;
    if (src == NULL || inet_ntop(a->family, src, d->refused_addr,
                                 sizeof(d->refused_addr)) == NULL)
      snprintf(d->refused_addr, sizeof(d->refused_addr), "?");
    return CURL_SOCKET_BAD;
  }
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* ---- outcome
 * ----------------------------------------------------------------- */

/* "connection refused" from "Connection refused": messages continue a
 * sentence, so lower the first letter of an ordinary word. */
/* "Connection refused" -> "connection refused", but "OpenSSL ..." and
 * "SSL ..." keep their capitals; trailing blanks go. */
static void tidy_reason(char *s) {
  size_t n = strlen(s), word = strcspn(s, " /:");
  int caps_inside = 0;

  while (n > 0 && isspace((unsigned char)s[n - 1]))
    s[--n] = '\0';
  for (size_t i = 1; i < word; i++)
    caps_inside |= isupper((unsigned char)s[i]) != 0;
  if (s[0] != '\0' && isupper((unsigned char)s[0]) && !caps_inside)
    s[0] = (char)tolower((unsigned char)s[0]);
}

/* 1 for the libcurl results of a TLS handshake that did not complete. */
static int tls_failure(CURLcode code) {
  switch (code) {
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
    return 1;
  default:
    return 0;
  }
}

/* What a transport failure was, in words that tell the cases apart:
 * "connection refused", "no such host: NAME could not be resolved",
 * "TLS handshake failed: ...", "timed out connecting to HOST:PORT",
 * "connection reset by peer", else what libcurl says. */
static void describe_failure(delivery *d, CURLcode code, long os_errno,
                             char *reason, size_t size) {
  char name[HOST_MAX];
  const char *detail =
      d->errbuf[0] != '\0' ? d->errbuf : curl_easy_strerror(code);

  if (code == CURLE_COULDNT_RESOLVE_HOST) {
    snprintf(reason, size, "no such host: %s could not be resolved",
             delivery_host_name(d, name, sizeof(name)));
    return;
  }
  if (tls_failure(code)) {
    snprintf(reason, size, "TLS handshake failed: %s", detail);
    tidy_reason(reason);
    return;
  }
  if (code == CURLE_SSL_CACERT_BADFILE) {
    snprintf(reason, size, "cannot use the CA certificates: %s", detail);
    return;
  }
  if (code == CURLE_COULDNT_CONNECT && os_errno == ETIMEDOUT)
    snprintf(reason, size, "timed out connecting to %s", delivery_host(d));
  else if ((code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR) &&
           os_errno == ECONNRESET)
    snprintf(reason, size, "connection reset by peer");
  else if (code == CURLE_COULDNT_CONNECT && os_errno != 0)
    snprintf(reason, size, "%s", strerror((int)os_errno));
  else
    snprintf(reason, size, "%s", detail);
  tidy_reason(reason);
}

/* Fails the job with what the last attempt ran into. `why_stop` (may be
 * NULL) says why there were fewer attempts than allowed. */
static void complete_failure(delivery *d, CURLcode code, long status,
                             long os_errno, const char *why_stop) {
  hd_result *r = hd_results_at(d->results, 0);
  const char *plural = d->attempts == 1 ? "" : "s";
  char reason[CURL_ERROR_SIZE + HOST_MAX + 64];
  char note[160] = "";

  r->http_status = (int)status;
  if (why_stop != NULL)
    snprintf(note, sizeof(note), " (%s)", why_stop);
  if (d->addr_refused && code != CURLE_OK) {
    complete_error(d, HD_EHANDLER, 7,
                   "address refused: %s is not an allowed address, after %d "
                   "attempt%s%s",
                   d->refused_addr, d->attempts, plural, note);
    return;
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    char waiting[HOST_MAX + 64];
    phase_text(d, waiting, sizeof(waiting));
    if (d->deadline_cut)
      complete_error(d, HD_ETIMEOUT, 4,
                     "deadline exceeded after %d attempt%s, %s", d->attempts,
                     plural, waiting);
    else
      complete_error(d, HD_ETIMEOUT, 4,
                     "timeout (%ld ms) after %d attempt%s, %s%s",
                     d->attempt_timeout_ms, d->attempts, plural, waiting, note);
    return;
  }
  if (code == CURLE_OK && status >= 300 && status < 400) {
    complete_error(d, HD_EHANDLER, hd_webhook_response_grpc_code(status),
                   "HTTP %ld redirect not followed after %d attempt%s%s",
                   status, d->attempts, plural, note);
    return;
  }
  if (code == CURLE_OK) {
    complete_error(d, HD_EHANDLER, hd_webhook_response_grpc_code(status),
                   "HTTP %ld after %d attempt%s%s", status, d->attempts, plural,
                   note);
    return;
  }
  if (code == CURLE_OUT_OF_MEMORY || d->resp.write_failed) {
    complete_error(d, HD_ENOMEM, 13, "out of memory after %d attempt%s",
                   d->attempts, plural);
    return;
  }
  describe_failure(d, code, os_errno, reason, sizeof(reason));
  complete_error(d, HD_EHANDLER, 14, "%s after %d attempt%s%s", reason,
                 d->attempts, plural, note);
}

static void complete_ok(delivery *d, long status) {
  hd_result *r = hd_results_at(d->results, 0);

  r->http_status = (int)status;
  if (hd_webhook_response_to_result(&d->resp, r) != HD_OK) {
    complete_error(d, HD_ENOMEM, 13, "out of memory storing the response");
    return;
  }
  complete(d);
}

/* ---- attempts
 * ------------------------------------------------------------------ */

static void list_unlink(hd_webhook_engine *e, delivery *d) {
  if (d->prev != NULL)
    d->prev->next = d->next;
  else
    e->jobs = d->next;
  if (d->next != NULL)
    d->next->prev = d->prev;
  d->prev = d->next = NULL;
}

static CURL *pool_get(hd_webhook_engine *e) {
  if (e->n_pool > 0)
    return e->pool[--e->n_pool];
  return curl_easy_init();
}

/* Takes the easy handle off the job and keeps it for the next attempt (its
 * connection stays in the multi handle's cache either way). */
static void release_easy(hd_webhook_engine *e, delivery *d) {
  if (d->easy == NULL)
    return;
  curl_multi_remove_handle(e->multi, d->easy);
  if (e->n_pool < POOL_MAX) {
    curl_easy_reset(d->easy);
    e->pool[e->n_pool++] = d->easy;
  } else {
    curl_easy_cleanup(d->easy);
  }
  d->easy = NULL;
  curl_slist_free_all(d->req_headers);
  d->req_headers = NULL;
}

/* This attempt's header list: the job's fixed headers, then the timestamp
 * and the signature, which change with every attempt. NULL on ENOMEM. */
static struct curl_slist *attempt_headers(delivery *d) {
  struct curl_slist *list = NULL, *l;
  int64_t ts = real_ns() / 1000000000;
  char line[64 + HD_SIGNATURE_MAX];
  char sig[HD_SIGNATURE_MAX];

  for (size_t i = 0; i < d->job.n_headers; i++) {
    if ((l = curl_slist_append(list, d->job.headers[i])) == NULL)
      goto fail;
    list = l;
  }
  snprintf(line, sizeof(line), "webhook-timestamp: %" PRId64, ts);
  if ((l = curl_slist_append(list, line)) == NULL)
    goto fail;
  list = l;
  if (d->job.key_len > 0) {
    if (hd_webhook_sign(d->job.key, d->job.key_len, d->job.msg_id, ts,
                        hd_webhook_body_text(d->job.body),
                        hd_webhook_body_len(d->job.body), sig,
                        sizeof(sig)) != HD_OK)
      goto fail;
    snprintf(line, sizeof(line), "webhook-signature: %s", sig);
    if ((l = curl_slist_append(list, line)) == NULL)
      goto fail;
    list = l;
  }
  /* No "Expect: 100-continue" round trip before larger bodies. */
  if ((l = curl_slist_append(list, "Expect:")) == NULL)
    goto fail;
  return l;
fail:
  curl_slist_free_all(list);
  return NULL;
}

/* Starts the next attempt, or completes the job when it cannot start. */
static void attempt_start(hd_webhook_engine *e, delivery *d, int64_t now) {
  long timeout = d->job.timeout_ms;
  CURLcode rc = CURLE_OK;
  CURL *h;

  d->deadline_cut = 0;
  if (d->deadline_ns != 0) {
    int64_t left_ms = (d->deadline_ns - now) / 1000000;
    if (left_ms < 1) {
      list_unlink(e, d);
      if (d->attempts == 0)
        complete_error(d, HD_ETIMEOUT, 4,
                       "deadline exceeded after 0 attempts, waiting for the "
                       "first attempt to %s",
                       delivery_host(d));
      else
        complete_error(d, HD_ETIMEOUT, 4,
                       "deadline exceeded after %d attempt%s, waiting to retry "
                       "%s",
                       d->attempts, d->attempts == 1 ? "" : "s",
                       delivery_host(d));
      return;
    }
    if (left_ms < timeout) {
      timeout = (long)left_ms;
      d->deadline_cut = 1;
    }
  }
  d->attempt_timeout_ms = timeout;
  hd_webhook_response_reset(&d->resp);
  d->addr_refused = 0;
  d->errbuf[0] = '\0';
  d->req_headers = attempt_headers(d);
  h = pool_get(e);
  if (d->req_headers == NULL || h == NULL) {
    if (h != NULL)
      curl_easy_cleanup(h);
    list_unlink(e, d);
    complete_error(d, HD_ENOMEM, 13, "out of memory starting an attempt");
    return;
  }
  rc |= curl_easy_setopt(h, CURLOPT_URL, d->job.url);
  rc |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  rc |= curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  rc |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  rc |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  /* The environment's proxy would take the connection past the address
   * policy: webhooks always go direct. */
  rc |= curl_easy_setopt(h, CURLOPT_PROXY, "");
  rc |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout);
  rc |= curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
  rc |= curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, d);
  rc |= curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* Waiting for a connection that may multiplex only pays over https (h2);
   * for http it would queue every delivery to a host behind a first one
   * that hangs. */
  rc |= curl_easy_setopt(h, CURLOPT_PIPEWAIT,
                         strncasecmp(d->job.url, "https:", 6) == 0 ? 1L : 0L);
  if (e->cfg.ca_file != NULL)
    rc |= curl_easy_setopt(h, CURLOPT_CAINFO, e->cfg.ca_file);
  /* Debian's libcurl also sets a CA directory by default, which turns off
   * its CA cache: every new TLS connection would re-read the bundle on this
   * thread (60-190 ms, delaying every other webhook). The bundle alone is
   * the same trust. */
  rc |= curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
  rc |= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  rc |= curl_easy_setopt(h, CURLOPT_POST, 1L);
  rc |= curl_easy_setopt(h, CURLOPT_POSTFIELDS,
                         hd_webhook_body_text(d->job.body));
  rc |= curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)hd_webhook_body_len(d->job.body));
  rc |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, d->req_headers);
  rc |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, hd_webhook_response_on_body);
  rc |= curl_easy_setopt(h, CURLOPT_WRITEDATA, &d->resp);
  rc |= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION,
                         hd_webhook_response_on_header);
  rc |= curl_easy_setopt(h, CURLOPT_HEADERDATA, &d->resp);
  rc |= curl_easy_setopt(h, CURLOPT_ERRORBUFFER, d->errbuf);
  rc |= curl_easy_setopt(h, CURLOPT_PRIVATE, d);
  d->easy = h;
  if (rc != CURLE_OK || curl_multi_add_handle(e->multi, h) != CURLM_OK) {
    curl_easy_cleanup(h);
    d->easy = NULL;
    curl_slist_free_all(d->req_headers);
    d->req_headers = NULL;
    list_unlink(e, d);
    complete_error(d, HD_EIO, 13, "cannot start a transfer (libcurl setup)");
    return;
  }
  hd_metrics_webhook_attempt(d->attempts > 0);
  d->attempts++;
}

/* An attempt ended: complete the job or schedule its next attempt. */
static void attempt_done(hd_webhook_engine *e, delivery *d, CURLcode code) {
  long status = 0, os_errno = 0;
  const char *why_stop = NULL;
  int64_t now, delay_ms;

  curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(d->easy, CURLINFO_OS_ERRNO, &os_errno);
  note_phase(d);
  release_easy(e, d);
  if (code == CURLE_WRITE_ERROR && d->resp.truncated && !d->resp.write_failed)
    code = CURLE_OK; /* the body callback stopped at the size limit */
  if (code == CURLE_OK && status >= 200 && status < 300) {
    list_unlink(e, d);
    complete_ok(d, status);
    return;
  }
  /* A refused address will be refused again; a timeout cut to the deadline
   * leaves no time; the rest is the retry policy's call. */
  if (d->addr_refused || d->resp.write_failed ||
      (code == CURLE_OPERATION_TIMEDOUT && d->deadline_cut) ||
      !hd_retry_should((int)code, status) || d->attempts >= d->job.max_attempts)
    goto fail;
  delay_ms = hd_retry_backoff_ms(d->attempts + 1, e->cfg.backoff_base_ms,
                                 e->cfg.backoff_max_ms, &e->rng);
  if (d->resp.retry_after_ms > RETRY_AFTER_MAX_MS) {
    why_stop = "Retry-After is more than 60 s away";
    goto fail;
  }
  if (d->resp.retry_after_ms > delay_ms)
    delay_ms = d->resp.retry_after_ms;
  now = mono_ns();
  if (d->deadline_ns != 0 &&
      now + (delay_ms + MIN_ATTEMPT_MS) * 1000000 > d->deadline_ns) {
    why_stop = "no time left for another attempt before the deadline";
    goto fail;
  }
  d->next_ns = now + delay_ms * 1000000;
  hd_log(HD_LOG_DEBUG,
         "webhook %s: attempt %d failed (curl %d, HTTP %ld), "
         "retrying in %" PRId64 " ms",
         d->job.handler_id, d->attempts, (int)code, status, delay_ms);
  return;
fail:
  list_unlink(e, d);
  complete_failure(d, code, status, os_errno, why_stop);
}

/* The call's deadline came while an attempt runs, or waits in libcurl's
 * queue for a connection to its host (where libcurl's own timeout does not
 * run): end it now, so the call still answers in time. */
static void attempt_cut_at_deadline(hd_webhook_engine *e, delivery *d) {
  note_phase(d);
  release_easy(e, d);
  d->deadline_cut = 1;
  list_unlink(e, d);
  complete_failure(d, CURLE_OPERATION_TIMEDOUT, 0, 0, NULL);
}

static int past_deadline(const delivery *d, int64_t now) {
  return d->easy != NULL && d->deadline_ns != 0 && d->deadline_ns <= now;
}

/* ---- the thread
 * ------------------------------------------------------------------ */

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
        attempt_start(e, d, now);
      else if (past_deadline(d, now))
        attempt_cut_at_deadline(e, d);
    }

    curl_multi_perform(e->multi, &running);
    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
      if (msg->msg != CURLMSG_DONE)
        continue;
      CURL *h = msg->easy_handle;
      CURLcode code = msg->data.result;
      char *priv = NULL;
      curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
      attempt_done(e, (delivery *)(void *)priv, code);
    }

    /* Sleep until libcurl has work (it lowers the timeout to its own
     * timers), a retry is due, or a submission wakes us. */
    now = mono_ns();
    fail_log_flush(e, now);
    for (d = e->jobs; d != NULL; d = d->next) {
      if (d->easy == NULL && d->next_ns - now < wait_ns)
        wait_ns = d->next_ns - now;
      if (d->easy != NULL && d->deadline_ns != 0 &&
          d->deadline_ns - now < wait_ns)
        wait_ns = d->deadline_ns - now;
    }
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
    release_easy(e, d);
    list_unlink(e, d);
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
  fail_log_flush_locked(e, mono_ns(), 1);
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
    complete_error(d, HD_EBUSY, 8,
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
