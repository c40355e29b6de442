"""Graceful shutdown (drain) of handlerd under load, through a real client.

SIGTERM while 64 DispatchStream calls and 16 unary Dispatch calls are in
flight, their webhook deliveries held by a slow receiver: the health Watch
turns NOT_SERVING at once, new calls are refused with UNAVAILABLE, every call
accepted before the signal is answered in full (every event, status OK), the
receiver got every delivery reported ok, and handlerd exits 0 within the
drain timeout (`--drain-timeout DURATION`, default 10 s, env
HANDLERD_DRAIN_TIMEOUT; `10s`, `500ms` or a bare number of seconds).

With `--drain-timeout 1s` and a receiver that hangs for 30 s, handlerd exits
0 about 1 s after SIGTERM and every call in flight is answered (with a status
or with the webhook's failure reported), none is left hanging.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
import webhook_receiver as wr  # noqa: E402

(grpc, pb, pb_grpc, health_pb2, health_pb2_grpc) = hd_harness.import_grpc(
    "test_drain",
    "grpc_health_v1.health_pb2",
    "grpc_health_v1.health_pb2_grpc")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SLOW = hd_harness.SLOW  # valgrind, sanitizers: every bound stretches
RPC_TIMEOUT = 10.0 * SLOW
CALL_DEADLINE = 60.0 * SLOW  # client deadline of the calls kept in flight
DEFAULT_DRAIN_S = 10.0  # handlerd's documented default --drain-timeout
EXIT_MARGIN_S = 3.0 * SLOW  # after the drain: engine stop, frees, exit

N_STREAMS = 64
N_CHANNELS = 4
N_UNARY = 16  # the webhook engine's per-host connection cap: all in flight
# The unary calls' receiver answers after UNARY_DELAY_S: longer than 5 s
# (the old default drain) and well under the 10 s default, so a drain that
# gives up early shows; the streams' deliveries take STREAM_DELAY_S each.
UNARY_DELAY_S = 6.0
STREAM_DELAY_S = 0.3
OK_BODY = '{"ok":true}'


def update(key, path):
    return pb.DispatchRequest(key=key, event="update", update=pb.UpdateArgs(
        topic_path=path, topic_value=pb.TopicValue(json_value='{"v":1}')))


def webhook_target(url, timeout_ms=30000):
    return pb.Target(webhook=pb.Webhook(url=url, timeout_ms=timeout_ms,
                                        max_attempts=1))


def topic_of(req):
    """The topic path of a recorded CloudEvent (structured mode)."""
    try:
        return json.loads(req.body)["data"]["topicPath"]
    except (ValueError, KeyError, TypeError):
        return None


def setUpModule():
    # The tests state the drain timeout they want; an inherited setting
    # would change what the default-timeout test measures.
    for name in ("HANDLERD_DRAIN_TIMEOUT", "HANDLERD_DRAIN_TIMEOUT_MS"):
        os.environ.pop(name, None)


class _DrainCase(unittest.TestCase):

    def setUp(self):
        self.rx = wr.Receiver().start()
        self.addCleanup(self.rx.stop)
        self.channels = []
        self.addCleanup(self._close_channels)
        self.h = None
        self.addCleanup(self._stop_daemon)

    def _close_channels(self):
        for ch in self.channels:
            ch.close()

    def _stop_daemon(self):
        if self.h is not None:
            self.h.stop_unless_exited()

    def start(self, *args):
        self.h = hd_harness.Handlerd(list(args)).start()
        return self.h

    def channel(self):
        ch = grpc.insecure_channel(self.h.address)
        self.channels.append(ch)
        grpc.channel_ready_future(ch).result(timeout=RPC_TIMEOUT)
        return ch

    def add(self, stub, key, target):
        return stub.AddHandler(pb.AddHandlerRequest(key=key, target=target),
                               timeout=RPC_TIMEOUT).handler_id

    def warm_up(self, stub):
        """One quick delivery to the receiver first. The webhook engine
        (libcurl, CURLOPT_PIPEWAIT) holds every further transfer to a host
        until the first connection's answer shows whether it can multiplex:
        without this, a receiver that sleeps serialises the deliveries
        behind the first one and far fewer calls are in flight."""
        self.add(stub, "warm", webhook_target(self.rx.url("/warm")))
        r = stub.Dispatch(update("warm", "warm"), timeout=RPC_TIMEOUT)
        self.assertTrue(r.results[0].ok, r)

    def sigterm(self):
        t0 = time.monotonic()
        os.kill(self.h.proc.pid, signal.SIGTERM)
        return t0

    def wait_exit(self, t0, limit):
        """Waits for handlerd to exit; returns (status, seconds since t0)."""
        try:
            rc = self.h.proc.wait(timeout=limit + 30)
        except subprocess.TimeoutExpired:
            self.h._kill()
            self.fail("handlerd did not exit within %.0f s of SIGTERM "
                      "(killed)\n%s" % (limit + 30, self.h.stderr_text()))
        return rc, time.monotonic() - t0


class _Watch:
    """A health Watch read in a thread: [(seconds since start, status)]."""

    def __init__(self, channel):
        self.seen = []
        self.error = None
        self.t0 = time.monotonic()
        self.serving = threading.Event()
        self.not_serving = threading.Event()
        self.stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=CALL_DEADLINE)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for msg in self.stream:
                self.seen.append((time.monotonic(), msg.status))
                if msg.status == SERVING:
                    self.serving.set()
                elif msg.status == NOT_SERVING:
                    self.not_serving.set()
        except grpc.RpcError as e:
            self.error = e


class _Stream:
    """One DispatchStream: event "a" (local count) first; once its reply is
    in (the call was accepted), "b" (slow webhook) and "c" (count); after
    SIGTERM, "d" (count), then half-close."""

    def __init__(self, stub, i, after_sigterm):
        self.i = i
        self.accepted = threading.Event()
        self.after_sigterm = after_sigterm
        self.replies = []
        self.error = None
        self.done = threading.Event()
        self.call = stub.DispatchStream(self._requests(),
                                        timeout=CALL_DEADLINE)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def path(self, e):
        return "s/%d/%s" % (self.i, e)

    def _requests(self):
        yield update("fast", self.path("a"))
        if not self.accepted.wait(CALL_DEADLINE):
            return
        yield update("slow-s", self.path("b"))
        yield update("fast", self.path("c"))
        if not self.after_sigterm.wait(CALL_DEADLINE):
            return
        yield update("fast", self.path("d"))

    def _read(self):
        try:
            for r in self.call:
                self.replies.append(r)
                self.accepted.set()
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.accepted.set()
            self.done.set()


class TestDrainUnderLoad(_DrainCase):

    def test_sigterm_with_64_streams_and_unary_calls_in_flight(self):
        # No --drain-timeout: the default (10 s) applies; under valgrind,
        # which needs more for the same deliveries, a scaled one.
        drain_s = DEFAULT_DRAIN_S * (SLOW if hd_harness.WRAPPER else 1)
        self.start(*(["--drain-timeout", "%dms" % int(drain_s * 1000)]
                     if hd_harness.WRAPPER else []))
        control = self.channel()
        stub = pb_grpc.HandlersStub(control)
        self.add(stub, "fast", pb.Target(local="count"))
        self.rx.script("/s", [(200, {}, OK_BODY, STREAM_DELAY_S)])
        self.rx.script("/u", [(200, {}, OK_BODY, UNARY_DELAY_S)])
        self.add(stub, "slow-s", webhook_target(self.rx.url("/s")))
        self.add(stub, "slow-u", webhook_target(self.rx.url("/u")))
        self.warm_up(stub)

        watch = _Watch(self.channel())
        self.assertTrue(watch.serving.wait(RPC_TIMEOUT),
                        "health Watch sent no SERVING: %r %r"
                        % (watch.seen, watch.error))

        # Unary calls, each held by the receiver for UNARY_DELAY_S; all of
        # them reached the receiver, so handlerd accepted them.
        calls = [self.channel() for _ in range(N_CHANNELS)]
        stubs = [pb_grpc.HandlersStub(ch) for ch in calls]
        unary = [stubs[i % N_CHANNELS].Dispatch.future(
            update("slow-u", "u/%d" % i), timeout=CALL_DEADLINE)
            for i in range(N_UNARY)]
        got = self.rx.wait_for("/u", N_UNARY, timeout=RPC_TIMEOUT)
        self.assertEqual(len(got), N_UNARY, "unary deliveries not started")

        # 64 streams, each accepted (first reply in) before the signal.
        after_sigterm = threading.Event()
        streams = [_Stream(stubs[i % N_CHANNELS], i, after_sigterm)
                   for i in range(N_STREAMS)]
        try:
            for s in streams:
                self.assertTrue(s.accepted.wait(RPC_TIMEOUT),
                                "stream %d not accepted" % s.i)
                self.assertEqual((len(s.replies), s.error), (1, None),
                                 "stream %d before SIGTERM" % s.i)
            unary_done_early = sum(f.done() for f in unary)
            self.assertEqual(unary_done_early, 0,
                             "unary calls ended before SIGTERM: the receiver "
                             "did not hold them")

            t0 = self.sigterm()
            # Health turns NOT_SERVING at once, not at the end of the drain.
            self.assertTrue(watch.not_serving.wait(2.0 * SLOW),
                            "no NOT_SERVING within %.0f s of SIGTERM: %r %r"
                            % (2.0 * SLOW, watch.seen, watch.error))
            not_serving_after = watch.seen[-1][0] - t0
            after_sigterm.set()  # the streams send their last event now

            # New calls are refused with UNAVAILABLE, promptly: on a channel
            # that is already connected...
            refused = []
            for what, ch in (("connected channel", calls[0]),
                             ("new channel", None)):
                fresh = ch is None
                if fresh:
                    ch = grpc.insecure_channel(self.h.address)
                started = time.monotonic()
                try:
                    r = pb_grpc.HandlersStub(ch).Dispatch(
                        update("fast", "after/sigterm"), timeout=5.0 * SLOW)
                    refused.append((what, "OK", r))
                except grpc.RpcError as e:
                    refused.append((what, e.code(), e.details()))
                took = time.monotonic() - started
                if fresh:
                    ch.close()
                self.assertEqual(refused[-1][1], grpc.StatusCode.UNAVAILABLE,
                                 "new call on a %s after SIGTERM: %s %r"
                                 % refused[-1])
                self.assertLess(took, 4.0 * SLOW, "refusal took %.1f s" % took)

            rc, exited_after = self.wait_exit(t0, drain_s)
            for s in streams:
                s.done.wait(5.0 * SLOW)
                self.assertTrue(s.done.is_set(),
                                "stream %d still open after handlerd exited"
                                % s.i)
        finally:
            after_sigterm.set()
            for s in streams:
                s.accepted.set()
        stderr = self.h.stderr_text()
        print("\ndrain: NOT_SERVING %.2f s after SIGTERM, exit %d after "
              "%.2f s; refused calls: %r"
              % (not_serving_after, rc, exited_after,
                 [(w, str(c)) for w, c, _ in refused]), file=sys.stderr)
        self.assertEqual(rc, 0, "exit status after SIGTERM\n" + stderr)
        self.assertLess(exited_after, drain_s + EXIT_MARGIN_S,
                        "exit %.1f s after SIGTERM, the drain timeout is "
                        "%.0f s\n%s" % (exited_after, drain_s, stderr))

        # Every accepted call was answered in full.
        reported_ok = {}
        for s in streams:
            self.assertIsNone(s.error, "stream %d ended with %s: %s\n%s" % (
                s.i, s.error and s.error.code(),
                s.error and s.error.details(), stderr))
            self.assertEqual([r.sequence for r in s.replies], [0, 1, 2, 3],
                             "stream %d replies" % s.i)
            for r, e in zip(s.replies, "abcd"):
                self.assertEqual((r.code, r.message), (0, ""),
                                 "stream %d event %s" % (s.i, e))
                self.assertEqual(len(r.results), 1)
                res = r.results[0]
                self.assertTrue(res.ok, "stream %d event %s: %s"
                                % (s.i, e, res.error))
                if e == "b":
                    self.assertEqual(json.loads(res.value.json_value),
                                     {"ok": True})
                    reported_ok[s.path("b")] = res
        for i, f in enumerate(unary):
            try:
                r = f.result(timeout=0)
            except grpc.RpcError as e:
                self.fail("unary call %d accepted before SIGTERM ended with "
                          "%s: %s\n%s" % (i, e.code(), e.details(), stderr))
            self.assertEqual(len(r.results), 1)
            self.assertTrue(r.results[0].ok, "unary %d: %s"
                            % (i, r.results[0].error))
            self.assertEqual(json.loads(r.results[0].value.json_value),
                             {"ok": True})
            reported_ok["u/%d" % i] = r.results[0]

        # The receiver got every delivery reported ok, each exactly once.
        delivered = {}
        for req in self.rx.requests():
            if req.path == "/warm":
                continue
            delivered.setdefault(topic_of(req), []).append(req)
        for path in reported_ok:
            self.assertEqual(len(delivered.get(path, [])), 1,
                             "delivery %s reported ok, receiver got %d"
                             % (path, len(delivered.get(path, []))))
        self.assertEqual(len(reported_ok), N_STREAMS + N_UNARY)


class TestDrainTimeout(_DrainCase):

    def test_drain_timeout_1s_with_hanging_receiver(self):
        """The drain gives up after 1 s: handlerd exits 0 promptly and every
        call in flight gets an answer (none hangs)."""
        self.start("--drain-timeout", "1s")
        stub = pb_grpc.HandlersStub(self.channel())
        self.rx.hang("/hang", 30.0)
        self.add(stub, "hang", webhook_target(self.rx.url("/hang"), 30000))
        self.add(stub, "fast", pb.Target(local="count"))
        self.warm_up(stub)

        n_streams, n_unary = 8, 8  # 16: all in flight at the receiver
        after_sigterm = threading.Event()
        outcomes = {}
        lock = threading.Lock()

        def run_stream(i, st):
            def requests():
                yield update("fast", "s/%d/a" % i)
                yield update("hang", "s/%d/b" % i)
                after_sigterm.wait(CALL_DEADLINE)
            replies = []
            try:
                for r in st.DispatchStream(requests(), timeout=CALL_DEADLINE):
                    replies.append(r)
                out = ("OK", replies)
            except grpc.RpcError as e:
                out = (e.code(), e.details(), replies)
            with lock:
                outcomes["s%d" % i] = (time.monotonic(), out)

        def run_unary(i, st):
            try:
                out = ("OK", st.Dispatch(update("hang", "u/%d" % i),
                                         timeout=CALL_DEADLINE))
            except grpc.RpcError as e:
                out = (e.code(), e.details())
            with lock:
                outcomes["u%d" % i] = (time.monotonic(), out)

        stubs = [pb_grpc.HandlersStub(self.channel())
                 for _ in range(N_CHANNELS)]
        threads = [threading.Thread(target=run_stream, name="s%d" % i,
                                    args=(i, stubs[i % N_CHANNELS]),
                                    daemon=True) for i in range(n_streams)]
        threads += [threading.Thread(target=run_unary, name="u%d" % i,
                                     args=(i, stubs[i % N_CHANNELS]),
                                     daemon=True) for i in range(n_unary)]
        for t in threads:
            t.start()
        got = self.rx.wait_for("/hang", n_streams + n_unary,
                               timeout=RPC_TIMEOUT)
        self.assertEqual(len(got), n_streams + n_unary,
                         "webhook deliveries not all in flight")
        self.assertEqual(outcomes, {}, "calls ended before SIGTERM")

        t0 = self.sigterm()
        after_sigterm.set()
        rc, exited_after = self.wait_exit(t0, 1.0)
        for t in threads:
            t.join(5.0 * SLOW)
        hung = [t.name for t in threads if t.is_alive()]
        stderr = self.h.stderr_text()
        summary = {}
        for name, (when, out) in sorted(outcomes.items()):
            what = "%s %r" % (out[0], out[1] if out[0] != "OK" else "")
            summary.setdefault(what, []).append(name)
        print("\ndrain-timeout 1s: exit %d after %.2f s; outcomes %r"
              % (rc, exited_after, summary), file=sys.stderr)
        self.assertEqual(rc, 0, "exit status after SIGTERM\n" + stderr)
        self.assertGreaterEqual(exited_after, 0.8,
                                "exited %.2f s after SIGTERM: did not wait "
                                "for the calls in flight" % exited_after)
        self.assertLess(exited_after, 1.0 + EXIT_MARGIN_S,
                        "--drain-timeout 1s, but exit %.1f s after SIGTERM\n%s"
                        % (exited_after, stderr))
        self.assertEqual(hung, [], "calls still unanswered 5 s after "
                         "handlerd exited")
        self.assertEqual(len(outcomes), n_streams + n_unary)
        allowed = (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE,
                   grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)
        for name, (when, out) in outcomes.items():
            # Answered no later than shortly after the exit.
            self.assertLess(when - t0, exited_after + 2.0 * SLOW, name)
            if out[0] == "OK":
                # Answered with OK: then every event got its reply and the
                # webhook's failure is reported in it, never passed off as a
                # success (the receiver never answered).
                if name.startswith("s"):
                    replies = out[1]
                    self.assertEqual([r.sequence for r in replies], [0, 1],
                                     "%s ended OK without every reply" % name)
                    hook = replies[1]
                    failed = hook.code != 0 or not hook.results[0].ok
                else:
                    failed = not out[1].results[0].ok
                self.assertTrue(failed, "%s: webhook reported ok: %r"
                                % (name, out[1]))
                result = (out[1][1].results[0] if name.startswith("s")
                          else out[1].results[0])
                self.assertIn("shutting down", result.error.message, name)
            else:
                self.assertIn(out[0], allowed, "%s: %r" % (name, out))
        # At the drain timeout handlerd ends the webhook deliveries first, so
        # the calls answer with what their handlers report instead of being
        # cancelled blind.
        self.assertEqual(
            [n for n, (_, out) in outcomes.items() if out[0] != "OK"], [],
            "calls cancelled instead of answered: %r" % summary)


class TestDrainTimeoutFlag(_DrainCase):
    """--drain-timeout accepts `500ms`, a bare number of seconds and
    HANDLERD_DRAIN_TIMEOUT; a bad value is a usage error."""

    def held_stream_drain(self, args, env=None):
        """Starts handlerd with `args` (and `env` added), holds one stream
        open, sends SIGTERM; returns seconds until the exit (status 0)."""
        with hd_harness.environ_set(env or {}):
            self.start(*args)
        stub = pb_grpc.HandlersStub(self.channel())
        self.add(stub, "k", pb.Target(local="count"))
        gate = threading.Event()

        def requests():
            yield update("k", "held")
            gate.wait(CALL_DEADLINE)

        stream = stub.DispatchStream(requests(), timeout=CALL_DEADLINE)
        try:
            self.assertEqual(next(stream).code, 0)
            t0 = self.sigterm()
            rc, took = self.wait_exit(t0, 10.0)
        finally:
            gate.set()
        self.assertEqual(rc, 0, self.h.stderr_text())
        self._stop_daemon()
        return took

    def test_values(self):
        cases = [(["--drain-timeout", "500ms"], None, 0.5),
                 (["--drain-timeout", "2"], None, 2.0),
                 ([], {"HANDLERD_DRAIN_TIMEOUT": "1s"}, 1.0),
                 (["--drain-timeout", "500ms"],
                  {"HANDLERD_DRAIN_TIMEOUT": "30s"}, 0.5)]  # the flag wins
        for args, env, want in cases:
            with self.subTest(args=args, env=env):
                took = self.held_stream_drain(args, env)
                self.assertGreaterEqual(took, want * 0.8,
                                        "exit %.2f s after SIGTERM" % took)
                self.assertLess(took, want + EXIT_MARGIN_S,
                                "exit %.2f s after SIGTERM" % took)

    def test_bad_value_is_a_usage_error(self):
        binary = hd_harness.require_env("HANDLERD_BIN")
        for bad in ("10x", "-1s", "soon", ""):
            with self.subTest(value=bad):
                p = subprocess.run(
                    [binary, "--listen", "127.0.0.1:0", "--drain-timeout",
                     bad], stdin=subprocess.DEVNULL, capture_output=True,
                    text=True, timeout=10)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn("drain-timeout", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
