"""handlerd against webhook receivers that misbehave.

Each receiver is a real server on 127.0.0.1 started by the test
(faulty_servers.py: raw sockets and threads): one that accepts and never
answers, one that trickles its answer one byte a second, one that streams a
100 MiB body, one that redirects to itself, ones that close or reset in the
middle of an answer, and ones that break the TLS handshake of an https://
URL. For each, one key holds the bad webhook, a local `count` and a webhook
to a healthy receiver (webhook_receiver.py), and one Dispatch with a
deadline checks that

  * the call answers within its deadline, with a result for every handler;
  * the bad webhook's result is a failure (or, for the huge body, a
    truncated success) whose code and message say what happened;
  * the other handlers' results are ok, with their values, undelayed;
  * handlerd hangs up on the bad server, and still serves afterwards.

Run by CTest as `/usr/bin/python3 tests/integration/test_webhook_faults.py`
with HANDLERD_BIN and HD_PY_GEN set (see CMakeLists.txt).
"""

import json
import os
import re
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faulty_servers as fs  # noqa: E402
import hd_harness  # noqa: E402
import webhook_receiver as wr  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_webhook_faults")

RPC_TIMEOUT = 10.0
# Under HD_IT_WRAPPER (valgrind) handlerd is much slower: every time bound
# (and the per-attempt timeout, so that slowness is not taken for a fault)
# gets this factor.
SLOW = hd_harness.SLOW
DEADLINE_S = 3.0 * SLOW           # the Dispatch's gRPC deadline
BAD_TIMEOUT_MS = int(1000 * SLOW)  # the bad webhook's per-attempt timeout
MAX_ATTEMPTS = 2                   # the bad webhook's max_attempts
HEALTHY_MAX_S = 0.5 * SLOW        # a healthy webhook's duration bound
# A new TLS connection loads the CA bundle on the engine thread (OpenSSL,
# ~100 ms natively; once, if libcurl's CA cache is in use); valgrind slows
# that far more than SLOW (2.5 s, and over 4 s on a loaded machine, seen),
# so under a wrapper the TLS cases get this factor instead and bound the
# healthy webhook by the deadline only.
TLS_SLOW = 10.0 if hd_harness.WRAPPER else hd_harness.SLOW
TLS_DEADLINE_S = 3.0 * TLS_SLOW
TLS_TIMEOUT_MS = int(1000 * TLS_SLOW)
HEALTHY_MAX_TLS_S = TLS_DEADLINE_S / 2 if hd_harness.WRAPPER \
    else HEALTHY_MAX_S
RESPONSE_LIMIT = 64 * 1024        # documented default response size limit
# handlerd may grow by this much while it is sent 100 MiB: "far less".
RSS_GROWTH_MAX = 24 * 1024 * 1024

# gRPC status codes (webhook.h's table).
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


def update_req(key):
    return hd_harness.update_request(pb, key, json_value='{"n":1}')


def proc_status_kib(pid, field):
    """A "<field>: N kB" line of /proc/<pid>/status, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("/proc/%d/status has no %s" % (pid, field))


class RssWatch:
    """Samples a process's VmRSS every 10 ms on a thread; growth() is the
    highest RSS seen (or VmHWM, when that rose meanwhile) minus the RSS at
    the start."""

    def __init__(self, pid):
        self.pid = pid
        self.start_rss = proc_status_kib(pid, "VmRSS")
        self.start_hwm = proc_status_kib(pid, "VmHWM")
        self.max_rss = self.start_rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            try:
                self.max_rss = max(self.max_rss,
                                   proc_status_kib(self.pid, "VmRSS"))
            except (OSError, AssertionError):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def growth(self):
        peak = self.max_rss
        hwm = proc_status_kib(self.pid, "VmHWM")
        if hwm > self.start_hwm:
            peak = max(peak, hwm)
        return peak - self.start_rss


class _FaultCase(hd_harness.ReceiverCase):
    """One handlerd and one healthy receiver per class; every test starts
    its own faulty server(s)."""

    def tearDown(self):
        # Whatever the bad server did, handlerd is alive and serves a
        # normal dispatch (a local function and a webhook) afterwards.
        self.assertIsNone(self.server.proc.poll(), "handlerd exited:\n%s"
                          % self.server.stderr_text(4000))
        key = "after-" + self.id().rsplit(".", 1)[-1]
        count_id = self.add(key, pb.Target(local="count"))
        good_id, path = self.add_good(key)
        reply = self.dispatch_within(key)
        self.assertEqual([r.handler_id for r in reply.results],
                         [count_id, good_id])
        self.assert_ok(reply.results[0], count_id)
        self.assertEqual(reply.results[0].value.int64_value, 1)
        self.assert_ok(reply.results[1], good_id)
        self.assertEqual(json.loads(reply.results[1].value.json_value),
                         {"good": path})

    # -- helpers ---------------------------------------------------------

    def faulty(self, behaviour, scheme="http"):
        srv = fs.FaultyServer(behaviour, scheme=scheme).start()
        self.addCleanup(srv.stop)
        return srv

    def add(self, key, target):
        try:
            reply = self.stub.AddHandler(
                hd_harness.add_request(pb, key, target), timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            self.fail("AddHandler(%s) failed: %s %s\n%s"
                      % (key, e.code(), e.details(),
                         self.server.stderr_text(4000)))
        self.assertTrue(reply.handler_id)
        return reply.handler_id

    def add_good(self, key):
        """A webhook to the healthy receiver, which answers {"good": path}."""
        path = "/good/" + key
        self.rx.script(path, [(200, {}, json.dumps({"good": path}), 0)])
        return self.add(key, pb.Target(webhook=pb.Webhook(
            url=self.rx.url(path), timeout_ms=int(2000 * SLOW),
            max_attempts=1))), path

    def dispatch_within(self, key, deadline=DEADLINE_S):
        """Dispatch with a gRPC deadline; it must answer (not with
        DEADLINE_EXCEEDED) within it. Returns the reply; self.took is the
        call's wall time."""
        t0 = time.monotonic()
        try:
            reply = self.stub.Dispatch(update_req(key), timeout=deadline)
        except grpc.RpcError as e:
            self.fail("Dispatch(%s, deadline %.1f s) failed after %.2f s: "
                      "%s %s\n%s" % (key, deadline, time.monotonic() - t0,
                                     e.code(), e.details(),
                                     self.server.stderr_text(4000)))
        self.took = time.monotonic() - t0
        self.assertLess(self.took, deadline, "Dispatch took %.2f s"
                        % self.took)
        return reply

    def assert_ok(self, result, handler_id):
        self.assertEqual(result.handler_id, handler_id)
        self.assertTrue(result.ok, "handler failed: code=%d message=%r "
                        "http_status=%d attempts=%d"
                        % (result.error.code, result.error.message,
                           result.error.http_status, result.error.attempts))
        self.assertFalse(result.HasField("error"))

    def assert_failed(self, result, handler_id, code, pattern,
                      http_status=0, attempts=None):
        """A failed result with gRPC `code` whose message matches `pattern`
        (a regular expression, case-insensitive)."""
        self.assertEqual(result.handler_id, handler_id)
        self.assertFalse(result.ok, "expected a failed result: %s" % result)
        self.assertTrue(result.HasField("error"), result)
        err = result.error
        self.assertRegex(err.message, re.compile(pattern, re.I),
                         "the message does not say what happened: %r" % err)
        self.assertEqual(err.code, code, err)
        if http_status is not None:
            self.assertEqual(err.http_status, http_status, err)
        if attempts is not None:
            self.assertEqual(err.attempts, attempts, err)
        else:
            self.assertGreaterEqual(err.attempts, 1, err)
            self.assertLessEqual(err.attempts, MAX_ATTEMPTS, err)

    def run_set(self, key, bad_url, healthy_max=HEALTHY_MAX_S,
                deadline=DEADLINE_S, timeout_ms=BAD_TIMEOUT_MS):
        """Registers [bad webhook (timeout_ms, MAX_ATTEMPTS), count, healthy
        webhook] under `key`, dispatches once with `deadline` and checks the
        healthy handlers. Returns the bad webhook's result."""
        bad_id = self.add(key, pb.Target(webhook=pb.Webhook(
            url=bad_url, timeout_ms=timeout_ms, max_attempts=MAX_ATTEMPTS)))
        count_id = self.add(key, pb.Target(local="count"))
        good_id, good_path = self.add_good(key)
        reply = self.dispatch_within(key, deadline)
        self.assertEqual([r.handler_id for r in reply.results],
                         [bad_id, count_id, good_id], reply)
        bad, count, good = reply.results
        self.assert_ok(count, count_id)
        self.assertEqual(count.value.int64_value, 1)
        self.assert_ok(good, good_id)
        self.assertEqual(json.loads(good.value.json_value),
                         {"good": good_path})
        self.assertLess(good.duration_ns, healthy_max * 1e9,
                        "the healthy webhook was delayed: %.3f s"
                        % (good.duration_ns / 1e9))
        self.assertEqual(len(self.rx.requests(good_path)), 1)
        return bad

    def assert_hung_up(self, srv, n_conns):
        """`srv` saw `n_conns` connections, and handlerd closed each (no
        connection to a bad server is left open)."""
        conns = srv.wait_connections(n_conns, 1.0 * SLOW)
        self.assertEqual(len(conns), n_conns, conns)
        still_open = srv.wait_all_closed(1.0 * SLOW)
        self.assertEqual(still_open, [], "handlerd kept these connections "
                         "to the bad server open: %r" % still_open)

    def huge_body(self, behaviour, limit):
        """`behaviour` answers 200 with a 100 MiB body; handlerd's response
        limit is `limit` bytes."""
        srv = self.faulty(behaviour)
        pid = self.server.proc.pid
        with RssWatch(pid) as rss:
            bad = self.run_set("f-" + behaviour.__name__, srv.url())
        # A 2xx is a success (webhook.h, README): the body cut at the limit,
        # flagged truncated.
        self.assert_ok(bad, bad.handler_id)
        self.assertTrue(bad.truncated, "a 100 MiB body came back "
                        "without truncated=true: %s" % bad.value)
        # Exactly the first `limit` bytes, as a string: a cut body is never
        # JSON.
        self.assertEqual(bad.value.WhichOneof("value"), "string_value",
                         "a cut body cannot be JSON: %s" % bad.value)
        kept = bad.value.string_value
        self.assertEqual(len(kept), limit, "the limit was not what was kept")
        self.assertEqual(kept, ("[" + "1," * limit)[:limit])
        # Cut off, not retried: the answer would be as large next time.
        srv.wait_connections(1, 1.0 * SLOW)
        still_open = srv.wait_all_closed(2.0 * SLOW)
        time.sleep(0.1)
        conns = srv.connections()
        growth = rss.growth()
        facts = ("Dispatch %.2f s; RSS +%.1f MiB; connections: %r"
                 % (self.took, growth / 1048576.0, conns))
        self.assertEqual(len(conns), 1, "the huge answer was asked for "
                         "again: " + facts)
        # handlerd stopped reading once it had enough: the server saw the
        # connection go away long before it had sent 100 MiB.
        c = conns[0]
        self.assertFalse(c.finished, "handlerd read the whole 100 MiB body "
                         "to keep %d bytes: %s" % (limit, facts))
        self.assertEqual(still_open, [], "handlerd neither read on nor "
                         "closed the connection: " + facts)
        self.assertLess(c.bytes_sent, fs.HUGE_BYTES // 2, facts)
        self.assertLess(growth, RSS_GROWTH_MAX, "handlerd's RSS grew too "
                        "much while it was sent 100 MiB: " + facts)


class TestWebhookFaults(_FaultCase):
    """handlerd with default flags (loopback receivers allowed)."""

    def test_accepts_and_never_answers(self):
        srv = self.faulty(fs.hang)
        bad = self.run_set("f-hang", srv.url())
        self.assert_failed(bad, bad.handler_id, DEADLINE_EXCEEDED,
                           r"time(d)? ?out", attempts=MAX_ATTEMPTS)
        self.assertIn("%d ms" % BAD_TIMEOUT_MS, bad.error.message,
                      "the message does not give the timeout")
        self.assertGreaterEqual(self.took, MAX_ATTEMPTS * BAD_TIMEOUT_MS
                                / 1000.0 * 0.9, "timeout_ms not waited")
        self.assert_hung_up(srv, MAX_ATTEMPTS)
        for c in srv.connections():
            self.assertEqual(len(c.requests), 1, c)
            self.assertIn(b"POST /hook HTTP/1.1", c.requests[0])

    def test_trickles_one_byte_a_second(self):
        srv = self.faulty(fs.trickle)
        bad = self.run_set("f-trickle", srv.url())
        # Bytes keep coming, but timeout_ms bounds the whole attempt.
        self.assert_failed(bad, bad.handler_id, DEADLINE_EXCEEDED,
                           r"time(d)? ?out", attempts=MAX_ATTEMPTS)
        self.assert_hung_up(srv, MAX_ATTEMPTS)
        for c in srv.connections():
            self.assertFalse(c.finished, c)
            self.assertLess(c.bytes_sent, len(fs.TRICKLE_RESPONSE), c)

    def test_100mb_body_with_content_length(self):
        self.huge_body(fs.make_huge(chunked=False), RESPONSE_LIMIT)

    def test_100mb_body_chunked(self):
        self.huge_body(fs.make_huge(chunked=True), RESPONSE_LIMIT)

    def test_redirect_loop_not_followed(self):
        for status in (302, 307, 308):
            with self.subTest(status=status):
                srv = self.faulty(fs.make_redirect_loop(status))
                bad = self.run_set("f-redirect-%d" % status, srv.url())
                # Not followed, and final: a redirect is an answer.
                self.assert_failed(bad, bad.handler_id, FAILED_PRECONDITION,
                                   r"\b%d\b" % status, http_status=status,
                                   attempts=1)
                self.assertRegex(bad.error.message.lower(), r"redirect",
                                 "the message does not say the webhook "
                                 "redirected: %r" % bad.error.message)
                time.sleep(0.2)
                self.assertEqual(len(srv.requests()), 1, srv.connections())

    def test_close_mid_response(self):
        cases = [
            # (behaviour, message pattern, http_status). Where the status
            # line came through, http_status is the last status seen
            # (webhook.h): 200 here; 0 where no answer came.
            (fs.close_mid_body, r"closed|remaining|partial", 200),
            (fs.reset_mid_headers, r"reset", 200),
            (fs.close_without_answer, r"closed|empty reply", 0),
        ]
        for behaviour, pattern, status in cases:
            with self.subTest(behaviour.__name__):
                srv = self.faulty(behaviour)
                bad = self.run_set("f-" + behaviour.__name__, srv.url())
                # A broken connection is transient: retried, then
                # UNAVAILABLE, saying how it broke.
                self.assert_failed(bad, bad.handler_id, UNAVAILABLE, pattern,
                                   http_status=status, attempts=MAX_ATTEMPTS)
                conns = srv.wait_connections(MAX_ATTEMPTS, 1.0 * SLOW)
                self.assertEqual(len(conns), MAX_ATTEMPTS, conns)
                self.assertTrue(all(c.finished for c in conns), conns)

    def test_broken_tls_handshake(self):
        # handlerd's first TLS connection loads the CA bundle, once, on the
        # engine thread: keep that out of the healthy webhook's timing.
        warm = self.faulty(fs.tls_garbage, scheme="https")
        self.add("f-tls-warm-up", pb.Target(webhook=pb.Webhook(
            url=warm.url(), timeout_ms=TLS_TIMEOUT_MS, max_attempts=1)))
        self.dispatch_within("f-tls-warm-up", TLS_DEADLINE_S)
        for behaviour in (fs.tls_garbage, fs.tls_truncated_server_hello):
            with self.subTest(behaviour.__name__):
                srv = self.faulty(behaviour, scheme="https")
                bad = self.run_set("f-" + behaviour.__name__,
                                   srv.url("/hook"), HEALTHY_MAX_TLS_S,
                                   TLS_DEADLINE_S, TLS_TIMEOUT_MS)
                self.assert_failed(bad, bad.handler_id, UNAVAILABLE,
                                   r"\b(tls|ssl)", http_status=0)
                self.assertRegex(bad.error.message.lower(), r"handshake",
                                 "the message does not say the TLS "
                                 "handshake failed: %r" % bad.error.message)
                conns = srv.wait_connections(bad.error.attempts, 1.0 * SLOW)
                self.assertEqual(len(conns), bad.error.attempts, conns)
                for c in conns:  # handlerd started a TLS handshake
                    self.assertTrue(c.requests, c)
                    self.assertEqual(c.requests[0][:1], b"\x16", c)


class TestResponseLimitFlag(_FaultCase):
    """--max-webhook-response-bytes lowers the response limit: a 100 MiB
    body is cut at it."""

    LIMIT = 4096
    EXTRA_ARGS = ("--max-webhook-response-bytes", str(LIMIT))

    def test_100mb_body_cut_at_the_flag(self):
        self.huge_body(fs.make_huge(chunked=False), self.LIMIT)


class TestInflightLimitFlag(_FaultCase):
    """--max-webhook-inflight 2: with two deliveries stuck on a receiver that
    never answers, a third webhook result fails at once with
    RESOURCE_EXHAUSTED naming the flag, the local handler still answers, and
    once the stuck ones end, deliveries go out again."""

    EXTRA_ARGS = ("--max-webhook-inflight", "2")

    def test_third_delivery_refused_while_two_hang(self):
        srv = self.faulty(fs.hang)
        ids = [self.add("f-inflight", pb.Target(webhook=pb.Webhook(
            url=srv.url(), timeout_ms=BAD_TIMEOUT_MS, max_attempts=1)))
            for _ in range(3)]
        count_id = self.add("f-inflight", pb.Target(local="count"))
        reply = self.dispatch_within("f-inflight")
        self.assertEqual([r.handler_id for r in reply.results],
                         ids + [count_id])
        refused = [r for r in reply.results[:3]
                   if not r.ok and r.error.code == 8]
        timed_out = [r for r in reply.results[:3]
                     if not r.ok and r.error.code == DEADLINE_EXCEEDED]
        self.assertEqual(len(refused), 1, reply)
        self.assertEqual(len(timed_out), 2, reply)
        self.assertIn("--max-webhook-inflight", refused[0].error.message)
        self.assertEqual(refused[0].error.attempts, 0)
        self.assertLess(refused[0].duration_ns, 0.5e9 * SLOW,
                        "the refusal waited for the stuck deliveries")
        self.assert_ok(reply.results[3], count_id)
        # The two stuck ones ended (timeout): the limit frees up again.
        good_id, good_path = self.add_good("f-inflight-after")
        again = self.dispatch_within("f-inflight-after")
        self.assert_ok(again.results[0], good_id)
        self.assertEqual(len(self.rx.requests(good_path)), 1)


if __name__ == "__main__":
    hd_harness.main()
