/*
 * handlerctl: the control commands - health, list, add, remove. The
 * flags add shares with update are in handler_args.c; update and
 * rotate-secret in cmd_update.c.
 */
#include "handler_args.h"

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
    "remove", "unregister a handler, or one route of it",
    "usage: handlerctl remove --key K --id ID [--route EVENT]\n"
    "\n"
    "Unregisters handler ID under key K (RemoveHandler). NOT_FOUND (exit 1)\n"
    "when there is no such key or id.\n"
    "\n"
    "  --key K        the key the handler is registered under (required)\n"
    "  --id ID        the handler id, as `add` or `list` show it (required)\n"
    "  --route EVENT  remove only the route of event EVENT from an\n"
    "                 event-stream handler; it keeps its id and other\n"
    "                 routes, and removing its last route removes it.\n"
    "                 NOT_FOUND (exit 1) when it has no such route\n",
    run_remove};

static int run_remove(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{"key", required_argument, NULL, 1},
                                      {"id", required_argument, NULL, 2},
                                      {"route", required_argument, NULL, 3},
                                      {0, 0, 0, 0}};
  const char *key = NULL, *id = NULL, *route = NULL, *arg;
  int c, first;
  while ((c = hcli_next_option(g, &hcli_cmd_remove, argc, argv, own, &arg,
                               &first)) != -1) {
    if (c == 1)
      key = arg;
    else if (c == 2)
      id = arg;
    else if (c == 3)
      route = arg;
  }
  NO_POSITIONALS(g, argc, argv, first);
  if (key == NULL || *key == '\0')
    return hcli_usage_error(g, "missing --key");
  if (id == NULL || *id == '\0')
    return hcli_usage_error(g, "missing --id");
  char why[256];
  if (route != NULL && hcli_check_route_name(route, why, sizeof why) != 0)
    return hcli_usage_error(g, "%s", why);

  int rc;
  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    return rc;
  hc_status st;
  hc_err err = hc_remove_route(conn, key, id, route, 0, &st);
  hc_close(conn);
  if (err != HC_OK)
    return hcli_report(g, err, &st);
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc = json_pack("{s:s, s:s, s:b}", "key", key, "handler_id", id,
                            "removed", 1);
    if (route != NULL)
      json_object_set_new(doc, "route", json_string(route));
    hcli_json_print(doc);
  } else if (route != NULL) {
    printf("removed route '%s' of handler %s under key '%s'\n", route, id, key);
  } else {
    printf("removed handler %s from key '%s'\n", id, key);
  }
  return HCLI_EXIT_OK;
}

/* ---- add ----------------------------------------------------------------- */

static int run_add(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_add = {
    "add", "register a local function, a webhook or event routes",
    "usage: handlerctl add --key K (--local NAME | --webhook URL | --route "
    "EVENT=TARGET...)\n"
    "                      [--events E1,E2] [--selector SEL] "
    "[--derive-old-value]\n"
    "                      [webhook options] [async options] [-q]\n"
    "\n"
    "Registers a handler under key K (AddHandler) and prints its id.\n"
    "\n"
    "  --key K              the key (required)\n" HCLI_HANDLER_HELP_TARGET
    "  -q, --quiet          print only the handler id (a generated secret "
    "goes to\n"
    "                       stderr)\n"
    "\n" HCLI_HANDLER_HELP_WEBHOOK,
    run_add};

enum { A_QUIET = 'q' };

static int run_add(hcli *g, int argc, char **argv) {
  static const struct option own[] = {HCLI_HANDLER_OPTIONS,
                                      {"quiet", no_argument, NULL, A_QUIET},
                                      {0, 0, 0, 0}};
  hcli_handler_args *a = hcli_handler_args_new();
  if (a == NULL) {
    fputs("handlerctl: out of memory\n", stderr);
    return HCLI_EXIT_RPC;
  }
  const char *arg;
  char why[512];
  int c, first, rc = 0, quiet = 0;
  while (rc == 0 && (c = hcli_next_option(g, &hcli_cmd_add, argc, argv, own,
                                          &arg, &first)) != -1) {
    if (c == A_QUIET)
      quiet = 1;
    else if (hcli_handler_option(a, c, arg, why, sizeof why) < 0)
      rc = hcli_usage_error(g, "%s", why);
  }
  if (rc == 0 && first < argc)
    rc = hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (rc == 0 && hcli_handler_check(a, why, sizeof why) != 0)
    rc = hcli_usage_error(g, "%s", why);
  if (rc != 0)
    goto out;
  const hc_handler_spec *spec = hcli_handler_spec(a);

  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    goto out;
  hc_status st;
  char *id = NULL, *secret = NULL;
  hc_err err = hc_add_handler(conn, spec, 0, &id, &secret, &st);
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
  } else if (quiet) {
    puts(id);
  } else {
    static const char *const head[] = {"KEY", "HANDLER", "SECRET"};
    hcli_table *t = hcli_table_new(secret != NULL ? 3 : 2, head);
    const char *row[] = {a->key, id, secret};
    hcli_table_add(t, row);
    hcli_table_print(t, stdout);
  }
  if (secret != NULL && g->output != HCLI_OUT_JSON)
    fprintf(stderr, "handlerctl: %s%s\n", quiet ? "secret: " : "",
            quiet ? secret
                  : "keep the secret now: handlerd never shows it again");
  hc_free(id);
  hc_free(secret);
  rc = HCLI_EXIT_OK;
out:
  hcli_handler_args_free(a);
  return rc;
}
