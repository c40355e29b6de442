/*
 * webhook_failure.c - what a delivery that failed for good ran into, in
 * words: the host it went to, what the last attempt was waiting for, the
 * libcurl result; and the rate-limited failure log.
 *
 * Threads: a failure is described on the engine thread; the failure log
 * is written by whichever thread completes a failed job (a submitting one
 * too, when the engine is full), under the engine's fail_lock.
 */
#include "webhook_engine_internal.h"
#include "clock.h"

#include "handlerd/grpc_status_names.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Handlers whose failures are rate-limited one by one; past that, the
 * failures of the others share one counter. */
#define FAIL_LOG_MAX 1024
#define FAIL_LOG_WINDOW_NS                                                     \
  ((int64_t)HD_WEBHOOK_FAILURE_LOG_WINDOW_S * 1000000000)
/* "host:port" of a URL: a DNS name is at most 253 bytes. */
#define HOST_MAX 300

/* The failures of one handler within its log window. */
struct fail_entry {
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
};

/* ---- where a delivery goes -------------------------------------------------
 */

/* "host:port" of the job's URL (the port is the scheme's when the URL has
 * none): what messages and the log name, never the path, the query or a
 * user name. "?" when it does not parse (it did at registration). */
const char *hd_wh_delivery_host(delivery *d) {
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

/* The host part of hd_wh_delivery_host(), into `out`. */
static const char *delivery_host_name(delivery *d, char *out, size_t size) {
  const char *hp = hd_wh_delivery_host(d);
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

  snprintf(out, size, "%s %s", what[d->phase], hd_wh_delivery_host(d));
  return out;
}

/* Notes how far the attempt on d->easy got (before the handle goes). */
void hd_wh_note_phase(delivery *d) {
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
 * windows (hd_wh_fail_log_flush), stop() writes what is left.
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
void hd_wh_fail_log_flush_locked(hd_webhook_engine *e, int64_t now, int all) {
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

void hd_wh_fail_log_flush(hd_webhook_engine *e, int64_t now) {
  pthread_mutex_lock(&e->fail_lock);
  if ((e->fail_head != NULL && e->fail_head->window_end_ns <= now) ||
      (e->fail_overflow_end != 0 && e->fail_overflow_end <= now))
    hd_wh_fail_log_flush_locked(e, now, 0);
  pthread_mutex_unlock(&e->fail_lock);
}

/* Logs (or counts) the failed result `r` of `d`. */
void hd_wh_log_failure(hd_webhook_engine *e, delivery *d, const hd_result *r) {
  const char *id = d->job.handler_id[0] != '\0' ? d->job.handler_id : "?";
  const char *key = d->job.registry_key[0] != '\0' ? d->job.registry_key : "?";
  const char *msg = r->message != NULL ? r->message : "";
  const char *host = hd_wh_delivery_host(d);
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
    snprintf(reason, size, "timed out connecting to %s",
             hd_wh_delivery_host(d));
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
void hd_wh_complete_failure(delivery *d, CURLcode code, long status,
                            long os_errno, const char *why_stop) {
  hd_result *r = hd_results_at(d->results, 0);
  const char *plural = d->attempts == 1 ? "" : "s";
  char reason[CURL_ERROR_SIZE + HOST_MAX + 64];
  char note[160] = "";

  r->http_status = (int)status;
  if (why_stop != NULL)
    snprintf(note, sizeof(note), " (%s)", why_stop);
  if (d->addr_refused && code != CURLE_OK) {
    hd_wh_complete_error(
        d, HD_EHANDLER, 7,
        "address refused: %s is not an allowed address, after %d "
        "attempt%s%s",
        d->refused_addr, d->attempts, plural, note);
    return;
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    char waiting[HOST_MAX + 64];
    phase_text(d, waiting, sizeof(waiting));
    if (d->deadline_cut)
      hd_wh_complete_error(d, HD_ETIMEOUT, 4,
                           "deadline exceeded after %d attempt%s, %s",
                           d->attempts, plural, waiting);
    else
      hd_wh_complete_error(
          d, HD_ETIMEOUT, 4, "timeout (%ld ms) after %d attempt%s, %s%s",
          d->attempt_timeout_ms, d->attempts, plural, waiting, note);
    return;
  }
  if (code == CURLE_OK && status >= 300 && status < 400) {
    hd_wh_complete_error(d, HD_EHANDLER, hd_webhook_response_grpc_code(status),
                         "HTTP %ld redirect not followed after %d attempt%s%s",
                         status, d->attempts, plural, note);
    return;
  }
  if (code == CURLE_OK) {
    hd_wh_complete_error(d, HD_EHANDLER, hd_webhook_response_grpc_code(status),
                         "HTTP %ld after %d attempt%s%s", status, d->attempts,
                         plural, note);
    return;
  }
  if (code == CURLE_OUT_OF_MEMORY || d->resp.write_failed) {
    hd_wh_complete_error(d, HD_ENOMEM, 13, "out of memory after %d attempt%s",
                         d->attempts, plural);
    return;
  }
  describe_failure(d, code, os_errno, reason, sizeof(reason));
  hd_wh_complete_error(d, HD_EHANDLER, 14, "%s after %d attempt%s%s", reason,
                       d->attempts, plural, note);
}
