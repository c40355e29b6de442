#include "metrics.h"
#include "handlerd/log.h"

#include "handlerd/grpc_status_names.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CODES HD_GRPC_STATUS_COUNT
/* Room for every layer's gauges: main.c and the outbox add 14. */
#define GAUGES 32

static const char *method_names[HD_METRICS_METHODS];
static atomic_uint_fast64_t calls[HD_METRICS_METHODS][CODES];

/* Label values with a fixed slot each; the last slot takes the rest. */
static const char *const events[] = {"subscribe", "update", "unsubscribe",
                                     "close",     "error",  "response",
                                     "other"};
#define EVENTS (sizeof(events) / sizeof(events[0]))
/* Handler kinds: the model's, then those of the kind table
 * (hd_metrics_add_result_kind), "other" always last. */
#define MAX_KINDS 16
static const char *kinds[MAX_KINDS] = {"simple", "webhook", "event-stream",
                                       "set", "other"};
static size_t n_kinds = 5;

/* Upper bounds (seconds) of the latency buckets; +Inf is implicit. */
static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                1,      2.5,     5,      10};
#define BUCKETS (sizeof(bounds) / sizeof(bounds[0]))

typedef struct histogram {
  atomic_uint_fast64_t bucket[BUCKETS + 1]; /* not cumulative; last: +Inf */
  atomic_uint_fast64_t count, sum_ns;
} histogram;

static const char *const refusals[] = {"unauthenticated",
                                       "max_calls",
                                       "max_health_watches",
                                       "max_connections",
                                       "out_of_descriptors",
                                       "shutting_down",
                                       "other"};
#define REFUSALS (sizeof(refusals) / sizeof(refusals[0]))

static atomic_uint_fast64_t dispatches[EVENTS][CODES];
static atomic_uint_fast64_t refused[REFUSALS];
static histogram dispatch_latency;
static atomic_uint_fast64_t results[MAX_KINDS][2];
static atomic_uint_fast64_t webhook_attempts, webhook_retries;
static atomic_uint_fast64_t webhook_deliveries[CODES];
static histogram webhook_latency;

static struct {
  const char *name, *help;
  hd_gauge_fn *fn;
  void *ud;
  int counter;
} gauges[GAUGES];
static atomic_int n_gauges;

static void observe(histogram *h, int64_t ns) {
  double s = (double)ns / 1e9;
  size_t i = 0;
  while (i < BUCKETS && s > bounds[i])
    i++;
  atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, (uint_fast64_t)(ns > 0 ? ns : 0),
                            memory_order_relaxed);
}

static size_t slot_of(const char *const *names, size_t n, const char *name) {
  for (size_t i = 0; name != NULL && i + 1 < n; i++)
    if (strcmp(names[i], name) == 0)
      return i;
  return n - 1;
}

static int code_slot(int code) {
  return code < 0 || code >= CODES ? 2 /* UNKNOWN */ : code;
}

void hd_metrics_set_method_name(int i, const char *name) {
  if (i >= 0 && i < HD_METRICS_METHODS)
    method_names[i] = name;
}

void hd_metrics_call(int method, int code) {
  if (method < 0 || method >= HD_METRICS_METHODS)
    method = HD_METRICS_METHODS - 1;
  atomic_fetch_add_explicit(&calls[method][code_slot(code)], 1,
                            memory_order_relaxed);
}

void hd_metrics_call_refused(const char *reason) {
  atomic_fetch_add_explicit(&refused[slot_of(refusals, REFUSALS, reason)], 1,
                            memory_order_relaxed);
}

void hd_metrics_dispatch(const char *event, int code, int64_t duration_ns) {
  atomic_fetch_add_explicit(
      &dispatches[slot_of(events, EVENTS, event)][code_slot(code)], 1,
      memory_order_relaxed);
  if (duration_ns >= 0)
    observe(&dispatch_latency, duration_ns);
}

void hd_metrics_result(const char *kind, int ok) {
  atomic_fetch_add_explicit(&results[slot_of(kinds, n_kinds, kind)][ok != 0], 1,
                            memory_order_relaxed);
}

hd_err hd_metrics_add_result_kind(const char *kind) {
  if (kind == NULL)
    return HD_EINVAL;
  if (slot_of(kinds, n_kinds, kind) != n_kinds - 1)
    return HD_OK; /* known already */
  if (n_kinds == MAX_KINDS)
    return HD_EBUSY;
  /* The new label takes the place of "other", which moves up one, with
   * whatever it counted so far. */
  for (int ok = 0; ok < 2; ok++) {
    atomic_store(&results[n_kinds][ok], atomic_load(&results[n_kinds - 1][ok]));
    atomic_store(&results[n_kinds - 1][ok], 0);
  }
  kinds[n_kinds - 1] = kind;
  kinds[n_kinds] = "other";
  n_kinds++;
  return HD_OK;
}

void hd_metrics_webhook_attempt(int retry) {
  atomic_fetch_add_explicit(&webhook_attempts, 1, memory_order_relaxed);
  if (retry)
    atomic_fetch_add_explicit(&webhook_retries, 1, memory_order_relaxed);
}

void hd_metrics_webhook_delivery(int code, int64_t duration_ns) {
  atomic_fetch_add_explicit(&webhook_deliveries[code_slot(code)], 1,
                            memory_order_relaxed);
  observe(&webhook_latency, duration_ns);
}

static void set_reading(const char *name, const char *help, hd_gauge_fn *fn,
                        void *ud, int counter) {
  int i = atomic_load(&n_gauges);
  for (int k = 0; k < i; k++)
    if (strcmp(gauges[k].name, name) == 0) {
      gauges[k].fn = fn;
      gauges[k].ud = ud;
      return;
    }
  if (i == GAUGES) { /* a programming error: say so rather than hide it */
    hd_log(HD_LOG_ERROR, "metrics: no room for gauge %s (raise GAUGES)", name);
    return;
  }
  gauges[i].name = name;
  gauges[i].help = help;
  gauges[i].fn = fn;
  gauges[i].ud = ud;
  gauges[i].counter = counter;
  atomic_store(&n_gauges, i + 1);
}

void hd_metrics_set_gauge(const char *name, const char *help, hd_gauge_fn *fn,
                          void *ud) {
  set_reading(name, help, fn, ud, 0);
}

void hd_metrics_set_counter(const char *name, const char *help, hd_gauge_fn *fn,
                            void *ud) {
  set_reading(name, help, fn, ud, 1);
}

static void render_histogram(FILE *f, const char *name, const char *help,
                             histogram *h) {
  uint_fast64_t cumulative = 0;
  fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  for (size_t i = 0; i <= BUCKETS; i++) {
    cumulative += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
    if (i < BUCKETS)
      fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
              (unsigned long long)cumulative);
    else
      fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name,
              (unsigned long long)cumulative);
  }
  /* Read after the buckets: a concurrent observation can make count lag
   * +Inf by one for a scrape, never lead it. */
  fprintf(f, "%s_sum %.9f\n%s_count %llu\n", name,
          (double)atomic_load(&h->sum_ns) / 1e9, name,
          (unsigned long long)cumulative);
}

char *hd_metrics_render(void) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return NULL;
  fprintf(f,
          "# HELP handlerd_build_info The running version.\n"
          "# TYPE handlerd_build_info gauge\n"
          "handlerd_build_info{version=\"%s\"} 1\n",
          HD_VERSION);
  fprintf(f, "# HELP handlerd_grpc_calls_total gRPC calls handled, by method "
             "and status.\n# TYPE handlerd_grpc_calls_total counter\n");
  for (int m = 0; m < HD_METRICS_METHODS; m++)
    for (int c = 0; c < CODES; c++) {
      uint_fast64_t v =
          atomic_load_explicit(&calls[m][c], memory_order_relaxed);
      if (v)
        fprintf(f,
                "handlerd_grpc_calls_total{method=\"%s\",code=\"%s\"} %llu\n",
                method_names[m] ? method_names[m] : "unknown",
                hd_grpc_status_name(c), (unsigned long long)v);
    }
  fprintf(f, "# HELP handlerd_calls_refused_total gRPC calls refused before "
             "they ran, by reason.\n"
             "# TYPE handlerd_calls_refused_total counter\n");
  for (size_t i = 0; i < REFUSALS; i++) {
    uint_fast64_t v = atomic_load_explicit(&refused[i], memory_order_relaxed);
    /* Every named reason, 0 included (a rate needs the series); "other"
     * only once it happened. */
    if (v || i + 1 < REFUSALS)
      fprintf(f, "handlerd_calls_refused_total{reason=\"%s\"} %llu\n",
              refusals[i], (unsigned long long)v);
  }
  fprintf(f, "# HELP handlerd_dispatches_total Events dispatched, by event "
             "and status (a stream's items one by one).\n"
             "# TYPE handlerd_dispatches_total counter\n");
  for (size_t e = 0; e < EVENTS; e++)
    for (int c = 0; c < CODES; c++) {
      uint_fast64_t v =
          atomic_load_explicit(&dispatches[e][c], memory_order_relaxed);
      if (v)
        fprintf(f, "handlerd_dispatches_total{event=\"%s\",code=\"%s\"} %llu\n",
                events[e], hd_grpc_status_name(c), (unsigned long long)v);
    }
  render_histogram(f, "handlerd_dispatch_duration_seconds",
                   "Time from a dispatch's start to its last handler result.",
                   &dispatch_latency);
  fprintf(f, "# HELP handlerd_handler_results_total Handler results, by "
             "handler kind and outcome.\n"
             "# TYPE handlerd_handler_results_total counter\n");
  for (size_t k = 0; k < n_kinds; k++)
    for (int ok = 1; ok >= 0; ok--)
      fprintf(f,
              "handlerd_handler_results_total{kind=\"%s\",outcome=\"%s\"} "
              "%llu\n",
              kinds[k], ok ? "ok" : "error",
              (unsigned long long)atomic_load(&results[k][ok]));
  fprintf(f,
          "# HELP handlerd_webhook_attempts_total HTTP requests sent to "
          "webhooks, retries included.\n"
          "# TYPE handlerd_webhook_attempts_total counter\n"
          "handlerd_webhook_attempts_total %llu\n"
          "# HELP handlerd_webhook_retries_total Webhook attempts that were "
          "retries.\n"
          "# TYPE handlerd_webhook_retries_total counter\n"
          "handlerd_webhook_retries_total %llu\n",
          (unsigned long long)atomic_load(&webhook_attempts),
          (unsigned long long)atomic_load(&webhook_retries));
  fprintf(f, "# HELP handlerd_webhook_deliveries_total Webhook deliveries "
             "completed, by the status code of their result.\n"
             "# TYPE handlerd_webhook_deliveries_total counter\n");
  for (int c = 0; c < CODES; c++) {
    uint_fast64_t v = atomic_load(&webhook_deliveries[c]);
    if (v || c == 0)
      fprintf(f, "handlerd_webhook_deliveries_total{code=\"%s\"} %llu\n",
              hd_grpc_status_name(c), (unsigned long long)v);
  }
  render_histogram(f, "handlerd_webhook_delivery_duration_seconds",
                   "Time from submission to the delivery's result, retries "
                   "included.",
                   &webhook_latency);
  int n = atomic_load(&n_gauges);
  for (int i = 0; i < n; i++)
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", gauges[i].name,
            gauges[i].help, gauges[i].name,
            gauges[i].counter ? "counter" : "gauge", gauges[i].name,
            (long long)gauges[i].fn(gauges[i].ud));
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

struct hd_metrics_server {
  struct MHD_Daemon *daemon;
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls) {
  (void)cls;
  (void)version;
  (void)upload;
  (void)upload_size;
  (void)req_cls;
  struct MHD_Response *resp;
  unsigned status;
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    static const char msg[] = "only GET\n";
    resp = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg,
                                           MHD_RESPMEM_PERSISTENT);
    status = MHD_HTTP_METHOD_NOT_ALLOWED;
  } else if (strcmp(url, "/metrics") != 0) {
    static const char msg[] = "not found: try /metrics\n";
    resp = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg,
                                           MHD_RESPMEM_PERSISTENT);
    status = MHD_HTTP_NOT_FOUND;
  } else {
    char *text = hd_metrics_render();
    if (!text)
      return MHD_NO;
    resp = MHD_create_response_from_buffer(strlen(text), text,
                                           MHD_RESPMEM_MUST_FREE);
    status = MHD_HTTP_OK;
    MHD_add_response_header(resp, "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8");
  }
  if (!resp)
    return MHD_NO;
  enum MHD_Result r = MHD_queue_response(conn, status, resp);
  MHD_destroy_response(resp);
  return r;
}

/* libmicrohttpd's messages ("Failed to bind ...", "Error: ...") as
 * handlerd's log lines rather than raw text on stderr. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
  char line[512];
  size_t n;

  (void)cls;
  vsnprintf(line, sizeof(line), fmt, ap);
  n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
    line[--n] = '\0';
  hd_log(HD_LOG_WARN, "metrics server: %s", line);
}

/* A listening TCP socket on `sa`, or -1 with errno set. Bound here rather
 * than by libmicrohttpd so that a failure says why. */
static int listen_on(const struct sockaddr_in *sa) {
  int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -1;
  /* As libmicrohttpd does: a restart need not wait out TIME_WAIT. */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 ||
      listen(fd, 64) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

hd_err hd_metrics_server_start(const char *listen, hd_metrics_server **out,
                               char *msg, size_t msg_size) {
  char host[64];
  const char *colon = strrchr(listen, ':');
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  char *end = NULL;
  long port = colon && colon[1] ? strtol(colon + 1, &end, 10) : -1;
  if (end && *end != '\0')
    port = -1; /* "80x", "abc" */
  size_t hlen = colon ? (size_t)(colon - listen) : 0;
  if (!colon || port < 0 || port > 65535 || hlen >= sizeof(host)) {
    snprintf(msg, msg_size, "metrics address '%s' is not host:port", listen);
    return HD_EINVAL;
  }
  memcpy(host, listen, hlen);
  host[hlen] = '\0';
  if (inet_pton(AF_INET, hlen ? host : "0.0.0.0", &sa.sin_addr) != 1) {
    snprintf(msg, msg_size, "metrics address '%s': '%s' is not an IPv4 address",
             listen, host);
    return HD_EINVAL;
  }
  sa.sin_port = htons((uint16_t)port);
  int fd = listen_on(&sa);
  if (fd < 0) {
    int e = errno;
    if (e == EADDRINUSE)
      snprintf(msg, msg_size,
               "cannot serve metrics on %s (--metrics-listen): port %ld is "
               "already in use",
               listen, port);
    else if (e == EADDRNOTAVAIL)
      snprintf(msg, msg_size,
               "cannot serve metrics on %s (--metrics-listen): %s is not an "
               "address of this host",
               listen, hlen ? host : "0.0.0.0");
    else if (e == EACCES)
      snprintf(msg, msg_size,
               "cannot serve metrics on %s (--metrics-listen): port %ld needs "
               "privileges (permission denied)",
               listen, port);
    else
      snprintf(msg, msg_size,
               "cannot serve metrics on %s (--metrics-listen): %s", listen,
               strerror(e));
    return HD_EIO;
  }
  hd_metrics_server *s = calloc(1, sizeof(*s));
  if (!s) {
    close(fd);
    return HD_ENOMEM;
  }
  /* The logger first: libmicrohttpd uses its own for options before it.
   * The daemon owns fd from here: MHD_stop_daemon closes it. A failed
   * start closes it on some paths and not on others, so then it is left
   * open (a leak at worst, never a double close). */
  s->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
      on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT, 64,
      MHD_OPTION_CONNECTION_TIMEOUT, 10, MHD_OPTION_END);
  if (!s->daemon) {
    free(s);
    snprintf(msg, msg_size,
             "cannot serve metrics on %s (--metrics-listen): the HTTP server "
             "did not start",
             listen);
    return HD_EIO;
  }
  *out = s;
  return HD_OK;
}

void hd_metrics_server_stop(hd_metrics_server *s) {
  if (!s)
    return;
  MHD_stop_daemon(s->daemon);
  free(s);
}
