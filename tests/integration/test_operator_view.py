"""What an operator sees (issue 11, section 5, and the "what it was waiting
for" of section 1), against the real handlerd with real HTTP receivers:

- with --log-format json every stderr line is a JSON object, gRPC core's own
  lines included (GRPC_VERBOSITY=debug and a connection that sends garbage
  instead of the HTTP/2 preface; a --listen port in use, at gRPC's default
  verbosity);
- a webhook delivery that fails for good is one warn line (key, handler id,
  the URL's host and port, attempts, last HTTP status, code, message; never
  the path, the query, a header value or the secret), at most one line per
  handler per 10 s, the rest counted in a summary line;
- result messages tell "connection refused" from "no such host", and a
  timeout says what it was waiting for (to connect, for the response) and,
  when the call's deadline ended it, says so with code DEADLINE_EXCEEDED;
- a busy --metrics-listen port: the error names the address and says the port
  is in use;
- calls refused for a bad token are counted in
  handlerd_calls_refused_total{reason="unauthenticated"}.

Run with /usr/bin/python3 and HANDLERD_BIN (ctest sets it).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
import webhook_receiver as wr  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_operator_view")

SLOW = hd_harness.SLOW
RPC_TIMEOUT = 10.0 * SLOW
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
# A sanitizer or valgrind report is the tool's, not handlerd's: it fails the
# run by its exit status; the JSON check leaves those lines alone.
TOOL_LINE = re.compile(r"^==\d+==")


class Daemon(hd_harness.Handlerd):
    """hd_harness.Handlerd, with extra environment for handlerd and a stop
    that keeps everything it wrote up to its exit."""

    def __init__(self, extra_args=(), env=None):
        super().__init__(extra_args)
        self.added_env = dict(env or {})

    def start(self):
        with hd_harness.environ_set(self.added_env):
            return super().start()

    def finish(self):
        """SIGTERM; returns (exit status, all of stderr)."""
        try:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=hd_harness.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                rc = None
            return rc, self.stderr_text(limit=1 << 30)
        finally:
            self._kill()
            self.proc = None
            self._cleanup()


def json_lines(test, text, what):
    """Every line of `text` parsed as one of handlerd's JSON log objects
    (fails the test, quoting the line, when one is not)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or TOOL_LINE.match(line):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            test.fail("%s: a stderr line is not JSON: %r\n--- stderr ---\n%s"
                      % (what, line, text[-20000:]))
        test.assertIsInstance(obj, dict, line)
        for field in ("ts", "level", "pid", "msg"):
            test.assertIn(field, obj, line)
        out.append(obj)
    test.assertTrue(out, "%s: nothing on stderr" % what)
    return out


def busy_port():
    """(socket, port): a loopback port something listens on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


def run_briefly(args, env=None, timeout=30.0):
    """Runs handlerd with `args` (it is expected to exit by itself);
    returns (exit status, stderr text)."""
    binary = hd_harness.require_env("HANDLERD_BIN")
    r = subprocess.run(hd_harness.WRAPPER + [binary] + args,
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout * SLOW,
                       env=env)
    return r.returncode, r.stdout.decode("utf-8", "replace")


class _WithDaemon(unittest.TestCase):
    """Starts a Daemon per test: self.start(args, env) -> stub."""

    def setUp(self):
        self.daemon = None
        self.channel = None
        self.pool = futures.ThreadPoolExecutor(max_workers=16)

    def tearDown(self):
        self.pool.shutdown(wait=True)
        if self.channel is not None:
            self.channel.close()
        if self.daemon is not None and self.daemon.proc is not None:
            self.daemon.stop()

    def start(self, args=(), env=None):
        self.daemon = Daemon(list(args), env).start()
        self.channel = grpc.insecure_channel(self.daemon.address)
        grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT)
        self.stub = pb_grpc.HandlersStub(self.channel)
        return self.stub

    def finish(self):
        """Stops handlerd: (exit status, stderr)."""
        self.channel.close()
        self.channel = None
        rc, text = self.daemon.finish()
        self.daemon = None
        return rc, text

    def add_webhook(self, key, url, **kw):
        reply = self.stub.AddHandler(pb.AddHandlerRequest(
            key=key, target=pb.Target(webhook=pb.Webhook(url=url, **kw))),
            timeout=RPC_TIMEOUT)
        self.assertTrue(reply.handler_id)
        return reply.handler_id

    def dispatch(self, key, timeout=None):
        reply = self.stub.Dispatch(
            hd_harness.update_request(pb, key, json_value='{"n":1}'),
            timeout=timeout or RPC_TIMEOUT)
        self.assertEqual(len(reply.results), 1, reply)
        return reply.results[0]

    def assert_failed(self, result, code, pattern, attempts=1):
        self.assertFalse(result.ok, result)
        self.assertEqual(result.error.code, code, result)
        self.assertEqual(result.error.attempts, attempts, result)
        self.assertRegex(result.error.message, pattern)


# ---- gRPC core's lines ------------------------------------------------------

class TestJsonLogsOnly(_WithDaemon):

    def test_grpc_core_lines_are_json_lines(self):
        # GRPC_VERBOSITY=debug: gRPC core logs as it starts, serves and stops
        # (its debug lines at handlerd's debug level).
        stub = self.start(["--log-format", "json", "--log-level", "debug"],
                          env={"GRPC_VERBOSITY": "debug"})
        host, port = self.daemon.address.rsplit(":", 1)
        # A connection that speaks HTTP/1.1 and then garbage instead of the
        # HTTP/2 preface.
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x1b[2J" * 64)
            s.settimeout(2.0 * SLOW)
            try:
                while s.recv(4096):
                    pass
            except (socket.timeout, ConnectionError):
                pass
        stub.ListHandlers(pb.ListHandlersRequest(), timeout=RPC_TIMEOUT)
        rc, text = self.finish()
        self.assertEqual(rc, 0, text[-5000:])
        lines = json_lines(self, text, "GRPC_VERBOSITY=debug")
        grpc_lines = [o for o in lines if o["msg"].startswith("grpc: ")]
        self.assertTrue(grpc_lines, "no gRPC core line came through the "
                        "logger:\n%s" % text[-5000:])
        self.assertIn("debug", {o["level"] for o in grpc_lines})

    def test_listen_port_in_use_gives_json_lines(self):
        # At gRPC's default verbosity (errors only): its error about the
        # port, and handlerd's, both as JSON lines.
        sock, port = busy_port()
        try:
            env = dict(os.environ)
            env.pop("GRPC_VERBOSITY", None)
            rc, text = run_briefly(["--listen", "127.0.0.1:%d" % port,
                                    "--log-format", "json"], env=env)
        finally:
            sock.close()
        self.assertNotEqual(rc, 0, text)
        lines = json_lines(self, text, "--listen on a busy port")
        self.assertTrue(any(o["msg"].startswith("grpc: ") and
                            o["level"] == "error" for o in lines),
                        "gRPC's error is not one of handlerd's lines:\n%s"
                        % text)


# ---- failed deliveries in the log -------------------------------------------

class TestFailureLog(_WithDaemon):

    def test_failed_delivery_is_logged_rate_limited_without_secrets(self):
        rx = wr.Receiver().start()
        self.addCleanup(rx.stop)
        private_path = "/hooks/private-path-7f3a"
        rx.script(private_path, [(500, {}, b"nope", 0)])
        rx.script("/other", [(404, {}, b"", 0)])
        secret = wr.new_secret()
        self.start(["--log-format", "json"])
        url = rx.url(private_path + "?token=QUERY-SECRET-5c1e")
        dead = self.add_webhook("ops-key", url, secret=secret,
                                headers={"x-api-key": "HEADER-SECRET-91b2"},
                                timeout_ms=int(5000 * SLOW), max_attempts=2)
        other = self.add_webhook("ops-other", rx.url("/other"), max_attempts=1)
        n_dead, n_other = 12, 3
        t0 = time.monotonic()
        calls = [self.pool.submit(self.dispatch, "ops-key")
                 for _ in range(n_dead)]
        calls += [self.pool.submit(self.dispatch, "ops-other")
                  for _ in range(n_other)]
        results = [c.result() for c in calls]
        elapsed = time.monotonic() - t0
        for r in results[:n_dead]:
            self.assert_failed(r, INTERNAL, r"^HTTP 500 after 2 attempts",
                               attempts=2)
        for r in results[n_dead:]:
            self.assert_failed(r, NOT_FOUND, r"^HTTP 404 after 1 attempt$")
        rc, text = self.finish()
        self.assertEqual(rc, 0, text[-5000:])
        lines = json_lines(self, text, "failed deliveries")

        # Never the path, the query, a header value or the secret.
        for leak in ("private-path", "QUERY-SECRET", "HEADER-SECRET",
                     secret, secret.split("_", 1)[-1]):
            self.assertNotIn(leak, text)

        host = "127.0.0.1:%d" % rx.port
        for handler, key, n, http_status, code, attempts in (
                (dead, "ops-key", n_dead, 500, "INTERNAL", 2),
                (other, "ops-other", n_other, 404, "NOT_FOUND", 1)):
            mine = [o for o in lines if "handler=%s " % handler in o["msg"]]
            self.assertTrue(mine, "no line about the failed deliveries of %s:"
                            "\n%s" % (handler, text[-5000:]))
            for o in mine:
                self.assertEqual(o["level"], "warn", o)
                self.assertIn('key="%s"' % key, o["msg"])
                self.assertIn("host=%s" % host, o["msg"])
                self.assertIn("attempts=%d http_status=%d code=%s"
                              % (attempts, http_status, code), o["msg"])
            first = mine[0]["msg"]
            self.assertRegex(first, r"^webhook delivery failed: ")
            self.assertIn('error="HTTP %d after %d attempt'
                          % (http_status, attempts), first)
            # Rate-limited per handler: one line, then the rest counted in a
            # summary (at the end of the 10 s window, or at the latest when
            # handlerd stops).
            counted = 1
            for o in mine[1:]:
                m = re.search(r": (\d+) more in the last", o["msg"])
                self.assertIsNotNone(m, o)
                counted += int(m.group(1))
            self.assertEqual(counted, n, mine)
            self.assertLessEqual(len(mine), 2 + int(elapsed // 10), mine)
            if elapsed < 9:
                self.assertEqual(len(mine), 2, mine)

    def test_window_end_writes_the_count(self):
        """At the end of a handler's 10 s window the failures counted in it
        are written in one line, which starts the next window."""
        rx = wr.Receiver().start()
        self.addCleanup(rx.stop)
        rx.script("/gone", [(410, {}, b"", 0)])
        self.start(["--log-format", "json"])
        hid = self.add_webhook("ops-window", rx.url("/gone"), max_attempts=1)
        t0 = time.monotonic()
        for _ in range(5):
            self.dispatch("ops-window")

        def mine():
            return [o["msg"] for o in json_lines(
                self, self.daemon.stderr_text(limit=1 << 30), "window")
                if "handler=%s " % hid in o["msg"]]

        deadline = t0 + 10 + 5 * SLOW
        while len(mine()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        got = mine()
        self.assertEqual(len(got), 2, got)
        self.assertRegex(got[0], r"^webhook delivery failed: ")
        self.assertRegex(got[1], r"^webhook deliveries failed: "
                         r'key="ops-window" handler=%s host=127\.0\.0\.1:%d: '
                         r"4 more in the last 10\.\d s \(not logged one by "
                         r"one\); the last: attempts=1 http_status=410 "
                         r'code=NOT_FOUND error="HTTP 410 after 1 attempt"$'
                         % (hid, rx.port))
        self.assertGreaterEqual(time.monotonic() - t0, 9.5)
        # That line started a new window: the next failure is counted, and
        # written when handlerd stops.
        self.dispatch("ops-window")
        time.sleep(0.2)
        self.assertEqual(len(mine()), 2)
        rc, text = self.finish()
        self.assertEqual(rc, 0, text[-5000:])
        last = [o["msg"] for o in json_lines(self, text, "window")
                if "handler=%s " % hid in o["msg"]]
        self.assertEqual(len(last), 3, last)
        self.assertIn(": 1 more in the last", last[2])


# ---- what a result says -----------------------------------------------------

class TestResultMessages(_WithDaemon):

    def test_connection_refused_and_no_such_host_differ(self):
        self.start()
        port = wr.closed_port()
        self.add_webhook("refused", "http://127.0.0.1:%d/hook" % port,
                         max_attempts=1)
        # RFC 6761: .invalid never resolves. A generous timeout: without a
        # DNS server the lookup itself takes seconds to fail.
        self.add_webhook("nohost", "http://no-such-host.invalid/hook",
                         max_attempts=1, timeout_ms=30000)
        refused = self.dispatch("refused")
        nohost = self.dispatch("nohost", timeout=60.0 * SLOW)
        self.assert_failed(refused, UNAVAILABLE,
                           r"^connection refused after 1 attempt$")
        self.assert_failed(nohost, UNAVAILABLE,
                           r"^no such host: no-such-host\.invalid could not "
                           r"be resolved after 1 attempt$")

    def test_timeouts_say_what_they_were_waiting_for(self):
        rx = wr.Receiver().start()
        self.addCleanup(rx.stop)
        rx.hang("/slow")
        # A listener whose accept queue is full: the kernel drops further
        # SYNs, so a connection attempt hangs.
        full = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(full.close)
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        full_port = full.getsockname()[1]
        fillers = []
        for _ in range(3):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", full_port))
            fillers.append(c)
            self.addCleanup(c.close)
        time.sleep(0.2)

        self.start()
        t_ms = int(300 * SLOW)
        self.add_webhook("slow", rx.url("/slow"), timeout_ms=t_ms,
                         max_attempts=1)
        self.add_webhook("noconn", "http://127.0.0.1:%d/hook" % full_port,
                         timeout_ms=t_ms, max_attempts=1)
        self.add_webhook("deadline", rx.url("/slow"), timeout_ms=30000,
                         max_attempts=1)
        self.assert_failed(
            self.dispatch("slow"), DEADLINE_EXCEEDED,
            r"^timeout \(%d ms\) after 1 attempt, waiting for the response "
            r"from 127\.0\.0\.1:%d$" % (t_ms, rx.port))
        self.assert_failed(
            self.dispatch("noconn"), DEADLINE_EXCEEDED,
            r"^timeout \(%d ms\) after 1 attempt, waiting to connect to "
            r"127\.0\.0\.1:%d$" % (t_ms, full_port))
        # The call's deadline ends the delivery: the reply comes in time and
        # its result says so. A first cut warms the path: under valgrind the
        # first reply can miss the margin (as in test_deadlines).
        try:
            self.dispatch("deadline", timeout=1.5 * SLOW)
        except grpc.RpcError:
            pass
        self.assert_failed(
            self.dispatch("deadline", timeout=1.5 * SLOW), DEADLINE_EXCEEDED,
            r"^deadline exceeded after 1 attempt, waiting for the response "
            r"from 127\.0\.0\.1:%d$" % rx.port)


# ---- metrics ----------------------------------------------------------------

class TestMetricsOperator(unittest.TestCase):

    def test_busy_metrics_port_is_named(self):
        sock, port = busy_port()
        try:
            rc, text = run_briefly(["--listen", "127.0.0.1:0",
                                    "--metrics-listen", "127.0.0.1:%d" % port,
                                    "--log-format", "json"])
        finally:
            sock.close()
        self.assertNotEqual(rc, 0, text)
        lines = json_lines(self, text, "a busy --metrics-listen port")
        errors = [o["msg"] for o in lines if o["level"] == "error"]
        self.assertTrue(any("127.0.0.1:%d" % port in m and
                            re.search(r"\bin use\b", m) for m in errors),
                        "no error naming 127.0.0.1:%d and saying it is in "
                        "use:\n%s" % (port, text))

    def test_unauthenticated_calls_are_counted(self):
        tmp = tempfile.mkdtemp(prefix="hd-opview-")
        token = os.path.join(tmp, "token")
        with open(token, "w") as f:
            f.write("opview-token-3d1\n")
        os.chmod(token, 0o600)
        sock, port = busy_port()
        sock.close()  # free again: the metrics port
        h = hd_harness.Handlerd(["--token-file", token, "--metrics-listen",
                                 "127.0.0.1:%d" % port])
        h.start()
        try:
            def refused():
                with urllib.request.urlopen(
                        "http://127.0.0.1:%d/metrics" % port,
                        timeout=RPC_TIMEOUT) as r:
                    text = r.read().decode()
                m = re.search(r'^handlerd_calls_refused_total'
                              r'\{reason="unauthenticated"\} (\d+)$', text,
                              re.M)
                self.assertIsNotNone(m, text)
                return int(m.group(1))

            before = refused()
            with grpc.insecure_channel(h.address) as ch:
                stub = pb_grpc.HandlersStub(ch)
                for _ in range(3):
                    hd_harness.assert_rpc_status(
                        self, grpc.StatusCode.UNAUTHENTICATED,
                        stub.ListHandlers, pb.ListHandlersRequest())
            self.assertEqual(refused() - before, 3)
        finally:
            h.stop()
            os.unlink(token)
            os.rmdir(tmp)


if __name__ == "__main__":
    hd_harness.main()
