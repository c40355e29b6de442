"""Process harness for handlerd's Python integration tests.

Starts the real handlerd binary (HANDLERD_BIN) on a loopback port chosen by
the kernel, waits for its ready file, and stops it with SIGTERM, checking that
it exits with status 0. Also loads the protoc-generated modules from
HD_PY_GEN, and holds what the suites share: a handlerd with a gRPC channel
(Daemon), one per TestCase class (DaemonCase, ReceiverCase) or per test on
a state directory of its own (StateDirCase), a poller with a deadline
(eventually) and a handlerctl runner (run_handlerctl). Standard library
only; run with Debian's /usr/bin/python3.
"""

import contextlib
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

# HD_IT_WRAPPER (e.g. "valgrind --error-exitcode=99 ...") runs handlerd under
# a wrapper; a wrapper's non-zero exit then fails stop()'s exit-0 check.
WRAPPER = os.environ.get("HD_IT_WRAPPER", "").split()
# How much slower than a plain build handlerd runs here: valgrind 4x,
# sanitizer builds set HD_IT_SLOW (scripts/test). Timing bounds scale by it.
SLOW = 4.0 if WRAPPER else float(os.environ.get("HD_IT_SLOW", "1") or 1)
READY_TIMEOUT_S = 60.0 if WRAPPER else 10.0
STOP_TIMEOUT_S = 60.0 if WRAPPER else 10.0
POLL_S = 0.02
# The handlerctl binary (set by CMakeLists.txt when client/ is built) and
# how long one run of it may take.
HANDLERCTL = os.environ.get("HANDLERCTL_BIN")
CLI_TIMEOUT = 60.0


class HarnessError(RuntimeError):
    """The environment or the handlerd process is not usable."""


# CI sets CI=true: there a test that cannot run for want of a dependency or
# a capability fails, naming it, instead of skipping.
IN_CI = os.environ.get("CI") == "true"
# The exit status of a suite that passed but skipped something through
# require_or_skip() (hd_harness.main()); CMakeLists.txt makes it the tests'
# SKIP_RETURN_CODE, so ctest reports the suite as skipped, not passed.
SKIP_EXIT = 77
_skipped = []  # the reason of each require_or_skip() skip


def require_or_skip(reason, whole_suite=False):
    """Called where a test cannot run here; `reason` names the missing
    dependency or capability. With CI=true that is a failure: raises
    AssertionError (whole_suite: exits with status 1) saying so. Otherwise
    it is a skip that says so loudly on stderr: raises unittest.SkipTest
    (whole_suite: exits with SKIP_EXIT), and hd_harness.main() exits with
    SKIP_EXIT once the suite has run."""
    suite = os.path.basename(sys.argv[0])
    if IN_CI:
        msg = "%s: cannot run in CI (CI=true): %s" % (suite, reason)
        if whole_suite:
            sys.stderr.write("FAILED %s\n" % msg)
            sys.exit(1)
        raise AssertionError(msg)
    bar = "*" * 72
    sys.stderr.write("\n%s\n*** SKIPPED (%s): %s\n*** (with CI=true this is a "
                     "failure)\n%s\n" % (bar, suite, reason, bar))
    sys.stderr.flush()
    _skipped.append(reason)
    if whole_suite:
        sys.exit(SKIP_EXIT)
    raise unittest.SkipTest(reason)


def main():
    """unittest.main() for a suite that uses require_or_skip(): exits 1 when
    a test failed, SKIP_EXIT when all passed but something was skipped for
    want of a dependency or capability (repeated at the end, loudly), else
    0."""
    prog = unittest.main(verbosity=2, exit=False)
    if not prog.result.wasSuccessful():
        sys.exit(1)
    if _skipped:
        for reason in _skipped:
            sys.stderr.write("*** SKIPPED: %s\n" % reason)
        sys.exit(1 if IN_CI else SKIP_EXIT)
    sys.exit(0)


def eventually(cond, timeout, what, detail=None):
    """Calls cond() until it returns something truthy, which is returned;
    AssertionError naming `what` (and detail(), when given) once `timeout`
    seconds (times SLOW) have passed. A wait, never an assertion by sleep."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = ("\n" + str(detail())) if detail is not None else ""
            raise AssertionError("%s: not within %.1f s%s"
                                 % (what, timeout * SLOW, extra))
        time.sleep(POLL_S)


def clean_env(**extra):
    """The environment without HANDLERD_* settings (HANDLERD_BIN stays),
    plus `extra`: what handlerctl sees is only what a test gives it."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HANDLERD_") or k == "HANDLERD_BIN"}
    env.update(extra)
    return env


def run_handlerctl(args, addr=None, env=None, stdin_text=None, check=None):
    """Runs handlerctl (HANDLERCTL_BIN) with `args`, in clean_env() unless
    `env` is given, against `addr` (HANDLERD_ADDR) when given, with
    `stdin_text` (else nothing) on stdin; returns the CompletedProcess
    (text mode). With `check`, AssertionError unless it exits so."""
    argv = [HANDLERCTL] + list(args)
    e = env if env is not None else clean_env()
    if addr is not None:
        e = dict(e, HANDLERD_ADDR=addr)
    p = subprocess.run(argv, input="" if stdin_text is None else stdin_text,
                       capture_output=True, text=True, env=e,
                       timeout=CLI_TIMEOUT)
    if check is not None and p.returncode != check:
        raise AssertionError(
            "%s exited %d, expected %d\n--- stdout ---\n%s--- stderr ---\n%s"
            % (" ".join(argv), p.returncode, check, p.stdout, p.stderr))
    return p


def parse_table(text):
    """An aligned table (header row, columns separated by 2+ spaces), as
    handlerctl prints them, as a list of dicts."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    head = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        rows.append(dict(zip(head, cells + [""] * (len(head) - len(cells)))))
    return rows


def require_env(name):
    """The value of environment variable `name`; HarnessError when unset."""
    value = os.environ.get(name)
    if not value:
        raise HarnessError(
            "environment variable %s is not set: run this test through CTest "
            "(ctest -R integration.py) or set HANDLERD_BIN, HD_PY_GEN and "
            "HD_EXAMPLE_PLUGIN by hand" % name)
    return value


def load_generated():
    """Imports and returns (handlers_pb2, handlers_pb2_grpc) from HD_PY_GEN.

    The generated grpc module does `from handlers.v1 import handlers_pb2`, so
    HD_PY_GEN goes on sys.path; handlers/ and handlers/v1/ are namespace
    packages (no __init__.py)."""
    gen = require_env("HD_PY_GEN")
    pb2_path = os.path.join(gen, "handlers", "v1", "handlers_pb2.py")
    if not os.path.isfile(pb2_path):
        raise HarnessError("HD_PY_GEN=%s has no handlers/v1/handlers_pb2.py; "
                           "build the hd_python_gen target first" % gen)
    if gen not in sys.path:
        sys.path.insert(0, gen)
    from handlers.v1 import handlers_pb2, handlers_pb2_grpc  # noqa: E402
    return handlers_pb2, handlers_pb2_grpc


def update_request(pb, key, path="prices/eur", json_value=None,
                   int64_value=None, old_json=None):
    """A DispatchRequest (of generated module `pb`) for an `update` event."""
    args = pb.UpdateArgs(topic_path=path)
    if json_value is not None:
        args.topic_value.json_value = json_value
    if int64_value is not None:
        args.topic_value.int64_value = int64_value
    if old_json is not None:
        args.old_value.json_value = old_json
    return pb.DispatchRequest(key=key, event="update", update=args)


def add_request(pb, key, target=None, routes=None, events=()):
    """An AddHandlerRequest (of generated module `pb`) for `key`: one target,
    or event-stream `routes` ({event name: Target}), for `events`."""
    req = pb.AddHandlerRequest(key=key, events=list(events))
    if target is not None:
        req.target.CopyFrom(target)
    for name, t in (routes or {}).items():
        req.routes[name].CopyFrom(t)
    return req


def import_grpc(test_name, *modules):
    """Imports grpc, the generated handlers.v1 modules and `modules` (dotted
    names, imported after HD_PY_GEN is on sys.path); returns
    (grpc, handlers_pb2, handlers_pb2_grpc, *modules).

    A test that cannot import them cannot run: this says why on stderr and
    exits with status 2, which CTest reports as a failure (not a skip)."""
    try:
        import grpc  # noqa: E402
        pb, pb_grpc = load_generated()
        extra = [importlib.import_module(m) for m in modules]
    except (HarnessError, ImportError) as e:
        sys.stderr.write("%s: cannot run: %s\n" % (test_name, e))
        sys.exit(2)
    return (grpc, pb, pb_grpc, *extra)


@contextlib.contextmanager
def environ_set(env):
    """with environ_set({name: value}): those variables set in os.environ
    (and so inherited by a handlerd started in the block); each is given its
    old value back, or removed, when the block ends."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Handlerd:
    """One handlerd process.

    h = Handlerd(["--plugin", path]); h.start(); ... h.address ...; h.stop()
    """

    def __init__(self, extra_args=()):
        self.binary = require_env("HANDLERD_BIN")
        if not os.access(self.binary, os.X_OK):
            raise HarnessError("HANDLERD_BIN=%s is not an executable file"
                               % self.binary)
        self.extra_args = list(extra_args)
        # What a subclass may change before start(): the --listen address,
        # the child's environment (None: this process's) and a function run
        # in the child just before exec (None: none).
        self.listen = "127.0.0.1:0"
        self.env = None
        self.preexec_fn = None
        self.tmpdir = None
        self.proc = None
        self.address = None
        self._stderr = None

    # -- helpers ---------------------------------------------------------

    def stderr_text(self, limit=20000):
        """The process's stderr so far (the last `limit` characters)."""
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            with open(self._stderr.name, "r", errors="replace") as f:
                text = f.read()
        except OSError as e:
            return "<stderr unavailable: %s>" % e
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return text

    def _describe(self, what):
        return "%s\ncommand: %s\n--- handlerd stderr ---\n%s--- end ---" % (
            what, " ".join(self.argv), self.stderr_text())

    # -- lifecycle -------------------------------------------------------

    def start(self):
        self.tmpdir = tempfile.mkdtemp(prefix="hd-py-it-")
        ready = os.path.join(self.tmpdir, "ready")
        self._stderr = open(os.path.join(self.tmpdir, "stderr"), "w+b")
        self.argv = WRAPPER + [self.binary, "--listen", self.listen,
                     "--ready-file", ready] + self.extra_args
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr, stderr=self._stderr,
                                     cwd=self.tmpdir, env=self.env,
                                     preexec_fn=self.preexec_fn)
        try:
            self._wait_ready(ready)
        except BaseException:
            self._kill()
            self._cleanup()
            self.proc = None
            raise
        return self

    def _wait_ready(self, ready):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise HarnessError(self._describe(
                    "handlerd exited with status %d before it was ready" % rc))
            if os.path.exists(ready):
                with open(ready) as f:
                    text = f.read()
                if text.endswith("\n"):
                    self.address = self._parse_address(text)
                    return
            if time.monotonic() > deadline:
                self._kill()
                raise HarnessError(self._describe(
                    "handlerd wrote no ready file within %.0f s"
                    % READY_TIMEOUT_S))
            time.sleep(0.02)

    def _parse_address(self, text):
        line = text.strip()
        host, sep, port = line.rpartition(":")
        if not sep or host != "127.0.0.1" or not port.isdigit() \
                or not 0 < int(port) < 65536:
            self._kill()
            raise HarnessError(self._describe(
                "ready file holds %r, expected '127.0.0.1:PORT\\n'" % text))
        return line

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM; raises AssertionError unless handlerd exits with status 0
        within STOP_TIMEOUT_S (it is killed after that)."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is not None:
                raise AssertionError(self._describe(
                    "handlerd had already exited (status %d) before stop()"
                    % self.proc.returncode))
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill()
                raise AssertionError(self._describe(
                    "handlerd did not exit within %.0f s of SIGTERM (killed)"
                    % STOP_TIMEOUT_S))
            if rc != 0:
                raise AssertionError(self._describe(
                    "handlerd exited with status %d after SIGTERM, expected 0"
                    % rc))
        finally:
            self._kill()
            self.proc = None
            self._cleanup()

    def stop_unless_exited(self):
        """stop() (asserting exit status 0) unless the process has exited
        already, as when the test stopped it itself and checked its exit
        status: then only forgets it and cleans up."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.stop()
        else:
            self.proc = None
            self._cleanup()

    def _cleanup(self):
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.tmpdir is not None and not os.environ.get("HD_KEEP_TMP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None


class Daemon:
    """One handlerd (Handlerd(args), as .h) with a gRPC channel to it
    (.channel, waited ready for TIMEOUT seconds; `options` are the
    channel's) and a Handlers stub (.stub), once start() returned.

    d = Daemon(["--state-dir", path]).start(); d.stub...; d.stop()"""

    TIMEOUT = 10.0
    # How much of handlerd's stderr stderr() gives by default (None: all).
    STDERR_TAIL = None

    def __init__(self, args=(), options=None):
        self.h = Handlerd(list(args))
        self.options = options
        self.channel = None
        self.stub = None

    def start(self):
        grpc, _, pb_grpc = import_grpc(type(self).__name__)
        self.h.start()
        self.channel = grpc.insecure_channel(self.h.address,
                                             options=self.options)
        try:
            grpc.channel_ready_future(self.channel).result(
                timeout=self.TIMEOUT)
        except grpc.FutureTimeoutError:
            self.close()
            raise AssertionError("channel to %s not ready" % self.h.address)
        self.stub = pb_grpc.HandlersStub(self.channel)
        return self

    def stop(self):
        """Closes the channel; SIGTERM, asserting exit status 0."""
        self.channel.close()
        self.h.stop()

    def close(self):
        """stop() without the exit status check (for cleaning up)."""
        self.channel.close()
        try:
            self.h.stop()
        except AssertionError:
            pass

    def kill9(self):
        """SIGKILL, as a crash would (unless the process is gone already);
        returns its exit status once it is gone, and cleans up."""
        proc = self.h.proc
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rc = proc.wait(timeout=10)
        self.channel.close()
        self.h.stop_unless_exited()
        return rc

    def stderr(self, tail=None):
        """handlerd's stderr so far: its last `tail` characters
        (STDERR_TAIL unless given; None: all)."""
        text = self.h.stderr_text(10 ** 7)
        tail = self.STDERR_TAIL if tail is None else tail
        return text if tail is None else text[-tail:]


class Server(Daemon):
    """with Server(*args) as s: a Daemon(args) started, whose channel may
    send messages up to 64 MiB (s.h, s.channel, s.stub). Leaving the block
    closes the channel and stops handlerd (asserting exit status 0 after
    SIGTERM)."""

    def __init__(self, *args):
        super().__init__(args, options=[("grpc.max_send_message_length",
                                          64 << 20)])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def stop_all(daemons):
    """Stops each of `daemons` (Handlerd) still running; raises the first
    AssertionError of their stop() once all were stopped."""
    errors = []
    for d in daemons:
        if d.proc is not None:
            try:
                d.stop()  # asserts exit status 0 after SIGTERM
            except AssertionError as e:
                errors.append(e)
    if errors:
        raise errors[0]


def assert_rpc_status(test, code, fn, *args, **kwargs):
    """Calls fn(*args, **kwargs) (timeout 10 s unless given), which must
    fail with gRPC status `code`; returns the grpc.RpcError."""
    import grpc
    kwargs.setdefault("timeout", 10.0)
    with test.assertRaises(grpc.RpcError) as cm:
        fn(*args, **kwargs)
    err = cm.exception
    test.assertEqual(err.code(), code, "expected %s, got %s: %r"
                     % (code, err.code(), err.details()))
    return err


class DaemonCase(unittest.TestCase):
    """One handlerd per TestCase class, started with args(tmp) (tmp, also
    cls.tmp: a temporary directory of the class's, removed at its end;
    the default args are EXTRA_ARGS): cls.daemon (a Daemon), cls.server
    (its Handlerd), cls.channel, cls.stub. The class's end stops handlerd,
    asserting exit status 0 after SIGTERM."""

    EXTRA_ARGS = ()
    RPC_TIMEOUT = 10.0

    @classmethod
    def args(cls, tmp):
        return list(cls.EXTRA_ARGS)

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hd-py-case-")
        if not os.environ.get("HD_KEEP_TMP"):
            cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.daemon = Daemon(cls.args(cls.tmp))
        cls.daemon.TIMEOUT = cls.RPC_TIMEOUT
        cls.daemon.start()
        cls.server = cls.daemon.h
        cls.channel = cls.daemon.channel
        cls.stub = cls.daemon.stub

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()


class ReceiverCase(DaemonCase):
    """A DaemonCase with one webhook receiver (webhook_receiver.Receiver)
    per class too: cls.rx, stopped after handlerd."""

    @classmethod
    def setUpClass(cls):
        import webhook_receiver
        cls.rx = webhook_receiver.Receiver().start()
        cls.addClassCleanup(cls.rx.stop)
        super().setUpClass()


class StateDirCase(unittest.TestCase):
    """A state directory per test (self.state), and the daemons (DAEMON,
    a Daemon) and webhook receivers a test starts with start() and
    receiver(), stopped when it ends: daemons first (with STRICT_STOP each
    still running must exit 0 after SIGTERM), then receivers; then the
    directory is removed (unless HD_KEEP_TMP is set)."""

    DAEMON = Daemon
    STATE_PREFIX = "hd-py-state-"
    STRICT_STOP = True

    def setUp(self):
        self.state = tempfile.mkdtemp(prefix=self.STATE_PREFIX)
        self.daemons = []
        self.receivers = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        try:
            running = [d for d in self.daemons if d.h.proc is not None]
            for d in running:
                d.channel.close()
            if self.STRICT_STOP:
                stop_all([d.h for d in running])
            else:
                for d in running:
                    d.close()
        finally:
            for rx in self.receivers:
                rx.stop()
            if not os.environ.get("HD_KEEP_TMP"):
                shutil.rmtree(self.state, ignore_errors=True)

    def start(self, args=None):
        """A started DAEMON with `args`; by default --state-dir self.state
        alone."""
        d = self.DAEMON(["--state-dir", self.state] if args is None
                        else list(args))
        d.start()
        self.daemons.append(d)
        return d

    def receiver(self, port=0):
        """A started webhook_receiver.Receiver (on `port`; 0: the kernel
        chooses)."""
        import webhook_receiver
        rx = webhook_receiver.Receiver(port).start()
        self.receivers.append(rx)
        return rx
