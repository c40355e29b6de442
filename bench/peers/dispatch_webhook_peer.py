#!/usr/bin/python3
"""The peer: handlerd's Dispatch-to-webhook job written the obvious way with
Debian's python3-grpcio, for bench/run to measure beside handlerd.

  dispatch_webhook_peer.py GEN_DIR --url URL [--key KEY] [--listen ADDR]
                           [--workers N] [--ready-file PATH]

Serves handlers.v1.Handlers/Dispatch on ADDR (default 127.0.0.1:0, any free
port) with a thread pool of N workers (default 10, as in grpcio's examples).
A Dispatch for KEY (default "bench") POSTs the event as JSON (the proto3
JSON mapping of the request) to URL, over one keep-alive http.client
connection per worker thread, and answers a DispatchReply with one result:
the receiver's JSON body on a 2xx, an error otherwise. Other keys get
NOT_FOUND. Once serving, writes the bound address to PATH.
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from concurrent import futures

p = argparse.ArgumentParser()
p.add_argument("gen")
p.add_argument("--url", required=True)
p.add_argument("--key", default="bench")
p.add_argument("--listen", default="127.0.0.1:0")
p.add_argument("--workers", type=int, default=10)
p.add_argument("--ready-file")
opts = p.parse_args()

sys.path.insert(0, opts.gen)
import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from handlers.v1 import handlers_pb2 as pb, handlers_pb2_grpc as pbg  # noqa: E402

url = urllib.parse.urlsplit(opts.url)
local = threading.local()


def post(body):
    """POSTs body to the webhook URL on this thread's connection; returns
    (status, response body). Reconnects once if the connection was closed."""
    for attempt in (0, 1):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(url.hostname, url.port,
                                                           timeout=5)
        try:
            conn.request("POST", url.path or "/", body,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (http.client.HTTPException, OSError):
            conn.close()
            local.conn = None
            if attempt:
                raise


class Handlers(pbg.HandlersServicer):
    def Dispatch(self, request, context):
        if request.key != opts.key:
            context.abort(grpc.StatusCode.NOT_FOUND, "no handlers for key %r" % request.key)
        start = time.monotonic_ns()
        body = json_format.MessageToJson(request).encode()
        result = pb.HandlerResult(handler_id="webhook-1")
        try:
            status, data = post(body)
            if 200 <= status < 300:
                result.ok = True
                if data:
                    json.loads(data)  # a JSON body becomes the result value
                    result.value.json_value = data.decode()
            else:
                result.error.code = 2
                result.error.http_status = status
                result.error.message = "HTTP %d" % status
        except (OSError, http.client.HTTPException, ValueError) as e:
            result.error.code = 14
            result.error.message = str(e)
        result.duration_ns = time.monotonic_ns() - start
        return pb.DispatchReply(results=[result])


server = grpc.server(futures.ThreadPoolExecutor(max_workers=opts.workers))
pbg.add_HandlersServicer_to_server(Handlers(), server)
port = server.add_insecure_port(opts.listen)
if port == 0:
    raise SystemExit("cannot listen on %s" % opts.listen)
server.start()
addr = "%s:%d" % (opts.listen.rsplit(":", 1)[0], port)
print("listening", addr, flush=True)
if opts.ready_file:
    with open(opts.ready_file + ".tmp", "w") as f:
        f.write(addr + "\n")
    os.rename(opts.ready_file + ".tmp", opts.ready_file)
server.wait_for_termination()
