/*
 * handlerctl: the control commands - health, list, remove. add, update and
 * rotate-secret are in cmd_update.c.
 */
#include "handler_args.h"

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

static hc_err health_call(hc_conn *conn, const void *in, void *out,
                          hc_status *st) {
  return hc_health_check(conn, in, 0, out, st);
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

  hc_serving_status s = HC_HEALTH_UNKNOWN;
  int rc = hcli_call(g, health_call, service, &s);
  if (rc != 0)
    return rc;
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

static hc_err list_call(hc_conn *conn, const void *in, void *out,
                        hc_status *st) {
  return hc_list_handlers(conn, in, 0, out, st);
}

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

  hc_handler_list *l = NULL;
  int rc = hcli_call(g, list_call, key, &l);
  if (rc != 0)
    return rc;
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

/* The handler to remove, or the handler of the route to remove. */
typedef struct removal {
  const char *key, *id, *route;
} removal;

static hc_err remove_call(hc_conn *conn, const void *in, void *out,
                          hc_status *st) {
  const removal *r = in;
  (void)out;
  return hc_remove_route(conn, r->key, r->id, r->route, 0, st);
}

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

  int rc = hcli_call(g, remove_call, &(removal){key, id, route}, NULL);
  if (rc != 0)
    return rc;
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
