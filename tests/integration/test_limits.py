"""Limits and lifecycle through a real client: over-size messages, too many
calls in flight, a bad message in the middle of a unary flood, and clean
shutdown with calls in flight.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faulty_servers  # noqa: E402
import hd_harness  # noqa: E402

grpc, pb, _ = hd_harness.import_grpc("test_limits")

TIMEOUT = 10.0
SLOW = hd_harness.SLOW


def update(key, path="t/p", json_value='{"v":1}'):
    return pb.DispatchRequest(key=key, event="update", update=pb.UpdateArgs(
        topic_path=path, topic_value=pb.TopicValue(json_value=json_value)))


def gated_count_stream(s, gate, *later):
    """Adds a `count` handler on key "k" to server `s` and opens a
    DispatchStream that sends one update at once, then waits for `gate`
    before sending `later`: a call that stays in flight until the test lets
    it go."""
    s.stub.AddHandler(pb.AddHandlerRequest(
        key="k", target=pb.Target(local="count")), timeout=TIMEOUT)

    def requests():
        yield update("k")
        gate.wait(TIMEOUT)
        yield from later

    return s.stub.DispatchStream(requests(), timeout=TIMEOUT)


class Server(hd_harness.Server):
    TIMEOUT = TIMEOUT

    def __exit__(self, *exc):
        self.channel.close()
        # The test may have stopped handlerd itself and checked its exit
        # status.
        self.h.stop_unless_exited()


class TestConfiguredLimits(unittest.TestCase):
    """Each documented limit: past it the caller gets the documented status
    with a message naming the flag, and nothing is half-done."""

    def add(self, s, key):
        return s.stub.AddHandler(pb.AddHandlerRequest(
            key=key, target=pb.Target(local="count")), timeout=TIMEOUT)

    def test_max_keys(self):
        with Server("--max-keys", "3") as s:
            for k in ("a", "b", "c"):
                self.add(s, k)
            with self.assertRaises(grpc.RpcError) as cm:
                self.add(s, "d")
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("--max-keys", cm.exception.details())
            self.add(s, "a")  # an existing key still takes handlers
            listed = s.stub.ListHandlers(pb.ListHandlersRequest(),
                                         timeout=TIMEOUT)
            self.assertEqual(sorted({h.key for h in listed.handlers}),
                             ["a", "b", "c"])

    def test_max_handlers_per_key(self):
        with Server("--max-handlers-per-key", "2") as s:
            self.add(s, "k")
            self.add(s, "k")
            with self.assertRaises(grpc.RpcError) as cm:
                self.add(s, "k")
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("--max-handlers-per-key", cm.exception.details())
            reply = s.stub.Dispatch(update("k"), timeout=TIMEOUT)
            self.assertEqual(len(reply.results), 2)
            self.add(s, "other")

    def test_max_topic_path_bytes(self):
        with Server("--max-topic-path-bytes", "16") as s:
            self.add(s, "k")
            s.stub.Dispatch(update("k", path="p" * 16), timeout=TIMEOUT)
            with self.assertRaises(grpc.RpcError) as cm:
                s.stub.Dispatch(update("k", path="p" * 17), timeout=TIMEOUT)
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("topic_path is 17 bytes", cm.exception.details())
            self.assertIn("--max-topic-path-bytes", cm.exception.details())
            replies = list(s.stub.DispatchStream(
                iter([update("k", path="p" * 17), update("k")]),
                timeout=TIMEOUT))
            self.assertEqual([r.code for r in replies], [3, 0])
            self.assertIn("--max-topic-path-bytes", replies[0].message)


class TestLimits(unittest.TestCase):
    def test_message_over_limit_is_resource_exhausted(self):
        with Server("--max-message-bytes", "65536") as s:
            s.stub.AddHandler(pb.AddHandlerRequest(
                key="k", target=pb.Target(local="count")), timeout=TIMEOUT)
            big = '"' + "x" * 100000 + '"'
            with self.assertRaises(grpc.RpcError) as cm:
                s.stub.Dispatch(update("k", json_value=big), timeout=TIMEOUT)
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            # A message under the limit still works afterwards.
            r = s.stub.Dispatch(update("k"), timeout=TIMEOUT)
            self.assertEqual(r.results[0].value.int64_value, 1)

    def test_calls_over_max_calls_are_resource_exhausted(self):
        with Server("--max-calls", "2") as s:
            s.stub.AddHandler(pb.AddHandlerRequest(
                key="k", target=pb.Target(local="count")), timeout=TIMEOUT)
            # Two open streams hold both slots...
            gates = [threading.Event(), threading.Event()]

            def held(gate):
                yield update("k")
                gate.wait(TIMEOUT)

            streams = [s.stub.DispatchStream(held(g), timeout=TIMEOUT)
                       for g in gates]
            for st in streams:  # both are being served
                self.assertEqual(next(st).code, 0)
            # ...so a third call is refused with a message naming the limit.
            with self.assertRaises(grpc.RpcError) as cm:
                s.stub.Dispatch(update("k"), timeout=TIMEOUT)
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("limit 2", cm.exception.details())
            for g in gates:
                g.set()
            for st in streams:
                self.assertEqual(list(st), [])
            # Slots come back once the streams end.
            deadline = time.time() + TIMEOUT
            while True:
                try:
                    s.stub.Dispatch(update("k"), timeout=TIMEOUT)
                    break
                except grpc.RpcError as e:
                    if (e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                            or time.time() > deadline):
                        raise
                    time.sleep(0.05)

    def test_an_answered_call_has_given_its_slot_back(self):
        # A caller that has its answer may call again at once: the slot is
        # given back before the status goes out, not when gRPC is done with
        # the call afterwards (which can be later, and was, under valgrind).
        with Server("--max-calls", "1") as s:
            added = s.stub.AddHandler(pb.AddHandlerRequest(
                key="k", target=pb.Target(local="count")), timeout=TIMEOUT)
            for i in range(1, 301):
                r = s.stub.Dispatch(update("k"), timeout=TIMEOUT)
                self.assertEqual(r.results[0].value.int64_value, i)
            replies = list(s.stub.DispatchStream(iter([update("k")]),
                                                 timeout=TIMEOUT))
            self.assertEqual(replies[0].results[0].value.int64_value, 301)
            s.stub.RemoveHandler(pb.RemoveHandlerRequest(
                key="k", handler_id=added.handler_id), timeout=TIMEOUT)

    @staticmethod
    def slot_free(s):
        try:
            s.stub.ListHandlers(pb.ListHandlersRequest(), timeout=TIMEOUT)
            return True
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            return False

    def test_a_call_cut_at_its_deadline_has_given_its_slot_back(self):
        # The caller has its answer at the deadline while the webhook it
        # waited for is still being called: the call no longer counts.
        hanging = faulty_servers.FaultyServer(faulty_servers.hang).start()
        try:
            with Server("--max-calls", "1") as s:
                s.stub.AddHandler(pb.AddHandlerRequest(
                    key="hangs", target=pb.Target(webhook=pb.Webhook(
                        url=hanging.url(), timeout_ms=60000,
                        max_attempts=1))), timeout=TIMEOUT)
                s.stub.AddHandler(pb.AddHandlerRequest(
                    key="k", target=pb.Target(local="count")),
                    timeout=TIMEOUT)
                # On a loaded machine (or the first cut under valgrind) the
                # reply can miss its margin: the client times out while the
                # call, unanswered, rightly keeps its slot. Only an answer
                # that came back counts; wait for the slot and try again.
                for _ in range(5):
                    try:
                        r = s.stub.Dispatch(update("hangs"),
                                            timeout=1.0 * SLOW)
                        break
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                            raise
                        hd_harness.eventually(lambda: self.slot_free(s),
                                              10.0, "a late call's slot")
                else:
                    self.fail("no cut reply came back in time in 5 calls")
                self.assertEqual(r.results[0].error.code,
                                 grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
                r = s.stub.Dispatch(update("k"), timeout=TIMEOUT)
                self.assertEqual(r.results[0].value.int64_value, 1)
        finally:
            hanging.stop()

    def test_concurrent_unary_calls_all_answered(self):
        with Server() as s:
            s.stub.AddHandler(pb.AddHandlerRequest(
                key="k", target=pb.Target(local="count")), timeout=TIMEOUT)
            futures = [s.stub.Dispatch.future(update("k"), timeout=30 * SLOW)
                       for _ in range(2000)]
            counts = sorted(f.result().results[0].value.int64_value
                            for f in futures)
            # Every call ran exactly once: the counts are 1..2000.
            self.assertEqual(counts, list(range(1, 2001)))

    def test_sigterm_lets_stream_in_flight_finish(self):
        with Server("--drain-timeout", "%dms" % int(5000 * SLOW)) as s:
            gate = threading.Event()
            stream = gated_count_stream(s, gate, update("k"))
            self.assertEqual(next(stream).results[0].value.int64_value, 1)
            os.kill(s.h.proc.pid, signal.SIGTERM)
            time.sleep(0.3)
            self.assertIsNone(s.h.proc.poll(), "exited with a call in flight")
            gate.set()
            second = next(stream)
            self.assertEqual(second.results[0].value.int64_value, 2)
            self.assertEqual(list(stream), [])
            self.assertEqual(s.h.proc.wait(hd_harness.STOP_TIMEOUT_S), 0)

    def test_sigterm_cancels_calls_after_drain_timeout(self):
        with Server("--drain-timeout", "300ms") as s:
            gate = threading.Event()
            stream = gated_count_stream(s, gate)
            next(stream)
            started = time.time()
            os.kill(s.h.proc.pid, signal.SIGTERM)
            self.assertEqual(s.h.proc.wait(hd_harness.STOP_TIMEOUT_S), 0)
            self.assertLess(time.time() - started, 5 * SLOW)
            with self.assertRaises(grpc.RpcError) as cm:
                list(stream)
            self.assertIn(cm.exception.code(), (grpc.StatusCode.CANCELLED,
                                                grpc.StatusCode.UNAVAILABLE))
            gate.set()


class TestShutdownWithPendingWebhooks(unittest.TestCase):
    """A call cancelled while its webhook is still pending must not crash
    shutdown: the webhook's completion arrives after the drain."""

    def setUp(self):
        # A receiver that accepts connections and never answers.
        self.hang = socket.socket()
        self.hang.bind(("127.0.0.1", 0))
        self.hang.listen(16)
        self.url = "http://127.0.0.1:%d/hook" % self.hang.getsockname()[1]

    def tearDown(self):
        self.hang.close()

    def check(self, start_call):
        with Server("--drain-timeout", "300ms") as s:
            s.stub.AddHandler(pb.AddHandlerRequest(key="w", target=pb.Target(
                webhook=pb.Webhook(url=self.url, timeout_ms=30000,
                                   max_attempts=1))), timeout=TIMEOUT)
            call = start_call(s)
            time.sleep(0.5)  # the webhook attempt is in flight
            call.cancel()
            time.sleep(0.2)
            started = time.time()
            os.kill(s.h.proc.pid, signal.SIGTERM)
            self.assertEqual(s.h.proc.wait(hd_harness.STOP_TIMEOUT_S), 0,
                             s.h.stderr_text())
            self.assertLess(time.time() - started, 5 * SLOW)

    def test_cancelled_dispatch(self):
        self.check(lambda s: s.stub.Dispatch.future(update("w")))

    def test_cancelled_stream(self):
        gate = threading.Event()

        def requests():
            yield update("w")
            yield update("w")
            gate.wait(TIMEOUT)

        def start(s):
            return s.stub.DispatchStream(requests())

        try:
            self.check(start)
        finally:
            gate.set()


if __name__ == "__main__":
    unittest.main(verbosity=2)
