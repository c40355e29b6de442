#!/usr/bin/python3
"""Writes one gRPC-framed request body for h2load -d: a 5-byte prefix
(uncompressed flag + big-endian length) and the protobuf message."""
import struct
import sys

sys.path.insert(0, sys.argv[1])  # generated Python code
from handlers.v1 import handlers_pb2 as pb  # noqa: E402

kind, out = sys.argv[2], sys.argv[3]
if kind == "dispatch":
    msg = pb.DispatchRequest(
        key="bench", event="update",
        update=pb.UpdateArgs(topic_path="prices/eur",
                             topic_value=pb.TopicValue(json_value='{"bid":1.1,"ask":1.2}')))
    body = msg.SerializeToString()
elif kind == "health":
    body = b""  # HealthCheckRequest{} encodes to zero bytes
else:
    raise SystemExit("kind: dispatch|health")
with open(out, "wb") as f:
    f.write(struct.pack(">BI", 0, len(body)) + body)
