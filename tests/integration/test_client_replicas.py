"""handlerctl across several replicas: `--addr A,B` (and HANDLERD_ADDR)
with two real handlerd processes on 127.0.0.1, each with its own in-memory
state.

* the calls of one address list are spread over both replicas (gRPC's
  round_robin), as each replica's own registrations and its ListHandlers
  counter show;
* with one replica killed (SIGKILL), health and list through the list keep
  succeeding, every time;
* a bad address list is a usage error (exit 2) naming the address at
  fault; a list of replicas that are all down is UNAVAILABLE (exit 3).

Run by CTest as `/usr/bin/python3 tests/integration/test_client_replicas.py`.
Standard library only (plus hd_harness and its generated modules).
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
from hd_harness import clean_env, run_handlerctl  # noqa: E402
from webhook_receiver import closed_port  # noqa: E402

EXIT_OK, EXIT_RPC, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
TIMEOUT = 10.0
LIST_METHOD = "handlers.v1.Handlers/ListHandlers"

if not hd_harness.HANDLERCTL:
    # Not a pass: fails with CI=true, else a loud skip (exit SKIP_EXIT).
    hd_harness.require_or_skip("HANDLERCTL_BIN is not set (no handlerctl "
                               "target when cmake ran: build client/ and "
                               "re-run cmake)", whole_suite=True)

grpc, pb, pb_grpc = hd_harness.import_grpc("test_client_replicas")


class ReplicasCase(hd_harness.StateDirCase):
    """Two handlerd replicas (self.a, self.b: Daemons, in-memory state),
    and self.addrs = "A,B"."""

    def setUp(self):
        super().setUp()
        self.a = self.start([])
        self.b = self.start([])
        self.addrs = "%s,%s" % (self.a.h.address, self.b.h.address)

    def cli(self, *args, addrs=None, check=None):
        """handlerctl --addr ADDRS (self.addrs unless given) ARGS."""
        return run_handlerctl(["--addr", addrs or self.addrs] + list(args),
                              check=check)

    def listed_keys(self, addrs=None):
        """The keys one `list` through `addrs` shows (exit 0 checked)."""
        p = self.cli("-o", "json", "list", addrs=addrs, check=EXIT_OK)
        return {h["key"] for h in json.loads(p.stdout)["handlers"]}

    @staticmethod
    def add_local(daemon, key, function="echo"):
        """Registers `function` under `key` on that one replica, directly."""
        return daemon.stub.AddHandler(hd_harness.add_request(
            pb, key, target=pb.Target(local=function)),
            timeout=TIMEOUT).handler_id

    @staticmethod
    def list_calls(daemon):
        """How many ListHandlers calls that replica answered OK."""
        reply = daemon.stub.GetStats(pb.GetStatsRequest(), timeout=TIMEOUT)
        return sum(s.value for s in reply.samples
                   if s.name == "handlerd_grpc_calls_total"
                   and s.labels.get("method", "").endswith(LIST_METHOD)
                   and s.labels.get("code") == "OK")


class TestSpread(ReplicasCase):

    def test_list_calls_reach_both_replicas(self):
        """Each replica holds its own key; `list` through A,B shows one
        replica's per call, and over the calls both (round robin). Both
        replicas' ListHandlers counters grow."""
        self.add_local(self.a, "replica-a")
        self.add_local(self.b, "replica-b")
        before = (self.list_calls(self.a), self.list_calls(self.b))
        seen = []
        for _ in range(40):
            keys = self.listed_keys()
            # One call, one replica: never both keys, never none.
            self.assertIn(keys, ({"replica-a"}, {"replica-b"}), seen)
            seen.append(sorted(keys)[0])
            if len(set(seen)) == 2 and len(seen) >= 6:
                break
        self.assertEqual(set(seen), {"replica-a", "replica-b"},
                         "40 list calls through %s reached one replica "
                         "only: %s" % (self.addrs, seen))
        want = (before[0] + seen.count("replica-a"),
                before[1] + seen.count("replica-b"))
        hd_harness.eventually(
            lambda: (self.list_calls(self.a), self.list_calls(self.b)) == want,
            5, "ListHandlers counters of A and B at %s" % (want,),
            lambda: (self.list_calls(self.a), self.list_calls(self.b)))

    def test_env_and_both_orders(self):
        """HANDLERD_ADDR takes the list too; so does B,A."""
        self.add_local(self.a, "replica-a")
        self.add_local(self.b, "replica-b")
        p = run_handlerctl(["-o", "json", "list"], addr=self.addrs,
                           check=EXIT_OK)
        self.assertEqual(len(json.loads(p.stdout)["handlers"]), 1, p.stdout)
        reversed_addrs = "%s,%s" % (self.b.h.address, self.a.h.address)
        self.cli("health", addrs=reversed_addrs, check=EXIT_OK)
        self.assertIn(self.listed_keys(reversed_addrs),
                      ({"replica-a"}, {"replica-b"}))

    def test_dispatch_through_the_list(self):
        """A call that is never retried (Dispatch) works through the list
        too, whichever replica answers."""
        for d in (self.a, self.b):
            self.add_local(d, "shared")
        for _ in range(4):
            p = self.cli("-o", "json", "dispatch", "--key", "shared",
                         "--event", "update", "--topic", "prices/eur",
                         "--value", "1", check=EXIT_OK)
            results = json.loads(p.stdout)["results"]
            self.assertEqual(len(results), 1, p.stdout)
            self.assertTrue(results[0]["ok"], p.stdout)

    def test_single_address_unchanged(self):
        """One HOST:PORT still reaches that replica alone."""
        self.add_local(self.a, "replica-a")
        for _ in range(3):
            self.assertEqual(self.listed_keys(self.a.h.address),
                             {"replica-a"})


class TestOneReplicaDown(ReplicasCase):

    def test_health_and_list_survive_a_killed_replica(self):
        """SIGKILL one replica (the first of the list): health and list
        through A,B succeed 10 times in a row, answered by B."""
        self.add_local(self.b, "replica-b")
        # Both were serving before.
        self.cli("health", check=EXIT_OK)
        self.a.kill9()
        for i in range(10):
            with self.subTest(call=i):
                p = self.cli("health")
                self.assertEqual(p.returncode, EXIT_OK, p.stderr)
                self.assertEqual(p.stdout, "")
                p = self.cli("-o", "json", "health", check=EXIT_OK)
                self.assertEqual(json.loads(p.stdout)["status"], "SERVING")
                self.assertEqual(self.listed_keys(), {"replica-b"})

    def test_second_replica_killed(self):
        """The same with the last of the list down."""
        self.add_local(self.a, "replica-a")
        self.b.kill9()
        for i in range(10):
            with self.subTest(call=i):
                self.cli("health", check=EXIT_OK)
                self.assertEqual(self.listed_keys(), {"replica-a"})

    def test_all_replicas_down_is_unavailable(self):
        """Every replica of the list down: exit 3, UNAVAILABLE, naming the
        list."""
        addrs = "127.0.0.1:%d,127.0.0.1:%d" % (closed_port(), closed_port())
        for args in (["health"], ["list"]):
            with self.subTest(args=args):
                p = self.cli(*args, addrs=addrs)
                self.assertEqual(p.returncode, EXIT_UNREACHABLE, p.stderr)
                self.assertIn("UNAVAILABLE", p.stderr)
                self.assertIn(addrs, p.stderr)


class TestBadLists(unittest.TestCase):
    """Address lists handlerctl refuses before connecting: exit 2, nothing on
    stdout, one line on stderr naming the address at fault."""

    CASES = [
        ("127.0.0.1:7001,,127.0.0.1:7002", "address 2 of"),
        ("127.0.0.1:7001,", "is empty"),
        ("127.0.0.1:7001, 127.0.0.1:7002", "' 127.0.0.1:7002'"),
        ("127.0.0.1:7001,127.0.0.1", "'127.0.0.1' has no port"),
        ("127.0.0.1:7001,127.0.0.1:http", "bad port 'http'"),
        ("localhost:7001,localhost:7002", "'localhost:7001' is a host name"),
        ("127.0.0.1:7001,[::1]:7002", "mixes IPv4 and IPv6"),
        ("::1:7001,::1:7002", "brackets"),
        (",".join("127.0.0.1:%d" % p for p in range(7001, 7034)),
         "lists 33 addresses: at most 32"),
    ]

    def check(self, p, text, where):
        self.assertEqual(p.returncode, EXIT_USAGE, p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertIn(text, p.stderr)
        self.assertTrue(p.stderr.startswith("handlerctl: bad %s: " % where),
                        p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)

    def test_flag(self):
        for addrs, text in self.CASES:
            for args in (["health"], ["list"], ["-o", "json", "stats"]):
                with self.subTest(addrs=addrs, args=args):
                    p = run_handlerctl(["--addr", addrs] + args)
                    self.check(p, text, "--addr")

    def test_env(self):
        for addrs, text in self.CASES:
            with self.subTest(addrs=addrs):
                p = run_handlerctl(["list"],
                                   env=clean_env(HANDLERD_ADDR=addrs))
                self.check(p, text, "HANDLERD_ADDR")

    def test_help_names_the_list(self):
        p = run_handlerctl(["--help"], check=EXIT_OK)
        self.assertIn("IP:PORT,IP:PORT", p.stdout)


if __name__ == "__main__":
    hd_harness.main()
