/*
 * handlerctl: the control commands - health, list, add, remove.
 */
#include "cli.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Runs the option loop with no positional arguments allowed. */
#define NO_POSITIONALS(g, argc, argv, first)                                   \
  do {                                                                         \
    if ((first) < (argc))                                                      \
      return hcli_usage_error((g), "unexpected argument '%s'",                 \
                              (argv)[(first)]);                                \
  } while (0)

/* ---- health -------------------------------------------------------------- */

static int run_health(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_health = {
    "health", "check that handlerd is serving (grpc.health.v1)",
    "usage: handlerctl health [--service NAME]\n"
    "\n"
    "Calls grpc.health.v1.Health/Check. Exits 0 and prints nothing when the\n"
    "server is SERVING (with -o json: {\"status\": \"SERVING\"}); otherwise\n"
    "exits non-zero with a one-line message: 1 NOT_SERVING or an error\n"
    "status, 3 unreachable. Suitable as a Docker HEALTHCHECK.\n"
    "\n"
    "  --service NAME   the service to check (default: the server as a "
    "whole)\n",
    run_health};

static const char *serving_name(hc_serving_status s) {
  switch (s) {
  case HC_HEALTH_SERVING:
    return "SERVING";
  case HC_HEALTH_NOT_SERVING:
    return "NOT_SERVING";
  case HC_HEALTH_SERVICE_UNKNOWN:
    return "SERVICE_UNKNOWN";
  default:
    return "UNKNOWN";
  }
}

static int run_health(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{"service", required_argument, NULL, 1},
                                      {0, 0, 0, 0}};
  const char *service = NULL, *arg;
  int c, first;
  while ((c = hcli_next_option(g, &hcli_cmd_health, argc, argv, own, &arg,
                               &first)) != -1)
    if (c == 1)
      service = arg;
  NO_POSITIONALS(g, argc, argv, first);

  int rc;
  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    return rc;
  hc_status st;
  hc_serving_status s = HC_HEALTH_UNKNOWN;
  hc_err err = hc_health_check(conn, service, 0, &s, &st);
  hc_close(conn);
  if (err != HC_OK)
    return hcli_report(g, err, &st);
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(json_pack("{s:s}", "status", serving_name(s)));
  if (s != HC_HEALTH_SERVING) {
    fprintf(stderr, "handlerctl: %s\n", serving_name(s));
    return HCLI_EXIT_RPC;
  }
  return HCLI_EXIT_OK;
}

/* ---- list ---------------------------------------------------------------- */

static int run_list(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_list = {
    "list", "list the registered handlers",
    "usage: handlerctl list [--key K]\n"
    "\n"
    "Lists handlers (ListHandlers): key, id, kind, target or routes, event\n"
    "filter and whether a webhook secret is set (secrets are never shown).\n"
    "\n"
    "  --key K   only the handlers under key K (NOT_FOUND when there are "
    "none)\n",
    run_list};

static int run_list(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{"key", required_argument, NULL, 1},
                                      {0, 0, 0, 0}};
  const char *key = NULL, *arg;
  int c, first;
  while ((c = hcli_next_option(g, &hcli_cmd_list, argc, argv, own, &arg,
                               &first)) != -1)
    if (c == 1)
      key = arg;
  NO_POSITIONALS(g, argc, argv, first);
  if (key != NULL && *key == '\0')
    return hcli_usage_error(g, "--key must not be empty");

  int rc;
  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    return rc;
  hc_status st;
  hc_handler_list *l = NULL;
  hc_err err = hc_list_handlers(conn, key, 0, &l, &st);
  hc_close(conn);
  if (err != HC_OK)
    return hcli_report(g, err, &st);
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(hcli_list_json(l));
  else
    hcli_list_print(l);
  hc_handler_list_free(l);
  return HCLI_EXIT_OK;
}

/* ---- remove -------------------------------------------------------------- */

static int run_remove(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_remove = {
    "remove", "unregister a handler",
    "usage: handlerctl remove --key K --id ID\n"
    "\n"
    "Unregisters handler ID under key K (RemoveHandler). NOT_FOUND (exit 1)\n"
    "when there is no such key or id.\n"
    "\n"
    "  --key K   the key the handler is registered under (required)\n"
    "  --id ID   the handler id, as `add` or `list` show it (required)\n",
    run_remove};

static int run_remove(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{"key", required_argument, NULL, 1},
                                      {"id", required_argument, NULL, 2},
                                      {0, 0, 0, 0}};
  const char *key = NULL, *id = NULL, *arg;
  int c, first;
  while ((c = hcli_next_option(g, &hcli_cmd_remove, argc, argv, own, &arg,
                               &first)) != -1) {
    if (c == 1)
      key = arg;
    else if (c == 2)
      id = arg;
  }
  NO_POSITIONALS(g, argc, argv, first);
  if (key == NULL || *key == '\0')
    return hcli_usage_error(g, "missing --key");
  if (id == NULL || *id == '\0')
    return hcli_usage_error(g, "missing --id");

  int rc;
  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    return rc;
  hc_status st;
  hc_err err = hc_remove_handler(conn, key, id, 0, &st);
  hc_close(conn);
  if (err != HC_OK)
    return hcli_report(g, err, &st);
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(json_pack("{s:s, s:s, s:b}", "key", key, "handler_id", id,
                              "removed", 1));
  else
    printf("removed handler %s from key '%s'\n", id, key);
  return HCLI_EXIT_OK;
}

/* ---- add ----------------------------------------------------------------- */

static int run_add(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_add = {
    "add", "register a local function, a webhook or event routes",
    "usage: handlerctl add --key K (--local NAME | --webhook URL | --route "
    "EVENT=TARGET...)\n"
    "                      [--events E1,E2] [webhook options] [async options]\n"
    "                      [-q]\n"
    "\n"
    "Registers a handler under key K (AddHandler) and prints its id.\n"
    "\n"
    "  --key K              the key (required)\n"
    "  --local NAME         a simple handler running the in-process function "
    "NAME\n"
    "                       (echo, count, last_value, log, or a plugin's)\n"
    "  --webhook URL        a simple handler POSTing each event to an "
    "http(s) URL\n"
    "  --route EVENT=TARGET an event-stream handler: EVENT goes to TARGET,\n"
    "                       `local:NAME` or an http(s) URL; repeat per event\n"
    "  --events E1,E2       a simple handler only receives these events\n"
    "                       (comma-separated, repeatable; default: all)\n"
    "  -q, --quiet          print only the handler id (a generated secret "
    "goes to\n"
    "                       stderr)\n"
    "\n"
    "webhook options (for --webhook and every URL route):\n"
    "  --secret whsec_...   sign requests with this Standard Webhooks secret\n"
    "  --new-secret         let handlerd generate a secret (printed once)\n"
    "  --header 'NAME: V'   an extra request header (repeatable)\n"
    "  --timeout-ms N       per-attempt timeout (default 5000); the call's "
    "own\n"
    "                       deadline is the global --deadline-ms\n"
    "  --max-attempts N     attempts in all, first included (default 5); not\n"
    "                       with --async\n"
    "  --binary-mode        CloudEvents binary content mode (ce-* headers)\n"
    "\n"
    "async delivery (webhook options too; the service needs --state-dir):\n"
    "  --async              deliver out of band, durably: dispatch stores the\n"
    "                       event and answers `accepted` with a delivery id;\n"
    "                       handlerd delivers it later and retries on the\n"
    "                       schedule (see `handlerctl deliveries`)\n"
    "  --ordered            events with the same topic path are delivered one\n"
    "                       at a time, in dispatch order; a failing one holds\n"
    "                       back only its own topic\n"
    "  --retry-schedule S   when attempts are made, comma-separated: the\n"
    "                       first entry is the first attempt, at once, and\n"
    "                       must be 0; each next one is the wait after a\n"
    "                       failure before the next attempt. 0s,1s,5m: at\n"
    "                       once, 1 s after the first failure, 5 min after\n"
    "                       the second, then dead. Units ms, s, m, h, d (a\n"
    "                       bare number is seconds); at most 32 retries, 49\n"
    "                       days each. Default: the service's\n"
    "                       --retry-schedule (about 27 hours)\n"
    "  --max-inflight N     at most N deliveries to this webhook at once\n"
    "                       (default: no limit)\n"
    "  --max-rps R          at most R attempts started per second, e.g. 0.5\n"
    "                       or 20 (default: no limit)\n",
    run_add};

enum {
  A_KEY = 1,
  A_LOCAL,
  A_WEBHOOK,
  A_ROUTE,
  A_EVENTS,
  A_SECRET,
  A_NEW_SECRET,
  A_HEADER,
  A_TIMEOUT,
  A_MAX_ATTEMPTS,
  A_BINARY,
  A_ASYNC,
  A_ORDERED,
  A_RETRY_SCHEDULE,
  A_MAX_INFLIGHT,
  A_MAX_RPS,
  A_QUIET = 'q'
};

#define MAX_LIST 64

typedef struct add_args {
  const char *key, *local, *webhook;
  const char *route_event[MAX_LIST], *route_target[MAX_LIST];
  size_t n_routes;
  const char *events[MAX_LIST];
  size_t n_events;
  hc_property headers[MAX_LIST];
  size_t n_headers;
  hc_webhook hook; /* the shared webhook options */
  int webhook_opts;
  uint32_t schedule[HCLI_RETRY_SCHEDULE_MAX];
  const char *async_only; /* the first option that needs --async */
  int quiet;
  hcli_pool pool;
} add_args;

/* Parses an option that only async webhooks take; returns 0 or a usage
 * exit code. */
static int add_async_option(hcli *g, add_args *a, int c, const char *arg) {
  static const char *const names[] = {[A_ORDERED] = "--ordered",
                                      [A_RETRY_SCHEDULE] = "--retry-schedule",
                                      [A_MAX_INFLIGHT] = "--max-inflight",
                                      [A_MAX_RPS] = "--max-rps"};
  unsigned long n;
  char err[256];
  switch (c) {
  case A_ORDERED:
    a->hook.ordered = 1;
    break;
  case A_RETRY_SCHEDULE:
    if (hcli_parse_retry_schedule(arg, a->schedule, &a->hook.n_retry_schedule,
                                  err, sizeof err) != 0)
      return hcli_usage_error(g, "--retry-schedule: %s", err);
    a->hook.retry_schedule_ms = a->schedule;
    break;
  case A_MAX_INFLIGHT:
    if (hcli_parse_uint(arg, UINT32_MAX, &n) != 0 || n == 0)
      return hcli_usage_error(g,
                              "--max-inflight needs a positive number, not "
                              "'%s'",
                              arg);
    a->hook.max_inflight = (unsigned)n;
    break;
  case A_MAX_RPS:
    if (hcli_parse_rate(arg, &a->hook.max_rps) != 0)
      return hcli_usage_error(g,
                              "--max-rps needs a positive number of attempts "
                              "per second, not '%s'",
                              arg);
    break;
  }
  if (a->async_only == NULL)
    a->async_only = names[c];
  a->webhook_opts = 1;
  return 0;
}

/* Parses one option of `add`; returns 0 or a usage exit code. */
static int add_option(hcli *g, add_args *a, int c, const char *arg) {
  unsigned long n;
  switch (c) {
  case A_KEY:
    a->key = arg;
    return 0;
  case A_LOCAL:
    if (a->local != NULL)
      return hcli_usage_error(g, "--local given twice");
    a->local = arg;
    return 0;
  case A_WEBHOOK:
    if (a->webhook != NULL)
      return hcli_usage_error(g, "--webhook given twice");
    a->webhook = arg;
    return 0;
  case A_ROUTE: {
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg || eq[1] == '\0')
      return hcli_usage_error(
          g,
          "--route takes EVENT=TARGET (TARGET: local:NAME or a URL), not "
          "'%s'",
          arg);
    if (a->n_routes == MAX_LIST)
      return hcli_usage_error(g, "too many --route options");
    char *event = hcli_pool_keep(&a->pool, strndup(arg, (size_t)(eq - arg)));
    for (size_t i = 0; event != NULL && i < a->n_routes; i++)
      if (strcmp(a->route_event[i], event) == 0)
        return hcli_usage_error(g, "two routes for event '%s'", event);
    a->route_event[a->n_routes] = event;
    a->route_target[a->n_routes++] = eq + 1;
    return 0;
  }
  case A_EVENTS: {
    char *copy = hcli_pool_keep(&a->pool, strdup(arg)), *save = NULL;
    for (char *e = copy ? strtok_r(copy, ",", &save) : NULL; e != NULL;
         e = strtok_r(NULL, ",", &save)) {
      while (*e == ' ')
        e++;
      if (*e == '\0')
        continue;
      if (a->n_events == MAX_LIST)
        return hcli_usage_error(g, "too many --events");
      a->events[a->n_events++] = e;
    }
    return 0;
  }
  case A_SECRET:
    a->hook.secret = arg;
    a->webhook_opts = 1;
    return 0;
  case A_NEW_SECRET:
    a->hook.new_secret = 1;
    a->webhook_opts = 1;
    return 0;
  case A_HEADER: {
    const char *colon = strchr(arg, ':');
    if (colon == NULL || colon == arg)
      return hcli_usage_error(g, "--header takes 'NAME: VALUE', not '%s'", arg);
    if (a->n_headers == MAX_LIST)
      return hcli_usage_error(g, "too many --header options");
    const char *value = colon + 1;
    while (*value == ' ' || *value == '\t')
      value++;
    char *name = hcli_pool_keep(&a->pool, strndup(arg, (size_t)(colon - arg)));
    a->headers[a->n_headers].name = name;
    a->headers[a->n_headers++].value = value;
    a->webhook_opts = 1;
    return 0;
  }
  case A_TIMEOUT:
  case A_MAX_ATTEMPTS:
    if (hcli_parse_uint(arg, UINT_MAX, &n) != 0 || n == 0)
      return hcli_usage_error(g, "--%s needs a positive number, not '%s'",
                              c == A_TIMEOUT ? "timeout-ms" : "max-attempts",
                              arg);
    if (c == A_TIMEOUT)
      a->hook.timeout_ms = (unsigned)n;
    else
      a->hook.max_attempts = (unsigned)n;
    a->webhook_opts = 1;
    return 0;
  case A_BINARY:
    a->hook.binary_mode = 1;
    a->webhook_opts = 1;
    return 0;
  case A_ASYNC:
    a->hook.async = 1;
    a->webhook_opts = 1;
    return 0;
  case A_ORDERED:
  case A_RETRY_SCHEDULE:
  case A_MAX_INFLIGHT:
  case A_MAX_RPS:
    return add_async_option(g, a, c, arg);
  case A_QUIET:
    a->quiet = 1;
    return 0;
  }
  return 0;
}

static int is_url(const char *s) {
  return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

/* Checks the combination of options; returns 0 or a usage exit code. */
static int add_check(hcli *g, const add_args *a) {
  if (a->key == NULL || *a->key == '\0')
    return hcli_usage_error(g, "missing --key");
  int targets = (a->local != NULL) + (a->webhook != NULL) + (a->n_routes > 0);
  if (targets == 0)
    return hcli_usage_error(g, "give one of --local NAME, --webhook URL or "
                               "--route EVENT=TARGET");
  if (targets > 1)
    return hcli_usage_error(g, "--local, --webhook and --route exclude each "
                               "other");
  if (a->n_routes > 0 && a->n_events > 0)
    return hcli_usage_error(g, "--events is for --local/--webhook; routes "
                               "already name their events");
  if (a->hook.secret != NULL && a->hook.new_secret)
    return hcli_usage_error(g, "--secret and --new-secret exclude each other");
  int any_url = a->webhook != NULL;
  for (size_t i = 0; i < a->n_routes; i++) {
    const char *t = a->route_target[i];
    if (is_url(t))
      any_url = 1;
    else if (strncmp(t, "local:", 6) != 0 || t[6] == '\0')
      return hcli_usage_error(g,
                              "route target '%s' is neither local:NAME nor "
                              "an http(s) URL",
                              t);
  }
  if (a->webhook_opts && !any_url)
    return hcli_usage_error(g, "webhook options need --webhook URL or a URL "
                               "route");
  if (a->async_only != NULL && !a->hook.async)
    return hcli_usage_error(g, "%s is for async webhooks: add --async",
                            a->async_only);
  if (a->hook.async && a->hook.max_attempts > 0)
    return hcli_usage_error(g, "--max-attempts does not apply to --async: "
                               "the retry schedule decides "
                               "(--retry-schedule)");
  return 0;
}

static int run_add(hcli *g, int argc, char **argv) {
  static const struct option own[] = {
      {"key", required_argument, NULL, A_KEY},
      {"local", required_argument, NULL, A_LOCAL},
      {"webhook", required_argument, NULL, A_WEBHOOK},
      {"route", required_argument, NULL, A_ROUTE},
      {"events", required_argument, NULL, A_EVENTS},
      {"secret", required_argument, NULL, A_SECRET},
      {"new-secret", no_argument, NULL, A_NEW_SECRET},
      {"header", required_argument, NULL, A_HEADER},
      {"timeout-ms", required_argument, NULL, A_TIMEOUT},
      {"max-attempts", required_argument, NULL, A_MAX_ATTEMPTS},
      {"binary-mode", no_argument, NULL, A_BINARY},
      {"async", no_argument, NULL, A_ASYNC},
      {"ordered", no_argument, NULL, A_ORDERED},
      {"retry-schedule", required_argument, NULL, A_RETRY_SCHEDULE},
      {"max-inflight", required_argument, NULL, A_MAX_INFLIGHT},
      {"max-rps", required_argument, NULL, A_MAX_RPS},
      {"quiet", no_argument, NULL, A_QUIET},
      {0, 0, 0, 0}};
  add_args *a = calloc(1, sizeof *a);
  if (a == NULL) {
    fputs("handlerctl: out of memory\n", stderr);
    return HCLI_EXIT_RPC;
  }
  const char *arg;
  int c, first, rc = 0;
  while (rc == 0 && (c = hcli_next_option(g, &hcli_cmd_add, argc, argv, own,
                                          &arg, &first)) != -1)
    rc = add_option(g, a, c, arg);
  if (rc == 0 && first < argc)
    rc = hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (rc == 0)
    rc = add_check(g, a);
  if (rc != 0)
    goto out;

  a->hook.headers = a->headers;
  a->hook.n_headers = a->n_headers;
  hc_webhook hook = a->hook;
  hook.url = a->webhook;
  hc_handler_spec spec = {0};
  spec.key = a->key;
  spec.target.local = a->local;
  spec.target.webhook = a->webhook != NULL ? &hook : NULL;
  spec.events = a->events;
  spec.n_events = a->n_events;
  hc_route routes[MAX_LIST];
  hc_webhook route_hooks[MAX_LIST];
  for (size_t i = 0; i < a->n_routes; i++) {
    const char *t = a->route_target[i];
    memset(&routes[i], 0, sizeof routes[i]);
    routes[i].event = a->route_event[i];
    if (is_url(t)) {
      route_hooks[i] = a->hook;
      route_hooks[i].url = t;
      routes[i].target.webhook = &route_hooks[i];
    } else {
      routes[i].target.local = t + 6;
    }
  }
  spec.routes = routes;
  spec.n_routes = a->n_routes;

  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    goto out;
  hc_status st;
  char *id = NULL, *secret = NULL;
  hc_err err = hc_add_handler(conn, &spec, 0, &id, &secret, &st);
  hc_close(conn);
  if (err != HC_OK) {
    rc = hcli_report(g, err, &st);
    goto out;
  }
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc = json_pack("{s:s, s:s}", "key", a->key, "handler_id", id);
    if (secret != NULL)
      json_object_set_new(doc, "secret", json_string(secret));
    hcli_json_print(doc);
  } else if (a->quiet) {
    puts(id);
  } else {
    static const char *const head[] = {"KEY", "HANDLER", "SECRET"};
    hcli_table *t = hcli_table_new(secret != NULL ? 3 : 2, head);
    const char *row[] = {a->key, id, secret};
    hcli_table_add(t, row);
    hcli_table_print(t, stdout);
  }
  if (secret != NULL && g->output != HCLI_OUT_JSON)
    fprintf(stderr, "handlerctl: %s%s\n", a->quiet ? "secret: " : "",
            a->quiet ? secret
                     : "keep the secret now: handlerd never shows it again");
  hc_free(id);
  hc_free(secret);
  rc = HCLI_EXIT_OK;
out:
  hcli_pool_clear(&a->pool);
  free(a->pool.items);
  free(a);
  return rc;
}
