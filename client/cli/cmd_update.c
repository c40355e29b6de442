/*
 * handlerctl: changing a registered handler in place - update (a whole new
 * registration under the same id, UpdateHandler) and rotate-secret (a
 * webhook's signing secret with an overlap, RotateSecret). The
 * registration flags are add's (handler_args.c).
 */
#include "handler_args.h"

#include <stdlib.h>
#include <string.h>

/* Prints "handlerctl: keep the secret now ..." on stderr after a table that
 * shows a secret. */
static void secret_warning(void) {
  fputs("handlerctl: keep the secret now: handlerd never shows it again\n",
        stderr);
}

/* ---- update -------------------------------------------------------------- */

static int run_update(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_update = {
    "update", "change a handler in place (same id)",
    "usage: handlerctl update --key K --id ID (--local NAME | --webhook URL |"
    "\n"
    "                         --route EVENT=TARGET...) [--events E1,E2]\n"
    "                         [--selector SEL] [--derive-old-value]\n"
    "                         [webhook options] [async options]\n"
    "\n"
    "Replaces the registration of handler ID under key K with the one these\n"
    "flags describe, whole, as `add` would make it (UpdateHandler): what is\n"
    "not given is not kept (a selector, events, headers, ...). The handler\n"
    "keeps its id, its place among the key's handlers and, for an async\n"
    "webhook, its deliveries. All or nothing: a refused update changes\n"
    "nothing. A webhook given neither --secret nor --new-secret keeps the\n"
    "secret it had at the same place (the target, or the route of the same\n"
    "event), a rotation in progress included. NOT_FOUND (exit 1) when there\n"
    "is no such key or id.\n"
    "\n"
    "  --key K              the key (required)\n"
    "  --id ID              the handler, as `add` or `list` show it "
    "(required)\n" HCLI_HANDLER_HELP_TARGET "\n" HCLI_HANDLER_HELP_WEBHOOK,
    run_update};

enum { U_ID = 1 };

static int run_update(hcli *g, int argc, char **argv) {
  static const struct option own[] = {HCLI_HANDLER_OPTIONS,
                                      {"id", required_argument, NULL, U_ID},
                                      {0, 0, 0, 0}};
  hcli_handler_args *a = hcli_handler_args_new();
  if (a == NULL) {
    fputs("handlerctl: out of memory\n", stderr);
    return HCLI_EXIT_RPC;
  }
  const char *arg, *id = NULL;
  char why[512];
  int c, first, rc = 0;
  while (rc == 0 && (c = hcli_next_option(g, &hcli_cmd_update, argc, argv, own,
                                          &arg, &first)) != -1) {
    if (c == U_ID)
      id = arg;
    else if (hcli_handler_option(a, c, arg, why, sizeof why) < 0)
      rc = hcli_usage_error(g, "%s", why);
  }
  if (rc == 0 && first < argc)
    rc = hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (rc == 0 && (a->key == NULL || *a->key == '\0'))
    rc = hcli_usage_error(g, "missing --key");
  if (rc == 0 && (id == NULL || *id == '\0'))
    rc = hcli_usage_error(g, "missing --id");
  if (rc == 0 && hcli_handler_check(a, why, sizeof why) != 0)
    rc = hcli_usage_error(g, "%s", why);
  if (rc != 0)
    goto out;
  const hc_handler_spec *spec = hcli_handler_spec(a);

  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    goto out;
  hc_status st;
  char *secret = NULL;
  hc_err err = hc_update_handler(conn, id, spec, 0, &secret, &st);
  hc_close(conn);
  if (err != HC_OK) {
    rc = hcli_report(g, err, &st);
    goto out;
  }
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc = json_pack("{s:s, s:s, s:b}", "key", a->key, "handler_id", id,
                            "updated", 1);
    if (secret != NULL)
      json_object_set_new(doc, "secret", json_string(secret));
    hcli_json_print(doc);
  } else if (secret != NULL) {
    static const char *const head[] = {"KEY", "HANDLER", "SECRET"};
    hcli_table *t = hcli_table_new(3, head);
    const char *row[] = {a->key, id, secret};
    hcli_table_add(t, row);
    hcli_table_print(t, stdout);
    secret_warning();
  } else {
    printf("updated handler %s under key '%s'\n", id, a->key);
  }
  hc_free(secret);
  rc = HCLI_EXIT_OK;
out:
  hcli_handler_args_free(a);
  return rc;
}

/* ---- rotate-secret ------------------------------------------------------- */

static int run_rotate(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_rotate_secret = {
    "rotate-secret", "give a webhook a new signing secret, with an overlap",
    "usage: handlerctl rotate-secret --key K --id ID [--route EVENT]\n"
    "                                [--overlap DURATION] [--secret "
    "whsec_...]\n"
    "\n"
    "Gives a webhook of handler ID under key K a new Standard Webhooks\n"
    "signing secret without downtime (RotateSecret) and prints it, once,\n"
    "with the time the old one stops being sent. During the overlap every\n"
    "request carries both signatures (webhook-signature: v1,<new> v1,<old>),\n"
    "so receivers that know either secret accept it; after it only the new\n"
    "one. NOT_FOUND (exit 1): no such handler or route; FAILED_PRECONDITION:\n"
    "not a webhook.\n"
    "\n"
    "  --key K            the key (required)\n"
    "  --id ID            the handler (required)\n"
    "  --route EVENT      an event-stream handler's webhook: the route of\n"
    "                     EVENT (default: a simple handler's target)\n"
    "  --overlap D        how long the old secret stays valid: a whole\n"
    "                     number with ms, s, m, h or d (300ms, 1h, 7d; a\n"
    "                     bare number is seconds). Default: 24h\n"
    "  --secret whsec_... the new secret (default: handlerd generates one)\n",
    run_rotate};

enum { R_KEY = 1, R_ID, R_ROUTE, R_OVERLAP, R_SECRET };

static int run_rotate(hcli *g, int argc, char **argv) {
  static const struct option own[] = {
      {"key", required_argument, NULL, R_KEY},
      {"id", required_argument, NULL, R_ID},
      {"route", required_argument, NULL, R_ROUTE},
      {"overlap", required_argument, NULL, R_OVERLAP},
      {"secret", required_argument, NULL, R_SECRET},
      {0, 0, 0, 0}};
  hc_rotate_spec spec = {0};
  const char *arg;
  char why[512];
  int c, first;
  while ((c = hcli_next_option(g, &hcli_cmd_rotate_secret, argc, argv, own,
                               &arg, &first)) != -1) {
    switch (c) {
    case R_KEY:
      spec.key = arg;
      break;
    case R_ID:
      spec.handler_id = arg;
      break;
    case R_ROUTE:
      if (hcli_check_route_name(arg, why, sizeof why) != 0)
        return hcli_usage_error(g, "%s", why);
      spec.route = arg;
      break;
    case R_OVERLAP:
      if (hcli_parse_overlap_ms(arg, &spec.overlap_ms, why, sizeof why) != 0)
        return hcli_usage_error(g, "%s", why);
      break;
    case R_SECRET:
      if (*arg == '\0')
        return hcli_usage_error(g, "--secret must not be empty (leave it out "
                                   "to have one generated)");
      spec.secret = arg;
      break;
    }
  }
  if (first < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (spec.key == NULL || *spec.key == '\0')
    return hcli_usage_error(g, "missing --key");
  if (spec.handler_id == NULL || *spec.handler_id == '\0')
    return hcli_usage_error(g, "missing --id");

  int rc;
  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    return rc;
  hc_status st;
  char *secret = NULL;
  int64_t until = 0;
  hc_err err = hc_rotate_secret(conn, &spec, 0, &secret, &until, &st);
  hc_close(conn);
  if (err != HC_OK)
    return hcli_report(g, err, &st);
  char when[64];
  hcli_time_text(until, when, sizeof when);
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:I, s:s}", "key", spec.key, "handler_id",
                  spec.handler_id, "secret", secret, "previous_expires_at_ms",
                  (json_int_t)until, "previous_expires_at", when);
    if (spec.route != NULL)
      json_object_set_new(doc, "route", json_string(spec.route));
    hcli_json_print(doc);
  } else {
    static const char *const head[] = {"KEY", "HANDLER", "ROUTE", "SECRET",
                                       "OLD SECRET UNTIL"};
    hcli_table *t = hcli_table_new(5, head);
    const char *row[] = {spec.key, spec.handler_id,
                         spec.route != NULL ? spec.route : "-", secret, when};
    hcli_table_add(t, row);
    hcli_table_print(t, stdout);
    secret_warning();
  }
  hc_free(secret);
  return HCLI_EXIT_OK;
}
