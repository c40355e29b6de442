"""SIGHUP and the secrets' warnings (issue 11, section 4).

SIGHUP used to kill handlerd (exit 129, no drain). Now it re-reads
--token-file (token rotation without a restart) and the TLS certificate and
key, logs what was reloaded, and keeps the old value (logging an error) when
a file cannot be read. At start, a --token-file or --tls-key readable by
group or others is warned about, naming the file and its mode, and so is
plaintext on a non-loopback address with no --token-file.

Certificates are self-signed, made per run with the openssl CLI.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

(grpc, pb, pb_grpc, health_pb2, health_pb2_grpc) = hd_harness.import_grpc(
    "test_sighup",
    "grpc_health_v1.health_pb2",
    "grpc_health_v1.health_pb2_grpc")

SLOW = hd_harness.SLOW
RPC_TIMEOUT = 10.0 * SLOW
FAIL_TIMEOUT = 5.0 * SLOW
RELOAD_WITHIN_S = 5.0 * SLOW
OPENSSL = shutil.which("openssl")
SERVING = health_pb2.HealthCheckResponse.SERVING
EXPOSED = "is readable by group or others"
PLAINTEXT = "listening in plaintext on"


def bearer(token):
    return (("authorization", "Bearer " + token),)


def write_file(path, data, mode=0o600):
    """Replaces `path`'s content in place (same inode), then sets `mode`."""
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


class Daemon(hd_harness.Handlerd):
    """hd_harness.Handlerd that listens on `listen` (a ready file with any
    host is accepted; `address` is then 127.0.0.1:PORT)."""

    def __init__(self, extra_args=(), listen="127.0.0.1:0"):
        super().__init__(extra_args)
        self.listen = listen

    def _parse_address(self, text):
        host, _, port = text.strip().rpartition(":")
        want = self.listen.rpartition(":")[0]
        if host != want or not port.isdigit():
            self._kill()
            raise hd_harness.HarnessError(self._describe(
                "ready file holds %r, expected '%s:PORT\\n'" % (text, want)))
        self.port = int(port)
        return "127.0.0.1:%d" % self.port

    def sighup_and_wait(self, text):
        """SIGHUP, then waits until the log shows `text` (True), handlerd
        exits or RELOAD_WITHIN_S passes (False)."""
        before = len(self.stderr_text(limit=10 ** 7))
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_WITHIN_S
        while time.monotonic() < deadline:
            if text in self.stderr_text(limit=10 ** 7)[before:]:
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False


class _Case(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="hd-sighup-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.daemons = []
        self.addCleanup(hd_harness.stop_all, self.daemons)

    def path(self, name):
        return os.path.join(self.dir, name)

    def start(self, *args, listen="127.0.0.1:0"):
        d = Daemon(list(args), listen=listen)
        self.daemons.append(d)
        return d.start()

    def sighup(self, d, text):
        seen = d.sighup_and_wait(text)
        rc = d.proc.poll()
        if rc is not None:
            d.proc = None  # stopped by the signal: nothing left to stop
            self.fail("SIGHUP ended handlerd (%s)\n%s" % (
                "killed by %s" % signal.Signals(-rc).name
                if rc < 0 else "exit status %d" % rc, d.stderr_text()))
        self.assertTrue(seen, "no %r in the log within %.0f s of SIGHUP\n%s"
                        % (text, RELOAD_WITHIN_S, d.stderr_text()))

    def channel(self, d, creds=None):
        opts = [("grpc.use_local_subchannel_pool", 1)]
        if creds is None:
            ch = grpc.insecure_channel(d.address, options=opts)
        else:
            ch = grpc.secure_channel(d.address, creds, options=opts)
        self.addCleanup(ch.close)
        return ch

    def code_of(self, fn, *args, **kwargs):
        kwargs.setdefault("timeout", RPC_TIMEOUT)
        try:
            fn(*args, **kwargs)
            return "OK"
        except grpc.RpcError as e:
            return e.code()


class TestTokenReload(_Case):

    def test_sighup_rotates_the_token(self):
        token_file = self.path("token")
        write_file(token_file, "old-token-81f3\n")
        d = self.start("--token-file", token_file)
        stub = pb_grpc.HandlersStub(self.channel(d))
        hid = stub.AddHandler(pb.AddHandlerRequest(
            key="k", target=pb.Target(local="count")),
            metadata=bearer("old-token-81f3"),
            timeout=RPC_TIMEOUT).handler_id

        write_file(token_file, "  new-token-c07a \n")
        self.sighup(d, "SIGHUP: reloaded the token")
        # On the connection open since before the signal, and on a new one.
        for st in (stub, pb_grpc.HandlersStub(self.channel(d))):
            self.assertEqual(self.code_of(
                st.ListHandlers, pb.ListHandlersRequest(),
                metadata=bearer("old-token-81f3")),
                grpc.StatusCode.UNAUTHENTICATED)
            listed = st.ListHandlers(pb.ListHandlersRequest(),
                                     metadata=bearer("new-token-c07a"),
                                     timeout=RPC_TIMEOUT)
            self.assertEqual([h.handler_id for h in listed.handlers], [hid])
        self.assertIsNone(d.proc.poll())
        log = d.stderr_text()
        for secret in ("old-token-81f3", "new-token-c07a"):
            self.assertNotIn(secret, log)

    def test_unreadable_token_file_keeps_the_old_token(self):
        token_file = self.path("token")
        write_file(token_file, "kept-token-4410\n")
        d = self.start("--token-file", token_file)
        stub = pb_grpc.HandlersStub(self.channel(d))
        cases = [("missing", lambda: os.unlink(token_file),
                  "No such file or directory"),
                 ("empty", lambda: write_file(token_file, " \n"),
                  "the file is empty"),
                 # (the reason given is not checked: read errors are not
                 # told apart from an empty file)
                 ("a directory", lambda: (os.unlink(token_file),
                                          os.mkdir(token_file)), "")]
        if os.geteuid() != 0:  # root reads a mode 000 file all the same
            cases.insert(0, ("mode 000", lambda: os.chmod(token_file, 0),
                             "Permission denied"))
        for what, breakit, why in cases:
            breakit()  # then SIGHUP: an error, the old token stays
            try:
                self.sighup(d, "SIGHUP: cannot read --token-file %s: %s"
                            % (token_file, why))
                self.assertRegex(
                    d.stderr_text(), r"ERROR SIGHUP: cannot read "
                    r"--token-file %s: [^\n]+; keeping the old token"
                    % token_file)
                self.assertNotIn("SIGHUP: reloaded", d.stderr_text(), what)
                self.assertEqual(self.code_of(
                    stub.ListHandlers, pb.ListHandlersRequest(),
                    metadata=bearer("kept-token-4410")), "OK", what)
                self.assertEqual(self.code_of(
                    stub.ListHandlers, pb.ListHandlersRequest()),
                    grpc.StatusCode.UNAUTHENTICATED, what)
            finally:
                if os.path.isdir(token_file):
                    os.rmdir(token_file)
                write_file(token_file, "kept-token-4410\n")
        # A readable file again: reloaded.
        write_file(token_file, "next-token-9b1e\n")
        self.sighup(d, "SIGHUP: reloaded the token")
        self.assertEqual(self.code_of(
            stub.ListHandlers, pb.ListHandlersRequest(),
            metadata=bearer("next-token-9b1e")), "OK")

    def test_sighup_with_nothing_to_reload_keeps_serving(self):
        d = self.start()
        self.sighup(d, "SIGHUP: nothing to reload")
        ch = self.channel(d)
        self.assertEqual(health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT).status,
            SERVING)


def make_self_signed(d, name):
    """A self-signed EC certificate for 127.0.0.1/localhost: (cert PEM,
    key PEM) as bytes."""
    p = subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=%s" % name, "-keyout", name + ".key",
         "-out", name + ".pem",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        cwd=d, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("openssl req failed:\n" + p.stderr)
    with open(os.path.join(d, name + ".pem"), "rb") as f:
        cert = f.read()
    with open(os.path.join(d, name + ".key"), "rb") as f:
        key = f.read()
    return cert, key


class TestTlsReload(_Case):

    def setUp(self):
        if OPENSSL is None:
            hd_harness.require_or_skip("the openssl CLI is not installed "
                                       "(package openssl)")
        super().setUp()

    def peer_cert(self, d):
        """The certificate (DER) a new TLS connection with ALPN h2 gets."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", d.port),
                                      timeout=RPC_TIMEOUT) as raw:
            with ctx.wrap_socket(raw) as s:
                self.assertEqual(s.selected_alpn_protocol(), "h2")
                return s.getpeercert(binary_form=True)

    def check_with_root(self, d, cert_pem, timeout=RPC_TIMEOUT):
        creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        return self.code_of(health_pb2_grpc.HealthStub(
            self.channel(d, creds)).Check, health_pb2.HealthCheckRequest(),
            timeout=timeout)

    def test_sighup_reloads_the_certificate(self):
        first = make_self_signed(self.dir, "first")
        second = make_self_signed(self.dir, "second")
        der = [ssl.PEM_cert_to_DER_cert(c.decode()) for c, _ in
               (first, second)]
        cert_file, key_file = self.path("server.pem"), self.path("server.key")
        write_file(cert_file, first[0], 0o644)
        write_file(key_file, first[1])
        d = self.start("--tls-cert", cert_file, "--tls-key", key_file)
        self.assertEqual(self.peer_cert(d), der[0])
        self.assertEqual(self.check_with_root(d, first[0]), "OK")
        self.assertIn(self.check_with_root(d, second[0], FAIL_TIMEOUT),
                      (grpc.StatusCode.UNAVAILABLE,
                       grpc.StatusCode.DEADLINE_EXCEEDED))

        write_file(cert_file, second[0], 0o644)
        write_file(key_file, second[1])
        self.sighup(d, "SIGHUP: reloaded the TLS certificate and key")
        self.assertEqual(self.peer_cert(d), der[1],
                         "a new connection after SIGHUP still gets the "
                         "first certificate")
        self.assertEqual(self.check_with_root(d, second[0]), "OK")
        self.assertIn(self.check_with_root(d, first[0], FAIL_TIMEOUT),
                      (grpc.StatusCode.UNAVAILABLE,
                       grpc.StatusCode.DEADLINE_EXCEEDED))

        # Files that are not a certificate and its key: an error naming
        # them, and the certificate in use stays.
        write_file(cert_file, b"not a certificate\n", 0o644)
        write_file(key_file, b"not a key\n")
        self.sighup(d, "are not a certificate and its private key: keeping "
                    "the old certificate")
        # A certificate with another certificate's key: the same.
        write_file(cert_file, first[0], 0o644)
        write_file(key_file, second[1])
        self.sighup(d, "are not a certificate and its private key")
        self.assertEqual(self.peer_cert(d), der[1])
        self.assertEqual(self.peer_cert(d), der[1])
        self.assertEqual(self.check_with_root(d, second[0]), "OK")
        # Files it cannot read: an error, and the certificate stays.
        os.unlink(key_file)
        self.sighup(d, "SIGHUP: cannot read the TLS files")
        self.assertEqual(self.peer_cert(d), der[1])
        self.assertEqual(self.check_with_root(d, second[0]), "OK")
        write_file(key_file, second[1])  # for a clean stop

    def test_tls_key_mode_warning(self):
        cert, key = make_self_signed(self.dir, "srv")
        cert_file = self.path("srv.pem")
        key_file = self.path("srv.key")
        write_file(key_file, key, 0o640)
        d = self.start("--tls-cert", cert_file, "--tls-key", key_file)
        log = d.stderr_text()
        self.assertIn("--tls-key %s %s (mode 0640)" % (key_file, EXPOSED),
                      log)
        self.assertNotIn("--tls-cert %s %s" % (cert_file, EXPOSED), log,
                         "a certificate is public: no warning")
        d.stop()
        os.chmod(key_file, 0o600)
        d = self.start("--tls-cert", cert_file, "--tls-key", key_file)
        self.assertNotIn(EXPOSED, d.stderr_text())


class TestStartWarnings(_Case):

    def test_token_file_mode_warning(self):
        token_file = self.path("token")
        write_file(token_file, "mode-token-2c5d\n", 0o644)
        d = self.start("--token-file", token_file)
        log = d.stderr_text()
        self.assertIn("--token-file %s %s (mode 0644)"
                      % (token_file, EXPOSED), log)
        self.assertRegex(log, r"WARN[^\n]*--token-file %s" % token_file)
        self.assertNotIn("mode-token-2c5d", log)
        d.stop()
        os.chmod(token_file, 0o600)
        d = self.start("--token-file", token_file)
        self.assertNotIn(EXPOSED, d.stderr_text())

    def test_plaintext_on_all_interfaces_without_token_warning(self):
        d = self.start(listen="0.0.0.0:0")
        log = d.stderr_text()
        self.assertRegex(log, r"WARN[^\n]*%s 0\.0\.0\.0:0 with no "
                         r"--token-file" % PLAINTEXT)
        ch = self.channel(d)  # and it serves
        self.assertEqual(health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT).status,
            SERVING)
        d.stop()
        # With a token, or on loopback: no such warning.
        token_file = self.path("token")
        write_file(token_file, "plain-token-6e0f\n")
        for args, listen in ((["--token-file", token_file], "0.0.0.0:0"),
                             ([], "127.0.0.1:0")):
            d = self.start(*args, listen=listen)
            self.assertNotIn(PLAINTEXT, d.stderr_text(), (args, listen))
            d.stop()


if __name__ == "__main__":
    hd_harness.main()
