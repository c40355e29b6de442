"""handlerctl CLI tests: the real handlerctl binary (HANDLERCTL_BIN) run as a
process against the real handlerd (HANDLERD_BIN), checking stdout (tables and
-o json), stderr and exit codes of every subcommand and error path, and
running the examples of client/README.md.

Run by CTest as `/usr/bin/python3 tests/integration/test_handlerctl.py`.
Standard library only (plus hd_harness and webhook_receiver).
"""

import http.server
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402
from hd_harness import CLI_TIMEOUT, clean_env, parse_table  # noqa: E402
from webhook_receiver import closed_port  # noqa: E402

EXIT_OK, EXIT_RPC, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
ERROR_LINE = re.compile(r"^handlerctl: [A-Z_]+: .+$")

HANDLERCTL = hd_harness.HANDLERCTL
if not HANDLERCTL:
    # Not a pass: fails with CI=true, else a loud skip (exit SKIP_EXIT).
    hd_harness.require_or_skip("HANDLERCTL_BIN is not set (no handlerctl "
                               "target when cmake ran: build client/ and "
                               "re-run cmake)", whole_suite=True)
if not os.access(HANDLERCTL, os.X_OK):
    sys.stderr.write("test_handlerctl: HANDLERCTL_BIN=%s is not executable\n"
                     % HANDLERCTL)
    sys.exit(2)

run_cli = hd_harness.run_handlerctl


class _UsageChecks:
    """Checks of handlerctl's usage errors and --help, for a TestCase with
    a cli(*args) method."""

    def assert_usage_errors(self, cases):
        """Each (args, text) of `cases` exits 2 naming `text` with a
        pointer to --help, and prints nothing on stdout."""
        for args, text in cases:
            with self.subTest(args=args):
                p = self.cli(*args)
                self.assertEqual(p.returncode, EXIT_USAGE,
                                 "%r: %r" % (args, p.stderr))
                self.assertIn(text, p.stderr)
                self.assertIn("--help", p.stderr)
                self.assertEqual(p.stdout, "")

    def assert_help_names(self, expect):
        """Each command of `expect` ({command: strings}) is listed by
        --help, and its own --help is its usage, naming every string."""
        top = run_cli(["--help"], check=EXIT_OK).stdout
        for cmd, opts in expect.items():
            with self.subTest(cmd=cmd):
                self.assertRegex(top, r"\n  %s +\S" % cmd)
                p = run_cli([cmd, "--help"], check=EXIT_OK)
                self.assertTrue(
                    p.stdout.startswith("usage: handlerctl " + cmd),
                    p.stdout[:80])
                for opt in opts:
                    self.assertIn(opt, p.stdout)


class Receiver:
    """A tiny HTTP webhook receiver answering 200 {"received": true}."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.requests.append((self.path, dict(self.headers), body))
                data = b'{"received":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class CliCase(_UsageChecks, unittest.TestCase):
    EXTRA_ARGS = ()

    @classmethod
    def setUpClass(cls):
        plugin = os.environ.get("HD_EXAMPLE_PLUGIN")
        args = list(cls.EXTRA_ARGS)
        if plugin and os.path.exists(plugin):
            args += ["--plugin", plugin]
        cls.has_plugin = "--plugin" in args
        cls.server = hd_harness.Handlerd(args)
        cls.server.start()
        cls.addr = cls.server.address

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def cli(self, *args, **kw):
        kw.setdefault("addr", self.addr)
        return run_cli(args, **kw)

    def ok(self, *args, **kw):
        return self.cli(*args, check=EXIT_OK, **kw)

    def ok_json(self, *args, **kw):
        p = self.ok("-o", "json", *args, **kw)
        try:
            return json.loads(p.stdout)
        except ValueError as e:
            raise AssertionError("not one JSON document (%s): %r"
                                 % (e, p.stdout))

    def assert_error(self, p, code, status=None, contains=None):
        self.assertEqual(p.returncode, code,
                         "exit %d, expected %d; stderr: %r"
                         % (p.returncode, code, p.stderr))
        lines = p.stderr.splitlines()
        self.assertTrue(lines, "no message on stderr")
        if status is not None:
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertRegex(lines[0], ERROR_LINE)
            self.assertTrue(lines[0].startswith("handlerctl: %s: " % status),
                            lines[0])
        if contains is not None:
            self.assertIn(contains, p.stderr)
        self.assertEqual(p.stdout, "", "stdout not empty on failure")

    def add_local(self, key, name, *extra):
        p = self.ok("add", "--key", key, "--local", name, "-q", *extra)
        hid = p.stdout.strip()
        self.assertRegex(hid, r"^\S+$")
        return hid


class TestCommands(CliCase):
    """Every subcommand's happy path, tables and JSON."""

    def test_version_and_help(self):
        p = run_cli(["--version"], check=EXIT_OK)
        self.assertRegex(p.stdout, r"^handlerctl \d+\.\d+\.\d+\n$")
        p = run_cli(["--help"], check=EXIT_OK)
        for cmd in ("health", "list", "add", "remove", "dispatch", "stream"):
            self.assertIn(cmd, p.stdout)
            for form in ([cmd, "--help"], [cmd, "-h"], ["help", cmd]):
                q = run_cli(form, check=EXIT_OK)
                self.assertTrue(q.stdout.startswith("usage: handlerctl " + cmd),
                                q.stdout[:80])
                self.assertEqual(q.stderr, "")
        q = run_cli(["add", "--help"], check=EXIT_OK)
        for opt in ("--webhook", "--local", "--route", "--events", "--secret",
                    "--new-secret", "--header", "--timeout-ms",
                    "--max-attempts", "--binary-mode"):
            self.assertIn(opt, q.stdout)

    def test_health_quiet_and_json(self):
        p = self.ok("health")
        self.assertEqual((p.stdout, p.stderr), ("", ""))
        self.assertEqual(self.ok_json("health"), {"status": "SERVING"})
        # Global options after the command, and the address as a flag.
        p = run_cli(["health", "--addr", self.addr, "--timeout-ms", "3000"],
                    check=EXIT_OK)
        self.assertEqual(p.stdout, "")
        self.ok("health", "--service", "handlers.v1.Handlers")
        p = self.cli("health", "--service", "no.such.Service")
        self.assert_error(p, EXIT_RPC, "NOT_FOUND")

    def test_add_list_remove(self):
        key = "cli-admin"
        p = self.ok("add", "--key", key, "--local", "count")
        rows = parse_table(p.stdout)
        self.assertEqual(len(rows), 1, p.stdout)
        self.assertEqual(rows[0]["KEY"], key)
        count_id = rows[0]["HANDLER"]
        doc = self.ok_json("add", "--key", key, "--local", "echo",
                           "--events", "update,subscribe")
        self.assertEqual(doc["key"], key)
        echo_id = doc["handler_id"]
        self.assertNotIn("secret", doc)
        doc = self.ok_json("add", "--key", key, "--route",
                           "update=local:last_value", "--route",
                           "error=local:log")
        stream_id = doc["handler_id"]

        rows = parse_table(self.ok("list", "--key", key).stdout)
        self.assertEqual([r["HANDLER"] for r in rows],
                         [count_id, echo_id, stream_id])
        self.assertEqual(rows[0]["KIND"], "simple")
        self.assertEqual(rows[0]["TARGET"], "local:count")
        self.assertEqual(rows[0]["EVENTS"], "*")
        self.assertEqual(rows[1]["EVENTS"], "update,subscribe")
        self.assertEqual(rows[2]["KIND"], "event-stream")
        self.assertIn("update=local:last_value", rows[2]["TARGET"])
        self.assertIn("error=local:log", rows[2]["TARGET"])
        for r in rows:
            self.assertEqual(r["SECRET"], "-")

        doc = self.ok_json("list", "--key", key)
        self.assertEqual(list(doc), ["handlers"])
        hs = doc["handlers"]
        self.assertEqual([(h["key"], h["handler_id"], h["kind"]) for h in hs],
                         [(key, count_id, "simple"), (key, echo_id, "simple"),
                          (key, stream_id, "event-stream")])
        self.assertEqual(hs[1]["events"], ["update", "subscribe"])
        self.assertEqual(hs[2]["routes"], {"update": "local:last_value",
                                           "error": "local:log"})
        self.assertEqual(hs[0]["target"], "local:count")
        self.assertFalse(hs[0]["secret_set"])

        # All keys: ours among them, sorted by key.
        every = self.ok_json("list")["handlers"]
        self.assertIn(echo_id, [h["handler_id"] for h in every])
        keys = [h["key"] for h in every]
        self.assertEqual(keys, sorted(keys))

        p = self.ok("remove", "--key", key, "--id", echo_id)
        self.assertIn(echo_id, p.stdout)
        doc = self.ok_json("remove", "--key", key, "--id", count_id)
        self.assertEqual(doc, {"key": key, "handler_id": count_id,
                               "removed": True})
        rows = parse_table(self.ok("list", "--key", key).stdout)
        self.assertEqual([r["HANDLER"] for r in rows], [stream_id])

    def test_dispatch_table_and_json(self):
        key = "cli-dispatch"
        count_id = self.add_local(key, "count")
        echo_id = self.add_local(key, "echo")
        p = self.ok("dispatch", "--key", key, "--event", "update", "--topic",
                    "a/b", "--value", '{"x":1}')
        rows = parse_table(p.stdout)
        self.assertEqual([(r["HANDLER"], r["OK"]) for r in rows],
                         [(count_id, "ok"), (echo_id, "ok")])
        self.assertEqual(rows[0]["RESULT"], "1")
        echoed = json.loads(rows[1]["RESULT"])
        self.assertEqual(echoed["topicPath"], "a/b")
        self.assertEqual(echoed["topicValue"], {"jsonValue": {"x": 1}})

        doc = self.ok_json("dispatch", "--key", key, "--event", "update",
                           "--topic", "a/b", "--value", '{"x":2}',
                           "--old-value", '{"x":1}')
        res = doc["results"]
        self.assertEqual([r["handler_id"] for r in res], [count_id, echo_id])
        self.assertTrue(all(r["ok"] for r in res))
        self.assertEqual(res[0]["value"], {"type": "int64", "value": 2})
        self.assertEqual(res[1]["value"]["type"], "json")
        echoed = res[1]["value"]["value"]
        self.assertEqual(echoed["event"], "update")
        self.assertEqual(echoed["key"], key)
        self.assertEqual(echoed["oldValue"], {"jsonValue": {"x": 1}})
        self.assertIsInstance(res[0]["duration_ns"], int)
        self.assertFalse(res[0]["truncated"])
        self.assertNotIn("error", res[0])

    def echo(self, key, *args):
        """Dispatches with `args` to a key with only `echo`; the echo."""
        doc = self.ok_json("dispatch", "--key", key, *args)
        self.assertEqual(len(doc["results"]), 1, doc)
        r = doc["results"][0]
        self.assertTrue(r["ok"], r)
        return r["value"]["value"]

    def test_dispatch_value_types_and_args(self):
        key = "cli-types"
        self.add_local(key, "echo")
        e = self.echo(key, "--event", "update", "--topic", "t", "--type",
                      "string", "--value", "hello")
        self.assertEqual(e["topicValue"], {"stringValue": "hello"})
        e = self.echo(key, "--event", "update", "--topic", "t", "--type",
                      "int64", "--value", "-42", "--old-value", "7")
        self.assertEqual(e["topicValue"], {"int64Value": "-42"})
        self.assertEqual(e["oldValue"], {"int64Value": "7"})
        e = self.echo(key, "--event", "update", "--topic", "t", "--type",
                      "double", "--value", "2.5")
        self.assertEqual(e["topicValue"], {"doubleValue": 2.5})
        e = self.echo(key, "--event", "subscribe", "--topic", "t", "--type",
                      "binary", "--value", "AAEC/w==", "--topic-type",
                      "binary", "--property", "PERSISTENT=true")
        self.assertEqual(e["topicValue"], {"binaryValue": "AAEC/w=="})
        self.assertEqual(e["event"], "subscribe")
        e = self.echo(key, "--event", "unsubscribe", "--topic", "t",
                      "--reason", "BRANCH_MAPPINGS")
        self.assertEqual(e.get("reason"), "BRANCH_MAPPINGS", e)
        e = self.echo(key, "--event", "error", "--code", "42",
                      "--description", "feed lost")
        self.assertEqual((e.get("code"), e.get("description")),
                         (42, "feed lost"), e)
        e = self.echo(key, "--event", "response", "--conversation-id", "c-1",
                      "--sender-session-id", "s-1", "--path", "p/q",
                      "--expected", "2", "--received", "1", "--response",
                      '{"ack":true}')
        flat = json.dumps(e)
        for text in ("c-1", "s-1", "p/q", "ack"):
            self.assertIn(text, flat)
        e = self.echo(key, "--event", "my-custom")
        self.assertEqual(e["event"], "my-custom")

    def test_dispatch_no_result_and_failed_result(self):
        key = "cli-routes"
        self.ok("add", "--key", key, "--route", "error=local:echo")
        p = self.ok("dispatch", "--key", key, "--event", "update", "--topic",
                    "t", "--value", "1")
        self.assertIn("no handler produced a result", p.stdout)
        self.assertEqual(self.ok_json("dispatch", "--key", key, "--event",
                                      "update", "--topic", "t",
                                      "--value", "1"), {"results": []})

    def test_plugin_function(self):
        if not self.has_plugin:
            hd_harness.require_or_skip(
                "HD_EXAMPLE_PLUGIN (%s) is not a file: build the "
                "example_plugin target" % os.environ.get("HD_EXAMPLE_PLUGIN"))
        key = "cli-plugin"
        self.add_local(key, "double_it")
        doc = self.ok_json("dispatch", "--key", key, "--event", "update",
                           "--topic", "n", "--type", "int64", "--value", "21")
        self.assertEqual(doc["results"][0]["value"],
                         {"type": "int64", "value": 42})

    def test_stream_1000_with_bad_line(self):
        key = "cli-stream"
        count_id = self.add_local(key, "count")
        lines = []
        for i in range(1000):
            if i == 499:
                lines.append('{"event": "update", "topic": ')  # line 500
            else:
                lines.append(json.dumps({"event": "update",
                                         "topic": "s/%d" % (i % 7),
                                         "value": {"i": i}}))
        text = "\n".join(lines) + "\n"
        p = self.cli("stream", "--key", key, stdin_text=text)
        self.assertEqual(p.returncode, EXIT_RPC, p.stderr)
        m = re.fullmatch(r"sent (\d+), ok (\d+), failed (\d+), (\d+) events/s\n",
                         p.stdout)
        self.assertTrue(m, p.stdout)
        self.assertEqual([int(x) for x in m.groups()[:3]], [999, 999, 1])
        # The bad line is named; no progress line without a terminal.
        self.assertEqual(p.stderr.splitlines(),
                         [l for l in p.stderr.splitlines()
                          if l.startswith("handlerctl: line 500: BAD_LINE: ")])
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertNotIn("\r", p.stderr)
        # Every good event reached the count handler.
        doc = self.ok_json("dispatch", "--key", key, "--event", "update",
                           "--topic", "s/0", "--value", "0")
        self.assertEqual(doc["results"][0]["handler_id"], count_id)
        self.assertEqual(doc["results"][0]["value"]["value"], 1000)

        # -o json: one document with the counts and the error.
        p = self.cli("-o", "json", "stream", "--key", key, stdin_text=text)
        self.assertEqual(p.returncode, EXIT_RPC)
        doc = json.loads(p.stdout)
        self.assertEqual((doc["sent"], doc["ok"], doc["failed"],
                          doc["bad_lines"]), (999, 999, 1, 1))
        self.assertEqual([(e["line"], e["code"]) for e in doc["errors"]],
                         [(500, "BAD_LINE")])
        self.assertGreater(doc["events_per_second"], 0)

    def test_stream_all_good_and_mixed_events(self):
        key = "cli-stream-mixed"
        self.add_local(key, "echo")
        events = [
            {"event": "subscribe", "topic": "m", "value": {"a": 1}},
            {"event": "update", "topic": "m", "value": "x", "type": "string",
             "old_value": "w"},
            {"event": "update", "topic": "m", "value": 5, "type": "int64"},
            {"event": "unsubscribe", "topic": "m", "reason": "CONTROL"},
            {"event": "error", "code": 3, "description": "boom"},
            {"event": "response", "conversation_id": "c", "path": "m",
             "expected": 1, "received": 1, "response": [1, 2]},
        ]
        text = "\n".join(json.dumps(e) for e in events) + "\n\n"
        p = self.cli("stream", "--key", key, stdin_text=text)
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        self.assertTrue(p.stdout.startswith("sent 6, ok 6, failed 0, "),
                        p.stdout)
        self.assertEqual(p.stderr, "")

    def test_stream_server_side_errors_and_bad_fields(self):
        key = "cli-stream-err"
        self.add_local(key, "count")
        lines = [
            json.dumps({"event": "update", "topic": "a", "value": 1}),
            json.dumps({"event": "update", "topic": "a", "value": 1,
                        "key": "cli-stream-no-such-key"}),       # NOT_FOUND
            json.dumps({"event": "update", "topic": "a", "vlaue": 1}),  # field
            json.dumps({"event": "update", "type": "int64", "value": "x"}),
            json.dumps([1, 2]),
            json.dumps({"event": "update", "topic": "a", "value": 2}),
        ]
        p = self.cli("stream", "--key", key, stdin_text="\n".join(lines))
        self.assertEqual(p.returncode, EXIT_RPC)
        self.assertTrue(p.stdout.startswith("sent 3, ok 2, failed 4, "),
                        p.stdout)
        err = p.stderr
        self.assertIn("handlerctl: line 2: NOT_FOUND: no handler registered "
                      "for key 'cli-stream-no-such-key'", err)
        self.assertIn("line 3: BAD_LINE: unknown field \"vlaue\"", err)
        self.assertIn("line 4: BAD_LINE: ", err)
        self.assertIn("line 5: BAD_LINE: not a JSON object", err)

    def test_stream_without_key_when_every_line_has_one(self):
        # --key is optional: each line's own "key" routes it; a line with
        # neither is a bad line (named, counted) and the stream goes on.
        a, b = "cli-stream-nokey-a", "cli-stream-nokey-b"
        ids = {a: self.add_local(a, "count"), b: self.add_local(b, "count")}
        lines = [
            json.dumps({"event": "update", "topic": "t", "value": 1, "key": a}),
            json.dumps({"event": "update", "topic": "t", "value": 2, "key": b}),
            json.dumps({"event": "update", "topic": "t", "value": 3}),
            json.dumps({"event": "update", "topic": "t", "value": 4, "key": a}),
        ]
        p = self.cli("stream", stdin_text="\n".join(lines) + "\n")
        self.assertEqual(p.returncode, EXIT_RPC, p.stderr)
        self.assertTrue(p.stdout.startswith("sent 3, ok 3, failed 1, "),
                        p.stdout)
        self.assertEqual(p.stderr, 'handlerctl: line 3: BAD_LINE: no "key" '
                         'on this line and no --key\n')
        # Every line with a key reached that key's handler (count: the
        # streamed events plus this dispatch).
        for key, want in ((a, 3), (b, 2)):
            doc = self.ok_json("dispatch", "--key", key, "--event", "update",
                               "--topic", "t", "--value", "0")
            self.assertEqual(doc["results"][0]["handler_id"], ids[key])
            self.assertEqual(doc["results"][0]["value"]["value"], want)
        # Every line keyed: exit 0; -o json names the bad line too.
        p = self.cli("stream", stdin_text=lines[0] + "\n" + lines[1] + "\n")
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        self.assertTrue(p.stdout.startswith("sent 2, ok 2, failed 0, "),
                        p.stdout)
        doc = json.loads(self.cli("-o", "json", "stream",
                                  stdin_text=lines[2] + "\n").stdout)
        self.assertEqual((doc["sent"], doc["failed"], doc["bad_lines"]),
                         (0, 1, 1))
        self.assertEqual(doc["errors"][0]["line"], 1)
        self.assertIn('no "key" on this line and no --key',
                      doc["errors"][0]["message"])

    def test_stream_progress_on_a_terminal(self):
        key = "cli-stream-tty"
        self.add_local(key, "count")
        text = "".join(json.dumps({"event": "update", "topic": "t",
                                   "value": i}) + "\n" for i in range(200))
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(
                [HANDLERCTL, "stream", "--key", key], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=slave,
                env=clean_env(HANDLERD_ADDR=self.addr))
            os.close(slave)
            slave = None
            out, _ = proc.communicate(text.encode(), timeout=CLI_TIMEOUT)
            tty = b""
            while select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                tty += chunk
        finally:
            os.close(master)
            if slave is not None:
                os.close(slave)
        self.assertEqual(proc.returncode, EXIT_OK)
        self.assertTrue(out.startswith(b"sent 200, ok 200, failed 0"), out)
        self.assertIn(b"\rsent", tty.replace(b"\x1b[K", b""), tty)


class TestErrors(CliCase):
    """Usage errors (exit 2), server errors (1), unreachable (3)."""

    def test_usage_errors(self):
        cases = [
            (["list", "--bogus"], "unknown option '--bogus'"),
            (["--bogus", "list"], "unknown option '--bogus'"),
            (["dispatch", "--event", "update"], "missing --key"),
            (["dispatch", "--key", "k"], "missing --event"),
            (["remove", "--id", "x"], "missing --key"),
            (["remove", "--key", "k"], "missing --id"),
            (["add", "--local", "echo"], "missing --key"),
            (["add", "--key", "k"], "--local NAME, --webhook URL or --route"),
            (["add", "--key", "k", "--local", "echo", "--webhook",
              "http://x/"], "exclude each other"),
            (["add", "--key", "k", "--route", "update"], "EVENT=TARGET"),
            (["add", "--key", "k", "--route", "update=ftp://x"],
             "neither local:NAME nor"),
            (["add", "--key", "k", "--local", "echo", "--secret", "whsec_x"],
             "webhook options need"),
            (["add", "--key", "k", "--webhook", "http://x/", "--secret",
              "whsec_x", "--new-secret"], "exclude each other"),
            (["add", "--key", "k", "--webhook", "http://x/", "--max-attempts",
              "many"], "--max-attempts needs a positive number"),
            (["add", "--key", "k", "--webhook", "http://x/", "--header",
              "nocolon"], "--header takes"),
            (["stream", "--key", ""], "--key needs a non-empty key"),
            (["stream", "--key", "k", "file.ndjson"], "unexpected argument"),
            (["dispatch", "--key", "k", "--event", "update", "--value",
              "{not json"], "not valid JSON"),
            (["dispatch", "--key", "k", "--event", "update", "--type",
              "int64", "--value", "x"], "not a 64-bit integer"),
            (["dispatch", "--key", "k", "--event", "update", "--type",
              "yaml"], "unknown --type"),
            (["dispatch", "--key", "k", "--event", "unsubscribe",
              "--reason", "BORED"], "unknown --reason"),
            (["dispatch", "--key", "k", "--event", "error", "--code", "x"],
             "--code needs an integer"),
            (["dispatch", "--key", "k", "--event", "update", "--value"],
             "needs an argument"),
            (["-o", "yaml", "health"], "'table' or 'json'"),
            (["--timeout-ms", "0", "health"], "positive number"),
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["list", "extra"], "unexpected argument 'extra'"),
        ]
        self.assert_usage_errors(cases)
        p = self.cli()
        self.assertEqual(p.returncode, EXIT_USAGE)
        self.assertIn("usage: handlerctl", p.stderr)

    def test_not_found(self):
        key = "cli-nf-prices"
        p = self.cli("dispatch", "--key", key, "--event", "update", "--topic",
                     "a/b", "--value", '{"x":1}')
        self.assert_error(p, EXIT_RPC, "NOT_FOUND")
        self.assertEqual(p.stderr, "handlerctl: NOT_FOUND: no handler "
                         "registered for key '%s'\n" % key)
        self.assert_error(self.cli("remove", "--key", key, "--id", "h-1"),
                          EXIT_RPC, "NOT_FOUND")
        hid = self.add_local(key + "-2", "count")
        self.assert_error(self.cli("remove", "--key", key + "-2", "--id",
                                   "h-000000000000"), EXIT_RPC, "NOT_FOUND")
        self.assert_error(self.cli("remove", "--key", key, "--id", hid),
                          EXIT_RPC, "NOT_FOUND")
        self.assert_error(self.cli("list", "--key", key), EXIT_RPC,
                          "NOT_FOUND", contains=key)
        self.assert_error(self.cli("-o", "json", "list", "--key", key),
                          EXIT_RPC, "NOT_FOUND")

    def test_invalid_argument(self):
        self.assert_error(self.cli("add", "--key", "cli-ia", "--local",
                                   "no_such_function"),
                          EXIT_RPC, "INVALID_ARGUMENT")
        self.add_local("cli-ia", "echo")
        # A known event name with the wrong args (-> server-side check).
        self.assert_error(self.cli("dispatch", "--key", "cli-ia", "--event",
                                   "update", "--args", "error"),
                          EXIT_RPC, "INVALID_ARGUMENT")

    def test_unreachable(self):
        port = closed_port()
        for args in (["health"], ["list"], ["-o", "json", "health"],
                     ["dispatch", "--key", "k", "--event", "update"],
                     ["add", "--key", "k", "--local", "echo"],
                     ["remove", "--key", "k", "--id", "i"],
                     ["stream", "--key", "k"]):
            with self.subTest(args=args):
                p = run_cli(["--addr", "127.0.0.1:%d" % port] + args,
                            stdin_text="{}\n")
                self.assert_error(p, EXIT_UNREACHABLE, "UNAVAILABLE",
                                  contains="127.0.0.1:%d" % port)
        # The same through HANDLERD_ADDR.
        p = run_cli(["health"], addr="127.0.0.1:%d" % port)
        self.assert_error(p, EXIT_UNREACHABLE, "UNAVAILABLE")

    def test_unreadable_tls_ca(self):
        p = self.cli("--tls-ca", "/nonexistent/ca.pem", "health")
        self.assertEqual(p.returncode, EXIT_USAGE, p.stderr)
        self.assertIn("cannot read --tls-ca /nonexistent/ca.pem", p.stderr)


class _UsageErrorCase(_UsageChecks, unittest.TestCase):
    """Usage errors that handlerctl reports before any connection: no
    handlerd is started (the address is a closed port: a command that got
    as far as connecting would exit 3)."""

    def cli(self, *args):
        return run_cli(args, addr="127.0.0.1:%d" % closed_port())


class TestAsyncUsageErrors(_UsageErrorCase):
    """Argument errors of the async delivery options and commands (add
    --async ..., deliveries, delivery, redeliver, replay, enable): exit 2
    with the reason and a pointer to --help, before any connection."""

    def test_usage_errors(self):
        hook = ["add", "--key", "k", "--webhook", "http://127.0.0.1:9/h"]
        cases = [
            (hook + ["--async", "--retry-schedule", "1s,2s"],
             "--retry-schedule: the first entry is the first attempt, made "
             "at once: it must be 0 (e.g. 0s,1s,5m), not '1s'"),
            (hook + ["--async", "--retry-schedule", "0s"],
             "no retry after the first attempt"),
            (hook + ["--async", "--retry-schedule", "0s,5x"],
             "entry '5x' is not a duration"),
            (hook + ["--async", "--retry-schedule", "0s,,1s"],
             "entry '' is not a duration"),
            (hook + ["--async", "--retry-schedule", "0s,50d"],
             "entry '50d' is too long"),
            (hook + ["--ordered"], "--ordered is for async webhooks"),
            (hook + ["--retry-schedule", "0s,1s"],
             "--retry-schedule is for async webhooks"),
            (hook + ["--max-inflight", "2"], "--max-inflight is for async"),
            (hook + ["--max-rps", "5"], "--max-rps is for async"),
            (hook + ["--async", "--max-attempts", "3"],
             "--max-attempts does not apply to --async"),
            (hook + ["--async", "--max-inflight", "0"],
             "--max-inflight needs a positive number"),
            (hook + ["--async", "--max-rps", "0"],
             "--max-rps needs a positive number"),
            (hook + ["--async", "--max-rps", "fast"],
             "--max-rps needs a positive number"),
            (["add", "--key", "k", "--local", "echo", "--async"],
             "webhook options need"),
            (["deliveries", "--state", "lost"], "unknown --state 'lost'"),
            (["deliveries", "--since", "yesterday"],
             "--since: 'yesterday' is not a time"),
            (["deliveries", "--since", "3600"], "needs a unit"),
            (["deliveries", "--until", "2026-11-30"], "has no time of day"),
            (["deliveries", "--since", "2026-02-30T00:00:00Z"],
             "is not a time"),
            (["deliveries", "--since", "1h", "--until", "2h"],
             "--since must be before --until"),
            (["deliveries", "--limit", "0"], "--limit is 1 to 1000"),
            (["deliveries", "--limit", "1001"], "--limit is 1 to 1000"),
            (["deliveries", "extra"], "unexpected argument 'extra'"),
            (["deliveries", "--key", ""], "must not be empty"),
            (["delivery"], "missing the delivery id"),
            (["delivery", "d-1", "d-2"], "unexpected argument 'd-2'"),
            (["redeliver"], "missing the delivery id"),
            (["redeliver", "d-1", "d-2"], "unexpected argument 'd-2'"),
            (["replay", "--since", "1h"], "missing --id"),
            (["replay", "--id", "h-1"], "missing --since"),
            (["replay", "--id", "h-1", "--since", "1h", "--state", "gone"],
             "unknown --state 'gone'"),
            (["replay", "--id", "h-1", "--since", "1h", "--limit", "10001"],
             "--limit is 1 to 10000"),
            (["replay", "--id", "h-1", "--since", "2026-11-30T12:00:00Z",
              "--until", "2026-11-30T11:00:00Z"],
             "--since must be before --until"),
            (["enable", "--id", "h-1"], "missing --key"),
            (["enable", "--key", "k"], "missing --id"),
        ]
        self.assert_usage_errors(cases)

    def test_help_names_every_option(self):
        expect = {
            "add": ("--async", "--ordered", "--retry-schedule",
                    "--max-inflight", "--max-rps", "0s,1s,5m"),
            "deliveries": ("--key", "--id", "--state", "--since", "--until",
                           "--limit", "--page-token", "RFC 3339"),
            "delivery": ("usage: handlerctl delivery ID",),
            "redeliver": ("usage: handlerctl redeliver ID",),
            "replay": ("--id", "--since", "--until", "--state", "--limit"),
            "enable": ("--key", "--id"),
        }
        self.assert_help_names(expect)


class TestHandlerModelUsageErrors(_UsageErrorCase):
    """Argument errors of update, rotate-secret, remove --route and the new
    add flags (--selector, --derive-old-value): exit 2 naming the flag, with
    a pointer to --help, before any connection. The commands themselves run
    in test_handler_model.py."""

    def test_usage_errors(self):
        upd = ["update", "--key", "k", "--id", "h-1"]
        rot = ["rotate-secret", "--key", "k", "--id", "h-1"]
        cases = [
            (["add", "--key", "k", "--local", "echo", "--selector", ""],
             "--selector must not be empty"),
            (["add", "--key", "k", "--local", "echo", "--selector", ">a",
              "--selector", ">b"], "--selector given twice"),
            (["add", "--key", "k", "--local", "echo", "--selector"],
             "option '--selector' needs an argument"),
            (["add", "--key", "k", "--local", "echo",
              "--derive-old-value=yes"], "--derive-old-value"),
            (["update", "--id", "h-1", "--local", "echo"], "missing --key"),
            (["update", "--key", "k", "--local", "echo"], "missing --id"),
            (["update", "--key", "k", "--id", "", "--local", "echo"],
             "missing --id"),
            (upd, "give one of --local NAME, --webhook URL or --route"),
            (upd + ["--local", "echo", "--webhook", "http://x/"],
             "exclude each other"),
            (upd + ["--local", "echo", "--new-secret"],
             "webhook options need"),
            (upd + ["--webhook", "http://x/", "--secret", "whsec_x",
                    "--new-secret"], "--secret and --new-secret exclude"),
            (upd + ["--route", "update"], "--route takes EVENT=TARGET"),
            (upd + ["--route", "update=local:echo", "--events", "update"],
             "--events is for --local/--webhook"),
            (upd + ["--webhook", "http://x/", "--ordered"],
             "--ordered is for async webhooks"),
            (upd + ["--local", "echo", "--selector", ""],
             "--selector must not be empty"),
            (upd + ["--local", "echo", "extra"], "unexpected argument"),
            (["rotate-secret", "--id", "h-1"], "missing --key"),
            (["rotate-secret", "--key", "k"], "missing --id"),
            (rot + ["--overlap", "0"], "--overlap must be longer than 0"),
            (rot + ["--overlap", "soon"], "--overlap: 'soon' is not a "
             "duration"),
            (rot + ["--overlap", "1.5h"], "--overlap: '1.5h'"),
            (rot + ["--route", ""], "--route needs an event name"),
            (rot + ["--route", "update=http://x/"], "not EVENT=TARGET"),
            (rot + ["--secret", ""], "--secret must not be empty"),
            (rot + ["--new-secret"], "unknown option '--new-secret'"),
            (rot + ["extra"], "unexpected argument 'extra'"),
            (["remove", "--key", "k", "--id", "h-1", "--route", ""],
             "--route needs an event name"),
            (["remove", "--key", "k", "--id", "h-1", "--route",
              "update=local:echo"], "not EVENT=TARGET"),
        ]
        self.assert_usage_errors(cases)

    def test_help_names_every_option(self):
        expect = {
            "add": ("--selector", "--derive-old-value", "?a/.*",
                    "#SEL1////SEL2", "--quiet"),
            "update": ("--key", "--id", "--local", "--webhook", "--route",
                       "--events", "--selector", "--derive-old-value",
                       "--secret", "--new-secret", "--header", "--timeout-ms",
                       "--max-attempts", "--binary-mode", "--async",
                       "--ordered", "--retry-schedule", "--max-inflight",
                       "--max-rps", "keeps the"),
            "rotate-secret": ("--key", "--id", "--route", "--overlap",
                              "--secret", "v1,<new> v1,<old>", "24h"),
            "remove": ("--key", "--id", "--route EVENT"),
        }
        self.assert_help_names(expect)


class TestWebhookCommands(CliCase):
    """add --webhook/--route URL with every webhook option. handlerd
    supports webhooks: an UNIMPLEMENTED answer is a failure."""

    def setUp(self):
        self.recv = Receiver()
        self.url = "http://127.0.0.1:%d/hook" % self.recv.port

    def tearDown(self):
        self.recv.close()

    def test_webhook_add_list_dispatch(self):
        key = "cli-hook"
        p = self.cli("-o", "json", "add", "--key", key, "--webhook", self.url,
                     "--new-secret", "--header", "X-Team: pricing",
                     "--timeout-ms", "2000", "--max-attempts", "2",
                     "--events", "update")
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        doc = json.loads(p.stdout)
        self.assertTrue(doc["secret"].startswith("whsec_"), doc)
        hook_id = doc["handler_id"]
        # Table form: the secret is a column, and a warning goes to stderr.
        p = self.ok("add", "--key", key, "--webhook", self.url,
                    "--new-secret", "--binary-mode")
        rows = parse_table(p.stdout)
        self.assertTrue(rows[0]["SECRET"].startswith("whsec_"), p.stdout)
        self.assertIn("never shows it again", p.stderr)
        self.ok("add", "--key", key, "--webhook", self.url, "--secret",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        doc = self.ok_json("add", "--key", key, "--route",
                           "update=" + self.url, "--route", "error=local:log",
                           "--header", "X-Route: 1")
        route_id = doc["handler_id"]

        hs = self.ok_json("list", "--key", key)["handlers"]
        by_id = {h["handler_id"]: h for h in hs}
        self.assertEqual(by_id[hook_id]["target"], "webhook:" + self.url)
        self.assertTrue(by_id[hook_id]["secret_set"])
        self.assertEqual(by_id[hook_id]["events"], ["update"])
        self.assertEqual(by_id[route_id]["routes"],
                         {"update": "webhook:" + self.url,
                          "error": "local:log"})
        listing = self.ok("list", "--key", key).stdout
        self.assertNotIn("whsec_", listing)

        doc = self.ok_json("dispatch", "--key", key, "--event", "update",
                           "--topic", "orders/1", "--value", '{"qty":3}')
        self.assertEqual(len(doc["results"]), 4, doc)
        for r in doc["results"]:
            self.assertTrue(r["ok"], r)
        self.assertEqual(len(self.recv.requests), 4)
        teams = [h.get("X-Team") for _, h, _ in self.recv.requests]
        self.assertIn("pricing", teams)

    def test_failed_handler_is_a_row_not_a_failed_command(self):
        key = "cli-hook-down"
        p = self.cli("add", "--key", key, "--webhook",
                     "http://127.0.0.1:%d/x" % closed_port(),
                     "--max-attempts", "1", "--timeout-ms", "1000", "-q")
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        hid = p.stdout.strip()
        count_id = self.add_local(key, "count")
        p = self.ok("dispatch", "--key", key, "--event", "update", "--topic",
                    "t", "--value", "1")
        rows = parse_table(p.stdout)
        self.assertEqual([(r["HANDLER"], r["OK"]) for r in rows],
                         [(hid, "FAILED"), (count_id, "ok")])
        self.assertTrue(rows[0]["RESULT"].startswith("UNAVAILABLE: "),
                        rows[0])
        self.assertIn("attempt", rows[0]["RESULT"])
        doc = self.ok_json("dispatch", "--key", key, "--event", "update",
                           "--topic", "t", "--value", "1")
        bad = doc["results"][0]
        self.assertFalse(bad["ok"])
        self.assertIsNone(bad["value"])
        self.assertEqual((bad["error"]["code"], bad["error"]["code_name"],
                          bad["error"]["attempts"]), (14, "UNAVAILABLE", 1))


class _TokenCase(CliCase):
    """handlerd with --token-file (and --auth-dispatch when AUTH_DISPATCH)."""

    TOKEN = "cli-test-token-8d1e"
    AUTH_DISPATCH = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hd-cli-auth-")
        path = os.path.join(cls.tmp, "token")
        with open(path, "w") as f:
            f.write(cls.TOKEN + "\n")
        cls.EXTRA_ARGS = ("--token-file", path) + (
            ("--auth-dispatch",) if cls.AUTH_DISPATCH else ())
        try:
            super().setUpClass()
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)


class TestAuth(_TokenCase):
    """--token-file: control commands need the token; dispatch does not."""

    def test_unauthenticated_without_and_with_wrong_token(self):
        for extra in ([], ["--token", "wrong"], ["--token", ""]):
            for args in (["list"], ["add", "--key", "cli-auth", "--local",
                                    "count"],
                         ["remove", "--key", "cli-auth", "--id", "h-1"]):
                with self.subTest(args=extra + args):
                    p = self.cli(*(extra + args))
                    self.assert_error(p, EXIT_RPC, "UNAUTHENTICATED")
        p = self.cli("list", env=clean_env(HANDLERD_TOKEN="wrong"))
        self.assert_error(p, EXIT_RPC, "UNAUTHENTICATED")

    def test_right_token_by_flag_and_env(self):
        p = self.ok("--token", self.TOKEN, "add", "--key", "cli-auth-ok",
                    "--local", "count", "-q")
        hid = p.stdout.strip()
        p = self.ok("list", "--key", "cli-auth-ok", "--token", self.TOKEN)
        self.assertIn(hid, p.stdout)
        env = clean_env(HANDLERD_TOKEN=self.TOKEN)
        p = self.ok("list", "--key", "cli-auth-ok", env=env)
        self.assertIn(hid, p.stdout)
        # Health and dispatch need no token without --auth-dispatch.
        self.ok("health")
        doc = self.ok_json("dispatch", "--key", "cli-auth-ok", "--event",
                           "update", "--topic", "t", "--value", "1")
        self.assertEqual(doc["results"][0]["handler_id"], hid)
        p = self.cli("stream", "--key", "cli-auth-ok",
                     stdin_text='{"event":"update","topic":"t","value":1}\n')
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        self.ok("remove", "--key", "cli-auth-ok", "--id", hid, env=env)
        # The token is never logged.
        self.assertNotIn(self.TOKEN, self.server.stderr_text())


class TestAuthDispatch(_TokenCase):
    """--auth-dispatch: dispatch and stream need the token too."""

    TOKEN = "cli-test-token-dispatch-5c2a"
    AUTH_DISPATCH = True

    def test_dispatch_and_stream_need_token(self):
        env = clean_env(HANDLERD_TOKEN=self.TOKEN)
        hid = self.ok("add", "--key", "cli-ad", "--local", "count", "-q",
                      env=env).stdout.strip()
        for extra in ([], ["--token", "wrong"]):
            p = self.cli(*extra, "dispatch", "--key", "cli-ad", "--event",
                         "update", "--topic", "t", "--value", "1")
            self.assert_error(p, EXIT_RPC, "UNAUTHENTICATED")
            p = self.cli(*extra, "stream", "--key", "cli-ad",
                         stdin_text='{"event":"update","topic":"t",'
                                    '"value":1}\n')
            self.assertEqual(p.returncode, EXIT_RPC, p.stderr)
            self.assertIn("handlerctl: UNAUTHENTICATED: ", p.stderr)
        doc = self.ok_json("dispatch", "--key", "cli-ad", "--event", "update",
                           "--topic", "t", "--value", "1", env=env)
        self.assertEqual(doc["results"][0]["handler_id"], hid)
        p = self.cli("--token", self.TOKEN, "stream", "--key", "cli-ad",
                     stdin_text='{"event":"update","topic":"t","value":1}\n')
        self.assertEqual(p.returncode, EXIT_OK, p.stderr)
        self.assertTrue(p.stdout.startswith("sent 1, ok 1, failed 0"))
        self.ok("health")


# ---- README examples ------------------------------------------------------

README_ADDR = "127.0.0.1:50051"
README_HOOK = "http://127.0.0.1:8080"


def readme_blocks(marker):
    """The bodies of the ```sh title="MARKER" blocks of client/README.md."""
    src = os.environ.get("HD_SOURCE_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..")
    with open(os.path.join(src, "client", "README.md")) as f:
        text = f.read()
    pat = re.compile(r'^```sh title="%s"\n(.*?)^```$' % re.escape(marker),
                     re.M | re.S)
    return pat.findall(text)


class TestReadmeExamples(unittest.TestCase):
    """Runs every example block of client/README.md with bash -e -o pipefail
    (each command must exit 0) against a fresh handlerd, handlerctl on
    PATH and HANDLERD_ADDR pointing at it."""

    def run_blocks(self, marker, server, subst=(), min_commands=1):
        blocks = readme_blocks(marker)
        self.assertTrue(blocks, "no %s blocks in client/README.md" % marker)
        n_cmds = sum(len(re.findall(r"(^|\$\(|\s)handlerctl ", b, re.M))
                     for b in blocks)
        self.assertGreaterEqual(n_cmds, min_commands)
        tmp = tempfile.mkdtemp(prefix="hd-cli-readme-")
        try:
            bindir = os.path.join(tmp, "bin")
            os.mkdir(bindir)
            os.symlink(os.path.abspath(HANDLERCTL),
                       os.path.join(bindir, "handlerctl"))
            env = clean_env(HANDLERD_ADDR=server.address,
                            PATH=bindir + os.pathsep + os.environ["PATH"])
            for i, block in enumerate(blocks):
                script = block.replace(README_ADDR, server.address)
                for old, new in subst:
                    script = script.replace(old, new)
                p = subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-x", "-c", script],
                    cwd=tmp, env=env, capture_output=True, text=True,
                    timeout=CLI_TIMEOUT)
                self.assertEqual(
                    p.returncode, 0,
                    "README %s block %d failed (exit %d)\n--- script ---\n%s"
                    "--- stdout ---\n%s--- stderr (bash -x) ---\n%s"
                    % (marker, i + 1, p.returncode, script, p.stdout,
                       p.stderr))
                traced = [l for l in p.stderr.splitlines()
                          if re.match(r"^\++ .*handlerctl ", l)]
                self.assertTrue(traced, "bash -x traced no handlerctl command")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_examples(self):
        server = hd_harness.Handlerd([]).start()
        try:
            self.run_blocks("handlerctl-example", server, min_commands=15)
        finally:
            server.stop()

    def test_auth_examples(self):
        tmp = tempfile.mkdtemp(prefix="hd-cli-readme-auth-")
        path = os.path.join(tmp, "token")
        with open(path, "w") as f:
            f.write("s3cret\n")
        server = hd_harness.Handlerd(["--token-file", path]).start()
        try:
            self.run_blocks("handlerctl-example-auth", server)
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_webhook_examples(self):
        server = hd_harness.Handlerd([]).start()
        recv = Receiver()
        try:
            hook = "http://127.0.0.1:%d" % recv.port
            probe = run_cli(["add", "--key", "probe", "--webhook",
                             hook + "/probe"], addr=server.address)
            self.assertEqual(probe.returncode, 0, probe.stderr)
            self.run_blocks("handlerctl-example-webhook", server,
                            subst=[(README_HOOK, hook)])
            self.assertTrue(recv.requests, "the example dispatch posted "
                            "nothing to the receiver")
        finally:
            recv.close()
            server.stop()


if __name__ == "__main__":
    hd_harness.main()
