"""Connection floods against handlerd's gRPC listener (issue 11, section 2).

Debian's gRPC 1.51 stops accepting for good once accept4() fails with
EMFILE: a burst of connections past the open-files limit used to leave
handlerd running with a dead listener. handlerd now raises its soft
open-files limit to the hard limit (and logs both), closes connections past
--max-connections (default: half the open-files limit) as they arrive, and
when out of descriptors anyway accepts the waiting connections on a spare
descriptor and closes them instead of losing the listener. Idle HTTP/2
connections are closed after --idle-timeout, connections that never finish
their handshake after --handshake-timeout.

Each test starts its own handlerd. The settings that are new with these
features are given as HANDLERD_* variables rather than flags (except in
test_flags_spelled_as_documented): a handlerd that does not know them
ignores them and serves, so on such a build the tests fail on what they
check (a dead listener, a 6th connection served, an idle connection kept),
not on a usage error.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import os
import re
import resource
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

(grpc, pb, pb_grpc, health_pb2, health_pb2_grpc) = hd_harness.import_grpc(
    "test_connection_flood",
    "grpc_health_v1.health_pb2",
    "grpc_health_v1.health_pb2_grpc")

SLOW = hd_harness.SLOW
RPC_TIMEOUT = 10.0 * SLOW
HANDLERCTL = os.environ.get("HANDLERCTL_BIN")
SERVING = health_pb2.HealthCheckResponse.SERVING

NOFILE = 256        # handlerd's open-files limit, soft and hard
N_FLOOD = 400       # connections opened at once: more than NOFILE
HEALTH_WITHIN_S = 5.0 * SLOW  # after the flood, `handlerctl health` answers
# The variables of the new settings: not inherited from the caller's
# environment, so each test sees the defaults it states.
NEW_VARS = ("HANDLERD_MAX_CONNECTIONS", "HANDLERD_IDLE_TIMEOUT",
            "HANDLERD_HANDSHAKE_TIMEOUT", "HANDLERD_KEEPALIVE_TIME")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_GOAWAY = 0x4, 0x7


def h2_frame(ftype, flags=0, payload=b"", stream=0):
    return (struct.pack(">I", len(payload))[1:] + bytes([ftype, flags])
            + struct.pack(">I", stream) + payload)


class Daemon(hd_harness.Handlerd):
    """hd_harness.Handlerd with variables of its own in its environment
    (`env`; None removes one) and, with `nofile` = (soft, hard), that
    open-files limit set in the child just before exec (handlerd only, not
    this test process)."""

    def __init__(self, extra_args=(), env=None, nofile=None):
        super().__init__(extra_args)
        self.env = dict(os.environ)
        for name in NEW_VARS:
            self.env.pop(name, None)
        for name, value in (env or {}).items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.nofile = nofile
        self.preexec_fn = self._preexec

    def _preexec(self):
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def start(self):
        super().start()
        self.port = int(self.address.rpartition(":")[2])
        return self

    def limits_line(self):
        m = re.search(r"INFO limits: (.*)", self.stderr_text())
        return m.group(1) if m else ""


def classify(socks):
    """How many of `socks` handlerd has closed (EOF or reset seen), reading
    without blocking whatever it sent before."""
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            while True:
                if not s.recv(65536):
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except OSError:  # reset
            closed += 1
    return closed


def wait_closed(sock, limit):
    """Reads `sock` (ignoring what arrives) until handlerd closes it or
    `limit` seconds pass. Returns (seconds until closed or None, the GOAWAY
    frames' debug data seen)."""
    t0 = time.monotonic()
    buf, goaways = b"", []
    while True:
        left = limit - (time.monotonic() - t0)
        if left <= 0:
            return None, goaways
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None, goaways
        except OSError:  # reset
            return time.monotonic() - t0, goaways
        if not data:
            return time.monotonic() - t0, goaways
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            if buf[3] == H2_GOAWAY:
                goaways.append(buf[9 + 8:9 + n])
            buf = buf[9 + n:]


def h2_handshake(port):
    """A raw TCP connection that has done its part of the HTTP/2 handshake
    (client preface, SETTINGS, and the ACK of the server's SETTINGS)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=RPC_TIMEOUT)
    s.sendall(H2_PREFACE + h2_frame(H2_SETTINGS))
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            raise AssertionError("handlerd closed the connection during "
                                 "the HTTP/2 handshake")
        buf += data
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ftype, flags = buf[3], buf[4]
            buf = buf[9 + n:]
            if ftype == H2_SETTINGS and not flags & 1:
                s.sendall(h2_frame(H2_SETTINGS, flags=1))  # ACK
                return s


def health_check(channel, timeout=RPC_TIMEOUT):
    return health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=timeout).status


def own_channel(address):
    """A channel with a TCP connection of its own: gRPC shares one
    connection between channels with the same target and arguments."""
    return grpc.insecure_channel(
        address, options=[("grpc.use_local_subchannel_pool", 1)])


class _Case(unittest.TestCase):

    def setUp(self):
        self.daemons = []
        self.closers = []

    def tearDown(self):
        for c in reversed(self.closers):
            try:
                c.close()
            except Exception:
                pass
        hd_harness.stop_all(self.daemons)

    def start(self, *args, env=None, nofile=None):
        d = Daemon(list(args), env=env, nofile=nofile)
        self.daemons.append(d)
        return d.start()

    def channel(self, d):
        ch = own_channel(d.address)
        self.closers.append(ch)
        return ch

    def handlerctl_health(self, d, within):
        """Runs `handlerctl health` against `d` until it succeeds or `within`
        seconds have passed (each run's deadline is the time left), as a
        supervisor's health check would; returns (exit status of the last
        run, its output, seconds taken, runs)."""
        if not HANDLERCTL:
            hd_harness.require_or_skip("HANDLERCTL_BIN is not set (no "
                                       "handlerctl built)")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("HANDLERD_")}
        t0 = time.monotonic()
        runs = 0
        while True:
            left = within - (time.monotonic() - t0)
            runs += 1
            p = subprocess.run([HANDLERCTL, "--addr", d.address,
                                "--timeout-ms",
                                str(max(100, int(left * 1000))), "health"],
                               capture_output=True, text=True, env=env,
                               timeout=within + 30)
            took = time.monotonic() - t0
            if p.returncode == 0 or took + 0.1 >= within:
                return p.returncode, p.stdout + p.stderr, took, runs
            time.sleep(0.1)


class TestFlood(_Case):
    """ulimit -n 256 (soft and hard), 400 connections at once, closed: the
    listener still accepts and `handlerctl health` answers within 5 s."""

    def flood(self, d, min_closed):
        """Opens N_FLOOD connections at once, waits until handlerd has
        closed at least `min_closed` of them (those it cannot or will not
        keep), closes them all; returns how many handlerd closed."""
        socks = []
        try:
            for _ in range(N_FLOOD):
                socks.append(socket.create_connection(
                    ("127.0.0.1", d.port), timeout=RPC_TIMEOUT))
            deadline = time.monotonic() + 5.0 * SLOW
            while True:
                time.sleep(0.2)
                closed = classify(socks)
                if closed >= min_closed or time.monotonic() > deadline:
                    return closed
        finally:
            for s in socks:
                s.close()

    def check_flood(self, env, want_max, why):
        """`want_max`: the --max-connections expected, None for half the
        open-files limit."""
        d = self.start(env=env, nofile=(NOFILE, NOFILE))
        before = self.handlerctl_health(d, HEALTH_WITHIN_S)
        self.assertEqual(before[0], 0, "health before the flood: %r" % (
            before,))
        # At most NOFILE descriptors can hold a connection: the rest must be
        # closed by handlerd, not left waiting in the listen backlog.
        kept = min(want_max or NOFILE // 2, NOFILE)
        shed = self.flood(d, N_FLOOD - kept)

        rc, out, took, runs = self.handlerctl_health(d, HEALTH_WITHIN_S)
        log = d.stderr_text()
        print("\n%s: %d of %d connections closed by handlerd; health after "
              "the flood: exit %d in %.2f s (%d runs)"
              % (why, shed, N_FLOOD, rc, took, runs), file=sys.stderr)
        self.assertIsNone(d.proc.poll(), "handlerd exited during the flood"
                          "\n" + log)
        self.assertEqual(rc, 0, "`handlerctl health` after %d connections "
                         "(ulimit -n %d) failed in %.1f s: %s\n%s"
                         % (N_FLOOD, NOFILE, took, out, log))
        self.assertLess(took, HEALTH_WITHIN_S)
        # And again: the listener keeps accepting.
        ch = self.channel(d)
        self.assertEqual(health_check(ch), SERVING)
        stub = pb_grpc.HandlersStub(ch)
        stub.AddHandler(pb.AddHandlerRequest(
            key="k", target=pb.Target(local="count")), timeout=RPC_TIMEOUT)
        self.assertEqual(len(stub.Dispatch(
            hd_harness.update_request(pb, "k"),
            timeout=RPC_TIMEOUT).results), 1)

        self.assertGreaterEqual(shed, N_FLOOD - kept,
                                "connections handlerd could not keep were "
                                "left waiting instead of closed\n" + log)
        m = re.search(r"open files: limit (\d+) \(hard limit (\d+)\)", log)
        self.assertTrue(m, "no 'open files: limit N (hard limit N)' line\n"
                        + log)
        soft, hard = int(m.group(1)), int(m.group(2))
        if hd_harness.WRAPPER:  # valgrind keeps a few descriptors for itself
            self.assertLessEqual((soft, hard), (NOFILE, NOFILE))
        else:
            self.assertEqual((soft, hard), (NOFILE, NOFILE))
        if want_max is None:  # derived: half the limit
            want_max = soft // 2
        self.assertIn("max-connections %d," % want_max, d.limits_line())
        self.assertIn("closing new connections: %s" % why, log)
        self.assertIsNone(d.proc.poll(), "handlerd exited\n" + log)

    def test_flood_with_derived_max_connections(self):
        # Default --max-connections: half the open-files limit.
        self.check_flood({}, None, "--max-connections reached")

    def test_flood_past_the_open_files_limit(self):
        # --max-connections far above the descriptors: accept4() runs out
        # (EMFILE) and the waiting connections are closed instead.
        self.check_flood({"HANDLERD_MAX_CONNECTIONS": "100000"}, 100000,
                         "out of file descriptors")

    @unittest.skipIf(hd_harness.WRAPPER,
                     "HD_IT_WRAPPER is set: valgrind shows handlerd its own "
                     "soft limit as the hard limit, nothing to raise")
    def test_soft_limit_raised_to_the_hard_limit(self):
        d = self.start(nofile=(64, NOFILE))
        with open("/proc/%d/limits" % d.proc.pid) as f:
            row = [l for l in f if l.startswith("Max open files")][0]
        self.assertEqual(row.split()[3:5], [str(NOFILE), str(NOFILE)],
                         "handlerd's soft limit was not raised: " + row)
        self.assertIn("open files: soft limit raised from 64 to the hard "
                      "limit %d" % NOFILE, d.stderr_text())
        self.assertIn("max-connections %d," % (NOFILE // 2),
                      d.limits_line())


class TestMaxConnections(_Case):

    def test_sixth_connection_closed_first_five_served(self):
        d = self.start(env={"HANDLERD_MAX_CONNECTIONS": "5"})
        first = [self.channel(d) for _ in range(5)]
        for ch in first:
            self.assertEqual(health_check(ch), SERVING)
        sixth = self.channel(d)
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            health_check(sixth, timeout=5.0 * SLOW)
        took = time.monotonic() - t0
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE,
                         "6th connection with --max-connections 5: %s %r"
                         % (cm.exception.code(), cm.exception.details()))
        self.assertLess(took, 4.0 * SLOW, "refusal took %.1f s" % took)
        for i, ch in enumerate(first):  # the first five are still served
            self.assertEqual(health_check(ch), SERVING, "connection %d" % i)
        log = d.stderr_text()
        self.assertIn("closing new connections: --max-connections reached",
                      log)
        self.assertIn("max-connections 5,", d.limits_line())

        # Once they are closed, new connections are served again.
        for ch in first:
            ch.close()
        sixth.close()
        deadline = time.monotonic() + 5.0 * SLOW
        for i in range(5):
            while True:
                ch = self.channel(d)
                try:
                    self.assertEqual(health_check(ch, timeout=2.0 * SLOW),
                                     SERVING)
                    break
                except grpc.RpcError as e:
                    ch.close()
                    if time.monotonic() > deadline:
                        self.fail("new connection %d refused after the "
                                  "first five closed: %s %r\n%s"
                                  % (i, e.code(), e.details(),
                                     d.stderr_text()))
                    time.sleep(0.1)


class TestTimeouts(_Case):

    def test_idle_connection_closed(self):
        d = self.start(env={"HANDLERD_IDLE_TIMEOUT": "1s"})
        # A raw connection that completed the HTTP/2 handshake, then
        # nothing: GOAWAY and the end of the connection.
        s = h2_handshake(d.port)
        self.closers.append(s)
        took, goaways = wait_closed(s, 1.0 + 4.0 * SLOW)
        self.assertIsNotNone(took, "idle HTTP/2 connection still open "
                             "%.0f s after it went idle (--idle-timeout 1s)"
                             % (1.0 + 4.0 * SLOW))
        self.assertGreater(took, 0.8, "closed before it was idle 1 s")
        self.assertTrue(goaways, "closed without a GOAWAY")

        # A gRPC channel after one call: the server ends the connection and
        # the channel leaves READY (a new call reconnects).
        states = []
        ch = self.channel(d)
        self.assertEqual(health_check(ch), SERVING)
        ch.subscribe(states.append, try_to_connect=False)
        t0 = time.monotonic()
        while (time.monotonic() - t0 < 1.0 + 4.0 * SLOW
               and states[-1:] != [grpc.ChannelConnectivity.IDLE]):
            time.sleep(0.05)
        self.assertEqual(states[-1:], [grpc.ChannelConnectivity.IDLE],
                         "channel states after one call: %r" % states)
        self.assertIn(grpc.ChannelConnectivity.READY, states)
        self.assertEqual(health_check(ch), SERVING)
        self.assertIn("idle-timeout 1000 ms,", d.limits_line())

    def test_handshake_timeout_closes_silent_connection(self):
        d = self.start(env={"HANDLERD_HANDSHAKE_TIMEOUT": "1s"})
        s = socket.create_connection(("127.0.0.1", d.port),
                                     timeout=RPC_TIMEOUT)
        self.closers.append(s)
        took, goaways = wait_closed(s, 1.0 + 4.0 * SLOW)  # sends nothing
        self.assertIsNotNone(took, "a connection that sent nothing is "
                             "still open after %.0f s (--handshake-timeout "
                             "1s)" % (1.0 + 4.0 * SLOW))
        self.assertGreater(took, 0.8, "closed before the handshake timeout")
        # A client that does its handshake in time is served.
        s2 = h2_handshake(d.port)
        self.closers.append(s2)
        self.assertEqual(wait_closed(s2, 1.5)[0], None,
                         "a connection that finished its handshake was "
                         "closed")
        self.assertEqual(health_check(self.channel(d)), SERVING)
        self.assertIn("handshake-timeout 1000 ms,", d.limits_line())


class TestFlags(_Case):

    def test_flags_spelled_as_documented(self):
        # The same settings as flags (the tests above use the variables).
        d = self.start("--max-connections", "7", "--idle-timeout", "2s",
                       "--handshake-timeout", "1500ms", "--keepalive-time",
                       "30s")
        line = d.limits_line()
        for want in ("max-connections 7,", "idle-timeout 2000 ms,",
                     "handshake-timeout 1500 ms,",
                     "keepalive-time 30000 ms,"):
            self.assertIn(want, line)


if __name__ == "__main__":
    hd_harness.main()
