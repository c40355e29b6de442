"""A real HTTP receiver for handlerd's webhook integration tests.

Listens on 127.0.0.1 (a port chosen by the kernel), serves from a background
thread (ThreadingHTTPServer, HTTP/1.1 keep-alive, Content-Length on every
answer), records every request and answers each path from a programmable
script. Standard library only; run with Debian's /usr/bin/python3.

    rx = Receiver().start()
    rx.script("/retry", [(500, {}, b"", 0), (200, {}, b'{"a":1}', 0)])
    rx.hang("/slow")                     # every request there sleeps long
    rx.respond("/fn", lambda req: (200, {}, b"", 0))  # answers computed
    ... handlerd posts to rx.url("/retry") ...
    reqs = rx.wait_for("/retry", 2)      # list of Request
    rx.stop()
"""

import http.server
import socket
import threading
import time

HANG_S = 30.0  # how long a request in "hang" mode sleeps (stop() ends it)


class Request:
    """One recorded request."""

    def __init__(self, method, path, headers, body, arrived, peer=None):
        self.method = method
        self.peer = peer  # (host, port) of the client connection
        self.path = path
        # Lower-cased names; a repeated header keeps every value in `all`.
        self.headers = {}
        self.all_headers = []
        for name, value in headers:
            self.all_headers.append((name.lower(), value))
            self.headers.setdefault(name.lower(), value)
        self.body = body
        self.arrived = arrived  # time.monotonic() when the body was read
        self.wall = time.time()  # wall-clock time at arrival

    def header(self, name, default=None):
        """A header's first value; `name` is case-insensitive."""
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "Request(%s %s, %d body bytes, headers=%r)" % (
            self.method, self.path, len(self.body), self.headers)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a length
    server_version = "hd-test-receiver/1"
    sys_version = ""

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _serve(self):
        rx = self.server.receiver
        length = self.headers.get("Content-Length")
        body = b""
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = 0
            body = self.rfile.read(n) if n > 0 else b""
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
        path = self.path.split("?", 1)[0]
        req = Request(self.command, self.path, self.headers.items(), body,
                      time.monotonic(), peer=self.client_address)
        status, headers, rbody, delay = rx._record_and_answer(path, req)
        if delay:
            rx._stopping.wait(delay)
        if rx._stopping.is_set() and delay:
            self.close_connection = True
            return
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            lowered = {k.lower() for k in headers}
            if "content-type" not in lowered and rbody:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(rbody)))
            self.end_headers()
            if rbody:
                self.wfile.write(rbody)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_chunked(self):
        out = b""
        while True:
            line = self.rfile.readline()
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    do_POST = _serve
    do_GET = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_PATCH = _serve


def _norm_step(step):
    """(status, headers, body bytes, delay_s) from a step of script()."""
    status, headers, body, delay = (tuple(step) + (None,) * 4)[:4]
    if isinstance(body, str):
        body = body.encode("utf-8")
    return (int(status), dict(headers or {}), body or b"",
            float(delay or 0.0))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Handler threads sit in idle keep-alive connections; stop() must not
    # wait for the client (handlerd) to close them.
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128


class Receiver:
    """A recording HTTP server on 127.0.0.1."""

    DEFAULT = (200, {}, b"", 0.0)

    def __init__(self, port=0):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests = []
        self._scripts = {}  # path -> list of (status, headers, body, delay)
        self._responders = {}  # path -> fn(Request) -> step
        self._hang = set()
        self._stopping = threading.Event()
        self._httpd = None
        self._thread = None
        self._want_port = port  # 0: the kernel chooses
        self.port = None

    def start(self):
        self._httpd = _Server(("127.0.0.1", self._want_port), _Handler)
        self._httpd.receiver = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    # -- programming -----------------------------------------------------

    def script(self, path, steps):
        """Answers for `path`: each step (status, headers, body, delay_s) is
        used once in order, the last one for every later request. A body
        may be str (UTF-8) or bytes."""
        norm = [_norm_step(step) for step in steps]
        if not norm:
            raise ValueError("empty script")
        with self._lock:
            self._scripts[path] = norm
            self._responders.pop(path, None)
            self._hang.discard(path)

    def respond(self, path, fn):
        """Answers for `path` come from fn(request) (a Request, already
        recorded), which returns a step as script() takes it. fn runs on
        the request's own thread, outside the receiver's lock: it may block
        (e.g. to hold the request) and keep its own state. Replaces any
        script for `path`."""
        with self._lock:
            self._responders[path] = fn
            self._scripts.pop(path, None)
            self._hang.discard(path)

    def hang(self, path, seconds=HANG_S):
        """Every request to `path` waits `seconds` (or until stop()), then
        gets 200."""
        self.script(path, [(200, {}, b"", seconds)])
        with self._lock:
            self._hang.add(path)

    def _record_and_answer(self, path, req):
        with self._cond:
            self._requests.append(req)
            fn = self._responders.get(path)
            steps = self._scripts.get(path)
            if steps:
                step = steps[0]
                if len(steps) > 1:
                    steps.pop(0)
            else:
                step = self.DEFAULT
            self._cond.notify_all()
        if fn is not None:
            return _norm_step(fn(req))
        return step

    # -- inspection ------------------------------------------------------

    def requests(self, path=None):
        """The requests so far (to `path` only, when given), in order."""
        with self._lock:
            return [r for r in self._requests
                    if path is None or r.path.split("?", 1)[0] == path]

    def wait_for(self, path, n, timeout=10.0):
        """Waits until `path` has at least `n` requests; returns them all
        (possibly fewer than n when the timeout passes)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self._requests
                       if r.path.split("?", 1)[0] == path]
                left = deadline - time.monotonic()
                if len(got) >= n or left <= 0:
                    return got
                self._cond.wait(left)

    def clear(self):
        with self._lock:
            self._requests = []


def closed_port():
    """A loopback port that nothing listens on (bound, then closed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- Standard Webhooks, written from the spec (independent of handlerd) ------

def new_secret(nbytes=32):
    """A fresh "whsec_<base64>" secret of `nbytes` random bytes."""
    import base64
    import os
    return "whsec_" + base64.b64encode(os.urandom(nbytes)).decode("ascii")


def expected_signature(secret, msg_id, timestamp, body):
    """The "v1,<base64>" signature the Standard Webhooks spec gives for
    `body` (bytes) with this id and timestamp (str)."""
    import base64
    import hashlib
    import hmac
    if not secret.startswith("whsec_"):
        raise ValueError("secret %r lacks the whsec_ prefix" % secret)
    key = base64.b64decode(secret[len("whsec_"):], validate=True)
    signed = msg_id.encode("utf-8") + b"." + timestamp.encode("utf-8") + \
        b"." + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signature_problem(secret, req, now=None, tolerance_s=60):
    """None when `req` (a Request) carries a valid Standard Webhooks
    signature for `secret`; otherwise a sentence saying what is wrong."""
    import hmac
    import time as _time
    msg_id = req.header("webhook-id")
    ts = req.header("webhook-timestamp")
    sig = req.header("webhook-signature")
    if not msg_id or not ts or not sig:
        return "missing header(s): webhook-id=%r webhook-timestamp=%r " \
            "webhook-signature=%r" % (msg_id, ts, sig)
    if not ts.isdigit():
        return "webhook-timestamp %r is not unix seconds" % ts
    now = _time.time() if now is None else now
    if abs(int(ts) - now) > tolerance_s:
        return "webhook-timestamp %s is %.0f s from now" % (ts, int(ts) - now)
    want = expected_signature(secret, msg_id, ts, req.body)
    given = sig.split(" ")
    for s in given:
        if s.startswith("v1,") and hmac.compare_digest(s, want):
            return None
    return "no signature in %r matches %r" % (sig, want)
