"""Misbehaving webhook receivers for handlerd's fault tests
(test_webhook_faults.py).

Each server is real: a TCP listener on 127.0.0.1 (port chosen by the
kernel) with one thread per accepted connection, written with raw sockets so
that it can do what no well-behaved HTTP server does: accept and never
answer, trickle, stream an endless body, redirect to itself, close or reset
in the middle of an answer, or answer a TLS ClientHello with garbage.
Standard library only; run with Debian's /usr/bin/python3.

    srv = FaultyServer(hang).start()
    ... handlerd posts to srv.url("/x") ...
    conns = srv.connections()          # one Conn per accepted connection
    srv.wait_all_closed(2.0)           # did handlerd hang up on each?
    srv.stop()

A behaviour is a function behaviour(srv, conn) run on the connection's own
thread; `conn` (a Conn) records what happened on the connection.
"""

import select
import socket
import struct
import threading
import time

IO_TIMEOUT_S = 30.0  # nothing here blocks longer; stop() ends it sooner


def read_http_request(recv):
    """Reads one HTTP/1.1 request, its head and its Content-Length body,
    calling `recv()` for more bytes (b"" when there are none). Returns
    (head, body), the body cut at Content-Length, or None when recv() ran dry
    first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = recv()
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = recv()
        if not chunk:
            return None
        body += chunk
    return head, body[:length]


class Conn:
    """One accepted connection and what happened on it."""

    def __init__(self, sock, peer):
        self.sock = sock
        self.peer = peer
        self.accepted = time.monotonic()
        self.requests = []     # raw request heads + bodies read (bytes)
        self.bytes_sent = 0    # response bytes accepted by the kernel
        self.finished = False  # the behaviour sent everything it meant to
        self.peer_closed = None  # time.monotonic() when the client hung up
        self.how_closed = None   # "eof", "reset", "send-error: ..."
        self.ended = threading.Event()  # the behaviour returned

    def mark_closed(self, how):
        if self.peer_closed is None:
            self.peer_closed = time.monotonic()
            self.how_closed = how

    def __repr__(self):
        return ("Conn(peer=%r, requests=%d, bytes_sent=%d, finished=%r, "
                "closed=%r)" % (self.peer, len(self.requests),
                                self.bytes_sent, self.finished,
                                self.how_closed))


class FaultyServer:
    """A TCP server on 127.0.0.1 whose connections run `behaviour`."""

    def __init__(self, behaviour, scheme="http", name=None):
        self.behaviour = behaviour
        self.scheme = scheme
        self.name = name or getattr(behaviour, "__name__", "faulty")
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._conns = []
        self._threads = []
        self._listener = None
        self._accept_thread = None
        self.port = None

    # -- lifecycle -------------------------------------------------------

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.settimeout(0.05)
        self._listener = s
        self.port = s.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="faulty-%s-accept" % self.name,
            daemon=True)
        self._accept_thread.start()
        return self

    def stop(self):
        self.stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for t in threads:
            t.join(5)
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path="/hook"):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, path)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            conn = Conn(sock, peer)
            t = threading.Thread(target=self._run, args=(conn,),
                                 name="faulty-%s-conn" % self.name,
                                 daemon=True)
            with self._lock:
                self._conns.append(conn)
                self._threads.append(t)
            t.start()

    def _run(self, conn):
        try:
            self.behaviour(self, conn)
        except OSError as e:
            conn.mark_closed("error: %s" % e)
        finally:
            conn.ended.set()

    # -- inspection ------------------------------------------------------

    def connections(self):
        with self._lock:
            return list(self._conns)

    def requests(self):
        """Every request read, in the order of the connections."""
        return [r for c in self.connections() for r in c.requests]

    def wait_connections(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.connections()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.connections()

    def wait_all_closed(self, timeout):
        """Waits until the client hung up (or the behaviour ended) on every
        connection so far; returns the connections still open then."""
        deadline = time.monotonic() + timeout
        while True:
            open_ = [c for c in self.connections()
                     if c.peer_closed is None and not c.ended.is_set()]
            if not open_ or time.monotonic() >= deadline:
                return open_
            time.sleep(0.01)

    # -- tools for behaviours ---------------------------------------------

    def sleep(self, seconds):
        """Sleeps; True when stop() interrupted it."""
        return self.stopping.wait(seconds)

    def read_request(self, conn, timeout=IO_TIMEOUT_S):
        """Reads one HTTP/1.1 request (head and Content-Length body) and
        records it; None when the peer closed or the time ran out."""
        deadline = time.monotonic() + timeout
        got = read_http_request(lambda: self.recv_some(conn, deadline))
        if got is None:
            return None
        req = got[0] + b"\r\n\r\n" + got[1]
        conn.requests.append(req)
        return req

    def recv_some(self, conn, deadline):
        """Up to 64 KiB from the peer; b"" when it closed (recorded), the
        time ran out or stop() was called."""
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            r, _, _ = select.select([conn.sock], [], [], min(left, 0.05))
            if not r:
                continue
            try:
                data = conn.sock.recv(65536)
            except ConnectionResetError:
                conn.mark_closed("reset")
                return b""
            if not data:
                conn.mark_closed("eof")
            return data
        return b""

    def wait_peer_close(self, conn, seconds):
        """Reads (and drops) whatever the peer sends for up to `seconds`;
        True when it hung up meanwhile."""
        deadline = time.monotonic() + seconds
        while conn.peer_closed is None and not self.stopping.is_set():
            if time.monotonic() >= deadline:
                return False
            self.recv_some(conn, deadline)
        return conn.peer_closed is not None

    def send(self, conn, data):
        """sendall that records progress; False when the peer is gone."""
        view = memoryview(data)
        while view:
            if self.stopping.is_set():
                return False
            _, w, _ = select.select([], [conn.sock], [], 0.05)
            if not w:
                continue
            try:
                n = conn.sock.send(view)
            except (BrokenPipeError, ConnectionResetError) as e:
                conn.mark_closed("send-error: %s" % e.__class__.__name__)
                return False
            conn.bytes_sent += n
            view = view[n:]
        return True


def reset_close(conn):
    """Closes with a TCP RST instead of a FIN (SO_LINGER 0)."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
    conn.sock.close()


# -- behaviours ---------------------------------------------------------------

def hang(srv, conn):
    """Accepts, reads the request, never answers (until the client leaves)."""
    if srv.read_request(conn) is None:
        return
    srv.wait_peer_close(conn, IO_TIMEOUT_S)


TRICKLE_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 13\r\n\r\n{\"slow\":true}")


def trickle(srv, conn):
    """Answers a valid 200, one byte a second, from the status line on."""
    if srv.read_request(conn) is None:
        return
    for i in range(len(TRICKLE_RESPONSE)):
        if not srv.send(conn, TRICKLE_RESPONSE[i:i + 1]):
            return
        if srv.wait_peer_close(conn, 1.0):
            return
    conn.finished = True
    srv.wait_peer_close(conn, IO_TIMEOUT_S)


HUGE_BYTES = 100 * 1024 * 1024
HUGE_CHUNK = 64 * 1024


def make_huge(chunked):
    """A 200 with a 100 MiB JSON-looking body, streamed in 64 KiB pieces
    (never held in memory); with Content-Length, or chunked (no length
    known up front)."""
    piece = b"[" + b"1," * (HUGE_CHUNK // 2 - 1) + b"1"  # 64 KiB
    assert len(piece) == HUGE_CHUNK

    def huge(srv, conn):
        if srv.read_request(conn) is None:
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if chunked:
            head += b"Transfer-Encoding: chunked\r\n\r\n"
            frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
        else:
            head += b"Content-Length: %d\r\n\r\n" % HUGE_BYTES
            frame = piece
        if not srv.send(conn, head):
            return
        body_sent = 0
        while body_sent < HUGE_BYTES:
            if not srv.send(conn, frame):
                return
            body_sent += HUGE_CHUNK
        if chunked and not srv.send(conn, b"0\r\n\r\n"):
            return
        conn.finished = True
        srv.wait_peer_close(conn, IO_TIMEOUT_S)

    huge.__name__ = "huge_chunked" if chunked else "huge_length"
    return huge


def make_redirect_loop(status):
    """Answers every request (keep-alive) with `status` and a Location that
    points back at the same URL."""

    def redirect_loop(srv, conn):
        while True:
            req = srv.read_request(conn)
            if req is None:
                return
            target = req.split(b" ", 2)[1].decode("latin-1")
            body = b"redirecting to myself"
            resp = (b"HTTP/1.1 %d Redirect\r\nLocation: %s\r\n"
                    b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                    % (status, srv.url(target).encode("latin-1"), len(body))
                    + body)
            if not srv.send(conn, resp):
                return

    return redirect_loop


def close_mid_body(srv, conn):
    """Promises 1000 body bytes, sends 10, then closes (FIN)."""
    if srv.read_request(conn) is None:
        return
    srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 1000\r\n\r\n{\"partial\"")
    conn.finished = True
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.sock.close()


def reset_mid_headers(srv, conn):
    """Sends half a status line and headers, then resets (RST)."""
    if srv.read_request(conn) is None:
        return
    srv.send(conn, b"HTTP/1.1 200 OK\r\nContent-Ty")
    time.sleep(0.05)  # let the bytes arrive before the reset
    conn.finished = True
    reset_close(conn)


def close_without_answer(srv, conn):
    """Reads the request, then closes without a byte of answer (FIN)."""
    if srv.read_request(conn) is None:
        return
    conn.finished = True
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.sock.close()


def _read_client_hello(srv, conn):
    """Reads the first bytes of what should be a TLS ClientHello; False
    when the peer sent nothing (or not a handshake record)."""
    data = srv.recv_some(conn, time.monotonic() + IO_TIMEOUT_S)
    if not data:
        return False
    conn.requests.append(data)
    return data[:1] == b"\x16"  # TLS handshake record


def tls_garbage(srv, conn):
    """Answers the ClientHello with bytes that are not TLS, then closes."""
    if not _read_client_hello(srv, conn):
        return
    srv.send(conn, b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS\r\n"
             * 4)
    conn.finished = True
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.sock.close()


def tls_truncated_server_hello(srv, conn):
    """Answers with the start of a ServerHello (a record that promises
    more than it holds), then closes."""
    if not _read_client_hello(srv, conn):
        return
    hello_body = b"\x03\x03" + bytes(range(32)) + b"\x20"  # version, random
    handshake = b"\x02" + (70).to_bytes(3, "big") + hello_body  # claims 70
    record = b"\x16\x03\x03" + (74).to_bytes(2, "big") + handshake
    srv.send(conn, record)  # 5 + 39 of the promised 5 + 74 bytes
    time.sleep(0.05)
    conn.finished = True
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.sock.close()
