/*
 * handlerctl: the registration flags `add` and `update` share, and the
 * arguments of `rotate-secret` and `remove --route` (handler_args.h).
 */
#include "handler_args.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

hcli_handler_args *hcli_handler_args_new(void) {
  return calloc(1, sizeof(hcli_handler_args));
}

void hcli_handler_args_free(hcli_handler_args *a) {
  if (a == NULL)
    return;
  hcli_pool_clear(&a->pool);
  free(a->pool.items);
  free(a);
}

/* An option that only async webhooks take. */
static int async_option(hcli_handler_args *a, int c, const char *arg, char *err,
                        size_t err_size) {
  unsigned long n;
  char why[256];
  const char *name = "";
  switch (c) {
  case HCLI_H_ORDERED:
    name = "--ordered";
    a->hook.ordered = 1;
    break;
  case HCLI_H_RETRY_SCHEDULE:
    name = "--retry-schedule";
    if (hcli_parse_retry_schedule(arg, a->schedule, &a->hook.n_retry_schedule,
                                  why, sizeof why) != 0)
      return hcli_fail(err, err_size, "--retry-schedule: %s", why);
    a->hook.retry_schedule_ms = a->schedule;
    break;
  case HCLI_H_MAX_INFLIGHT:
    name = "--max-inflight";
    if (hcli_parse_uint(arg, UINT32_MAX, &n) != 0 || n == 0)
      return hcli_fail(err, err_size,
                       "--max-inflight needs a positive number, not '%s'", arg);
    a->hook.max_inflight = (unsigned)n;
    break;
  case HCLI_H_MAX_RPS:
    name = "--max-rps";
    if (hcli_parse_rate(arg, &a->hook.max_rps) != 0)
      return hcli_fail(err, err_size,
                       "--max-rps needs a positive number of attempts per "
                       "second, not '%s'",
                       arg);
    break;
  }
  if (a->async_only == NULL)
    a->async_only = name;
  return 0;
}

/* --route EVENT=TARGET. */
static int route_option(hcli_handler_args *a, const char *arg, char *err,
                        size_t err_size) {
  const char *eq = strchr(arg, '=');
  if (eq == NULL || eq == arg || eq[1] == '\0')
    return hcli_fail(
        err, err_size,
        "--route takes EVENT=TARGET (TARGET: local:NAME or a URL), "
        "not '%s'",
        arg);
  if (a->n_routes == HCLI_HANDLER_MAX_LIST)
    return hcli_fail(err, err_size, "too many --route options");
  char *event = hcli_pool_keep(&a->pool, strndup(arg, (size_t)(eq - arg)));
  if (event == NULL)
    return hcli_fail(err, err_size, "out of memory");
  for (size_t i = 0; i < a->n_routes; i++)
    if (strcmp(a->route_event[i], event) == 0)
      return hcli_fail(err, err_size, "two routes for event '%s'", event);
  a->route_event[a->n_routes] = event;
  a->route_target[a->n_routes++] = eq + 1;
  return 0;
}

/* --events E1,E2 (repeatable). */
static int events_option(hcli_handler_args *a, const char *arg, char *err,
                         size_t err_size) {
  char *copy = hcli_pool_keep(&a->pool, strdup(arg)), *save = NULL;
  if (copy == NULL)
    return hcli_fail(err, err_size, "out of memory");
  for (char *e = strtok_r(copy, ",", &save); e != NULL;
       e = strtok_r(NULL, ",", &save)) {
    while (*e == ' ')
      e++;
    if (*e == '\0')
      continue;
    if (a->n_events == HCLI_HANDLER_MAX_LIST)
      return hcli_fail(err, err_size, "too many --events");
    a->events[a->n_events++] = e;
  }
  return 0;
}

/* --header 'NAME: VALUE' (repeatable). */
static int header_option(hcli_handler_args *a, const char *arg, char *err,
                         size_t err_size) {
  const char *colon = strchr(arg, ':');
  if (colon == NULL || colon == arg)
    return hcli_fail(err, err_size, "--header takes 'NAME: VALUE', not '%s'",
                     arg);
  if (a->n_headers == HCLI_HANDLER_MAX_LIST)
    return hcli_fail(err, err_size, "too many --header options");
  const char *value = colon + 1;
  while (*value == ' ' || *value == '\t')
    value++;
  char *name = hcli_pool_keep(&a->pool, strndup(arg, (size_t)(colon - arg)));
  if (name == NULL)
    return hcli_fail(err, err_size, "out of memory");
  a->headers[a->n_headers].name = name;
  a->headers[a->n_headers++].value = value;
  return 0;
}

/* A webhook option (HCLI_H_SECRET and after), noted in webhook_opts when
 * taken. */
static int webhook_option(hcli_handler_args *a, int c, const char *arg,
                          char *err, size_t err_size) {
  unsigned long n;
  int rc = 0;
  switch (c) {
  case HCLI_H_SECRET:
    a->hook.secret = arg;
    break;
  case HCLI_H_NEW_SECRET:
    a->hook.new_secret = 1;
    break;
  case HCLI_H_HEADER:
    rc = header_option(a, arg, err, err_size);
    break;
  case HCLI_H_TIMEOUT:
  case HCLI_H_MAX_ATTEMPTS:
    if (hcli_parse_uint(arg, UINT_MAX, &n) != 0 || n == 0)
      return hcli_fail(err, err_size, "--%s needs a positive number, not '%s'",
                       c == HCLI_H_TIMEOUT ? "timeout-ms" : "max-attempts",
                       arg);
    if (c == HCLI_H_TIMEOUT)
      a->hook.timeout_ms = (unsigned)n;
    else
      a->hook.max_attempts = (unsigned)n;
    break;
  case HCLI_H_BINARY:
    a->hook.binary_mode = 1;
    break;
  case HCLI_H_ASYNC:
    a->hook.async = 1;
    break;
  default: /* --ordered and after: only for async webhooks */
    rc = async_option(a, c, arg, err, err_size);
  }
  if (rc == 0)
    a->webhook_opts = 1;
  return rc;
}

/* A flag taking one value, given at most once. */
static int once(const char **slot, const char *flag, const char *arg, char *err,
                size_t err_size) {
  if (*slot != NULL)
    return hcli_fail(err, err_size, "%s given twice", flag);
  *slot = arg;
  return 0;
}

int hcli_handler_option(hcli_handler_args *a, int c, const char *arg, char *err,
                        size_t err_size) {
  if (c >= HCLI_H_SECRET && c < HCLI_H_END)
    return webhook_option(a, c, arg, err, err_size);
  switch (c) {
  case HCLI_H_KEY:
    a->key = arg;
    return 0;
  case HCLI_H_LOCAL:
    return once(&a->local, "--local", arg, err, err_size);
  case HCLI_H_WEBHOOK:
    return once(&a->webhook, "--webhook", arg, err, err_size);
  case HCLI_H_ROUTE:
    return route_option(a, arg, err, err_size);
  case HCLI_H_EVENTS:
    return events_option(a, arg, err, err_size);
  case HCLI_H_SELECTOR:
    /* Passed as written: handlerd parses it and names the position of a
     * mistake. Only "" is refused here: it would mean "every topic". */
    if (*arg == '\0')
      return hcli_fail(err, err_size,
                       "--selector must not be empty (leave it out for every "
                       "topic)");
    return once(&a->selector, "--selector", arg, err, err_size);
  case HCLI_H_DERIVE_OLD_VALUE:
    a->derive_old_value = 1;
    return 0;
  }
  return 1;
}

static int is_url(const char *s) {
  return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

int hcli_handler_check(const hcli_handler_args *a, char *err, size_t err_size) {
  if (a->key == NULL || *a->key == '\0')
    return hcli_fail(err, err_size, "missing --key");
  int targets = (a->local != NULL) + (a->webhook != NULL) + (a->n_routes > 0);
  if (targets == 0)
    return hcli_fail(err, err_size,
                     "give one of --local NAME, --webhook URL or --route "
                     "EVENT=TARGET");
  if (targets > 1)
    return hcli_fail(err, err_size,
                     "--local, --webhook and --route exclude each "
                     "other");
  if (a->n_routes > 0 && a->n_events > 0)
    return hcli_fail(err, err_size,
                     "--events is for --local/--webhook; routes "
                     "already name their events");
  if (a->hook.secret != NULL && a->hook.new_secret)
    return hcli_fail(err, err_size,
                     "--secret and --new-secret exclude each other");
  int any_url = a->webhook != NULL;
  for (size_t i = 0; i < a->n_routes; i++) {
    const char *t = a->route_target[i];
    if (is_url(t))
      any_url = 1;
    else if (strncmp(t, "local:", 6) != 0 || t[6] == '\0')
      return hcli_fail(err, err_size,
                       "route target '%s' is neither local:NAME nor an http(s) "
                       "URL",
                       t);
  }
  if (a->webhook_opts && !any_url)
    return hcli_fail(err, err_size,
                     "webhook options need --webhook URL or a URL route");
  if (a->async_only != NULL && !a->hook.async)
    return hcli_fail(err, err_size, "%s is for async webhooks: add --async",
                     a->async_only);
  if (a->hook.async && a->hook.max_attempts > 0)
    return hcli_fail(err, err_size,
                     "--max-attempts does not apply to --async: the retry "
                     "schedule decides (--retry-schedule)");
  return 0;
}

const hc_handler_spec *hcli_handler_spec(hcli_handler_args *a) {
  a->hook.headers = a->headers;
  a->hook.n_headers = a->n_headers;
  a->target_hook = a->hook;
  a->target_hook.url = a->webhook;
  hc_handler_spec *spec = &a->spec;
  memset(spec, 0, sizeof *spec);
  spec->key = a->key;
  spec->target.local = a->local;
  spec->target.webhook = a->webhook != NULL ? &a->target_hook : NULL;
  spec->events = a->events;
  spec->n_events = a->n_events;
  spec->selector = a->selector;
  spec->derive_old_value = a->derive_old_value;
  for (size_t i = 0; i < a->n_routes; i++) {
    const char *t = a->route_target[i];
    hc_route *r = &a->routes[i];
    memset(r, 0, sizeof *r);
    r->event = a->route_event[i];
    if (is_url(t)) {
      a->route_hooks[i] = a->hook;
      a->route_hooks[i].url = t;
      r->target.webhook = &a->route_hooks[i];
    } else {
      r->target.local = t + 6; /* after "local:" (checked) */
    }
  }
  spec->routes = a->routes;
  spec->n_routes = a->n_routes;
  return spec;
}

int hcli_check_route_name(const char *s, char *err, size_t err_size) {
  if (s == NULL || *s == '\0')
    return hcli_fail(err, err_size, "--route needs an event name, e.g. update");
  if (strchr(s, '=') != NULL)
    return hcli_fail(err, err_size,
                     "--route takes the route's event name here (e.g. update), "
                     "not EVENT=TARGET: '%s'",
                     s);
  return 0;
}

int hcli_parse_overlap_ms(const char *s, int64_t *out, char *err,
                          size_t err_size) {
  uint64_t ms;
  char why[256];
  if (hcli_parse_duration_ms(s, &ms, why, sizeof why) != 0)
    return hcli_fail(err, err_size, "--overlap: %s", why);
  if (ms == 0)
    return hcli_fail(
        err, err_size,
        "--overlap must be longer than 0 (e.g. 300ms, 1h); leave it "
        "out for the default, 24h");
  *out = (int64_t)ms;
  return 0;
}
