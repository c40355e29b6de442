/*
 * receiver.c - a fast HTTP/1.1 keep-alive receiver for the webhook fan-out
 * benchmark (bench/webhook_fanout.sh), on libmicrohttpd.
 *
 *   receiver [-t THREADS] [-p PORT] [-r READY_FILE]
 *
 * Listens on 127.0.0.1 (PORT, default 0: any free port) with an epoll
 * thread pool of THREADS threads (default 2). Every POST, whatever its
 * path, is answered 200 with the body `{}` and counted (requests and body
 * bytes), and so is every connection accepted. `GET /count` answers
 * {"requests":N,"bytes":B,"connections":C} without being counted, so a load
 * driver can read the counts before and after its run (C shows whether
 * connections are kept alive and reused).
 *
 * Once listening, prints "port N" to stdout (and writes N to READY_FILE when
 * given). SIGUSR1 prints "count N bytes B connections C" and goes on;
 * SIGTERM/SIGINT print the same line and exit 0.
 */
#include <microhttpd.h>

#include <pthread.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

static atomic_uint_fast64_t n_requests;
static atomic_uint_fast64_t n_bytes;
static atomic_uint_fast64_t n_conns; /* connections accepted */
static struct MHD_Response *ok_response;

/* Marks a connection's request as started (MHD's per-request pointer). */
static int request_marker;

static enum MHD_Result answer_count(struct MHD_Connection *conn) {
  char buf[128];
  int len = snprintf(buf, sizeof(buf),
                     "{\"requests\":%" PRIuFAST64 ",\"bytes\":%" PRIuFAST64
                     ",\"connections\":%" PRIuFAST64 "}",
                     atomic_load(&n_requests), atomic_load(&n_bytes),
                     atomic_load(&n_conns));
  struct MHD_Response *r =
      MHD_create_response_from_buffer((size_t)len, buf, MHD_RESPMEM_MUST_COPY);
  enum MHD_Result ret;

  if (r == NULL)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
  (void)cls;
  (void)version;
  (void)upload_data;

  if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
    if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 && strcmp(url, "/count") == 0)
      return answer_count(conn);
    return MHD_queue_response(conn, MHD_HTTP_OK, ok_response);
  }
  /* First call: headers only. Then the body in pieces, then a last call
   * with no data, where the answer goes out. */
  if (*req_cls == NULL) {
    *req_cls = &request_marker;
    return MHD_YES;
  }
  if (*upload_data_size != 0) {
    atomic_fetch_add_explicit(&n_bytes, *upload_data_size,
                              memory_order_relaxed);
    *upload_data_size = 0;
    return MHD_YES;
  }
  atomic_fetch_add_explicit(&n_requests, 1, memory_order_relaxed);
  return MHD_queue_response(conn, MHD_HTTP_OK, ok_response);
}

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  (void)cls;
  (void)conn;
  (void)socket_context;
  if (code == MHD_CONNECTION_NOTIFY_STARTED)
    atomic_fetch_add_explicit(&n_conns, 1, memory_order_relaxed);
}

static void print_count(void) {
  printf("count %" PRIuFAST64 " bytes %" PRIuFAST64 " connections %" PRIuFAST64
         "\n",
         atomic_load(&n_requests), atomic_load(&n_bytes),
         atomic_load(&n_conns));
  fflush(stdout);
}

static void usage(void) {
  fprintf(stderr, "usage: receiver [-t THREADS] [-p PORT] [-r READY_FILE]\n");
  exit(2);
}

int main(int argc, char **argv) {
  unsigned threads = 2, port = 0;
  const char *ready = NULL;
  struct sockaddr_in addr;
  struct MHD_Daemon *d;
  const union MHD_DaemonInfo *info;
  sigset_t set;
  int opt, sig;

  while ((opt = getopt(argc, argv, "t:p:r:")) != -1) {
    switch (opt) {
    case 't':
      threads = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'p':
      port = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'r':
      ready = optarg;
      break;
    default:
      usage();
    }
  }
  if (threads < 1 || port > 65535 || optind != argc)
    usage();

  /* Blocked here, so MHD's threads inherit the mask and sigwait gets them. */
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  ok_response =
      MHD_create_response_from_buffer(2, (void *)"{}", MHD_RESPMEM_PERSISTENT);
  if (ok_response == NULL)
    return 1;
  MHD_add_response_header(ok_response, MHD_HTTP_HEADER_CONTENT_TYPE,
                          "application/json");

  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  d = MHD_start_daemon(
      MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_USE_ERROR_LOG, 0,
      NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &addr,
      MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)4096, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
      MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_END);
  if (d == NULL) {
    fprintf(stderr, "receiver: cannot start libmicrohttpd on port %u\n", port);
    return 1;
  }
  info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
  if (info == NULL || info->port == 0) {
    fprintf(stderr, "receiver: no bound port\n");
    MHD_stop_daemon(d);
    return 1;
  }
  printf("port %u\n", (unsigned)info->port);
  fflush(stdout);
  if (ready != NULL) {
    char tmp[4096];
    FILE *f;

    /* Written whole under a temporary name, then renamed: a reader never
     * sees half a port. */
    snprintf(tmp, sizeof(tmp), "%s.tmp", ready);
    f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%u\n", (unsigned)info->port) < 0 ||
        fclose(f) != 0 || rename(tmp, ready) != 0) {
      fprintf(stderr, "receiver: cannot write %s: %s\n", ready,
              strerror(errno));
      MHD_stop_daemon(d);
      return 1;
    }
  }

  for (;;) {
    if (sigwait(&set, &sig) != 0)
      continue;
    print_count();
    if (sig != SIGUSR1)
      break;
  }
  MHD_stop_daemon(d);
  MHD_destroy_response(ok_response);
  return 0;
}
