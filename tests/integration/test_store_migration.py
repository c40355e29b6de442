"""handlerd on a database written by the release before the store's own
format (tests/fixtures/handlerd-v1.db, schema 1: AddHandlerRequest rows):
it starts, migrates the file to schema 3 (1 -> 2 -> 3 in one transaction:
the store's own records, then the outbox journal's empty tables), lists
every registration as the old release did, and its handlers, local and
webhook, answer Dispatch with the settings they were registered with; a
second start reads schema 3.

Run by CTest as `/usr/bin/python3 tests/integration/test_store_migration.py`
with HANDLERD_BIN and HD_PY_GEN set (see CMakeLists.txt).
"""

import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
import webhook_receiver as wr  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_store_migration")

RPC_TIMEOUT = 10.0
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                        "fixtures")


def describe(t):
    """ListHandlers' target text for a manifest target."""
    if "local" in t:
        return "local:" + t["local"]
    return "webhook:" + t["webhook"]["url"]


class TestMigration(unittest.TestCase):

    def setUp(self):
        with open(os.path.join(FIXTURES, "handlerd-v1.json")) as f:
            self.manifest = json.load(f)
        self.state = tempfile.mkdtemp(prefix="hd-py-migr-")
        self.addCleanup(shutil.rmtree, self.state, True)
        self.db = os.path.join(self.state, "handlerd.db")
        shutil.copyfile(os.path.join(FIXTURES, "handlerd-v1.db"), self.db)
        os.chmod(self.db, 0o600)
        os.chmod(self.state, 0o700)

    def start(self):
        h = hd_harness.Handlerd(["--state-dir", self.state]).start()
        self.addCleanup(lambda: h.proc is not None and h.stop())
        ch = grpc.insecure_channel(h.address)
        self.addCleanup(ch.close)
        return h, pb_grpc.HandlersStub(ch)

    def query(self, sql):
        con = sqlite3.connect(self.db)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def user_version(self):
        return self.query("PRAGMA user_version")[0][0]

    def journal_schema(self):
        """The journal's tables and indexes in the file, by name."""
        return sorted(r[0] for r in self.query(
            "SELECT name FROM sqlite_master WHERE name IN ('deliveries',"
            " 'attempts', 'endpoints', 'deliveries_unfinished',"
            " 'deliveries_handler', 'deliveries_key', 'deliveries_finished')"))

    def check_list(self, stub):
        regs = {e["id"]: e for e in self.manifest["registrations"]}
        listed = stub.ListHandlers(pb.ListHandlersRequest(),
                                   timeout=RPC_TIMEOUT).handlers
        self.assertEqual([h.handler_id for h in listed],
                         self.manifest["listed"])
        for h in listed:
            e = regs[h.handler_id]
            self.assertEqual(h.key, e["key"])
            self.assertEqual(list(h.events), e["events"])
            if e["routes"]:
                self.assertEqual(h.kind, pb.EVENT_STREAM)
                self.assertEqual(dict(h.routes),
                                 {n: describe(t) for n, t in e["routes"]})
            else:
                self.assertEqual(h.kind, pb.SIMPLE)
                self.assertEqual(h.target, describe(e["target"]))
                self.assertEqual(h.secret_set,
                                 bool(e["target"].get("webhook", {})
                                      .get("secret")))

    def check_dispatch(self, stub):
        # Local handlers: echo answers for every event, count only for
        # update and close (its event filter came through).
        local = [e["id"] for e in self.manifest["registrations"]
                 if e["key"] == "fx-local"]
        up = stub.Dispatch(hd_harness.update_request(pb, "fx-local",
                                                     json_value='{"a":1}'),
                           timeout=RPC_TIMEOUT)
        self.assertEqual([r.handler_id for r in up.results], local)
        self.assertTrue(all(r.ok for r in up.results), up)
        sub = stub.Dispatch(pb.DispatchRequest(
            key="fx-local", event="subscribe",
            subscribe=pb.SubHandlerArgs(topic_path="x")), timeout=RPC_TIMEOUT)
        self.assertEqual([r.handler_id for r in sub.results], local[:1])
        # The event stream's local route.
        err = stub.Dispatch(pb.DispatchRequest(
            key="fx-stream", event="error", error=pb.ErrorArgs(code=1)),
            timeout=RPC_TIMEOUT)
        self.assertEqual([(r.ok, r.value.int64_value) for r in err.results],
                         [(True, 1)])

    def check_webhooks(self, stub, rx):
        """The webhooks deliver to the fixture's fixed port with their
        secrets (the given one and the generated one), headers and mode."""
        hooks = [e for e in self.manifest["registrations"]
                 if e["key"] == "fx-hook"]
        rx.clear()
        reply = stub.Dispatch(hd_harness.update_request(
            pb, "fx-hook", path="after/migration", json_value='{"m":2}'),
            timeout=RPC_TIMEOUT)
        self.assertEqual([r.handler_id for r in reply.results],
                         [e["id"] for e in hooks])
        self.assertTrue(all(r.ok for r in reply.results), reply)
        got = rx.requests("/hook")
        self.assertEqual(len(got), 1, got)
        w = hooks[0]["target"]["webhook"]
        self.assertIsNone(wr.signature_problem(w["secret"], got[0]))
        self.assertEqual(got[0].header("x-fixture"), "v1")
        self.assertEqual(got[0].header("authorization"), "Bearer fx")
        self.assertEqual(got[0].header("ce-subject"), "after/migration")
        got = rx.requests("/new-secret")
        self.assertEqual(len(got), 1, got)
        self.assertIsNone(wr.signature_problem(
            hooks[1]["target"]["webhook"]["secret"], got[0]))

    def receiver(self):
        """A receiver on the fixture's fixed port, or None if taken."""
        rx = wr.Receiver()
        try:
            rx._httpd = wr._Server(("127.0.0.1", self.manifest["fixed_port"]),
                                   wr._Handler)
        except OSError as e:
            hd_harness.require_or_skip("port %d is taken (%s): the restored "
                                       "webhooks cannot be checked"
                                       % (self.manifest["fixed_port"], e))
        rx._httpd.receiver = rx
        rx.port = self.manifest["fixed_port"]
        rx._thread = threading.Thread(target=rx._httpd.serve_forever,
                                      kwargs={"poll_interval": 0.05},
                                      daemon=True)
        rx._thread.start()
        self.addCleanup(rx.stop)
        return rx

    def test_release_database_is_migrated_and_served(self):
        self.assertEqual(self.user_version(), 1)
        self.assertEqual(self.journal_schema(), [])
        h, stub = self.start()
        self.assertIn("migrated from schema 1 to 3", h.stderr_text())
        self.assertEqual(self.user_version(), 3)
        # The journal's three tables and four indexes, empty.
        self.assertEqual(self.journal_schema(), [
            "attempts", "deliveries", "deliveries_finished",
            "deliveries_handler", "deliveries_key", "deliveries_unfinished",
            "endpoints"])
        for table in ("deliveries", "attempts", "endpoints"):
            self.assertEqual(self.query("SELECT count(*) FROM " + table),
                             [(0,)])
        self.check_list(stub)
        self.check_dispatch(stub)
        h.stop()
        # Schema 3 on the second start: no migration, the same answers.
        h, stub = self.start()
        self.assertNotIn("migrated", h.stderr_text())
        self.check_list(stub)
        self.check_dispatch(stub)
        h.stop()

    def test_restored_webhooks_keep_their_settings(self):
        rx = self.receiver()
        h, stub = self.start()
        self.check_webhooks(stub, rx)
        h.stop()


if __name__ == "__main__":
    hd_harness.main()
