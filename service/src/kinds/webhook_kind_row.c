/*
 * webhook_kind_row.c - the webhook kind's row in the kind table (kinds.h)
 * and its checks on a webhook's custom headers and async settings, before
 * anything is built for it (webhook_kind_internal.h). The handler and the
 * builder are webhook_kind.c's.
 */
#include "webhook_kind_internal.h"

#include "errmsg.h"
#include "kinds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HD_WEBHOOK_MAX_STEP_MS (7u * 24 * 3600 * 1000)
#define HEADER_NAME_MAX 256
#define HEADER_VALUE_MAX 4096

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
static const char *header_given_twice(const hd_webhook_spec *wh, hd_err *err) {
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
    names[i] = wh->headers[i].name;
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
hd_err hd_wk_check_headers(const hd_webhook_spec *wh, char *msg,
                           size_t msg_size) {
  const char *dup;
  hd_err err;

  for (size_t i = 0; i < wh->n_headers; i++) {
    const char *name = wh->headers[i].name, *value = wh->headers[i].value;
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

/* The async settings: only with async, and async only with an outbox. */
hd_err hd_wk_check_async(const hd_webhook_kind_ctx *ctx,
                         const hd_webhook_spec *wh, const char *id, char *msg,
                         size_t msg_size) {
  if (!wh->async) {
    const char *set = wh->ordered            ? "ordered"
                      : wh->n_retry_schedule ? "retry_schedule_ms"
                      : wh->max_inflight     ? "max_inflight"
                      : wh->max_rps != 0     ? "max_rps"
                                             : NULL;
    if (set != NULL)
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "webhook.%s: only for async webhooks (set async)", set);
    return HD_OK;
  }
  if (ctx->outbox == NULL)
    return hd_errmsg(
        msg, msg_size, HD_EINVAL,
        "webhook.async: async delivery keeps events in a database: "
        "start handlerd with --state-dir or --database");
  if (id == NULL || id[0] == '\0')
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.async: the handler has no id");
  if (wh->n_retry_schedule > HD_OUTBOX_SCHEDULE_MAX)
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.retry_schedule_ms: %zu steps, the limit is %d",
                     wh->n_retry_schedule, HD_OUTBOX_SCHEDULE_MAX);
  for (size_t i = 0; i < wh->n_retry_schedule; i++) {
    if (wh->retry_schedule_ms[i] > HD_WEBHOOK_MAX_STEP_MS)
      return hd_errmsg(msg, msg_size, HD_EINVAL,
                       "webhook.retry_schedule_ms[%zu]: %u ms is over the "
                       "limit of 7 days",
                       i, (unsigned)wh->retry_schedule_ms[i]);
  }
  if (!(wh->max_rps >= 0 && wh->max_rps <= 1e6))
    return hd_errmsg(msg, msg_size, HD_EINVAL,
                     "webhook.max_rps: %g is not between 0 and 1000000",
                     wh->max_rps);
  return HD_OK;
}

/* ---- the row in the kind table ---------------------------------------------
 */

static hd_err webhook_check_limits(const hd_target_spec *t,
                                   const hd_target_limits *l, const char *what,
                                   char *msg, size_t msg_size) {
  if (t->webhook.n_headers <= (size_t)l->max_headers)
    return HD_OK;
  return hd_errmsg(msg, msg_size, HD_EINVAL,
                   "%s.webhook.headers: %zu headers, the limit is %d "
                   "(--max-webhook-headers)",
                   what, t->webhook.n_headers, l->max_headers);
}

static hd_err webhook_check_strings(const hd_target_spec *t, const char *what,
                                    char *msg, size_t msg_size) {
  const hd_webhook_spec *wh = &t->webhook;
  char field[64];
  hd_err err = hd_kind_check_utf8(what, ".webhook.url", wh->url ? wh->url : "",
                                  msg, msg_size);

  if (err == HD_OK)
    err = hd_kind_check_utf8(what, ".webhook.secret",
                             wh->secret ? wh->secret : "", msg, msg_size);
  for (size_t h = 0; err == HD_OK && h < wh->n_headers; h++) {
    snprintf(field, sizeof(field), ".webhook.headers[%zu].key", h);
    err = hd_kind_check_utf8(what, field, wh->headers[h].name, msg, msg_size);
    if (err == HD_OK) {
      snprintf(field, sizeof(field), ".webhook.headers[%zu].value", h);
      err =
          hd_kind_check_utf8(what, field, wh->headers[h].value, msg, msg_size);
    }
  }
  return err;
}

static int webhook_wants_new_secret(const hd_target_spec *t) {
  return t->webhook.new_secret != 0;
}

static int webhook_secret_set(const hd_target_spec *t) {
  return t->webhook.new_secret ||
         (t->webhook.secret != NULL && t->webhook.secret[0] != '\0');
}

static void webhook_keep_secret(hd_target_spec *t, const char *secret) {
  t->webhook.secret = secret;
  t->webhook.new_secret = 0;
}

static int webhook_is_async(const hd_target_spec *t) {
  return t->webhook.async != 0;
}

static const char *webhook_detail(const hd_target_spec *t) {
  return t->webhook.url ? t->webhook.url : "";
}

/* `ctx` is an hd_webhook_kind_ctx (hd_control_set_kind_context). The
 * factory's messages name the field ("webhook.url: ..."), not `what`, as
 * they always have. */
static hd_err webhook_build(void *ctx, const hd_kind_site *site,
                            const hd_target_spec *t, hd_handler **out,
                            char **secret_out, char *msg, size_t msg_size) {
  return hd_webhook_build(ctx, site->key, site->id, site->route, &t->webhook,
                          out, secret_out, msg, msg_size);
}

const hd_kind hd_kind_webhook = {
    .kind = HD_TARGET_WEBHOOK,
    .name = "webhook",
    .handler_kind = "webhook",
    .check_limits = webhook_check_limits,
    .check_strings = webhook_check_strings,
    .wants_new_secret = webhook_wants_new_secret,
    .secret_set = webhook_secret_set,
    .keep_secret = webhook_keep_secret,
    .is_async = webhook_is_async,
    .detail = webhook_detail,
    .build = webhook_build,
    .needs_context = 1,
};
