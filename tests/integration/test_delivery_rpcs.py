"""The delivery RPCs (ListDeliveries, GetDelivery, Redeliver, Replay,
EnableWebhook) of the real handlerd, seen by Debian's python3-grpcio: the
answers that need no delivery to exist. Without --state-dir there is no
outbox (FAILED_PRECONDITION for each); with one: unknown ids, missing or
out-of-range fields, bad page tokens, an empty listing, the bearer token,
unknown handlers, strings that are not UTF-8.

Run by CTest as `/usr/bin/python3 tests/integration/test_delivery_rpcs.py`
with HANDLERD_BIN and HD_PY_GEN set (see CMakeLists.txt).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

grpc, pb, pb_grpc = hd_harness.import_grpc("test_delivery_rpcs")

RPC_TIMEOUT = 10.0
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
TOKEN = "delivery-token-5e1d"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def bearer(token):
    return (("authorization", "Bearer " + token),)


def five_calls(stub):
    """One well-formed request for each delivery RPC: (name, fn, request)."""
    return [
        ("ListDeliveries", stub.ListDeliveries, pb.ListDeliveriesRequest()),
        ("GetDelivery", stub.GetDelivery,
         pb.GetDeliveryRequest(delivery_id=UNKNOWN_ID)),
        ("Redeliver", stub.Redeliver,
         pb.RedeliverRequest(delivery_id=UNKNOWN_ID)),
        ("Replay", stub.Replay,
         pb.ReplayRequest(handler_id="h-1", since_ms=1)),
        ("EnableWebhook", stub.EnableWebhook,
         pb.EnableWebhookRequest(key="k", handler_id="h-1")),
    ]


def field_bytes(number, data):
    """A length-delimited protobuf field (`number`, `data` bytes): raw
    bytes that python-protobuf would refuse to build as a string."""
    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(data)) + data


class _Case(hd_harness.DaemonCase):
    """One handlerd per TestCase class, started with args(tmp)."""

    md = ()

    def call(self, fn, req):
        return fn(req, metadata=self.md, timeout=RPC_TIMEOUT)

    def assert_status(self, code, fn, req, *words):
        """fn(req) must fail with `code`, its message naming each of
        `words`; returns the message."""
        err = hd_harness.assert_rpc_status(self, code, fn, req,
                                           metadata=self.md)
        details = err.details() or ""
        for w in words:
            self.assertIn(w, details, "%s: %r does not name %r"
                          % (code, details, w))
        return details

    def raw(self, method):
        """A callable for /handlers.v1.Handlers/<method> that sends its
        argument as the request's bytes (the reply is not decoded)."""
        fn = self.channel.unary_unary(
            "/handlers.v1.Handlers/" + method,
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b)
        return fn


class TestWithoutStateDir(_Case):
    """No --state-dir: no journal, so no outbox."""

    def test_each_rpc_needs_state_dir(self):
        for name, fn, req in five_calls(self.stub):
            with self.subTest(rpc=name):
                self.assert_status(grpc.StatusCode.FAILED_PRECONDITION, fn,
                                   req, "--state-dir")

    def test_list_handlers_shows_nothing_disabled(self):
        key = "no-state"
        self.call(self.stub.AddHandler, pb.AddHandlerRequest(
            key=key, target=pb.Target(local="echo")))
        listed = self.call(self.stub.ListHandlers,
                           pb.ListHandlersRequest(key=key)).handlers
        self.assertEqual(len(listed), 1)
        self.assertFalse(getattr(listed[0], "async"))  # a keyword
        self.assertEqual(list(listed[0].disabled), [])


class TestWithStateDir(_Case):
    @classmethod
    def args(cls, tmp):
        return ["--state-dir", os.path.join(tmp, "state")]

    def test_empty_store_lists_nothing_and_no_token(self):
        for size in (0, 1, 1000):
            with self.subTest(page_size=size):
                reply = self.call(self.stub.ListDeliveries,
                                  pb.ListDeliveriesRequest(page_size=size))
                self.assertEqual(list(reply.deliveries), [])
                self.assertEqual(reply.next_page_token, "")
        reply = self.call(self.stub.ListDeliveries, pb.ListDeliveriesRequest(
            key="k", handler_id="h", state=pb.DEAD, since_ms=1,
            until_ms=2 ** 62, page_token="12345"))
        self.assertEqual(list(reply.deliveries), [])
        self.assertEqual(reply.next_page_token, "")

    def test_page_size_over_1000(self):
        self.assert_status(INVALID, self.stub.ListDeliveries,
                           pb.ListDeliveriesRequest(page_size=5000),
                           "page_size", "1000")

    def test_bad_page_token(self):
        for tok in ("not-a-token", "-5", "0", "1x", " 7", "+7",
                    "99999999999999999999", "9" * 200):
            with self.subTest(token=tok):
                self.assert_status(INVALID, self.stub.ListDeliveries,
                                   pb.ListDeliveriesRequest(page_token=tok),
                                   "page_token")

    def test_bad_ranges_and_states(self):
        for req, word in [
                (pb.ListDeliveriesRequest(since_ms=-1), "since_ms"),
                (pb.ListDeliveriesRequest(until_ms=-1), "until_ms"),
                (pb.ListDeliveriesRequest(since_ms=10, until_ms=5),
                 "until_ms")]:
            with self.subTest(req=str(req)):
                self.assert_status(INVALID, self.stub.ListDeliveries, req,
                                   word)
        # DeliveryState 9 does not exist (field 3, a varint).
        with self.assertRaises(grpc.RpcError) as cm:
            self.raw("ListDeliveries")(b"\x18\x09", timeout=RPC_TIMEOUT)
        self.assertEqual(cm.exception.code(), INVALID)
        self.assertIn("state", cm.exception.details())

    def test_unknown_delivery_is_not_found(self):
        for fn, req in [
                (self.stub.GetDelivery,
                 pb.GetDeliveryRequest(delivery_id=UNKNOWN_ID)),
                (self.stub.Redeliver,
                 pb.RedeliverRequest(delivery_id=UNKNOWN_ID)),
                (self.stub.GetDelivery,
                 pb.GetDeliveryRequest(delivery_id="no-such-delivery"))]:
            with self.subTest(rpc=fn._method, id=req.delivery_id):
                self.assert_status(NOT_FOUND, fn, req, req.delivery_id)

    def test_empty_delivery_id(self):
        for fn, req in [(self.stub.GetDelivery, pb.GetDeliveryRequest()),
                        (self.stub.Redeliver, pb.RedeliverRequest())]:
            with self.subTest(rpc=fn._method):
                self.assert_status(INVALID, fn, req, "delivery_id")

    def test_replay_needs_handler_id_and_since(self):
        self.assert_status(INVALID, self.stub.Replay,
                           pb.ReplayRequest(since_ms=1), "handler_id")
        self.assert_status(INVALID, self.stub.Replay,
                           pb.ReplayRequest(handler_id="h-1"), "since_ms")
        self.assert_status(INVALID, self.stub.Replay, pb.ReplayRequest(),
                           "handler_id")

    def test_replay_limit_over_10000(self):
        self.assert_status(INVALID, self.stub.Replay, pb.ReplayRequest(
            handler_id="h-1", since_ms=1, limit=20000), "limit", "10000")

    def test_replay_of_nothing_replays_nothing(self):
        reply = self.call(self.stub.Replay, pb.ReplayRequest(
            handler_id="h-none", since_ms=1, limit=10000))
        self.assertEqual(reply.replayed, 0)
        self.assertFalse(reply.truncated)

    def test_enable_unknown_handler_is_not_found(self):
        key = "enable-k"
        hid = self.call(self.stub.AddHandler, pb.AddHandlerRequest(
            key=key, target=pb.Target(local="echo"))).handler_id
        # Unknown key; unknown id under a known key; a known id under
        # another key.
        self.assert_status(NOT_FOUND, self.stub.EnableWebhook,
                           pb.EnableWebhookRequest(key="nokey",
                                                   handler_id=hid), "nokey")
        self.assert_status(NOT_FOUND, self.stub.EnableWebhook,
                           pb.EnableWebhookRequest(key=key,
                                                   handler_id="h-unknown"),
                           "h-unknown")
        other = "enable-other"
        self.call(self.stub.AddHandler, pb.AddHandlerRequest(
            key=other, target=pb.Target(local="echo")))
        self.assert_status(NOT_FOUND, self.stub.EnableWebhook,
                           pb.EnableWebhookRequest(key=other, handler_id=hid),
                           hid)
        # A registered handler with no async webhook: nothing to enable.
        reply = self.call(self.stub.EnableWebhook, pb.EnableWebhookRequest(
            key=key, handler_id=hid))
        self.assertEqual(reply.enabled, 0)

    def test_enable_needs_key_and_handler_id(self):
        self.assert_status(INVALID, self.stub.EnableWebhook,
                           pb.EnableWebhookRequest(handler_id="h"), "key")
        self.assert_status(INVALID, self.stub.EnableWebhook,
                           pb.EnableWebhookRequest(key="k"), "handler_id")

    def test_strings_must_be_utf8_without_nul(self):
        for method, field in [("GetDelivery", 1), ("Redeliver", 1),
                              ("Replay", 1), ("EnableWebhook", 2),
                              ("ListDeliveries", 7)]:
            for data, why in [(b"ab\xffcd", "UTF-8"), (b"ab\x00cd", "NUL")]:
                with self.subTest(rpc=method, data=data):
                    with self.assertRaises(grpc.RpcError) as cm:
                        self.raw(method)(field_bytes(field, data),
                                        timeout=RPC_TIMEOUT)
                    self.assertEqual(cm.exception.code(), INVALID,
                                     cm.exception.details())
                    self.assertIn(why, cm.exception.details())


class TestToken(_Case):
    """--token-file guards the delivery RPCs like the other control RPCs."""

    md = bearer(TOKEN)

    @classmethod
    def args(cls, tmp):
        path = os.path.join(tmp, "token")
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
        return ["--state-dir", os.path.join(tmp, "state"),
                "--token-file", path]

    def test_unauthenticated_without_or_with_wrong_token(self):
        for md in (None, bearer("wrong")):
            for name, fn, req in five_calls(self.stub):
                with self.subTest(rpc=name, md=md):
                    err = hd_harness.assert_rpc_status(
                        self, grpc.StatusCode.UNAUTHENTICATED, fn, req,
                        metadata=md)
                    self.assertNotIn(TOKEN, err.details() or "")

    def test_ok_with_token(self):
        reply = self.call(self.stub.ListDeliveries,
                          pb.ListDeliveriesRequest())
        self.assertEqual(list(reply.deliveries), [])
        self.assert_status(NOT_FOUND, self.stub.GetDelivery,
                           pb.GetDeliveryRequest(delivery_id=UNKNOWN_ID),
                           UNKNOWN_ID)


if __name__ == "__main__":
    hd_harness.main()
