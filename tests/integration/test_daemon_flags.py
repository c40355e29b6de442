"""The daemon's command line: --help documents every flag the README's
configuration table lists, usage errors exit 2, HANDLERD_* variables work.

Run by CTest with /usr/bin/python3 (see CMakeLists.txt).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hd_harness  # noqa: E402

BIN = hd_harness.require_env("HANDLERD_BIN")
README = os.path.join(hd_harness.require_env("HD_SOURCE_DIR"), "README.md")


def run(*args, env=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True,
                          timeout=10, env=env)


class TestFlags(unittest.TestCase):
    def test_help_lists_every_flag_in_the_readme(self):
        with open(README) as f:
            text = f.read()
        section = text.split("### Configuration", 1)[1].split("\n### ", 1)[0]
        table = "\n".join(l for l in section.splitlines() if l.startswith("|"))
        flags = set(re.findall(r"`(--[a-z-]+)", table))
        self.assertGreater(len(flags), 10, "README table not found")
        out = run("--help")
        self.assertEqual(out.returncode, 0)
        for flag in sorted(flags):
            self.assertIn(flag, out.stdout, "--help does not mention " + flag)
        envs = set(re.findall(r"`(HANDLERD_[A-Z_]+)", table))
        for env in sorted(envs):
            self.assertIn(env, out.stdout, "--help does not mention " + env)
        # and the other way round: nothing in --help is missing from the table
        for flag in set(re.findall(r"(--[a-z-]+)", out.stdout)):
            if flag not in ("--help", "--version"):
                self.assertIn(flag, flags, "README table lacks " + flag)
        for env in set(re.findall(r"(HANDLERD_[A-Z_]+)", out.stdout)):
            self.assertIn(env, envs, "README table lacks " + env)

    def test_version(self):
        out = run("--version")
        self.assertEqual(out.returncode, 0)
        self.assertRegex(out.stdout, r"^handlerd \d+\.\d+\.\d+\n$")

    def test_usage_errors_exit_2_with_a_message(self):
        for args, why in [(["--nope"], "unrecognized"),
                          (["--threads", "zero"], "--threads"),
                          (["--log-level", "loud"], "--log-level"),
                          (["--log-format", "xml"], "--log-format"),
                          (["--drain-timeout", "3x"], "--drain-timeout"),
                          (["--drain-timeout", "-1s"], "--drain-timeout"),
                          (["--max-keys", "0"], "--max-keys"),
                          (["--max-topic-path-bytes", "70000"],
                           "--max-topic-path-bytes"),
                          (["--tls-cert", "x.pem"], "--tls-key"),
                          (["--auth-dispatch"], "--token-file"),
                          (["extra"], "unexpected argument")]:
            out = run(*args)
            self.assertEqual(out.returncode, 2, args)
            self.assertIn(why, out.stderr, args)

    def test_unreadable_token_file_fails_start(self):
        out = run("--listen", "127.0.0.1:0", "--token-file", "/nonexistent")
        self.assertEqual(out.returncode, 1)
        self.assertIn("/nonexistent", out.stderr)

    def test_environment_configures_listen_address(self):
        with tempfile.TemporaryDirectory() as tmp:
            ready = os.path.join(tmp, "ready")
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("HANDLERD_")}
            env["HANDLERD_LISTEN"] = "127.0.0.1:0"
            env["HANDLERD_LOG_LEVEL"] = "debug"
            p = subprocess.Popen([BIN, "--ready-file", ready], env=env,
                                 stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.time() + 10
                while not os.path.exists(ready) and time.time() < deadline:
                    time.sleep(0.05)
                with open(ready) as f:
                    self.assertRegex(f.read(), r"^127\.0\.0\.1:\d+\n$")
            finally:
                p.terminate()
                err = p.communicate(timeout=10)[1]
            self.assertEqual(p.returncode, 0)
            self.assertIn("listening on 127.0.0.1:0", err)

    def test_json_logs_and_startup_line(self):
        """--log-format json: every stderr line is one JSON object; startup
        says the version, the address, the state dir and the limits."""
        with tempfile.TemporaryDirectory() as tmp:
            ready = os.path.join(tmp, "ready")
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("HANDLERD_")}
            env["HANDLERD_LOG_FORMAT"] = "json"
            p = subprocess.Popen([BIN, "--listen", "127.0.0.1:0",
                                  "--ready-file", ready, "--state-dir", tmp,
                                  "--max-keys", "77", "--instance", 'a"b\\c'],
                                 env=env, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.time() + 10
                while not os.path.exists(ready) and time.time() < deadline:
                    time.sleep(0.05)
            finally:
                p.terminate()
                err = p.communicate(timeout=10)[1]
            self.assertEqual(p.returncode, 0, err)
            lines = err.splitlines()
            self.assertGreaterEqual(len(lines), 4, err)
            msgs = []
            for line in lines:
                obj = json.loads(line)  # fails the test on a non-JSON line
                self.assertEqual(set(obj), {"ts", "level", "pid", "msg"})
                self.assertIn(obj["level"], ("error", "warn", "info", "debug"))
                self.assertRegex(obj["ts"],
                                 r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
                msgs.append(obj["msg"])
            text = "\n".join(msgs)
            self.assertRegex(text, r"handlerd \d+\.\d+\.\d+ listening on")
            self.assertIn("state dir " + tmp, text)
            self.assertIn("max-keys 77", text)
            self.assertIn("drain-timeout 10000 ms", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
