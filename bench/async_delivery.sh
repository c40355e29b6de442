#!/usr/bin/env bash
# Durable async delivery: accepted events/s, Dispatch p99 and delivered
# deliveries/s of K async webhooks, each beside its reference measured in
# the same run on the same handlerd and the same receiver.
#   bench/async_delivery.sh [build-dir]  (a built tree: handlerd, handlerctl,
#                                         bench/receiver; h2load, protoc)
#
# One handlerd (--state-dir in a temp dir, --metrics-listen), the fast
# receiver (bench/receiver.c), h2load at CONC (clients x streams) in every
# phase, each D seconds:
#   (a) reference: unary Dispatch to a key with the built-in `count`
#       (req/s, p99);
#   (b) unary Dispatch to a key with K async webhooks (nothing else): the
#       accepted events/s and the p99 of those calls; every answered call
#       must have K deliveries accepted (handlerd_async_accepted);
#   (c) delivered: the receiver's count from the start of (b) until the
#       backlog of (b) has drained (every accepted delivery received), per
#       second;
#   (d) reference for (c): the sync fan-out, unary Dispatch to a key with K
#       sync webhooks to the same receiver (deliveries/s = K x req/s,
#       cross-checked with the receiver's count);
#   (e) the outbox alone: (b) again with the receiver stopped (SIGSTOP), so
#       no delivery competes with the accepts, then the backlog drained with
#       nothing else running.
# A warm-up (WARM_N calls to each key, drained) comes first. Also printed:
# handlerd's CPU per thread and per event or delivery, bytes it wrote to
# disk, and (when `perf stat` can count syscalls) its fsync, pwrite64 and
# pread64 calls: events per fsync stands in for events per commit while
# handlerd_async_journal_commits is missing from /metrics.
#
# Knobs (environment): D seconds per phase (5), K async and sync webhooks
# (4), CONC clients x streams per client (4x16), WARM_N (2000), RECV_THREADS
# (2), STALL_S (15: no delivery for that long while a backlog is left is
# reported as a stall and the script fails), MAX_PENDING (handlerd's
# --max-pending-deliveries, 2000000: (e) must not be refused), GEN (a
# directory with the Python code generated from proto/; generated when
# absent).
# Exits 1 when a check fails (every accepted delivery received exactly once,
# none failed; K deliveries per answered call). The last line is
# machine-readable:
#   RESULT count_rps=.. count_p99_ms=.. accepted_per_s=.. async_p99_ms=..
#          delivered_per_s=.. fanout_per_s=.. fanout_p99_ms=..
#          drain_alone_per_s=.. events_per_commit=.. events_per_fsync=..
#          check=ok|<what failed>
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/service/handlerd
recv=$build/bench/receiver
ctl=$build/client/handlerctl
for t in h2load protoc; do
  command -v $t >/dev/null || { echo "$t is missing (bench/packages.txt)" >&2; exit 1; }
done
for f in "$bin" "$recv" "$ctl"; do
  [ -x "$f" ] || { echo "build first: $f missing" >&2; exit 1; }
done
d=${D:-5} k=${K:-4} conc=${CONC:-4x16} warm_n=${WARM_N:-2000}
rt=${RECV_THREADS:-2} stall_s=${STALL_S:-15}
# (e) builds a backlog of about D x 10 000 x K deliveries: above handlerd's
# default limit (100 000) events would be refused, not measured.
max_pending=${MAX_PENDING:-2000000}
c=${conc%x*} m=${conc#*x}

tmp=$(mktemp -d)
rpid='' hpid='' perf_pid=''
cleanup() {
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid" 2>/dev/null || true; fi
  if [ -n "$hpid" ]; then kill "$hpid" 2>/dev/null || true; wait "$hpid" 2>/dev/null || true; fi
  if [ -n "$rpid" ]; then # (e) may have left it stopped
    kill -CONT "$rpid" 2>/dev/null || true
    kill "$rpid" 2>/dev/null || true
    wait "$rpid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done
  echo "timed out waiting for $1" >&2; exit 1; }
now() { date +%s.%N; }
fail() { echo "async_delivery: $*" >&2; exit 1; }

# Request bodies (gRPC-framed DispatchRequests, bench/grpc_frame.py).
gen=${GEN:-}
if [ -z "$gen" ]; then
  gen=$tmp/py
  mkdir -p "$gen"
  protoc -Iproto --python_out="$gen" proto/handlers/v1/handlers.proto
fi
for key in count async sync; do
  /usr/bin/python3 bench/grpc_frame.py "$gen" dispatch "$tmp/$key.bin" "bench-$key"
done

"$recv" -t "$rt" -r "$tmp/rport" >"$tmp/recv.out" &
rpid=$!
wait_file "$tmp/rport"
rport=$(cat "$tmp/rport")
base=http://127.0.0.1:$rport

# A free port for /metrics (handlerd does not report a port-0 bind there).
mport=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -m 700 "$tmp/state"
"$bin" --listen 127.0.0.1:0 --ready-file "$tmp/ready" --log-level warn \
  --instance bench --state-dir "$tmp/state" --metrics-listen "127.0.0.1:$mport" \
  --max-pending-deliveries "$max_pending" \
  2>"$tmp/handlerd.err" &
hpid=$!
wait_file "$tmp/ready"
addr=$(cat "$tmp/ready")

. "$(dirname "$0")/async_lib.sh"
metrics() { async_metrics "$mport"; }
mfield() { # "metrics line" n -> field n
  awk -v n="$2" '{print $n}' <<<"$1"
}
# handlerd's CPU time per thread (ticks): "tid name ticks" lines.
thread_cpu() { thread_ticks "$hpid"; }
# thread_cpu before, after, seconds -> the busiest threads, % of one core
cpu_report() {
  awk -v secs="$3" -v hz="$(getconf CLK_TCK)" '
    NR == FNR {b[$1] = $3; next}
    {n = $2
     u = ($3 - b[$1]) / hz / secs * 100; tot += u; if (u >= 1) printf "%s:%.0f%% ", n, u}
    END {printf "(all: %.0f%% of one core)\n", tot}' "$1" "$2"
}

# CPU seconds between two thread_cpu snapshots: all threads, or those named $3
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" -v only="${3:-}" '
    NR == FNR {b[$1] = $3; next}
    only == "" || $2 == only {t += $3 - b[$1]} END {printf "%.3f", t / hz}' "$1" "$2"
}
# Bytes handlerd had written to storage (/proc/PID/io write_bytes).
io_written() { awk '/^write_bytes:/ {print $2}' "/proc/$hpid/io"; }

H2() { h2load -H 'content-type: application/grpc' -H 'te: trailers' "$@"; }
h2_check() { # h2load output -> exit 1 unless every request succeeded
  grep -q ' 0 failed, 0 errored, 0 timeout' "$1" || {
    echo "h2load errors:" >&2; grep -E '^(requests|status codes):' "$1" >&2; return 1; }
}
h2_rps() { awk '/^finished in/ {print $4}' "$1"; }
h2_done() { awk '/^requests:/ {print $8}' "$1"; }
p99_ms() { awk '{print $3}' "$1" | sort -n |
  awk '{v[NR] = $1} END {if (!NR) print "nan"; else {i = int(NR * 0.99 + 0.999); printf "%.2f", v[i] / 1000}}'; }
run_h2() { # key name [h2load flags] -> $tmp/name.out, $tmp/name.log
  local key=$1 name=$2
  shift 2
  rm -f "$tmp/$name.log"
  H2 "$@" -c "$c" -m "$m" -d "$tmp/$key.bin" --log-file "$tmp/$name.log" \
    "http://$addr/handlers.v1.Handlers/Dispatch" >"$tmp/$name.out" 2>&1 || true
  h2_check "$tmp/$name.out" || fail "h2load to bench-$key failed"
}

# Waits until the receiver has r_base + (accepted - a_base) requests and the
# outbox has nothing waiting or in flight (calls h2load left unanswered at
# the end of its run may still be accepted: they count). Polls the
# receiver's count; /metrics only when that count is reached, because a
# scrape is not free with a backlog (each outbox gauge walks every
# unfinished delivery under the outbox's lock). Fails when the receiver gets
# nothing for STALL_S seconds. Sets drained_at.
wait_drained() { # r_base a_base
  local last=-1 last_t n t mm target
  mm=$(metrics)
  target=$(($1 + $(mfield "$mm" 1) - $2))
  last_t=$(now)
  while :; do
    n=$(recv_count)
    t=$(now)
    if [ "${n:-0}" -ge "$target" ]; then
      mm=$(metrics)
      if [ "$(mfield "$mm" 6)" = 0 ] && [ "$(mfield "$mm" 7)" = 0 ] &&
        [ "$n" -ge $(($1 + $(mfield "$mm" 1) - $2)) ]; then
        drained_at=$t
        return 0
      fi
      target=$(($1 + $(mfield "$mm" 1) - $2))
    fi
    if [ "$n" != "$last" ]; then
      last=$n last_t=$t
    elif awk -v a="$t" -v b="$last_t" -v s="$stall_s" 'BEGIN {exit !(a - b > s)}'; then
      mm=$(metrics)
      echo "async_delivery: STALL: the receiver has $n requests ($1 before the run," \
        "$(($(mfield "$mm" 1) - $2)) accepted since), none for ${stall_s}s; outbox" \
        "(accepted attempts failed succeeded dead waiting in_flight commits): $mm" >&2
      sed -n '1,20p' "$tmp/handlerd.err" >&2
      exit 1
    fi
    sleep 0.05
  done
}

# ---- registrations ----------------------------------------------------------
hctl() { "$ctl" --addr "$addr" "$@" >/dev/null || fail "handlerctl $* failed"; }
hctl add --key bench-count --local count -q
for i in $(seq 0 $((k - 1))); do
  hctl add --key bench-async --webhook "$base/hook/async-$i" --async --timeout-ms 60000 -q
  hctl add --key bench-sync --webhook "$base/hook/sync-$i" -q
done

# ---- warm-up: every key, then the backlog drained ----------------------------
r_w=$(recv_count) m_w=$(metrics)
for key in count sync async; do run_h2 "$key" warm -n "$warm_n"; done
wait_drained $((r_w + warm_n * k)) "$(mfield "$m_w" 1)"

# ---- (a) reference: count ------------------------------------------------------
run_h2 count count -D "$d"
count_rps=$(h2_rps "$tmp/count.out") count_p99=$(p99_ms "$tmp/count.log")

# handlerd's fsync/fdatasync, pwrite64 and pread64 calls (SQLite writes
# its WAL and reads pages missing from its cache with them), counted by
# `perf stat` when it can trace syscalls; -1 otherwise.
sync_count_start() {
  perf_pid=''
  command -v perf >/dev/null || return 0
  perf stat -x, -o "$tmp/perf.$1" -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync \
    -e syscalls:sys_enter_pwrite64,syscalls:sys_enter_pread64 -p "$hpid" 2>/dev/null &
  perf_pid=$!
  sleep 0.3
}
sync_count_stop() { # sets fsyncs, pwrites, preads
  fsyncs=-1 pwrites=-1 preads=-1
  [ -n "$perf_pid" ] || return 0
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  perf_pid=''
  read -r fsyncs pwrites preads < <(awk -F, '
    $1 !~ /^[0-9]+$/ {next}
    $3 ~ /sys_enter_f(data)?sync$/ {f += $1; nf++}
    $3 ~ /sys_enter_pwrite64$/ {w = $1; nw++}
    $3 ~ /sys_enter_pread64$/ {r = $1; nr++}
    END {print (nf == 2 ? f : -1), (nw ? w : -1), (nr ? r : -1)}' "$tmp/perf.$1" 2>/dev/null ||
    echo -1 -1 -1)
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN {print a - b}'; }

# ---- (b) async accepts, (c) delivered until drained ----------------------------
sync_count_start b
m0=$(metrics) r0=$(recv_count) cpu0=$(thread_cpu) t0=$(now)
run_h2 async async -D "$d"
t1=$(now) m1=$(metrics) cpu1=$(thread_cpu) r1=$(recv_count)
sync_count_stop b
fsyncs_b=$fsyncs
acc_rps=$(h2_rps "$tmp/async.out") acc_p99=$(p99_ms "$tmp/async.log")
acc_done=$(h2_done "$tmp/async.out")
wait_drained "$r0" "$(mfield "$m0" 1)"
t2=$drained_at
m2=$(metrics) cpu2=$(thread_cpu) r2=$(recv_count)
delivered=$((r2 - r0))
accepted=$(($(mfield "$m2" 1) - $(mfield "$m0" 1)))
accepted_b=$(($(mfield "$m1" 1) - $(mfield "$m0" 1)))
commits_b=-1
[ "$(mfield "$m0" 8)" -ge 0 ] && commits_b=$(($(mfield "$m1" 8) - $(mfield "$m0" 8)))

# ---- (d) sync fan-out to the same receiver ---------------------------------------
rs0=$(recv_count) cpus0=$(thread_cpu) ts0=$(now)
run_h2 sync sync -D "$d"
ts1=$(now) cpus1=$(thread_cpu) rs1=$(recv_count)
sync_rps=$(h2_rps "$tmp/sync.out") sync_p99=$(p99_ms "$tmp/sync.log")
sync_done=$(h2_done "$tmp/sync.out")
sync_got=$((rs1 - rs0))

# ---- (e) the outbox alone: accepts with the receiver stopped, then the drain -----
# The receiver is stopped (SIGSTOP: connections stay open, attempts wait for
# their answer; the async webhooks' timeout is 60 s) while async calls run
# for D s, so the accepts run without deliveries; then it goes on and the
# backlog drains with nothing else running.
# The deliveries of the sync calls h2load gave up on at the end of (d) come
# in after its run: wait until the receiver's count stands still.
settle() {
  local a b
  b=$(recv_count)
  while :; do sleep 0.2; a=$(recv_count); [ "$a" = "$b" ] && return 0; b=$a; done
}
settle
sync_count_start e
m3=$(metrics) r3=$(recv_count) cpu3=$(thread_cpu) io3=$(io_written)
kill -STOP "$rpid"
run_h2 async backlog -D "$d"
sync_count_stop e
fsyncs_e=$fsyncs pwrites_e=$pwrites preads_e=$preads
cpu4=$(thread_cpu) io4=$(io_written) t4=$(now)
kill -CONT "$rpid"
wait_drained "$r3" "$(mfield "$m3" 1)"
t5=$drained_at
m5=$(metrics) cpu5=$(thread_cpu) io5=$(io_written) r5=$(recv_count)
backlog_rps=$(h2_rps "$tmp/backlog.out") backlog_done=$(h2_done "$tmp/backlog.out")
backlog_n=$(($(mfield "$m5" 1) - $(mfield "$m3" 1)))
backlog_s=$(secs "$t5" "$t4")
db_bytes=$(du -cb "$tmp"/state/handlerd.db* | awk 'END {print $1}')
# Costs per event accepted (no delivery running) and per delivery drained.
us_per() { awk -v a="$1" -v n="$2" 'BEGIN {printf "%.0f", (n > 0 ? a * 1e6 / n : 0)}'; }
e_events=$((backlog_n / k))
e_acc_cpu=$(us_per "$(cpu_secs <(echo "$cpu3") <(echo "$cpu4"))" "$e_events")
e_acc_ob=$(us_per "$(cpu_secs <(echo "$cpu3") <(echo "$cpu4") handlerd)" "$e_events")
e_acc_io=$(((io4 - io3) / (e_events > 0 ? e_events : 1)))
e_dlv_cpu=$(us_per "$(cpu_secs <(echo "$cpu4") <(echo "$cpu5"))" "$backlog_n")
e_dlv_ob=$(us_per "$(cpu_secs <(echo "$cpu4") <(echo "$cpu5") handlerd)" "$backlog_n")
e_dlv_eng=$(us_per "$(cpu_secs <(echo "$cpu4") <(echo "$cpu5") hd-webhooks)" "$backlog_n")
e_dlv_io=$(((io5 - io4) / (backlog_n > 0 ? backlog_n : 1)))
d_cpu=$(us_per "$(cpu_secs <(echo "$cpus0") <(echo "$cpus1"))" "$sync_got")
d_eng=$(us_per "$(cpu_secs <(echo "$cpus0") <(echo "$cpus1") hd-webhooks)" "$sync_got")

kill -TERM "$hpid"; wait "$hpid" || true; hpid=''
kill -TERM "$rpid"; wait "$rpid" || true; rpid=''

# ---- checks and report -------------------------------------------------------------
check=ok
# Every answered async call had its K deliveries accepted (h2load may leave
# a few calls unanswered at the end of its run: accepted, not counted).
if [ "$accepted" -lt $((acc_done * k)) ] || [ "$accepted" -gt $(((acc_done + c * m) * k)) ]; then
  check="accepted_${accepted}_for_${acc_done}_calls"
fi
if [ "$backlog_n" -lt $((backlog_done * k)) ] ||
  [ "$backlog_n" -gt $(((backlog_done + c * m) * k)) ]; then
  check="backlog_accepted_${backlog_n}_for_${backlog_done}_calls"
fi
# Every accepted delivery received exactly once, none failed or dead.
[ "$delivered" -eq "$accepted" ] || check="delivered_${delivered}_of_${accepted}"
[ $((r5 - r3)) -eq "$backlog_n" ] || check="backlog_delivered_$((r5 - r3))_of_${backlog_n}"
[ "$(mfield "$m5" 3)" = 0 ] && [ "$(mfield "$m5" 5)" = 0 ] ||
  check="failed_attempts_$(mfield "$m5" 3)_dead_$(mfield "$m5" 5)"
[ "$(mfield "$m5" 4)" = "$(mfield "$m5" 1)" ] ||
  check="succeeded_$(mfield "$m5" 4)_of_$(mfield "$m5" 1)"
# The sync fan-out: K deliveries per answered call.
[ "$sync_got" -ge $((sync_done * k)) ] || check="sync_received_${sync_got}_for_${sync_done}_calls"

acc_s=$(secs "$t1" "$t0") drain_s=$(secs "$t2" "$t0") tail_s=$(secs "$t2" "$t1")
dlv_rps=$(awk -v n="$delivered" -v s="$drain_s" 'BEGIN {printf "%.0f", n / s}')
backlog_dlv_rps=$(awk -v n="$backlog_n" -v s="$backlog_s" 'BEGIN {printf "%.0f", n / s}')
fan_rps=$(awk -v r="$sync_rps" -v k="$k" 'BEGIN {printf "%.0f", r * k}')
per() { awk -v a="$1" -v b="$2" 'BEGIN {if (b <= 0) print "nan"; else printf "%.1f", a / b}'; }
epc=$(per "$((accepted_b / k))" "$commits_b") eps=$(per "$((accepted_b / k))" "$fsyncs_b")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b ? a / b : 0}'; }

printf 'handlerd %s, --state-dir on %s, h2load -c%s -m%s, K=%s, D=%ss; load average %s\n\n' \
  "$addr" "$(df --output=source "$tmp" | tail -1)" "$c" "$m" "$k" "$d" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-58s %10s %9s\n' "" "rate/s" "p99 ms"
printf '%-58s %10.0f %9s\n' "(a) Dispatch to count: calls (reference)" "$count_rps" "$count_p99"
printf '%-58s %10.0f %9s\n' "(b) Dispatch to $k async webhooks: accepted events" "$acc_rps" "$acc_p99"
printf '%-58s %10s\n' "(c) deliveries received, start of (b) to drained" "$dlv_rps"
printf '%-58s %10s %9s\n' "(d) sync fan-out, $k webhooks: deliveries (reference)" "$fan_rps" "$sync_p99"
printf '%-58s %10.0f\n' "(e) accepted events, receiver stopped" "$backlog_rps"
printf '%-58s %10s\n' "(e) deliveries/s draining that backlog alone" "$backlog_dlv_rps"
printf '\n'
printf 'accepted/s vs count: %s (target >= 0.5); delivered/s vs sync fan-out: %s (target >= 1);' \
  "$(ratio "$acc_rps" "$count_rps")" "$(ratio "$dlv_rps" "$fan_rps")"
printf ' drain alone vs sync fan-out: %s\n' "$(ratio "$backlog_dlv_rps" "$fan_rps")"
printf '(b): %d calls answered in %.1f s, %d deliveries accepted by its end; the receiver got %d meanwhile\n' \
  "$acc_done" "$acc_s" "$accepted_b" "$((r1 - r0))"
if [ "$commits_b" -ge 0 ]; then
  printf '(b): %d journal commits (accepts and finished attempts), %s events accepted per commit\n' \
    "$commits_b" "$epc"
else
  printf '(b): handlerd_async_journal_commits is not on /metrics: events per commit unknown\n'
fi
[ "$fsyncs_b" -ge 0 ] && printf '(b): %d fsync/fdatasync calls (perf stat), %s events accepted per call\n' \
  "$fsyncs_b" "$eps"
printf '(c): %d deliveries in %.2f s, drained %.2f s after (b) ended\n' "$delivered" "$drain_s" "$tail_s"
printf '(d): %d calls, the receiver got %d\n' "$sync_done" "$sync_got"
printf '(e): %d events accepted: handlerd CPU %s us per event, %s of them on the outbox thread; %s bytes written to disk per event\n' \
  "$e_events" "$e_acc_cpu" "$e_acc_ob" "$e_acc_io"
[ "$fsyncs_e" -ge 0 ] &&
  printf '(e): per event accepted: %s pwrite64, %s pread64 calls; %s events per fsync/fdatasync (%s calls)\n' \
    "$(per "$pwrites_e" "$e_events")" "$(per "$preads_e" "$e_events")" \
    "$(per "$e_events" "$fsyncs_e")" "$fsyncs_e"
printf '(e): %d deliveries drained in %.2f s: handlerd CPU %s us per delivery (outbox thread %s, hd-webhooks %s); %s bytes written to disk per delivery\n' \
  "$backlog_n" "$backlog_s" "$e_dlv_cpu" "$e_dlv_ob" "$e_dlv_eng" "$e_dlv_io"
printf '(d): handlerd CPU %s us per sync delivery (hd-webhooks %s)\n' "$d_cpu" "$d_eng"
printf 'database: %d bytes for %d deliveries (%.0f per delivery)\n' "$db_bytes" \
  "$(mfield "$m5" 1)" "$(awk -v b="$db_bytes" -v n="$(mfield "$m5" 1)" 'BEGIN {print n ? b / n : 0}')"
printf 'handlerd CPU by thread (%% of one core; "handlerd" is the outbox thread), (b): %s\n' "$(cpu_report <(echo "$cpu0") <(echo "$cpu1") "$acc_s")"
awk -v s="$tail_s" 'BEGIN {exit !(s > 0.3)}' &&
  printf 'handlerd CPU by thread, after (b) until drained: %s\n' \
    "$(cpu_report <(echo "$cpu1") <(echo "$cpu2") "$tail_s")"
printf 'handlerd CPU by thread, (d): %s\n' \
  "$(cpu_report <(echo "$cpus0") <(echo "$cpus1") "$(secs "$ts1" "$ts0")")"
printf 'handlerd CPU by thread, (e) drain: %s\n' \
  "$(cpu_report <(echo "$cpu4") <(echo "$cpu5") "$backlog_s")"
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'check: %s\n' "$check"
printf 'RESULT count_rps=%.0f count_p99_ms=%s accepted_per_s=%.0f async_p99_ms=%s' \
  "$count_rps" "$count_p99" "$acc_rps" "$acc_p99"
printf ' delivered_per_s=%s fanout_per_s=%s fanout_p99_ms=%s drain_alone_per_s=%s' \
  "$dlv_rps" "$fan_rps" "$sync_p99" "$backlog_dlv_rps"
printf ' events_per_commit=%s events_per_fsync=%s check=%s\n' "$epc" "$eps" "$check"
[ "$check" = ok ]
