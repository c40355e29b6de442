/*
 * handlerctl: acting on async webhook deliveries - redeliver (one, now),
 * replay (a handler's deliveries in a time range) and enable (a webhook
 * disabled after failing).
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* ---- redeliver ----------------------------------------------------------- */

static int run_redeliver(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_redeliver = {
    "redeliver", "deliver one async delivery again, now",
    "usage: handlerctl redeliver ID\n"
    "\n"
    "Makes one more attempt at delivery ID now, whatever its state, dead\n"
    "included (Redeliver; a manual attempt). The receiver gets the same\n"
    "webhook-id as before, so it can tell a repeat. NOT_FOUND (exit 1) when\n"
    "there is no such delivery.\n",
    run_redeliver};

static hc_err redeliver_call(hc_conn *conn, const void *in, void *out,
                             hc_status *st) {
  (void)out;
  return hc_redeliver(conn, in, 0, st);
}

static int run_redeliver(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{0, 0, 0, 0}};
  const char *arg;
  int first;
  while (hcli_next_option(g, &hcli_cmd_redeliver, argc, argv, own, &arg,
                          &first) != -1)
    ;
  if (first >= argc || argv[first][0] == '\0')
    return hcli_usage_error(g, "missing the delivery id: handlerctl "
                               "redeliver ID");
  if (first + 1 < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first + 1]);
  const char *id = argv[first];

  int rc = hcli_call(g, redeliver_call, id, NULL);
  if (rc != 0)
    return rc;
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(
        json_pack("{s:s, s:b}", "delivery_id", id, "redelivering", 1));
  else
    printf("redelivering %s\n", id);
  return HCLI_EXIT_OK;
}

/* ---- replay -------------------------------------------------------------- */

static int run_replay(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_replay = {
    "replay", "deliver a handler's async deliveries in a time range again",
    "usage: handlerctl replay --id H --since T [--until T] [--state S]\n"
    "                         [--limit N]\n"
    "\n"
    "Queues again for delivery every delivery of handler H created in the\n"
    "range (Replay), e.g. after a receiver lost data, and prints how many.\n"
    "Each keeps its webhook-id, so a receiver can tell a repeat. At most\n"
    "--limit per call: when more matched, stderr says so (-o json:\n"
    "\"truncated\": true); replay the rest with a narrower range.\n"
    "\n"
    "  --id H      the handler (required)\n"
    "  --since T   created at or after T (required)\n"
    "  --until T   created before T (default: now)\n"
    "  --state S   only deliveries in state S: pending, in_flight,\n"
    "              succeeded, failed or dead (default: succeeded, failed\n"
    "              and dead)\n"
    "  --limit N   at most N, 1 to 10000 (default 1000)\n"
    "\n"
    "T is RFC 3339 (2026-11-30T12:00:00Z, or with an offset: +02:00) or a\n"
    "duration ago with its unit (90s, 30m, 1h, 2d).\n",
    run_replay};

enum { R_ID = 1, R_SINCE, R_UNTIL, R_STATE, R_LIMIT };

static int replay_option(hcli *g, hc_replay_spec *r, int c, const char *arg) {
  unsigned long n;
  char err[256];
  switch (c) {
  case R_ID:
    r->handler_id = arg;
    return 0;
  case R_SINCE:
  case R_UNTIL:
    if (hcli_parse_time_ms(arg, hcli_now_ms(),
                           c == R_SINCE ? &r->since_ms : &r->until_ms, err,
                           sizeof err) != 0)
      return hcli_usage_error(g, "--%s: %s", c == R_SINCE ? "since" : "until",
                              err);
    return 0;
  case R_STATE:
    if (hcli_parse_delivery_state(arg, &r->state) != 0)
      return hcli_usage_error(g,
                              "unknown --state '%s' (pending, in_flight, "
                              "succeeded, failed, dead)",
                              arg);
    return 0;
  case R_LIMIT:
    if (hcli_parse_uint(arg, 10000, &n) != 0 || n == 0)
      return hcli_usage_error(g, "--limit is 1 to 10000, not '%s'", arg);
    r->limit = (unsigned)n;
    return 0;
  }
  return 0;
}

/* What Replay answered. */
typedef struct replayed {
  unsigned count;
  int truncated;
} replayed;

static hc_err replay_call(hc_conn *conn, const void *in, void *out,
                          hc_status *st) {
  replayed *r = out;
  return hc_replay(conn, in, 0, &r->count, &r->truncated, st);
}

static int run_replay(hcli *g, int argc, char **argv) {
  static const struct option own[] = {
      {"id", required_argument, NULL, R_ID},
      {"since", required_argument, NULL, R_SINCE},
      {"until", required_argument, NULL, R_UNTIL},
      {"state", required_argument, NULL, R_STATE},
      {"limit", required_argument, NULL, R_LIMIT},
      {0, 0, 0, 0}};
  hc_replay_spec r = {0};
  int since_given = 0;
  const char *arg;
  int c, first, rc = 0;
  while (rc == 0 && (c = hcli_next_option(g, &hcli_cmd_replay, argc, argv, own,
                                          &arg, &first)) != -1) {
    since_given |= c == R_SINCE;
    rc = replay_option(g, &r, c, arg);
  }
  if (rc != 0)
    return rc;
  if (first < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (r.handler_id == NULL || *r.handler_id == '\0')
    return hcli_usage_error(g, "missing --id");
  if (!since_given)
    return hcli_usage_error(g, "missing --since (e.g. --since 1h or --since "
                               "2026-11-30T12:00:00Z)");
  /* since_ms 0 is the API's "not given": 1970-01-01T00:00:00Z itself
   * would be refused by the server, so send the next millisecond. */
  if (r.since_ms == 0)
    r.since_ms = 1;
  if (r.until_ms > 0 && r.since_ms >= r.until_ms)
    return hcli_usage_error(g, "--since must be before --until");

  replayed done = {0, 0};
  rc = hcli_call(g, replay_call, &r, &done);
  if (rc != 0)
    return rc;
  if (g->output == HCLI_OUT_JSON) {
    hcli_json_print(json_pack("{s:s, s:i, s:b}", "handler_id", r.handler_id,
                              "replayed", (int)done.count, "truncated",
                              done.truncated));
    return HCLI_EXIT_OK;
  }
  printf("replayed %u deliver%s of handler %s\n", done.count,
         done.count == 1 ? "y" : "ies", r.handler_id);
  if (done.truncated)
    /* Which ones were left out depends on the server's order (the API
     * does not say which end it keeps), so the hint names no direction. */
    fprintf(stderr, "handlerctl: more deliveries matched than --limit; "
                    "replay the rest with a narrower --since/--until\n");
  return HCLI_EXIT_OK;
}

/* ---- enable -------------------------------------------------------------- */

static int run_enable(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_enable = {
    "enable", "resume a handler's disabled async webhooks",
    "usage: handlerctl enable --key K --id H\n"
    "\n"
    "Resumes handler H's async webhooks that handlerd disabled after they\n"
    "had only failed for its --disable-after (EnableWebhook; `list` shows\n"
    "them as DISABLED); their waiting deliveries go on. Prints how many were\n"
    "disabled (0: none was). NOT_FOUND (exit 1) when there is no such\n"
    "handler under K.\n"
    "\n"
    "  --key K   the key the handler is registered under (required)\n"
    "  --id H    the handler id (required)\n",
    run_enable};

/* in: the key and the handler id. */
static hc_err enable_call(hc_conn *conn, const void *in, void *out,
                          hc_status *st) {
  const char *const *key_id = in;
  return hc_enable_webhook(conn, key_id[0], key_id[1], 0, out, st);
}

static int run_enable(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{"key", required_argument, NULL, 1},
                                      {"id", required_argument, NULL, 2},
                                      {0, 0, 0, 0}};
  const char *key = NULL, *id = NULL, *arg;
  int c, first;
  while ((c = hcli_next_option(g, &hcli_cmd_enable, argc, argv, own, &arg,
                               &first)) != -1) {
    if (c == 1)
      key = arg;
    else if (c == 2)
      id = arg;
  }
  if (first < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if (key == NULL || *key == '\0')
    return hcli_usage_error(g, "missing --key");
  if (id == NULL || *id == '\0')
    return hcli_usage_error(g, "missing --id");

  const char *key_id[] = {key, id};
  unsigned enabled = 0;
  int rc = hcli_call(g, enable_call, key_id, &enabled);
  if (rc != 0)
    return rc;
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(json_pack("{s:s, s:s, s:i}", "key", key, "handler_id", id,
                              "enabled", (int)enabled));
  else if (enabled == 0)
    printf("handler %s under key '%s' had no disabled webhook\n", id, key);
  else
    printf("enabled %u webhook%s of handler %s under key '%s'\n", enabled,
           enabled == 1 ? "" : "s", id, key);
  return HCLI_EXIT_OK;
}
