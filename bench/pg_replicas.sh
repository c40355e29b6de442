#!/usr/bin/env bash
# Async delivery on PostgreSQL: delivered/s with one and two replicas on
# the same database, beside the SQLite single node, in the same run, and
# what each delivery costs the database.
#   bench/pg_replicas.sh [build-dir]  (a built tree: handlerd, handlerctl,
#                                      bench/receiver; h2load, protoc,
#                                      Debian's postgresql-15)
#
# One PostgreSQL 15 (bench/pg_server.py: tests/integration/pg_harness.py's
# cluster, fsync and synchronous_commit on, with pg_stat_statements), one
# receiver (bench/receiver.c), and, per phase, handlerd with K async
# webhooks under one key to that receiver, loaded by h2load (unary Dispatch,
# CONC clients x streams, D seconds) as bench/async_delivery.sh does:
#   sqlite  (a) one handlerd, --state-dir (the single node);
#   pg1     (b) one replica, --database (a fresh database of its own);
#   pg2     (c) two replicas on one fresh database, the registrations made
#           on the first, the second loading them; the load split across
#           them (two h2load runs at once, CONC's clients divided between
#           them: the same calls in flight in every phase).
# Each phase: a warm-up (WARM_N calls, drained), then the measured load;
# "delivered/s" is the receiver's count from the start of the load until
# every delivery accepted is received (the backlog drained), per second.
# Checked per phase: every accepted delivery received exactly once (the
# receiver's count against handlerd_async_accepted; on PostgreSQL also the
# rows: every delivery succeeded, one attempt each); duplicates and losses
# are printed. A backlog that stops draining (nothing received for STALL_S
# seconds) is reported with each replica's outbox figures and the database's
# rows by state and lease, and fails the check.
#
# On PostgreSQL, pg_stat_statements (reset after the warm-up) gives calls,
# rows, mean execution ms and WAL bytes per statement kind; calls /
# deliveries = statements per delivery; the replicas'
# handlerd_database_round_trips_total (read after the warm-up and once
# drained) / deliveries = round trips per delivery (a journal commit's
# statements go out in one libpq pipeline); rows of INSERT/UPDATE/DELETE
# / deliveries = rows written per delivery. Also: WAL bytes per delivery
# (pg_current_wal_lsn), fdatasync calls of PostgreSQL (perf stat, when it
# can trace syscalls), the CPU of handlerd, of PostgreSQL (postmaster and
# every process of it) and of the whole machine (/proc/stat) from the start
# of the load until drained, per delivery.
#
# Knobs (environment): D seconds of load per phase (5), K webhooks (4), CONC
# clients x streams (4x16), WARM_N warm-up calls (300), ROUNDS (1: the
# phases run ROUNDS times, a b c a b c ..., medians reported), PHASES
# ("sqlite pg1 pg2"), RECV_THREADS (2), STALL_S (15), MAX_PENDING
# (--max-pending-deliveries, 2000000), PROFILE (phase names: `perf record
# -g` of handlerd and every PostgreSQL process during that phase's load,
# then the top commands (threads), libraries and symbols), HANDLERCTL (default
# build-dir/client/handlerctl, else build/client/handlerctl), GEN (Python
# code generated from proto/; generated when absent), PG_SETTINGS (more
# PostgreSQL settings, "name=value ...").
#
# Exits 1 when a check fails. The last line is machine-readable:
#   RESULT sqlite_accepted_per_s=.. sqlite_delivered_per_s=..
#          pg1_accepted_per_s=.. pg1_delivered_per_s=.. pg2_accepted_per_s=..
#          pg2_delivered_per_s=.. pg1_vs_sqlite=.. pg2_vs_pg1=..
#          pg1_round_trips_per_delivery=.. pg1_statements_per_delivery=..
#          pg1_rows_written_per_delivery=.. pg2_round_trips_per_delivery=..
#          pg2_statements_per_delivery=.. pg2_rows_written_per_delivery=..
#          pg1_wal_bytes_per_delivery=.. pg1_pg_cpu_us_per_delivery=..
#          pg1_hd_cpu_us_per_delivery=.. check=ok|<what failed>
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/service/handlerd
recv=$build/bench/receiver
ctl=${HANDLERCTL:-$build/client/handlerctl}
[ -x "$ctl" ] || ctl=build/client/handlerctl
for t in h2load protoc; do
  command -v $t >/dev/null || { echo "$t is missing (bench/packages.txt)" >&2; exit 1; }
done
for f in "$bin" "$recv" "$ctl"; do
  [ -x "$f" ] || { echo "build first: $f missing" >&2; exit 1; }
done
d=${D:-5} k=${K:-4} conc=${CONC:-4x16} warm_n=${WARM_N:-300} rounds=${ROUNDS:-1}
phases=${PHASES:-sqlite pg1 pg2} rt=${RECV_THREADS:-2} stall_s=${STALL_S:-15}
max_pending=${MAX_PENDING:-2000000} profile=${PROFILE:-}
c=${conc%x*} m=${conc#*x}
# pg2: the clients divided between the two replicas (at least one each).
c1=$(((c + 1) / 2)) c2=$((c / 2))
[ "$c2" -ge 1 ] || c2=1

tmp=$(mktemp -d)
rpid='' pgs_pid='' perf_pid='' prof_pid=''
declare -a hd_pid=() hd_addr=() hd_mport=()
stop_replicas() {
  local i
  for i in "${!hd_pid[@]}"; do
    kill -TERM "${hd_pid[$i]}" 2>/dev/null || true
  done
  for i in "${!hd_pid[@]}"; do
    wait "${hd_pid[$i]}" 2>/dev/null || true
  done
  hd_pid=() hd_addr=() hd_mport=()
}
cleanup() {
  local p
  for p in "$perf_pid" "$prof_pid"; do
    [ -n "$p" ] && kill -INT "$p" 2>/dev/null || true
  done
  stop_replicas
  if [ -n "$rpid" ]; then kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true; fi
  if [ -n "$pgs_pid" ]; then kill -TERM "$pgs_pid" 2>/dev/null || true; wait "$pgs_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait_file() { for _ in $(seq 400); do [ -s "$1" ] && return 0; sleep 0.05; done
  echo "pg_replicas: timed out waiting for $1" >&2; return 1; }
now() { date +%s.%N; }
say() { printf '== %s\n' "$*" >&2; }
fail() { echo "pg_replicas: $*" >&2; exit 1; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }
per() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN {if (b + 0 <= 0 || a == "" || a == "nan") print "nan"; else printf f, a / b}'; }
us_per() { awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 <= 0) print "nan"; else printf "%.0f", a * 1e6 / b}'; }
median() { tr ' ' '\n' | awk 'NF' | sort -g |
  awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2];
    else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- request bodies, receiver, PostgreSQL ------------------------------------
gen=${GEN:-}
if [ -z "$gen" ]; then
  gen=$tmp/py
  mkdir -p "$gen"
  protoc -Iproto --python_out="$gen" proto/handlers/v1/handlers.proto
fi
/usr/bin/python3 bench/grpc_frame.py "$gen" dispatch "$tmp/async.bin" bench-async

"$recv" -t "$rt" -r "$tmp/rport" >"$tmp/recv.out" &
rpid=$!
wait_file "$tmp/rport" || exit 1
rport=$(cat "$tmp/rport")
base=http://127.0.0.1:$rport

need_pg=0
for ph in $phases; do [ "$ph" = sqlite ] || need_pg=1; done
pg_port='' pg_psql='' pg_pid='' pg_dir='' pg_bindir=''
if [ $need_pg = 1 ]; then
  /usr/bin/python3 bench/pg_server.py "$tmp/pg.ready" 2>"$tmp/pg.err" &
  pgs_pid=$!
  for _ in $(seq 1200); do
    [ -s "$tmp/pg.ready" ] && break
    kill -0 "$pgs_pid" 2>/dev/null || break
    sleep 0.05
  done
  [ -s "$tmp/pg.ready" ] || { cat "$tmp/pg.err" >&2; fail "PostgreSQL did not start"; }
  # pg_port pg_bindir pg_psql pg_pid pg_dir
  eval "$(cat "$tmp/pg.ready")"
fi
pq() { # db sql -> psql's unaligned rows (fields separated by |)
  PGCONNECT_TIMEOUT=10 "$pg_psql" -X -A -t -q -v ON_ERROR_STOP=1 \
    -d "postgres://handlerd@127.0.0.1:$pg_port/$1" -c "$2"
}

# The round-trip ceiling here: pgbench sending `SELECT 1` (extended
# protocol, as handlerd's PQexecParams) for RTT_S seconds over 1 and 2
# connections, each a statement at a time: the statements/s one connection
# can make on this machine, against which handlerd's write link (one
# connection per replica, one statement at a time) is read.
rtt_s=${RTT_S:-2}
declare -A rtt
if [ $need_pg = 1 ] && [ "$rtt_s" -gt 0 ] && [ -x "$pg_bindir/pgbench" ]; then
  echo 'SELECT 1;' >"$tmp/select1.sql"
  for n in 1 2; do
    rtt[$n]=$(PGCONNECT_TIMEOUT=10 "$pg_bindir/pgbench" -n -M extended -c "$n" -j "$n" \
      -T "$rtt_s" -f "$tmp/select1.sql" "postgres://handlerd@127.0.0.1:$pg_port/handlerd" 2>/dev/null |
      awk '/^tps = / {printf "%.0f", $3}')
  done
fi

# ---- counters ---------------------------------------------------------------
. "$(dirname "$0")/async_lib.sh"
# One replica's outbox (async_lib.sh).
metrics() { async_metrics "$1"; }
# Every replica's outbox figures summed (field n of metrics()).
metrics_all() {
  local i
  for i in "${!hd_mport[@]}"; do metrics "${hd_mport[$i]}"; done |
    awk '{for (j = 1; j <= NF; j++) s[j] += $j} END {for (j = 1; j <= 8; j++) printf "%d ", s[j]; print ""}'
}
mfield() { awk -v n="$2" '{print $n}' <<<"$1"; }
# Every replica's handlerd_database_round_trips_total summed.
round_trips_all() {
  local i
  for i in "${!hd_mport[@]}"; do http_get "${hd_mport[$i]}" /metrics; done |
    awk '/^handlerd_database_round_trips_total / {s += $2} END {printf "%d\n", s}'
}
# CPU ticks: "pid ticks" for each pid given.
ticks() {
  local p
  for p in "$@"; do
    awk -v p="$p" '{l = $0; sub(/^.*\) /, "", l); split(l, v, " "); print p, v[12] + v[13]}' \
      "/proc/$p/stat" 2>/dev/null || true
  done
}
pg_pids() {
  if [ -n "$pg_pid" ]; then { echo "$pg_pid"; ps -o pid= --ppid "$pg_pid"; } | tr -s ' \n' ' '; fi
}
# CPU seconds between two ticks() snapshots (a process new in the second
# counts whole; one gone is lost: handlerd's backends live as long as it).
cpu_delta() {
  awk -v hz="$(getconf CLK_TCK)" 'NR == FNR {b[$1] = $2; next} {t += $2 - b[$1]}
    END {printf "%.3f", t / hz}' <(echo "$1") <(echo "$2")
}
# The machine: "busy total" jiffies from /proc/stat.
machine() { awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6}' /proc/stat; }
# handlerd's threads, % of one core between two snapshots ("name:NN%"):
# thread_ticks (async_lib.sh) before and after, then thread_report.
thread_report() { # before after seconds
  awk -v secs="$3" -v hz="$(getconf CLK_TCK)" '
    NR == FNR {b[$1] = $3; next}
    {u[$2] += ($3 - b[$1]) / hz / secs * 100}
    END {for (n in u) if (u[n] >= 2) printf "%s:%.0f%% ", n, u[n]}' <(echo "$1") <(echo "$2")
}

# fdatasync/fsync calls of the given pids (perf stat), -1 when perf cannot.
# The pids: PostgreSQL's processes (pg_pids); a psql of ours that just
# left may still be listed, and perf stat refuses a pid gone: once more then.
fsync_start() {
  perf_pid=''
  command -v perf >/dev/null || return 0
  for _ in 1 2; do
    perf stat -x, -o "$tmp/perf.fsync" -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync \
      -p "$(pg_pids | tr -s ' ' ',' | sed 's/,*$//; s/^,*//')" 2>/dev/null &
    perf_pid=$!
    sleep 0.3
    kill -0 "$perf_pid" 2>/dev/null && return 0
    wait "$perf_pid" 2>/dev/null || true
    perf_pid=''
  done
}
fsync_stop() { # -> $fsyncs
  fsyncs=-1
  [ -n "$perf_pid" ] || return 0
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
  perf_pid=''
  fsyncs=$(awk -F, '$1 ~ /^[0-9]+$/ && $3 ~ /sys_enter_f(data)?sync$/ {f += $1; n++}
    END {print (n == 2 ? f : -1)}' "$tmp/perf.fsync" 2>/dev/null || echo -1)
}

H2() { h2load -H 'content-type: application/grpc' -H 'te: trailers' "$@"; }
h2_ok() { grep -q ' 0 failed, 0 errored, 0 timeout' "$1"; }
h2_rps() { awk '/^finished in/ {print $4}' "$1"; }
h2_done() { awk '/^requests:/ {print $8}' "$1"; }
p99_ms() { cat "$@" | awk '{print $3}' | sort -n |
  awk '{v[NR] = $1} END {if (!NR) print "nan"; else {i = int(NR * 0.99 + 0.999); printf "%.1f", v[i] / 1000}}'; }

# ---- replicas -----------------------------------------------------------------
start_replica() { # index ph --database URL | --state-dir DIR
  local i=$1 ph=$2 mp
  shift 2
  mp=$(free_port)
  rm -f "$tmp/ready.$i"
  "$bin" --listen 127.0.0.1:0 --ready-file "$tmp/ready.$i" --log-level warn \
    --instance bench --metrics-listen "127.0.0.1:$mp" \
    --max-pending-deliveries "$max_pending" "$@" 2>>"$tmp/hd.$ph.$i.err" &
  hd_pid[$i]=$!
  hd_mport[$i]=$mp
  wait_file "$tmp/ready.$i" || { cat "$tmp/hd.$ph.$i.err" >&2; fail "handlerd ($ph, replica $i) did not start"; }
  hd_addr[$i]=$(cat "$tmp/ready.$i")
}

# Waits until the receiver has r_base + (accepted - a_base) requests (summed
# over the replicas) and no replica has a delivery waiting or in flight.
# Polls the receiver; /metrics only when its count is reached (a scrape
# walks the outbox's unfinished deliveries). Nothing received for STALL_S
# seconds: prints the evidence, sets stalled=1 and returns 1.
wait_drained() { # r_base a_base db
  local last=-1 last_t n t mm target i busy
  stalled=0
  mm=$(metrics_all)
  target=$(($1 + $(mfield "$mm" 1) - $2))
  last_t=$(now)
  while :; do
    n=$(recv_count)
    t=$(now)
    if [ "${n:-0}" -ge "$target" ]; then
      busy=0
      for i in "${!hd_mport[@]}"; do
        mm=$(metrics "${hd_mport[$i]}")
        [ "$(mfield "$mm" 6)" = 0 ] && [ "$(mfield "$mm" 7)" = 0 ] || busy=1
      done
      mm=$(metrics_all)
      if [ $busy = 0 ] && [ "$n" -ge $(($1 + $(mfield "$mm" 1) - $2)) ]; then
        drained_at=$t
        return 0
      fi
      target=$(($1 + $(mfield "$mm" 1) - $2))
    fi
    if [ "$n" != "$last" ]; then
      last=$n last_t=$t
    elif awk -v a="$t" -v b="$last_t" -v s="$stall_s" 'BEGIN {exit !(a - b > s)}'; then
      stalled=1
      drained_at=$t
      {
        echo "pg_replicas: STALL: the receiver has $n requests ($1 before the load," \
          "$(($(mfield "$mm" 1) - $2)) accepted since), none for ${stall_s}s"
        for i in "${!hd_mport[@]}"; do
          echo "  replica $i outbox (accepted attempts failed succeeded dead waiting in_flight commits):" \
            "$(metrics "${hd_mport[$i]}")"
        done
        if [ -n "$3" ]; then
          echo "  database rows (state lease_owner leased_for_ms count):"
          pq "$3" "SELECT state, coalesce(lease_owner, '-'),
              coalesce((lease_until - (extract(epoch FROM now()) * 1000)::bigint)::text, '-'),
              count(*) FROM handlerd_deliveries WHERE state IN (1, 2, 4)
              GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 10" | sed 's/^/    /'
        fi
      } | tee -a "$tmp/stalls" >&2
      return 1
    fi
    sleep 0.05
  done
}

# ---- one phase -----------------------------------------------------------------
declare -A R # R[ph,field] = "value per round ..."
checks=ok
add() { R[$1,$2]+=" $3"; }

run_phase() { # round ph
  local r=$1 ph=$2 store=pg nrep=1 db='' url='' i rows
  local mm0 mm1 mm2 r0 r1 r2 rw hd0 hd1 pg0 pg1 mc0 mc1 t0 t1 t2 th0 th1 lsn0 lsn1 rt0 rt1
  case $ph in
  sqlite) store=sqlite ;;
  pg1) ;;
  pg2) nrep=2 ;;
  *) fail "unknown phase $ph (PHASES: sqlite pg1 pg2)" ;;
  esac
  say "round $r, phase $ph: $nrep replica(s), $store"
  if [ $store = pg ]; then
    db=bench_${ph}_r$r
    pq handlerd "CREATE DATABASE $db" >/dev/null
    url="postgres://handlerd@127.0.0.1:$pg_port/$db"
    start_replica 1 "$ph" --database "$url" --replica-id r1
  else
    mkdir -m 700 "$tmp/state.$r"
    start_replica 1 "$ph" --state-dir "$tmp/state.$r"
  fi
  for i in $(seq 0 $((k - 1))); do
    "$ctl" --addr "${hd_addr[1]}" add --key bench-async --webhook "$base/hook/async-$i" \
      --async --timeout-ms 60000 -q >/dev/null || fail "handlerctl add failed ($ph)"
  done
  if [ $nrep = 2 ]; then
    # The second replica loads the registrations from the database.
    start_replica 2 "$ph" --database "$url" --replica-id r2
    for _ in $(seq 100); do
      rows=$("$ctl" --addr "${hd_addr[2]}" list 2>/dev/null | grep -c '^bench-async ' || true)
      [ "$rows" = "$k" ] && break
      sleep 0.1
    done
    [ "$rows" = "$k" ] || fail "replica 2 lists $rows of the $k webhooks registered on replica 1"
  fi

  # Warm-up on every replica, drained.
  rw=$(recv_count) mm0=$(metrics_all)
  for i in "${!hd_addr[@]}"; do
    H2 -n "$((warm_n / nrep))" -c "$c2" -m "$m" -d "$tmp/async.bin" \
      "http://${hd_addr[$i]}/handlers.v1.Handlers/Dispatch" >"$tmp/warm.$i.out" 2>&1 || true
  done
  wait_drained "$rw" "$(mfield "$mm0" 1)" "$db" || { checks="stall_in_${ph}_warmup"; stop_replicas; return; }

  # Measured: load on every replica at once, then until drained.
  if [ $store = pg ]; then
    pq handlerd "SELECT pg_stat_statements_reset()" >/dev/null
    lsn0=$(pq handlerd "SELECT pg_current_wal_lsn()")
    rt0=$(round_trips_all)
    fsync_start
  fi
  local prof=0
  [[ " $profile " == *" $ph "* ]] && command -v perf >/dev/null && prof=1
  if [ $prof = 1 ]; then
    # shellcheck disable=SC2046 # one pid per word
    perf record -g -F 999 -o "$tmp/perf.$ph.data" \
      -p "$(echo "${hd_pid[@]}" $(pg_pids) | tr -s ' ' ',' | sed 's/,$//')" -- sleep "$d" >/dev/null 2>&1 &
    prof_pid=$!
  fi
  mm0=$(metrics_all) r0=$(recv_count)
  # shellcheck disable=SC2046 # one pid per word
  hd0=$(ticks "${hd_pid[@]}") pg0=$(ticks $(pg_pids)) mc0=$(machine)
  th0=$(thread_ticks "${hd_pid[1]}")
  t0=$(now)
  for i in "${!hd_addr[@]}"; do
    local ci=$c
    [ $nrep = 2 ] && { ci=$c2; [ "$i" = 1 ] && ci=$c1; }
    rm -f "$tmp/load.$i.log"
    H2 -D "$d" -c "$ci" -m "$m" -d "$tmp/async.bin" --log-file "$tmp/load.$i.log" \
      "http://${hd_addr[$i]}/handlers.v1.Handlers/Dispatch" >"$tmp/load.$i.out" 2>&1 &
    eval "h2pid_$i=$!"
  done
  for i in "${!hd_addr[@]}"; do
    eval "wait \$h2pid_$i" || true
  done
  t1=$(now) mm1=$(metrics_all) r1=$(recv_count) th1=$(thread_ticks "${hd_pid[1]}")
  if [ $prof = 1 ]; then wait "$prof_pid" || true; prof_pid=''; fi
  if ! wait_drained "$r0" "$(mfield "$mm0" 1)" "$db"; then
    checks="stall_in_$ph"
  fi
  t2=$drained_at
  # shellcheck disable=SC2046 # one pid per word
  hd1=$(ticks "${hd_pid[@]}") pg1=$(ticks $(pg_pids)) mc1=$(machine)
  mm2=$(metrics_all) r2=$(recv_count)
  [ $store = pg ] && fsync_stop
  [ $store = pg ] && lsn1=$(pq handlerd "SELECT pg_current_wal_lsn()") rt1=$(round_trips_all)
  if [ $store = pg ]; then
    # Read before any query of ours on the phase's database.
    # Statement kinds of this database's pg_stat_statements, since the reset.
    pq handlerd "SELECT kind, sum(calls), sum(rows), round(sum(total_exec_time)::numeric, 3),
        sum(wal_bytes), bool_or(w), round(sum(total_plan_time)::numeric, 3)
      FROM (SELECT CASE
        WHEN query LIKE 'INSERT INTO handlerd_deliveries%' THEN 'INSERT delivery (accept)'
        WHEN query LIKE 'UPDATE handlerd_deliveries SET state = \$2%' THEN 'UPDATE delivery (settled)'
        WHEN query LIKE 'INSERT INTO handlerd_attempts%' THEN 'INSERT attempt'
        WHEN query LIKE 'WITH due AS%' THEN 'claim (SKIP LOCKED)'
        WHEN query LIKE 'SELECT pg_advisory_xact_lock%' THEN 'claim limited: lock'
        WHEN query LIKE 'WITH busy AS%' THEN 'claim limited: candidates'
        WHEN query LIKE 'UPDATE handlerd_deliveries d SET lease_owner = \$1%' THEN 'claim limited: lease'
        WHEN query LIKE '%handlerd_buckets%' THEN 'claim limited: rate bucket'
        WHEN query LIKE 'UPDATE handlerd_deliveries SET lease_until%' THEN 'renew leases'
        WHEN query LIKE 'UPDATE handlerd_deliveries SET lease_owner = NULL, lease_until = NULL, state%' THEN 'reap'
        WHEN query LIKE 'UPDATE handlerd_deliveries d SET state = 5%' THEN 'end orphans'
        WHEN query LIKE 'UPDATE handlerd_deliveries SET lease_owner = NULL%' THEN 'release'
        WHEN query ~* '^(BEGIN|START)' THEN 'BEGIN'
        WHEN query ~* '^(COMMIT|END)' THEN 'COMMIT'
        WHEN query LIKE '%handlerd_change_seq%' OR query LIKE '%FROM handlerd_registrations%'
          THEN 'registrations sync'
        WHEN query LIKE '%handlerd_endpoints%' THEN 'webhook health'
        WHEN query LIKE 'WITH gone AS (DELETE%' THEN 'prune finished'
        ELSE left(regexp_replace(query, '\s+', ' ', 'g'), 40) END kind,
        calls, rows, total_exec_time, wal_bytes, total_plan_time,
        (query ~* '^\s*(insert|update|delete)'
          OR (query ~* '^\s*with' AND query ~* '\m(update|insert|delete)\M')) w
        FROM pg_stat_statements s JOIN pg_database b ON b.oid = s.dbid
        WHERE b.datname = '$db') x
      GROUP BY kind ORDER BY 2 DESC" >"$tmp/pss.$ph.$r"
  fi

  # The load's figures.
  local acc_rps=0 done_n=0 h2err=0 logs=()
  for i in "${!hd_addr[@]}"; do
    h2_ok "$tmp/load.$i.out" || { h2err=1; grep -E '^(requests|status codes):' "$tmp/load.$i.out" >&2 || true; }
    acc_rps=$(awk -v a="$acc_rps" -v b="$(h2_rps "$tmp/load.$i.out")" 'BEGIN {print a + b}')
    done_n=$((done_n + $(h2_done "$tmp/load.$i.out")))
    logs+=("$tmp/load.$i.log")
  done
  local accepted=$(($(mfield "$mm2" 1) - $(mfield "$mm0" 1)))
  local accepted_b=$(($(mfield "$mm1" 1) - $(mfield "$mm0" 1)))
  local delivered=$((r2 - r0))
  local drain_s load_s tail_s
  load_s=$(secs "$t1" "$t0") drain_s=$(secs "$t2" "$t0") tail_s=$(secs "$t2" "$t1")
  local dlv_rps
  dlv_rps=$(per "$delivered" "$drain_s" "%.0f")
  local hd_cpu pg_cpu mbusy
  hd_cpu=$(cpu_delta "$hd0" "$hd1") pg_cpu=$(cpu_delta "$pg0" "$pg1")
  mbusy=$(awk -v a="$mc0" -v b="$mc1" 'BEGIN {split(a, x, " "); split(b, y, " ");
    printf "%.0f", (y[2] - x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) * 100 : 0}')
  local commits=-1
  [ "$(mfield "$mm0" 8)" -ge 0 ] && commits=$(($(mfield "$mm2" 8) - $(mfield "$mm0" 8)))

  # Checks (since the phase's start, warm-up included: the database holds
  # exactly this phase's deliveries).
  # The replicas are this phase's own: their totals and the receiver's
  # count since before the warm-up are the phase's.
  local ck=ok acc_all rcv_all dup=0 lost=0
  acc_all=$(mfield "$mm2" 1) rcv_all=$((r2 - rw))
  [ $h2err = 0 ] || ck=h2load_errors
  if [ "$accepted" -lt $((done_n * k)) ] || [ "$accepted" -gt $(((done_n + c * m) * k)) ]; then
    ck="accepted_${accepted}_for_${done_n}_calls"
  fi
  [ "$rcv_all" -gt "$acc_all" ] && dup=$((rcv_all - acc_all))
  [ "$rcv_all" -lt "$acc_all" ] && lost=$((acc_all - rcv_all))
  [ "$(mfield "$mm2" 3)" = 0 ] && [ "$(mfield "$mm2" 5)" = 0 ] ||
    ck="failed_attempts_$(mfield "$mm2" 3)_dead_$(mfield "$mm2" 5)"
  [ "$(mfield "$mm2" 4)" = "$acc_all" ] || ck="succeeded_$(mfield "$mm2" 4)_of_${acc_all}"
  [ "$(mfield "$mm2" 2)" = "$acc_all" ] || ck="attempts_$(mfield "$mm2" 2)_for_${acc_all}"
  local dbline=''
  if [ $store = pg ]; then
    # rows, succeeded, unfinished, attempt rows, deliveries with more than one attempt
    dbline=$(pq "$db" "SELECT count(*), count(*) FILTER (WHERE state = 3),
      count(*) FILTER (WHERE state IN (1, 2, 4)),
      (SELECT count(*) FROM handlerd_attempts),
      (SELECT count(*) FROM (SELECT delivery_id FROM handlerd_attempts GROUP BY 1
        HAVING count(*) > 1) x) FROM handlerd_deliveries" | tr '|' ' ')
    read -r db_rows db_ok db_open db_att db_multi <<<"$dbline"
    [ "$db_rows" = "$acc_all" ] || ck="db_rows_${db_rows}_of_${acc_all}_accepted"
    [ "$db_ok" = "$db_rows" ] || ck="db_succeeded_${db_ok}_of_${db_rows}"
    [ "$db_att" = "$db_rows" ] && [ "$db_multi" = 0 ] ||
      ck="db_attempts_${db_att}_for_${db_rows}_(${db_multi}_with_more_than_one)"
  fi
  [ $dup = 0 ] || ck="duplicates_$dup"
  [ $lost = 0 ] || ck="lost_$lost"
  [ "${stalled:-0}" = 0 ] || ck="stalled"
  [ "$ck" = ok ] || checks="${ph}_r${r}_$ck"

  add "$ph" accepted_per_s "$acc_rps"
  add "$ph" p99_ms "$(p99_ms "${logs[@]}")"
  add "$ph" delivered_per_s "$dlv_rps"
  add "$ph" tail_s "$tail_s"
  add "$ph" deliveries "$delivered"
  add "$ph" hd_cpu_us "$(us_per "$hd_cpu" "$delivered")"
  add "$ph" pg_cpu_us "$(us_per "$pg_cpu" "$delivered")"
  add "$ph" machine_busy "$mbusy"
  add "$ph" events_per_commit "$(per "$((accepted / k))" "$commits" %.1f)"
  R[$ph,check]+=" $ck"
  R[$ph,dup]+=" $dup" R[$ph,lost]+=" $lost"

  {
    printf '\n--- round %s, %s: %d replica(s) on %s; load %.1f s, drained %.2f s after it (load average %s)\n' \
      "$r" "$ph" "$nrep" "$store" "$load_s" "$tail_s" "$(cut -d' ' -f1-3 /proc/loadavg)"
    for i in "${!hd_addr[@]}"; do
      printf '  replica %s: %s calls at %s/s (%s), outbox now (accepted attempts failed succeeded dead waiting in_flight commits): %s\n' \
        "$i" "$(h2_done "$tmp/load.$i.out")" "$(h2_rps "$tmp/load.$i.out")" \
        "$(grep -E '^requests:' "$tmp/load.$i.out" | sed 's/^requests: //')" "$(metrics "${hd_mport[$i]}")"
    done
    printf '  accepted %s events/s (%d deliveries, %d of them by the end of the load), delivered %s/s (%d from the load'"'"'s start until drained in %.2f s; %d by the end of the load)\n' \
      "$acc_rps" "$accepted" "$accepted_b" "$dlv_rps" "$delivered" "$drain_s" "$((r1 - r0))"
    printf '  CPU from the load'"'"'s start until drained: handlerd %.2f s (%s us/delivery), PostgreSQL %.2f s (%s us/delivery), machine %s%% busy of %s cores\n' \
      "$hd_cpu" "$(us_per "$hd_cpu" "$delivered")" \
      "$pg_cpu" "$(us_per "$pg_cpu" "$delivered")" "$mbusy" "$(nproc)"
    printf '  replica 1 threads during the load (%% of one core): %s\n' "$(thread_report "$th0" "$th1" "$load_s")"
    printf '  handlerd journal commits %s (%s events per commit); phase totals: %d accepted, %d received' \
      "$commits" "$(per "$((accepted / k))" "$commits" %.1f)" "$acc_all" "$rcv_all"
    [ -n "$dbline" ] && printf '; database: %s rows, %s succeeded, %s unfinished, %s attempt rows, %s with more than one attempt' \
      "$db_rows" "$db_ok" "$db_open" "$db_att" "$db_multi"
    printf '\n  check: %s (duplicates %d, lost %d)\n' "$ck" "$dup" "$lost"
  } >>"$tmp/report"

  if [ $store = pg ]; then
    local calls wrows wal_stmt
    read -r calls wrows wal_stmt < <(awk -F'|' '{c += $2; if ($6 == "t") w += $3; b += $5}
      END {print c + 0, w + 0, b + 0}' "$tmp/pss.$ph.$r")
    local wal_bytes
    wal_bytes=$(pq handlerd "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")
    add "$ph" round_trips "$(per "$((rt1 - rt0))" "$delivered" %.3f)"
    add "$ph" statements "$(per "$calls" "$delivered" %.3f)"
    add "$ph" rows_written "$(per "$wrows" "$delivered" %.3f)"
    add "$ph" wal_bytes "$(per "$wal_bytes" "$delivered" %.0f)"
    add "$ph" statements_per_s "$(per "$calls" "$drain_s" %.0f)"
    add "$ph" fsyncs_per_1000 "$(per "$((fsyncs * 1000))" "$delivered" %.1f)"
    {
      printf '  pg_stat_statements (%s), per delivery of the %d:\n' "$db" "$delivered"
      printf '    %-28s %8s %7s %8s %8s %8s %8s %8s %9s\n' "statement" "calls" "/dlv" "rows" \
        "rows/dlv" "exec ms" "plan ms" "total ms" "WAL B/dlv"
      awk -F'|' -v n="$delivered" '{printf "    %-28s %8d %7.3f %8d %8.3f %8.3f %8.3f %8.0f %9.0f%s\n",
        substr($1, 1, 28), $2, $2 / n, $3, $3 / n, $2 ? $4 / $2 : 0, $2 ? $7 / $2 : 0, $4 + $7, $5 / n,
        ($6 == "t" ? "  (writes)" : "")}' "$tmp/pss.$ph.$r"
      printf '    (exec and plan ms: the mean per call inside PostgreSQL, from pg_stat_statements; a COMMIT'"'"'s WAL flush is not in it)\n'
      printf '    statements per delivery %s (%d statements, %s/s from the load'"'"'s start until drained); round trips per delivery %s (%d);' \
        "$(per "$calls" "$delivered" %.3f)" "$calls" "$(per "$calls" "$drain_s" %.0f)" \
        "$(per "$((rt1 - rt0))" "$delivered" %.3f)" "$((rt1 - rt0))"
      printf ' rows written per delivery %s; WAL %s bytes per delivery (%s in statements);' \
        "$(per "$wrows" "$delivered" %.3f)" "$(per "$wal_bytes" "$delivered" %.0f)" \
        "$(per "$wal_stmt" "$delivered" %.0f)"
      if [ "$fsyncs" -ge 0 ]; then
        printf ' PostgreSQL fdatasync+fsync %d (%s per 1000 deliveries)\n' "$fsyncs" \
          "$(per "$((fsyncs * 1000))" "$delivered" %.1f)"
      else
        printf ' PostgreSQL fsyncs: perf stat cannot count them here\n'
      fi
    } >>"$tmp/report"
  fi
  if [ $prof = 1 ]; then
    {
      printf '  perf record of handlerd and PostgreSQL (every process) during the load, by command (thread):\n'
      perf report -i "$tmp/perf.$ph.data" --no-children --sort comm --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -8 | sed 's/^/    /' || true
      printf '  by command and library:\n'
      perf report -i "$tmp/perf.$ph.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -16 | sed 's/^/    /' || true
      printf '  top symbols:\n'
      perf report -i "$tmp/perf.$ph.data" --no-children --sort comm,dso,sym --stdio -g none 2>/dev/null |
        grep -E '^ +[0-9]' | head -30 | sed 's/^/    /' || true
    } >>"$tmp/report"
  fi
  say "round $r, $ph: accepted $acc_rps events/s, delivered $dlv_rps/s, check $ck"
  stop_replicas
  if [ $store = pg ]; then
    pq handlerd "DROP DATABASE $db" >/dev/null 2>&1 || true
  fi
}

for r in $(seq "$rounds"); do
  for ph in $phases; do run_phase "$r" "$ph"; done
done

# ---- report -------------------------------------------------------------------------
med() { median <<<"${R[$1,$2]:-}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "nan" || b == "nan" || b + 0 == 0) print "nan"; else printf "%.3f", a / b}'; }
printf 'pg_replicas: h2load -c%s -m%s (pg2: -c%s and -c%s, one per replica), K=%s async webhooks, D=%ss, %s round(s); %s cores; load average %s\n' \
  "$c" "$m" "$c1" "$c2" "$k" "$d" "$rounds" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
[ $need_pg = 1 ] && printf 'PostgreSQL: %s, data in %s (%s), fsync on, synchronous_commit on\n' \
  "$("$pg_bindir/postgres" --version)" "$pg_dir" "$(df --output=source "$pg_dir" | tail -1)"
[ -n "${rtt[1]:-}" ] &&
  printf 'round-trip ceiling (pgbench SELECT 1, extended protocol, %ss): %s statements/s on 1 connection (%s us each), %s on 2\n' \
    "$rtt_s" "${rtt[1]}" "$(us_per 1 "${rtt[1]}")" "${rtt[2]:-nan}"
cat "$tmp/report"
[ -s "$tmp/stalls" ] && { echo; echo "stalls:"; cat "$tmp/stalls"; }
echo
printf '%-7s %11s %8s %12s %8s %9s %9s %9s %8s %10s %9s %7s\n' "phase" "accepted/s" "p99 ms" \
  "delivered/s" "tail s" "hd us/dlv" "pg us/dlv" "busy %" "RT/dlv" "rows w/dlv" "WAL B/dlv" "check"
for ph in $phases; do
  printf '%-7s %11s %8s %12s %8s %9s %9s %9s %8s %10s %9s %7s\n' "$ph" "$(med "$ph" accepted_per_s)" \
    "$(med "$ph" p99_ms)" "$(med "$ph" delivered_per_s)" "$(med "$ph" tail_s)" "$(med "$ph" hd_cpu_us)" \
    "$(med "$ph" pg_cpu_us)" "$(med "$ph" machine_busy)" "$(med "$ph" round_trips)" \
    "$(med "$ph" rows_written)" "$(med "$ph" wal_bytes)" \
    "$(tr ' ' '\n' <<<"${R[$ph,check]:-}" | grep -v '^$' | sort -u | paste -sd/)"
done
a_d=$(med sqlite delivered_per_s) b_d=$(med pg1 delivered_per_s) c_d=$(med pg2 delivered_per_s)
a_a=$(med sqlite accepted_per_s) b_a=$(med pg1 accepted_per_s) c_a=$(med pg2 accepted_per_s)
echo
printf '(b)/(a) one replica on PostgreSQL vs SQLite: delivered %s, accepted %s\n' \
  "$(ratio "$b_d" "$a_d")" "$(ratio "$b_a" "$a_a")"
printf '(c)/(b) two replicas vs one (2 replicas on %s shared cores): delivered %s, accepted %s\n' \
  "$(nproc)" "$(ratio "$c_d" "$b_d")" "$(ratio "$c_a" "$b_a")"
for ph in pg1 pg2; do
  [[ " $phases " == *" $ph "* ]] || continue
  printf '%s per delivery: %s database round trips, %s statements, %s rows written, %s WAL bytes, %s fsyncs per 1000;' \
    "$ph" "$(med $ph round_trips)" "$(med $ph statements)" "$(med $ph rows_written)" "$(med $ph wal_bytes)" "$(med $ph fsyncs_per_1000)"
  printf ' PostgreSQL CPU %s us, handlerd CPU %s us; %s statements/s (%s of the 1-connection ceiling per replica); %s events per commit\n' \
    "$(med $ph pg_cpu_us)" "$(med $ph hd_cpu_us)" "$(med $ph statements_per_s)" \
    "$(ratio "$(med $ph statements_per_s)" "$(awk -v r="${rtt[1]:-0}" -v n="$([ $ph = pg2 ] && echo 2 || echo 1)" 'BEGIN {print r * n}')")" \
    "$(med $ph events_per_commit)"
done
printf 'check: %s\n' "$checks"
printf 'RESULT sqlite_accepted_per_s=%s sqlite_delivered_per_s=%s pg1_accepted_per_s=%s pg1_delivered_per_s=%s' \
  "$a_a" "$a_d" "$b_a" "$b_d"
printf ' pg2_accepted_per_s=%s pg2_delivered_per_s=%s pg1_vs_sqlite=%s pg2_vs_pg1=%s' \
  "$c_a" "$c_d" "$(ratio "$b_d" "$a_d")" "$(ratio "$c_d" "$b_d")"
printf ' pg1_round_trips_per_delivery=%s pg1_statements_per_delivery=%s pg1_rows_written_per_delivery=%s' \
  "$(med pg1 round_trips)" "$(med pg1 statements)" "$(med pg1 rows_written)"
printf ' pg2_round_trips_per_delivery=%s pg2_statements_per_delivery=%s pg2_rows_written_per_delivery=%s' \
  "$(med pg2 round_trips)" "$(med pg2 statements)" "$(med pg2 rows_written)"
printf ' pg1_wal_bytes_per_delivery=%s pg1_pg_cpu_us_per_delivery=%s pg1_hd_cpu_us_per_delivery=%s check=%s\n' \
  "$(med pg1 wal_bytes)" "$(med pg1 pg_cpu_us)" "$(med pg1 hd_cpu_us)" "$checks"
[ "$checks" = ok ]
