/*
 * handlerctl: the command line client of handlerd.
 *
 * This file: global options (flags and HANDLERD_* environment), the
 * subcommand table, option iteration shared by every subcommand, the
 * connection and the mapping of errors to one-line messages and exit codes.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#ifndef HC_VERSION
#define HC_VERSION "unknown"
#endif

#define DEFAULT_ADDR "127.0.0.1:50051"

static const hcli_command *const commands[] = {
    &hcli_cmd_health,     &hcli_cmd_list,     &hcli_cmd_add,
    &hcli_cmd_update,     &hcli_cmd_remove,   &hcli_cmd_rotate_secret,
    &hcli_cmd_dispatch,   &hcli_cmd_stream,   &hcli_cmd_stats,
    &hcli_cmd_deliveries, &hcli_cmd_delivery, &hcli_cmd_redeliver,
    &hcli_cmd_replay,     &hcli_cmd_enable};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

enum {
  G_ADDR = HCLI_OPT_GLOBAL_BASE,
  G_TOKEN,
  G_TLS_CA,
  G_TLS_SERVER_NAME,
  G_TIMEOUT,
  G_DEADLINE,
  G_OUTPUT,
  G_VERSION
};

static const struct option global_options[] = {
    {"addr", required_argument, NULL, G_ADDR},
    {"token", required_argument, NULL, G_TOKEN},
    {"tls-ca", required_argument, NULL, G_TLS_CA},
    {"tls-server-name", required_argument, NULL, G_TLS_SERVER_NAME},
    {"timeout-ms", required_argument, NULL, G_TIMEOUT},
    {"deadline-ms", required_argument, NULL, G_DEADLINE},
    {"output", required_argument, NULL, G_OUTPUT},
    {"version", no_argument, NULL, G_VERSION},
    {0, 0, 0, 0}};

static const char main_help[] =
    "usage: handlerctl [GLOBAL OPTIONS] COMMAND [OPTIONS]\n"
    "\n"
    "Talks to handlerd over gRPC (handlers.v1.Handlers, grpc.health.v1).\n"
    "\n"
    "commands:\n"
    "%s"
    "\n"
    "global options (also accepted after COMMAND):\n"
    "  --addr HOST:PORT       server address (env HANDLERD_ADDR; default "
    "127.0.0.1:50051);\n"
    "                         several replicas: IP:PORT,IP:PORT,... "
    "(round robin)\n"
    "  --token TOKEN          bearer token (env HANDLERD_TOKEN)\n"
    "  --tls-ca PATH          use TLS, trusting the CA certificates in PATH "
    "(PEM)\n"
    "                         (env HANDLERD_TLS_CA)\n"
    "  --tls-server-name NAME host name to check in the server certificate\n"
    "  --timeout-ms N         deadline of each call in ms (default 10000; "
    "stream: none);\n"
    "                         after `add` use --deadline-ms, there "
    "--timeout-ms is the webhook's\n"
    "  --deadline-ms N        the same as --timeout-ms\n"
    "  -o, --output FORMAT    table (default) or json: one JSON document on "
    "stdout\n"
    "  -h, --help             this help; `handlerctl COMMAND --help` for a "
    "command's\n"
    "  --version              print the version\n"
    "\n"
    "exit status: 0 success, 1 the server answered with an error status,\n"
    "2 usage error, 3 server unreachable (or UNAVAILABLE).\n";

static void print_main_help(FILE *f) {
  char list[2048] = "";
  size_t used = 0;
  for (size_t i = 0; i < N_COMMANDS; i++) {
    int n = snprintf(list + used, sizeof list - used, "  %-13s %s\n",
                     commands[i]->name, commands[i]->summary);
    if (n > 0 && (size_t)n < sizeof list - used)
      used += (size_t)n;
  }
  fprintf(f, main_help, list);
}

int hcli_usage_error(const hcli *g, const char *fmt, ...) {
  va_list ap;
  if (g->cmd != NULL)
    fprintf(stderr, "handlerctl %s: ", g->cmd);
  else
    fputs("handlerctl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry 'handlerctl%s%s --help'.\n", g->cmd ? " " : "",
          g->cmd ? g->cmd : "");
  return HCLI_EXIT_USAGE;
}

/* Applies global option `opt` to `g`; returns 0, or the exit code of a
 * usage error (already reported). --version prints and exits. */
static int apply_global(hcli *g, int opt, const char *arg) {
  unsigned long ms;
  switch (opt) {
  case G_ADDR:
    if (*arg == '\0')
      return hcli_usage_error(g, "--addr needs a non-empty HOST:PORT");
    g->addr = arg;
    g->addr_from_env = 0;
    return 0;
  case G_TOKEN:
    g->token = *arg != '\0' ? arg : NULL;
    return 0;
  case G_TLS_CA:
    g->tls_ca = arg;
    return 0;
  case G_TLS_SERVER_NAME:
    g->tls_server_name = arg;
    return 0;
  case G_TIMEOUT:
  case G_DEADLINE:
    if (hcli_parse_uint(arg, INT_MAX, &ms) != 0 || ms == 0)
      return hcli_usage_error(g,
                              "--%s needs a positive number of ms, not "
                              "'%s'",
                              opt == G_TIMEOUT ? "timeout-ms" : "deadline-ms",
                              arg);
    g->deadline_ms = (int)ms;
    return 0;
  case 'o':
  case G_OUTPUT:
    if (strcmp(arg, "json") == 0)
      g->output = HCLI_OUT_JSON;
    else if (strcmp(arg, "table") == 0)
      g->output = HCLI_OUT_TABLE;
    else
      return hcli_usage_error(g, "--output is 'table' or 'json', not '%s'",
                              arg);
    return 0;
  case G_VERSION:
    printf("handlerctl %s\n", HC_VERSION);
    exit(HCLI_EXIT_OK);
  }
  return hcli_usage_error(g, "internal error: option %d", opt);
}

/* Builds the option table of a subcommand: its own options, then the globals
 * it does not override, then --help. */
static const struct option *merged_options(const struct option *own) {
  static struct option merged[64];
  size_t n = 0;
  for (; own[n].name != NULL && n < 40; n++)
    merged[n] = own[n];
  for (const struct option *o = global_options; o->name != NULL; o++) {
    int taken = 0;
    for (size_t i = 0; i < n; i++)
      taken |= strcmp(merged[i].name, o->name) == 0;
    if (!taken)
      merged[n++] = *o;
  }
  merged[n++] = (struct option){"help", no_argument, NULL, 'h'};
  merged[n] = (struct option){0, 0, 0, 0};
  return merged;
}

/* Reports what getopt_long rejected ('?' unknown, ':' missing argument). */
static int bad_option(const hcli *g, int c, char **argv) {
  const char *last = optind > 0 ? argv[optind - 1] : "";
  if (strncmp(last, "--", 2) == 0) {
    size_t n = strcspn(last, "=");
    if (c == ':')
      return hcli_usage_error(g, "option '%.*s' needs an argument", (int)n,
                              last);
    return hcli_usage_error(g, "unknown option '%.*s'", (int)n, last);
  }
  if (c == ':')
    return hcli_usage_error(g, "option '-%c' needs an argument", optopt);
  return hcli_usage_error(g, "unknown option '-%c'", optopt);
}

int hcli_next_option(hcli *g, const hcli_command *cmd, int argc, char **argv,
                     const struct option *own, const char **arg,
                     int *first_arg) {
  static const struct option *current_own;
  static const struct option *opts;
  static char shortopts[64];
  if (current_own != own || opts == NULL) {
    current_own = own;
    opts = merged_options(own);
    /* Own options whose value is a letter also have that short form. */
    size_t n = strlen(strcpy(shortopts, ":ho:"));
    for (const struct option *o = own;
         o->name != NULL && n + 3 < sizeof shortopts; o++)
      if (o->val < 128 && isalpha(o->val)) {
        shortopts[n++] = (char)o->val;
        if (o->has_arg == required_argument)
          shortopts[n++] = ':';
      }
    shortopts[n] = '\0';
    optind = 0; /* glibc: full re-initialisation */
  }
  for (;;) {
    int c = getopt_long(argc, argv, shortopts, opts, NULL);
    *arg = optarg;
    if (c == -1) {
      *first_arg = optind;
      current_own = NULL;
      return -1;
    }
    if (c == 'h') {
      fputs(cmd->help, stdout);
      exit(HCLI_EXIT_OK);
    }
    if (c == '?' || c == ':')
      exit(bad_option(g, c, argv));
    if (c == 'o' || c >= HCLI_OPT_GLOBAL_BASE) {
      int rc = apply_global(g, c, optarg);
      if (rc != 0)
        exit(rc);
      continue;
    }
    return c;
  }
}

hc_conn *hcli_connect(const hcli *g, int *exit_code) {
  hc_options o = {0};
  o.tls_ca_pem = g->tls_ca;
  o.tls_server_name = g->tls_server_name;
  o.bearer_token = g->token;
  o.default_deadline_ms = g->deadline_ms;
  hc_conn *c = NULL;
  errno = 0;
  hc_err err = hc_connect(g->addr, &o, &c);
  if (err == HC_OK)
    return c;
  switch (err) {
  case HC_EIO:
    fprintf(stderr, "handlerctl: cannot read --tls-ca %s: %s\n", g->tls_ca,
            errno ? strerror(errno) : "read error");
    *exit_code = HCLI_EXIT_USAGE;
    break;
  case HC_ECONNECT:
    fprintf(stderr, "handlerctl: UNAVAILABLE: cannot connect to %s%s\n",
            g->addr,
            g->tls_ca ? " (TLS: is the server up, speaking TLS, with a "
                        "certificate signed by --tls-ca?)"
                      : "");
    *exit_code = HCLI_EXIT_UNREACHABLE;
    break;
  case HC_EINVAL: {
    char why[512];
    if (hc_addr_check(g->addr, why, sizeof why) == HC_EINVAL)
      fprintf(stderr, "handlerctl: bad %s: %s\n",
              g->addr_from_env ? "HANDLERD_ADDR" : "--addr", why);
    else
      fprintf(stderr, "handlerctl: cannot connect to '%s': %s\n", g->addr,
              hc_strerror(err));
    *exit_code = HCLI_EXIT_USAGE;
    break;
  }
  default:
    fprintf(stderr, "handlerctl: cannot connect to '%s': %s\n", g->addr,
            hc_strerror(err));
    *exit_code = HCLI_EXIT_RPC;
    break;
  }
  return NULL;
}

int hcli_exit_code(hc_err err, const hc_status *st) {
  if (err == HC_OK)
    return HCLI_EXIT_OK;
  if (err == HC_ECONNECT)
    return HCLI_EXIT_UNREACHABLE;
  if (err == HC_ERPC && st != NULL && st->grpc_code == 14)
    return HCLI_EXIT_UNREACHABLE;
  return HCLI_EXIT_RPC;
}

int hcli_report(const hcli *g, hc_err err, const hc_status *st) {
  (void)g;
  if (err == HC_ERPC && st != NULL) {
    if (st->message[0] != '\0')
      fprintf(stderr, "handlerctl: %s: %s\n",
              hc_status_code_name(st->grpc_code), st->message);
    else
      fprintf(stderr, "handlerctl: %s\n", hc_status_code_name(st->grpc_code));
  } else if (st != NULL && st->message[0] != '\0' &&
             strcmp(st->message, hc_strerror(err)) != 0) {
    fprintf(stderr, "handlerctl: %s: %s\n", hc_strerror(err), st->message);
  } else {
    fprintf(stderr, "handlerctl: %s\n", hc_strerror(err));
  }
  return hcli_exit_code(err, st);
}

int hcli_call(const hcli *g, hcli_call_fn call, const void *in, void *out) {
  int rc = HCLI_EXIT_UNREACHABLE; /* hcli_connect sets it when it fails */
  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    return rc;
  hc_status st;
  hc_err err = call(conn, in, out, &st);
  hc_close(conn);
  return err != HC_OK ? hcli_report(g, err, &st) : HCLI_EXIT_OK;
}

static const hcli_command *find_command(const char *name) {
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (strcmp(commands[i]->name, name) == 0)
      return commands[i];
  return NULL;
}

int main(int argc, char **argv) {
  hcli g = {0};
  g.addr = getenv("HANDLERD_ADDR");
  g.addr_from_env = g.addr != NULL && *g.addr != '\0';
  if (!g.addr_from_env)
    g.addr = DEFAULT_ADDR;
  g.token = getenv("HANDLERD_TOKEN");
  if (g.token != NULL && *g.token == '\0')
    g.token = NULL;
  g.tls_ca = getenv("HANDLERD_TLS_CA");
  if (g.tls_ca != NULL && *g.tls_ca == '\0')
    g.tls_ca = NULL;

  struct option opts[sizeof global_options / sizeof global_options[0] + 1];
  size_t n = 0;
  for (; global_options[n].name != NULL; n++)
    opts[n] = global_options[n];
  opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
  opts[n] = (struct option){0, 0, 0, 0};

  int c;
  while ((c = getopt_long(argc, argv, "+:ho:", opts, NULL)) != -1) {
    if (c == 'h') {
      print_main_help(stdout);
      return HCLI_EXIT_OK;
    }
    if (c == '?' || c == ':')
      return bad_option(&g, c, argv);
    int rc = apply_global(&g, c, optarg);
    if (rc != 0)
      return rc;
  }
  if (optind >= argc) {
    print_main_help(stderr);
    return HCLI_EXIT_USAGE;
  }
  const char *name = argv[optind];
  if (strcmp(name, "help") == 0) {
    const hcli_command *cmd =
        optind + 1 < argc ? find_command(argv[optind + 1]) : NULL;
    if (optind + 1 < argc && cmd == NULL)
      return hcli_usage_error(&g, "unknown command '%s'", argv[optind + 1]);
    if (cmd != NULL)
      fputs(cmd->help, stdout);
    else
      print_main_help(stdout);
    return HCLI_EXIT_OK;
  }
  const hcli_command *cmd = find_command(name);
  if (cmd == NULL) {
    char names[256] = "";
    for (size_t i = 0; i < N_COMMANDS; i++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
               i > 0 ? ", " : "", commands[i]->name);
    return hcli_usage_error(&g, "unknown command '%s' (%s)", name, names);
  }
  g.cmd = cmd->name;
  return cmd->run(&g, argc - optind, argv + optind);
}
