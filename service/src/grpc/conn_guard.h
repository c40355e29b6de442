/*
 * conn_guard.h - keeps gRPC's listening sockets alive and bounds the
 * connections they accept.
 *
 * Debian's gRPC 1.51 stops accepting for good on a listener whose accept4()
 * fails with anything but EAGAIN or ECONNABORTED, EMFILE included: one burst
 * past the open-files limit leaves the process running with a dead
 * listener. gRPC's C API has no hook for accepting nor a connection limit,
 * so handlerd interposes accept4() and close() for the sockets it marks as
 * gRPC listeners (the executable's definitions take precedence over libc's
 * for libgrpc's calls):
 *   - a connection past the limit is closed at once (the client sees the
 *     connection end and retries, as for any UNAVAILABLE);
 *   - when the process is out of descriptors, the waiting connections are
 *     accepted on a spare descriptor and closed, instead of failing the
 *     listener, and accepting resumes as soon as descriptors are free;
 *   - any other failure (not during shutdown) calls the fatal callback:
 *     handlerd then exits non-zero so a supervisor restarts it, rather than
 *     staying up with a listener that no longer accepts.
 * Every other socket goes straight to libc.
 */
#ifndef HD_CONN_GUARD_H
#define HD_CONN_GUARD_H

/* Called once, from a gRPC thread, when a listener failed for good. */
typedef void hd_conn_guard_fatal_fn(const char *why);

/* Sets the connection limit (> 0) and the fatal callback (may be NULL),
 * and reserves the spare descriptor. Call once, before listening. Returns
 * 0, or -1 when the spare descriptor cannot be opened (errno set). */
int hd_conn_guard_init(int max_connections, hd_conn_guard_fatal_fn *fatal);

/* Marks this process's listening TCP sockets bound to `port` as guarded.
 * Returns how many were found (0: none, which leaves gRPC unguarded). */
int hd_conn_guard_watch_port(int port);

/* From now on a listener failure is expected (shutdown closes them). */
void hd_conn_guard_stop(void);

/* Connections accepted on guarded listeners and not yet closed. */
int hd_conn_guard_open_connections(void);

/* Connections closed on arrival (over the limit or out of descriptors)
 * since start. */
long hd_conn_guard_shed_connections(void);

#endif
