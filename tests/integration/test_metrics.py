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

try:  # Debian's python3-prometheus-client: the strict parse
    from prometheus_client.parser import text_string_to_metric_families
    PARSER_MISSING = None
except ImportError as e:
    text_string_to_metric_families = None
    PARSER_MISSING = ("python3-prometheus-client does not import (%s): the "
                      "strict parse of /metrics cannot run" % e)

TIMEOUT = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*'
                    r'(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*",?)*\})?'
                    r' [-+]?([0-9.]+([eE][-+]?[0-9]+)?|Inf|NaN)$')


def parse(text):
    """{'name{labels}': value} for every sample line. Every line must be a
    HELP/TYPE comment or a well-formed sample, and the official parser
    (Debian's python3-prometheus-client) must accept the whole text. Without
    that package only the line check runs here, and
    test_official_parser_accepts_the_text fails (CI=true) or is skipped
    loudly."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        if not SAMPLE.match(line):
            raise AssertionError("malformed metrics line: %r" % line)
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    if text_string_to_metric_families is None:
        return out
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for want, kind in (("handlerd_dispatch_duration_seconds", "histogram"),
                       ("handlerd_webhook_delivery_duration_seconds",
                        "histogram"),
                       ("handlerd_dispatches", "counter"),
                       ("handlerd_build_info", "gauge")):
        if families.get(want) is None or families[want].type != kind:
            raise AssertionError("no %s %s in %s" % (kind, want,
                                                     sorted(families)))
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
        self.assertEqual(delta('handlerd_handler_results_total'
                               '{kind="simple",outcome="ok"}'), 6)
        self.assertEqual(delta('handlerd_dispatches_total'
                               '{event="update",code="OK"}'), 3)
        self.assertEqual(delta('handlerd_dispatches_total'
                               '{event="other",code="NOT_FOUND"}'), 1)
        self.assertEqual(delta('handlerd_dispatch_duration_seconds_count'), 3)
        self.assertEqual(
            delta('handlerd_dispatch_duration_seconds_bucket{le="+Inf"}'), 3)
        self.assertIn('handlerd_build_info{version="%s"}' % self.version(),
                      after)
        self.assertIn("handlerd_webhook_deliveries_in_flight", after)
        self.assertEqual(after["handlerd_handlers"],
                         before.get("handlerd_handlers", 0) + 2)
        self.assertGreaterEqual(after["handlerd_keys"], 1)
        self.assertIn("handlerd_calls_in_flight", after)

    def version(self):
        import subprocess
        out = subprocess.run([hd_harness.require_env("HANDLERD_BIN"),
                              "--version"], capture_output=True, text=True)
        return out.stdout.split()[1]

    def test_webhook_outcomes_and_latency(self):
        """A webhook to a closed port: an attempt, a retry, a failed
        delivery counted by its code, and the delivery latency observed."""
        before = self.scrape()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]  # closed when the block ends
        self.stub.AddHandler(pb.AddHandlerRequest(
            key="w", target=pb.Target(webhook=pb.Webhook(
                url="http://127.0.0.1:%d/" % dead, max_attempts=2,
                timeout_ms=500))), timeout=TIMEOUT)
        reply = self.stub.Dispatch(pb.DispatchRequest(
            key="w", event="update", update=pb.UpdateArgs(topic_path="a")),
            timeout=TIMEOUT)
        self.assertFalse(reply.results[0].ok)
        after = self.scrape()

        def delta(name):
            return after.get(name, 0) - before.get(name, 0)

        self.assertEqual(delta("handlerd_webhook_attempts_total"), 2)
        self.assertEqual(delta("handlerd_webhook_retries_total"), 1)
        self.assertEqual(delta('handlerd_webhook_deliveries_total'
                               '{code="UNAVAILABLE"}'), 1)
        self.assertEqual(
            delta("handlerd_webhook_delivery_duration_seconds_count"), 1)
        self.assertEqual(delta('handlerd_handler_results_total'
                               '{kind="webhook",outcome="error"}'), 1)
        self.assertEqual(after["handlerd_webhook_deliveries_in_flight"], 0)

    def test_get_stats_matches_metrics(self):
        """GetStats (what handlerctl stats prints) carries the same series
        as /metrics."""
        self.stub.AddHandler(pb.AddHandlerRequest(
            key="s", target=pb.Target(local="count")), timeout=TIMEOUT)
        self.stub.Dispatch(pb.DispatchRequest(
            key="s", event="update", update=pb.UpdateArgs(topic_path="a")),
            timeout=TIMEOUT)
        reply = self.stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
        scraped = self.scrape()
        got = {}
        for smp in reply.samples:
            labels = ",".join('%s="%s"' % kv for kv in smp.labels.items())
            got[smp.name + ("{%s}" % labels if labels else "")] = smp.value

        def norm(series):  # label order may differ: sort the pairs
            if "{" not in series:
                return series
            name, rest = series.split("{", 1)
            return name + "{" + ",".join(sorted(rest[:-1].split(","))) + "}"

        got = {norm(k): v for k, v in got.items()}
        want = {norm(k): v for k, v in scraped.items()}
        moving = ("GetStats", "calls_in_flight")  # this very call

        def steady(keys):
            return {k for k in keys if not any(m in k for m in moving)}

        self.assertEqual(steady(got), steady(want))
        for k, v in want.items():
            if not any(m in k for m in moving):
                self.assertEqual(got[k], v, k)
        self.assertGreater(len(got), 30)

    def test_official_parser_accepts_the_text(self):
        """prometheus_client's own parser reads /metrics after calls, a
        failed webhook and observed histograms (parse() checks the types
        of the histograms, a counter and a gauge)."""
        if PARSER_MISSING:
            hd_harness.require_or_skip(PARSER_MISSING)
        self.stub.AddHandler(pb.AddHandlerRequest(
            key="p", target=pb.Target(local="echo")), timeout=TIMEOUT)
        self.stub.AddHandler(pb.AddHandlerRequest(
            key="p", target=pb.Target(webhook=pb.Webhook(
                url="http://127.0.0.1:9/", max_attempts=1))),
            timeout=TIMEOUT)
        self.stub.Dispatch(pb.DispatchRequest(
            key="p", event="update", update=pb.UpdateArgs(topic_path="a")),
            timeout=TIMEOUT)
        self.assertIn("handlerd_webhook_delivery_duration_seconds_count",
                      self.scrape())

    def test_handlerctl_stats(self):
        import subprocess
        ctl = os.environ.get("HANDLERCTL_BIN")
        if not ctl:
            hd_harness.require_or_skip("HANDLERCTL_BIN is not set (no "
                                       "handlerctl target when cmake ran)")
        self.stub.AddHandler(pb.AddHandlerRequest(
            key="hs", target=pb.Target(local="count")), timeout=TIMEOUT)
        for _ in range(2):
            self.stub.Dispatch(pb.DispatchRequest(
                key="hs", event="close",
                subscribe=pb.SubHandlerArgs(topic_path="a")),
                timeout=TIMEOUT)
        out = subprocess.run([ctl, "--addr", self.server.address, "stats"],
                             capture_output=True, text=True,
                             timeout=hd_harness.CLI_TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)
        rows = [l.split() for l in out.stdout.splitlines()]
        self.assertEqual(rows[0], ["FIGURE", "LABELS", "VALUE"])
        close_ok = [r for r in rows if r[0] == "handlerd_dispatches_total"
                    and r[1] == 'code="OK",event="close"']
        self.assertEqual(len(close_ok), 1, out.stdout)
        self.assertGreaterEqual(float(close_ok[0][2]), 2)
        self.assertTrue(any(r[:2] == ["handlerd_dispatch_duration_seconds",
                                      "p99"] for r in rows), out.stdout)
        self.assertFalse(any(r[0].endswith("_bucket") for r in rows))
        js = subprocess.run([ctl, "--addr", self.server.address, "-o", "json",
                             "stats"], capture_output=True, text=True,
                            timeout=hd_harness.CLI_TIMEOUT)
        self.assertEqual(js.returncode, 0, js.stderr)
        import json
        names = {x["name"] for x in json.loads(js.stdout)["stats"]}
        self.assertIn("handlerd_dispatch_duration_seconds_bucket", names)

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
    hd_harness.main()
