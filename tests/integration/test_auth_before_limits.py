"""Authentication before limits (issue 11, section 3).

With --token-file --auth-dispatch, unauthenticated grpc.health.v1.Health/
Watch streams used to fill --max-calls, and then authenticated Dispatch,
ListHandlers and even Health/Check got RESOURCE_EXHAUSTED. Now a call
without the token is refused UNAUTHENTICATED before it counts against any
limit, and Health/Watch streams have a cap of their own
(--max-health-watches) outside --max-calls.

--max-health-watches is given as HANDLERD_MAX_HEALTH_WATCHES: a handlerd
that does not know it ignores it and serves, so there the test fails on the
lock-out it checks, not on a usage error.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

(grpc, pb, pb_grpc, health_pb2, health_pb2_grpc) = hd_harness.import_grpc(
    "test_auth_before_limits",
    "grpc_health_v1.health_pb2",
    "grpc_health_v1.health_pb2_grpc")

SLOW = hd_harness.SLOW
RPC_TIMEOUT = 10.0 * SLOW
HELD = 60.0 * SLOW  # client deadline of the calls kept open
SERVING = health_pb2.HealthCheckResponse.SERVING
TOKEN = "limits-token-5d2e"
MAX_CALLS = 50
MAX_WATCHES = 20
N_WATCHES = 200
N_UNAUTH_STREAMS = 100
N_CHANNELS = 4


def bearer(token=TOKEN):
    return (("authorization", "Bearer " + token),)


def update(key="k"):
    return hd_harness.update_request(pb, key, json_value='{"v":1}')


class TestAuthBeforeLimits(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hd-authlim-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        token_file = os.path.join(self.tmp, "token")
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(TOKEN + "\n")
        saved = os.environ.get("HANDLERD_MAX_HEALTH_WATCHES")
        os.environ["HANDLERD_MAX_HEALTH_WATCHES"] = str(MAX_WATCHES)
        try:
            self.h = hd_harness.Handlerd([
                "--token-file", token_file, "--auth-dispatch",
                "--max-calls", str(MAX_CALLS)]).start()
        finally:
            if saved is None:
                os.environ.pop("HANDLERD_MAX_HEALTH_WATCHES", None)
            else:
                os.environ["HANDLERD_MAX_HEALTH_WATCHES"] = saved
        self.addCleanup(self.h.stop)  # asserts exit status 0 after SIGTERM
        self.channels = [grpc.insecure_channel(
            self.h.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(N_CHANNELS)]
        for ch in self.channels:
            self.addCleanup(ch.close)
            grpc.channel_ready_future(ch).result(timeout=RPC_TIMEOUT)
        self.stubs = [pb_grpc.HandlersStub(ch) for ch in self.channels]
        self.health = [health_pb2_grpc.HealthStub(ch)
                       for ch in self.channels]

    def authenticated_calls(self):
        """Dispatch, ListHandlers and Health/Check with the token: each
        one's outcome, "OK" or (code, details)."""
        out = {}
        for name, fn in (
                ("Dispatch", lambda: self.stubs[0].Dispatch(
                    update(), metadata=bearer(), timeout=RPC_TIMEOUT)),
                ("ListHandlers", lambda: self.stubs[1].ListHandlers(
                    pb.ListHandlersRequest(), metadata=bearer(),
                    timeout=RPC_TIMEOUT)),
                ("Health/Check", lambda: self.health[2].Check(
                    health_pb2.HealthCheckRequest(), metadata=bearer(),
                    timeout=RPC_TIMEOUT))):
            try:
                out[name] = ("OK", fn())
            except grpc.RpcError as e:
                out[name] = (e.code(), e.details())
        return out

    def test_unauthenticated_flood_does_not_lock_out(self):
        self.stubs[0].AddHandler(pb.AddHandlerRequest(
            key="k", target=pb.Target(local="count")), metadata=bearer(),
            timeout=RPC_TIMEOUT)
        gate = threading.Event()
        self.addCleanup(gate.set)

        # 200 Health/Watch streams without a token, all at once.
        watches = [self.health[i % N_CHANNELS].Watch(
            health_pb2.HealthCheckRequest(), timeout=HELD)
            for i in range(N_WATCHES)]
        for w in watches:
            self.addCleanup(w.cancel)
        watch_out = []
        for w in watches:
            try:
                watch_out.append(("OK", next(w).status))
            except grpc.RpcError as e:
                watch_out.append((e.code(), e.details()))

        # 100 DispatchStreams without a token that would stay open (their
        # request stream waits for the gate): refused at once.
        def held():
            yield update()
            gate.wait(HELD)

        t0 = time.monotonic()
        unauth = [self.stubs[i % N_CHANNELS].DispatchStream(
            held(), timeout=HELD) for i in range(N_UNAUTH_STREAMS)]
        for s in unauth:
            self.addCleanup(s.cancel)
        unauth_out = []
        for s in unauth:
            try:
                unauth_out.append(("OK", next(s)))
            except grpc.RpcError as e:
                unauth_out.append((e.code(), e.details()))
        unauth_took = time.monotonic() - t0

        # With all of that open, the authenticated calls still go through.
        auth = self.authenticated_calls()

        summary = {}
        for what, outs in (("watch", watch_out),
                           ("unauthenticated stream", unauth_out)):
            for o in outs:
                key = "%s %s" % (what, o[0] if o[0] != "OK" else
                                 "OK %r" % (o[1],))
                summary[key] = summary.get(key, 0) + 1
        print("\n%r; unauthenticated streams ended within %.2f s; "
              "authenticated: %r" % (summary, unauth_took,
                                     {k: v[0] for k, v in auth.items()}),
              file=sys.stderr)
        log = self.h.stderr_text()

        for name, out in auth.items():
            self.assertEqual(out[0], "OK", "authenticated %s with %d "
                             "unauthenticated Watch streams open: %r\n%s"
                             % (name, N_WATCHES, out, log))
        self.assertEqual(len(auth["Dispatch"][1].results), 1)
        self.assertEqual(auth["ListHandlers"][1].handlers[0].key, "k")
        self.assertEqual(auth["Health/Check"][1].status, SERVING)

        for i, out in enumerate(unauth_out):
            self.assertEqual(out[0], grpc.StatusCode.UNAUTHENTICATED,
                             "DispatchStream %d without a token: %r"
                             % (i, out))
        self.assertLess(unauth_took, 5.0 * SLOW,
                        "unauthenticated streams refused only after %.1f s"
                        % unauth_took)

        served = [o for o in watch_out if o[0] == "OK"]
        self.assertEqual(served, [("OK", SERVING)] * MAX_WATCHES,
                         "Watch streams served: %d, --max-health-watches %d"
                         % (len(served), MAX_WATCHES))
        refused = [o for o in watch_out if o[0] != "OK"]
        self.assertEqual(len(refused), N_WATCHES - MAX_WATCHES)
        for out in refused:
            self.assertEqual(out[0], grpc.StatusCode.RESOURCE_EXHAUSTED, out)
            self.assertIn("--max-health-watches", out[1])
            self.assertIn("limit %d" % MAX_WATCHES, out[1])

        # The served Watch streams are still open, and --max-calls is all
        # the RPCs': MAX_CALLS authenticated streams are served...
        def held_ok():
            yield update()
            gate.wait(HELD)

        streams = [self.stubs[i % N_CHANNELS].DispatchStream(
            held_ok(), metadata=bearer(), timeout=HELD)
            for i in range(MAX_CALLS)]
        for s in streams:
            self.addCleanup(s.cancel)
        for i, s in enumerate(streams):
            try:
                r = next(s)
            except grpc.RpcError as e:
                self.fail("authenticated stream %d of %d (--max-calls %d, "
                          "%d Watch streams open): %s %r"
                          % (i + 1, MAX_CALLS, MAX_CALLS, MAX_WATCHES,
                             e.code(), e.details()))
            self.assertEqual((r.code, len(r.results)), (0, 1))
        # ...and one more is refused, naming the flag.
        with self.assertRaises(grpc.RpcError) as cm:
            self.stubs[0].Dispatch(update(), metadata=bearer(),
                                   timeout=RPC_TIMEOUT)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("--max-calls", cm.exception.details())
        # Even then a caller without the token hears UNAUTHENTICATED.
        with self.assertRaises(grpc.RpcError) as cm:
            self.stubs[0].ListHandlers(pb.ListHandlersRequest(),
                                       timeout=RPC_TIMEOUT)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.UNAUTHENTICATED)
        for i, (w, out) in enumerate(zip(watches, watch_out)):
            if out[0] == "OK" and not w.is_active():  # still open?
                self.fail("served Watch stream %d ended: %s"
                          % (i, w.code()))
        self.assertIsNone(self.h.proc.poll())
        self.assertIn("max-health-watches %d," % MAX_WATCHES, log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
