/*
 * handlerctl dispatch: one event built from flags, sent with Dispatch; prints
 * every handler's result.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static int run_dispatch(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_dispatch = {
    "dispatch", "send one event and print each handler's result",
    "usage: handlerctl dispatch --key K --event E [event arguments]\n"
    "\n"
    "Sends one event (Dispatch) to every handler under key K and prints one\n"
    "row per result, in the order the handlers were added. A handler's own\n"
    "failure is a FAILED row, not a failed command.\n"
    "\n"
    "  --key K               the key (required)\n"
    "  --event E             subscribe, update, unsubscribe, close, error,\n"
    "                        response or a custom name (required)\n"
    "  --args KIND           the arguments to send: none, subscribe, update,\n"
    "                        unsubscribe, error, response (default: from the\n"
    "                        event name; custom events: none)\n"
    "subscribe, update, unsubscribe, close:\n"
    "  --topic PATH          the topic path\n"
    "  --value V             the topic value, read as --type\n"
    "  --type T              json (default), string, int64, double, binary\n"
    "                        or record_v2 (binary types: base64 text)\n"
    "  --old-value V         update: the previous value, same type\n"
    "  --topic-type T        the topic spec's type: json, string, int64,\n"
    "                        double, binary, time_series, record_v2\n"
    "  --property NAME=VAL   a topic property (repeatable)\n"
    "  --reason R            unsubscribe: REQUESTED, CONTROL, REMOVAL,\n"
    "                        AUTHORIZATION, UNKNOWN, BACK_PRESSURE,\n"
    "                        BRANCH_MAPPINGS (default REQUESTED)\n"
    "error:\n"
    "  --code N              the error code\n"
    "  --description TEXT    the error description\n"
    "response:\n"
    "  --conversation-id ID  --sender-session-id ID  --path PATH\n"
    "  --expected N          --received N\n"
    "  --response V          the response value, read as --type\n",
    run_dispatch};

enum {
  D_KEY = 1,
  D_EVENT,
  D_ARGS,
  D_TOPIC,
  D_VALUE,
  D_TYPE,
  D_OLD_VALUE,
  D_TOPIC_TYPE,
  D_PROPERTY,
  D_REASON,
  D_CODE,
  D_DESCRIPTION,
  D_CONVERSATION,
  D_SENDER,
  D_PATH,
  D_EXPECTED,
  D_RECEIVED,
  D_RESPONSE
};

#define MAX_PROPERTIES 64

typedef struct dispatch_args {
  hc_event ev;
  const char *value, *old_value, *type;
  hc_property props[MAX_PROPERTIES];
  hcli_pool pool;
} dispatch_args;

static int dispatch_option(hcli *g, dispatch_args *d, int c, const char *arg) {
  hc_event *ev = &d->ev;
  switch (c) {
  case D_KEY:
    ev->key = arg;
    break;
  case D_EVENT:
    ev->event = arg;
    break;
  case D_ARGS:
    if (hcli_parse_args_kind(arg, &ev->args) != 0)
      return hcli_usage_error(g, "unknown --args '%s'", arg);
    break;
  case D_TOPIC:
  case D_PATH:
    if (ev->topic_path != NULL)
      return hcli_usage_error(g, "--topic/--path given twice");
    ev->topic_path = arg;
    break;
  case D_VALUE:
  case D_RESPONSE:
    if (d->value != NULL)
      return hcli_usage_error(g, "--value/--response given twice");
    d->value = arg;
    break;
  case D_TYPE:
    d->type = arg;
    break;
  case D_OLD_VALUE:
    d->old_value = arg;
    break;
  case D_TOPIC_TYPE:
    if (hcli_parse_topic_type(arg, &ev->topic_type) != 0)
      return hcli_usage_error(g, "unknown --topic-type '%s'", arg);
    break;
  case D_PROPERTY: {
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg)
      return hcli_usage_error(g, "--property takes NAME=VALUE, not '%s'", arg);
    if (ev->n_properties == MAX_PROPERTIES)
      return hcli_usage_error(g, "too many --property options");
    d->props[ev->n_properties].name =
        hcli_pool_keep(&d->pool, strndup(arg, (size_t)(eq - arg)));
    d->props[ev->n_properties++].value = eq + 1;
    break;
  }
  case D_REASON:
    if (hcli_parse_reason(arg, &ev->reason) != 0)
      return hcli_usage_error(g, "unknown --reason '%s'", arg);
    break;
  case D_CODE:
  case D_EXPECTED:
  case D_RECEIVED: {
    int n;
    if (hcli_parse_int32(arg, &n) != 0)
      return hcli_usage_error(g, "--%s needs an integer, not '%s'",
                              c == D_CODE       ? "code"
                              : c == D_EXPECTED ? "expected"
                                                : "received",
                              arg);
    if (c == D_CODE)
      ev->error_code = n;
    else if (c == D_EXPECTED)
      ev->expected = n;
    else
      ev->received = n;
    break;
  }
  case D_DESCRIPTION:
    ev->error_description = arg;
    break;
  case D_CONVERSATION:
    ev->conversation_id = arg;
    break;
  case D_SENDER:
    ev->sender_session_id = arg;
    break;
  }
  return 0;
}

/* Converts the value options once the type is known. */
static int dispatch_values(hcli *g, dispatch_args *d) {
  hc_value_type t = HC_VALUE_JSON;
  char err[256];
  if (d->type != NULL && hcli_parse_value_type(d->type, &t) != 0)
    return hcli_usage_error(g,
                            "unknown --type '%s' (json, string, int64, "
                            "double, binary, record_v2)",
                            d->type);
  if (d->value != NULL &&
      hcli_value_from_text(t, d->value, &d->pool, &d->ev.value, err,
                           sizeof err) != 0)
    return hcli_usage_error(g, "the value %s", err);
  if (d->old_value != NULL &&
      hcli_value_from_text(t, d->old_value, &d->pool, &d->ev.old_value, err,
                           sizeof err) != 0)
    return hcli_usage_error(g, "--old-value %s", err);
  return 0;
}

static hc_err dispatch_call(hc_conn *conn, const void *in, void *out,
                            hc_status *st) {
  return hc_dispatch(conn, in, 0, out, st);
}

static int run_dispatch(hcli *g, int argc, char **argv) {
  static const struct option own[] = {
      {"key", required_argument, NULL, D_KEY},
      {"event", required_argument, NULL, D_EVENT},
      {"args", required_argument, NULL, D_ARGS},
      {"topic", required_argument, NULL, D_TOPIC},
      {"value", required_argument, NULL, D_VALUE},
      {"type", required_argument, NULL, D_TYPE},
      {"old-value", required_argument, NULL, D_OLD_VALUE},
      {"topic-type", required_argument, NULL, D_TOPIC_TYPE},
      {"property", required_argument, NULL, D_PROPERTY},
      {"reason", required_argument, NULL, D_REASON},
      {"code", required_argument, NULL, D_CODE},
      {"description", required_argument, NULL, D_DESCRIPTION},
      {"conversation-id", required_argument, NULL, D_CONVERSATION},
      {"sender-session-id", required_argument, NULL, D_SENDER},
      {"path", required_argument, NULL, D_PATH},
      {"expected", required_argument, NULL, D_EXPECTED},
      {"received", required_argument, NULL, D_RECEIVED},
      {"response", required_argument, NULL, D_RESPONSE},
      {0, 0, 0, 0}};
  dispatch_args *d = calloc(1, sizeof *d);
  if (d == NULL) {
    fputs("handlerctl: out of memory\n", stderr);
    return HCLI_EXIT_RPC;
  }
  d->ev.properties = d->props;
  const char *arg;
  int c, first, rc = 0;
  while (rc == 0 && (c = hcli_next_option(g, &hcli_cmd_dispatch, argc, argv,
                                          own, &arg, &first)) != -1)
    rc = dispatch_option(g, d, c, arg);
  if (rc == 0 && first < argc)
    rc = hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (rc == 0 && (d->ev.key == NULL || *d->ev.key == '\0'))
    rc = hcli_usage_error(g, "missing --key");
  if (rc == 0 && (d->ev.event == NULL || *d->ev.event == '\0'))
    rc = hcli_usage_error(g, "missing --event (update, subscribe, ...)");
  if (rc == 0)
    rc = dispatch_values(g, d);
  if (rc != 0)
    goto out;

  hc_results *r = NULL;
  rc = hcli_call(g, dispatch_call, &d->ev, &r);
  if (rc != 0)
    goto out;
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(hcli_results_json(r));
  else
    hcli_results_print(r);
  hc_results_free(r);
  rc = HCLI_EXIT_OK;
out:
  hcli_pool_clear(&d->pool);
  free(d->pool.items);
  free(d);
  return rc;
}
