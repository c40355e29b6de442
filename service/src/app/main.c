/*
 * handlerd: the daemon. Flags win over HANDLERD_* environment variables,
 * which win over defaults. SIGINT/SIGTERM start a clean shutdown: stop
 * accepting calls, let calls in flight finish (--drain-timeout), free
 * everything, exit 0. SIGHUP re-reads --token-file and the TLS certificate
 * and key. A listener that fails for good ends the process with status 1.
 */
#include "conn_guard.h"
#include "control.h"
#include "handlerd/handlerd.h"
#include "log_grpc.h"
#include "metrics.h"
#include "options.h"
#include "server.h"
#include "store.h"
#include "store_pg.h"
#include "webhook_kind.h"

#include <errno.h>
#include <grpc/grpc.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

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
  if (ferror(f)) { /* a directory, an I/O error: not an empty file */
    int err = errno;
    free(buf);
    buf = NULL;
    errno = err;
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
static int load_secrets(hd_options *o, char **owned, size_t n_owned) {
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

static int64_t gauge_webhooks_in_flight(void *ud) {
  return hd_webhook_engine_in_flight(ud);
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

/* Descriptors are what a connection flood exhausts: take all the hard
 * limit allows, and size --max-connections from it unless it is set. */
static void raise_open_files(hd_options *o) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  rlim_t soft = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      rl.rlim_cur = soft;
  }
  if (rl.rlim_cur == soft)
    hd_log(HD_LOG_INFO, "open files: limit %llu (hard limit %llu)",
           (unsigned long long)soft, (unsigned long long)rl.rlim_max);
  else
    hd_log(HD_LOG_INFO,
           "open files: soft limit raised from %llu to the hard limit %llu",
           (unsigned long long)soft, (unsigned long long)rl.rlim_cur);
  if (o->server.max_connections == 0) {
    rlim_t half = rl.rlim_cur / 2;
    o->server.max_connections = half < 16        ? 16
                                : half > 1000000 ? 1000000
                                                 : (int)half;
  }
}

static atomic_int listener_failed;

static void on_listener_failed(const char *why) {
  hd_log(HD_LOG_ERROR,
         "gRPC listener: %s; exiting with status 1 so a supervisor "
         "restarts handlerd",
         why);
  atomic_store(&listener_failed, 1);
  kill(getpid(), SIGTERM);
}

/* A secret readable by others is a secret shared with them: say so. */
static void warn_if_exposed(const char *flag, const char *path) {
  struct stat st;
  if (path && stat(path, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
    hd_log(HD_LOG_WARN,
           "%s %s is readable by group or others (mode %04o): chmod 600 it",
           flag, path, (unsigned)(st.st_mode & 07777));
}

static int is_loopback_listen(const char *listen) {
  return strncmp(listen, "127.", 4) == 0 ||
         strncmp(listen, "localhost:", 10) == 0 ||
         strncmp(listen, "[::1]:", 6) == 0 || strncmp(listen, "unix:", 5) == 0;
}

/* Whether `key_pem` is the private key of the first certificate in
 * `cert_pem`: gRPC would only find out at the next handshake. */
static int cert_matches_key(const char *cert_pem, const char *key_pem) {
  BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
  X509 *cert = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
  EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
  int ok = cert && key && X509_check_private_key(cert, key) == 1;
  X509_free(cert);
  EVP_PKEY_free(key);
  BIO_free(cb);
  BIO_free(kb);
  ERR_clear_error();
  return ok;
}

/* SIGHUP: the token and the TLS files again, for calls and handshakes from
 * now on. What cannot be read is logged and the old value kept. */
static void reload_secrets(hd_options *o, hd_server *srv) {
  char *token = NULL, *cert = NULL, *key = NULL, *ca = NULL;
  int ok = 1;
  if (o->token_file && !(token = read_token(o->token_file))) {
    hd_log(HD_LOG_ERROR,
           "SIGHUP: cannot read --token-file %s: %s; keeping "
           "the old token",
           o->token_file,
           errno == ENODATA ? "the file is empty" : strerror(errno));
    ok = 0;
  }
  if (o->tls_cert) {
    cert = read_file(o->tls_cert);
    key = read_file(o->tls_key);
    ca = o->tls_client_ca ? read_file(o->tls_client_ca) : NULL;
    if (!cert || !key || (o->tls_client_ca && !ca)) {
      hd_log(HD_LOG_ERROR,
             "SIGHUP: cannot read the TLS files (%s, %s%s%s): "
             "keeping the old certificate",
             o->tls_cert, o->tls_key, o->tls_client_ca ? ", " : "",
             o->tls_client_ca ? o->tls_client_ca : "");
      free(cert);
      free(key);
      free(ca);
      cert = key = ca = NULL;
      ok = 0;
    }
  }
  if (cert && !cert_matches_key(cert, key)) {
    hd_log(HD_LOG_ERROR,
           "SIGHUP: %s and %s are not a certificate and its "
           "private key: keeping the old certificate",
           o->tls_cert, o->tls_key);
    free(cert);
    free(key);
    free(ca);
    cert = key = ca = NULL;
    ok = 0;
  }
  if ((token || cert) && hd_server_reload(srv, token, cert, key, ca) == HD_OK) {
    hd_log(HD_LOG_INFO, "SIGHUP: reloaded%s%s", token ? " the token" : "",
           cert ? (token ? " and the TLS certificate and key"
                         : " the TLS certificate and key")
                : "");
  } else if (ok) {
    hd_log(HD_LOG_INFO, "SIGHUP: nothing to reload (no --token-file, no TLS)");
  }
  warn_if_exposed("--token-file", o->token_file);
  warn_if_exposed("--tls-key", o->tls_key);
  char *owned[] = {token, cert, key, ca};
  for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++) {
    if (owned[i])
      memset(owned[i], 0, strlen(owned[i]));
    free(owned[i]);
  }
}

/* Stops the webhook engine once: at the drain timeout or after the drain. */
static void stop_engine(void *ud) {
  hd_webhook_engine **engine = ud;
  hd_webhook_engine_stop(*engine);
  *engine = NULL;
}

/* The watcher's call: another replica changed the registrations. */
static void sync_registrations(void *ud) {
  char msg[512] = "";
  size_t changed = 0;
  if (hd_control_sync(ud, &changed, msg, sizeof(msg)) != HD_OK)
    hd_log(HD_LOG_WARN, "sync: cannot read the registrations: %s", msg);
  else if (changed > 0)
    hd_log(HD_LOG_INFO, "sync: %zu handlers changed by other replicas",
           changed);
}

static atomic_int database_up = 1;

static void on_database_state(int up, void *ud) {
  (void)ud;
  atomic_store(&database_up, up);
}

static int64_t gauge_database_up(void *ud) {
  (void)ud;
  return atomic_load(&database_up);
}

static int64_t counter_database_round_trips(void *ud) {
  return (int64_t)hd_store_pg_round_trips(ud);
}

/* Opens the store (SQLite in --state-dir, or PostgreSQL), makes the outbox
 * on its journal and loads the registrations (a shared store: the first
 * sync, then the watcher keeps them in step). 0 on success. */
static int open_state(hd_options *o, hd_control *ctl, hd_webhook_engine *engine,
                      hd_webhook_kind_ctx *webhook_ctx, hd_store **store,
                      hd_outbox **outbox) {
  char msg[512] = "";
  const char *where = o->state_dir ? o->state_dir : "database";
  size_t loaded = 0;
  hd_err err;

  if (o->database) {
    hd_store_pg_config cfg;
    hd_store_pg_config_init(&cfg);
    cfg.conninfo = o->database;
    cfg.replica_id = o->replica_id;
    cfg.lease_ms = o->delivery_lease_ms;
    cfg.sync_interval_ms = o->sync_interval_ms;
    cfg.on_state = on_database_state;
    err = hd_store_pg_open(&cfg, store, msg, sizeof(msg));
  } else {
    err = hd_store_sqlite_open(o->state_dir, store, msg, sizeof(msg));
  }
  if (err != HD_OK) {
    hd_log(HD_LOG_ERROR, "%s%s%s", o->state_dir ? o->state_dir : "",
           o->state_dir ? ": " : "", msg);
    return -1;
  }
  if (o->database)
    where = hd_store_pg_where(*store);
  hd_control_set_store(ctl, *store);
  /* The outbox before the registrations: async webhooks join it as they
   * are built; it starts delivering once they all are. */
  if ((*store)->journal != NULL &&
      hd_outbox_new(&o->outbox, (*store)->journal, engine, outbox) != HD_OK) {
    hd_log(HD_LOG_ERROR, "cannot create the delivery outbox");
    return -1;
  }
  webhook_ctx->outbox = *outbox;
  err = o->database ? hd_control_sync(ctl, &loaded, msg, sizeof(msg))
                    : hd_control_load(ctl, &loaded, msg, sizeof(msg));
  if (err != HD_OK) {
    hd_log(HD_LOG_ERROR, "%s: %s", where, msg);
    return -1;
  }
  if (*outbox != NULL && hd_outbox_run(*outbox, msg, sizeof(msg)) != HD_OK) {
    hd_log(HD_LOG_ERROR, "%s: cannot resume deliveries: %s", where, msg);
    return -1;
  }
  if (o->database && hd_store_pg_watch(*store, sync_registrations, ctl, msg,
                                       sizeof(msg)) != HD_OK) {
    hd_log(HD_LOG_ERROR, "%s: %s", where, msg);
    return -1;
  }
  if (o->database)
    hd_metrics_set_gauge("handlerd_database_up",
                         "1 while the shared database answers, 0 while it "
                         "cannot be reached.",
                         gauge_database_up, NULL);
  if (o->database)
    hd_metrics_set_counter("handlerd_database_round_trips_total",
                           "Requests this replica sent to the shared "
                           "database and waited for: a statement alone is "
                           "one, a pipelined batch one per 64.",
                           counter_database_round_trips, *store);
  hd_log(HD_LOG_INFO, "%s %s: %zu registrations loaded",
         o->database ? "database" : "state dir", where, loaded);
  return 0;
}

static int run(hd_options *o) {
  int rc = 1;
  char msg[512] = "";
  hd_registry *reg = NULL;
  hd_functions *fns = NULL;
  hd_control *ctl = NULL;
  hd_server *srv = NULL;
  hd_webhook_engine *engine = NULL;
  hd_webhook_kind_ctx webhook_ctx = {NULL, NULL};
  hd_outbox *outbox = NULL;
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
  /* The kind table's builders get what they need; their handlers' kinds
   * get metrics labels. */
  webhook_ctx.engine = engine;
  hd_control_set_kind_context(ctl, HD_TARGET_WEBHOOK, &webhook_ctx);
  size_t n_kinds;
  const hd_kind *const *kinds = hd_kinds_all(&n_kinds);
  for (size_t i = 0; i < n_kinds; i++)
    hd_metrics_add_result_kind(kinds[i]->handler_kind);
  hd_control_set_limits(ctl, &o->control);
  if (o->state_dir || o->database) {
    if (open_state(o, ctl, engine, &webhook_ctx, &store, &outbox) != 0)
      goto out;
  } else {
    hd_log(HD_LOG_WARN, "no --state-dir: registrations are kept in memory "
                        "only and are lost on restart");
  }
  /* After loading: registrations saved under higher limits stay. */
  hd_registry_set_limits(reg, (size_t)o->max_keys,
                         (size_t)o->max_handlers_per_key);
  if (load_secrets(o, secrets, 4) != 0)
    goto out;
  warn_if_exposed("--token-file", o->token_file);
  warn_if_exposed("--tls-key", o->tls_key);
  if (!o->tls_cert && !o->token_file && !is_loopback_listen(o->server.listen))
    hd_log(HD_LOG_WARN,
           "listening in plaintext on %s with no --token-file: anyone who "
           "can reach it can add handlers (set --token-file, TLS, or listen "
           "on 127.0.0.1)",
           o->server.listen);
  raise_open_files(o);
  if (hd_conn_guard_init(o->server.max_connections, on_listener_failed) != 0) {
    hd_log(HD_LOG_ERROR, "cannot reserve a spare file descriptor: %s",
           strerror(errno));
    goto out;
  }
  o->server.outbox = outbox;
  o->server.store = store;
  hd_outbox_set_metrics(outbox);
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
  hd_metrics_set_gauge("handlerd_webhook_deliveries_in_flight",
                       "Webhook deliveries submitted and not completed.",
                       gauge_webhooks_in_flight, engine);
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
  hd_options_log_limits(o);
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
  sigaddset(&stop, SIGHUP);
  int sig = 0;
  while (sigwait(&stop, &sig) == 0 && sig == SIGHUP)
    reload_secrets(o, srv);
  if (atomic_load(&listener_failed)) {
    rc = 1;
  } else {
    hd_log(HD_LOG_INFO, "%s received: shutting down", strsignal(sig));
    rc = 0;
  }

out:
  for (int i = 0; i < 4; i++) {
    if (secrets[i])
      memset(secrets[i], 0, strlen(secrets[i]));
    free(secrets[i]);
  }
  hd_metrics_server_stop(metrics);
  /* Other replicas' changes stop arriving before anything they touch
   * (registry, outbox, control) is stopped or freed. */
  if (o->database && store)
    hd_store_pg_unwatch(store);
  /* Order matters: stop accepting and drain; then stop the webhook engine,
   * which completes what is still pending while the queue threads can
   * still send (or drop) those replies; then free the server once its last
   * call is gone; the registry (owning the webhook handlers) goes last:
   * async webhooks leave the outbox then (it lives until they have). */
  if (srv)
    hd_server_shutdown(srv, o->drain_ms, stop_engine, &engine);
  /* Accepted events are committed by now; attempts in flight are made
   * again at the next start. Before the engine, whose stop ends them. */
  hd_outbox_stop(outbox);
  stop_engine(&engine);
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
  hd_options o;
  hd_options_init(&o);
  int pr = hd_options_parse(&o, argc, argv);
  if (pr != 0) {
    hd_options_free(&o);
    return pr > 0 ? 0 : 2;
  }
  hd_log_set_level(o.level);
  hd_log_set_format(o.log_format);

  /* Block the stop signals in every thread; main takes them with sigwait. */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);
  signal(SIGPIPE, SIG_IGN);

  hd_log_capture_grpc();
  grpc_init();
  int rc = run(&o);
  grpc_shutdown();
  hd_options_free(&o);
  return rc;
}
