/*
 * webhook.c - the "webhook" handler kind and its factory.
 *
 * handle() turns the event into a CloudEvent (structured or binary mode),
 * copies everything the delivery needs into a job and gives the job to the
 * engine (webhook_engine.c), which completes it from its own thread. The
 * event is not touched after handle() returns.
 */
#include "webhook_kind.h"
#include "cloudevents.h"
#include "errmsg.h"
#include "webhook_engine.h"
#include "webhook_sign.h"
#include "webhook_url.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HD_WEBHOOK_MAX_TIMEOUT_MS 60000
#define HEADER_NAME_MAX 256
#define HEADER_VALUE_MAX 4096

struct webhook {
  hd_webhook_engine *engine; /* a reference */
  char *url;
  unsigned char key[HD_SECRET_MAX_BYTES]; /* wiped on destroy */
  size_t key_len;                         /* 0: unsigned */
  char **headers;                         /* custom "name: value" lines */
  size_t n_headers;
  long timeout_ms;
  int max_attempts;
  int binary_mode;
  char *source; /* CloudEvents source */
};

static void webhook_free(struct webhook *w) {
  if (w == NULL)
    return;
  hd_webhook_engine_unref(w->engine);
  free(w->url);
  explicit_bzero(w->key, sizeof(w->key));
  for (size_t i = 0; i < w->n_headers; i++)
    free(w->headers[i]);
  free(w->headers);
  free(w->source);
  free(w);
}

/* ---- strings ------------------------------------------------------------- */

/* Appends `s` to `out` (room for 3 * strlen + 1), percent-encoding every
 * byte for which keep() is 0. */
static void percent_encode(char *out, const char *s, int (*keep)(int c)) {
  static const char hex[] = "0123456789ABCDEF";
  char *o = out + strlen(out);

  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (keep(*p)) {
      *o++ = (char)*p;
    } else {
      *o++ = '%';
      *o++ = hex[*p >> 4];
      *o++ = hex[*p & 0xf];
    }
  }
  *o = '\0';
}

/* CloudEvents HTTP binding, 3.1.3.2: printable ASCII except space, '"' and
 * '%' goes as is. */
static int ce_header_keep(int c) {
  return c > 0x20 && c < 0x7f && c != '"' && c != '%';
}

/* RFC 3986 pchar (and '/'): what a URI-reference path keeps. */
static int uri_path_keep(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=:@/", c) != NULL;
}

/* "name: value", value percent-encoded as a ce-* header; NULL on ENOMEM. */
static char *ce_header(const char *name, const char *value) {
  size_t n = strlen(name), len = n + 2 + 3 * strlen(value) + 1;
  char *line = malloc(len);

  if (line == NULL)
    return NULL;
  snprintf(line, len, "%s: ", name);
  percent_encode(line, value, ce_header_keep);
  return line;
}

static char *header_line(const char *name, const char *value) {
  char *line = NULL;

  /* libcurl sends "name;" as a header with an empty value ("name:" would
   * remove the header instead). */
  if (value[0] == '\0') {
    if (asprintf(&line, "%s;", name) < 0)
      return NULL;
  } else if (asprintf(&line, "%s: %s", name, value) < 0) {
    return NULL;
  }
  return line;
}

/* ---- handle -----------------------------------------------------------------
 */

/* The topic path the event is about, as cloudevents.c picks the subject. */
static const char *subject_of(const hd_event *ev) {
  const char *path = NULL;

  switch (ev->args_kind) {
  case HD_ARGS_SUBSCRIBE:
  case HD_ARGS_UPDATE:
  case HD_ARGS_UNSUBSCRIBE:
    path = ev->topic.path;
    break;
  case HD_ARGS_RESPONSE:
    path = ev->response.path;
    break;
  default:
    break;
  }
  return path != NULL && path[0] != '\0' ? path : NULL;
}

/* Fills the job's fixed headers: content type, user agent, webhook-id, the
 * ce-* attributes in binary mode, then the custom headers. */
static hd_err job_headers(const struct webhook *w, const hd_event *ev,
                          const hd_ce_meta *meta, hd_webhook_job *job) {
  char type[HD_EVENT_NAME_MAX + 32], when[40];
  const char *subject = subject_of(ev);
  size_t n = 0, cap = 9 + w->n_headers;
  char **h = calloc(cap, sizeof(*h));

  if (h == NULL)
    return HD_ENOMEM;
  job->headers = h; /* freed with the job, whatever happens next */
  h[n++] =
      strdup(w->binary_mode ? "content-type: application/json"
                            : "content-type: application/cloudevents+json");
  h[n++] = strdup("user-agent: handlerd/" HD_VERSION);
  h[n++] = header_line("webhook-id", meta->id);
  if (w->binary_mode) {
    hd_ce_type(ev, type, sizeof(type));
    hd_ce_time(meta->time_ns, when, sizeof(when));
    h[n++] = strdup("ce-specversion: 1.0");
    h[n++] = ce_header("ce-id", meta->id);
    h[n++] = ce_header("ce-source", meta->source);
    h[n++] = ce_header("ce-type", type);
    if (subject != NULL)
      h[n++] = ce_header("ce-subject", subject);
    h[n++] = ce_header("ce-time", when);
  }
  for (size_t i = 0; i < w->n_headers; i++)
    h[n++] = strdup(w->headers[i]);
  job->n_headers = n;
  for (size_t i = 0; i < n; i++) {
    if (h[i] == NULL)
      return HD_ENOMEM;
  }
  return HD_OK;
}

static hd_err webhook_handle(hd_handler *hd, const hd_event *ev,
                             hd_done_fn *done, void *done_data) {
  struct webhook *w = hd_handler_user_data(hd);
  hd_webhook_job *job;
  struct timespec now;
  hd_ce_meta meta;
  hd_err err;

  if (ev == NULL || done == NULL)
    return HD_EINVAL;
  job = hd_webhook_job_new();
  if (job == NULL)
    return HD_ENOMEM;
  clock_gettime(CLOCK_REALTIME, &now);
  hd_ce_new_id(job->msg_id);
  meta.id = job->msg_id;
  meta.source = w->source;
  meta.time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
  job->body =
      w->binary_mode ? hd_ce_binary_data(ev) : hd_ce_structured(ev, &meta);
  job->url = strdup(w->url);
  if (job->body == NULL || job->url == NULL) {
    hd_webhook_job_free(job);
    return HD_ENOMEM;
  }
  job->body_len = strlen(job->body);
  err = job_headers(w, ev, &meta, job);
  if (err != HD_OK) {
    hd_webhook_job_free(job);
    return err;
  }
  memcpy(job->key, w->key, w->key_len);
  job->key_len = w->key_len;
  job->timeout_ms = w->timeout_ms;
  job->max_attempts = w->max_attempts;
  job->deadline_ns = ev->deadline_ns;
  snprintf(job->handler_id, sizeof(job->handler_id), "%s", hd_handler_id(hd));
  snprintf(job->registry_key, sizeof(job->registry_key), "%s",
           ev->key != NULL ? ev->key : "");
  job->done = done;
  job->done_data = done_data;
  hd_webhook_engine_submit(w->engine, job);
  return HD_OK;
}

static void webhook_destroy(hd_handler *hd) {
  webhook_free(hd_handler_user_data(hd));
}

static const hd_handler_ops webhook_ops = {
    .kind = "webhook",
    .handle = webhook_handle,
    .remove = NULL,
    .destroy = webhook_destroy,
};

/* ---- the factory
 * ---------------------------------------------------------------- */

/* RFC 9110 token characters. */
static int is_tchar(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

/* Headers handlerd sets itself, and those that would break the framing of
 * the request. */
static int header_reserved(const char *name) {
  static const char *const exact[] = {
      "content-type", "content-length", "transfer-encoding",
      "host",         "connection",     "keep-alive",
      "te",           "trailer",        "upgrade",
      "expect",       "user-agent"};
  static const char *const prefix[] = {"webhook-", "ce-", "proxy-"};

  for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
    if (strcasecmp(name, exact[i]) == 0)
      return 1;
  }
  for (size_t i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++) {
    if (strncasecmp(name, prefix[i], strlen(prefix[i])) == 0)
      return 1;
  }
  return 0;
}

static int header_name_cmp(const void *a, const void *b) {
  return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

/* A header name given twice (case-insensitively), or NULL. Sorted copies
 * of the names: O(n log n), however many headers --max-webhook-headers
 * lets through. */
static const char *header_given_twice(const Handlers__V1__Webhook *wh,
                                      hd_err *err) {
  const char *dup = NULL;
  const char **names;

  *err = HD_OK;
  if (wh->n_headers < 2)
    return NULL;
  names = malloc(wh->n_headers * sizeof(*names));
  if (names == NULL) {
    *err = HD_ENOMEM;
    return NULL;
  }
  for (size_t i = 0; i < wh->n_headers; i++)
    names[i] = wh->headers[i]->key;
  qsort(names, wh->n_headers, sizeof(*names), header_name_cmp);
  for (size_t i = 1; dup == NULL && i < wh->n_headers; i++) {
    if (strcasecmp(names[i - 1], names[i]) == 0)
      dup = names[i];
  }
  free(names);
  return dup;
}

/* The number of headers is limited by the control plane
 * (--max-webhook-headers, on new registrations only), not here: a
 * registration saved under a higher limit must still load. */
static hd_err check_headers(const Handlers__V1__Webhook *wh, char *msg,
                            size_t msg_size) {
  const char *dup;
  hd_err err;

  for (size_t i = 0; i < wh->n_headers; i++) {
    const char *name = wh->headers[i]->key, *value = wh->headers[i]->value;
    size_t n = strlen(name);

    if (n == 0)
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "webhook.headers: empty header name");
    if (n > HEADER_NAME_MAX)
      return hd_errmsg(
          msg, msg_size, HD_EINVAL,
          "webhook.headers: a header name is %zu bytes, the limit is "
          "%d",
          n, HEADER_NAME_MAX);
    for (size_t k = 0; k < n; k++) {
      if (!is_tchar((unsigned char)name[k]))
        return hd_errmsg(msg, msg_size, HD_EINVAL,
                         "webhook.headers: '%s' is not a valid header name",
                         name);
    }
    if (header_reserved(name))
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "webhook.headers: '%s' is set by handlerd and cannot be "
                       "overridden",
                       name);
    if (strlen(value) > HEADER_VALUE_MAX)
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "webhook.headers['%s']: value is over %d bytes", name,
                       HEADER_VALUE_MAX);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
      if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
        return hd_errmsg(msg, msg_size, HD_EINVAL,
                         "webhook.headers['%s']: value contains a control "
                         "character (CR, LF, ...)",
                         name);
    }
  }
  dup = header_given_twice(wh, &err);
  if (err != HD_OK)
    return err;
  if (dup != NULL)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.headers: '%s' is given twice", dup);
  return HD_OK;
}

/* "//handlerd/<instance>/keys/<key>", both parts percent-encoded where a
 * URI path could not hold them. */
static char *make_source(const char *instance, const char *key) {
  size_t len =
      sizeof("//handlerd//keys/") + 3 * (strlen(instance) + strlen(key));
  char *s = malloc(len);

  if (s == NULL)
    return NULL;
  strcpy(s, "//handlerd/");
  percent_encode(s, instance, uri_path_keep);
  strcat(s, "/keys/");
  percent_encode(s, key, uri_path_keep);
  return s;
}

hd_err hd_webhook_factory(void *engine, const char *key,
                          const Handlers__V1__Webhook *wh, hd_handler **out,
                          char **secret_out, char *msg, size_t msg_size) {
  static const char url_prefix[] = "webhook url: ";
  hd_webhook_engine *e = engine;
  const hd_webhook_engine_config *cfg;
  struct webhook *w = NULL;
  char *generated = NULL;
  const char *secret;
  char why[256];
  hd_err err;

  if (out == NULL)
    return HD_EINVAL;
  if (e == NULL)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook targets are not supported");
  if (wh == NULL)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "webhook: missing");
  if (key == NULL || key[0] == '\0')
    return hd_errmsg(msg, msg_size, HD_EINVAL, "key is empty");
  cfg = hd_webhook_engine_config_of(e);

  why[0] = '\0';
  if (hd_webhook_url_check(wh->url, cfg->deny_private, why, sizeof(why)) !=
      HD_OK) {
    const char *m = why;
    if (strncmp(m, url_prefix, sizeof(url_prefix) - 1) == 0)
      m += sizeof(url_prefix) - 1;
    return hd_errmsg(msg, msg_size, HD_EINVAL, "webhook.url: %s",
                     m[0] ? m : "not allowed");
  }
  if (wh->new_secret && wh->secret[0] != '\0')
    return hd_errmsg(
        msg, msg_size, HD_EINVAL,
        "webhook.new_secret: give either a secret or new_secret, not "
        "both");
  if (wh->new_secret && secret_out == NULL)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.new_secret: only one secret can be generated per "
                     "request");
  err = check_headers(wh, msg, msg_size);
  if (err != HD_OK)
    return err;
  if (wh->timeout_ms > HD_WEBHOOK_MAX_TIMEOUT_MS)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.timeout_ms: %u is over the limit of %d",
                     (unsigned)wh->timeout_ms, HD_WEBHOOK_MAX_TIMEOUT_MS);
  if (wh->max_attempts > HD_WEBHOOK_MAX_ATTEMPTS)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.max_attempts: %u is over the limit of %d",
                     (unsigned)wh->max_attempts, HD_WEBHOOK_MAX_ATTEMPTS);

  w = calloc(1, sizeof(*w));
  if (w == NULL)
    return HD_ENOMEM;
  w->engine = hd_webhook_engine_ref(e);
  secret = wh->secret;
  if (wh->new_secret) {
    generated = hd_secret_generate();
    if (generated == NULL) {
      err = HD_EIO;
      snprintf(msg, msg_size, "webhook.new_secret: cannot generate a secret");
      goto fail;
    }
    secret = generated;
  }
  if (secret[0] != '\0') {
    why[0] = '\0';
    if (hd_secret_parse(secret, w->key, &w->key_len, why, sizeof(why)) !=
        HD_OK) {
      err = hd_errmsg(msg, msg_size, HD_EINVAL, "webhook.secret: %s",
                      why[0] ? why : "not a valid secret");
      goto fail;
    }
  }
  w->timeout_ms =
      wh->timeout_ms ? (long)wh->timeout_ms : HD_WEBHOOK_DEFAULT_TIMEOUT_MS;
  w->max_attempts = wh->max_attempts ? (int)wh->max_attempts
                                     : HD_WEBHOOK_DEFAULT_MAX_ATTEMPTS;
  w->binary_mode = wh->binary_mode != 0;
  w->url = strdup(wh->url);
  w->source = make_source(cfg->instance, key);
  w->headers = calloc(wh->n_headers ? wh->n_headers : 1, sizeof(char *));
  err = HD_ENOMEM;
  if (w->url == NULL || w->source == NULL || w->headers == NULL)
    goto fail;
  for (size_t i = 0; i < wh->n_headers; i++) {
    w->headers[i] = header_line(wh->headers[i]->key, wh->headers[i]->value);
    if (w->headers[i] == NULL)
      goto fail;
    w->n_headers++;
  }
  err = hd_handler_new(&webhook_ops, w, out);
  if (err != HD_OK)
    goto fail;
  if (generated != NULL)
    *secret_out = generated;
  return HD_OK;
fail:
  if (generated != NULL) {
    explicit_bzero(generated, strlen(generated));
    free(generated);
  }
  webhook_free(w);
  return err;
}
