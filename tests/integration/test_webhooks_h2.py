"""Webhooks over https and HTTP/2: Debian's nghttpd (nghttp2-server) speaks
only HTTP/2 (h2 over TLS, no HTTP/1.1 fallback), so a delivery that
succeeds against it went over HTTP/2. Its certificate is self-signed:
handlerd trusts it only through --webhook-ca-file.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_webhooks_h2")
TIMEOUT = 20.0
# Loading the system CA bundle on the first TLS attempt took 2.5-4 s under
# valgrind (test_webhook_faults): 8 s per attempt, scaled, under the 60 s cap.
ATTEMPT_MS = min(60000, int(8000 * hd_harness.SLOW))
NGHTTPD = shutil.which("nghttpd") or "/usr/sbin/nghttpd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class H2Receiver:
    """nghttpd serving `hook` (a JSON file) for any POST to /hook."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hd-h2-")
        www = os.path.join(self.dir, "www")
        os.mkdir(www)
        with open(os.path.join(www, "hook"), "w") as f:
            f.write('{"h2":true}')
        self.cert = os.path.join(self.dir, "cert.pem")
        key = os.path.join(self.dir, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", self.cert, "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [NGHTTPD, "-d", www, str(self.port), key, self.cert],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise AssertionError("nghttpd did not start")
                time.sleep(0.05)
        self.url = "https://127.0.0.1:%d/hook" % self.port

    def close(self):
        self.proc.terminate()
        self.proc.wait(TIMEOUT)
        shutil.rmtree(self.dir, ignore_errors=True)


class TestWebhooksOverHttp2(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(NGHTTPD):
            raise AssertionError("nghttpd missing: apt-get install "
                                 "nghttp2-server (scripts/packages.txt)")
        cls.rx = H2Receiver()

    @classmethod
    def tearDownClass(cls):
        cls.rx.close()

    def run_handlerd(self, *args):
        h = hd_harness.Handlerd(list(args))
        h.start()
        self.addCleanup(h.stop)
        ch = grpc.insecure_channel(h.address)
        self.addCleanup(ch.close)
        return pb_grpc.HandlersStub(ch)

    def dispatch_to_webhook(self, stub, key, max_attempts=1):
        # Generous per-attempt time: a slow TLS handshake (e.g. under
        # valgrind) must not turn into a timeout and a retry.
        stub.AddHandler(pb.AddHandlerRequest(key=key, target=pb.Target(
            webhook=pb.Webhook(url=self.rx.url, max_attempts=max_attempts,
                               timeout_ms=ATTEMPT_MS))), timeout=TIMEOUT)
        return stub.Dispatch(pb.DispatchRequest(
            key=key, event="update", update=pb.UpdateArgs(topic_path="a/b")),
            timeout=ATTEMPT_MS / 1000.0 + TIMEOUT).results[0]

    def test_delivery_over_https_and_http2_with_private_ca(self):
        stub = self.run_handlerd("--webhook-ca-file", self.rx.cert)
        for _ in range(3):  # the connection is reused across dispatches
            r = self.dispatch_to_webhook(stub, "h2")
            self.assertTrue(r.ok, r.error.message)
            self.assertEqual(json.loads(r.value.json_value), {"h2": True})

    def test_untrusted_certificate_is_a_failed_result(self):
        stub = self.run_handlerd()  # system CAs only
        r = self.dispatch_to_webhook(stub, "untrusted", max_attempts=2)
        self.assertFalse(r.ok)
        self.assertIn("certificate", r.error.message)
        # A certificate that does not verify will not verify on a retry.
        self.assertEqual(r.error.attempts, 1)
        self.assertEqual(r.error.http_status, 0)
        self.assertEqual(r.error.code, 14)  # UNAVAILABLE

    def test_missing_ca_file_fails_deliveries_not_the_daemon(self):
        stub = self.run_handlerd("--webhook-ca-file", "/nonexistent.pem")
        r = self.dispatch_to_webhook(stub, "noca")
        self.assertFalse(r.ok)


if __name__ == "__main__":
    unittest.main(verbosity=2)
