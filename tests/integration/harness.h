/*
 * Process harness for handlerd's C integration tests.
 *
 * Starts the real handlerd (environment variable HANDLERD_BIN) as a child
 * process on a loopback port the kernel picks:
 *   $HANDLERD_BIN --listen 127.0.0.1:0 --ready-file <tmpdir>/ready [extra]
 * waits until handlerd writes "127.0.0.1:PORT\n" to the ready file, and stops
 * it with SIGTERM. handlerd's stdout and stderr go to <tmpdir>/handlerd.log,
 * which is printed whenever something goes wrong. handlerd gets SIGKILL if
 * the test process dies first (PR_SET_PDEATHSIG), so a failed test leaves no
 * process behind. HANDLERD_* variables are removed from handlerd's
 * environment, so only the arguments configure it.
 *
 * HD_IT_WRAPPER (optional, space-separated) is put in front of the command,
 * e.g. HD_IT_WRAPPER="valgrind --error-exitcode=99" (then allow for slower
 * start-up; the ready timeout grows to 60 s). The wrapper is the process
 * that gets SIGTERM and whose exit status it_handlerd_stop returns: it must
 * pass the signal on to handlerd and exit with a status that says how
 * handlerd did (valgrind does; scripts/check-suite-fails has a shell one).
 */
#ifndef HD_IT_HARNESS_H
#define HD_IT_HARNESS_H

#include <sys/types.h>

/* One running handlerd. */
typedef struct it_handlerd it_handlerd;

/*
 * Starts handlerd with `extra_args` (a NULL-terminated array, or NULL) after
 * the standard ones, and waits up to 10 s for its ready file. On success
 * returns 0 and *out owns the process: stop it with it_handlerd_stop. On
 * failure prints why (and handlerd's log) to stderr, cleans up and returns
 * -1; *out is NULL.
 */
int it_handlerd_start(const char *const *extra_args, it_handlerd **out);

/* The address handlerd serves on, "127.0.0.1:PORT". Owned by `h`; valid
 * until it_handlerd_stop. */
const char *it_handlerd_addr(const it_handlerd *h);

/* handlerd's pid. */
pid_t it_handlerd_pid(const it_handlerd *h);

/* Prints handlerd's log so far to stderr, framed with `why`. */
void it_handlerd_dump_log(const it_handlerd *h, const char *why);

/*
 * Sends SIGTERM and waits up to 10 s for handlerd to exit (then SIGKILL).
 * Returns the exit status (0..255), 128 + signal number when it died of a
 * signal, or -1 when it had to be killed. Prints the log unless the status
 * is 0. Frees `h` and removes its temporary directory. NULL returns -1.
 */
int it_handlerd_stop(it_handlerd *h);

#endif
