/*
 * Process harness for handlerd's C integration tests: see harness.h.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IT_READY_TIMEOUT_MS 10000
#define IT_READY_TIMEOUT_WRAPPED_MS 60000
#define IT_STOP_TIMEOUT_MS 10000
#define IT_MAX_ARGS 64

struct it_handlerd {
  pid_t pid;
  char dir[64];   /* the temporary directory */
  char ready[96]; /* <dir>/ready */
  char log[96];   /* <dir>/handlerd.log */
  char addr[128]; /* from the ready file */
  int wrapped;    /* started under HD_IT_WRAPPER */
};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

void it_handlerd_dump_log(const it_handlerd *h, const char *why) {
  fprintf(stderr, "---- handlerd log (%s): %s ----\n", why, h->log);
  FILE *f = fopen(h->log, "r");
  if (f != NULL) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
      fwrite(buf, 1, n, stderr);
    fclose(f);
  } else {
    fprintf(stderr, "(cannot open: %s)\n", strerror(errno));
  }
  fprintf(stderr, "---- end of handlerd log ----\n");
}

static void remove_dir(it_handlerd *h) {
  unlink(h->ready);
  unlink(h->log);
  char tmp[128];
  snprintf(tmp, sizeof tmp, "%s.tmp", h->ready); /* a leftover temp file */
  unlink(tmp);
  rmdir(h->dir);
}

/* Reads the ready file when complete ("host:port\n"); 1 when done. */
static int read_ready(it_handlerd *h) {
  FILE *f = fopen(h->ready, "r");
  if (f == NULL)
    return 0;
  char line[sizeof h->addr];
  int ok = fgets(line, sizeof line, f) != NULL;
  fclose(f);
  if (!ok)
    return 0;
  size_t n = strlen(line);
  if (n == 0 || line[n - 1] != '\n') /* not written completely */
    return 0;
  line[n - 1] = '\0';
  if (strchr(line, ':') == NULL)
    return 0;
  snprintf(h->addr, sizeof h->addr, "%s", line);
  return 1;
}

/* The environment without HANDLERD_* variables (handlerd reads its defaults
 * from them), so a developer's settings cannot leak into the tests. The
 * array is malloc'd, the strings are environ's. */
extern char **environ;
static char **clean_environment(void) {
  size_t n = 0;
  while (environ[n] != NULL)
    n++;
  char **env = calloc(n + 1, sizeof *env);
  if (env == NULL)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "HANDLERD_", 9) != 0)
      env[k++] = environ[i];
  env[k] = NULL;
  return env;
}

/* Child side of the fork: never returns. The test process has gRPC threads,
 * so this only makes async-signal-safe calls (no malloc) until exec. */
static void exec_handlerd(const char *bin, const it_handlerd *h,
                          const char *const *extra, char *wrapper, pid_t parent,
                          char **env) {
  /* A test that fails between start and stop must not leave handlerd
   * running: it dies with the test process. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(126);
  int fd = open(h->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0)
    dup2(devnull, STDIN_FILENO);

  const char *argv[IT_MAX_ARGS + 1];
  int argc = 0;
  if (wrapper != NULL) {
    char *save = NULL;
    for (char *w = strtok_r(wrapper, " ", &save); w != NULL && argc < 16;
         w = strtok_r(NULL, " ", &save))
      argv[argc++] = w;
  }
  argv[argc++] = bin;
  argv[argc++] = "--listen";
  argv[argc++] = "127.0.0.1:0";
  argv[argc++] = "--ready-file";
  argv[argc++] = h->ready;
  for (int i = 0; extra != NULL && extra[i] != NULL && argc < IT_MAX_ARGS; i++)
    argv[argc++] = extra[i];
  argv[argc] = NULL;
  execvpe(argv[0], (char *const *)argv, env);
  static const char msg[] = "harness: cannot execute handlerd\n";
  if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
    _exit(127);
  _exit(127);
}

int it_handlerd_start(const char *const *extra_args, it_handlerd **out) {
  *out = NULL;
  const char *bin = getenv("HANDLERD_BIN");
  if (bin == NULL || *bin == '\0') {
    fprintf(stderr, "harness: HANDLERD_BIN is not set; run through ctest\n");
    return -1;
  }
  if (access(bin, X_OK) != 0) {
    fprintf(stderr, "harness: HANDLERD_BIN=%s: %s\n", bin, strerror(errno));
    return -1;
  }
  it_handlerd *h = calloc(1, sizeof *h);
  if (h == NULL)
    return -1;
  const char *tmp = getenv("TMPDIR");
  snprintf(h->dir, sizeof h->dir, "%s/hd-it-XXXXXX",
           tmp != NULL && strlen(tmp) < 40 ? tmp : "/tmp");
  if (mkdtemp(h->dir) == NULL) {
    fprintf(stderr, "harness: mkdtemp %s: %s\n", h->dir, strerror(errno));
    free(h);
    return -1;
  }
  snprintf(h->ready, sizeof h->ready, "%s/ready", h->dir);
  snprintf(h->log, sizeof h->log, "%s/handlerd.log", h->dir);

  const char *wrapper_env = getenv("HD_IT_WRAPPER");
  char *wrapper = NULL;
  if (wrapper_env != NULL && *wrapper_env != '\0') {
    wrapper = strdup(wrapper_env);
    h->wrapped = 1;
  }

  char **env = clean_environment();
  if (env == NULL) {
    free(wrapper);
    remove_dir(h);
    free(h);
    return -1;
  }
  fflush(NULL);
  pid_t parent = getpid();
  h->pid = fork();
  if (h->pid < 0) {
    fprintf(stderr, "harness: fork: %s\n", strerror(errno));
    free(env);
    free(wrapper);
    remove_dir(h);
    free(h);
    return -1;
  }
  if (h->pid == 0)
    exec_handlerd(bin, h, extra_args, wrapper, parent, env);
  free(env);
  free(wrapper);

  long long deadline = now_ms() + (h->wrapped ? IT_READY_TIMEOUT_WRAPPED_MS
                                              : IT_READY_TIMEOUT_MS);
  for (;;) {
    if (read_ready(h)) {
      *out = h;
      return 0;
    }
    int status;
    pid_t r = waitpid(h->pid, &status, WNOHANG);
    if (r == h->pid) {
      fprintf(stderr, "harness: handlerd exited before it was ready (%s %d)\n",
              WIFEXITED(status) ? "status" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      it_handlerd_dump_log(h, "start failed");
      remove_dir(h);
      free(h);
      return -1;
    }
    if (now_ms() > deadline) {
      fprintf(stderr, "harness: handlerd not ready after %d ms\n",
              h->wrapped ? IT_READY_TIMEOUT_WRAPPED_MS : IT_READY_TIMEOUT_MS);
      kill(h->pid, SIGKILL);
      waitpid(h->pid, &status, 0);
      it_handlerd_dump_log(h, "start timed out");
      remove_dir(h);
      free(h);
      return -1;
    }
    sleep_ms(10);
  }
}

const char *it_handlerd_addr(const it_handlerd *h) {
  return h->addr;
}

pid_t it_handlerd_pid(const it_handlerd *h) {
  return h->pid;
}

int it_handlerd_stop(it_handlerd *h) {
  if (h == NULL)
    return -1;
  int result = -1, status = 0;
  if (kill(h->pid, SIGTERM) != 0)
    fprintf(stderr, "harness: kill(%d, SIGTERM): %s\n", (int)h->pid,
            strerror(errno));
  long long deadline = now_ms() + IT_STOP_TIMEOUT_MS * (h->wrapped ? 3 : 1);
  for (;;) {
    pid_t r = waitpid(h->pid, &status, WNOHANG);
    if (r == h->pid) {
      if (WIFEXITED(status))
        result = WEXITSTATUS(status);
      else if (WIFSIGNALED(status))
        result = 128 + WTERMSIG(status);
      break;
    }
    if (r < 0 && errno != EINTR) {
      fprintf(stderr, "harness: waitpid: %s\n", strerror(errno));
      break;
    }
    if (now_ms() > deadline) {
      fprintf(stderr,
              "harness: handlerd did not exit within %d ms of "
              "SIGTERM; killing it\n",
              IT_STOP_TIMEOUT_MS);
      kill(h->pid, SIGKILL);
      waitpid(h->pid, &status, 0);
      result = -1;
      break;
    }
    sleep_ms(10);
  }
  if (result != 0) {
    char why[64];
    snprintf(why, sizeof why, "stop: exit result %d", result);
    it_handlerd_dump_log(h, why);
  }
  remove_dir(h);
  free(h);
  return result;
}
