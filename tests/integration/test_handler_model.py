"""The handler model, complete (issue 15), end to end: the real handlerd
(HANDLERD_BIN, with --state-dir) driven over gRPC with Debian's
python3-grpcio and through the real handlerctl (HANDLERCTL_BIN), posting to
real HTTP receivers (webhook_receiver.py) on 127.0.0.1.

What is checked (proto/handlers/v1/handlers.proto):
  - topic selectors (AddHandlerRequest.selector, `add --selector`): path,
    split-path and full-path patterns, selector sets and the descendant
    qualifiers reach exactly the right handlers, in insertion order; an
    event without a topic path reaches all; an invalid selector is
    INVALID_ARGUMENT naming the position; ListHandlers and `list` show it;
    it survives a restart;
  - UpdateHandler (`update`): a new URL takes effect, the id and the place
    under the key stay, ListHandlers shows it, a restart keeps it; unknown
    id NOT_FOUND; an invalid update changes nothing; an omitted webhook
    secret keeps signing with the old one (Standard Webhooks signatures
    verified at the receiver);
  - RotateSecret (`rotate-secret`): both signatures during the overlap,
    only the new one after a 300 ms overlap;
  - RemoveHandler of one route (`remove --route`);
  - derive_old_value (`add --derive-old-value`), seen through `echo`
    (service/src/kinds/builtins.c: it returns the event as JSON).

No sleep is an assertion: every wait polls with a deadline (scaled by
hd_harness.SLOW).

Run by CTest as `/usr/bin/python3 tests/integration/test_handler_model.py`
with HANDLERD_BIN, HD_PY_GEN and HANDLERCTL_BIN set (CMakeLists.txt).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
from hd_harness import eventually, parse_table  # noqa: E402
import webhook_receiver as wr  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_handler_model")

RPC_TIMEOUT = 10.0


# ---- helpers ---------------------------------------------------------------

def local(name):
    return pb.Target(local=name)


def webhook(url, **kw):
    return pb.Target(webhook=pb.Webhook(url=url, **kw))


def update(key, path, json_value="1", old_json=None):
    return hd_harness.update_request(pb, key, path=path, json_value=json_value,
                                     old_json=old_json)


def subscribe(key, path):
    return pb.DispatchRequest(key=key, event="subscribe",
                              subscribe=pb.SubHandlerArgs(topic_path=path))


def error_event(key):
    return pb.DispatchRequest(key=key, event="error",
                              error=pb.ErrorArgs(code=7, description="lost"))


def signatures(req):
    """The "v1,..." entries of a request's webhook-signature header."""
    return (req.header("webhook-signature") or "").split()


def signed_with(secret, req):
    """The signature a Standard Webhooks receiver computes for `req` with
    `secret` (webhook_receiver.expected_signature)."""
    return wr.expected_signature(secret, req.header("webhook-id"),
                                 req.header("webhook-timestamp"), req.body)


class ModelCase(hd_harness.StateDirCase):
    """One handlerd per test with its own state directory (self.d), the
    receivers a test starts, and handlerctl against it."""

    STATE_PREFIX = "hd-model-state-"

    def setUp(self):
        super().setUp()
        self.d = self.start()

    def restart(self):
        """Stops handlerd (exit status 0) and starts it again on the same
        state directory."""
        self.d.stop()
        self.d = self.start()

    @property
    def stub(self):
        return self.d.stub

    # -- gRPC --

    def add(self, key, target=None, routes=None, events=(), selector="",
            derive=False):
        req = hd_harness.add_request(pb, key, target=target, routes=routes,
                                     events=events)
        req.selector = selector
        req.derive_old_value = derive
        return self.stub.AddHandler(req, timeout=RPC_TIMEOUT)

    def dispatch(self, req):
        return self.stub.Dispatch(req, timeout=RPC_TIMEOUT)

    def ids(self, req):
        """The handler ids of a dispatch's results, in order; every result
        must be ok."""
        reply = self.dispatch(req)
        for r in reply.results:
            self.assertTrue(r.ok, r)
        return [r.handler_id for r in reply.results]

    def listed(self, key):
        return list(self.stub.ListHandlers(pb.ListHandlersRequest(key=key),
                                           timeout=RPC_TIMEOUT).handlers)

    def update_handler(self, key, hid, target=None, routes=None, events=(),
                       selector="", derive=False, timeout=RPC_TIMEOUT):
        req = pb.UpdateHandlerRequest(key=key, handler_id=hid,
                                      events=list(events), selector=selector,
                                      derive_old_value=derive)
        if target is not None:
            req.target.CopyFrom(target)
        for name, t in (routes or {}).items():
            req.routes[name].CopyFrom(t)
        return self.stub.UpdateHandler(req, timeout=timeout)

    # -- handlerctl --

    def cli(self, *args, check=None):
        """Runs handlerctl against self.d; returns the CompletedProcess."""
        if not hd_harness.HANDLERCTL:
            hd_harness.require_or_skip("HANDLERCTL_BIN is not set (no "
                                       "handlerctl target when cmake ran)")
        return hd_harness.run_handlerctl(args, addr=self.d.h.address,
                                         check=check)

    def cli_json(self, *args):
        p = self.cli("-o", "json", *args, check=0)
        try:
            return json.loads(p.stdout)
        except ValueError as e:
            raise AssertionError("not one JSON document (%s): %r"
                                 % (e, p.stdout))

    def cli_add(self, *args):
        """handlerctl add ...; the new handler's id."""
        return self.cli_json("add", *args)["handler_id"]

    def cli_ids(self, key, *args):
        """handlerctl dispatch; the result handler ids, all ok."""
        doc = self.cli_json("dispatch", "--key", key, *args)
        for r in doc["results"]:
            self.assertTrue(r["ok"], r)
        return [r["handler_id"] for r in doc["results"]]

    def assert_cli_error(self, p, status, contains=None):
        self.assertEqual(p.returncode, 1, "exit %d, stderr %r"
                         % (p.returncode, p.stderr))
        self.assertTrue(p.stderr.startswith("handlerctl: %s: " % status),
                        p.stderr)
        if contains is not None:
            self.assertIn(contains, p.stderr)
        self.assertEqual(p.stdout, "")


# ---- topic selectors -------------------------------------------------------

# The selectors of one key, in insertion order ("" is a handler without
# one), and for each topic path which of them (by index) it reaches.
SELECTORS = [">prices/eur", "?prices/.*", "*prices/e.*", "#>a////>b",
             "?prices//", "?prices/", ""]
REACHES = {
    "prices/eur": [0, 1, 2, 4, 5, 6],
    "prices/gbp": [1, 4, 5, 6],
    "prices": [4, 6],
    "prices/eur/bid": [2, 4, 5, 6],
    "pricesx/eur": [6],
    "a": [3, 6],
    "b": [3, 6],
    "a/b": [6],
    "other/eur": [6],
}


class TestSelectors(ModelCase):

    def check_routing(self, key, ids, dispatch_ids):
        """Every path of REACHES reaches exactly its handlers, in insertion
        order; `error` (no topic path) reaches all."""
        for path, which in REACHES.items():
            with self.subTest(path=path):
                self.assertEqual(dispatch_ids(path), [ids[i] for i in which])

    def test_selectors_select_by_topic_path(self):
        key = "sel"
        ids = [self.add(key, local("echo"), selector=s).handler_id
               for s in SELECTORS]
        self.check_routing(key, ids, lambda p: self.ids(update(key, p)))
        # Other events with a topic path are filtered the same way.
        self.assertEqual(self.ids(subscribe(key, "prices/gbp")),
                         [ids[i] for i in REACHES["prices/gbp"]])
        self.assertEqual(self.ids(error_event(key)), ids)
        # The handler really ran on the event it got.
        reply = self.dispatch(update(key, "prices/eur", '{"bid":1.5}'))
        echoed = json.loads(reply.results[0].value.json_value)
        self.assertEqual(echoed["topicPath"], "prices/eur")

    def test_selectors_through_handlerctl(self):
        key = "sel-cli"
        ids = []
        for s in SELECTORS:
            extra = ["--selector", s] if s else []
            ids.append(self.cli_add("--key", key, "--local", "echo", *extra))
        self.check_routing(key, ids, lambda p: self.cli_ids(
            key, "--event", "update", "--topic", p, "--value", "1"))
        self.assertEqual(self.cli_ids(key, "--event", "error", "--code", "7",
                                      "--description", "lost"), ids)
        # gRPC sees the same selectors.
        self.assertEqual([h.selector for h in self.listed(key)], SELECTORS)

    def test_invalid_selector_names_the_position(self):
        key = "sel-bad"
        kept = self.add(key, local("count")).handler_id
        err = hd_harness.assert_rpc_status(
            self, grpc.StatusCode.INVALID_ARGUMENT, self.stub.AddHandler,
            pb.AddHandlerRequest(key=key, target=local("echo"),
                                 selector="?prices/("))
        self.assertRegex(err.details(), r"selector.*position \d+")
        p = self.cli("add", "--key", key, "--local", "echo", "--selector",
                     "?prices/(")
        self.assert_cli_error(p, "INVALID_ARGUMENT", "position")
        self.assertEqual(p.stderr.strip(), "handlerctl: INVALID_ARGUMENT: "
                         + err.details())
        # Nothing was added.
        self.assertEqual([h.handler_id for h in self.listed(key)], [kept])

    def test_path_selector_qualifiers(self):
        # Qualifiers belong to the patterns (selector.h, README): a path
        # selector loses one trailing "/" ("prices/" is the path "prices")
        # and an empty level in it ("prices//") is refused, naming its
        # position, as Diffusion's path selector refuses an empty part.
        key = "sel-path"
        exact = self.add(key, local("echo"), selector="prices/").handler_id
        self.assertEqual(self.ids(update(key, "prices")), [exact])
        self.assertEqual(self.ids(update(key, "prices/eur")), [])
        err = hd_harness.assert_rpc_status(
            self, grpc.StatusCode.INVALID_ARGUMENT, self.stub.AddHandler,
            pb.AddHandlerRequest(key=key, target=local("echo"),
                                 selector="prices//"))
        self.assertRegex(err.details(), r"selector.*position \d+")

    def test_list_shows_selector_and_derive(self):
        plain = self.cli_add("--key", "plain", "--local", "count")
        rows = parse_table(self.cli("list", check=0).stdout)
        self.assertEqual([r["HANDLER"] for r in rows], [plain])
        self.assertNotIn("SELECTOR", rows[0])  # the old listing, unchanged
        self.assertNotIn("OLD VALUE", rows[0])

        key = "sel-list"
        a = self.cli_add("--key", key, "--local", "echo", "--selector",
                         "?prices/.*")
        b = self.cli_add("--key", key, "--local", "echo",
                         "--derive-old-value")
        listed = self.listed(key)
        self.assertEqual([(h.handler_id, h.selector, h.derive_old_value)
                          for h in listed],
                         [(a, "?prices/.*", False), (b, "", True)])
        rows = parse_table(self.cli("list", "--key", key, check=0).stdout)
        self.assertEqual([(r["HANDLER"], r["SELECTOR"], r["OLD VALUE"])
                          for r in rows],
                         [(a, "?prices/.*", "-"), (b, "-", "derived")])
        doc = self.cli_json("list", "--key", key)
        self.assertEqual([(h["selector"], h["derive_old_value"])
                          for h in doc["handlers"]],
                         [("?prices/.*", False), ("", True)])

    def test_selector_survives_restart(self):
        key = "sel-restart"
        ids = [self.add(key, local("echo"), selector=s).handler_id
               for s in SELECTORS]
        self.restart()
        self.assertEqual([(h.handler_id, h.selector)
                          for h in self.listed(key)], list(zip(ids, SELECTORS)))
        self.check_routing(key, ids, lambda p: self.ids(update(key, p)))


# ---- UpdateHandler -----------------------------------------------------------

class TestUpdateHandler(ModelCase):

    def test_update_moves_a_webhook(self):
        old_rx, new_rx = self.receiver(), self.receiver()
        key = "upd"
        first = self.add(key, local("count")).handler_id
        hid = self.add(key, webhook(old_rx.url("/hook"))).handler_id
        last = self.add(key, local("echo")).handler_id
        self.assertEqual(self.ids(update(key, "t/1")), [first, hid, last])
        eventually(lambda: old_rx.requests("/hook"), 10, "the first event")

        reply = self.update_handler(key, hid, webhook(new_rx.url("/hook")))
        self.assertEqual(reply.secret, "")
        # The same id in the same place; the events go to the new receiver.
        self.assertEqual(self.ids(update(key, "t/2", '"moved"')),
                         [first, hid, last])
        got = eventually(lambda: new_rx.requests("/hook"), 10,
                         "the moved event")
        self.assertIn(b'"moved"', got[0].body)
        self.assertEqual(len(old_rx.requests("/hook")), 1)
        listed = self.listed(key)
        self.assertEqual([(h.handler_id, h.target) for h in listed],
                         [(first, "local:count"),
                          (hid, "webhook:" + new_rx.url("/hook")),
                          (last, "local:echo")])

        # A restart keeps the change, in place.
        self.restart()
        self.assertEqual([(h.handler_id, h.target) for h in self.listed(key)],
                         [(h.handler_id, h.target) for h in listed])
        self.assertEqual(self.ids(update(key, "t/3", '"after"')),
                         [first, hid, last])
        eventually(lambda: len(new_rx.requests("/hook")) >= 2, 10,
                   "the event after the restart")
        self.assertEqual(len(old_rx.requests("/hook")), 1)

    def test_update_through_handlerctl(self):
        rx = self.receiver()
        key = "upd-cli"
        hid = self.cli_add("--key", key, "--webhook", rx.url("/a"))
        other = self.cli_add("--key", key, "--local", "count")
        p = self.cli("update", "--key", key, "--id", hid, "--webhook",
                     rx.url("/b"), "--selector", ">t/1", check=0)
        self.assertEqual(p.stdout, "updated handler %s under key '%s'\n"
                         % (hid, key))
        self.assertEqual(p.stderr, "")
        self.assertEqual(self.cli_ids(key, "--event", "update", "--topic",
                                      "t/1", "--value", "1"), [hid, other])
        eventually(lambda: rx.requests("/b"), 10, "the event on the new URL")
        self.assertEqual(rx.requests("/a"), [])
        # The selector came with the update.
        self.assertEqual(self.cli_ids(key, "--event", "update", "--topic",
                                      "t/2", "--value", "1"), [other])
        rows = parse_table(self.cli("list", "--key", key, check=0).stdout)
        self.assertEqual([(r["HANDLER"], r["TARGET"], r["SELECTOR"])
                          for r in rows],
                         [(hid, "webhook:" + rx.url("/b"), ">t/1"),
                          (other, "local:count", "-")])
        # A local function in place of the webhook: a whole new registration.
        doc = self.cli_json("update", "--key", key, "--id", hid, "--local",
                            "echo")
        self.assertEqual(doc, {"key": key, "handler_id": hid,
                               "updated": True})
        self.assertEqual([(h.handler_id, h.target, h.selector)
                          for h in self.listed(key)],
                         [(hid, "local:echo", ""),
                          (other, "local:count", "")])

    def test_update_unknown_id_is_not_found(self):
        key = "upd-unknown"
        self.add(key, local("count"))
        err = hd_harness.assert_rpc_status(
            self, grpc.StatusCode.NOT_FOUND, self.update_handler, key,
            "h-000000000000", local("echo"))
        self.assertIn("h-000000000000", err.details())
        hd_harness.assert_rpc_status(
            self, grpc.StatusCode.NOT_FOUND, self.update_handler,
            "no-such-key", "h-000000000000", local("echo"))
        p = self.cli("update", "--key", key, "--id", "h-000000000000",
                     "--local", "echo")
        self.assert_cli_error(p, "NOT_FOUND", "h-000000000000")

    def test_invalid_update_changes_nothing(self):
        rx = self.receiver()
        key = "upd-bad"
        hid = self.add(key, webhook(rx.url("/keep")),
                       selector=">t/1").handler_id
        before = self.listed(key)
        for target, selector in ((webhook("ftp://127.0.0.1/x"), ""),
                                 (webhook("not a url"), ""),
                                 (webhook(rx.url("/other")), "?t/("),
                                 (local("no_such_function"), "")):
            with self.subTest(target=str(target), selector=selector):
                hd_harness.assert_rpc_status(
                    self, grpc.StatusCode.INVALID_ARGUMENT,
                    self.update_handler, key, hid, target,
                    selector=selector)
        p = self.cli("update", "--key", key, "--id", hid, "--webhook",
                     "http://169.254.169.254/latest")
        self.assert_cli_error(p, "INVALID_ARGUMENT")
        self.assertEqual(self.listed(key), before)
        self.assertEqual(self.ids(update(key, "t/1")), [hid])
        eventually(lambda: rx.requests("/keep"), 10,
                   "the event on the kept URL")
        self.assertEqual(self.ids(update(key, "t/2")), [])  # selector kept
        self.assertEqual(rx.requests("/other"), [])

    def test_omitted_secret_keeps_signing(self):
        rx = self.receiver()
        key = "upd-secret"
        secret = wr.new_secret()
        hid = self.add(key, webhook(rx.url("/one"), secret=secret)).handler_id
        # gRPC: a new URL and a header, no secret: the old one signs.
        self.update_handler(key, hid, pb.Target(webhook=pb.Webhook(
            url=rx.url("/two"), headers={"X-Step": "two"})))
        self.ids(update(key, "t/1"))
        req = eventually(lambda: rx.requests("/two"), 10,
                         "the signed event")[0]
        self.assertEqual(req.header("x-step"), "two")
        self.assertIsNone(wr.signature_problem(secret, req))
        self.assertEqual(self.listed(key)[0].secret_set, True)

        # handlerctl: the same without --secret; then --new-secret.
        self.cli("update", "--key", key, "--id", hid, "--webhook",
                 rx.url("/three"), check=0)
        self.ids(update(key, "t/2"))
        req = eventually(lambda: rx.requests("/three"), 10,
                         "the event on /three")[0]
        self.assertIsNone(wr.signature_problem(secret, req))
        p = self.cli("update", "--key", key, "--id", hid, "--webhook",
                     rx.url("/four"), "--new-secret", check=0)
        rows = parse_table(p.stdout)
        self.assertEqual(len(rows), 1, p.stdout)
        fresh = rows[0]["SECRET"]
        self.assertRegex(fresh, r"^whsec_[A-Za-z0-9+/=]+$")
        self.assertNotEqual(fresh, secret)
        self.assertIn("keep the secret now", p.stderr)
        self.ids(update(key, "t/3"))
        req = eventually(lambda: rx.requests("/four"), 10,
                         "the event on /four")[0]
        self.assertIsNone(wr.signature_problem(fresh, req))
        self.assertIsNotNone(wr.signature_problem(secret, req))


# ---- RotateSecret --------------------------------------------------------------

class TestRotateSecret(ModelCase):

    def test_overlap_sends_both_signatures(self):
        rx = self.receiver()
        key = "rot"
        old = wr.new_secret()
        hid = self.add(key, webhook(rx.url("/h"), secret=old)).handler_id
        before_ms = int(time.time() * 1000)
        reply = self.stub.RotateSecret(pb.RotateSecretRequest(
            key=key, handler_id=hid, overlap_ms=3600 * 1000),
            timeout=RPC_TIMEOUT)
        new = reply.secret
        self.assertRegex(new, r"^whsec_")
        self.assertNotEqual(new, old)
        self.assertGreaterEqual(reply.previous_expires_at_ms,
                                before_ms + 3600 * 1000)
        self.assertLess(reply.previous_expires_at_ms,
                        int(time.time() * 1000) + 3600 * 1000 + 1000)
        self.ids(update(key, "t/1"))
        req = eventually(lambda: rx.requests("/h"), 10, "the signed event")[0]
        self.assertEqual(signatures(req),
                         [signed_with(new, req), signed_with(old, req)])
        self.assertIsNone(wr.signature_problem(new, req))
        self.assertIsNone(wr.signature_problem(old, req))

    def test_after_a_short_overlap_only_the_new_one(self):
        rx = self.receiver()
        key = "rot-short"
        old = wr.new_secret()
        hid = self.add(key, webhook(rx.url("/h"), secret=old)).handler_id
        given = wr.new_secret()
        reply = self.stub.RotateSecret(pb.RotateSecretRequest(
            key=key, handler_id=hid, overlap_ms=300, secret=given),
            timeout=RPC_TIMEOUT)
        self.assertEqual(reply.secret, given)
        ends = reply.previous_expires_at_ms / 1000.0

        def one_signature():
            rx.clear()
            self.ids(update(key, "t/1"))
            req = eventually(lambda: rx.requests("/h"), 10,
                             "a signed event")[0]
            return req if len(signatures(req)) == 1 else None
        req = eventually(one_signature, 10, "a request signed only once "
                         "after the 300 ms overlap")
        self.assertGreaterEqual(time.time(), ends)
        self.assertEqual(signatures(req), [signed_with(given, req)])
        self.assertIsNotNone(wr.signature_problem(old, req))

    def test_rotate_through_handlerctl(self):
        rx = self.receiver()
        key = "rot-cli"
        old = wr.new_secret()
        hid = self.cli_add("--key", key, "--route",
                           "update=" + rx.url("/u"), "--route",
                           "error=local:count", "--secret", old)
        p = self.cli("rotate-secret", "--key", key, "--id", hid, "--route",
                     "update", "--overlap", "2h", check=0)
        rows = parse_table(p.stdout)
        self.assertEqual(len(rows), 1, p.stdout)
        row = rows[0]
        self.assertEqual((row["KEY"], row["HANDLER"], row["ROUTE"]),
                         (key, hid, "update"))
        new = row["SECRET"]
        self.assertRegex(new, r"^whsec_[A-Za-z0-9+/=]+$")
        self.assertRegex(row["OLD SECRET UNTIL"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        self.assertIn("keep the secret now", p.stderr)
        self.ids(update(key, "t/1"))
        req = eventually(lambda: rx.requests("/u"), 10, "the signed event")[0]
        self.assertEqual(signatures(req),
                         [signed_with(new, req), signed_with(old, req)])

        given = wr.new_secret()
        before_ms = int(time.time() * 1000)
        doc = self.cli_json("rotate-secret", "--key", key, "--id", hid,
                            "--route", "update", "--overlap", "300ms",
                            "--secret", given)
        self.assertEqual((doc["key"], doc["handler_id"], doc["route"],
                          doc["secret"]), (key, hid, "update", given))
        self.assertGreaterEqual(doc["previous_expires_at_ms"], before_ms + 300)
        self.assertLess(doc["previous_expires_at_ms"], before_ms + 60000)

        # Refusals: no such route, a route that is no webhook, no handler.
        p = self.cli("rotate-secret", "--key", key, "--id", hid, "--route",
                     "subscribe")
        self.assert_cli_error(p, "NOT_FOUND", "'subscribe'")
        p = self.cli("rotate-secret", "--key", key, "--id", hid, "--route",
                     "error")
        self.assert_cli_error(p, "FAILED_PRECONDITION")
        p = self.cli("rotate-secret", "--key", key, "--id", "h-000000000000")
        self.assert_cli_error(p, "NOT_FOUND")


# ---- RemoveHandler of one route ----------------------------------------------

class TestRemoveRoute(ModelCase):

    def remove(self, key, hid, route="", timeout=RPC_TIMEOUT):
        return self.stub.RemoveHandler(pb.RemoveHandlerRequest(
            key=key, handler_id=hid, route=route), timeout=timeout)

    def test_remove_one_route(self):
        key = "rm-route"
        other = self.add(key, local("count")).handler_id
        hid = self.add(key, routes={"update": local("echo"),
                                    "subscribe": local("count")}).handler_id
        self.assertEqual(self.ids(update(key, "t")), [other, hid])
        self.assertEqual(self.ids(subscribe(key, "t")), [other, hid])

        self.remove(key, hid, "update")
        self.assertEqual(self.ids(update(key, "t")), [other])
        self.assertEqual(self.ids(subscribe(key, "t")), [other, hid])
        listed = self.listed(key)
        self.assertEqual([h.handler_id for h in listed], [other, hid])
        self.assertEqual(dict(listed[1].routes), {"subscribe": "local:count"})

        for route in ("update", "nope"):
            with self.subTest(route=route):
                err = hd_harness.assert_rpc_status(
                    self, grpc.StatusCode.NOT_FOUND, self.remove, key, hid,
                    route)
                self.assertIn("'%s'" % route, err.details())
        self.assertEqual(self.ids(subscribe(key, "t")), [other, hid])

        # The last route: the handler goes.
        self.remove(key, hid, "subscribe")
        self.assertEqual([h.handler_id for h in self.listed(key)], [other])
        self.assertEqual(self.ids(subscribe(key, "t")), [other])
        hd_harness.assert_rpc_status(self, grpc.StatusCode.NOT_FOUND,
                                     self.remove, key, hid, "subscribe")

    def test_remove_route_through_handlerctl(self):
        key = "rm-cli"
        other = self.cli_add("--key", key, "--local", "count")
        hid = self.cli_add("--key", key, "--route", "update=local:echo",
                           "--route", "subscribe=local:count")
        p = self.cli("remove", "--key", key, "--id", hid, "--route", "update",
                     check=0)
        self.assertEqual(p.stdout, "removed route 'update' of handler %s "
                         "under key '%s'\n" % (hid, key))
        self.assertEqual(self.cli_ids(key, "--event", "update", "--topic",
                                      "t", "--value", "1"), [other])
        self.assertEqual(self.cli_ids(key, "--event", "subscribe", "--topic",
                                      "t"), [other, hid])
        p = self.cli("remove", "--key", key, "--id", hid, "--route", "nope")
        self.assert_cli_error(p, "NOT_FOUND", "'nope'")
        doc = self.cli_json("remove", "--key", key, "--id", hid, "--route",
                            "subscribe")
        self.assertEqual(doc, {"key": key, "handler_id": hid,
                               "route": "subscribe", "removed": True})
        rows = parse_table(self.cli("list", "--key", key, check=0).stdout)
        self.assertEqual([r["HANDLER"] for r in rows], [other])


# ---- derive_old_value --------------------------------------------------------

class TestDeriveOldValue(ModelCase):

    def echoes(self, req):
        """The echo (a dict) of each result of a dispatch, in order."""
        return [json.loads(r.value.json_value)
                for r in self.dispatch(req).results]

    def test_old_value_from_the_previous_update(self):
        key = "derive"
        self.add(key, local("echo"), derive=True)
        self.add(key, local("echo"))  # the same events, not derived
        first, plain = self.echoes(update(key, "p/1", '{"bid":1}'))
        self.assertNotIn("oldValue", first)
        self.assertNotIn("oldValue", plain)
        derived, plain = self.echoes(update(key, "p/1", '{"bid":2}'))
        self.assertEqual(derived["oldValue"], {"jsonValue": {"bid": 1}})
        self.assertEqual(derived["topicValue"], {"jsonValue": {"bid": 2}})
        self.assertNotIn("oldValue", plain)
        # Per path: the first update of another path has none.
        derived, _ = self.echoes(update(key, "p/2", '{"bid":7}'))
        self.assertNotIn("oldValue", derived)
        # A sender's own old_value is kept, and still remembered.
        derived, _ = self.echoes(update(key, "p/1", '{"bid":3}', '{"bid":99}'))
        self.assertEqual(derived["oldValue"], {"jsonValue": {"bid": 99}})
        derived, _ = self.echoes(update(key, "p/1", '{"bid":4}'))
        self.assertEqual(derived["oldValue"], {"jsonValue": {"bid": 3}})
        derived, _ = self.echoes(update(key, "p/2", '{"bid":8}'))
        self.assertEqual(derived["oldValue"], {"jsonValue": {"bid": 7}})

    def test_derive_through_handlerctl(self):
        key = "derive-cli"
        hid = self.cli_add("--key", key, "--local", "echo",
                           "--derive-old-value")

        def echo(value):
            doc = self.cli_json("dispatch", "--key", key, "--event", "update",
                                "--topic", "q/1", "--value", value)
            self.assertEqual([r["handler_id"] for r in doc["results"]], [hid])
            return doc["results"][0]["value"]["value"]
        self.assertNotIn("oldValue", echo('{"n":1}'))
        self.assertEqual(echo('{"n":2}')["oldValue"], {"jsonValue": {"n": 1}})
        self.assertEqual([h.derive_old_value for h in self.listed(key)],
                         [True])


if __name__ == "__main__":
    hd_harness.main()
