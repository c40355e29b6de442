/*
 * webhook_attempt.c - one attempt of a delivery: the easy handle and its
 * options, the headers and the signature made anew for each attempt, the
 * address check at connect time, and what an attempt's end means: success,
 * another attempt later, or the end of the delivery. All on the engine
 * thread (hd_wh_release_easy also in hd_webhook_engine_stop, after the join).
 */
#include "webhook_engine_internal.h"
#include "clock.h"

#include "metrics.h"
#include "webhook_response.h"
#include "webhook_retry.h"
#include "webhook_sign.h"
#include "webhook_url.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* A retry needs this much time before the deadline. */
#define MIN_ATTEMPT_MS 50
/* A longer Retry-After ends the delivery. */
#define RETRY_AFTER_MAX_MS 60000

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

/* ---- attempts
 * ------------------------------------------------------------------ */

static CURL *pool_get(hd_webhook_engine *e) {
  if (e->n_pool > 0)
    return e->pool[--e->n_pool];
  return curl_easy_init();
}

/* Takes the easy handle off the job and keeps it for the next attempt (its
 * connection stays in the multi handle's cache either way). */
void hd_wh_release_easy(hd_webhook_engine *e, delivery *d) {
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
  int64_t now = real_ns(), ts = now / 1000000000;
  char line[64 + HD_SIGNATURE_HEADER_MAX];
  char sig[HD_SIGNATURE_HEADER_MAX];
  hd_sign_keys keys = {d->job.key, d->job.key_len, d->job.prev_key,
                       d->job.prev_key_len, d->job.prev_until_ns};

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
    /* Both signatures during a rotation's overlap, decided per attempt:
     * a retry after the window carries the new one only. */
    if (hd_webhook_sign_header(
            &keys, now, d->job.msg_id, ts, hd_webhook_body_text(d->job.body),
            hd_webhook_body_len(d->job.body), sig, sizeof(sig)) != HD_OK)
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
void hd_wh_attempt_start(hd_webhook_engine *e, delivery *d, int64_t now) {
  long timeout = d->job.timeout_ms;
  CURLcode rc = CURLE_OK;
  CURL *h;

  d->deadline_cut = 0;
  if (d->deadline_ns != 0) {
    int64_t left_ms = (d->deadline_ns - now) / 1000000;
    if (left_ms < 1) {
      hd_wh_list_unlink(e, d);
      if (d->attempts == 0)
        hd_wh_complete_error(
            d, HD_ETIMEOUT, 4,
            "deadline exceeded after 0 attempts, waiting for the "
            "first attempt to %s",
            hd_wh_delivery_host(d));
      else
        hd_wh_complete_error(
            d, HD_ETIMEOUT, 4,
            "deadline exceeded after %d attempt%s, waiting to retry "
            "%s",
            d->attempts, d->attempts == 1 ? "" : "s", hd_wh_delivery_host(d));
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
    hd_wh_list_unlink(e, d);
    hd_wh_complete_error(d, HD_ENOMEM, 13, "out of memory starting an attempt");
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
    hd_wh_list_unlink(e, d);
    hd_wh_complete_error(d, HD_EIO, 13,
                         "cannot start a transfer (libcurl setup)");
    return;
  }
  hd_metrics_webhook_attempt(d->attempts > 0);
  d->attempts++;
}

/* An attempt ended: complete the job or schedule its next attempt. */
void hd_wh_attempt_done(hd_webhook_engine *e, delivery *d, CURLcode code) {
  long status = 0, os_errno = 0;
  const char *why_stop = NULL;
  int64_t now, delay_ms;

  curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(d->easy, CURLINFO_OS_ERRNO, &os_errno);
  hd_wh_note_phase(d);
  hd_wh_release_easy(e, d);
  if (code == CURLE_WRITE_ERROR && d->resp.truncated && !d->resp.write_failed)
    code = CURLE_OK; /* the body callback stopped at the size limit */
  if (code == CURLE_OK && status >= 200 && status < 300) {
    hd_wh_list_unlink(e, d);
    hd_wh_complete_ok(d, status);
    return;
  }
  /* A refused address will be refused again; a timeout cut to the deadline
   * leaves no time; the rest is the retry policy's call. */
  d->retryable = !d->addr_refused && !d->resp.write_failed &&
                 hd_retry_should((int)code, status);
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
  hd_wh_list_unlink(e, d);
  hd_wh_complete_failure(d, code, status, os_errno, why_stop);
}

/* The call's deadline came while an attempt runs, or waits in libcurl's
 * queue for a connection to its host (where libcurl's own timeout does not
 * run): end it now, so the call still answers in time. */
void hd_wh_attempt_cut_at_deadline(hd_webhook_engine *e, delivery *d) {
  hd_wh_note_phase(d);
  hd_wh_release_easy(e, d);
  d->deadline_cut = 1;
  hd_wh_list_unlink(e, d);
  hd_wh_complete_failure(d, CURLE_OPERATION_TIMEDOUT, 0, 0, NULL);
}
