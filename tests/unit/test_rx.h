/*
 * test_rx.h - a real HTTP receiver for the unit tests that deliver webhooks
 * (test_webhook.c, test_outbox.c): libmicrohttpd on 127.0.0.1, one thread
 * a connection, that records every request (method, headers, body, the
 * status it was answered) and answers from a script of steps or as a
 * callback says. Only loopback traffic. And the webhook engine those tests
 * deliver through.
 *
 * Each tests/unit/test_*.c is built alone into its own binary, so these are
 * static inline (a test that uses only some of them builds without
 * unused-function warnings). Include after <cmocka.h>.
 */
#ifndef HD_TEST_RX_H
#define HD_TEST_RX_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "webhook_engine.h"

/* ---- time ---------------------------------------------------------------- */

static inline int64_t mono_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* `ms` times the sanitizer factor HD_IT_SLOW (scripts/test sets 2 under
 * ASan, 3 under TSan; 1 when unset). Every bound on how long something may
 * take is scaled, and with it the timeouts, deadlines and Retry-After it is
 * measured against, so what a bound tells apart stays apart. Bounds on how
 * long something must at least take are not. */
static inline int64_t scaled_ms(int64_t ms) {
  const char *env = getenv("HD_IT_SLOW");
  double f = env != NULL ? strtod(env, NULL) : 1;

  return (int64_t)((double)ms * (f >= 1 ? f : 1));
}

/* ---- the receiver -------------------------------------------------------- */

#define RX_MAX_REQS 128
#define RX_MAX_HEADERS 64
#define RX_MAX_STEPS 8

/* One answer. */
typedef struct rx_step {
  int status;
  int delay_ms; /* before answering; cut short when the receiver stops */
  const char *body;
  size_t body_len;
  const char *retry_after; /* Retry-After header, or NULL */
} rx_step;

typedef struct rx_req {
  char method[16];
  int n_headers;
  char *names[RX_MAX_HEADERS];
  char *values[RX_MAX_HEADERS];
  char *body;
  size_t body_len;
  int status; /* what it was answered */
} rx_req;

typedef struct rx rx;

/* How to answer request `i` (`q`): may change the scripted `step`. Called
 * under the receiver's lock. */
typedef void rx_answer_fn(rx *r, int i, const rx_req *q, rx_step *step);

struct rx {
  struct MHD_Daemon *daemon;
  int port;
  char url[64];
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int quitting;
  rx_step steps[RX_MAX_STEPS]; /* request i gets step min(i, n_steps - 1) */
  int n_steps;
  rx_answer_fn *answer; /* or NULL */
  void *ud;             /* for `answer` */
  rx_req reqs[RX_MAX_REQS];
  int n_reqs; /* requests seen (past RX_MAX_REQS: counted, not kept) */
};

struct rx_upload {
  char *body;
  size_t len;
};

static inline enum MHD_Result rx_collect(void *cls, enum MHD_ValueKind kind,
                                         const char *key, const char *value) {
  rx_req *q = cls;

  (void)kind;
  if (q->n_headers < RX_MAX_HEADERS) {
    q->names[q->n_headers] = strdup(key);
    q->values[q->n_headers] = strdup(value ? value : "");
    q->n_headers++;
  }
  return MHD_YES;
}

static inline void rx_req_clear(rx_req *q) {
  for (int k = 0; k < q->n_headers; k++) {
    free(q->names[k]);
    free(q->values[k]);
  }
  free(q->body);
}

/* Waits on r->cond for `ms` or until the receiver stops. Under r->lock. */
static inline void rx_hold(rx *r, int ms) {
  struct timespec until;

  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  while (!r->quitting &&
         pthread_cond_timedwait(&r->cond, &r->lock, &until) == 0)
    ;
}

static inline enum MHD_Result rx_access(void *cls, struct MHD_Connection *c,
                                        const char *url, const char *method,
                                        const char *version, const char *data,
                                        size_t *data_size, void **con_cls) {
  rx *r = cls;
  struct rx_upload *up = *con_cls;
  struct MHD_Response *resp;
  rx_req scratch;
  rx_req *q = &scratch;
  rx_step step;
  enum MHD_Result ret;

  (void)url;
  (void)version;
  if (up == NULL) {
    *con_cls = calloc(1, sizeof(struct rx_upload));
    return *con_cls ? MHD_YES : MHD_NO;
  }
  if (*data_size > 0) {
    char *p = realloc(up->body, up->len + *data_size + 1);
    if (p == NULL)
      return MHD_NO;
    memcpy(p + up->len, data, *data_size);
    up->body = p;
    up->len += *data_size;
    up->body[up->len] = '\0';
    *data_size = 0;
    return MHD_YES;
  }

  pthread_mutex_lock(&r->lock);
  int i = r->n_reqs;
  memset(&scratch, 0, sizeof(scratch));
  if (i < RX_MAX_REQS)
    q = &r->reqs[i];
  snprintf(q->method, sizeof(q->method), "%s", method);
  MHD_get_connection_values(c, MHD_HEADER_KIND, rx_collect, q);
  q->body = up->body;
  q->body_len = up->len;
  up->body = NULL;
  step = r->steps[i < r->n_steps ? i : r->n_steps - 1];
  if (r->answer != NULL)
    r->answer(r, i, q, &step);
  q->status = step.status;
  r->n_reqs++;
  pthread_cond_broadcast(&r->cond);
  if (step.delay_ms > 0)
    rx_hold(r, step.delay_ms);
  pthread_mutex_unlock(&r->lock);
  if (q == &scratch)
    rx_req_clear(&scratch);

  resp = MHD_create_response_from_buffer(step.body_len, (void *)step.body,
                                         MHD_RESPMEM_MUST_COPY);
  if (resp == NULL)
    return MHD_NO;
  if (step.retry_after != NULL)
    MHD_add_response_header(resp, "Retry-After", step.retry_after);
  ret = MHD_queue_response(c, (unsigned)step.status, resp);
  MHD_destroy_response(resp);
  return ret;
}

static inline void rx_completed(void *cls, struct MHD_Connection *c,
                                void **con_cls,
                                enum MHD_RequestTerminationCode toe) {
  struct rx_upload *up = *con_cls;

  (void)cls;
  (void)c;
  (void)toe;
  if (up != NULL) {
    free(up->body);
    free(up);
    *con_cls = NULL;
  }
}

/* Starts a receiver answering with `n` steps (the last one repeats), each
 * first passed to `answer` (unless NULL) with `ud` in r->ud. */
static inline rx *rx_start_fn(const rx_step *steps, int n, rx_answer_fn *answer,
                              void *ud) {
  rx *r = calloc(1, sizeof(*r));
  struct sockaddr_in sa;
  const union MHD_DaemonInfo *info;

  assert_non_null(r);
  assert_true(n >= 1 && n <= RX_MAX_STEPS);
  memcpy(r->steps, steps, (size_t)n * sizeof(*steps));
  r->n_steps = n;
  r->answer = answer;
  r->ud = ud;
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->cond, NULL);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  r->daemon = MHD_start_daemon(
      MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL,
      NULL, rx_access, r, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
      MHD_OPTION_NOTIFY_COMPLETED, rx_completed, r, MHD_OPTION_END);
  assert_non_null(r->daemon);
  info = MHD_get_daemon_info(r->daemon, MHD_DAEMON_INFO_BIND_PORT);
  assert_non_null(info);
  r->port = info->port;
  assert_true(r->port > 0);
  snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d/hook", r->port);
  return r;
}

/* Starts a receiver answering with `n` steps (the last one repeats). */
static inline rx *rx_start(const rx_step *steps, int n) {
  return rx_start_fn(steps, n, NULL, NULL);
}

/* Starts a receiver answering every request `status` with `body`. */
static inline rx *rx_start_status(int status, const char *body) {
  rx_step step = {.status = status, .body = body, .body_len = strlen(body)};

  return rx_start(&step, 1);
}

static inline void rx_stop(rx *r) {
  if (r == NULL)
    return;
  pthread_mutex_lock(&r->lock);
  r->quitting = 1;
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->lock);
  MHD_stop_daemon(r->daemon);
  for (int i = 0; i < r->n_reqs && i < RX_MAX_REQS; i++)
    rx_req_clear(&r->reqs[i]);
  pthread_cond_destroy(&r->cond);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

/* How many requests the receiver has seen. */
static inline int rx_count(rx *r) {
  int n;

  pthread_mutex_lock(&r->lock);
  n = r->n_reqs;
  pthread_mutex_unlock(&r->lock);
  return n;
}

/* Waits until the receiver has seen `n` requests; returns how many it saw. */
static inline int rx_wait(rx *r, int n, int timeout_ms) {
  int64_t end = mono_ms() + timeout_ms;
  int got;

  for (;;) {
    got = rx_count(r);
    if (got >= n || mono_ms() >= end)
      return got;
    usleep(5000);
  }
}

/* The value of header `name` in `q`, or NULL. */
static inline const char *req_header(const rx_req *q, const char *name) {
  for (int k = 0; k < q->n_headers; k++) {
    if (strcasecmp(q->names[k], name) == 0)
      return q->values[k];
  }
  return NULL;
}

/* The value of header `name` in request `i`, or NULL. */
static inline const char *rx_header(rx *r, int i, const char *name) {
  return req_header(&r->reqs[i], name);
}

/* Asserts that `q` has header `name` with value `want`. */
static inline void assert_header(const rx_req *q, const char *name,
                                 const char *want) {
  const char *v = req_header(q, name);

  if (v == NULL)
    fail_msg("no header %s", name);
  assert_string_equal(v, want);
}

/* ---- the webhook engine -------------------------------------------------- */

/* The engine the tests deliver through: one per group. */
static hd_webhook_engine *engine;

/* Starts `engine` (instance "test"); a backoff of 0 keeps the engine's
 * default. 0, or -1. */
static inline int engine_start(int64_t backoff_base_ms,
                               int64_t backoff_max_ms) {
  hd_webhook_engine_config cfg;

  hd_webhook_engine_config_init(&cfg);
  cfg.instance = "test";
  if (backoff_base_ms > 0)
    cfg.backoff_base_ms = backoff_base_ms;
  if (backoff_max_ms > 0)
    cfg.backoff_max_ms = backoff_max_ms;
  return hd_webhook_engine_start(&cfg, &engine) == HD_OK ? 0 : -1;
}

/* Group setup: `engine` with the engine's default backoff. */
static inline int engine_setup(void **state) {
  (void)state;
  return engine_start(0, 0);
}

/* Group teardown: stops `engine`. */
static inline int engine_teardown(void **state) {
  (void)state;
  hd_webhook_engine_stop(engine);
  engine = NULL;
  return 0;
}

#endif
