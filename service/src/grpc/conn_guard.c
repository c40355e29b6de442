#include "conn_guard.h"

#include "handlerd/handlerd.h"
#include "metrics.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_LISTENERS 8
/* At most one "connection closed on arrival" warning per this many ns. */
#define SHED_LOG_INTERVAL_NS (10 * 1000000000LL)

typedef int accept4_fn(int, struct sockaddr *, socklen_t *, int);
typedef int close_fn(int);

static _Atomic(accept4_fn *) real_accept4_p;
static _Atomic(close_fn *) real_close_p;

/* Set once at init, read by gRPC's threads, which grpc_init() started. */
static atomic_int max_conns;
static _Atomic(hd_conn_guard_fatal_fn *) on_fatal;
static atomic_int listeners[MAX_LISTENERS];
static atomic_int n_listeners;
static atomic_int stopping;
static atomic_int fatal_called;
static atomic_int open_conns;
static atomic_long shed;
static atomic_llong last_shed_log_ns;

/* One flag per descriptor number: accepted on a guarded listener and not
 * closed yet. Sized to the open-files limit at init. */
static atomic_uchar *accepted;
static _Atomic size_t n_accepted;

static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static int spare_fd = -1;

static accept4_fn *real_accept4(void) {
  accept4_fn *f = atomic_load(&real_accept4_p);
  if (!f) {
    f = (accept4_fn *)dlsym(RTLD_NEXT, "accept4");
    atomic_store(&real_accept4_p, f);
  }
  return f;
}

static close_fn *real_close(void) {
  close_fn *f = atomic_load(&real_close_p);
  if (!f) {
    f = (close_fn *)dlsym(RTLD_NEXT, "close");
    atomic_store(&real_close_p, f);
  }
  return f;
}

int hd_conn_guard_init(int max_connections, hd_conn_guard_fatal_fn *fatal) {
  struct rlimit rl;
  atomic_store(&max_conns, max_connections > 0 ? max_connections : 1);
  atomic_store(&on_fatal, fatal);
  real_accept4();
  real_close();
  size_t n = 1u << 20;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < n)
    n = (size_t)rl.rlim_cur;
  accepted = calloc(n, sizeof(*accepted));
  if (!accepted) {
    errno = ENOMEM;
    return -1;
  }
  atomic_store(&n_accepted, n); /* close() looks at the array from now on */
  pthread_mutex_lock(&spare_lock);
  spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int ok = spare_fd >= 0;
  pthread_mutex_unlock(&spare_lock);
  return ok ? 0 : -1;
}

static int port_of(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -1;
}

int hd_conn_guard_watch_port(int port) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int found = 0;
  if (!d)
    return 0;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    int listening = 0;
    socklen_t len = sizeof(listening);
    if (*end || end == e->d_name || fd == dirfd(d))
      continue;
    if (getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 ||
        !listening || port_of((int)fd) != port)
      continue;
    int n = atomic_load(&n_listeners);
    if (n < MAX_LISTENERS) {
      atomic_store(&listeners[n], (int)fd);
      atomic_store(&n_listeners, n + 1);
      found++;
    }
  }
  closedir(d);
  return found;
}

void hd_conn_guard_stop(void) {
  atomic_store(&stopping, 1);
}

int hd_conn_guard_open_connections(void) {
  return atomic_load(&open_conns);
}

long hd_conn_guard_shed_connections(void) {
  return atomic_load(&shed);
}

static int is_guarded(int fd) {
  for (int i = 0, n = atomic_load(&n_listeners); i < n; i++)
    if (atomic_load(&listeners[i]) == fd)
      return 1;
  return 0;
}

static void note_shed(const char *reason, const char *why) {
  struct timespec ts;
  hd_metrics_call_refused(reason);
  long total = atomic_fetch_add(&shed, 1) + 1;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  long long now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  long long last = atomic_load(&last_shed_log_ns);
  if ((last == 0 || now - last >= SHED_LOG_INTERVAL_NS) &&
      atomic_compare_exchange_strong(&last_shed_log_ns, &last, now))
    hd_log(HD_LOG_WARN,
           "closing new connections: %s (%ld closed on arrival so far)", why,
           total);
}

/* Out of descriptors: takes the next waiting connection on the spare
 * descriptor and closes it. 1 when one was closed, 0 when none waits (or
 * there is no spare to use). */
static int shed_waiting(int listener) {
  int closed = 0;
  pthread_mutex_lock(&spare_lock);
  if (spare_fd >= 0) {
    real_close()(spare_fd);
    spare_fd = -1;
    int c = real_accept4()(listener, NULL, NULL, SOCK_CLOEXEC);
    if (c >= 0) {
      real_close()(c);
      closed = 1;
    }
  }
  if (spare_fd < 0)
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pthread_mutex_unlock(&spare_lock);
  return closed;
}

static void listener_failed(int err) {
  if (atomic_load(&stopping) || atomic_exchange(&fatal_called, 1))
    return;
  char why[128];
  snprintf(why, sizeof(why), "accepting connections failed: %s", strerror(err));
  hd_conn_guard_fatal_fn *fatal = atomic_load(&on_fatal);
  if (fatal)
    fatal(why);
}

/* The interposers are not instrumented by ThreadSanitizer: its own runtime
 * calls close() while it holds its report lock, and an instrumented close()
 * would re-enter it. Their shared state is atomics only. */
#define NOT_TSAN __attribute__((no_sanitize("thread")))

NOT_TSAN int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  if (!is_guarded(fd))
    return real_accept4()(fd, addr, len, flags);
  for (;;) {
    int c = real_accept4()(fd, addr, len, flags);
    if (c >= 0) {
      if (atomic_fetch_add(&open_conns, 1) >= atomic_load(&max_conns)) {
        atomic_fetch_sub(&open_conns, 1);
        real_close()(c);
        note_shed("max_connections", "--max-connections reached");
        continue;
      }
      if ((size_t)c < atomic_load(&n_accepted))
        atomic_store(&accepted[c], 1);
      else /* past the flags: close() could not uncount it */
        atomic_fetch_sub(&open_conns, 1);
      return c;
    }
    int err = errno;
    switch (err) {
    case EAGAIN:
    case EINTR:
    case ECONNABORTED:
      return -1;
    case EMFILE:
    case ENFILE:
      if (shed_waiting(fd)) {
        note_shed("out_of_descriptors",
                  "out of file descriptors (raise the open-files limit or "
                  "lower --max-connections)");
        continue;
      }
      errno = EAGAIN; /* nothing waits: gRPC waits for the next one */
      return -1;
    case ENOBUFS:
    case ENOMEM:
    case EPROTO:
    case EPERM:
      /* Passing: gRPC's listener lives through ECONNABORTED and retries
       * at the next connection. */
      errno = ECONNABORTED;
      return -1;
    default:
      listener_failed(err);
      errno = err;
      return -1;
    }
  }
}

NOT_TSAN int close(int fd) {
  if (fd >= 0 && (size_t)fd < atomic_load(&n_accepted) &&
      atomic_load_explicit(&accepted[fd], memory_order_relaxed) != 0 &&
      atomic_exchange(&accepted[fd], 0) != 0)
    atomic_fetch_sub(&open_conns, 1);
  return real_close()(fd);
}
