"""A call with a deadline is answered before it, with every handler's result.

The set is {a webhook that never answers, `echo`, a healthy webhook}: the
hanging webhook yields a failed result (DEADLINE_EXCEEDED, its attempts, what
it was waiting for) and the other two results come back, in order, inside
the caller's deadline; for unary Dispatch, for an event-stream route whose
target is such a set's member, and for DispatchStream. The metrics count
what the caller saw.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import concurrent.futures
import os
import re
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faulty_servers  # noqa: E402
import hd_harness  # noqa: E402
import webhook_receiver  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_deadlines")

SLOW = hd_harness.SLOW
# Concurrent calls per burst. All of them are cut at the same moment (the
# deadline less a reply margin of at most 250 ms), and every reply must be
# encoded and sent inside that margin: under valgrind, which runs the
# daemon's threads one at a time and ~20x slower, 50 did not fit.
CALLS = 10 if hd_harness.WRAPPER else 50


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def update(key, value='{"v":1}'):
    return pb.DispatchRequest(key=key, event="update", update=pb.UpdateArgs(
        topic_path="t/p", topic_value=pb.TopicValue(json_value=value)))


def webhook(url):
    # A per-attempt timeout far beyond the deadline: the deadline cuts it.
    return pb.Target(webhook=pb.Webhook(url=url, timeout_ms=60000,
                                        max_attempts=3))


class DeadlineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.hanging = faulty_servers.FaultyServer(faulty_servers.hang).start()
        cls.receiver = webhook_receiver.Receiver().start()
        cls.metrics_port = free_port()
        cls.h = hd_harness.Handlerd(
            ["--metrics-listen", "127.0.0.1:%d" % cls.metrics_port,
             "--plugin", hd_harness.require_env("HD_SLOW_PLUGIN")]).start()
        cls.channel = grpc.insecure_channel(cls.h.address)
        grpc.channel_ready_future(cls.channel).result(timeout=10)
        cls.stub = pb_grpc.HandlersStub(cls.channel)
        for target in (webhook(cls.hanging.url()), pb.Target(local="echo"),
                       webhook(cls.receiver.url("/ok"))):
            cls.stub.AddHandler(pb.AddHandlerRequest(key="set", target=target),
                                timeout=10)
        cls.stub.AddHandler(pb.AddHandlerRequest(
            key="slow", target=pb.Target(local="sleep_ms")), timeout=10)
        # The same set behind event-stream routes: each member routes
        # "update" to its target.
        for target in (webhook(cls.hanging.url()), pb.Target(local="echo"),
                       webhook(cls.receiver.url("/ok"))):
            req = pb.AddHandlerRequest(key="routed")
            req.routes["update"].CopyFrom(target)
            cls.stub.AddHandler(req, timeout=10)
        # The first call through the deadline cut is the slowest (valgrind
        # translates its code then); the tests time the ones after it.
        # It waits for the hanging webhook until the cut.
        try:
            cls.stub.Dispatch(update("set"), timeout=0.5 * SLOW)
        except grpc.RpcError:
            pass

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.h.stop()
        cls.hanging.stop()
        cls.receiver.stop()

    def check_results(self, results, label):
        self.assertEqual(len(results), 3, "%s: %r" % (label, results))
        hung, echo, ok = results
        self.assertFalse(hung.ok, label)
        self.assertEqual(hung.error.code, grpc.StatusCode.DEADLINE_EXCEEDED
                         .value[0], "%s: %r" % (label, hung))
        self.assertEqual(hung.error.attempts, 1, "%s: %r" % (label, hung))
        self.assertIn("deadline", hung.error.message, label)
        self.assertTrue(echo.ok, "%s: %r" % (label, echo))
        self.assertIn('"event":"update"', echo.value.json_value, label)
        self.assertTrue(ok.ok, "%s: %r" % (label, ok))

    def run_calls(self, key, deadline_s):
        """CALLS concurrent Dispatch calls with `deadline_s`; each must end
        OK with 3 results inside its deadline."""
        def one(_):
            start = time.monotonic()
            try:
                reply = self.stub.Dispatch(update(key), timeout=deadline_s)
            except grpc.RpcError as e:
                return ("error", e.code(), e.details(),
                        time.monotonic() - start)
            return ("ok", reply, None, time.monotonic() - start)

        with concurrent.futures.ThreadPoolExecutor(CALLS) as pool:
            outcomes = list(pool.map(one, range(CALLS)))
        errors = [o for o in outcomes if o[0] != "ok"]
        self.assertEqual(errors, [], "%s, deadline %.1f s: %d of %d calls "
                         "failed" % (key, deadline_s, len(errors), CALLS))
        for _, reply, _, took in outcomes:
            self.check_results(list(reply.results), "%s %.1fs" % (
                key, deadline_s))
            self.assertLess(took, deadline_s)

    def test_set_300ms(self):
        self.run_calls("set", 0.3 * SLOW)

    def test_set_2s(self):
        self.run_calls("set", 2.0 * SLOW)

    def test_set_8s(self):
        self.run_calls("set", 8.0 * SLOW)

    def test_routed_set_2s(self):
        self.run_calls("routed", 2.0 * SLOW)

    def test_stream_deadline(self):
        deadline = 2.0 * SLOW
        start = time.monotonic()
        replies = list(self.stub.DispatchStream(
            iter([update("set"), update("routed"), update("set")]),
            timeout=deadline))
        self.assertLess(time.monotonic() - start, deadline)
        self.assertEqual([r.sequence for r in replies], [0, 1, 2])
        for r in replies:
            self.assertEqual(r.code, 0, r)
            self.check_results(list(r.results), "stream")

    def test_metrics_count_what_the_caller_saw(self):
        before = self.metric_sum('code="OK"')
        self.run_calls("set", 1.0 * SLOW)
        after = self.metric_sum('code="OK"')
        self.assertGreaterEqual(after - before, CALLS)
        # A local function that outlasts the deadline cannot be interrupted:
        # its reply is late, and is counted as what the caller got.
        late_before = self.metric_sum('code="DEADLINE_EXCEEDED"')
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.Dispatch(pb.DispatchRequest(
                key="slow", event="update", update=pb.UpdateArgs(
                    topic_path="t/p",
                    topic_value=pb.TopicValue(int64_value=int(400 * SLOW)))),
                timeout=0.2 * SLOW)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.DEADLINE_EXCEEDED)
        # The reply is late by the function's 400 ms (more under valgrind):
        # wait until it is counted, whichever way.
        hd_harness.eventually(
            lambda: (self.metric_sum('code="OK"') != after or
                     self.metric_sum('code="DEADLINE_EXCEEDED"')
                     != late_before),
            2.0, "the late reply counted in handlerd_dispatches_total")
        self.assertEqual(self.metric_sum('code="OK"'), after,
                         "a late reply was counted as OK")
        self.assertEqual(self.metric_sum('code="DEADLINE_EXCEEDED"'),
                         late_before + 1)

    def metric_sum(self, label):
        url = "http://127.0.0.1:%d/metrics" % self.metrics_port
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("handlerd_dispatches_total{") and label in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


if __name__ == "__main__":
    unittest.main()
