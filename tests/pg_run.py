#!/usr/bin/python3
"""Runs a command next to a PostgreSQL of its own.

    /usr/bin/python3 tests/pg_run.py -- CMD [ARGS...]

Starts a fresh PostgreSQL 15 (tests/integration/pg_harness.py: a temporary
cluster on a free loopback port, as `nobody` when run as root), runs CMD with
HANDLERD_TEST_PG_URL=postgres://handlerd@127.0.0.1:PORT/postgres in its
environment (an admin URL: the superuser `handlerd` on database `postgres`;
the command creates the databases it needs), stops PostgreSQL and removes
the cluster, and exits with CMD's exit status (128+N when a signal N ended
it). SIGINT, SIGTERM and SIGHUP are passed on to CMD.

Without PostgreSQL: with CI=true it fails (exit status 1), naming what is
missing; elsewhere it says so loudly and exits 77, which CTest reports as a
skip when the test's SKIP_RETURN_CODE is 77. PostgreSQL that does not start:
exit status 1 with its log.
"""

import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "integration"))
import pg_harness  # noqa: E402

SKIP_EXIT = 77
IN_CI = os.environ.get("CI") == "true"


def main(argv):
    args = argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        sys.stderr.write("usage: pg_run.py -- CMD [ARGS...]\n")
        return 2
    what = os.path.basename(args[0])
    try:
        tools = pg_harness.find_binaries()
    except pg_harness.PgMissing as e:
        if IN_CI:
            sys.stderr.write("FAILED pg_run.py %s: cannot run in CI (CI=true):"
                             " %s\n" % (what, e))
            return 1
        bar = "*" * 72
        sys.stderr.write("\n%s\n*** SKIPPED (pg_run.py %s): %s\n*** (with "
                         "CI=true this is a failure)\n%s\n" % (bar, what, e,
                                                                bar))
        return SKIP_EXIT
    pg = pg_harness.Postgres(tools)
    try:
        pg.start()
    except (pg_harness.PgError, OSError, subprocess.SubprocessError) as e:
        sys.stderr.write("pg_run.py: PostgreSQL did not start: %s\n" % e)
        pg.close()
        return 1
    env = dict(os.environ, HANDLERD_TEST_PG_URL=pg.url("postgres"))
    child = None

    def forward(signum, _frame):
        if child is not None and child.poll() is None:
            child.send_signal(signum)
    old = {s: signal.signal(s, forward)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            child = subprocess.Popen(args, env=env)
        except OSError as e:
            sys.stderr.write("pg_run.py: cannot run %s: %s\n" % (args[0], e))
            return 127
        rc = child.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        pg.close()
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
