#!/usr/bin/python3
"""Writes a gRPC-framed request body for h2load -d: each message is a 5-byte
prefix (uncompressed flag + big-endian length) and the protobuf bytes.

  grpc_frame.py GEN_DIR dispatch OUT [KEY]  one DispatchRequest (`update`,
                                            JSON value) to KEY (default
                                            "bench")
  grpc_frame.py GEN_DIR health OUT          one empty HealthCheckRequest
  grpc_frame.py GEN_DIR stream OUT N [KEY]  N small DispatchRequests (`update`,
                                            int64 value) to KEY (default
                                            "bench-stream"): the body of one
                                            client-streaming DispatchStream
"""
import struct
import sys

sys.path.insert(0, sys.argv[1])  # generated Python code
from handlers.v1 import handlers_pb2 as pb  # noqa: E402


def frame(body):
    return struct.pack(">BI", 0, len(body)) + body


kind, out = sys.argv[2], sys.argv[3]
if kind == "dispatch":
    msg = pb.DispatchRequest(
        key=sys.argv[4] if len(sys.argv) > 4 else "bench", event="update",
        update=pb.UpdateArgs(topic_path="prices/eur",
                             topic_value=pb.TopicValue(json_value='{"bid":1.1,"ask":1.2}')))
    data = frame(msg.SerializeToString())
elif kind == "health":
    data = frame(b"")  # HealthCheckRequest{} encodes to zero bytes
elif kind == "stream":
    n = int(sys.argv[4])
    key = sys.argv[5] if len(sys.argv) > 5 else "bench-stream"
    data = b"".join(
        frame(pb.DispatchRequest(
            key=key, event="update",
            update=pb.UpdateArgs(topic_path="prices/eur",
                                 topic_value=pb.TopicValue(int64_value=i))).SerializeToString())
        for i in range(n))
else:
    raise SystemExit("kind: dispatch|health|stream")
with open(out, "wb") as f:
    f.write(data)
