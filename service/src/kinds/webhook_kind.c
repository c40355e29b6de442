/*
 * webhook_kind.c - the "webhook" handler kind and its factory (its row in
 * the kind table, and the checks on its settings, are webhook_kind_row.c's).
 *
 * handle() turns the event into a CloudEvent (structured or binary mode,
 * cloudevents.c),
 * copies everything the delivery needs into a job and gives the job to the
 * engine (webhook_engine.c), which completes it from its own thread. The
 * event is not touched after handle() returns.
 *
 * When one event reaches K webhooks (a set's members, webhooks behind
 * event-stream routes), the set opens a fan-out scope (model/fanout.h) and
 * the first webhook leaves a ce_share there: the event's CloudEvent id and
 * time, and the bodies built from them, which the other K-1 reuse (one
 * reference per job, the last job frees a body). See cloudevents.h for why
 * the K deliveries of one event share the id.
 */
#include "webhook_kind.h"
#include "webhook_kind_internal.h"
#include "clock.h"
#include "cloudevents.h"
#include "errmsg.h"
#include "fanout.h"
#include "kinds.h"
#include "webhook_engine.h"
#include "webhook_sign.h"
#include "webhook_url.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HD_WEBHOOK_MAX_TIMEOUT_MS 60000

struct webhook {
  hd_webhook_engine *engine; /* a reference */
  hd_outbox *outbox;         /* async: where events go (borrowed) */
  hd_outbox_endpoint *ep;    /* async: this webhook in the outbox */
  char *url;
  unsigned char key[HD_SECRET_MAX_BYTES]; /* wiped on destroy */
  size_t key_len;                         /* 0: unsigned */
  /* A rotation in progress: the previous key, sent as a second signature
   * until prev_until_ns (CLOCK_REALTIME); wiped on destroy. */
  unsigned char prev_key[HD_SECRET_MAX_BYTES];
  size_t prev_key_len; /* 0: none */
  int64_t prev_until_ns;
  char **headers; /* custom "name: value" lines */
  size_t n_headers;
  long timeout_ms;
  int max_attempts;
  int binary_mode;
  char *source; /* CloudEvents source */
};

static void webhook_free(struct webhook *w) {
  if (w == NULL)
    return;
  hd_outbox_endpoint_drop(w->outbox, w->ep);
  hd_webhook_engine_unref(w->engine);
  free(w->url);
  explicit_bzero(w->key, sizeof(w->key));
  explicit_bzero(w->prev_key, sizeof(w->prev_key));
  for (size_t i = 0; i < w->n_headers; i++)
    free(w->headers[i]);
  free(w->headers);
  free(w->source);
  free(w);
}

/* ---- strings ------------------------------------------------------------- */

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

/* Fills the job's headers: content type, user agent, webhook-id, the
 * CloudEvents attributes in binary mode (cloudevents.c), then the custom
 * headers. */
static hd_err job_headers(const struct webhook *w, const hd_event *ev,
                          const hd_ce_meta *meta, hd_webhook_job *job) {
  size_t n = 0, cap = 3 + HD_CE_BINARY_HEADERS_MAX + w->n_headers;
  char **h = calloc(cap, sizeof(*h));

  if (h == NULL)
    return HD_ENOMEM;
  job->headers = h; /* freed with the job, whatever happens next */
  h[n++] = strdup(hd_ce_content_type_line(w->binary_mode));
  h[n++] = strdup("user-agent: handlerd/" HD_VERSION);
  h[n++] = header_line("webhook-id", meta->id);
  if (w->binary_mode)
    n += hd_ce_binary_headers(ev, meta, h + n);
  for (size_t i = 0; i < w->n_headers; i++)
    h[n++] = strdup(w->headers[i]);
  job->n_headers = n;
  for (size_t i = 0; i < n; i++) {
    if (h[i] == NULL)
      return HD_ENOMEM;
  }
  return HD_OK;
}

/* ---- what the webhooks of one fan-out share --------------------------------
 */

/* The event's CloudEvent as the webhooks of one fan-out send it: id and
 * time (the same for all K), and each body built on first use. Only the
 * thread that opened the scope sees it (fanout.h), so its fields need no
 * lock; the bodies' counts are atomic, as jobs drop theirs on the engine
 * thread. */
struct ce_share {
  char id[37];
  int64_t time_ns;
  int keep;                    /* 1: cache bodies (it is in a scope) */
  char *source;                /* what `structured` was built for */
  hd_webhook_body *structured; /* NULL until a structured-mode webhook */
  hd_webhook_body *binary;     /* the data alone: the same for any source */
  /* Async webhooks of this fan-out: their deliveries, submitted together
   * when the scope ends, so one transaction commits them all. */
  hd_outbox_batch *batch;
};

static const char ce_share_tag; /* its address names our slot in a scope */

static void ce_share_init(struct ce_share *s, int keep) {
  struct timespec now;

  clock_gettime(CLOCK_REALTIME, &now);
  hd_ce_new_id(s->id);
  s->time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
  s->keep = keep;
  s->source = NULL;
  s->structured = NULL;
  s->binary = NULL;
  s->batch = NULL;
}

static void ce_share_clear(struct ce_share *s) {
  free(s->source);
  hd_webhook_body_unref(s->structured);
  hd_webhook_body_unref(s->binary);
}

static void ce_share_release(void *obj) {
  struct ce_share *s = obj;

  /* The set has started its last member: every async one has added its
   * delivery. */
  hd_outbox_batch_submit(s->batch);
  ce_share_clear(s);
  free(s);
}

/* The share of `ev`'s fan-out on this thread: the one a sibling left, or a
 * new one put in the scope; outside a scope (or out of memory for one),
 * `local`, filled in, for this webhook alone. */
static struct ce_share *ce_share_of(const hd_event *ev,
                                    struct ce_share *local) {
  struct ce_share *s = hd_fanout_get(ev, &ce_share_tag);

  if (s != NULL)
    return s;
  if (hd_fanout_in_scope(ev) && (s = malloc(sizeof(*s))) != NULL) {
    ce_share_init(s, 1);
    if (hd_fanout_put(ev, &ce_share_tag, s, ce_share_release))
      return s;
    free(s);
  }
  ce_share_init(local, 0);
  return local;
}

/* A reference on the body `w` sends for `ev`, built unless `s` has it;
 * NULL on ENOMEM. Binary mode's body is the data alone; structured mode's
 * embeds the source too, so it is reused only by webhooks with the same
 * source (all of one key's). */
static hd_webhook_body *ce_share_body(struct ce_share *s, const hd_event *ev,
                                      const struct webhook *w,
                                      const hd_ce_meta *meta) {
  hd_webhook_body *b;

  if (w->binary_mode) {
    if (s->binary == NULL)
      s->binary = hd_webhook_body_take(hd_ce_binary_data(ev));
    return s->binary != NULL ? hd_webhook_body_ref(s->binary) : NULL;
  }
  if (s->structured != NULL && strcmp(s->source, w->source) == 0)
    return hd_webhook_body_ref(s->structured);
  b = hd_webhook_body_take(hd_ce_structured(ev, meta));
  if (b != NULL && s->keep && s->structured == NULL &&
      (s->source = strdup(w->source)) != NULL)
    s->structured = hd_webhook_body_ref(b);
  return b;
}

/* ---- async: the event goes to the outbox --------------------------------
 */

/* An accept waiting for the outbox's commit. */
struct accept_wait {
  hd_done_fn *done;
  void *done_data;
  int64_t start_ns;
  char handler_id[HD_HANDLER_ID_MAX + 1];
};

/* One result: accepted with the delivery id, or why not. */
static void accepted(void *data, hd_err err, const char *delivery_id,
                     const char *msg) {
  struct accept_wait *aw = data;
  hd_results *rs = hd_results_new();
  hd_result *r = rs ? hd_results_append(rs) : NULL;
  int64_t took = mono_ns() - aw->start_ns;

  if (r == NULL) { /* done must still run: an empty list says nothing ran */
    hd_results_free(rs);
    rs = hd_results_new();
  } else {
    memcpy(r->handler_id, aw->handler_id, sizeof(r->handler_id));
    r->duration_ns = took > 0 ? took : 1;
    if (err == HD_OK) {
      r->accepted = 1;
      snprintf(r->delivery_id, sizeof(r->delivery_id), "%s", delivery_id);
    } else {
      hd_result_set_error(r, err, "async delivery: %s",
                          msg ? msg : hd_strerror(err));
      /* No room (pending limit, disk full): RESOURCE_EXHAUSTED; anything
       * else is ours and passing: UNAVAILABLE. */
      r->grpc_code = err == HD_EBUSY ? 8 : 14;
    }
  }
  aw->done(rs, aw->done_data);
  free(aw);
}

/* The header lines of the event (not the webhook's own: those are taken
 * when each attempt starts, so a change of settings applies), one per
 * line. malloc'd; NULL on ENOMEM. */
static char *event_headers(const struct webhook *w, const hd_event *ev,
                           const hd_ce_meta *meta) {
  char *lines[3 + HD_CE_BINARY_HEADERS_MAX] = {0};
  size_t n = 0, len = 0;
  char *text = NULL, *p;
  int ok = 1;

  lines[n++] = strdup(hd_ce_content_type_line(w->binary_mode));
  lines[n++] = strdup("user-agent: handlerd/" HD_VERSION);
  lines[n++] = header_line("webhook-id", meta->id);
  if (w->binary_mode)
    n += hd_ce_binary_headers(ev, meta, lines + n);
  for (size_t i = 0; i < n; i++) {
    ok = ok && lines[i] != NULL;
    len += lines[i] ? strlen(lines[i]) + 1 : 0;
  }
  if (ok && (text = malloc(len + 1)) != NULL) {
    p = text;
    for (size_t i = 0; i < n; i++)
      p += sprintf(p, "%s\n", lines[i]);
    *p = '\0';
  }
  for (size_t i = 0; i < n; i++)
    free(lines[i]);
  return text;
}

static hd_err webhook_handle_async(struct webhook *w, hd_handler *hd,
                                   const hd_event *ev, hd_done_fn *done,
                                   void *done_data) {
  struct ce_share local, *share = ce_share_of(ev, &local);
  struct accept_wait *aw = calloc(1, sizeof(*aw));
  hd_webhook_body *body;
  hd_outbox_event oe;
  hd_ce_meta meta;
  char *headers, msg[256];
  hd_err err;

  meta.id = share->id;
  meta.source = w->source;
  meta.time_ns = share->time_ns;
  body = ce_share_body(share, ev, w, &meta);
  headers = event_headers(w, ev, &meta);
  if (aw == NULL || body == NULL || headers == NULL) {
    err = HD_ENOMEM;
    free(aw);
    goto out;
  }
  aw->done = done;
  aw->done_data = done_data;
  aw->start_ns = mono_ns();
  snprintf(aw->handler_id, sizeof(aw->handler_id), "%s", hd_handler_id(hd));
  oe = (hd_outbox_event){
      .ep = w->ep,
      .event_id = meta.id,
      .event_name = ev->name,
      .ordering_key = hd_ce_subject(ev),
      .body = (const unsigned char *)hd_webhook_body_text(body),
      .body_len = hd_webhook_body_len(body),
      .headers = headers,
  };
  msg[0] = '\0';
  /* In a fan-out, with the event's other async deliveries (one
   * transaction); alone, at once. */
  if (share->keep && share->batch == NULL)
    share->batch = hd_outbox_batch_new(w->outbox);
  if (share->keep && share->batch != NULL &&
      hd_outbox_batch_outbox(share->batch) == w->outbox)
    err = hd_outbox_batch_add(share->batch, &oe, accepted, aw);
  else
    err = hd_outbox_accept(w->outbox, &oe, accepted, aw, msg, sizeof(msg));
  if (err != HD_OK) { /* refused at once: the result says why */
    accepted(aw, err, NULL, msg[0] ? msg : NULL);
    err = HD_OK;
  }
out:
  hd_webhook_body_unref(body);
  free(headers);
  if (share == &local)
    ce_share_clear(&local);
  return err;
}

static hd_err webhook_handle(hd_handler *hd, const hd_event *ev,
                             hd_done_fn *done, void *done_data) {
  struct webhook *w = hd_handler_user_data(hd);
  struct ce_share local, *share;
  hd_webhook_job *job;
  hd_ce_meta meta;
  hd_err err;

  if (ev == NULL || done == NULL)
    return HD_EINVAL;
  if (w->ep != NULL)
    return webhook_handle_async(w, hd, ev, done, done_data);
  job = hd_webhook_job_new();
  if (job == NULL)
    return HD_ENOMEM;
  share = ce_share_of(ev, &local);
  memcpy(job->msg_id, share->id, sizeof(job->msg_id));
  meta.id = job->msg_id;
  meta.source = w->source;
  meta.time_ns = share->time_ns;
  job->body = ce_share_body(share, ev, w, &meta);
  if (share == &local)
    ce_share_clear(&local);
  job->url = strdup(w->url);
  if (job->body == NULL || job->url == NULL) {
    hd_webhook_job_free(job);
    return HD_ENOMEM;
  }
  err = job_headers(w, ev, &meta, job);
  if (err != HD_OK) {
    hd_webhook_job_free(job);
    return err;
  }
  memcpy(job->key, w->key, w->key_len);
  job->key_len = w->key_len;
  /* Whether the old signature still goes along is decided per attempt
   * (webhook_attempt.c): a retry after the window sends the new one only. */
  memcpy(job->prev_key, w->prev_key, w->prev_key_len);
  job->prev_key_len = w->prev_key_len;
  job->prev_until_ns = w->prev_until_ns;
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

/* Registers an async webhook with the outbox under its id and route. */
static hd_err join_outbox(struct webhook *w, const hd_webhook_kind_ctx *ctx,
                          const char *key, const char *id, const char *route,
                          const hd_webhook_spec *wh) {
  hd_endpoint_spec spec = {
      .handler_id = id,
      .route = route ? route : "",
      .key = key,
      .url = w->url,
      .headers = (const char *const *)w->headers,
      .n_headers = w->n_headers,
      .sign_key = w->key,
      .sign_key_len = w->key_len,
      .prev_sign_key = w->prev_key,
      .prev_sign_key_len = w->prev_key_len,
      .prev_until_ns = w->prev_until_ns,
      .timeout_ms = w->timeout_ms,
      .retry_schedule_ms = wh->retry_schedule_ms,
      .n_retry_schedule = wh->n_retry_schedule,
      .ordered = wh->ordered,
      .max_inflight = wh->max_inflight,
      .max_rps = wh->max_rps,
  };
  w->outbox = ctx->outbox;
  w->ep = hd_outbox_endpoint_add(ctx->outbox, &spec);
  return w->ep != NULL ? HD_OK : HD_ENOMEM;
}

/* The previous secret of a rotation in progress (RotateSecret), kept for
 * the second signature until its end; one whose window has passed is not
 * kept at all. A new secret without a current one is refused: a rotation
 * always has both. */
static hd_err previous_key(struct webhook *w, const hd_webhook_spec *wh,
                           char *msg, size_t msg_size) {
  const char *prev = wh->previous_secret ? wh->previous_secret : "";
  char why[256] = "";

  if (prev[0] == '\0' || wh->previous_until_ms <= real_ns() / 1000000)
    return HD_OK;
  if (w->key_len == 0)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.previous_secret: only with a secret");
  if (hd_secret_parse(prev, w->prev_key, &w->prev_key_len, why, sizeof(why)) !=
      HD_OK)
    return hd_errmsg(msg, msg_size, HD_EINVAL, "webhook.previous_secret: %s",
                     why[0] ? why : "not a valid secret");
  w->prev_until_ns = wh->previous_until_ms > INT64_MAX / 1000000
                         ? INT64_MAX
                         : wh->previous_until_ms * 1000000;
  return HD_OK;
}

hd_err hd_webhook_factory(void *engine, const char *key,
                          const hd_webhook_spec *wh, hd_handler **out,
                          char **secret_out, char *msg, size_t msg_size) {
  hd_webhook_kind_ctx ctx = {engine, NULL};
  return hd_webhook_build(&ctx, key, NULL, "", wh, out, secret_out, msg,
                          msg_size);
}

hd_err hd_webhook_build(const hd_webhook_kind_ctx *ctx, const char *key,
                        const char *id, const char *route,
                        const hd_webhook_spec *wh, hd_handler **out,
                        char **secret_out, char *msg, size_t msg_size) {
  static const char url_prefix[] = "webhook url: ";
  hd_webhook_engine *e = ctx != NULL ? ctx->engine : NULL;
  const hd_webhook_engine_config *cfg;
  struct webhook *w = NULL;
  char *generated = NULL;
  const char *secret, *url, *given;
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
  /* The spec's strings may be NULL (registration.h): read as "". */
  url = wh->url ? wh->url : "";
  given = wh->secret ? wh->secret : "";

  why[0] = '\0';
  if (hd_webhook_url_check(url, cfg->deny_private, why, sizeof(why)) != HD_OK) {
    const char *m = why;
    if (strncmp(m, url_prefix, sizeof(url_prefix) - 1) == 0)
      m += sizeof(url_prefix) - 1;
    return hd_errmsg(msg, msg_size, HD_EINVAL, "webhook.url: %s",
                     m[0] ? m : "not allowed");
  }
  if (wh->new_secret && given[0] != '\0')
    return hd_errmsg(
        msg, msg_size, HD_EINVAL,
        "webhook.new_secret: give either a secret or new_secret, not "
        "both");
  if (wh->new_secret && secret_out == NULL)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.new_secret: only one secret can be generated per "
                     "request");
  err = hd_wk_check_headers(wh, msg, msg_size);
  if (err == HD_OK)
    err = hd_wk_check_async(ctx, wh, id, msg, msg_size);
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
  secret = given;
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
  if ((err = previous_key(w, wh, msg, msg_size)) != HD_OK)
    goto fail;
  w->timeout_ms =
      wh->timeout_ms ? (long)wh->timeout_ms : HD_WEBHOOK_DEFAULT_TIMEOUT_MS;
  w->max_attempts = wh->max_attempts ? (int)wh->max_attempts
                                     : HD_WEBHOOK_DEFAULT_MAX_ATTEMPTS;
  w->binary_mode = wh->binary_mode != 0;
  w->url = strdup(url);
  w->source = hd_ce_source(cfg->instance, key);
  w->headers = calloc(wh->n_headers ? wh->n_headers : 1, sizeof(char *));
  err = HD_ENOMEM;
  if (w->url == NULL || w->source == NULL || w->headers == NULL)
    goto fail;
  for (size_t i = 0; i < wh->n_headers; i++) {
    w->headers[i] = header_line(wh->headers[i].name, wh->headers[i].value);
    if (w->headers[i] == NULL)
      goto fail;
    w->n_headers++;
  }
  if (wh->async && (err = join_outbox(w, ctx, key, id, route, wh)) != HD_OK)
    goto fail;
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
