#!/usr/bin/env python3
"""Example webhook receiver for handlerd (docker/compose.yaml).

Prints every request it gets (method, path, headers, body) and answers
200 {"ok":true}. It verifies nothing: a real receiver checks the Standard
Webhooks signature (webhook-id, webhook-timestamp, webhook-signature headers)
with the handler's whsec_ secret before trusting a request.

  receiver.py [--bind ADDR] [--port N] [--record FILE]

--record FILE also appends each request to FILE as one JSON line
({"method", "path", "headers", "body", "body_base64"}); docker/test-image.sh
uses it.
Standard library only (Debian's python3).
"""
import argparse
import base64
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    server_version = "handlerd-example-receiver"
    record = None

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        text = body.decode("utf-8", "replace")
        lines = [f"{self.command} {self.path}"]
        lines += [f"  {k}: {v}" for k, v in self.headers.items()]
        lines.append(f"  body: {text}")
        print("\n".join(lines), flush=True)
        if self.record:
            entry = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": text,
                "body_base64": base64.b64encode(body).decode(),
            }
            with open(self.record, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        reply = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = do_PUT = do_GET = _handle

    def log_message(self, fmt, *args):  # the request is printed above
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bind", default=os.environ.get("RECEIVER_BIND", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(os.environ.get("RECEIVER_PORT", "8080")))
    p.add_argument("--record", default=None, help="append requests to FILE as JSON lines")
    a = p.parse_args()
    Handler.record = a.record
    srv = ThreadingHTTPServer((a.bind, a.port), Handler)
    print(f"receiver listening on {a.bind}:{srv.server_address[1]}", flush=True)
    # PID 1 in a container: without a handler SIGTERM would be ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
