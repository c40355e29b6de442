"""handlerd registrations that survive restarts (--state-dir, SQLite):
a clean restart, the database file's mode, the memory-only notice, and
kill -9 in the middle of a burst of AddHandler calls.

Run by CTest as `/usr/bin/python3 tests/integration/test_persistence.py`
with HANDLERD_BIN and HD_PY_GEN set (see CMakeLists.txt).
"""

import json
import os
import signal
import stat
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
import webhook_receiver as wr  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_persistence")

RPC_TIMEOUT = 10.0
DB_NAME = "handlerd.db"
KILL_ROUNDS = 3
BURST_BEFORE_KILL_S = 3.0 if hd_harness.WRAPPER else 1.0
BURST_THREADS = 4


class Daemon(hd_harness.Daemon):
    """A handlerd with a channel and stub, and ListHandlers."""

    def list(self, key=""):
        return self.stub.ListHandlers(pb.ListHandlersRequest(key=key),
                                      timeout=RPC_TIMEOUT).handlers


def info_tuple(h):
    return (h.key, h.handler_id, h.kind, h.target,
            tuple(sorted(h.routes.items())), tuple(h.events), h.secret_set)


class _StateDirCase(hd_harness.StateDirCase):
    """A state directory and a receiver (self.rx) per test; handlerd is
    started by start(args) (default: --state-dir) and closed when the
    test ends, without checking its exit status."""

    DAEMON = Daemon
    STRICT_STOP = False

    def setUp(self):
        super().setUp()
        self.rx = self.receiver()

    def add(self, d, key, target=None, routes=None, events=()):
        req = hd_harness.add_request(pb, key, target, routes, events)
        try:
            return d.stub.AddHandler(req, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            self.fail("AddHandler(%s): %s %s\n%s" % (key, e.code(),
                                                      e.details(),
                                                      d.stderr()[-4000:]))


class TestRestart(_StateDirCase):

    def test_restart_keeps_registrations(self):
        secret = wr.new_secret(32)
        path = "/persist"
        url = self.rx.url(path)
        self.rx.script(path, [(200, {}, '{"after":"restart"}', 0)])

        d = self.start()
        local_id = self.add(d, "p-local", pb.Target(local="count"),
                            events=["update", "close"]).handler_id
        hook_id = self.add(d, "p-hook", pb.Target(webhook=pb.Webhook(
            url=url, secret=secret, headers={"X-Persist": "yes"},
            timeout_ms=2000, max_attempts=3, binary_mode=True))).handler_id
        gone_id = self.add(d, "p-hook", pb.Target(local="echo")).handler_id
        echo_id = self.add(d, "p-hook", pb.Target(local="echo")).handler_id
        stream_id = self.add(d, "p-stream", routes={
            "update": pb.Target(webhook=pb.Webhook(url=url + "?s=1")),
            "error": pb.Target(local="count")}).handler_id
        d.stub.RemoveHandler(pb.RemoveHandlerRequest(key="p-hook",
                                                     handler_id=gone_id),
                             timeout=RPC_TIMEOUT)
        # count has state; after the restart it starts over (registrations
        # persist, function state does not) - only check it runs.
        before = [info_tuple(h) for h in d.list()]
        self.assertEqual([t[1] for t in before],
                         [hook_id, echo_id, local_id, stream_id])
        self.assertEqual(before[0][3], "webhook:" + url)
        self.assertTrue(before[0][6])

        db = os.path.join(self.state, DB_NAME)
        self.assertTrue(os.path.isfile(db), os.listdir(self.state))
        self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600,
                         "%s has mode %o" % (db, os.stat(db).st_mode))
        d.stop()
        self.assertNotIn(secret, d.stderr(), "secret in the log")
        self.assertNotIn(secret[6:], d.stderr(), "secret in the log")

        # Every file in the state dir holds registrations (and secrets):
        # none may be readable by group or others.
        for name in os.listdir(self.state):
            mode = stat.S_IMODE(os.stat(os.path.join(self.state,
                                                     name)).st_mode)
            self.assertEqual(mode & 0o077, 0, "%s has mode %o" % (name, mode))
        self.assertEqual(stat.S_IMODE(os.stat(db).st_mode), 0o600)

        d2 = self.start()
        after = [info_tuple(h) for h in d2.list()]
        self.assertEqual(after, before)
        self.assertEqual([info_tuple(h) for h in d2.list("p-hook")],
                         before[:2])
        # The removed handler stayed removed.
        self.assertNotIn(gone_id, [t[1] for t in after])

        # The webhook still works, with the same secret, headers and mode.
        reply = d2.stub.Dispatch(pb.DispatchRequest(
            key="p-hook", event="update", update=pb.UpdateArgs(
                topic_path="after/restart",
                topic_value=pb.TopicValue(int64_value=7))),
            timeout=RPC_TIMEOUT)
        self.assertEqual([r.handler_id for r in reply.results],
                         [hook_id, echo_id])
        res = reply.results[0]
        self.assertTrue(res.ok, res.error)
        self.assertEqual(json.loads(res.value.json_value),
                         {"after": "restart"})
        reqs = self.rx.requests(path)
        self.assertEqual(len(reqs), 1, reqs)
        r = reqs[0]
        self.assertIsNone(wr.signature_problem(secret, r))
        self.assertIsNotNone(wr.signature_problem(wr.new_secret(32), r))
        self.assertEqual(r.header("x-persist"), "yes")
        self.assertEqual(r.header("ce-subject"), "after/restart")  # binary
        self.assertEqual(json.loads(r.body)["topicValue"],
                         {"int64Value": "7"})

        # The event-stream routes and the local filter came back too.
        up = d2.stub.Dispatch(pb.DispatchRequest(
            key="p-stream", event="error",
            error=pb.ErrorArgs(code=1, description="x")),
            timeout=RPC_TIMEOUT)
        self.assertEqual([(x.ok, x.value.int64_value) for x in up.results],
                         [(True, 1)])
        sub = d2.stub.Dispatch(pb.DispatchRequest(
            key="p-local", event="subscribe",
            subscribe=pb.SubHandlerArgs(topic_path="x")),
            timeout=RPC_TIMEOUT)
        self.assertEqual(len(sub.results), 0, "event filter lost")

        # New ids do not collide with the restored ones.
        new_id = self.add(d2, "p-local", pb.Target(local="echo")).handler_id
        self.assertNotIn(new_id, [t[1] for t in before])

        # Results name the handler by the id AddHandler returned (and
        # ListHandlers shows), for a restored event-stream handler and a
        # restored handler with an event filter too.
        self.assertEqual(up.results[0].handler_id, stream_id,
                         "restored event-stream handler answers with an id "
                         "ListHandlers does not know")
        cl = d2.stub.Dispatch(pb.DispatchRequest(
            key="p-local", event="close",
            subscribe=pb.SubHandlerArgs(topic_path="x")),
            timeout=RPC_TIMEOUT)
        self.assertEqual([x.handler_id for x in cl.results],
                         [local_id, new_id],
                         "restored filtered handler answers with an id "
                         "ListHandlers does not know")
        d2.stop()

    def test_memory_only_without_state_dir(self):
        d = self.start(args=[])
        text = d.stderr()
        d.stop()
        self.assertIn("memory", text.lower(), text)
        # And with a state dir it does not say so.
        d2 = self.start()
        text2 = d2.stderr()
        d2.stop()
        self.assertNotIn("memory only", text2.lower(), text2)
        self.assertIn(self.state, text2, "state dir not named at start")


class TestKill9(_StateDirCase):

    def burst(self, d, rnd, stop, acked, errors, counter):
        """Adds handlers in a loop until `stop` is set or the daemon dies;
        appends (id, key, target, events) of every acknowledged AddHandler.
        Local handlers take only `error`, webhooks only `update`."""
        n = 0
        tid = threading.get_ident() % 100000
        while not stop.is_set():
            n += 1
            key = "burst-r%d-%d" % (rnd, n % 7)
            if n % 2:
                target = pb.Target(local="count")
                want, events = "local:count", ("error",)
            else:
                url = self.rx.url("/burst/%d/%d/%d" % (rnd, tid, n))
                target = pb.Target(webhook=pb.Webhook(
                    url=url, secret=wr.new_secret(24)))
                want, events = "webhook:" + url, ("update",)
            try:
                reply = d.stub.AddHandler(
                    pb.AddHandlerRequest(key=key, target=target,
                                         events=list(events)),
                    timeout=RPC_TIMEOUT)
            except grpc.RpcError as e:
                errors.append(e.code())
                if e.code() in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.CANCELLED,
                                grpc.StatusCode.DEADLINE_EXCEEDED):
                    return  # the daemon is gone
                continue
            except ValueError:  # channel closed under us
                return
            acked.append((reply.handler_id, key, want, events))
            with counter[1]:
                counter[0] += 1

    def one_round(self, rnd):
        d = self.start()
        acked, errors = [], []
        counter = [0, threading.Lock()]
        stop = threading.Event()
        threads = [threading.Thread(
            target=self.burst, args=(d, rnd, stop, acked, errors, counter))
            for _ in range(BURST_THREADS)]
        for t in threads:
            t.start()
        time.sleep(BURST_BEFORE_KILL_S)
        hd_harness.eventually(lambda: counter[0] >= 20, 10.0,
                              "20 AddHandler acknowledged before the kill")
        alive_before = sum(t.is_alive() for t in threads)
        n_before = counter[0]
        rc = d.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=RPC_TIMEOUT + 5)
            self.assertFalse(t.is_alive(), "burst thread stuck")
        self.assertEqual(rc, -signal.SIGKILL)
        self.assertEqual(alive_before, BURST_THREADS,
                         "burst ended before the kill: errors %r" % errors)
        self.assertGreaterEqual(n_before, 20,
                                "too few AddHandler acknowledged before the "
                                "kill (%d): not a burst" % n_before)
        unexpected = [c for c in errors
                      if c not in (grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.CANCELLED)]
        self.assertEqual(unexpected, [], "errors during the burst")
        ids = [a[0] for a in acked]
        self.assertEqual(len(set(ids)), len(ids), "duplicate ids acked")

        try:
            d2 = self.start()
        except hd_harness.HarnessError as e:
            self.fail("round %d: handlerd does not start on the state left "
                      "by kill -9: %s" % (rnd, e))
        prefix = "burst-r%d-" % rnd
        everything = d2.list()
        listed = {h.handler_id: h for h in everything
                  if h.key.startswith(prefix)}
        missing = [a for a in acked if a[0] not in listed]
        self.assertEqual(missing, [], "round %d: %d of %d acknowledged "
                         "registrations lost after kill -9"
                         % (rnd, len(missing), len(acked)))
        for hid, key, want, events in acked:
            h = listed[hid]
            self.assertEqual((h.key, h.kind, h.target, tuple(h.events),
                              h.secret_set),
                             (key, pb.SIMPLE, want, events,
                              want.startswith("webhook:")))
        # Earlier rounds' registrations are all still there too.
        for hid in self.earlier:
            self.assertIn(hid, [h.handler_id for h in everything])
        self.earlier.extend(ids)
        # At most the calls in flight at the kill were stored but not
        # acknowledged.
        self.assertLessEqual(len(listed), len(acked) + BURST_THREADS)
        all_ids = [h.handler_id for h in everything]
        self.assertEqual(len(all_ids), len(set(all_ids)), "duplicate ids")
        # The restored daemon serves: an `error` reaches exactly the restored
        # local handlers under the key (webhooks take only `update`).
        key = acked[0][1]
        reply = d2.stub.Dispatch(pb.DispatchRequest(
            key=key, event="error", error=pb.ErrorArgs(code=1)),
            timeout=RPC_TIMEOUT)
        want_ids = [h.handler_id for h in everything
                    if h.key == key and h.target == "local:count"]
        self.assertEqual(len(reply.results), len(want_ids))
        self.assertTrue(all(r.ok and r.value.int64_value == 1
                            for r in reply.results), reply)
        self.assertEqual([r.handler_id for r in reply.results], want_ids,
                         "restored handlers (events filter) answer with ids "
                         "that ListHandlers does not show")
        d2.stop()
        return len(acked)

    def test_kill9_during_add_burst(self):
        self.earlier = []
        for rnd in range(KILL_ROUNDS):
            with self.subTest(round=rnd):
                self.one_round(rnd)
            # Each round keeps building on the same state dir: the next
            # round's restart also loads the previous rounds' handlers.


if __name__ == "__main__":
    unittest.main(verbosity=2)
