/*
 * handlerctl: the registration flags `add` and `update` share (the key,
 * the target, routes, events, selector, derive_old_value, webhook and async
 * options), turned into an hc_handler_spec; and the arguments of
 * `rotate-secret` and `remove --route`. Part of hcli_base, so the unit
 * tests (tests/unit/cli/test_cli_handler_args.c) check the code handlerctl
 * runs. The parsers never print: they return -1 with the reason in `err`,
 * which the command reports as a usage error (exit 2).
 */
#ifndef HANDLERCTL_HANDLER_ARGS_H
#define HANDLERCTL_HANDLER_ARGS_H

#include "cli.h"

/* Option values of the shared flags: above the letters and the commands'
 * own small values, below HCLI_OPT_GLOBAL_BASE. */
enum {
  HCLI_H_KEY = 0x100,
  HCLI_H_LOCAL,
  HCLI_H_WEBHOOK,
  HCLI_H_ROUTE,
  HCLI_H_EVENTS,
  HCLI_H_SELECTOR,
  HCLI_H_DERIVE_OLD_VALUE,
  /* The webhook options, to HCLI_H_END; from HCLI_H_ORDERED on, only for
   * async webhooks. */
  HCLI_H_SECRET,
  HCLI_H_NEW_SECRET,
  HCLI_H_HEADER,
  HCLI_H_TIMEOUT,
  HCLI_H_MAX_ATTEMPTS,
  HCLI_H_BINARY,
  HCLI_H_ASYNC,
  HCLI_H_ORDERED,
  HCLI_H_RETRY_SCHEDULE,
  HCLI_H_MAX_INFLIGHT,
  HCLI_H_MAX_RPS,
  HCLI_H_END /* not an option */
};

/* The shared flags as `struct option` entries, for a command's own table:
 * { HCLI_HANDLER_OPTIONS, {"id", ...}, {0, 0, 0, 0} }. Their --timeout-ms
 * is the webhook's, not the global one. */
/* clang-format off */
#define HCLI_HANDLER_OPTIONS                                                 \
  {"key", required_argument, NULL, HCLI_H_KEY},                              \
  {"local", required_argument, NULL, HCLI_H_LOCAL},                          \
  {"webhook", required_argument, NULL, HCLI_H_WEBHOOK},                      \
  {"route", required_argument, NULL, HCLI_H_ROUTE},                          \
  {"events", required_argument, NULL, HCLI_H_EVENTS},                        \
  {"selector", required_argument, NULL, HCLI_H_SELECTOR},                    \
  {"derive-old-value", no_argument, NULL, HCLI_H_DERIVE_OLD_VALUE},          \
  {"secret", required_argument, NULL, HCLI_H_SECRET},                        \
  {"new-secret", no_argument, NULL, HCLI_H_NEW_SECRET},                      \
  {"header", required_argument, NULL, HCLI_H_HEADER},                        \
  {"timeout-ms", required_argument, NULL, HCLI_H_TIMEOUT},                   \
  {"max-attempts", required_argument, NULL, HCLI_H_MAX_ATTEMPTS},            \
  {"binary-mode", no_argument, NULL, HCLI_H_BINARY},                         \
  {"async", no_argument, NULL, HCLI_H_ASYNC},                                \
  {"ordered", no_argument, NULL, HCLI_H_ORDERED},                            \
  {"retry-schedule", required_argument, NULL, HCLI_H_RETRY_SCHEDULE},        \
  {"max-inflight", required_argument, NULL, HCLI_H_MAX_INFLIGHT},            \
  {"max-rps", required_argument, NULL, HCLI_H_MAX_RPS}

/* --help text of the target flags (after --key) and of the webhook and
 * async options. */
#define HCLI_HANDLER_HELP_TARGET                                             \
  "  --local NAME         a simple handler running the in-process function\n" \
  "                       NAME (echo, count, last_value, log, or a plugin's)\n" \
  "  --webhook URL        a simple handler POSTing each event to an http(s)\n" \
  "                       URL\n"                                              \
  "  --route EVENT=TARGET an event-stream handler: EVENT goes to TARGET,\n"  \
  "                       `local:NAME` or an http(s) URL; repeat per event\n" \
  "  --events E1,E2       a simple handler only receives these events\n"     \
  "                       (comma-separated, repeatable; default: all)\n"     \
  "  --selector SEL       only events whose topic path the Diffusion topic\n" \
  "                       selector SEL selects: >a/b or a/b (that path),\n"  \
  "                       ?a/.* (a regular expression per level), *a/b.*\n"  \
  "                       (one over the whole path), #SEL1////SEL2 (any of\n" \
  "                       them); a trailing / on a pattern selects the\n"    \
  "                       descendants only, // the match and its\n"          \
  "                       descendants. Events without a topic path (error)\n" \
  "                       are not filtered. Default: every topic\n"          \
  "  --derive-old-value   fill an update's missing old value with the last\n" \
  "                       value this handler saw for the same topic path\n"

#define HCLI_HANDLER_HELP_WEBHOOK                                            \
  "webhook options (for --webhook and every URL route):\n"                   \
  "  --secret whsec_...   sign requests with this Standard Webhooks secret\n" \
  "  --new-secret         let handlerd generate a secret (printed once)\n"   \
  "  --header 'NAME: V'   an extra request header (repeatable)\n"            \
  "  --timeout-ms N       per-attempt timeout (default 5000); the call's own\n" \
  "                       deadline is the global --deadline-ms\n"            \
  "  --max-attempts N     attempts in all, first included (default 5); not\n" \
  "                       with --async\n"                                    \
  "  --binary-mode        CloudEvents binary content mode (ce-* headers)\n"  \
  "\n"                                                                       \
  "async delivery (webhook options too; the service needs --state-dir):\n"   \
  "  --async              deliver out of band, durably: dispatch stores the\n" \
  "                       event and answers `accepted` with a delivery id;\n" \
  "                       handlerd delivers it later and retries on the\n"   \
  "                       schedule (see `handlerctl deliveries`)\n"          \
  "  --ordered            events with the same topic path are delivered one\n" \
  "                       at a time, in dispatch order; a failing one holds\n" \
  "                       back only its own topic\n"                         \
  "  --retry-schedule S   when attempts are made, comma-separated: the\n"    \
  "                       first entry is the first attempt, at once, and\n"  \
  "                       must be 0; each next one is the wait after a\n"    \
  "                       failure before the next attempt. 0s,1s,5m: at\n"   \
  "                       once, 1 s after the first failure, 5 min after\n"  \
  "                       the second, then dead. Units ms, s, m, h, d (a\n"  \
  "                       bare number is seconds); at most 32 retries, 49\n" \
  "                       days each. Default: the service's\n"               \
  "                       --retry-schedule (about 27 hours)\n"               \
  "  --max-inflight N     at most N deliveries to this webhook at once\n"    \
  "                       (default: no limit)\n"                             \
  "  --max-rps R          at most R attempts started per second, e.g. 0.5\n" \
  "                       or 20 (default: no limit)\n"
/* clang-format on */

/* Routes, events and headers a command line may give. */
#define HCLI_HANDLER_MAX_LIST 64

/* The shared flags as parsed, and the spec built from them. Strings point
 * into argv or into `pool`. Make one with hcli_handler_args_new. */
typedef struct hcli_handler_args {
  const char *key, *local, *webhook, *selector;
  const char *route_event[HCLI_HANDLER_MAX_LIST];
  const char *route_target[HCLI_HANDLER_MAX_LIST];
  size_t n_routes;
  const char *events[HCLI_HANDLER_MAX_LIST];
  size_t n_events;
  hc_property headers[HCLI_HANDLER_MAX_LIST];
  size_t n_headers;
  hc_webhook hook;  /* the webhook options, shared by every webhook */
  int webhook_opts; /* some webhook option was given */
  uint32_t schedule[HCLI_RETRY_SCHEDULE_MAX];
  const char *async_only; /* the first option given that needs --async */
  int derive_old_value;
  hcli_pool pool;
  /* Filled by hcli_handler_spec. */
  hc_webhook target_hook;
  hc_route routes[HCLI_HANDLER_MAX_LIST];
  hc_webhook route_hooks[HCLI_HANDLER_MAX_LIST];
  hc_handler_spec spec;
} hcli_handler_args;

/* A zeroed hcli_handler_args (calloc'd: it is large); NULL on ENOMEM. Free
 * with hcli_handler_args_free. */
hcli_handler_args *hcli_handler_args_new(void);
void hcli_handler_args_free(hcli_handler_args *a);

/* Takes option `c` (one of HCLI_H_*) with its argument. Returns 0 when
 * taken, 1 when `c` is not one of the shared flags (nothing changed), -1
 * for a bad value or a flag given twice, the reason (naming the flag) in
 * `err`. */
int hcli_handler_option(hcli_handler_args *a, int c, const char *arg, char *err,
                        size_t err_size);

/* Checks the flags together once all are parsed: --key, exactly one of
 * --local, --webhook or --route, webhook options only with a webhook, async
 * options only with --async. 0, or -1 with the reason in `err`. */
int hcli_handler_check(const hcli_handler_args *a, char *err, size_t err_size);

/* Builds the spec (a->spec, returned) from checked flags: every URL route
 * gets the shared webhook options; `local:NAME` routes their function. */
const hc_handler_spec *hcli_handler_spec(hcli_handler_args *a);

/* The route name of `remove --route` and `rotate-secret --route`: an event
 * name, not EVENT=TARGET. 0, or -1 with the reason in `err`. */
int hcli_check_route_name(const char *s, char *err, size_t err_size);

/* The overlap of `rotate-secret --overlap`: a positive duration as
 * hcli_parse_duration_ms takes it ("24h", "300ms", "7d"). 0 is refused (the
 * API's 0 means the default, 24 h: leave --overlap out for that). */
int hcli_parse_overlap_ms(const char *s, int64_t *out, char *err,
                          size_t err_size);

#endif
