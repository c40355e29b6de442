#!/usr/bin/env bash
# Dispatch throughput with h2load (nghttp2-client), reported as a ratio to
# grpc.health.v1/Check on the same server in the same run: the reference is
# the cost of a gRPC round trip through handlerd with no handler work.
#   bench/dispatch.sh [build-dir]     (needs a built tree)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/service/handlerd
gen=$build/gen/python
[ -x "$bin" ] || { echo "build first: $bin missing" >&2; exit 1; }
[ -d "$gen/handlers" ] || { echo "generated Python code missing in $gen" >&2; exit 1; }
n=${N:-200000} c=${C:-8} m=${M:-32}
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
"$bin" --listen 127.0.0.1:0 --ready-file "$tmp/ready" --log-level warn 2>"$tmp/err" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/ready" ] && break; sleep 0.05; done
addr=$(cat "$tmp/ready")
/usr/bin/python3 - "$gen" "$addr" <<'PY'
import sys; sys.path.insert(0, sys.argv[1])
import grpc
from handlers.v1 import handlers_pb2 as pb, handlers_pb2_grpc as pbg
s = pbg.HandlersStub(grpc.insecure_channel(sys.argv[2]))
s.AddHandler(pb.AddHandlerRequest(key="bench", target=pb.Target(local="count")))
s.AddHandler(pb.AddHandlerRequest(key="bench", target=pb.Target(local="last_value")))
PY
/usr/bin/python3 bench/grpc_frame.py "$gen" dispatch "$tmp/dispatch.bin"
/usr/bin/python3 bench/grpc_frame.py "$gen" health "$tmp/health.bin"
run() { # path body -> req/s
  h2load -n "$n" -c "$c" -m "$m" -d "$2" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://$addr$1" >"$tmp/out" 2>&1
  grep -q " 0 failed, 0 errored" "$tmp/out" || { cat "$tmp/out" >&2; exit 1; }
  awk '/^finished in/ {gsub(",", "", $4); print $4}' "$tmp/out"
}
ref=$(run /grpc.health.v1.Health/Check "$tmp/health.bin")
dis=$(run /handlers.v1.Handlers/Dispatch "$tmp/dispatch.bin")
lat=$(awk '/^time for request:/ {print "min "$4", mean "$6", max "$5}' "$tmp/out")
printf 'requests=%s clients=%s streams/client=%s\n' "$n" "$c" "$m"
printf 'reference  Health/Check        %10.0f req/s\n' "$ref"
printf 'Dispatch   (count+last_value)  %10.0f req/s   ratio %.2f\n' "$dis" \
  "$(echo "$dis / $ref" | bc -l)"
printf 'Dispatch request time: %s\n' "$lat"
kill -TERM $pid; wait $pid
