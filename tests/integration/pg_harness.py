"""A real PostgreSQL for handlerd's tests: a fresh cluster in a temporary
directory on a free loopback port, started and stopped by the test.

    with Postgres() as pg:               # initdb + start (well under 3 s)
        pg.createdb("t1")
        url = pg.url("t1")       # postgres://handlerd@127.0.0.1:PORT/t1
        pg.psql("select 1", db="t1")     # -> "1\\n"
        pg.stop(); pg.start_again()      # same data, same port
        pg.kill9(); pg.start_again()     # a crash, then crash recovery

The binaries: `pg_config --bindir`, else /usr/lib/postgresql/15/bin (where
Debian's postgresql-15 puts initdb, pg_ctl and postgres: not on PATH), else
PATH; HD_PG_BINDIR=DIR forces one directory (another version; a directory
without them is how the self-test checks the "missing" path). None found:
PgMissing; a suite calls require_postgres(), which follows
hd_harness.require_or_skip(): with CI=true that is a failure, elsewhere a
loud skip.

The cluster: initdb -A trust -U handlerd -E UTF8 --locale=C (--no-sync:
initdb's own files only), then the postmaster with listen_addresses
127.0.0.1, its socket in the temporary directory, fsync and
synchronous_commit on (durability is what the tests test),
max_connections 100, shared_buffers 32MB. As root (CI) everything of the
server runs as `nobody`:`nogroup` (PostgreSQL refuses root), in a
directory owned by that user, with that directory as cwd (nobody has no
home); the client (psql) runs as the caller.

The postmaster is this process's own child (not pg_ctl start's orphan), so
kill9() can reap it: a postmaster killed with -9 and never reaped stays a
zombie, and its pid in postmaster.pid then blocks the restart ("lock file
already exists") wherever no init reaps orphans. pg_ctl stops it (stop -m
fast). A watchdog process removes the cluster if the test process dies
without close() (a CTest timeout kills it with SIGKILL): no postmaster
outlives its test.

Standard library only; run with Debian's /usr/bin/python3.
"""

import atexit
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DEBIAN_BINDIR = "/usr/lib/postgresql/15/bin"
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "handlerd"
START_TIMEOUT_S = 60.0  # crash recovery included
STOP_TIMEOUT_S = 30.0
SERVER_SETTINGS = (
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("max_connections", "100"),
    ("shared_buffers", "32MB"),
    # Quiet and quick: no per-connection lines; a short checkpoint timeout
    # is not needed (crash recovery replays what is there).
    ("log_connections", "off"),
    ("log_disconnections", "off"),
    ("log_line_prefix", "%m [%p] "),
)
# The unprivileged user the server runs as when this process is root.
UNPRIVILEGED_USER = "nobody"
UNPRIVILEGED_GROUP = "nogroup"


class PgMissing(RuntimeError):
    """No PostgreSQL server binaries here."""


class PgError(RuntimeError):
    """PostgreSQL did not do what was asked (the message has its log)."""


# -- finding the binaries ----------------------------------------------------

def _server_dir(d):
    return d and all(os.access(os.path.join(d, t), os.X_OK)
                     for t in SERVER_TOOLS)


def find_binaries():
    """{"initdb", "pg_ctl", "postgres", "psql", "bindir": ...}: paths of the
    PostgreSQL binaries; PgMissing saying where it looked when there are
    none."""
    tried = []
    bindir = None
    forced = os.environ.get("HD_PG_BINDIR")
    pg_config = shutil.which("pg_config")
    if forced:
        tried.append("HD_PG_BINDIR=%s" % forced)
        if _server_dir(forced):
            bindir = forced
        else:
            raise PgMissing("PostgreSQL not found: HD_PG_BINDIR=%s has no "
                            "%s" % (forced, ", ".join(SERVER_TOOLS)))
    elif pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            out = "<%s>" % e
        tried.append("`%s --bindir` (%s)" % (pg_config, out or "nothing"))
        if _server_dir(out):
            bindir = out
    else:
        tried.append("pg_config (not on PATH)")
    if bindir is None:
        tried.append(DEBIAN_BINDIR)
        if _server_dir(DEBIAN_BINDIR):
            bindir = DEBIAN_BINDIR
    if bindir is not None:
        tools = {t: os.path.join(bindir, t) for t in SERVER_TOOLS}
        psql = os.path.join(bindir, "psql")
        tools["psql"] = psql if os.access(psql, os.X_OK) else \
            shutil.which("psql")
        tools["bindir"] = bindir
    else:
        tried.append("PATH")
        tools = {t: shutil.which(t) for t in SERVER_TOOLS + ("psql",)}
        tools["bindir"] = None
    missing = [t for t in SERVER_TOOLS + ("psql",) if not tools.get(t)]
    if missing:
        raise PgMissing(
            "PostgreSQL not found: no %s in %s; install Debian's "
            "postgresql-15 (apt-get install postgresql-15 "
            "postgresql-client-15)" % (", ".join(missing), ", ".join(tried)))
    return tools


def server_version(tools=None):
    """(major, "postgres (PostgreSQL) 15.x ...") of the server binary."""
    tools = tools or find_binaries()
    out = subprocess.run([tools["postgres"], "--version"],
                         capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return (int(m.group(1)) if m else 0), out.strip()


def require_postgres(whole_suite=False):
    """find_binaries(), or hd_harness.require_or_skip() naming what is
    missing: with CI=true a failure (whole_suite: exit status 1), elsewhere
    a loud skip (whole_suite: exit status hd_harness.SKIP_EXIT)."""
    try:
        return find_binaries()
    except PgMissing as e:
        import hd_harness
        hd_harness.require_or_skip(str(e), whole_suite=whole_suite)


# -- helpers ---------------------------------------------------------------

def free_port():
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False


def _traversable_by_others(path):
    """True when every directory from / down to `path` is o+x (so that the
    unprivileged server user can reach a directory made under it)."""
    path = os.path.abspath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _unprivileged_ids():
    """(uid, gid) to run the server as when this process is root; None when
    it is not root (the server then runs as this user)."""
    if os.geteuid() != 0:
        return None
    try:
        uid = pwd.getpwnam(UNPRIVILEGED_USER).pw_uid
    except KeyError:
        raise PgError("running as root and there is no user %r to run "
                      "PostgreSQL as" % UNPRIVILEGED_USER)
    try:
        gid = grp.getgrnam(UNPRIVILEGED_GROUP).gr_gid
    except KeyError:
        gid = pwd.getpwnam(UNPRIVILEGED_USER).pw_gid
    return uid, gid


def _children_of(pid):
    """The pids whose parent is `pid` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(name))
    return out


def _alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


# The watchdog: started per cluster in a session of its own, it waits for
# EOF on its stdin. "done" first: close() ran, nothing to do. Plain EOF: the
# test process died; it stops the postmaster whose pid postmaster.pid holds
# (SIGQUIT: immediate shutdown, then SIGKILL) and removes the directory.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
base, data = sys.argv[1], sys.argv[2]
if sys.stdin.buffer.read() == b"done":
    sys.exit(0)
try:
    with open(os.path.join(data, "postmaster.pid")) as f:
        pid = int(f.readline())
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        ok = b"postgres" in f.read()
except (OSError, ValueError):
    ok = False
if ok:
    for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except OSError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end and os.path.exists("/proc/%d" % pid):
            time.sleep(0.05)
shutil.rmtree(base, ignore_errors=True)
"""

_open_clusters = set()


@atexit.register
def _close_all():
    for pg in list(_open_clusters):
        try:
            pg.close()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            sys.stderr.write("pg_harness: close at exit: %s\n" % e)


# -- the cluster -----------------------------------------------------------

class Postgres:
    """One PostgreSQL cluster of this test's own (see the module's doc)."""

    def __init__(self, tools=None, port=None):
        self.tools = tools or find_binaries()
        self.port = port  # None: a free one at start()
        self.ids = _unprivileged_ids()
        self.base = None  # the temporary directory (socket, log, data/)
        self.data = None
        self.log_path = None
        self.proc = None  # the postmaster (our child)
        self._watchdog = None
        self.start_seconds = None  # how long the last start took

    # -- running the server's tools -------------------------------------

    def _as_server_user(self):
        """subprocess keyword arguments that run a server tool as the
        unprivileged user (when root), in the temporary directory, with a
        clean environment."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PG") and k not in ("LANG", "HOME")
               and not k.startswith("LC_")}
        env.update(LC_ALL="C", LANG="C", HOME=self.base, TZ="UTC")
        kw = {"cwd": self.base, "env": env, "stdin": subprocess.DEVNULL}
        if self.ids is not None:
            kw.update(user=self.ids[0], group=self.ids[1], extra_groups=[])
        return kw

    def _tool(self, name, *args, timeout=STOP_TIMEOUT_S):
        p = subprocess.run([self.tools[name]] + list(args),
                           capture_output=True, text=True, timeout=timeout,
                           **self._as_server_user())
        if p.returncode != 0:
            raise PgError("%s %s exited %d\n%s%s\n%s" % (
                name, " ".join(args), p.returncode, p.stdout, p.stderr,
                self.log_tail()))
        return p

    def log_tail(self, limit=6000):
        """The server log's last `limit` characters, framed."""
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, errors="replace") as f:
                text = f.read()
        except OSError as e:
            return "<no PostgreSQL log: %s>" % e
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return "--- PostgreSQL log (%s) ---\n%s--- end ---" % (
            self.log_path, text)

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        """initdb into a fresh temporary directory, start the server on a
        free loopback port (self.port unless None) and create the database
        `handlerd`. Returns self."""
        if self.base is not None:
            raise PgError("start() twice; start_again() restarts")
        t0 = time.monotonic()
        parent = tempfile.gettempdir()
        if self.ids is not None and not _traversable_by_others(parent):
            parent = "/tmp"
        self.base = tempfile.mkdtemp(prefix="hd-pg-", dir=parent)
        _open_clusters.add(self)
        try:
            if len(self.base) > 80:  # a unix socket path has 107 bytes
                raise PgError("temporary directory %s: too long a path for "
                              "PostgreSQL's socket" % self.base)
            self.data = os.path.join(self.base, "data")
            self.log_path = os.path.join(self.base, "postgres.log")
            open(self.log_path, "a").close()
            if self.ids is not None:
                for p in (self.base, self.log_path):
                    os.chown(p, *self.ids)
            os.chmod(self.base, 0o700)
            self._start_watchdog()
            self._tool("initdb", "-D", self.data, "-A", "trust", "-U",
                       SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync",
                       "--no-instructions", timeout=120)
            fixed = self.port is not None
            for attempt in range(5):
                if not fixed:
                    self.port = free_port()
                try:
                    self._start_server()
                    break
                except PgError as e:
                    # Someone took the port between free_port() and bind.
                    if fixed or attempt == 4 or "already in use" not in str(e):
                        raise
            self.psql("CREATE DATABASE %s" % SUPERUSER, db="postgres")
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _start_watchdog(self):
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, self.base,
             os.path.join(self.base, "data")],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)

    def server_argv(self):
        argv = [self.tools["postgres"], "-D", self.data, "-p", str(self.port),
                "-k", self.base]
        for name, value in SERVER_SETTINGS:
            argv += ["-c", "%s=%s" % (name, value)]
        return argv

    def pg_ctl_options(self):
        """The same settings as pg_ctl's -o string, for a person who wants
        to start this data directory by hand."""
        return " ".join(shlex.quote(a) for a in self.server_argv()[3:])

    def _start_server(self):
        """Starts the postmaster (our child, in a session of its own) and
        waits, as pg_ctl -w does, until postmaster.pid says "ready"."""
        if self.proc is not None and self.proc.poll() is None:
            raise PgError("PostgreSQL is running already (pid %d)"
                          % self.proc.pid)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.server_argv(), stdout=log, stderr=log,
                start_new_session=True, close_fds=True,
                **self._as_server_user())
        pidfile = os.path.join(self.data, "postmaster.pid")
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise PgError("postgres exited with status %d while starting "
                              "(port %d)\n%s" % (rc, self.port,
                                                 self.log_tail()))
            try:
                with open(pidfile) as f:
                    lines = f.read().split("\n")
            except OSError:
                lines = []
            # Line 1: the pid; line 8: the status (pidfile.h).
            if len(lines) > 7 and lines[0].strip() == str(self.proc.pid) \
                    and lines[7].strip() == "ready":
                return
            if time.monotonic() - t0 > START_TIMEOUT_S:
                self._kill_tree()
                raise PgError("PostgreSQL not ready within %.0f s (port %d)"
                              "\n%s" % (START_TIMEOUT_S, self.port,
                                        self.log_tail()))
            time.sleep(0.01)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """pg_ctl stop -m fast: sessions are ended, a shutdown checkpoint is
        written. Waits for the postmaster to exit."""
        if not self.running():
            raise PgError("stop(): PostgreSQL is not running")
        self._tool("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w",
                   "-t", str(int(STOP_TIMEOUT_S)))
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise PgError("postmaster %d still there after pg_ctl stop\n%s"
                          % (self.proc.pid, self.log_tail()))
        self.proc = None

    def start_again(self):
        """Starts the server on the same data directory and the same port
        (after stop() or kill9(); kill9() means crash recovery first).
        Returns the seconds it took."""
        if self.base is None:
            raise PgError("start_again() before start()")
        t0 = time.monotonic()
        self._start_server()
        self.start_seconds = time.monotonic() - t0
        return self.start_seconds

    def kill9(self):
        """A crash: SIGKILL to the postmaster and every process of it
        (stopped first so that it forks no more), reaped; nothing is
        written, shared memory is left to the next start."""
        if not self.running():
            raise PgError("kill9(): PostgreSQL is not running")
        self._kill_tree()

    def _kill_tree(self):
        pm = self.proc.pid
        try:
            os.kill(pm, signal.SIGSTOP)
        except ProcessLookupError:
            pass
        children = _children_of(pm)
        for pid in [pm] + children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.proc = None
        end = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(p) for p in children):
            if time.monotonic() > end:
                raise PgError("PostgreSQL processes %r survived SIGKILL"
                              % [p for p in children if _alive(p)])
            time.sleep(0.01)

    def close(self):
        """Stops the server (fast; a crash-style kill if that fails) and
        removes the temporary directory (unless HD_KEEP_TMP is set)."""
        try:
            if self.running():
                try:
                    self.stop()
                except (PgError, subprocess.SubprocessError, OSError):
                    self._kill_tree()
        finally:
            if self._watchdog is not None:
                try:
                    self._watchdog.communicate(b"done", timeout=10)
                except (subprocess.SubprocessError, OSError):
                    self._watchdog.kill()
                    self._watchdog.wait()
                self._watchdog = None
            if self.base is not None and not os.environ.get("HD_KEEP_TMP"):
                shutil.rmtree(self.base, ignore_errors=True)
            _open_clusters.discard(self)

    def __enter__(self):
        if self.base is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- clients -----------------------------------------------------------

    def url(self, dbname=SUPERUSER):
        """postgres://handlerd@127.0.0.1:PORT/DBNAME"""
        return "postgres://%s@127.0.0.1:%d/%s" % (SUPERUSER, self.port, dbname)

    def client_env(self):
        """The environment for a libpq client of this cluster: no PG*
        settings of the caller's, a connect timeout."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        return env

    def psql(self, sql, db=SUPERUSER, timeout=60):
        """Runs `sql` (one or more statements) with psql -X -A -t -v
        ON_ERROR_STOP=1 on database `db`; returns its stdout. PgError with
        psql's stderr when it fails."""
        argv = [self.tools["psql"], "-X", "-A", "-t", "-q", "-v",
                "ON_ERROR_STOP=1", "-d", self.url(db), "-f", "-"]
        p = subprocess.run(argv, input=sql, capture_output=True, text=True,
                           timeout=timeout, env=self.client_env())
        if p.returncode != 0:
            raise PgError("psql on %s exited %d: %s\nSQL: %s" % (
                db, p.returncode, p.stderr.strip(), sql))
        return p.stdout

    def createdb(self, name):
        """CREATE DATABASE name (letters, digits, _); returns url(name)."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError("database name %r: use [a-z_][a-z0-9_]*" % name)
        self.psql("CREATE DATABASE %s" % name, db="postgres")
        return self.url(name)

    def server_pids(self):
        """The postmaster and its processes (empty when it is down)."""
        if not self.running():
            return []
        return [self.proc.pid] + _children_of(self.proc.pid)
