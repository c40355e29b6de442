#!/usr/bin/python3
"""A PostgreSQL 15 for bench/pg_replicas.sh: tests/integration/pg_harness.py's
cluster (a fresh initdb in a temporary directory, the server on a free
loopback port, as `nobody` when root; fsync and synchronous_commit on) with
pg_stat_statements loaded, run from bash.

    bench/pg_server.py READY_FILE
    bench/pg_server.py --check     (exit 1, saying what is missing, unless
                                    the server, psql, pgbench and
                                    pg_stat_statements are installed)

Once the server is up (and `CREATE EXTENSION pg_stat_statements` done in
the database `handlerd`), writes READY_FILE, shell assignments:

    pg_port=PORT pg_bindir=DIR pg_psql=PATH pg_pid=POSTMASTER_PID pg_dir=DIR

Then it waits; SIGTERM or SIGINT, or its parent going away (the bench script
killed), stops the server and removes the directory (pg_harness's own
watchdog does that too if this process is killed with -9). Errors go to
stderr, exit status 1.

Settings on top of pg_harness's (later -c wins): shared_preload_libraries
pg_stat_statements (track = top, utility statements such as BEGIN and
COMMIT included, planning time tracked), shared_buffers 128MB (PostgreSQL's default; the harness
keeps 32MB for tests), track_io_timing on. PG_SETTINGS (environment,
"name=value name=value") adds more.
"""
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import pg_harness  # noqa: E402

EXTRA = [
    ("shared_preload_libraries", "pg_stat_statements"),
    ("pg_stat_statements.track", "top"),
    ("pg_stat_statements.track_utility", "on"),
    ("pg_stat_statements.max", "1000"),
    ("pg_stat_statements.track_planning", "on"),
    ("shared_buffers", "128MB"),
    ("track_io_timing", "on"),
]


class Stop(Exception):
    pass


def on_signal(signum, frame):
    raise Stop()


def check():
    """Exit status 0 when the server, psql, pgbench and pg_stat_statements
    are installed; otherwise says what is missing (stderr), status 1."""
    try:
        tools = pg_harness.find_binaries()
    except pg_harness.PgMissing as e:
        sys.stderr.write("%s\n" % e)
        return 1
    bindir = tools.get("bindir") or os.path.dirname(tools["postgres"])
    missing = [p for p in (os.path.join(bindir, "pgbench"),
                           os.path.join(bindir, "..", "lib",
                                        "pg_stat_statements.so"))
               if not os.path.exists(p)]
    if missing:
        sys.stderr.write("missing %s (Debian's postgresql-15 has them)\n"
                         % ", ".join(os.path.normpath(p) for p in missing))
        return 1
    return 0


def main():
    if sys.argv[1:] == ["--check"]:
        return check()
    if len(sys.argv) != 2:
        sys.stderr.write("usage: pg_server.py READY_FILE | --check\n")
        return 2
    ready = sys.argv[1]
    extra = list(EXTRA)
    for kv in os.environ.get("PG_SETTINGS", "").split():
        name, _, value = kv.partition("=")
        extra.append((name, value))
    pg_harness.SERVER_SETTINGS = tuple(pg_harness.SERVER_SETTINGS) + \
        tuple(extra)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    pg = pg_harness.Postgres()
    try:
        pg.start()
        pg.psql("CREATE EXTENSION pg_stat_statements")
        tmp = ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("pg_port=%d pg_bindir=%s pg_psql=%s pg_pid=%d pg_dir=%s\n"
                    % (pg.port, pg.tools["bindir"] or "", pg.tools["psql"],
                       pg.proc.pid, pg.base))
        os.rename(tmp, ready)
        while os.getppid() == parent and pg.running():
            time.sleep(0.5)
        if not pg.running():
            sys.stderr.write("pg_server: PostgreSQL exited\n%s\n"
                             % pg.log_tail())
            return 1
    except Stop:
        pass
    except (pg_harness.PgMissing, pg_harness.PgError) as e:
        sys.stderr.write("pg_server: %s\n" % e)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
