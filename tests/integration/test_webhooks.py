"""handlerd webhook integration tests: the real handlerd posting to a real
HTTP receiver (webhook_receiver.py) on 127.0.0.1, driven over gRPC with
Debian's python3-grpcio.

Checks the contract of proto/handlers/v1/handlers.proto and issue 3: the
CloudEvents 1.0 request (structured and binary mode), Standard Webhooks
signatures verified with Python's hmac, results, retries, timeouts, URL
policy and the gRPC deadline.

Run by CTest as `/usr/bin/python3 tests/integration/test_webhooks.py` with
HANDLERD_BIN and HD_PY_GEN set (see CMakeLists.txt).
"""

import base64
import datetime
import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
import webhook_receiver as wr  # noqa: E402

(grpc, pb, pb_grpc, json_format) = hd_harness.import_grpc(
    "test_webhooks", "google.protobuf.json_format")

RPC_TIMEOUT = 10.0
RESPONSE_LIMIT = 64 * 1024  # documented webhook response size limit
# Under HD_IT_WRAPPER (valgrind) everything in handlerd is much slower:
# upper time bounds get this factor on their slack.
SLOW = hd_harness.SLOW

# RFC 3339 date-time (section 5.6), any fraction, Z or numeric offset.
RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})"
                     r"(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(text):
    """A timezone-aware datetime for an RFC 3339 date-time; ValueError when
    `text` is not one."""
    m = RFC3339.match(text)
    if not m:
        raise ValueError("%r is not an RFC 3339 date-time" % text)
    frac = m.group(7) or ""
    frac = (frac[1:] + "000000")[:6] if frac else "000000"
    off = m.group(8)
    tz = datetime.timezone.utc
    if off not in ("Z", "z"):
        sign = 1 if off[0] == "+" else -1
        tz = datetime.timezone(sign * datetime.timedelta(
            hours=int(off[1:3]), minutes=int(off[4:6])))
    return datetime.datetime(int(m.group(1)), int(m.group(2)),
                             int(m.group(3)), int(m.group(4)),
                             int(m.group(5)), int(m.group(6)), int(frac),
                             tzinfo=tz)


def _embed_json_values(obj):
    """proto3 JSON keeps TopicValue.json_value as a string; handlerd embeds
    it as JSON. Rewrites every {"jsonValue": "<text>"} into the parsed
    value, in place."""
    if isinstance(obj, dict):
        for k, v in list(obj.items()):
            if k == "jsonValue" and isinstance(v, str):
                obj[k] = json.loads(v)
            else:
                _embed_json_values(v)
    elif isinstance(obj, list):
        for v in obj:
            _embed_json_values(v)
    return obj


def expected_data(args_msg):
    """(required, allowed_defaults) for an args message: `required` is the
    proto3 JSON mapping (protobuf's own json_format, camelCase, int64 as
    string, bytes as base64) with JSON topic values embedded; fields that
    hold their default value may also appear, with the values in
    `allowed_defaults`."""
    required = _embed_json_values(json_format.MessageToDict(args_msg))
    full = _embed_json_values(json_format.MessageToDict(
        args_msg, including_default_value_fields=True))
    return required, full


def update_req(key, **kw):
    """A DispatchRequest for an `update` event (hd_harness.update_request)."""
    return hd_harness.update_request(pb, key, **kw)


def event_cases():
    """(name, event, args field, args message) for every known event kind."""
    spec = pb.TopicSpecification(type=pb.JSON,
                                 properties={"PERSISTENT": "true"})
    return [
        ("subscribe", "subscribe", "subscribe",
         pb.SubHandlerArgs(topic_path="prices/eur",
                           topic_value=pb.TopicValue(
                               json_value='{"bid":1.5,"tags":["a"]}'),
                           topic_spec=spec)),
        ("update-no-old", "update", "update",
         pb.UpdateArgs(topic_path="prices/int",
                       topic_value=pb.TopicValue(int64_value=42))),
        ("update-with-old", "update", "update",
         pb.UpdateArgs(topic_path="prices/eur",
                       topic_value=pb.TopicValue(json_value='{"bid":2}'),
                       old_value=pb.TopicValue(json_value='{"bid":1}'))),
        ("update-binary", "update", "update",
         pb.UpdateArgs(topic_path="blobs/1",
                       topic_value=pb.TopicValue(
                           binary_value=b"\x00\xff\xfe binary\x01"))),
        ("unsubscribe", "unsubscribe", "unsubscribe",
         pb.UnsubscribeArgs(topic_path="prices/eur",
                            topic_value=pb.TopicValue(
                                string_value="last"),
                            reason=pb.REMOVAL)),
        ("close", "close", "subscribe",
         pb.SubHandlerArgs(topic_path="prices/closed",
                           topic_value=pb.TopicValue(double_value=1.25))),
        ("error", "error", "error",
         pb.ErrorArgs(code=17, description="stream broke")),
        ("response", "response", "response",
         pb.FilterResponseArgs(conversation_id="conv-1",
                               sender_session_id="sess-9",
                               path="req/topic", expected=3, received=2,
                               response=pb.TopicValue(
                                   json_value='{"answer":true}'))),
    ]


class _WebhookCase(hd_harness.ReceiverCase):
    """One handlerd and one receiver per TestCase class."""

    # -- helpers ---------------------------------------------------------

    def webhook(self, path, **kw):
        return pb.Webhook(url=self.rx.url(path), **kw)

    def add(self, key, target=None, routes=None, events=()):
        req = hd_harness.add_request(pb, key, target, routes, events)
        try:
            reply = self.stub.AddHandler(req, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            self.fail("AddHandler(%s) failed: %s %s\n%s"
                      % (key, e.code(), e.details(),
                         self.server.stderr_text(4000)))
        self.assertTrue(reply.handler_id, "AddHandler returned an empty id")
        return reply

    def add_webhook(self, key, path, events=(), **kw):
        return self.add(key, pb.Target(webhook=self.webhook(path, **kw)),
                        events=events)

    def add_local(self, key, name):
        return self.add(key, pb.Target(local=name)).handler_id

    def dispatch(self, req, timeout=RPC_TIMEOUT):
        return self.stub.Dispatch(req, timeout=timeout)

    def assert_status(self, code, fn, *args, **kwargs):
        """Calls fn and returns the grpc.RpcError, which must carry `code`."""
        kwargs.setdefault("timeout", RPC_TIMEOUT)
        return hd_harness.assert_rpc_status(self, code, fn, *args, **kwargs)

    def assert_ok(self, result, handler_id, local=False):
        self.assertEqual(result.handler_id, handler_id)
        self.assertTrue(result.ok, "handler failed: code=%d message=%r "
                        "http_status=%d attempts=%d"
                        % (result.error.code, result.error.message,
                           result.error.http_status, result.error.attempts))
        self.assertFalse(result.HasField("error"))
        if local:
            self.assertGreaterEqual(result.duration_ns, 0)
        else:  # an HTTP round trip takes time
            self.assertGreater(result.duration_ns, 0)

    def assert_failed(self, result, handler_id):
        self.assertEqual(result.handler_id, handler_id)
        self.assertFalse(result.ok, "expected a failed result: %s" % result)
        self.assertTrue(result.HasField("error"), result)
        self.assertNotEqual(result.error.code, 0, result)
        self.assertTrue(result.error.message, result)

    def one_request(self, path):
        """The single request `path` received (the Dispatch already
        returned, so the delivery is complete)."""
        got = self.rx.wait_for(path, 1, timeout=5)
        time.sleep(0.05)  # a duplicate delivery would show up by now
        got = self.rx.requests(path)
        self.assertEqual(len(got), 1, "expected exactly 1 request to %s, "
                         "got %d: %r" % (path, len(got), got))
        return got[0]

    def check_data(self, data, key, event, args_msg):
        """data is the proto3 JSON of args_msg (plus, optionally, "key" and
        "event" with their real values; default-valued fields may appear
        with their default)."""
        self.assertIsInstance(data, dict, data)
        required, full = expected_data(args_msg)
        for field, want in required.items():
            self.assertIn(field, data, "data lacks %r: %r" % (field, data))
            self.assertEqual(data[field], want, "data[%r]" % field)
        for field, got in data.items():
            if field in required:
                continue
            if field == "key":
                self.assertEqual(got, key)
            elif field == "event":
                self.assertEqual(got, event)
            elif field in full:
                self.assertEqual(got, full[field],
                                 "data[%r] is not the default" % field)
            else:
                self.fail("data has unexpected field %r=%r (args: %r)"
                          % (field, got, required))

    def check_ce_common(self, req, key, path):
        self.assertEqual(req.method, "POST")
        self.assertEqual(req.path, path)
        ua = req.header("user-agent", "")
        self.assertTrue(ua.startswith("handlerd/"), "user-agent %r" % ua)
        self.assertGreater(len(ua), len("handlerd/"), "no version in %r" % ua)


class TestWebhooks(_WebhookCase):
    """handlerd with default flags: loopback receivers are allowed."""

    # -- the request -----------------------------------------------------

    def test_event_kinds_structured(self):
        ids = []
        for name, event, field, args in event_cases():
            with self.subTest(name):
                key = "wh-kind-%s" % name
                path = "/kind/%s" % name
                hid = self.add_webhook(key, path).handler_id
                before = time.time()
                req = pb.DispatchRequest(key=key, event=event)
                getattr(req, field).CopyFrom(args)
                reply = self.dispatch(req)
                self.assertEqual(len(reply.results), 1, reply)
                self.assert_ok(reply.results[0], hid)

                r = self.one_request(path)
                self.check_ce_common(r, key, path)
                ctype = r.header("content-type", "")
                self.assertEqual(ctype.split(";")[0].strip().lower(),
                                 "application/cloudevents+json", ctype)
                ce = json.loads(r.body.decode("utf-8"))
                self.assertEqual(ce["specversion"], "1.0")
                self.assertIsInstance(ce["id"], str)
                self.assertTrue(ce["id"])
                ids.append(ce["id"])
                self.assertIsInstance(ce["source"], str)
                self.assertIn(key, ce["source"])
                self.assertEqual(ce["type"], "handlers.v1.%s" % event)
                if event == "error":
                    self.assertNotIn("subject", ce)
                elif event == "response":
                    self.assertEqual(ce["subject"], args.path)
                else:
                    self.assertEqual(ce["subject"], args.topic_path)
                when = parse_rfc3339(ce["time"])
                self.assertLess(abs(when.timestamp() - before), 60,
                                "time %s is not now" % ce["time"])
                self.assertEqual(ce["datacontenttype"], "application/json")
                self.assertEqual(r.header("webhook-id"), ce["id"])
                self.check_data(ce["data"], key, event, args)
                self.assertEqual(
                    set(ce) - {"specversion", "id", "source", "type",
                               "subject", "time", "datacontenttype", "data"},
                    set(), "unexpected CloudEvents attributes")
                # Unsigned webhook: no signature.
                self.assertIsNone(r.header("webhook-signature"))
        self.assertEqual(len(ids), len(event_cases()))
        self.assertEqual(len(set(ids)), len(ids), "ids not unique: %r" % ids)

    def test_json_topic_value_embedded(self):
        # Spelled out once, without json_format: JSON embedded, int64 as a
        # string, camelCase names.
        key, path = "wh-embedded", "/embedded"
        self.add_webhook(key, path)
        self.dispatch(update_req(key, path="a/b", json_value='{"x":[1,2]}',
                                 old_json='"prev"'))
        self.dispatch(update_req(key, path="a/c", int64_value=42))
        reqs = self.rx.wait_for(path, 2)
        self.assertEqual(len(reqs), 2)
        d1 = json.loads(reqs[0].body)["data"]
        d2 = json.loads(reqs[1].body)["data"]
        self.assertEqual(d1["topicPath"], "a/b")
        self.assertEqual(d1["topicValue"], {"jsonValue": {"x": [1, 2]}})
        self.assertEqual(d1["oldValue"], {"jsonValue": "prev"})
        self.assertEqual(d2["topicValue"], {"int64Value": "42"})
        self.assertNotIn("oldValue", d2)

    def test_binary_mode(self):
        key, path = "wh-binary", "/binary"
        hid = self.add_webhook(key, path, binary_mode=True).handler_id
        args = pb.UpdateArgs(topic_path="bin/eur",
                             topic_value=pb.TopicValue(json_value='{"b":7}'),
                             old_value=pb.TopicValue(int64_value=-3))
        before = time.time()
        reply = self.dispatch(pb.DispatchRequest(key=key, event="update",
                                                 update=args))
        self.assert_ok(reply.results[0], hid)
        r = self.one_request(path)
        self.check_ce_common(r, key, path)
        self.assertEqual(r.header("ce-specversion"), "1.0")
        ce_id = r.header("ce-id")
        self.assertTrue(ce_id)
        self.assertEqual(r.header("webhook-id"), ce_id)
        self.assertEqual(r.header("ce-type"), "handlers.v1.update")
        self.assertIn(key, r.header("ce-source", ""))
        self.assertEqual(r.header("ce-subject"), "bin/eur")
        if r.header("ce-time") is not None:
            when = parse_rfc3339(r.header("ce-time"))
            self.assertLess(abs(when.timestamp() - before), 60)
        ctype = r.header("content-type", "")
        self.assertEqual(ctype.split(";")[0].strip().lower(),
                         "application/json", ctype)
        body = json.loads(r.body.decode("utf-8"))
        self.assertNotIn("specversion", body)
        self.check_data(body, key, "update", args)

    def test_custom_headers(self):
        key, path = "wh-headers", "/headers"
        hid = self.add_webhook(key, path, headers={
            "X-Api-Key": "k-123", "x-tenant": "acme corp"}).handler_id
        reply = self.dispatch(update_req(key, json_value="1"))
        self.assert_ok(reply.results[0], hid)
        r = self.one_request(path)
        self.assertEqual(r.header("x-api-key"), "k-123")
        self.assertEqual(r.header("X-Tenant"), "acme corp")
        listed = self.stub.ListHandlers(pb.ListHandlersRequest(key=key),
                                        timeout=RPC_TIMEOUT)
        self.assertNotIn(b"k-123", listed.SerializeToString(),
                         "ListHandlers shows a header value (may be a "
                         "credential)")

    # -- signatures ------------------------------------------------------

    def test_signature_with_given_secret(self):
        secret = wr.new_secret(32)
        key, path = "wh-signed", "/signed"
        hid = self.add_webhook(key, path, secret=secret).handler_id
        reply = self.dispatch(update_req(key, json_value='{"s":1}'))
        self.assert_ok(reply.results[0], hid)
        r = self.one_request(path)
        self.assertIsNone(wr.signature_problem(secret, r))
        ce = json.loads(r.body)
        self.assertEqual(r.header("webhook-id"), ce["id"])
        ts = int(r.header("webhook-timestamp"))
        self.assertLess(abs(ts - time.time()), 60)
        # The verifier is real: another secret or another body fails.
        self.assertIsNotNone(wr.signature_problem(wr.new_secret(32), r))
        tampered = wr.Request(r.method, r.path, r.all_headers,
                              r.body.replace(b'"s":1', b'"s":2'), r.arrived)
        self.assertIsNotNone(wr.signature_problem(secret, tampered))

    def test_new_secret(self):
        key, path = "wh-newsecret", "/newsecret"
        reply = self.add_webhook(key, path, new_secret=True)
        secret = reply.secret
        self.assertTrue(secret.startswith("whsec_"), repr(secret))
        raw = base64.b64decode(secret[len("whsec_"):], validate=True)
        self.assertGreaterEqual(len(raw), 24)
        other = self.add_webhook(key + "-2", path + "-2", new_secret=True)
        self.assertNotEqual(other.secret, secret)
        res = self.dispatch(update_req(key, json_value="3"))
        self.assert_ok(res.results[0], reply.handler_id)
        r = self.one_request(path)
        self.assertIsNone(wr.signature_problem(secret, r))
        self.assertIsNotNone(wr.signature_problem(other.secret, r))

    def test_list_never_shows_secret(self):
        key = "wh-list-secret"
        given = wr.new_secret(24)
        url_given = self.rx.url("/ls1")
        h1 = self.add_webhook(key, "/ls1", secret=given).handler_id
        gen = self.add_webhook(key, "/ls2", new_secret=True)
        h3 = self.add_webhook(key, "/ls3").handler_id
        for req in (pb.ListHandlersRequest(key=key), pb.ListHandlersRequest()):
            listed = self.stub.ListHandlers(req, timeout=RPC_TIMEOUT)
            mine = [h for h in listed.handlers if h.key == key]
            self.assertEqual([(h.handler_id, h.kind, h.target, h.secret_set)
                              for h in mine],
                             [(h1, pb.SIMPLE, "webhook:" + url_given, True),
                              (gen.handler_id, pb.SIMPLE,
                               "webhook:" + self.rx.url("/ls2"), True),
                              (h3, pb.SIMPLE,
                               "webhook:" + self.rx.url("/ls3"), False)])
            blob = listed.SerializeToString()
            for s in (given, gen.secret):
                b64 = s[len("whsec_"):]
                rawkey = base64.b64decode(b64)
                for needle in (s.encode(), b64.encode(), b64[:16].encode(),
                               rawkey):
                    self.assertNotIn(needle, blob, "secret material in "
                                     "ListHandlers reply")
        self.assertNotIn(given, self.server.stderr_text(10 ** 7),
                         "secret written to the log")
        self.assertNotIn(gen.secret, self.server.stderr_text(10 ** 7),
                         "secret written to the log")

    # -- results ---------------------------------------------------------

    def test_json_answer_becomes_value(self):
        key, path = "wh-answer", "/answer"
        self.rx.script(path, [(200, {"Content-Type": "application/json"},
                               '{"a":1}', 0)])
        hid = self.add_webhook(key, path).handler_id
        reply = self.dispatch(update_req(key, json_value="1"))
        self.assertEqual(len(reply.results), 1)
        res = reply.results[0]
        self.assert_ok(res, hid)
        self.assertFalse(res.truncated)
        self.assertEqual(res.value.WhichOneof("value"), "json_value", res)
        self.assertEqual(json.loads(res.value.json_value), {"a": 1})

    def test_empty_answer_no_value(self):
        key, path = "wh-empty-answer", "/empty-answer"
        self.rx.script(path, [(204, {}, b"", 0)])
        hid = self.add_webhook(key, path).handler_id
        res = self.dispatch(update_req(key, json_value="1")).results[0]
        self.assert_ok(res, hid)
        self.assertFalse(res.HasField("value"), res)

    def test_set_local_and_two_webhooks(self):
        key = "wh-set"
        self.rx.script("/set1", [(200, {}, '{"from":"one"}', 0)])
        self.rx.script("/set2", [(201, {}, '{"from":"two"}', 0)])
        count_id = self.add_local(key, "count")
        w1 = self.add_webhook(key, "/set1").handler_id
        w2 = self.add_webhook(key, "/set2").handler_id
        for n in (1, 2):
            reply = self.dispatch(update_req(key, json_value='{"n":%d}' % n))
            self.assertEqual([r.handler_id for r in reply.results],
                             [count_id, w1, w2])
            self.assert_ok(reply.results[0], count_id, local=True)
            self.assert_ok(reply.results[1], w1)
            self.assert_ok(reply.results[2], w2)
            self.assertEqual(reply.results[0].value.int64_value, n)
            self.assertEqual(json.loads(reply.results[1].value.json_value),
                             {"from": "one"})
            self.assertEqual(json.loads(reply.results[2].value.json_value),
                             {"from": "two"})
        for p in ("/set1", "/set2"):
            reqs = self.rx.requests(p)
            self.assertEqual(len(reqs), 2)
            self.assertEqual([json.loads(r.body)["data"]["topicValue"]
                              for r in reqs],
                             [{"jsonValue": {"n": 1}},
                              {"jsonValue": {"n": 2}}])

    def test_large_body_truncated(self):
        key, path = "wh-large", "/large"
        big = json.dumps({"pad": "x" * (100 * 1024)}).encode()
        self.rx.script(path, [(200, {}, big, 0)])
        hid = self.add_webhook(key, path).handler_id
        reply = self.dispatch(update_req(key, json_value="1"))
        res = reply.results[0]
        self.assert_ok(res, hid)  # any 2xx is a success
        self.assertTrue(res.truncated, res)
        if res.HasField("value"):
            self.assertLessEqual(res.value.ByteSize(), RESPONSE_LIMIT + 16)
        self.assertEqual(len(self.rx.requests(path)), 1,
                         "a truncated answer must not be retried")
        # Just under the limit: whole, not truncated.
        key2, path2 = "wh-large-ok", "/large-ok"
        fits = json.dumps({"pad": "y" * (60 * 1024)})
        self.rx.script(path2, [(200, {}, fits, 0)])
        hid2 = self.add_webhook(key2, path2).handler_id
        res2 = self.dispatch(update_req(key2, json_value="1")).results[0]
        self.assert_ok(res2, hid2)
        self.assertFalse(res2.truncated)
        self.assertEqual(json.loads(res2.value.json_value), json.loads(fits))

    # -- delivery semantics ----------------------------------------------

    def test_retry_500_500_200(self):
        key, path = "wh-retry", "/retry"
        self.rx.script(path, [(500, {}, "no", 0), (500, {}, "no", 0),
                              (200, {}, '{"third":true}', 0)])
        secret = wr.new_secret(24)
        hid = self.add_webhook(key, path, secret=secret).handler_id
        t0 = time.monotonic()
        reply = self.dispatch(update_req(key, json_value="1"))
        took = time.monotonic() - t0
        res = reply.results[0]
        self.assert_ok(res, hid)
        self.assertEqual(json.loads(res.value.json_value), {"third": True})
        time.sleep(0.2)
        reqs = self.rx.requests(path)
        self.assertEqual(len(reqs), 3, reqs)
        wids = {r.header("webhook-id") for r in reqs}
        ce_ids = {json.loads(r.body)["id"] for r in reqs}
        self.assertEqual(len(wids), 1, wids)
        self.assertEqual(wids, ce_ids)
        for r in reqs:  # every attempt is signed (and verifies)
            self.assertIsNone(wr.signature_problem(secret, r))
        gaps = [b.arrived - a.arrived for a, b in zip(reqs, reqs[1:])]
        self.assertTrue(all(g > 0.01 for g in gaps), "no backoff: %r" % gaps)
        self.assertLess(took, 5.0 * SLOW, "retries took %.1f s" % took)

    def test_404_is_final(self):
        key, path = "wh-404", "/missing"
        self.rx.script(path, [(404, {}, "nope", 0), (200, {}, "", 0)])
        hid = self.add_webhook(key, path).handler_id
        res = self.dispatch(update_req(key, json_value="1")).results[0]
        self.assert_failed(res, hid)
        self.assertEqual(res.error.http_status, 404)
        self.assertEqual(res.error.attempts, 1)
        time.sleep(0.4)
        self.assertEqual(len(self.rx.requests(path)), 1)

    def test_429_retry_after(self):
        key, path = "wh-429", "/busy"
        self.rx.script(path, [(429, {"Retry-After": "1"}, "", 0),
                              (200, {}, '{"ok":1}', 0)])
        hid = self.add_webhook(key, path).handler_id
        res = self.dispatch(update_req(key, json_value="1")).results[0]
        self.assert_ok(res, hid)
        reqs = self.rx.requests(path)
        self.assertEqual(len(reqs), 2, reqs)
        gap = reqs[1].arrived - reqs[0].arrived
        self.assertGreaterEqual(gap, 0.9, "Retry-After: 1 not honoured "
                                "(gap %.3f s)" % gap)
        self.assertLess(gap, 3.0 * SLOW)

    def test_hanging_receiver_does_not_delay_others(self):
        key = "wh-hang"
        self.rx.hang("/hang")
        self.rx.script("/healthy", [(200, {}, '{"h":1}', 0)])
        hang_id = self.add_webhook(key, "/hang", timeout_ms=500,
                                   max_attempts=1).handler_id
        ok_id = self.add_webhook(key, "/healthy").handler_id
        t0 = time.monotonic()
        reply = self.dispatch(update_req(key, json_value="1"))
        took = time.monotonic() - t0
        self.assertLess(took, 2.0 * SLOW, "Dispatch took %.2f s" % took)
        self.assertGreaterEqual(took, 0.45, "timeout_ms=500 not waited")
        self.assertEqual([r.handler_id for r in reply.results],
                         [hang_id, ok_id])
        bad, good = reply.results
        self.assert_failed(bad, hang_id)
        self.assertEqual(bad.error.code, grpc.StatusCode.DEADLINE_EXCEEDED
                         .value[0], bad.error)
        self.assertRegex(bad.error.message.lower(), r"time(d)? ?out",
                         bad.error.message)
        self.assertEqual(bad.error.attempts, 1)
        self.assertEqual(bad.error.http_status, 0)
        self.assert_ok(good, ok_id)
        self.assertEqual(json.loads(good.value.json_value), {"h": 1})
        self.assertLess(good.duration_ns, 300 * 10 ** 6 * SLOW,
                        "healthy webhook delayed: %d ns" % good.duration_ns)
        self.assertEqual(len(self.rx.requests("/hang")), 1)

    def test_connection_refused(self):
        key = "wh-refused"
        port = wr.closed_port()
        url = "http://127.0.0.1:%d/nobody" % port
        hid = self.add(key, pb.Target(webhook=pb.Webhook(
            url=url, max_attempts=2))).handler_id
        t0 = time.monotonic()
        res = self.dispatch(update_req(key, json_value="1")).results[0]
        self.assertLess(time.monotonic() - t0, 5.0 * SLOW)
        self.assert_failed(res, hid)
        self.assertEqual(res.error.attempts, 2, res.error)
        self.assertEqual(res.error.code, grpc.StatusCode.UNAVAILABLE.value[0],
                         res.error)
        self.assertEqual(res.error.http_status, 0)

    def test_deadline_bounds_retries(self):
        key, path = "wh-deadline", "/always500"
        self.rx.script(path, [(500, {}, "", 0)])
        hid = self.add_webhook(key, path, max_attempts=20).handler_id
        t0 = time.monotonic()
        try:
            reply = self.dispatch(update_req(key, json_value="1"),
                                  timeout=1.5)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED,
                             e.details())
        else:
            self.assertEqual(len(reply.results), 1)
            self.assert_failed(reply.results[0], hid)
            self.assertEqual(reply.results[0].error.http_status, 500)
            self.assertLess(reply.results[0].error.attempts, 20)
        took = time.monotonic() - t0
        self.assertLess(took, 1.5 + 0.5 * SLOW,
                        "Dispatch(timeout=1.5) took %.2f s" % took)
        n = len(self.rx.requests(path))
        self.assertGreaterEqual(n, 2, "no retry within 1.5 s")
        # Retries stop with the call: nothing more arrives afterwards.
        time.sleep(0.3)
        n1 = len(self.rx.requests(path))
        time.sleep(1.2)
        n2 = len(self.rx.requests(path))
        self.assertEqual(n1, n2, "retries went on after the call ended")
        self.assertLessEqual(n1, n + 1)

    def test_keep_alive(self):
        key, path = "wh-keepalive", "/keepalive"
        hid = self.add_webhook(key, path).handler_id
        for i in range(6):
            res = self.dispatch(update_req(key, int64_value=i)).results[0]
            self.assert_ok(res, hid)
        reqs = self.rx.requests(path)
        self.assertEqual(len(reqs), 6)
        peers = {r.peer for r in reqs}
        self.assertEqual(len(peers), 1, "sequential deliveries to one "
                         "receiver did not reuse the connection: %r" % peers)

    def test_redirect_not_followed(self):
        key, path = "wh-redirect", "/redirect"
        self.rx.script(path, [(302, {"Location": self.rx.url("/elsewhere")},
                               b"", 0)])
        hid = self.add_webhook(key, path).handler_id
        res = self.dispatch(update_req(key, json_value="1")).results[0]
        self.assert_failed(res, hid)
        self.assertEqual(res.error.http_status, 302)
        self.assertEqual(res.error.attempts, 1)
        time.sleep(0.2)
        self.assertEqual(len(self.rx.requests(path)), 1)
        self.assertEqual(self.rx.requests("/elsewhere"), [])

    # -- registration ----------------------------------------------------

    def test_invalid_urls(self):
        cases = {
            "ftp://x/": ("ftp", "scheme"),
            "not a url": ("url",),
            "http://169.254.169.254/latest/meta-data": ("169.254", "link"),
            "http://[fe80::1]/": ("fe80", "link"),
            "": ("url", "empty"),
            "http://user:pw@example.com/": ("password", "user"),
        }
        for i, (url, words) in enumerate(cases.items()):
            with self.subTest(url):
                key = "wh-badurl-%d" % i
                err = self.assert_status(
                    grpc.StatusCode.INVALID_ARGUMENT, self.stub.AddHandler,
                    pb.AddHandlerRequest(key=key, target=pb.Target(
                        webhook=pb.Webhook(url=url))))
                details = err.details().lower()
                self.assertTrue(any(w in details for w in words),
                                "%r does not name the problem (%r)"
                                % (err.details(), words))
                self.assert_status(grpc.StatusCode.NOT_FOUND,
                                   self.stub.ListHandlers,
                                   pb.ListHandlersRequest(key=key))
        with self.subTest("link-local as an event-stream route"):
            self.assert_status(
                grpc.StatusCode.INVALID_ARGUMENT, self.stub.AddHandler,
                pb.AddHandlerRequest(key="wh-badurl-route", routes={
                    "update": pb.Target(webhook=pb.Webhook(
                        url="http://169.254.169.254/"))}))
        with self.subTest("bad secret"):
            err = self.assert_status(
                grpc.StatusCode.INVALID_ARGUMENT, self.stub.AddHandler,
                pb.AddHandlerRequest(key="wh-badsecret", target=pb.Target(
                    webhook=self.webhook("/x", secret="not-a-secret"))))
            self.assertIn("secret", err.details().lower())
            self.assertNotIn("not-a-secret", err.details())

    def test_event_stream_routes(self):
        key, path = "wh-routes", "/routed"
        self.rx.script(path, [(200, {}, '{"routed":1}', 0)])
        reply = self.add(key, routes={
            "update": pb.Target(webhook=self.webhook(path)),
            "error": pb.Target(local="count")})
        sid = reply.handler_id
        listed = self.stub.ListHandlers(pb.ListHandlersRequest(key=key),
                                        timeout=RPC_TIMEOUT).handlers
        self.assertEqual(len(listed), 1)
        self.assertEqual(listed[0].kind, pb.EVENT_STREAM)
        self.assertEqual(dict(listed[0].routes),
                         {"update": "webhook:" + self.rx.url(path),
                          "error": "local:count"})

        upd = self.dispatch(update_req(key, json_value='{"u":1}'))
        self.assertEqual(len(upd.results), 1, upd)
        self.assert_ok(upd.results[0], sid)
        self.assertEqual(json.loads(upd.results[0].value.json_value),
                         {"routed": 1})
        r = self.one_request(path)
        self.assertEqual(json.loads(r.body)["type"], "handlers.v1.update")

        err = self.dispatch(pb.DispatchRequest(
            key=key, event="error",
            error=pb.ErrorArgs(code=2, description="bad")))
        self.assertEqual(len(err.results), 1, err)
        self.assert_ok(err.results[0], sid, local=True)
        self.assertEqual(err.results[0].value.int64_value, 1)
        sub = self.dispatch(pb.DispatchRequest(
            key=key, event="subscribe",
            subscribe=pb.SubHandlerArgs(topic_path="x")))
        self.assertEqual(len(sub.results), 0, sub)
        time.sleep(0.2)
        self.assertEqual(len(self.rx.requests(path)), 1,
                         "error/subscribe reached the update webhook")

    def test_event_filter(self):
        key, path = "wh-filter", "/filtered"
        hid = self.add_webhook(key, path, events=["close"]).handler_id
        upd = self.dispatch(update_req(key, json_value="1"))
        self.assertEqual(len(upd.results), 0, upd)
        cls = self.dispatch(pb.DispatchRequest(
            key=key, event="close",
            subscribe=pb.SubHandlerArgs(topic_path="f/1")))
        self.assertEqual(len(cls.results), 1)
        self.assert_ok(cls.results[0], hid)
        r = self.one_request(path)
        self.assertEqual(json.loads(r.body)["type"], "handlers.v1.close")


class TestDenyPrivate(_WebhookCase):
    """handlerd --webhook-deny-private refuses loopback and private ranges,
    checked on the resolved address."""

    EXTRA_ARGS = ("--webhook-deny-private",)

    def test_loopback_refused(self):
        port = self.rx.port
        for i, url in enumerate(["http://127.0.0.1:%d/" % port,
                                 "http://localhost:%d/" % port,
                                 "http://[::1]:%d/" % port,
                                 "http://10.1.2.3/",
                                 "http://192.168.0.1/",
                                 "http://169.254.169.254/"]):
            with self.subTest(url):
                key = "deny-%d" % i
                err = self.assert_status(
                    grpc.StatusCode.INVALID_ARGUMENT, self.stub.AddHandler,
                    pb.AddHandlerRequest(key=key, target=pb.Target(
                        webhook=pb.Webhook(url=url))))
                self.assertTrue(err.details())
                self.assert_status(grpc.StatusCode.NOT_FOUND,
                                   self.stub.ListHandlers,
                                   pb.ListHandlersRequest(key=key))
        self.assertEqual(self.rx.requests(), [])
        # Local functions still work.
        hid = self.add_local("deny-local", "count")
        res = self.dispatch(update_req("deny-local", json_value="1"))
        self.assert_ok(res.results[0], hid, local=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
