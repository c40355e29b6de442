/*
 * options.h - handlerd's command line and HANDLERD_* environment. One table
 * describes every option (flag, variable, type, help), so parsing, the
 * environment and --help cannot drift apart. Flags win over variables,
 * which win over defaults.
 */
#ifndef HD_OPTIONS_H
#define HD_OPTIONS_H

#include "handlerd/handlerd.h"
#include "control.h"
#include "outbox.h"
#include "server.h"
#include "webhook_kind.h"

#include <stdio.h>

#define HD_MAX_PLUGINS 32

typedef struct hd_options {
  hd_server_config server;
  hd_webhook_engine_config webhook;
  hd_control_limits control;
  const char *ready_file;
  const char *event_log;
  const char *state_dir;
  /* PostgreSQL (instead of state_dir): the connection string, this
   * replica's lease name, the poll of registration changes. */
  const char *database;
  const char *replica_id;
  int delivery_lease_ms, sync_interval_ms;
  const char *metrics_listen;
  const char *token_file, *tls_cert, *tls_key, *tls_client_ca;
  const char *plugins[HD_MAX_PLUGINS];
  int n_plugins;
  int drain_ms;
  hd_log_level level;
  hd_log_format log_format;
  int max_keys, max_handlers_per_key;
  int max_webhook_response;
  /* Async delivery: the outbox's settings; the flags below fill it. */
  hd_outbox_config outbox;
  const char *retry_schedule;
  int delivery_retention_ms, disable_after_ms, max_pending_deliveries;
  /* Private: HANDLERD_PLUGINS split in place; whether --plugin was seen. */
  char *plugins_env;
  int cli_plugins;
} hd_options;

/* Fills `o` with the defaults. */
void hd_options_init(hd_options *o);

/* Reads the environment, then argv. Returns 0 to run, 1 when --help or
 * --version was answered (exit 0), -1 after printing a usage error to
 * stderr (exit 2). Strings in `o` borrow from argv and the environment. */
int hd_options_parse(hd_options *o, int argc, char **argv);

/* Frees what hd_options_parse allocated. */
void hd_options_free(hd_options *o);

/* Prints the option summary (--help). */
void hd_options_usage(FILE *to);

/* Logs the limits in effect, one line at info level (for the startup log). */
void hd_options_log_limits(const hd_options *o);

#endif
