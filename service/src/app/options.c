#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum opt_type {
  T_STR,      /* const char * */
  T_INT,      /* int within [min, max] */
  T_SWITCH,   /* int 0/1: no argument; a variable is true unless 0/false */
  T_LEVEL,    /* hd_log_level */
  T_FORMAT,   /* hd_log_format */
  T_DURATION, /* int milliseconds from "10s", "500ms", "2m" or seconds */
  T_PLUGIN    /* appended to plugins[] */
} opt_type;

typedef struct opt_def {
  const char *name; /* long flag without "--" */
  char short_name;  /* 0: none */
  const char *arg;  /* metavariable in --help; NULL for a switch */
  const char *env;  /* HANDLERD_* variable; NULL: none */
  opt_type type;
  size_t offset; /* of the field in hd_options */
  long min, max;
  const char *help; /* NULL: accepted but not listed (a deprecated alias) */
} opt_def;

#define F(field) offsetof(hd_options, field)

static const opt_def defs[] = {
    {"listen", 'l', "ADDR", "HANDLERD_LISTEN", T_STR, F(server.listen), 0, 0,
     "address to serve gRPC on (HANDLERD_LISTEN, default 127.0.0.1:50051;\n"
     "port 0 picks a free port)"},
    {"plugin", 'p', "PATH.so", "HANDLERD_PLUGINS", T_PLUGIN, 0, 0, 0,
     "load a plugin (repeatable; HANDLERD_PLUGINS, ':'-separated)"},
    {"event-log", 0, "PATH", "HANDLERD_EVENT_LOG", T_STR, F(event_log), 0, 0,
     "file the `log` built-in appends to (HANDLERD_EVENT_LOG, default "
     "stdout)"},
    {"log-level", 0, "LEVEL", "HANDLERD_LOG_LEVEL", T_LEVEL, F(level), 0, 0,
     "error|warn|info|debug (HANDLERD_LOG_LEVEL, default info)"},
    {"log-format", 0, "FORMAT", "HANDLERD_LOG_FORMAT", T_FORMAT, F(log_format),
     0, 0,
     "text|json: lines on stderr for a person or a collector\n"
     "(HANDLERD_LOG_FORMAT, default text)"},
    {"threads", 0, "N", "HANDLERD_THREADS", T_INT, F(server.threads), 1, 1024,
     "completion-queue threads (HANDLERD_THREADS, default: one per core)"},
    {"max-calls", 0, "N", "HANDLERD_MAX_CALLS", T_INT, F(server.max_calls), 1,
     1000000,
     "calls in flight before RESOURCE_EXHAUSTED (HANDLERD_MAX_CALLS, default "
     "10000)"},
    {"max-message-bytes", 0, "N", "HANDLERD_MAX_MESSAGE_BYTES", T_INT,
     F(server.max_message_bytes), 1024, 1 << 30,
     "largest request accepted (HANDLERD_MAX_MESSAGE_BYTES, default 4194304)"},
    {"max-topic-path-bytes", 0, "N", "HANDLERD_MAX_TOPIC_PATH_BYTES", T_INT,
     F(server.max_topic_path), 1, HD_TOPIC_PATH_MAX,
     "longest topic_path accepted (HANDLERD_MAX_TOPIC_PATH_BYTES,\n"
     "default 1024, at most 65536)"},
    {"max-keys", 0, "N", "HANDLERD_MAX_KEYS", T_INT, F(max_keys), 1, 100000000,
     "keys registered in total (HANDLERD_MAX_KEYS, default 100000)"},
    {"max-handlers-per-key", 0, "N", "HANDLERD_MAX_HANDLERS_PER_KEY", T_INT,
     F(max_handlers_per_key), 1, 1000000,
     "handlers under one key (HANDLERD_MAX_HANDLERS_PER_KEY, default 1000)"},
    {"max-webhook-inflight", 0, "N", "HANDLERD_MAX_WEBHOOK_INFLIGHT", T_INT,
     F(webhook.max_in_flight), 1, 10000000,
     "webhook deliveries in flight (HANDLERD_MAX_WEBHOOK_INFLIGHT,\n"
     "default 10000)"},
    {"max-webhook-response-bytes", 0, "N",
     "HANDLERD_MAX_WEBHOOK_RESPONSE_BYTES", T_INT, F(max_webhook_response), 0,
     16 << 20,
     "response body bytes kept as a webhook's result\n"
     "(HANDLERD_MAX_WEBHOOK_RESPONSE_BYTES, default 65536)"},
    {"max-connections", 0, "N", "HANDLERD_MAX_CONNECTIONS", T_INT,
     F(server.max_connections), 1, 10000000,
     "client connections open at once; more are closed as they\n"
     "arrive (HANDLERD_MAX_CONNECTIONS, default: half the open-files\n"
     "limit)"},
    {"idle-timeout", 0, "DURATION", "HANDLERD_IDLE_TIMEOUT", T_DURATION,
     F(server.idle_timeout_ms), 1000, 86400000,
     "close a connection with no call for this long (GOAWAY)\n"
     "(HANDLERD_IDLE_TIMEOUT, default 5m)"},
    {"handshake-timeout", 0, "DURATION", "HANDLERD_HANDSHAKE_TIMEOUT",
     T_DURATION, F(server.handshake_timeout_ms), 100, 3600000,
     "close a connection that has not finished its HTTP/2 (and TLS)\n"
     "handshake after this long (HANDLERD_HANDSHAKE_TIMEOUT, default 10s)"},
    {"keepalive-time", 0, "DURATION", "HANDLERD_KEEPALIVE_TIME", T_DURATION,
     F(server.keepalive_time_ms), 1000, 86400000,
     "ping a client after this long without traffic; no answer within\n"
     "20s closes the connection (HANDLERD_KEEPALIVE_TIME, default 2m)"},
    {"max-health-watches", 0, "N", "HANDLERD_MAX_HEALTH_WATCHES", T_INT,
     F(server.max_health_watches), 1, 1000000,
     "open grpc.health.v1.Health/Watch streams; they do not count in\n"
     "--max-calls (HANDLERD_MAX_HEALTH_WATCHES, default 100)"},
    {"max-events-per-handler", 0, "N", "HANDLERD_MAX_EVENTS_PER_HANDLER", T_INT,
     F(control.max_events), 1, 1000000,
     "event names in one registration (HANDLERD_MAX_EVENTS_PER_HANDLER,\n"
     "default 256)"},
    {"max-routes-per-handler", 0, "N", "HANDLERD_MAX_ROUTES_PER_HANDLER", T_INT,
     F(control.max_routes), 1, 1000000,
     "routes in one event-stream registration\n"
     "(HANDLERD_MAX_ROUTES_PER_HANDLER, default 256)"},
    {"max-webhook-headers", 0, "N", "HANDLERD_MAX_WEBHOOK_HEADERS", T_INT,
     F(control.max_headers), 0, 10000,
     "headers on one webhook (HANDLERD_MAX_WEBHOOK_HEADERS,\n"
     "default 64)"},
    {"drain-timeout", 0, "DURATION", "HANDLERD_DRAIN_TIMEOUT", T_DURATION,
     F(drain_ms), 0, 3600000,
     "how long shutdown waits for calls in flight, e.g. 10s, 500ms\n"
     "(HANDLERD_DRAIN_TIMEOUT, default 10s)"},
    {"drain-timeout-ms", 0, "N", "HANDLERD_DRAIN_TIMEOUT_MS", T_INT,
     F(drain_ms), 0, 3600000, NULL},
    {"state-dir", 's', "DIR", "HANDLERD_STATE_DIR", T_STR, F(state_dir), 0, 0,
     "keep registrations in DIR/handlerd.db (HANDLERD_STATE_DIR;\n"
     "default: in memory only)"},
    {"database", 0, "URL", "HANDLERD_DATABASE_URL", T_STR, F(database), 0, 0,
     "keep registrations and async deliveries in PostgreSQL, shared\n"
     "with other replicas: postgres://user@host/db or a libpq\n"
     "connection string; PG* variables apply (HANDLERD_DATABASE_URL;\n"
     "instead of --state-dir)"},
    {"replica-id", 0, "NAME", "HANDLERD_REPLICA_ID", T_STR, F(replica_id), 0, 0,
     "this replica's name on the leases it takes (HANDLERD_REPLICA_ID,\n"
     "default: <hostname>-<pid>)"},
    {"delivery-lease", 0, "DURATION", "HANDLERD_DELIVERY_LEASE", T_DURATION,
     F(delivery_lease_ms), 1000, 86400000,
     "with --database: an async delivery claimed by a replica is its\n"
     "own this long, renewed while it works; then another replica\n"
     "makes it (HANDLERD_DELIVERY_LEASE, default 30s)"},
    {"sync-interval", 0, "DURATION", "HANDLERD_SYNC_INTERVAL", T_DURATION,
     F(sync_interval_ms), 100, 3600000,
     "with --database: how often a replica checks for registration\n"
     "changes it was not notified of (HANDLERD_SYNC_INTERVAL,\n"
     "default 1s)"},
    {"retry-schedule", 0, "LIST", "HANDLERD_RETRY_SCHEDULE", T_STR,
     F(retry_schedule), 0, 0,
     "when async webhook deliveries are attempted: the first at once\n"
     "(0s), each next that long after a failure; exhausted: dead\n"
     "(HANDLERD_RETRY_SCHEDULE, default 0s,5s,5m,30m,2h,5h,10h,10h)"},
    {"delivery-retention", 0, "DURATION", "HANDLERD_DELIVERY_RETENTION",
     T_DURATION, F(delivery_retention_ms), 1000, 2000000000,
     "keep succeeded and dead async deliveries this long\n"
     "(HANDLERD_DELIVERY_RETENTION, default 7d)"},
    {"disable-after", 0, "DURATION", "HANDLERD_DISABLE_AFTER", T_DURATION,
     F(disable_after_ms), 1000, 2000000000,
     "disable an async webhook whose deliveries have only failed for\n"
     "this long (HANDLERD_DISABLE_AFTER, default 5d)"},
    {"max-pending-deliveries", 0, "N", "HANDLERD_MAX_PENDING_DELIVERIES", T_INT,
     F(max_pending_deliveries), 1, 100000000,
     "async deliveries not yet finished; past it an async event is\n"
     "refused (RESOURCE_EXHAUSTED) (HANDLERD_MAX_PENDING_DELIVERIES,\n"
     "default 100000)"},
    {"webhook-deny-private", 0, NULL, "HANDLERD_WEBHOOK_DENY_PRIVATE", T_SWITCH,
     F(webhook.deny_private), 0, 0,
     "refuse webhooks to loopback and private addresses\n"
     "(HANDLERD_WEBHOOK_DENY_PRIVATE=1)"},
    {"webhook-ca-file", 0, "PATH", "HANDLERD_WEBHOOK_CA_FILE", T_STR,
     F(webhook.ca_file), 0, 0,
     "verify https webhooks against this PEM CA bundle\n"
     "(HANDLERD_WEBHOOK_CA_FILE; default: the system's)"},
    {"instance", 0, "NAME", "HANDLERD_INSTANCE", T_STR, F(webhook.instance), 0,
     0,
     "names this handlerd in CloudEvents source (HANDLERD_INSTANCE,\n"
     "default: the host name)"},
    {"token-file", 0, "PATH", "HANDLERD_TOKEN_FILE", T_STR, F(token_file), 0, 0,
     "require 'authorization: Bearer <token>' on AddHandler,\n"
     "RemoveHandler, ListHandlers (HANDLERD_TOKEN_FILE)"},
    {"auth-dispatch", 0, NULL, "HANDLERD_AUTH_DISPATCH", T_SWITCH,
     F(server.auth_dispatch), 0, 0,
     "require the token on Dispatch and DispatchStream too\n"
     "(HANDLERD_AUTH_DISPATCH=1)"},
    {"tls-cert", 0, "PATH", "HANDLERD_TLS_CERT", T_STR, F(tls_cert), 0, 0,
     "serve TLS with this PEM certificate chain (HANDLERD_TLS_CERT)"},
    {"tls-key", 0, "PATH", "HANDLERD_TLS_KEY", T_STR, F(tls_key), 0, 0,
     "and this PEM private key (HANDLERD_TLS_KEY)"},
    {"tls-client-ca", 0, "PATH", "HANDLERD_TLS_CLIENT_CA", T_STR,
     F(tls_client_ca), 0, 0,
     "require client certificates signed by this CA (mTLS;\n"
     "HANDLERD_TLS_CLIENT_CA)"},
    {"metrics-listen", 0, "ADDR", "HANDLERD_METRICS_LISTEN", T_STR,
     F(metrics_listen), 0, 0,
     "serve Prometheus metrics on http://ADDR/metrics\n"
     "(HANDLERD_METRICS_LISTEN, e.g. 127.0.0.1:9464; default off)"},
    {"ready-file", 0, "PATH", NULL, T_STR, F(ready_file), 0, 0,
     "write the bound address to PATH once serving"},
};

#define N_DEFS (sizeof(defs) / sizeof(defs[0]))
#define HELP_COLUMN 29

void hd_options_init(hd_options *o) {
  memset(o, 0, sizeof(*o));
  hd_server_config_init(&o->server);
  hd_webhook_engine_config_init(&o->webhook);
  o->drain_ms = 10000;
  o->level = HD_LOG_INFO;
  o->log_format = HD_LOG_FORMAT_TEXT;
  o->max_keys = 100000;
  o->max_handlers_per_key = 1000;
  o->max_webhook_response = HD_WEBHOOK_DEFAULT_MAX_RESPONSE;
  hd_control_limits_init(&o->control);
  hd_outbox_config_init(&o->outbox);
  o->delivery_retention_ms = (int)o->outbox.retention_ms;
  o->disable_after_ms = (int)o->outbox.disable_after_ms;
  o->max_pending_deliveries = (int)o->outbox.max_pending;
  o->delivery_lease_ms = (int)o->outbox.lease_ms;
  o->sync_interval_ms = 1000;
}

void hd_options_free(hd_options *o) {
  free(o->plugins_env);
  o->plugins_env = NULL;
}

static void usage_line(FILE *to, const char *left, const char *help) {
  int n = fprintf(to, "%s", left);
  if (n < HELP_COLUMN)
    fprintf(to, "%*s", HELP_COLUMN - n, "");
  else /* a long flag: its help starts on the next line */
    fprintf(to, "\n%*s", HELP_COLUMN, "");
  for (const char *p = help; *p; p++) {
    fputc(*p, to);
    if (*p == '\n')
      fprintf(to, "%*s", HELP_COLUMN, "");
  }
  fputc('\n', to);
}

void hd_options_usage(FILE *to) {
  char left[80];

  fprintf(to, "usage: handlerd [options]\n");
  for (size_t i = 0; i < N_DEFS; i++) {
    const opt_def *d = &defs[i];
    if (d->help == NULL)
      continue;
    if (d->short_name)
      snprintf(left, sizeof(left), "  -%c, --%s%s%s", d->short_name, d->name,
               d->arg ? " " : "", d->arg ? d->arg : "");
    else
      snprintf(left, sizeof(left), "      --%s%s%s", d->name, d->arg ? " " : "",
               d->arg ? d->arg : "");
    usage_line(to, left, d->help);
  }
  usage_line(to, "  -h, --help", "show this help");
  usage_line(to, "  -V, --version", "show the version");
}

static int parse_int(const char *label, const char *s, long min, long max,
                     int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < min || v > max) {
    fprintf(stderr, "handlerd: %s: '%s' is not a number from %ld to %ld\n",
            label, s, min, max);
    return -1;
  }
  *out = (int)v;
  return 0;
}

/* "10s", "500ms", "2m", "3h", "7d", "1.5" (seconds) -> milliseconds. */
static int parse_duration(const char *label, const char *s, long max,
                          int *out) {
  char *end;
  double scale = 1000.0;
  errno = 0;
  double v = strtod(s, &end);
  if (strcmp(end, "ms") == 0)
    scale = 1.0;
  else if (strcmp(end, "m") == 0)
    scale = 60000.0;
  else if (strcmp(end, "h") == 0)
    scale = 3600000.0;
  else if (strcmp(end, "d") == 0)
    scale = 86400000.0;
  else if (*end != '\0' && strcmp(end, "s") != 0)
    end = (char *)s; /* unknown unit */
  double ms = v * scale;
  if (errno || end == s || !isfinite(ms) || ms < 0 || ms > (double)max) {
    fprintf(stderr,
            "handlerd: %s: '%s' is not a duration such as 10s, 500ms or 2m "
            "(at most %lds)\n",
            label, s, max / 1000);
    return -1;
  }
  *out = (int)(ms + 0.5);
  return 0;
}

static int add_plugin(hd_options *o, char *path) {
  if (o->n_plugins == HD_MAX_PLUGINS) {
    fprintf(stderr, "handlerd: at most %d plugins\n", HD_MAX_PLUGINS);
    return -1;
  }
  o->plugins[o->n_plugins++] = path;
  return 0;
}

/* Applies one value; `label` names its source (flag or variable) in
 * errors; `from_env` tells which. */
static int apply(hd_options *o, const opt_def *d, const char *value,
                 const char *label, int from_env) {
  void *field = (char *)o + d->offset;

  switch (d->type) {
  case T_STR:
    *(const char **)field = value;
    return 0;
  case T_INT:
    return parse_int(label, value, d->min, d->max, field);
  case T_SWITCH:
    *(int *)field =
        !from_env || (strcmp(value, "0") != 0 && strcmp(value, "false") != 0);
    return 0;
  case T_LEVEL:
    if (hd_log_level_parse(value, field) == HD_OK)
      return 0;
    fprintf(stderr, "handlerd: %s: unknown level '%s'\n", label, value);
    return -1;
  case T_FORMAT:
    if (hd_log_format_parse(value, field) == HD_OK)
      return 0;
    fprintf(stderr, "handlerd: %s: unknown format '%s' (text or json)\n", label,
            value);
    return -1;
  case T_DURATION:
    return parse_duration(label, value, d->max, field);
  case T_PLUGIN:
    if (from_env) {
      char *save = NULL;
      free(o->plugins_env);
      if ((o->plugins_env = strdup(value)) == NULL)
        return -1;
      for (char *p = strtok_r(o->plugins_env, ":", &save); p;
           p = strtok_r(NULL, ":", &save))
        if (add_plugin(o, p))
          return -1;
      return 0;
    }
    if (!o->cli_plugins++)
      o->n_plugins = 0; /* --plugin replaces HANDLERD_PLUGINS */
    return add_plugin(o, (char *)value);
  }
  return -1;
}

static int from_env(hd_options *o) {
  for (size_t i = 0; i < N_DEFS; i++) {
    const char *v = defs[i].env ? getenv(defs[i].env) : NULL;
    if (v && *v && apply(o, &defs[i], v, defs[i].env, 1))
      return -1;
  }
  return 0;
}

static int check(const hd_options *o) {
  if (!o->tls_cert != !o->tls_key) {
    fprintf(stderr, "handlerd: --tls-cert and --tls-key go together\n");
    return -1;
  }
  if (o->tls_client_ca && !o->tls_cert) {
    fprintf(stderr, "handlerd: --tls-client-ca needs --tls-cert/--tls-key\n");
    return -1;
  }
  if (o->state_dir && o->database) {
    fprintf(stderr, "handlerd: --state-dir and --database exclude each other "
                    "(HANDLERD_STATE_DIR, HANDLERD_DATABASE_URL): keep "
                    "registrations in one place\n");
    return -1;
  }
  if (o->server.auth_dispatch && !o->token_file) {
    fprintf(stderr, "handlerd: --auth-dispatch needs --token-file\n");
    return -1;
  }
  return 0;
}

int hd_options_parse(hd_options *o, int argc, char **argv) {
  struct option longopts[N_DEFS + 3];
  char shorts[2 * N_DEFS + 8], label[64];
  size_t ns = 0;
  int opt, idx;

  if (from_env(o))
    return -1;
  for (size_t i = 0; i < N_DEFS; i++) {
    longopts[i] = (struct option){defs[i].name,
                                  defs[i].arg ? required_argument : no_argument,
                                  NULL, 256 + (int)i};
    if (defs[i].short_name) {
      shorts[ns++] = defs[i].short_name;
      shorts[ns++] = ':';
    }
  }
  longopts[N_DEFS] = (struct option){"help", no_argument, NULL, 'h'};
  longopts[N_DEFS + 1] = (struct option){"version", no_argument, NULL, 'V'};
  longopts[N_DEFS + 2] = (struct option){NULL, 0, NULL, 0};
  memcpy(shorts + ns, "hV", 3);

  while ((opt = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
    if (opt == 'h') {
      hd_options_usage(stdout);
      return 1;
    }
    if (opt == 'V') {
      printf("handlerd %s\n", HD_VERSION);
      return 1;
    }
    idx = -1;
    if (opt >= 256 && opt < 256 + (int)N_DEFS)
      idx = opt - 256;
    for (size_t i = 0; idx < 0 && i < N_DEFS; i++)
      if (defs[i].short_name && defs[i].short_name == opt)
        idx = (int)i;
    if (idx < 0) {
      hd_options_usage(stderr);
      return -1;
    }
    snprintf(label, sizeof(label), "--%s", defs[idx].name);
    if (apply(o, &defs[idx], optarg, label, 0))
      return -1;
  }
  if (optind < argc) {
    fprintf(stderr, "handlerd: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  o->webhook.max_response_bytes = (size_t)o->max_webhook_response;
  o->outbox.retention_ms = o->delivery_retention_ms;
  o->outbox.disable_after_ms = o->disable_after_ms;
  o->outbox.max_pending = (size_t)o->max_pending_deliveries;
  o->outbox.lease_ms = o->delivery_lease_ms;
  if (o->retry_schedule != NULL) {
    char msg[256];
    if (hd_outbox_parse_schedule(o->retry_schedule, &o->outbox, msg,
                                 sizeof(msg)) != HD_OK) {
      fprintf(stderr, "handlerd: --retry-schedule: %s\n", msg);
      return -1;
    }
  }
  return check(o);
}

void hd_options_log_limits(const hd_options *o) {
  hd_log(HD_LOG_INFO,
         "limits: max-calls %d, max-message-bytes %d, max-topic-path-bytes "
         "%d, max-keys %d, max-handlers-per-key %d, max-webhook-inflight %d, "
         "max-webhook-response-bytes %d, drain-timeout %d ms, "
         "max-connections %d, idle-timeout %d ms, handshake-timeout %d ms, "
         "keepalive-time %d ms, max-health-watches %d, "
         "max-events-per-handler %d, max-routes-per-handler %d, "
         "max-webhook-headers %d",
         o->server.max_calls, o->server.max_message_bytes,
         o->server.max_topic_path, o->max_keys, o->max_handlers_per_key,
         o->webhook.max_in_flight, o->max_webhook_response, o->drain_ms,
         o->server.max_connections, o->server.idle_timeout_ms,
         o->server.handshake_timeout_ms, o->server.keepalive_time_ms,
         o->server.max_health_watches, o->control.max_events,
         o->control.max_routes, o->control.max_headers);
}
