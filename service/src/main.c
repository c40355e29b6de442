/*
 * handlerd: the daemon. Flags win over HANDLERD_* environment variables,
 * which win over defaults. SIGINT/SIGTERM start a clean shutdown: stop
 * accepting calls, let calls in flight finish (--drain-timeout-ms), free
 * everything, exit 0.
 */
#include "control.h"
#include "handlerd/handlerd.h"
#include "metrics.h"
#include "server.h"
#include "store.h"
#include "webhook.h"

#include <errno.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLUGINS 32

typedef struct options {
  hd_server_config server;
  const char *ready_file;
  const char *event_log;
  const char *plugins[MAX_PLUGINS];
  int n_plugins;
  char *plugins_env; /* owned copy of HANDLERD_PLUGINS, split in place */
  int drain_ms;
  hd_log_level level;
  const char *state_dir;
  const char *metrics_listen;
  const char *token_file, *tls_cert, *tls_key, *tls_client_ca;
  hd_webhook_engine_config webhook;
} options;

static void usage(FILE *to) {
  fprintf(
      to,
      "usage: handlerd [options]\n"
      "  -l, --listen ADDR          address to serve gRPC on "
      "(HANDLERD_LISTEN, default 127.0.0.1:50051;\n"
      "                             port 0 picks a free port)\n"
      "  -p, --plugin PATH.so       load a plugin (repeatable; "
      "HANDLERD_PLUGINS, ':'-separated)\n"
      "      --event-log PATH       file the `log` built-in appends to "
      "(HANDLERD_EVENT_LOG, default stdout)\n"
      "      --log-level LEVEL      error|warn|info|debug "
      "(HANDLERD_LOG_LEVEL, default info)\n"
      "      --threads N            completion-queue threads "
      "(HANDLERD_THREADS, default: one per core)\n"
      "      --max-calls N          calls in flight before "
      "RESOURCE_EXHAUSTED (HANDLERD_MAX_CALLS, default 10000)\n"
      "      --max-message-bytes N  largest request accepted "
      "(HANDLERD_MAX_MESSAGE_BYTES, default 4194304)\n"
      "      --drain-timeout-ms N   how long shutdown waits for calls in "
      "flight (HANDLERD_DRAIN_TIMEOUT_MS, default 5000)\n"
      "  -s, --state-dir DIR        keep registrations in DIR/handlerd.db "
      "(HANDLERD_STATE_DIR;\n"
      "                             default: in memory only)\n"
      "      --webhook-deny-private refuse webhooks to loopback and private "
      "addresses\n"
      "                             (HANDLERD_WEBHOOK_DENY_PRIVATE=1)\n"
      "      --webhook-ca-file PATH verify https webhooks against this PEM "
      "CA bundle\n"
      "                             (HANDLERD_WEBHOOK_CA_FILE; default: the "
      "system's)\n"
      "      --instance NAME        names this handlerd in CloudEvents "
      "source (HANDLERD_INSTANCE,\n"
      "                             default: the host name)\n"
      "      --token-file PATH      require 'authorization: Bearer <token>' "
      "on AddHandler,\n"
      "                             RemoveHandler, ListHandlers "
      "(HANDLERD_TOKEN_FILE)\n"
      "      --auth-dispatch        require the token on Dispatch and "
      "DispatchStream too\n"
      "                             (HANDLERD_AUTH_DISPATCH=1)\n"
      "      --tls-cert PATH        serve TLS with this PEM certificate "
      "chain (HANDLERD_TLS_CERT)\n"
      "      --tls-key PATH         and this PEM private key "
      "(HANDLERD_TLS_KEY)\n"
      "      --tls-client-ca PATH   require client certificates signed "
      "by this CA (mTLS;\n"
      "                             HANDLERD_TLS_CLIENT_CA)\n"
      "      --metrics-listen ADDR  serve Prometheus metrics on "
      "http://ADDR/metrics\n"
      "                             (HANDLERD_METRICS_LISTEN, e.g. "
      "127.0.0.1:9464; default off)\n"
      "      --ready-file PATH      write the bound address to PATH once "
      "serving\n"
      "  -h, --help                 show this help\n"
      "  -V, --version              show the version\n");
}

static int parse_int(const char *name, const char *s, int min, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < min || v > 1000000000) {
    fprintf(stderr, "handlerd: %s: '%s' is not a number >= %d\n", name, s, min);
    return -1;
  }
  *out = (int)v;
  return 0;
}

static int from_env(options *o) {
  const char *v;
  if ((v = getenv("HANDLERD_LISTEN")) && *v)
    o->server.listen = v;
  if ((v = getenv("HANDLERD_TOKEN_FILE")) && *v)
    o->token_file = v;
  if ((v = getenv("HANDLERD_AUTH_DISPATCH")) && *v)
    o->server.auth_dispatch = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
  if ((v = getenv("HANDLERD_TLS_CERT")) && *v)
    o->tls_cert = v;
  if ((v = getenv("HANDLERD_TLS_KEY")) && *v)
    o->tls_key = v;
  if ((v = getenv("HANDLERD_TLS_CLIENT_CA")) && *v)
    o->tls_client_ca = v;
  if ((v = getenv("HANDLERD_METRICS_LISTEN")) && *v)
    o->metrics_listen = v;
  if ((v = getenv("HANDLERD_STATE_DIR")) && *v)
    o->state_dir = v;
  if ((v = getenv("HANDLERD_WEBHOOK_CA_FILE")) && *v)
    o->webhook.ca_file = v;
  if ((v = getenv("HANDLERD_INSTANCE")) && *v)
    o->webhook.instance = v;
  if ((v = getenv("HANDLERD_WEBHOOK_DENY_PRIVATE")) && *v)
    o->webhook.deny_private = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
  if ((v = getenv("HANDLERD_EVENT_LOG")) && *v)
    o->event_log = v;
  if ((v = getenv("HANDLERD_LOG_LEVEL")) && *v &&
      hd_log_level_parse(v, &o->level) != HD_OK) {
    fprintf(stderr, "handlerd: HANDLERD_LOG_LEVEL: unknown level '%s'\n", v);
    return -1;
  }
  if ((v = getenv("HANDLERD_THREADS")) && *v &&
      parse_int("HANDLERD_THREADS", v, 1, &o->server.threads))
    return -1;
  if ((v = getenv("HANDLERD_MAX_CALLS")) && *v &&
      parse_int("HANDLERD_MAX_CALLS", v, 1, &o->server.max_calls))
    return -1;
  if ((v = getenv("HANDLERD_MAX_MESSAGE_BYTES")) && *v &&
      parse_int("HANDLERD_MAX_MESSAGE_BYTES", v, 1024,
                &o->server.max_message_bytes))
    return -1;
  if ((v = getenv("HANDLERD_DRAIN_TIMEOUT_MS")) && *v &&
      parse_int("HANDLERD_DRAIN_TIMEOUT_MS", v, 0, &o->drain_ms))
    return -1;
  if ((v = getenv("HANDLERD_PLUGINS")) && *v) {
    o->plugins_env = strdup(v);
    char *save = NULL;
    for (char *p = strtok_r(o->plugins_env, ":", &save); p;
         p = strtok_r(NULL, ":", &save)) {
      if (o->n_plugins == MAX_PLUGINS) {
        fprintf(stderr, "handlerd: at most %d plugins\n", MAX_PLUGINS);
        return -1;
      }
      o->plugins[o->n_plugins++] = p;
    }
  }
  return 0;
}

/* Returns 0 to run, 1 to exit 0 (help/version), -1 on a usage error. */
static int parse_args(int argc, char **argv, options *o) {
  enum {
    OPT_EVENT_LOG = 256,
    OPT_LOG_LEVEL,
    OPT_THREADS,
    OPT_MAX_CALLS,
    OPT_MAX_MSG,
    OPT_DRAIN,
    OPT_READY,
    OPT_DENY_PRIVATE,
    OPT_INSTANCE,
    OPT_TOKEN_FILE,
    OPT_AUTH_DISPATCH,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CLIENT_CA,
    OPT_METRICS,
    OPT_WEBHOOK_CA
  };
  static const struct option longopts[] = {
      {"listen", required_argument, NULL, 'l'},
      {"plugin", required_argument, NULL, 'p'},
      {"event-log", required_argument, NULL, OPT_EVENT_LOG},
      {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
      {"threads", required_argument, NULL, OPT_THREADS},
      {"max-calls", required_argument, NULL, OPT_MAX_CALLS},
      {"max-message-bytes", required_argument, NULL, OPT_MAX_MSG},
      {"drain-timeout-ms", required_argument, NULL, OPT_DRAIN},
      {"ready-file", required_argument, NULL, OPT_READY},
      {"state-dir", required_argument, NULL, 's'},
      {"webhook-deny-private", no_argument, NULL, OPT_DENY_PRIVATE},
      {"instance", required_argument, NULL, OPT_INSTANCE},
      {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
      {"auth-dispatch", no_argument, NULL, OPT_AUTH_DISPATCH},
      {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
      {"tls-key", required_argument, NULL, OPT_TLS_KEY},
      {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
      {"metrics-listen", required_argument, NULL, OPT_METRICS},
      {"webhook-ca-file", required_argument, NULL, OPT_WEBHOOK_CA},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  int opt;
  int cli_plugins = 0;
  while ((opt = getopt_long(argc, argv, "l:p:s:hV", longopts, NULL)) != -1) {
    switch (opt) {
    case 'l':
      o->server.listen = optarg;
      break;
    case 'p':
      if (!cli_plugins++)
        o->n_plugins = 0; /* --plugin replaces HANDLERD_PLUGINS */
      if (o->n_plugins == MAX_PLUGINS) {
        fprintf(stderr, "handlerd: at most %d plugins\n", MAX_PLUGINS);
        return -1;
      }
      o->plugins[o->n_plugins++] = optarg;
      break;
    case OPT_EVENT_LOG:
      o->event_log = optarg;
      break;
    case OPT_LOG_LEVEL:
      if (hd_log_level_parse(optarg, &o->level) != HD_OK) {
        fprintf(stderr, "handlerd: --log-level: unknown level '%s'\n", optarg);
        return -1;
      }
      break;
    case OPT_THREADS:
      if (parse_int("--threads", optarg, 1, &o->server.threads))
        return -1;
      break;
    case OPT_MAX_CALLS:
      if (parse_int("--max-calls", optarg, 1, &o->server.max_calls))
        return -1;
      break;
    case OPT_MAX_MSG:
      if (parse_int("--max-message-bytes", optarg, 1024,
                    &o->server.max_message_bytes))
        return -1;
      break;
    case OPT_DRAIN:
      if (parse_int("--drain-timeout-ms", optarg, 0, &o->drain_ms))
        return -1;
      break;
    case OPT_READY:
      o->ready_file = optarg;
      break;
    case 's':
      o->state_dir = optarg;
      break;
    case OPT_DENY_PRIVATE:
      o->webhook.deny_private = 1;
      break;
    case OPT_INSTANCE:
      o->webhook.instance = optarg;
      break;
    case OPT_TOKEN_FILE:
      o->token_file = optarg;
      break;
    case OPT_AUTH_DISPATCH:
      o->server.auth_dispatch = 1;
      break;
    case OPT_TLS_CERT:
      o->tls_cert = optarg;
      break;
    case OPT_TLS_KEY:
      o->tls_key = optarg;
      break;
    case OPT_TLS_CLIENT_CA:
      o->tls_client_ca = optarg;
      break;
    case OPT_METRICS:
      o->metrics_listen = optarg;
      break;
    case OPT_WEBHOOK_CA:
      o->webhook.ca_file = optarg;
      break;
    case 'h':
      usage(stdout);
      return 1;
    case 'V':
      printf("handlerd %s\n", HD_VERSION);
      return 1;
    default:
      usage(stderr);
      return -1;
    }
  }
  if (!o->tls_cert != !o->tls_key) {
    fprintf(stderr, "handlerd: --tls-cert and --tls-key go together\n");
    return -1;
  }
  if (o->tls_client_ca && !o->tls_cert) {
    fprintf(stderr, "handlerd: --tls-client-ca needs --tls-cert/--tls-key\n");
    return -1;
  }
  if (o->server.auth_dispatch && !o->token_file) {
    fprintf(stderr, "handlerd: --auth-dispatch needs --token-file\n");
    return -1;
  }
  if (optind < argc) {
    fprintf(stderr, "handlerd: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  return 0;
}

/* Reads a whole (small) file; NULL with errno set on failure. */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0)
      break;
    if (len + 1 == cap) {
      char *nb = cap < (1u << 20) ? realloc(buf, cap *= 2) : NULL;
      if (!nb) {
        free(buf);
        buf = NULL;
        errno = EFBIG;
      }
      buf = nb;
    }
  }
  fclose(f);
  if (buf)
    buf[len] = '\0';
  return buf;
}

/* The token is the file's first line; surrounding whitespace is dropped. */
static char *read_token(const char *path) {
  char *t = read_file(path);
  if (!t)
    return NULL;
  size_t total = strlen(t);
  size_t start = strspn(t, " \t\r\n");
  size_t len = strcspn(t + start, "\r\n");
  while (len && (t[start + len - 1] == ' ' || t[start + len - 1] == '\t'))
    len--;
  memmove(t, t + start, len);
  memset(t + len, 0, total - len); /* no copy of the token behind the NUL */
  if (len == 0) {
    free(t);
    errno = ENODATA;
    return NULL;
  }
  return t;
}

/* Loads the token and TLS files named by the options into `o->server`. */
static int load_secrets(options *o, char **owned, size_t n_owned) {
  struct {
    const char *path;
    const char **dst;
    int token;
  } files[] = {{o->token_file, &o->server.token, 1},
               {o->tls_cert, &o->server.tls_cert_pem, 0},
               {o->tls_key, &o->server.tls_key_pem, 0},
               {o->tls_client_ca, &o->server.tls_client_ca_pem, 0}};
  for (size_t i = 0; i < sizeof(files) / sizeof(files[0]) && i < n_owned; i++) {
    if (!files[i].path)
      continue;
    owned[i] =
        files[i].token ? read_token(files[i].path) : read_file(files[i].path);
    if (!owned[i]) {
      hd_log(HD_LOG_ERROR, "cannot read %s: %s", files[i].path,
             errno == ENODATA ? "the file is empty" : strerror(errno));
      return -1;
    }
    *files[i].dst = owned[i];
  }
  return 0;
}

static int64_t gauge_handlers(void *ud) {
  return (int64_t)hd_control_count(ud);
}

static int64_t gauge_keys(void *ud) {
  return (int64_t)hd_registry_key_count(ud);
}

static int64_t gauge_in_flight(void *ud) {
  return hd_server_calls_in_flight(ud);
}

/* Writes "host:port" via a rename, so a reader never sees half a line. */
static int write_ready_file(const char *path, const char *listen, int port) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return -1;
  const char *colon = strrchr(listen, ':');
  int host_len = colon ? (int)(colon - listen) : (int)strlen(listen);
  fprintf(f, "%.*s:%d\n", host_len, listen, port);
  if (fclose(f) != 0)
    return -1;
  return rename(tmp, path);
}

static int run(options *o) {
  int rc = 1;
  char msg[512] = "";
  hd_registry *reg = NULL;
  hd_functions *fns = NULL;
  hd_control *ctl = NULL;
  hd_server *srv = NULL;
  hd_webhook_engine *engine = NULL;
  char *secrets[4] = {NULL, NULL, NULL, NULL};
  hd_store *store = NULL;
  hd_metrics_server *metrics = NULL;

  if (hd_registry_new(&reg) || hd_functions_new(&fns) ||
      hd_builtins_register(fns, o->event_log) ||
      hd_control_new(reg, fns, &ctl)) {
    hd_log(HD_LOG_ERROR,
           "cannot initialise (out of memory or event log '%s' "
           "not writable)",
           o->event_log ? o->event_log : "stdout");
    goto out;
  }
  for (int i = 0; i < o->n_plugins; i++) {
    if (hd_plugin_load(fns, o->plugins[i], msg, sizeof(msg)) != HD_OK) {
      hd_log(HD_LOG_ERROR, "plugin %s: %s", o->plugins[i], msg);
      goto out;
    }
    hd_log(HD_LOG_INFO, "loaded plugin %s", o->plugins[i]);
  }
  if (hd_webhook_engine_start(&o->webhook, &engine) != HD_OK) {
    hd_log(HD_LOG_ERROR, "cannot start the webhook engine");
    goto out;
  }
  hd_control_set_webhook_factory(ctl, hd_webhook_factory, engine);
  if (o->state_dir) {
    size_t loaded = 0;
    if (hd_store_sqlite_open(o->state_dir, &store, msg, sizeof(msg)) != HD_OK) {
      hd_log(HD_LOG_ERROR, "state dir %s: %s", o->state_dir, msg);
      goto out;
    }
    hd_control_set_store(ctl, store);
    if (hd_control_load(ctl, &loaded, msg, sizeof(msg)) != HD_OK) {
      hd_log(HD_LOG_ERROR, "state dir %s: %s", o->state_dir, msg);
      goto out;
    }
    hd_log(HD_LOG_INFO, "state dir %s: %zu registrations loaded", o->state_dir,
           loaded);
  } else {
    hd_log(HD_LOG_WARN, "no --state-dir: registrations are kept in memory "
                        "only and are lost on restart");
  }
  if (load_secrets(o, secrets, 4) != 0)
    goto out;
  if (hd_server_start(&o->server, reg, ctl, &srv, msg, sizeof(msg)) != HD_OK) {
    hd_log(HD_LOG_ERROR, "%s", msg[0] ? msg : "cannot start the gRPC server");
    goto out;
  }
  hd_metrics_set_gauge("handlerd_handlers", "Handlers registered.",
                       gauge_handlers, ctl);
  hd_metrics_set_gauge("handlerd_keys", "Keys with at least one handler.",
                       gauge_keys, reg);
  hd_metrics_set_gauge("handlerd_calls_in_flight", "gRPC calls being served.",
                       gauge_in_flight, srv);
  if (o->metrics_listen) {
    if (hd_metrics_server_start(o->metrics_listen, &metrics, msg,
                                sizeof(msg)) != HD_OK) {
      hd_log(HD_LOG_ERROR, "%s", msg);
      goto out;
    }
    hd_log(HD_LOG_INFO, "metrics on http://%s/metrics", o->metrics_listen);
  }
  for (int i = 0; i < 4; i++) {
    if (secrets[i]) /* the server keeps what it needs; wipe the rest */
      memset(secrets[i], 0, strlen(secrets[i]));
    free(secrets[i]);
    secrets[i] = NULL;
  }
  hd_log(HD_LOG_INFO, "handlerd %s listening on %s (port %d, %s%s)", HD_VERSION,
         o->server.listen, hd_server_port(srv),
         o->tls_cert ? (o->tls_client_ca ? "mTLS" : "TLS") : "plaintext",
         o->token_file ? (o->server.auth_dispatch ? ", token on every RPC"
                                                  : ", token on control RPCs")
                       : "");
  if (o->ready_file &&
      write_ready_file(o->ready_file, o->server.listen, hd_server_port(srv))) {
    hd_log(HD_LOG_ERROR, "cannot write ready file %s: %s", o->ready_file,
           strerror(errno));
    goto out;
  }

  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  int sig = 0;
  sigwait(&stop, &sig);
  hd_log(HD_LOG_INFO, "%s received: shutting down", strsignal(sig));
  rc = 0;

out:
  for (int i = 0; i < 4; i++) {
    if (secrets[i])
      memset(secrets[i], 0, strlen(secrets[i]));
    free(secrets[i]);
  }
  hd_metrics_server_stop(metrics);
  /* Order matters: stop accepting and drain; then stop the webhook engine,
   * which completes what is still pending while the queue threads can
   * still send (or drop) those replies; then free the server once its last
   * call is gone; the registry (owning the webhook handlers) goes last. */
  if (srv)
    hd_server_shutdown(srv, o->drain_ms);
  hd_webhook_engine_stop(engine);
  hd_server_free(srv);
  hd_control_free(ctl);
  hd_store_close(store);
  hd_registry_free(reg);
  hd_functions_free(fns);
  hd_plugins_unload_all();
  if (rc == 0)
    hd_log(HD_LOG_INFO, "stopped");
  return rc;
}

int main(int argc, char **argv) {
  options o;
  memset(&o, 0, sizeof(o));
  hd_server_config_init(&o.server);
  hd_webhook_engine_config_init(&o.webhook);
  o.drain_ms = 5000;
  o.level = HD_LOG_INFO;

  int pr = from_env(&o);
  if (pr == 0)
    pr = parse_args(argc, argv, &o);
  if (pr != 0) {
    free(o.plugins_env);
    return pr > 0 ? 0 : 2;
  }
  hd_log_set_level(o.level);

  /* Block the stop signals in every thread; main takes them with sigwait. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);
  signal(SIGPIPE, SIG_IGN);

  grpc_init();
  int rc = run(&o);
  grpc_shutdown();
  free(o.plugins_env);
  return rc;
}
