/*
 * handlerctl: registering a handler and changing it in place - add and
 * update (one code path over the registration flags of handler_args.c;
 * update is a whole new registration under the same id, UpdateHandler) and
 * rotate-secret (a webhook's signing secret with an overlap, RotateSecret).
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

/* ---- add, update --------------------------------------------------------- */

static int run_add(hcli *g, int argc, char **argv);
static int run_update(hcli *g, int argc, char **argv);

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

/* The command line of an add or an update. */
typedef struct registration {
  int update;
  hcli_handler_args *a;
  const char *id; /* update's --id */
  int quiet;      /* add's -q */
} registration;

/* What the call returned. */
typedef struct registered {
  char *id;     /* the id AddHandler gave */
  char *secret; /* a secret handlerd generated, or NULL */
} registered;

enum { OWN_ID = 1, OWN_QUIET = 'q' };

/* Reads the command line of add or update into `r`: 0, or the exit code of
 * a usage error (reported). */
static int registration_args(hcli *g, int argc, char **argv, registration *r) {
  static const struct option add_own[] = {
      HCLI_HANDLER_OPTIONS,
      {"quiet", no_argument, NULL, OWN_QUIET},
      {0, 0, 0, 0}};
  static const struct option update_own[] = {
      HCLI_HANDLER_OPTIONS,
      {"id", required_argument, NULL, OWN_ID},
      {0, 0, 0, 0}};
  const hcli_command *cmd = r->update ? &hcli_cmd_update : &hcli_cmd_add;
  const struct option *own = r->update ? update_own : add_own;
  const char *arg;
  char why[512];
  int c, first, rc = 0;
  while (rc == 0 &&
         (c = hcli_next_option(g, cmd, argc, argv, own, &arg, &first)) != -1) {
    if (c == OWN_QUIET)
      r->quiet = 1;
    else if (c == OWN_ID)
      r->id = arg;
    else if (hcli_handler_option(r->a, c, arg, why, sizeof why) < 0)
      rc = hcli_usage_error(g, "%s", why);
  }
  if (rc != 0)
    return rc;
  if (first < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (r->a->key == NULL || *r->a->key == '\0')
    return hcli_usage_error(g, "missing --key");
  if (r->update && (r->id == NULL || *r->id == '\0'))
    return hcli_usage_error(g, "missing --id");
  if (hcli_handler_check(r->a, why, sizeof why) != 0)
    return hcli_usage_error(g, "%s", why);
  return 0;
}

static hc_err registration_call(hc_conn *conn, const void *in, void *out,
                                hc_status *st) {
  const registration *r = in;
  registered *done = out;
  const hc_handler_spec *spec = hcli_handler_spec(r->a);
  if (r->update)
    return hc_update_handler(conn, r->id, spec, 0, &done->secret, st);
  return hc_add_handler(conn, spec, 0, &done->id, &done->secret, st);
}

static void registration_print(const hcli *g, const registration *r,
                               const registered *done) {
  const char *key = r->a->key, *id = r->update ? r->id : done->id;
  const char *secret = done->secret;
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc = json_pack("{s:s, s:s}", "key", key, "handler_id", id);
    if (r->update)
      json_object_set_new(doc, "updated", json_true());
    if (secret != NULL)
      json_object_set_new(doc, "secret", json_string(secret));
    hcli_json_print(doc);
    return;
  }
  if (r->quiet) {
    puts(id);
  } else if (r->update && secret == NULL) {
    printf("updated handler %s under key '%s'\n", id, key);
  } else {
    static const char *const head[] = {"KEY", "HANDLER", "SECRET"};
    hcli_table *t = hcli_table_new(secret != NULL ? 3 : 2, head);
    const char *row[] = {key, id, secret};
    hcli_table_add(t, row);
    hcli_table_print(t, stdout);
  }
  if (secret != NULL && r->quiet)
    fprintf(stderr, "handlerctl: secret: %s\n", secret);
  else if (secret != NULL)
    secret_warning();
}

static int run_registration(hcli *g, int update, int argc, char **argv) {
  registration r = {.update = update, .a = hcli_handler_args_new()};
  if (r.a == NULL) {
    fputs("handlerctl: out of memory\n", stderr);
    return HCLI_EXIT_RPC;
  }
  registered done = {NULL, NULL};
  int rc = registration_args(g, argc, argv, &r);
  if (rc == 0)
    rc = hcli_call(g, registration_call, &r, &done);
  if (rc == 0)
    registration_print(g, &r, &done);
  hc_free(done.id);
  hc_free(done.secret);
  hcli_handler_args_free(r.a);
  return rc;
}

static int run_add(hcli *g, int argc, char **argv) {
  return run_registration(g, 0, argc, argv);
}

static int run_update(hcli *g, int argc, char **argv) {
  return run_registration(g, 1, argc, argv);
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

/* What RotateSecret answered: the new secret and when the old one stops. */
typedef struct rotated {
  char *secret;
  int64_t until;
} rotated;

static hc_err rotation_call(hc_conn *conn, const void *in, void *out,
                            hc_status *st) {
  rotated *r = out;
  return hc_rotate_secret(conn, in, 0, &r->secret, &r->until, st);
}

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

  rotated r = {NULL, 0};
  int rc = hcli_call(g, rotation_call, &spec, &r);
  if (rc != 0)
    return rc;
  char when[64];
  hcli_time_text(r.until, when, sizeof when);
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:I, s:s}", "key", spec.key, "handler_id",
                  spec.handler_id, "secret", r.secret, "previous_expires_at_ms",
                  (json_int_t)r.until, "previous_expires_at", when);
    if (spec.route != NULL)
      json_object_set_new(doc, "route", json_string(spec.route));
    hcli_json_print(doc);
  } else {
    static const char *const head[] = {"KEY", "HANDLER", "ROUTE", "SECRET",
                                       "OLD SECRET UNTIL"};
    hcli_table *t = hcli_table_new(5, head);
    const char *row[] = {spec.key, spec.handler_id,
                         spec.route != NULL ? spec.route : "-", r.secret, when};
    hcli_table_add(t, row);
    hcli_table_print(t, stdout);
    secret_warning();
  }
  hc_free(r.secret);
  return HCLI_EXIT_OK;
}
