"""Prometheus metrics: handlerd --metrics-listen serves /metrics whose
counters follow the calls a real client makes.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import os
import re
import socket
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_metrics")

TIMEOUT = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text):
    """{'name{labels}': value} for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class TestMetrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.server = hd_harness.Handlerd(
            ["--metrics-listen", "127.0.0.1:%d" % cls.port])
        cls.server.start()
        cls.channel = grpc.insecure_channel(cls.server.address)
        cls.stub = pb_grpc.HandlersStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def scrape(self, path="/metrics"):
        with urllib.request.urlopen(
                "http://127.0.0.1:%d%s" % (self.port, path),
                timeout=TIMEOUT) as r:
            self.assertTrue(r.headers["Content-Type"].startswith("text/plain"))
            return parse(r.read().decode())

    def test_counters_follow_calls(self):
        before = self.scrape()
        self.stub.AddHandler(pb.AddHandlerRequest(
            key="m", target=pb.Target(local="count")), timeout=TIMEOUT)
        self.stub.AddHandler(pb.AddHandlerRequest(
            key="m", target=pb.Target(local="echo")), timeout=TIMEOUT)
        req = pb.DispatchRequest(key="m", event="update", update=pb.UpdateArgs(
            topic_path="a"))
        for _ in range(3):
            self.stub.Dispatch(req, timeout=TIMEOUT)
        with self.assertRaises(grpc.RpcError):
            self.stub.Dispatch(pb.DispatchRequest(key="nope", event="x"),
                               timeout=TIMEOUT)
        after = self.scrape()

        def delta(name):
            return after.get(name, 0) - before.get(name, 0)

        ok = 'handlerd_grpc_calls_total{method="handlers.v1.Handlers/%s",code="%s"}'
        self.assertEqual(delta(ok % ("Dispatch", "OK")), 3)
        self.assertEqual(delta(ok % ("Dispatch", "NOT_FOUND")), 1)
        self.assertEqual(delta(ok % ("AddHandler", "OK")), 2)
        self.assertEqual(delta('handlerd_handler_results_total{ok="true"}'), 6)
        self.assertEqual(after["handlerd_handlers"],
                         before.get("handlerd_handlers", 0) + 2)
        self.assertGreaterEqual(after["handlerd_keys"], 1)
        self.assertIn("handlerd_calls_in_flight", after)

    def test_other_paths_are_404(self):
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.scrape("/")
        self.assertEqual(cm.exception.code, 404)


class TestMetricsFlag(unittest.TestCase):
    def test_bad_metrics_address_fails_start(self):
        h = hd_harness.Handlerd(["--metrics-listen", "nonsense"])
        with self.assertRaises(Exception) as cm:
            h.start()
        self.assertRegex(str(cm.exception), re.compile("host:port"))
        h._kill()
        h._cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
