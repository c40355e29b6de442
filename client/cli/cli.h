/*
 * handlerctl: internal interfaces shared by the CLI's files.
 *   main.c    - global options, subcommand table, option iteration, connect,
 *               one call (hcli_call), error reporting and exit codes;
 *   cmd_admin.c    - health, list, remove;
 *   cmd_update.c   - add and update (one code path), rotate-secret;
 *   handler_args.c - the registration flags add and update share, the
 *                    arguments of rotate-secret and remove --route
 *                    (handler_args.h; also used by the tests);
 *   cmd_dispatch.c - dispatch (one event from flags);
 *   cmd_stream.c   - stream (newline-delimited JSON events from stdin);
 *   ndjson.c       - reading those lines into events, and the failures
 *                    report (ndjson.h; also used by the tests and fuzzer);
 *   cmd_stats.c    - stats (GetStats as a table or JSON);
 *   cmd_deliveries.c - deliveries, delivery (async deliveries: list, show);
 *   cmd_redeliver.c  - redeliver, replay, enable;
 *   delivery_args.c  - durations, retry schedules, times and delivery
 *                      states as the command line writes them;
 *   values.c  - parsing of numbers, value types, enums, base64 and string
 *               helpers;
 *   output.c  - aligned tables and JSON documents.
 */
#ifndef HANDLERCTL_CLI_H
#define HANDLERCTL_CLI_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "handlerctl/client.h"
#include "handlerctl/deliveries.h"

/* Exit codes. */
enum {
  HCLI_EXIT_OK = 0,
  HCLI_EXIT_RPC = 1,        /* the server answered with an error status */
  HCLI_EXIT_USAGE = 2,      /* bad flags or arguments */
  HCLI_EXIT_UNREACHABLE = 3 /* no connection (or UNAVAILABLE) */
};

typedef enum hcli_output { HCLI_OUT_TABLE, HCLI_OUT_JSON } hcli_output;

/* Global options, filled from the environment and the flags. */
typedef struct hcli {
  const char *cmd;   /* the subcommand's name, for messages */
  const char *addr;  /* one HOST:PORT, a gRPC URI or IP:PORT,IP:PORT,... */
  int addr_from_env; /* nonzero: `addr` is HANDLERD_ADDR's */
  const char *token;
  const char *tls_ca;
  const char *tls_server_name;
  int deadline_ms; /* 0: the client library default (10 s) */
  hcli_output output;
} hcli;

/* A subcommand: `help` is its full --help text. `run` returns the exit
 * code. */
typedef struct hcli_command {
  const char *name;
  const char *summary;
  const char *help;
  int (*run)(hcli *g, int argc, char **argv);
} hcli_command;

/* Option values at or above this are the globals' (see main.c). */
#define HCLI_OPT_GLOBAL_BASE 0x1000

/*
 * Iterates the options of subcommand `cmd` (argv[0] is its name): returns
 * the `val` of the next option of `own` (terminated by a zero entry) with
 * its argument in *arg, or -1 when the options are done (then `*first_arg`
 * is the index of the first positional argument). Global options are
 * accepted too and applied to `g` (an own option with the same name wins).
 * --help prints cmd->help and exits 0; an unknown option or a missing
 * argument prints a usage message and exits 2.
 */
int hcli_next_option(hcli *g, const hcli_command *cmd, int argc, char **argv,
                     const struct option *own, const char **arg,
                     int *first_arg);

/* Prints "handlerctl CMD: <message>" and a pointer to --help on stderr;
 * returns HCLI_EXIT_USAGE. */
int hcli_usage_error(const hcli *g, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parses a non-negative decimal integer up to `max`; 0 on success, -1 when
 * `s` is not one. */
int hcli_parse_uint(const char *s, unsigned long max, unsigned long *out);

/* Parses a decimal int32; 0 on success, -1 otherwise. */
int hcli_parse_int32(const char *s, int *out);

/* Opens the connection the global options describe. On failure prints the
 * one-line error and returns NULL with *exit_code set. */
hc_conn *hcli_connect(const hcli *g, int *exit_code);

/* Reports a failed call as "handlerctl: CODE: message" on stderr and
 * returns the exit code for it (1, or 3 for UNAVAILABLE / no connection). */
int hcli_report(const hcli *g, hc_err err, const hc_status *st);

/* The exit code hcli_report would return, without printing. */
int hcli_exit_code(hc_err err, const hc_status *st);

/* A call of the client library, for hcli_call: makes it on `conn` with the
 * command's arguments `in`, the results in `out`, filling *st when it
 * fails. */
typedef hc_err (*hcli_call_fn)(hc_conn *conn, const void *in, void *out,
                               hc_status *st);

/* Connects as the global options say, makes `call` with `in` and `out` and
 * closes the connection. 0 when the call succeeded; otherwise the exit
 * code, the failure reported on stderr as hcli_connect and hcli_report
 * do. */
int hcli_call(const hcli *g, hcli_call_fn call, const void *in, void *out);

/* ---- values.c ----------------------------------------------------------- */

/* Memory kept alive until the pool is cleared: the strings an hc_event
 * borrows. */
typedef struct hcli_pool {
  void **items;
  size_t n, cap;
} hcli_pool;

/* Takes ownership of `p` (malloc'd); returns it, or NULL (and frees it) when
 * the pool cannot grow. NULL `p` returns NULL. */
void *hcli_pool_keep(hcli_pool *pool, void *p);
/* Frees every pointer kept; the pool can be reused. */
void hcli_pool_clear(hcli_pool *pool);

/* "json", "string", "int64", "double", "binary", "record_v2" (any case). */
int hcli_parse_value_type(const char *s, hc_value_type *out);
const char *hcli_value_type_name(hc_value_type t);

/* Topic types: "json", "string", "int64", "double", "binary",
 * "time_series", "record_v2". */
int hcli_parse_topic_type(const char *s, hc_topic_type *out);

/* REQUESTED, CONTROL, REMOVAL, AUTHORIZATION, UNKNOWN (or
 * UNKNOWN_UNSUBSCRIBE_REASON), BACK_PRESSURE, BRANCH_MAPPINGS, any case, or
 * the number 0..6. */
int hcli_parse_reason(const char *s, hc_unsubscribe_reason *out);

/* none, subscribe, update, unsubscribe, error, response. */
int hcli_parse_args_kind(const char *s, hc_args_kind *out);

/*
 * Builds a value of type `t` from command-line text: JSON text (checked to
 * parse), a string, a decimal int64, a double, or base64 for binary and
 * record_v2. Memory the value points to is kept in `pool`. 0 on success;
 * -1 with a reason in `err`.
 */
int hcli_value_from_text(hc_value_type t, const char *text, hcli_pool *pool,
                         hc_value *out, char *err, size_t err_size);

/* The same from a JSON value (ndjson): json takes any JSON value; string a
 * JSON string; int64 an integer; double a number; binary/record_v2 a base64
 * string. */
int hcli_value_from_json(hc_value_type t, json_t *j, hcli_pool *pool,
                         hc_value *out, char *err, size_t err_size);

/* Standard base64 (with padding) of `len` bytes; malloc'd. */
char *hcli_base64_encode(const void *data, size_t len);
/* Decodes standard base64 (padding optional, no whitespace). Returns a
 * malloc'd buffer (NUL-terminated after *len bytes) or NULL when invalid. */
unsigned char *hcli_base64_decode(const char *text, size_t *len);

/* ---- delivery_args.c ---------------------------------------------------- */

/* Retries after the first attempt that --retry-schedule takes: the
 * service's limit (HD_OUTBOX_SCHEDULE_MAX). */
#define HCLI_RETRY_SCHEDULE_MAX 32

/*
 * The parsers below return 0, or -1 with the reason in `err` (text to put
 * after the option's name: "--retry-schedule: " + err).
 */

/* Writes the reason into `err` (`size` bytes) and returns -1: the parsers'
 * way to fail, here and in handler_args.c. */
int hcli_fail(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A duration: a whole number with a unit, ms, s, m, h or d ("250ms", "5m");
 * a bare number is seconds. At most 10000 days. */
int hcli_parse_duration_ms(const char *s, uint64_t *out, char *err,
                           size_t err_size);

/* A retry schedule, comma-separated durations: "0s,1s,5m". The first entry
 * is the first attempt, at once, and must be 0; the others are the delays
 * before each retry, which are what the API's retry_schedule_ms holds:
 * out[] = {1000, 300000}, *n = 2. `out` has room for
 * HCLI_RETRY_SCHEDULE_MAX; each delay fits 32 bits of ms. A schedule with
 * no retry is refused (the API's empty list means the service's default). */
int hcli_parse_retry_schedule(const char *s, uint32_t *out, size_t *n,
                              char *err, size_t err_size);

/* A positive, finite decimal number (--max-rps); -1 otherwise. */
int hcli_parse_rate(const char *s, double *out);

/* A point in time as Unix ms: RFC 3339 ("2026-11-30T12:00:00Z",
 * "2026-11-30T14:00:00.5+02:00"), or a duration with a unit meaning that
 * long before `now_ms` ("1h": an hour ago). A bare number is refused (it
 * could be seconds ago or a Unix time), and so is a time before 1970. */
int hcli_parse_time_ms(const char *s, int64_t now_ms, int64_t *out, char *err,
                       size_t err_size);

/* The current time in Unix ms. */
int64_t hcli_now_ms(void);

/* Unix ms as RFC 3339 UTC in `buf` ("2026-11-30T12:00:00Z", with ".123"
 * when there are ms); "-" for 0 (the API's "none"). Returns buf. */
const char *hcli_time_text(int64_t ms, char *buf, size_t size);

/* pending, in_flight (or in-flight), succeeded, failed, dead; any case. */
int hcli_parse_delivery_state(const char *s, hc_delivery_state *out);

/* ---- output.c ----------------------------------------------------------- */

/* An aligned text table: columns separated by two spaces, the last column
 * not padded. Cells are copied. */
typedef struct hcli_table hcli_table;
hcli_table *hcli_table_new(size_t ncols, const char *const *headers);
/* Appends a row of `ncols` cells (NULL prints as ""). */
void hcli_table_add(hcli_table *t, const char *const *cells);
size_t hcli_table_rows(const hcli_table *t);
/* Prints the header and rows to `f` and frees `t`. */
void hcli_table_print(hcli_table *t, FILE *f);

/* Prints `doc` indented, with a final newline, to stdout, and releases it. */
void hcli_json_print(json_t *doc);

/* A value as JSON: {"type": "json", "value": <parsed>} and so on; binary
 * values as base64 strings; json null when absent. New reference. */
json_t *hcli_value_json(const hc_value *v);
/* A value as one line of text for a table (malloc'd): JSON compact, strings
 * as given, numbers, "base64:..." for bytes, "-" when absent. */
char *hcli_value_text(const hc_value *v);

/* One dispatch's results as {"results": [...]} (new reference). */
json_t *hcli_results_json(const hc_results *r);
/* Prints the results as a table on stdout. */
void hcli_results_print(const hc_results *r);

/* A handler list as {"handlers": [...]} (new reference) or a table. */
json_t *hcli_list_json(const hc_handler_list *l);
void hcli_list_print(const hc_handler_list *l);

/* "simple", "event-stream", "unspecified". */
const char *hcli_kind_name(hc_handler_kind k);

/* ---- subcommands -------------------------------------------------------- */

extern const hcli_command hcli_cmd_health, hcli_cmd_list, hcli_cmd_add,
    hcli_cmd_update, hcli_cmd_remove, hcli_cmd_rotate_secret, hcli_cmd_dispatch,
    hcli_cmd_stream, hcli_cmd_stats, hcli_cmd_deliveries, hcli_cmd_delivery,
    hcli_cmd_redeliver, hcli_cmd_replay, hcli_cmd_enable;

#endif
