"""Calls that arrive while handlerd drains (issue 11, section 4, "Drain").

After SIGTERM handlerd keeps serving the calls in flight for up to
--drain-timeout and answers every new call UNAVAILABLE "handlerd is
shutting down", which clients retry elsewhere. It used to stop requesting
calls from gRPC once the drain began: the first arrivals took the calls
already requested (16 per completion-queue thread for Dispatch and
DispatchStream, 2 for each other method), and every later one stayed
pending until the drain ended and was then CANCELLED, which clients do not
retry.

Here one Dispatch is held in flight by a webhook receiver that never
answers (faulty_servers.hang), SIGTERM starts a 3 s drain, and several
threads send 100 calls each of Dispatch, ListHandlers, Health/Check and
GetStats, and 40 DispatchStreams: every one must end UNAVAILABLE with
handlerd's message, none CANCELLED.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
import faulty_servers as fs  # noqa: E402

(grpc, pb, pb_grpc, health_pb2, health_pb2_grpc) = hd_harness.import_grpc(
    "test_drain_arrivals",
    "grpc_health_v1.health_pb2",
    "grpc_health_v1.health_pb2_grpc")

SLOW = hd_harness.SLOW
RPC_TIMEOUT = 10.0 * SLOW
CALL_DEADLINE = 60.0 * SLOW  # far past the drain: no call ends by deadline
DRAIN_S = 3.0 * SLOW
EXIT_MARGIN_S = 5.0 * SLOW
THREADS = 2   # completion-queue threads (--threads)
N_CLIENTS = 8  # client threads, each with a connection of its own
PER_METHOD = 100  # unary calls per method: > 16 per method per CQ thread
N_STREAMS = 40
MESSAGE = "handlerd is shutting down"


def update(key, path="t/p"):
    return hd_harness.update_request(pb, key, path=path, json_value='{"v":1}')


class TestDrainArrivals(unittest.TestCase):

    def setUp(self):
        for name in ("HANDLERD_DRAIN_TIMEOUT", "HANDLERD_THREADS"):
            os.environ.pop(name, None)
        self.hook = fs.FaultyServer(fs.hang).start()
        self.addCleanup(self.hook.stop)
        self.h = hd_harness.Handlerd([
            "--drain-timeout", "%dms" % (DRAIN_S * 1000),
            "--threads", str(THREADS)]).start()
        self.addCleanup(self.h.stop_unless_exited)
        self.channels = []
        self.addCleanup(self._close_channels)

    def _close_channels(self):
        for ch in self.channels:
            ch.close()

    def channel(self):
        ch = grpc.insecure_channel(
            self.h.address, options=[("grpc.use_local_subchannel_pool", 1)])
        self.channels.append(ch)
        grpc.channel_ready_future(ch).result(timeout=RPC_TIMEOUT)
        return ch

    def test_every_call_arriving_while_draining_is_unavailable(self):
        stub = pb_grpc.HandlersStub(self.channel())
        stub.AddHandler(pb.AddHandlerRequest(
            key="hang", target=pb.Target(webhook=pb.Webhook(
                url=self.hook.url("/hang"), timeout_ms=60000,  # the most
                max_attempts=1))), timeout=RPC_TIMEOUT)
        stub.AddHandler(pb.AddHandlerRequest(
            key="fast", target=pb.Target(local="count")),
            timeout=RPC_TIMEOUT)
        # Connected before SIGTERM: a new connection during the drain would
        # be accepted too, but the calls are what this is about.
        clients = [self.channel() for _ in range(N_CLIENTS)]

        held = stub.Dispatch.future(update("hang"), timeout=CALL_DEADLINE)
        deadline = time.monotonic() + RPC_TIMEOUT
        while not self.hook.requests() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertTrue(self.hook.requests(), "the webhook call never "
                        "reached the receiver")
        self.assertFalse(held.done(), "the held call ended before SIGTERM")

        t0 = time.monotonic()
        os.kill(self.h.proc.pid, signal.SIGTERM)
        exited = {}

        def wait_exit():
            try:
                exited["rc"] = self.h.proc.wait(DRAIN_S + EXIT_MARGIN_S + 30)
            except subprocess.TimeoutExpired:
                exited["rc"] = None
            exited["at"] = time.monotonic()

        waiter = threading.Thread(target=wait_exit, daemon=True)
        waiter.start()

        # Until handlerd answers "shutting down", a call might still be
        # served: wait for that before the flood.
        probes = 0
        while True:
            probes += 1
            try:
                stub.Dispatch(update("fast"), timeout=RPC_TIMEOUT)
            except grpc.RpcError as e:
                self.assertEqual((e.code(), e.details()),
                                 (grpc.StatusCode.UNAVAILABLE, MESSAGE))
                break
            self.assertLess(time.monotonic() - t0, 2.0 * SLOW,
                            "calls still served 2 s after SIGTERM")
        drain_seen = time.monotonic() - t0

        outcomes = []  # (method, code, details, time.monotonic())
        lock = threading.Lock()
        start = threading.Event()

        def client(i, ch):
            st = pb_grpc.HandlersStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            calls = []
            start.wait()
            for n in range(i, PER_METHOD, N_CLIENTS):
                calls += [
                    ("Dispatch", st.Dispatch.future(
                        update("fast", "f/%d" % n), timeout=CALL_DEADLINE)),
                    ("ListHandlers", st.ListHandlers.future(
                        pb.ListHandlersRequest(), timeout=CALL_DEADLINE)),
                    ("Health/Check", health.Check.future(
                        health_pb2.HealthCheckRequest(),
                        timeout=CALL_DEADLINE)),
                    ("GetStats", st.GetStats.future(
                        pb.GetStatsRequest(), timeout=CALL_DEADLINE))]
            streams = [st.DispatchStream(iter([update("fast", "s/%d" % n)]),
                                         timeout=CALL_DEADLINE)
                       for n in range(i, N_STREAMS, N_CLIENTS)]
            done = []
            for method, f in calls:
                try:
                    f.result()
                    done.append((method, "OK", "", time.monotonic()))
                except grpc.RpcError as e:
                    done.append((method, e.code(), e.details(),
                                 time.monotonic()))
            for s in streams:
                try:
                    list(s)
                    done.append(("DispatchStream", "OK", "",
                                 time.monotonic()))
                except grpc.RpcError as e:
                    done.append(("DispatchStream", e.code(), e.details(),
                                 time.monotonic()))
            with lock:
                outcomes.extend(done)

        threads = [threading.Thread(target=client, args=(i, ch), daemon=True)
                   for i, ch in enumerate(clients)]
        for t in threads:
            t.start()
        start.set()
        for t in threads:
            t.join(CALL_DEADLINE + 10)
        self.assertEqual([t for t in threads if t.is_alive()], [],
                         "client threads still waiting")
        waiter.join(DRAIN_S + EXIT_MARGIN_S + 30)
        try:
            held_out = held.result(timeout=5.0 * SLOW)
            held_out = ("OK", held_out.results[0].ok)
        except grpc.RpcError as e:
            held_out = (e.code(), e.details())
        stderr = self.h.stderr_text()

        exit_at = exited.get("at", float("inf"))
        summary = {}
        for method, code, details, at in outcomes:
            key = "%s %s %r%s" % (method, code, details,
                                  " (after the exit)" if at > exit_at else "")
            summary[key] = summary.get(key, 0) + 1
        print("\ndrain seen %.2f s after SIGTERM (%d probes); exit %r "
              "%.2f s after SIGTERM; held call: %r; %d calls: %s"
              % (drain_seen, probes, exited.get("rc"), exit_at - t0,
                 held_out, len(outcomes),
                 "\n  ".join([""] + ["%4d %s" % (n, k) for k, n in
                                     sorted(summary.items())])),
              file=sys.stderr)

        want = 4 * PER_METHOD + N_STREAMS
        self.assertEqual(len(outcomes), want)
        cancelled = [o for o in outcomes if o[1] == grpc.StatusCode.CANCELLED]
        if cancelled:
            self.fail("%d of %d calls that arrived while draining were "
                      "CANCELLED (see the counts above)\n%s"
                      % (len(cancelled), want, stderr))
        for method, code, details, at in outcomes:
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE,
                             "%s during the drain: %s %r"
                             % (method, code, details))
            if at < exit_at:
                self.assertEqual(details, MESSAGE, method)
        before_exit = sum(1 for o in outcomes if o[3] < exit_at)
        self.assertGreaterEqual(before_exit, 300,
                                "only %d calls ended before handlerd "
                                "exited: the flood missed the drain"
                                % before_exit)

        # The drain itself went as before: the held call was waited for
        # until --drain-timeout, then answered; exit 0.
        self.assertEqual(exited.get("rc"), 0, stderr)
        self.assertGreater(exit_at - t0, DRAIN_S * 0.9)
        self.assertLess(exit_at - t0, DRAIN_S + EXIT_MARGIN_S)
        self.assertEqual(held_out, ("OK", False), "the call in flight: %r"
                         % (held_out,))


if __name__ == "__main__":
    unittest.main(verbosity=2)
