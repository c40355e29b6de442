# bench/async_lib.sh - what the async benchmarks share (sourced by
# bench/async_delivery.sh and bench/pg_replicas.sh): a plain HTTP GET on
# loopback, the receiver's count, and handlerd's outbox figures.

http_get() { # port path -> body
  local body
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  body=$(cat <&3)
  exec 3>&-
  printf '%s\n' "${body#*$'\r\n\r\n'}"
}
# The receiver's request count ($rport: its port).
recv_count() { http_get "$rport" /count | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }
# The outbox's figures of the handlerd whose /metrics is on port $1:
# "accepted attempts failed succeeded dead waiting in_flight commits"
# (commits -1: not exported).
async_metrics() {
  http_get "$1" /metrics | awk '
    /^handlerd_async_accepted /            {a = $2}
    /^handlerd_async_attempts /            {t = $2}
    /^handlerd_async_failed_attempts /     {f = $2}
    /^handlerd_async_succeeded /           {s = $2}
    /^handlerd_async_dead /                {x = $2}
    /^handlerd_async_deliveries_waiting /  {w = $2}
    /^handlerd_async_deliveries_in_flight / {i = $2}
    /^handlerd_async_journal_commits /     {c = $2}
    BEGIN {c = -1}
    END {printf "%d %d %d %d %d %d %d %d\n", a, t, f, s, x, w, i, c}'
}
# CPU time per thread of process $1 (ticks): "tid name ticks" lines.
thread_ticks() {
  local f tid
  for f in /proc/"$1"/task/*/stat; do
    tid=${f%/stat} tid=${tid##*/}
    awk -v tid="$tid" -v pid="$1" '{
      line = $0; name = line; sub(/^[^(]*\(/, "", name); sub(/\).*$/, "", name)
      sub(/^.*\) /, "", line); split(line, v, " ")
      gsub(/ /, "_", name); if (tid == pid) name = "main"
      print tid, name, v[12] + v[13]}' "$f" 2>/dev/null || true
  done
}
