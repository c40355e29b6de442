"""The PostgreSQL harness itself (pg_harness.py, tests/pg_run.py): a real
PostgreSQL 15 started in a temporary directory, as an unprivileged user when
run as root; its data survives stop/start_again and a kill -9; pg_run.py
exports an admin URL to the command it runs and passes its exit status on.

Needs PostgreSQL's server binaries (Debian's postgresql-15): with CI=true a
missing PostgreSQL fails the suite, elsewhere it is a loud skip.

Run by CTest as `/usr/bin/python3 tests/integration/test_pg_harness.py`.
"""

import os
import subprocess
import sys
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hd_harness  # noqa: E402
from hd_harness import eventually  # noqa: E402
import pg_harness  # noqa: E402
from pg_harness import Postgres  # noqa: E402

TOOLS = pg_harness.require_postgres(whole_suite=True)
PG_RUN = os.path.join(os.path.dirname(HERE), "pg_run.py")
START_BOUND_S = 3.0 * hd_harness.SLOW


def uid_of(pid):
    """The real uid of `pid`; None when it has exited meanwhile."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    raise AssertionError("no Uid line for pid %d" % pid)


class TestPostgres(unittest.TestCase):

    def setUp(self):
        self.pg = Postgres(TOOLS)
        self.addCleanup(self.pg.close)
        self.pg.start()

    def test_start_version_settings_and_user(self):
        pg = self.pg
        sys.stderr.write("\n  initdb + start + CREATE DATABASE: %.2f s "
                         "(bindir %s)\n" % (pg.start_seconds, TOOLS["bindir"]))
        self.assertLess(pg.start_seconds, START_BOUND_S)
        self.assertRegex(pg.psql("select version()"), r"^PostgreSQL 15\.")
        self.assertTrue(pg.psql("show server_version_num").startswith("15"))
        self.assertEqual(pg_harness.server_version(TOOLS)[0], 15)
        self.assertEqual(pg.url(), "postgres://handlerd@127.0.0.1:%d/handlerd"
                         % pg.port)
        self.assertEqual(pg.url("x"), "postgres://handlerd@127.0.0.1:%d/x"
                         % pg.port)
        self.assertEqual(pg.psql("select current_user, current_database()"),
                         "handlerd|handlerd\n")
        for name, want in (("fsync", "on"), ("synchronous_commit", "on"),
                           ("listen_addresses", "127.0.0.1"),
                           ("max_connections", "100"),
                           ("shared_buffers", "32MB"),
                           ("server_encoding", "UTF8")):
            self.assertEqual(pg.psql("show %s" % name).strip(), want, name)
        # Every server process runs unprivileged when we are root.
        pids = pg.server_pids()
        self.assertGreater(len(pids), 1, pids)
        server_uid = uid_of(pids[0])  # the postmaster
        self.assertNotEqual(server_uid, None)
        if os.geteuid() == 0:
            self.assertNotEqual(server_uid, 0, "PostgreSQL runs as root")
        else:
            self.assertEqual(server_uid, os.geteuid())
        for pid in pids[1:]:
            self.assertIn(uid_of(pid), (server_uid, None), "pid %d" % pid)
        st = os.stat(pg.data)
        self.assertEqual(st.st_uid, server_uid)
        self.assertEqual(st.st_mode & 0o077, 0)

    def test_createdb_and_errors(self):
        pg = self.pg
        url = pg.createdb("other_db")
        self.assertTrue(url.endswith(":%d/other_db" % pg.port))
        pg.psql("create table t (a int); insert into t values (1), (2);",
                db="other_db")
        self.assertEqual(pg.psql("select sum(a) from t", db="other_db"),
                         "3\n")
        with self.assertRaises(pg_harness.PgError) as cm:
            pg.psql("select * from no_such_table", db="other_db")
        self.assertIn("no_such_table", str(cm.exception))
        with self.assertRaises(ValueError):
            pg.createdb("bad name; drop")

    def test_stop_then_start_again_keeps_data(self):
        pg = self.pg
        pg.psql("create table kept (v text); insert into kept values ('x');")
        port = pg.port
        pg.stop()
        self.assertFalse(pg.running())
        self.assertFalse(pg_harness.port_open(port))
        with self.assertRaises(pg_harness.PgError):
            pg.psql("select 1")
        took = pg.start_again()
        self.assertEqual(pg.port, port)
        self.assertLess(took, START_BOUND_S)
        self.assertEqual(pg.psql("select v from kept"), "x\n")

    def test_kill9_then_start_again_recovers(self):
        pg = self.pg
        pg.psql("create table crash (n int);"
                "insert into crash select generate_series(1, 1000);")
        pids = pg.server_pids()
        pg.kill9()
        for pid in pids:
            self.assertFalse(pg_harness._alive(pid), "pid %d alive" % pid)
        self.assertFalse(pg_harness.port_open(pg.port))
        took = pg.start_again()
        sys.stderr.write("\n  start after kill -9 (crash recovery): %.2f s\n"
                         % took)
        self.assertLess(took, START_BOUND_S)
        self.assertEqual(pg.psql("select count(*), sum(n) from crash"),
                         "1000|500500\n")
        with open(pg.log_path) as f:
            log = f.read()
        self.assertIn("not properly shut down", log)

    def test_close_removes_everything(self):
        pg = self.pg
        base, pids, port = pg.base, pg.server_pids(), pg.port
        pg.close()
        self.assertFalse(os.path.exists(base))
        self.assertFalse(any(pg_harness._alive(p) for p in pids))
        self.assertFalse(pg_harness.port_open(port))


class TestWatchdog(unittest.TestCase):

    def test_a_dead_test_process_leaves_no_postgres(self):
        """A process that starts a cluster and dies by SIGKILL (as at a
        CTest timeout): the watchdog stops the server and removes the
        directory."""
        code = textwrap.dedent("""
            import sys, time
            sys.path.insert(0, %r)
            import pg_harness
            pg = pg_harness.Postgres().start()
            print(pg.base, pg.port, " ".join(map(str, pg.server_pids())),
                  flush=True)
            time.sleep(60)
        """ % HERE)
        child = subprocess.Popen([sys.executable, "-c", code],
                                 stdout=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline().split()
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        self.assertGreaterEqual(len(line), 3, line)
        base, port, pids = line[0], int(line[1]), [int(p) for p in line[2:]]
        eventually(lambda: not any(pg_harness._alive(p) for p in pids)
                   and not os.path.exists(base), 15.0,
                   "the orphaned cluster stopped and removed",
                   lambda: "alive: %r, %s exists: %s" % (
                       [p for p in pids if pg_harness._alive(p)], base,
                       os.path.exists(base)))
        self.assertFalse(pg_harness.port_open(port))


class TestPgRun(unittest.TestCase):

    def run_wrapped(self, code, *extra):
        return subprocess.run(
            [sys.executable, PG_RUN] + list(extra) +
            ["--", sys.executable, "-c", code],
            capture_output=True, text=True, timeout=120)

    def test_exports_an_admin_url_and_passes_the_status_on(self):
        code = textwrap.dedent("""
            import os, subprocess, sys
            url = os.environ["HANDLERD_TEST_PG_URL"]
            print(url)
            out = subprocess.run([%r, "-X", "-A", "-t", "-q", "-d", url, "-c",
                                  "create database c_suite", "-c",
                                  "select 42"],
                                 capture_output=True, text=True)
            print(out.stdout.strip(), out.stderr.strip())
            sys.exit(3)
        """ % TOOLS["psql"])
        t0 = time.monotonic()
        p = self.run_wrapped(code)
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        lines = p.stdout.splitlines()
        self.assertRegex(lines[0],
                         r"^postgres://handlerd@127\.0\.0\.1:\d+/postgres$")
        self.assertEqual(lines[1].strip(), "42", p.stdout + p.stderr)
        port = int(lines[0].rsplit(":", 1)[1].split("/")[0])
        self.assertFalse(pg_harness.port_open(port),
                         "PostgreSQL still up after pg_run.py")
        sys.stderr.write("\n  pg_run.py around a command: %.2f s\n" % took)

    def test_success_and_usage(self):
        self.assertEqual(self.run_wrapped("pass").returncode, 0)
        p = subprocess.run([sys.executable, PG_RUN], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage", p.stderr)

    def test_a_command_killed_by_a_signal(self):
        p = self.run_wrapped("import os, signal; "
                             "os.kill(os.getpid(), signal.SIGKILL)")
        self.assertEqual(p.returncode, 128 + 9, p.stderr)


class TestMissingPostgres(unittest.TestCase):
    """Without PostgreSQL (HD_PG_BINDIR names a directory without it): with
    CI=true a failure naming it, elsewhere a loud skip (exit status 77)."""

    def run_without(self, argv, ci):
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env["HD_PG_BINDIR"] = os.path.join(HERE, "no-such-dir")
        if ci:
            env["CI"] = "true"
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=60, env=env)

    def test_pg_run(self):
        argv = [sys.executable, PG_RUN, "--", sys.executable, "-c", "pass"]
        p = self.run_without(argv, ci=True)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("PostgreSQL not found", p.stderr)
        self.assertIn("CI=true", p.stderr)
        p = self.run_without(argv, ci=False)
        self.assertEqual(p.returncode, hd_harness.SKIP_EXIT, p.stderr)
        self.assertIn("*** SKIPPED", p.stderr)

    def test_replica_suite(self):
        if not os.environ.get("HD_PY_GEN"):
            hd_harness.require_or_skip("HD_PY_GEN is not set: run through "
                                       "CTest")
        argv = [sys.executable, os.path.join(HERE, "test_replicas.py")]
        p = self.run_without(argv, ci=True)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("PostgreSQL not found", p.stderr)
        p = self.run_without(argv, ci=False)
        self.assertEqual(p.returncode, hd_harness.SKIP_EXIT, p.stderr)
        self.assertIn("*** SKIPPED", p.stderr)


if __name__ == "__main__":
    hd_harness.main()
