"""handlerd's connect-time address check (open_socket in webhook_attempt.c):
a webhook registered by host NAME whose name later resolves to an address
the policy refuses is refused when handlerd is about to connect, and no
connection is made. The README promises "Addresses are checked when
registering and again at connect time on the resolved address, so DNS
tricks do not pass"; only this suite reaches the second check.

handlerd runs in its own mount namespace (unshare(1)) with a private
/etc/hosts bind-mounted over the real one, which the test rewrites in place
to move a name from one address to another (a DNS rebinding, without DNS).
That needs root (CAP_SYS_ADMIN) and unshare; where they are missing the
suite skips, loudly, and with CI=true it fails instead, naming what is
missing.

Run by CTest as `/usr/bin/python3 tests/integration/test_webhook_dns_rebind.py`
with HANDLERD_BIN and HD_PY_GEN set (see CMakeLists.txt).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faulty_servers  # noqa: E402
import hd_harness  # noqa: E402

(grpc, pb, pb_grpc) = hd_harness.import_grpc("test_webhook_dns_rebind")

RPC_TIMEOUT = 10.0 * hd_harness.SLOW
# A public address, which the policy allows (documentation ranges such as
# TEST-NET are refused under --webhook-deny-private): where a name points
# while it is registered. Registration only resolves the name; the name has
# moved before anything is delivered, so nothing is ever sent there.
ALLOWED_ADDR = "93.184.216.34"
PERMISSION_DENIED = 7  # grpc.StatusCode.PERMISSION_DENIED's number


class HostsFile:
    """A private hosts file: a temporary file that handlerd sees as
    /etc/hosts. Changed in place (same inode), so the bind mount sees every
    change."""

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="hd-it-hosts-")
        os.close(fd)
        os.chmod(self.path, 0o644)
        self.names = {}
        self._write()

    def _write(self):
        """Rewrites the file: localhost plus self.names ({name: address})."""
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += ["%s %s" % (addr, name)
                  for name, addr in sorted(self.names.items())]
        with open(self.path, "r+") as f:
            f.seek(0)
            f.truncate()
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def point(self, name, addr):
        """Makes `name` resolve to `addr` from now on."""
        self.names[name] = addr
        self._write()

    def remove(self):
        os.unlink(self.path)


def namespace_wrapper(hosts_path):
    """The command prefix that runs a program in a new mount namespace with
    `hosts_path` bound over /etc/hosts. unshare and sh exec, so the program
    keeps the pid (SIGTERM and the exit status are its own)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', hosts_path]


_capability = []  # check_capability()'s answer, once known


def check_capability():
    """None when namespace_wrapper() works here, else why not."""
    if not _capability:
        _capability.append(_probe())
    return _capability[0]


def _probe():
    if shutil.which("unshare") is None:
        return "unshare(1) (util-linux) is not installed"
    hosts = HostsFile()
    try:
        hosts.point("probe.handlerd.test", ALLOWED_ADDR)
        try:
            p = subprocess.run(
                namespace_wrapper(hosts.path) +
                ["getent", "hosts", "probe.handlerd.test"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return "cannot run unshare: %s" % e
        if p.returncode != 0 or ALLOWED_ADDR not in p.stdout.decode():
            return ("a private /etc/hosts in a mount namespace needs root "
                    "(CAP_SYS_ADMIN) and unshare --mount: exit %d, %s"
                    % (p.returncode, (p.stderr.decode(errors="replace")
                                      or p.stdout.decode(errors="replace"))
                       .strip() or "no output"))
        # And the test's own view is untouched.
        try:
            socket.gethostbyname("probe.handlerd.test")
            return "the private hosts file leaked out of its namespace"
        except OSError:
            pass
        return None
    finally:
        hosts.remove()


class NamespacedHandlerd(hd_harness.Handlerd):
    """handlerd in its own mount namespace, seeing `hosts` as /etc/hosts.
    HD_IT_WRAPPER (valgrind) still runs handlerd itself: it goes inside."""

    def __init__(self, hosts, extra_args=()):
        super().__init__(extra_args)
        self.hosts = hosts

    def start(self):
        saved = hd_harness.WRAPPER
        hd_harness.WRAPPER = namespace_wrapper(self.hosts.path) + saved
        try:
            return super().start()
        finally:
            hd_harness.WRAPPER = saved


OK_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")


def answer_ok(srv, conn):
    """Answers the request (once it has all of it) 200 with the JSON body
    {}; closes the connection either way."""
    if srv.read_request(conn) is not None:
        conn.finished = srv.send(conn, OK_RESPONSE)
    conn.sock.close()


class ConnectionCounter(faulty_servers.FaultyServer):
    """A loopback TCP listener (started) that records every connection it
    accepts and answers each HTTP request 200 with the JSON body {} (then
    closes)."""

    def __init__(self):
        super().__init__(answer_ok, name="connection-counter")
        self.start()

    def accepted(self):
        """The peers of the connections accepted so far."""
        return [c.peer for c in self.connections()]


class _RebindCase(unittest.TestCase):
    """One namespaced handlerd (EXTRA_ARGS) per class, its hosts file and a
    connection counter."""

    EXTRA_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.server = None
        why = check_capability()
        if why is not None:
            # With CI=true a failure naming what is missing, else a loud
            # skip (the suite then exits 77: skipped, not passed).
            hd_harness.require_or_skip(why)
        cls.hosts = HostsFile()
        cls.counter = ConnectionCounter()
        try:
            cls.server = NamespacedHandlerd(cls.hosts, cls.EXTRA_ARGS).start()
            cls.channel = grpc.insecure_channel(cls.server.address)
            grpc.channel_ready_future(cls.channel).result(timeout=RPC_TIMEOUT)
        except BaseException:
            if cls.server is not None:
                cls.server.stop()
            cls.counter.stop()
            cls.hosts.remove()
            raise
        cls.stub = pb_grpc.HandlersStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        if cls.server is None:
            return
        cls.channel.close()
        try:
            cls.server.stop()  # asserts exit status 0 after SIGTERM
        finally:
            cls.counter.stop()
            cls.hosts.remove()

    # -- helpers ---------------------------------------------------------

    def url(self, name, path="/hook"):
        return "http://%s:%d%s" % (name, self.counter.port, path)

    def add_webhook(self, key, url):
        return self.stub.AddHandler(
            pb.AddHandlerRequest(key=key, target=pb.Target(webhook=pb.Webhook(
                url=url, timeout_ms=int(5000 * hd_harness.SLOW),
                max_attempts=3))),
            timeout=RPC_TIMEOUT)

    def dispatch_one(self, key):
        """Dispatches an update to `key`; its one result."""
        reply = self.stub.Dispatch(
            hd_harness.update_request(pb, key, json_value='{"n":1}'),
            timeout=RPC_TIMEOUT)
        self.assertEqual(len(reply.results), 1, reply)
        return reply.results[0]

    def assert_refused_at_connect(self, result, hid, addr):
        """`result` is the connect-time refusal of `addr`, in the one
        attempt made, with nothing received."""
        self.assertEqual(result.handler_id, hid)
        self.assertFalse(result.ok, "delivered: %s" % result)
        self.assertEqual(result.error.code, PERMISSION_DENIED, result)
        self.assertEqual(result.error.message,
                         "address refused: %s is not an allowed address, "
                         "after 1 attempt" % addr)
        self.assertEqual(result.error.attempts, 1, result)
        self.assertEqual(result.error.http_status, 0, result)

    def assert_no_connection(self):
        time.sleep(0.3)  # a connection under way would be accepted by now
        self.assertEqual(self.counter.accepted(), [],
                         "handlerd connected to the refused address")


class TestRebindDenyPrivate(_RebindCase):
    """--webhook-deny-private: a name that resolved to an allowed address
    when registered, and to loopback by the time of delivery."""

    EXTRA_ARGS = ("--webhook-deny-private",)

    def test_name_rebound_to_loopback_is_refused_at_connect(self):
        name = "rebind.handlerd.test"
        self.hosts.point(name, ALLOWED_ADDR)
        # Registration resolves the name: an allowed address, accepted.
        hid = self.add_webhook("rebind", self.url(name)).handler_id
        self.hosts.point(name, "127.0.0.1")
        # handlerd sees the new address: registering it now is refused.
        err = hd_harness.assert_rpc_status(
            self, grpc.StatusCode.INVALID_ARGUMENT, self.stub.AddHandler,
            pb.AddHandlerRequest(key="rebind-now", target=pb.Target(
                webhook=pb.Webhook(url=self.url(name)))))
        self.assertIn("host %s: address 127.0.0.1 is loopback" % name,
                      err.details())

        result = self.dispatch_one("rebind")
        self.assert_no_connection()
        self.assert_refused_at_connect(result, hid, "127.0.0.1")

    def test_name_rebound_to_a_private_address_is_refused_at_connect(self):
        name = "rebind-private.handlerd.test"
        self.hosts.point(name, ALLOWED_ADDR)
        hid = self.add_webhook("rebind-private", self.url(name)).handler_id
        self.hosts.point(name, "10.255.255.1")
        result = self.dispatch_one("rebind-private")
        self.assert_refused_at_connect(result, hid, "10.255.255.1")


class TestRebindDefaultPolicy(_RebindCase):
    """The default policy: loopback and private addresses are allowed,
    link-local (cloud metadata) never is. Registration does not resolve
    names then, so the connect-time check is the only one."""

    def test_control_name_on_loopback_is_delivered(self):
        # The mechanism itself: handlerd's resolver reads the private hosts
        # file, and the counter sees handlerd's connections.
        name = "control.handlerd.test"
        self.hosts.point(name, "127.0.0.1")
        hid = self.add_webhook("control", self.url(name)).handler_id
        result = self.dispatch_one("control")
        self.assertTrue(result.ok, result)
        self.assertEqual(result.handler_id, hid)
        self.assertGreaterEqual(len(self.counter.accepted()), 1)

    def test_name_on_link_local_is_refused_at_connect(self):
        name = "metadata.handlerd.test"
        before = len(self.counter.accepted())
        self.hosts.point(name, "169.254.169.254")
        hid = self.add_webhook("metadata", self.url(name)).handler_id
        result = self.dispatch_one("metadata")
        self.assert_refused_at_connect(result, hid, "169.254.169.254")
        self.assertEqual(len(self.counter.accepted()), before)


if __name__ == "__main__":
    hd_harness.main()
