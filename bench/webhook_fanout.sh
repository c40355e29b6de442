#!/usr/bin/env bash
# Webhook fan-out: handlerd's deliveries/s to a fast local HTTP/1.1
# keep-alive receiver (bench/receiver.c, libmicrohttpd), reported as a ratio
# to wrk's requests/s against the same receiver in the same run, plus the
# end-to-end dispatch latency (send to reply, all K deliveries included).
#   bench/webhook_fanout.sh [build-dir]       (needs a built tree and wrk)
# Knobs (environment): D seconds per phase (10), K webhooks (4), T driver
# threads (4), MODE unary|stream (unary), WINDOW events in flight per stream
# (4), RECV_THREADS (2), WRK_T (2), WRK_C (16).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/service/handlerd
recv=$build/bench/receiver
drv=$build/bench/webhook_fanout
command -v wrk >/dev/null || {
  echo "wrk is missing: apt-get install -y wrk" >&2
  exit 1
}
for f in "$bin" "$recv" "$drv"; do
  [ -x "$f" ] || { echo "build first: $f missing" >&2; exit 1; }
done
d=${D:-10} k=${K:-4} t=${T:-4} mode=${MODE:-unary} window=${WINDOW:-4}
rt=${RECV_THREADS:-2} wt=${WRK_T:-2} wc=${WRK_C:-16}

tmp=$(mktemp -d)
rpid='' hpid=''
cleanup() {
  if [ -n "$hpid" ]; then kill "$hpid" 2>/dev/null || true; fi
  if [ -n "$rpid" ]; then kill "$rpid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.05; done
  echo "timed out waiting for $1" >&2; exit 1; }

"$recv" -t "$rt" -r "$tmp/rport" >"$tmp/recv.out" &
rpid=$!
wait_file "$tmp/rport"
port=$(cat "$tmp/rport")
base=http://127.0.0.1:$port

# The reference: wrk POSTing a body and headers shaped like handlerd's
# (structured CloudEvent of the same event, same key and topic, same size).
cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/cloudevents+json"
wrk.headers["User-Agent"] = "handlerd/0.1.0"
wrk.headers["webhook-id"] = "0ca64b22-11de-4c41-93b7-e2afdf5a6bd9"
wrk.headers["webhook-timestamp"] = "1795621728"
wrk.body = '{"specversion":"1.0","id":"0ca64b22-11de-4c41-93b7-e2afdf5a6bd9",'
  .. '"source":"//handlerd/bench/keys/bench-fanout","type":"handlers.v1.update",'
  .. '"subject":"bench/prices/eur-usd","time":"2026-11-25T15:48:48.329298Z",'
  .. '"datacontenttype":"application/json","data":{"key":"bench-fanout",'
  .. '"event":"update","topicPath":"bench/prices/eur-usd","topicValue":'
  .. '{"jsonValue":{"bid":1.1051200000000001,"ask":1.10527,"venue":"bench",'
  .. '"seq":42}}}}'
LUA
wrk --latency -t"$wt" -c"$wc" -d"${d}s" -s "$tmp/post.lua" "$base/hook/ref" \
  >"$tmp/wrk.out" 2>&1 || { cat "$tmp/wrk.out" >&2; exit 1; }
if grep -qE 'Non-2xx|Socket errors' "$tmp/wrk.out"; then
  echo "wrk saw errors:" >&2; cat "$tmp/wrk.out" >&2; exit 1
fi
ref=$(awk '/^Requests\/sec:/ {print $2}' "$tmp/wrk.out")
wrk_ms() { # percentile line of wrk --latency -> milliseconds
  awk -v p="$1" '$1 == p {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    print (u == "us" ? v / 1000 : u == "s" ? v * 1000 : v); exit}' "$tmp/wrk.out"
}
ref_p50=$(wrk_ms 50%) ref_p99=$(wrk_ms 99%)
kill -USR1 "$rpid"
for _ in $(seq 100); do grep -q '^count' "$tmp/recv.out" && break; sleep 0.05; done
# "count N bytes B connections C": wrk's body size and connections.
ref_info=$(awk '/^count/ {printf "%.0f body bytes each, %d connections", $4 / $2, $6; exit}' \
  "$tmp/recv.out")

"$bin" --listen 127.0.0.1:0 --ready-file "$tmp/ready" --log-level warn \
  --instance bench 2>"$tmp/handlerd.err" &
hpid=$!
wait_file "$tmp/ready"
# Mid-run: how many connections handlerd holds to the receiver.
( sleep $((d / 2 + 1))
  ss -Htn state established "( dport = :$port )" | wc -l >"$tmp/conns" ) &
spid=$!
"$drv" -a "$(cat "$tmp/ready")" -u "$base" -k "$k" -t "$t" -d "$d" \
  -m "$mode" -w "$window" >"$tmp/drv.out" 2>&1 || {
  cat "$tmp/drv.out" "$tmp/handlerd.err" >&2; exit 1; }
wait "$spid"
# handlerd's CPU time (user + system) over its whole life, in seconds.
hcpu=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$hpid/stat")
kill -TERM "$hpid"; wait "$hpid" || true; hpid=''
kill -TERM "$rpid"; wait "$rpid" || true; rpid=''
# Every request handlerd delivered (warm-up included): the receiver's final
# count less wrk's.
hdel=$(awk '/^count/ {n[++i] = $2} END {print n[2] - n[1]}' "$tmp/recv.out")

res=$(grep '^RESULT ' "$tmp/drv.out")
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$res"; }
del=$(get delivery_per_s) dis=$(get dispatch_per_s)
ratio=$(echo "$del / $ref" | bc -l)
met=$(echo "$ratio >= 0.8" | bc -l)

grep -v '^RESULT ' "$tmp/drv.out"
printf 'handlerd connections to the receiver mid-run: %s\n' "$(cat "$tmp/conns")"
printf 'wrk: %s\n' "$ref_info"
printf 'handlerd CPU: %.2f s for %d deliveries, %.0f us per delivery\n' \
  "$hcpu" "$hdel" "$(echo "$hcpu * 1000000 / $hdel" | bc -l)"
printf 'load average at the end: %s (figures from a busy machine are noisy)\n\n' \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %10s %9s %9s\n' "" "rate/s" "p50 ms" "p99 ms"
printf '%-44s %10.0f %9.3f %9.3f\n' \
  "reference: wrk -t$wt -c$wc POST (request)" "$ref" "$ref_p50" "$ref_p99"
printf '%-44s %10.0f %9.3f %9.3f\n' \
  "handlerd: deliveries (dispatch latency)" "$del" "$(get p50_ms)" "$(get p99_ms)"
printf '%-44s %10.0f\n' "  dispatches ($k webhooks each, $mode, T=$t)" "$dis"
printf 'ratio deliveries/wrk: %.2f  (target >= 0.80: %s)\n' "$ratio" \
  "$([ "$met" = 1 ] && echo met || echo NOT met)"
