#!/usr/bin/python3
"""Writes the seed corpora under tests/fuzz/seeds/<target>/: small valid
inputs and edge cases for each fuzz target. Protobuf messages are encoded
from text format with `protoc --encode` (Debian's protobuf-compiler), so
nothing beyond python3 and protoc is needed.

    tests/fuzz/make_seeds.py        # (re)writes the seeds it makes
    tests/fuzz/make_seeds.py DIR    # the same, into DIR/<target>/

Only the files named below are written. Everything else in a seed directory
is kept as it is: inputs a fuzzer found (regressions, named after the bug,
e.g. fuzz_control/overlong-tag0-unknown-field) are committed there by hand
and must survive a regeneration. The script never deletes a file; it lists
the ones it kept. A seed renamed or dropped here is removed by hand.
"""
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
PROTO_DIR = os.path.join(ROOT, "proto")
PROTO = os.path.join(PROTO_DIR, "handlers", "v1", "handlers.proto")
SEEDS = os.path.join(HERE, "seeds")

# Committed inputs this script does not make (fuzzer finds); listed so a
# missing one is noticed. Each has a unit test for its bug as well.
REGRESSIONS = {
    # 82f7007: an overlong tag-0 unknown field does not survive
    # re-encoding; AddHandler refuses it (test_control.c:
    # test_add_refuses_a_request_that_does_not_reencode).
    "fuzz_control": ["overlong-tag0-unknown-field"],
    # 774f64c: handlerctl stream -o json dropped a failure whose message
    # quotes bytes that are not UTF-8 (tests/unit/cli/test_cli_stream.c).
    "fuzz_ndjson": ["bad-utf8-in-error-message"],
    # c128451: a JSON scalar followed by NUL is not JSON (test_webhook.c:
    # test_json_then_nul_is_binary).
    "fuzz_webhook_body": ["json-body-with-nul", "json-true-then-nul"],
}


def pb(message, text):
    """`text` (protobuf text format) encoded as handlers.v1.<message>."""
    return subprocess.run(
        ["protoc", "--encode=handlers.v1." + message, "-I", PROTO_DIR, PROTO],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


def write(root, target, seeds):
    """Writes `seeds` ({name: bytes}) into root/target/, leaving every other
    file there alone; returns the names of those others."""
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        if os.sep in name or name.startswith("."):
            raise ValueError("bad seed name %r" % name)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    missing = [n for n in REGRESSIONS.get(target, ())
               if not os.path.exists(os.path.join(d, n))]
    if missing:
        sys.stderr.write("make_seeds.py: %s: regression input(s) missing: %s "
                         "(restore them from git)\n"
                         % (target, ", ".join(missing)))
    return sorted(set(os.listdir(d)) - set(seeds))


# ---- fuzz_dispatch: DispatchRequest bytes ---------------------------------
DISPATCH = {
    "update_json": 'key: "prices" event: "update" update { topic_path: '
                   '"prices/eur" topic_value { json_value: "{\\"bid\\":1.25}" } '
                   'old_value { json_value: "{\\"bid\\":1.2}" } '
                   'topic_spec { type: JSON properties { key: "a" value: "b" } } }',
    "update_int64": 'key: "all" event: "update" update { topic_path: "a/b" '
                    'topic_value { int64_value: -9223372036854775808 } }',
    "update_double": 'key: "k" event: "update" update { topic_path: "d" '
                     'topic_value { double_value: 1e308 } }',
    "update_binary": 'key: "all" event: "update" update { topic_path: "bin" '
                     'topic_value { binary_value: "\\000\\377\\376" } }',
    "subscribe": 'key: "all" event: "subscribe" subscribe { topic_path: "x/y" '
                 'topic_value { string_value: "caf\\303\\251" } '
                 'topic_spec { type: STRING } }',
    "close": 'key: "prices" event: "close" subscribe { topic_path: "x" }',
    "unsubscribe": 'key: "k" event: "unsubscribe" unsubscribe { topic_path: '
                   '"p" reason: BRANCH_MAPPINGS topic_value { record_v2_value: '
                   '"\\001\\002" } }',
    "error": 'key: "prices" event: "error" error { code: -1 description: '
             '"boom" }',
    "response": 'key: "all" event: "response" response { conversation_id: '
                '"c1" sender_session_id: "s1" path: "q" expected: 3 '
                'received: 2 response { json_value: "[1,2,3]" } }',
    "custom_none": 'key: "all" event: "my.custom"',
    "custom_args": 'key: "k" event: "tick" update { topic_path: "t" }',
    "unknown_key": 'key: "nobody" event: "update" update { topic_path: "t" }',
    "bad_json": 'key: "k" event: "update" update { topic_path: "t" '
                'topic_value { json_value: "{not json" } }',
    "wrong_args": 'key: "k" event: "update" error { code: 1 }',
    "empty_value": 'key: "k" event: "update" update { topic_path: "t" '
                   'topic_value { } }',
    "empty_path": 'key: "k" event: "update" update { topic_path: "" }',
    "long_path": 'key: "k" event: "update" update { topic_path: "%s" }'
                 % ("p" * 1025),
}

# ---- fuzz_control: [op][len u16 BE][message]... ----------------------------
def op(code, data):
    return bytes([code]) + struct.pack(">H", len(data)) + data


ADD = lambda t: op(0, pb("AddHandlerRequest", t))
REMOVE = lambda t: op(1, pb("RemoveHandlerRequest", t))
LIST = lambda t: op(2, pb("ListHandlersRequest", t))

CONTROL = {
    "add_local": ADD('key: "prices" target { local: "count" }'),
    "add_remove": ADD('key: "prices" target { local: "echo" }') +
                  REMOVE('handler_id: "$0"') + LIST(''),
    "add_events": ADD('key: "k" target { local: "last_value" } '
                      'events: "update" events: "subscribe"') + LIST('key: "k"'),
    "add_routes": ADD('key: "k" routes { key: "update" value { local: "echo" } }'
                      ' routes { key: "error" value { local: "log" } }'),
    "add_webhook": ADD('key: "hooks" target { webhook { url: '
                       '"https://example.test/hook" new_secret: true '
                       'headers { key: "x-tenant" value: "a" } timeout_ms: 100 '
                       'max_attempts: 3 binary_mode: true } }'),
    "add_webhook_secret": ADD(
        'key: "hooks" target { webhook { url: "http://93.184.216.34:8080/x" '
        'secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" } }'),
    "route_webhook_new_secret": ADD(
        'key: "r" routes { key: "update" value { webhook { url: '
        '"https://hooks.example.com/a" new_secret: true } } } '
        'routes { key: "close" value { local: "count" } }') + LIST(''),
    "webhook_refused": ADD('key: "x" target { webhook { url: '
                           '"http://169.254.169.254/latest" } }') +
                       ADD('key: "x" target { webhook { url: '
                           '"http://127.0.0.1/" } }') +
                       ADD('key: "x" target { webhook { url: "ftp://a/" } }'),
    "bad_header": ADD('key: "x" target { webhook { url: "https://a.example/" '
                      'headers { key: "content-type" value: "x" } } }'),
    "bad_requests": ADD('key: "" target { local: "echo" }') +
                    ADD('key: "k"') +
                    ADD('key: "k" target { local: "nope" }') +
                    ADD('key: "k" target { } events: ""'),
    "remove_unknown": REMOVE('key: "nokey" handler_id: "h-000000000000"') +
                      ADD('key: "k" target { local: "echo" }') +
                      REMOVE('key: "k" handler_id: "h-000000000000"') +
                      REMOVE('key: "other" handler_id: "$0"') +
                      REMOVE('handler_id: "$0"') + REMOVE('handler_id: "$0"'),
    "many": b"".join(ADD('key: "k%d" target { local: "count" }' % (i % 3))
                     for i in range(6)) + REMOVE('handler_id: "$3"') + LIST(''),
}

# ---- fuzz_event_json: the reader's layout (see fuzz_event_json.c) ---------
def s(text):
    b = text.encode() if isinstance(text, str) else text
    assert len(b) < 255
    return bytes([len(b)]) + b


def u32(v):
    return struct.pack(">I", v & 0xffffffff)


def u64(v):
    return struct.pack(">Q", v & 0xffffffffffffffff)


def val(kind, payload=b""):
    return bytes([kind]) + payload


NONE = val(0)
EVENT_JSON = {
    "update": bytes([0, 2]) + s("prices") + s("update") + s("prices/eur") +
              val(1, s('{"bid":1.25}')) + val(3, u64(5)) + bytes([0x01]) +
              bytes([2]) + bytes([0]) + s("a") + s("b") + bytes([0]) + s("c") +
              s("d") + u64(1764085560610744000) + s("id-1") + s("//src"),
    "invalid_utf8": bytes([0, 1]) + s(b"k\xff") + s(b"n\xc3") + s(b"\xed\xa0\x80") +
                    val(2, s(b"\xf4\x90\x80\x80x")) + val(5, s(b"\x00\x01")) +
                    bytes([0x03]) + u32(0xffffffff) + bytes([1]) + bytes([0]) +
                    s(b"\xc0\xaf") + s(b"v") + u64(0) + s(b"\xff") + s(b"src"),
    "nan_double": bytes([0, 3]) + s("k") + s("unsubscribe") + s("p") +
                  val(4, u64(0x7ff8000000000001)) + val(4, u64(0xfff0000000000000)) +
                  bytes([0x80]) + u32(99) + bytes([0]) + u64(-1) + s("") + s(""),
    "error_nulls": bytes([0x7f, 4]) + u32(-5) + u64(2**63 - 1),
    "response": bytes([0, 5]) + s("k") + s("response") + s("conv") + s("sess") +
                s("a b\r\nc") + u32(1) + u32(2) + val(1, s('{"x":"\\u0000"}')) +
                u64(-(2**63)) + s("i") + s("s"),
    "json_nul": bytes([0, 2]) + s("k") + s("update") + s("p") +
                val(1, s(b'"a\x00b"')) + val(0x86, s("dGVzdA==")) + bytes([0]) +
                bytes([0]) + u64(1) + s("") + s(""),
    "custom": bytes([0, 0]) + s("k") + s("custom.name") + u64(7) + s("") + s(""),
}

# ---- fuzz_webhook_url: [flags][url] ---------------------------------------
URLS = {
    "https_name": b"\x00https://example.com/hook?x=1",
    "http_port": b"\x00http://93.184.216.34:8080/a",
    "deny_private_name": b"\x01https://hooks.example.net/x",
    "v4_literal_private": b"\x01http://10.0.0.1/",
    "v4_linklocal": b"\x00http://169.254.169.254/latest/meta-data",
    "v4_decimal": b"\x01http://2852039166/",
    "v4_hex_short": b"\x01http://0x7f.1/",
    "v6_literal": b"\x00http://[2001:db8::1]:8443/p",
    "v6_linklocal_zone": b"\x00http://[fe80::1%25eth0]/",
    "v6_mapped": b"\x01http://[::ffff:127.0.0.1]/",
    "nat64": b"\x01http://[64:ff9b::a9fe:a9fe]/",
    "localhost": b"\x01http://localhost./",
    "sub_localhost": b"\x01http://a.b.localhost/",
    "userinfo": b"\x00https://user:pw@example.com/",
    "ftp": b"\x00ftp://example.com/",
    "no_scheme": b"\x00example.com/x",
    "prefix_http": b"\x02example.org/path",
    "prefix_bracket": b"\x06::1]/x",
    "trailing_dot": b"\x01http://127.0.0.1./",
    "empty": b"\x00",
}

# ---- fuzz_webhook_body: [limit][chunking][status hi][status lo][headers\r\n\r\n]body
def body(limit, chunking, status, headers, data):
    h = b"".join(x + b"\r\n" for x in headers)
    head = bytes([limit, chunking]) + struct.pack(">H", status)
    return head + (h + b"\r\n" + data if headers else data)


BODIES = {
    "json": body(7, 0, 200, [b"HTTP/1.1 200 OK", b"Content-Type: application/json"],
                 b'{"ok":true,"n":[1,2,3]}'),
    "text": body(7, 3, 200, [], "caf\u00e9 ok".encode()),
    "binary": body(7, 0x80, 200, [], b"\x00\x01\xff\xfe"),
    "empty": body(7, 0, 204, [b"HTTP/1.1 204 No Content"], b""),
    "cut_utf8": body(2, 0, 200, [], "\u00e9\u00e9\u00e9".encode()),
    "cut_4byte": body(5, 1, 200, [], ("a" * 253 + "\U0001F600").encode()),
    "json_truncated": body(3, 0, 200, [], b'{"long":"' + b"x" * 100 + b'"}'),
    "big": body(0x87, 5, 200, [], "\u20ac".encode()),
    "retry_after": body(7, 0, 503, [b"HTTP/1.1 503 Service Unavailable",
                                    b"Retry-After: 120", b"retry-after:\t 5 "],
                        b"busy"),
    "retry_after_date": body(7, 0, 429, [b"Retry-After: Wed, 21 Oct 2015 07:28:00 GMT"],
                             b""),
    "json_scalar": body(6, 0, 201, [], b" 42 "),
    "json_nul_escape": body(7, 0, 200, [], b'"a\\u0000b"'),
}

# ---- fuzz_ndjson: handlerctl stream input ---------------------------------
NDJSON = {
    "update": b'{"event":"update","topic":"a/b","value":{"x":1}}\n',
    "mixed": b'{"event":"subscribe","topic":"p","type":"string","value":"hi",'
             b'"topic_type":"string","properties":{"a":"b"}}\r\n'
             b'\n  \t\n'
             b'{"event":"update","key":"other","topic_path":"t","type":"int64",'
             b'"value":5,"old_value":4}\n'
             b'{"event":"unsubscribe","path":"t","reason":"BACK_PRESSURE"}\n'
             b'{"event":"unsubscribe","path":"t","reason":6}\n',
    "binary": b'{"event":"update","topic":"b","type":"binary","value":"AAH/"}\n'
              b'{"event":"update","topic":"b","type":"record_v2","value":"AQI"}\n',
    "error_response": b'{"event":"error","code":-3,"description":"x"}\n'
                      b'{"event":"response","args":"response","conversation_id":"c",'
                      b'"sender_session_id":"s","path":"q","expected":2,'
                      b'"received":1,"response":[1,2]}\n',
    "double": b'{"event":"update","topic":"d","type":"double","value":1e308}\n'
              b'{"event":"update","topic":"d","type":"double","value":-0.0}\n',
    "bad_lines": b'not json\n[1,2]\n{"event":""}\n{"event":"x","bogus":1}\n'
                 b'{"event":"x","code":4294967296}\n{"event":"x","type":"nope"}\n'
                 b'{"event":"x","value":1,"response":2}\n'
                 b'{"event":"x","topic":"a","path":"b"}\n'
                 b'{"event":"x","type":"binary","value":"@@"}\n'
                 b'{"event":"x","reason":"SIDEWAYS"}\n',
    "custom_args": b'{"event":"my.custom","args":"none"}\n'
                   b'{"event":"tick","args":"update","topic":"t","value":null}\n',
    "no_newline": b'{"event":"update","topic":"z","value":"\\u00e9"}',
    "nul_byte": b'{"event":"update"}\x00\n{"event":"close","topic":"c"}\n',
}


def main():
    if len(sys.argv) > 2:
        sys.exit("usage: make_seeds.py [DIR]")
    root = sys.argv[1] if len(sys.argv) == 2 else SEEDS
    if shutil.which("protoc") is None:
        sys.exit("make_seeds.py: needs protoc (apt-get install protobuf-compiler)")
    corpora = [
        ("fuzz_dispatch",
         {n: pb("DispatchRequest", t) for n, t in DISPATCH.items()}),
        ("fuzz_control", CONTROL),
        ("fuzz_event_json", EVENT_JSON),
        ("fuzz_webhook_url", URLS),
        ("fuzz_webhook_body", BODIES),
        ("fuzz_ndjson", NDJSON),
    ]
    for target, seeds in corpora:
        kept = write(root, target, seeds)
        print("%s: wrote %d seed(s)%s" % (
            target, len(seeds),
            "; kept %d not made here: %s" % (len(kept), ", ".join(kept))
            if kept else ""))


if __name__ == "__main__":
    main()
