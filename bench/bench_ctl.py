#!/usr/bin/python3
"""Control calls bench/run makes to handlerd (Debian's python3-grpcio with
code generated from proto/).

  bench_ctl.py GEN_DIR ADDR add KEY local NAME     one local handler
  bench_ctl.py GEN_DIR ADDR add KEY webhook URL    one webhook
  bench_ctl.py GEN_DIR ADDR add-many N URL         N handlers over N/10 keys
                                                   ("mem-<i>"), half local
                                                   functions, half webhooks
  bench_ctl.py GEN_DIR ADDR count KEY              dispatches one `update` to
                                                   KEY and prints the result of
                                                   its first handler (for
                                                   `count`: events seen so far,
                                                   this one included)
"""
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from handlers.v1 import handlers_pb2 as pb, handlers_pb2_grpc as pbg  # noqa: E402

addr, cmd, args = sys.argv[2], sys.argv[3], sys.argv[4:]
chan = grpc.insecure_channel(addr)
grpc.channel_ready_future(chan).result(timeout=10)
stub = pbg.HandlersStub(chan)


def target(kind, what):
    if kind == "local":
        return pb.Target(local=what)
    return pb.Target(webhook=pb.Webhook(url=what))


if cmd == "add":
    key, kind, what = args
    stub.AddHandler(pb.AddHandlerRequest(key=key, target=target(kind, what)), timeout=10)
elif cmd == "add-many":
    n, url = int(args[0]), args[1]
    locals_ = ["count", "echo", "last_value"]
    for i in range(n):
        key = "mem-%d" % (i % max(1, n // 10))
        t = (target("local", locals_[i // 2 % 3]) if i % 2 == 0
             else target("webhook", "%s/hook/%d" % (url, i)))
        stub.AddHandler(pb.AddHandlerRequest(key=key, target=t), timeout=10)
    listed = len(stub.ListHandlers(pb.ListHandlersRequest(), timeout=30).handlers)
    print(listed)
elif cmd == "count":
    (key,) = args
    r = stub.Dispatch(pb.DispatchRequest(
        key=key, event="update",
        update=pb.UpdateArgs(topic_path="prices/eur",
                             topic_value=pb.TopicValue(int64_value=0))), timeout=10)
    res = r.results[0]
    if not res.ok:
        raise SystemExit("dispatch failed: %s" % res.error.message)
    print(res.value.int64_value)
else:
    raise SystemExit("command: add|add-many|count")
