/*
 * webhook_fanout.c - load driver for the webhook fan-out benchmark
 * (bench/webhook_fanout.sh), on the handlerctl client library.
 *
 *   webhook_fanout -a HANDLERD_ADDR -u RECEIVER_URL [-k K] [-t T] [-d SECS]
 *                  [-m unary|stream] [-w WINDOW] [-K KEY]
 *
 * Registers K webhooks (default 4) under one key, pointing at
 * RECEIVER_URL/hook/<i>, then runs T threads (default 4) for a 1 s warm-up
 * and then for SECS seconds (default 10), the measured run. Each thread has
 * its own hc_conn (gRPC shares one TCP connection between them) and either
 * calls Dispatch in a loop (unary, the default: one dispatch in flight per
 * thread) or keeps WINDOW events (default 4) in flight on one
 * DispatchStream. Every dispatch's latency - send to reply, which includes
 * all K deliveries - is recorded. The receiver's count of connections
 * accepted during the run shows whether handlerd reuses its connections.
 *
 * The receiver's own count (GET RECEIVER_URL/count, read before and after
 * the run, once every dispatch has been answered) cross-checks the
 * deliveries. The last line is machine-readable:
 *   RESULT dispatch_per_s=.. delivery_per_s=.. received=.. new_conns=.. ...
 */
#include <handlerctl/client.h>

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WARMUP_SECS 1

typedef struct config {
  const char *addr;
  const char *url;
  const char *key;
  int k, threads, secs, window;
  int stream;
} config;

typedef struct worker {
  const config *cfg;
  pthread_t thread;
  int secs;
  int64_t end_ns;
  /* Results. */
  int64_t *lat_ns; /* one per answered dispatch */
  size_t n_lat, cap_lat;
  uint64_t results_ok, results_failed, calls_failed;
  char first_error[1024];
} worker;

static int64_t mono_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, hc_err err, const hc_status *st) {
  fprintf(stderr, "webhook_fanout: %s: %s", what, hc_strerror(err));
  if (err == HC_ERPC && st != NULL)
    fprintf(stderr, " (%s: %s)", hc_status_code_name(st->grpc_code),
            st->message);
  fputc('\n', stderr);
  exit(1);
}

static void record(worker *w, int64_t ns) {
  if (w->n_lat == w->cap_lat) {
    size_t cap = w->cap_lat ? w->cap_lat * 2 : 65536;
    int64_t *p = realloc(w->lat_ns, cap * sizeof(*p));
    if (p == NULL) {
      fprintf(stderr, "webhook_fanout: out of memory\n");
      exit(1);
    }
    w->lat_ns = p;
    w->cap_lat = cap;
  }
  w->lat_ns[w->n_lat++] = ns;
}

static void note_error(worker *w, const char *fmt, const char *a,
                       const char *b) {
  if (w->first_error[0] == '\0')
    snprintf(w->first_error, sizeof(w->first_error), fmt, a, b);
}

static void count_results(worker *w, const hc_results *r) {
  for (size_t i = 0; i < r->count; i++) {
    if (r->items[i].ok) {
      w->results_ok++;
    } else {
      w->results_failed++;
      note_error(w, "result failed: %s%s", r->items[i].error_message, "");
    }
  }
}

/* The event every dispatch sends: an update with a small JSON value. */
static hc_event bench_event(const config *cfg) {
  static const char value[] =
      "{\"bid\":1.10512,\"ask\":1.10527,\"venue\":\"bench\",\"seq\":42}";
  hc_event ev;

  memset(&ev, 0, sizeof(ev));
  ev.key = cfg->key;
  ev.event = "update";
  ev.topic_path = "bench/prices/eur-usd";
  ev.value = hc_value_json(value);
  return ev;
}

static void run_unary(worker *w, hc_conn *c) {
  hc_event ev = bench_event(w->cfg);

  while (mono_ns() < w->end_ns) {
    hc_results *r = NULL;
    hc_status st;
    int64_t t0 = mono_ns();
    hc_err err = hc_dispatch(c, &ev, 0, &r, &st);
    int64_t t1 = mono_ns();

    if (err != HC_OK) {
      w->calls_failed++;
      note_error(w, "dispatch failed: %s %s", hc_strerror(err),
                 err == HC_ERPC ? st.message : "");
      continue;
    }
    record(w, t1 - t0);
    count_results(w, r);
    hc_results_free(r);
  }
}

static void run_stream(worker *w, hc_conn *c) {
  hc_event ev = bench_event(w->cfg);
  int window = w->cfg->window;
  int64_t *sent_ns = calloc((size_t)window, sizeof(*sent_ns));
  uint64_t n_sent = 0, n_recv = 0;
  hc_stream *s = NULL;
  hc_status st;
  hc_err err;

  if (sent_ns == NULL) {
    fprintf(stderr, "webhook_fanout: out of memory\n");
    exit(1);
  }
  /* The stream's deadline: the run plus a margin for the last replies. */
  err = hc_stream_open(c, w->secs * 1000 + 30000, &s);
  if (err != HC_OK)
    die("DispatchStream", err, NULL);
  /* Replies come back in request order, so a ring of send times indexed by
   * sequence number gives each reply its latency. */
  for (;;) {
    int more = mono_ns() < w->end_ns;
    hc_stream_reply *rep = NULL;

    while (more && n_sent - n_recv < (uint64_t)window) {
      sent_ns[n_sent % (uint64_t)window] = mono_ns();
      if ((err = hc_stream_send(s, &ev)) != HC_OK)
        die("stream send", err, NULL);
      n_sent++;
    }
    if (n_recv == n_sent)
      break;
    if ((err = hc_stream_recv(s, &rep)) != HC_OK)
      die("stream recv", err, NULL);
    if (rep->sequence != n_recv) {
      fprintf(stderr,
              "webhook_fanout: reply %" PRIu64 ", expected %" PRIu64 "\n",
              rep->sequence, n_recv);
      exit(1);
    }
    record(w, mono_ns() - sent_ns[n_recv % (uint64_t)window]);
    n_recv++;
    if (rep->code != 0) {
      w->calls_failed++;
      note_error(w, "stream reply failed: %s%s", rep->message, "");
    } else {
      count_results(w, &rep->results);
    }
    hc_stream_reply_free(rep);
  }
  if ((err = hc_stream_finish(s, &st)) != HC_OK)
    die("stream finish", err, &st);
  hc_stream_free(s);
  free(sent_ns);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  hc_conn *c = NULL;
  hc_err err = hc_connect(w->cfg->addr, NULL, &c);

  if (err != HC_OK)
    die("connect", err, NULL);
  if (w->cfg->stream)
    run_stream(w, c);
  else
    run_unary(w, c);
  hc_close(c);
  return NULL;
}

/* Runs cfg->threads workers for `secs` seconds, results into ws[]. */
static void run_phase(const config *cfg, worker *ws, int secs) {
  int64_t end = mono_ns() + (int64_t)secs * 1000000000;

  for (int i = 0; i < cfg->threads; i++) {
    ws[i].cfg = cfg;
    ws[i].secs = secs;
    ws[i].end_ns = end;
    if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
      fprintf(stderr, "webhook_fanout: cannot start a thread\n");
      exit(1);
    }
  }
  for (int i = 0; i < cfg->threads; i++)
    pthread_join(ws[i].thread, NULL);
}

/* ---- the receiver's count ---------------------------------------------- */

typedef struct buf {
  char data[256];
  size_t len;
} buf;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
  buf *b = ud;
  size_t len = size * n;
  size_t room = sizeof(b->data) - 1 - b->len;
  size_t keep = len < room ? len : room;

  memcpy(b->data + b->len, p, keep);
  b->len += keep;
  b->data[b->len] = '\0';
  return len;
}

/* The receiver's request count, from GET <url>/count ({"requests":N,
 * "bytes":B,"connections":C}), and B and C; -1 when it cannot be read. */
static int64_t receiver_count(const char *url, int64_t *bytes, int64_t *conns) {
  char full[2048];
  buf b = {{0}, 0};
  CURL *h = curl_easy_init();
  CURLcode rc;
  long status = 0;
  int64_t n = -1;
  const char *p;

  if (h == NULL)
    return -1;
  snprintf(full, sizeof(full), "%s/count", url);
  curl_easy_setopt(h, CURLOPT_URL, full);
  curl_easy_setopt(h, CURLOPT_PROXY, "");
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  if (rc == CURLE_OK && status == 200 &&
      (p = strstr(b.data, "\"requests\":")) != NULL) {
    n = strtoll(p + strlen("\"requests\":"), NULL, 10);
    if (bytes != NULL && (p = strstr(b.data, "\"bytes\":")) != NULL)
      *bytes = strtoll(p + strlen("\"bytes\":"), NULL, 10);
    if (conns != NULL && (p = strstr(b.data, "\"connections\":")) != NULL)
      *conns = strtoll(p + strlen("\"connections\":"), NULL, 10);
  }
  return n;
}

/* ---- main ------------------------------------------------------------------
 */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted `v`. */
static double pct_ms(const int64_t *v, size_t n, double p) {
  size_t i;

  if (n == 0)
    return 0.0;
  i = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (i < 1)
    i = 1;
  if (i > n)
    i = n;
  return (double)v[i - 1] / 1e6;
}

static void usage(void) {
  fprintf(stderr, "usage: webhook_fanout -a HANDLERD_ADDR -u RECEIVER_URL [-k "
                  "K] [-t THREADS] [-d SECS]\n"
                  "                      [-m unary|stream] [-w WINDOW] [-K "
                  "KEY]\n");
  exit(2);
}

int main(int argc, char **argv) {
  config cfg = {NULL, NULL, "bench-fanout", 4, 4, 10, 4, 0};
  hc_conn *c = NULL;
  hc_status st;
  hc_err err;
  worker *ws;
  int64_t t0, t1, before, after, bytes_before = 0, bytes_after = 0;
  int64_t conns_before = 0, conns_after = 0;
  uint64_t dispatches = 0, ok = 0, failed = 0, calls_failed = 0;
  int64_t *all;
  size_t n_all = 0;
  double secs;
  int opt;

  while ((opt = getopt(argc, argv, "a:u:k:t:d:m:w:K:")) != -1) {
    switch (opt) {
    case 'a':
      cfg.addr = optarg;
      break;
    case 'u':
      cfg.url = optarg;
      break;
    case 'k':
      cfg.k = atoi(optarg);
      break;
    case 't':
      cfg.threads = atoi(optarg);
      break;
    case 'd':
      cfg.secs = atoi(optarg);
      break;
    case 'm':
      if (strcmp(optarg, "unary") == 0)
        cfg.stream = 0;
      else if (strcmp(optarg, "stream") == 0)
        cfg.stream = 1;
      else
        usage();
      break;
    case 'w':
      cfg.window = atoi(optarg);
      break;
    case 'K':
      cfg.key = optarg;
      break;
    default:
      usage();
    }
  }
  if (cfg.addr == NULL || cfg.url == NULL || cfg.k < 1 || cfg.threads < 1 ||
      cfg.secs < 1 || cfg.window < 1 || optind != argc)
    usage();
  curl_global_init(CURL_GLOBAL_DEFAULT);

  /* K webhooks under one key, each at its own path on the receiver. */
  if ((err = hc_connect(cfg.addr, NULL, &c)) != HC_OK)
    die("connect", err, NULL);
  for (int i = 0; i < cfg.k; i++) {
    char url[2048];
    hc_webhook wh;
    hc_handler_spec spec;
    char *id = NULL;

    snprintf(url, sizeof(url), "%s/hook/%d", cfg.url, i);
    memset(&wh, 0, sizeof(wh));
    wh.url = url;
    memset(&spec, 0, sizeof(spec));
    spec.key = cfg.key;
    spec.target.webhook = &wh;
    if ((err = hc_add_handler(c, &spec, 0, &id, NULL, &st)) != HC_OK)
      die("AddHandler", err, &st);
    hc_free(id);
  }
  /* Warm-up: the same threads for WARMUP_SECS, so that handlerd's
   * connections to the receiver are open and code paths are hot before the
   * receiver's count is read. */
  ws = calloc((size_t)cfg.threads, sizeof(*ws));
  if (ws == NULL)
    return 1;
  run_phase(&cfg, ws, WARMUP_SECS);
  for (int i = 0; i < cfg.threads; i++) {
    if (ws[i].results_failed != 0 || ws[i].calls_failed != 0) {
      fprintf(stderr, "webhook_fanout: warm-up failed: %s\n",
              ws[i].first_error);
      return 1;
    }
    free(ws[i].lat_ns);
  }
  memset(ws, 0, (size_t)cfg.threads * sizeof(*ws));

  before = receiver_count(cfg.url, &bytes_before, &conns_before);
  t0 = mono_ns();
  run_phase(&cfg, ws, cfg.secs);
  t1 = mono_ns();
  after = receiver_count(cfg.url, &bytes_after, &conns_after);
  hc_close(c);

  for (int i = 0; i < cfg.threads; i++) {
    dispatches += ws[i].n_lat;
    ok += ws[i].results_ok;
    failed += ws[i].results_failed;
    calls_failed += ws[i].calls_failed;
  }
  all = malloc((dispatches ? dispatches : 1) * sizeof(*all));
  if (all == NULL)
    return 1;
  for (int i = 0; i < cfg.threads; i++) {
    memcpy(all + n_all, ws[i].lat_ns, ws[i].n_lat * sizeof(*all));
    n_all += ws[i].n_lat;
    if (ws[i].first_error[0] != '\0')
      fprintf(stderr, "webhook_fanout: thread %d: %s\n", i, ws[i].first_error);
  }
  qsort(all, n_all, sizeof(*all), cmp_i64);
  secs = (double)(t1 - t0) / 1e9;

  int64_t received = before >= 0 && after >= 0 ? after - before : -1;
  double p50 = pct_ms(all, n_all, 50), p99 = pct_ms(all, n_all, 99);
  double max = n_all ? (double)all[n_all - 1] / 1e6 : 0.0;

  printf("%s, %d threads%s, %d webhooks under one key, %.2f s\n",
         cfg.stream ? "DispatchStream" : "unary Dispatch", cfg.threads,
         cfg.stream ? "" : " (one call in flight each)", cfg.k, secs);
  if (cfg.stream)
    printf("window %d events in flight per stream\n", cfg.window);
  printf("dispatches   %10" PRIu64 "  %10.0f /s\n", dispatches,
         (double)dispatches / secs);
  printf("deliveries   %10" PRIu64 "  %10.0f /s  (ok results)\n", ok,
         (double)ok / secs);
  if (received >= 0)
    printf(
        "receiver     %10" PRId64 "  %10.0f /s  (%s; %.0f body bytes each)\n",
        received, (double)received / secs,
        received == (int64_t)(ok + failed) ? "matches"
                                           : "DOES NOT MATCH the results",
        received > 0 ? (double)(bytes_after - bytes_before) / (double)received
                     : 0.0);
  else
    printf("receiver     count unavailable\n");
  /* Less one: the connection of the GET /count that read `after`. */
  int64_t new_conns =
      received >= 0 ? conns_after - conns_before - 1 : (int64_t)-1;
  if (new_conns >= 0)
    printf("connections  %10" PRId64 "  opened at the receiver during the run"
           " (keep-alive: none expected)\n",
           new_conns);
  printf("latency ms   p50 %.3f  p99 %.3f  max %.3f\n", p50, p99, max);
  printf("failed       %" PRIu64 " results, %" PRIu64 " calls\n", failed,
         calls_failed);
  printf("RESULT dispatch_per_s=%.0f delivery_per_s=%.0f received=%" PRId64
         " new_conns=%" PRId64 " p50_ms=%.3f p99_ms=%.3f max_ms=%.3f"
         " failed_results=%" PRIu64 " failed_calls=%" PRIu64 "\n",
         (double)dispatches / secs, (double)ok / secs, received, new_conns, p50,
         p99, max, failed, calls_failed);

  for (int i = 0; i < cfg.threads; i++)
    free(ws[i].lat_ns);
  free(ws);
  free(all);
  curl_global_cleanup();
  return failed == 0 && calls_failed == 0 ? 0 : 1;
}
