#!/usr/bin/env bash
# Builds docker/Dockerfile and checks the running image, with podman: these
# machines have no Docker engine and no registry, so the debian base images
# are made here with debootstrap.
#
#   docker/test-image.sh        (root, or re-runs itself with sudo)
#
# Checks, against a container of the built image:
#   1. the image's HEALTHCHECK (handlerctl health) succeeds;
#   2. handlerd runs as a non-root user;
#   3. from the host, a webhook pointing at a receiver on the host is
#      registered and an event dispatched; the receiver gets a POST whose
#      Standard Webhooks signature verifies;
#   4. `podman stop` delivers SIGTERM and handlerd exits 0 within 10 s;
#   5. a new container on the same state volume still lists the registrations;
#   6. two replicas (read-only, no state dir) on one PostgreSQL
#      (HANDLERD_DATABASE_URL), started at once: a local handler, a webhook
#      and an async webhook registered through replica A serve an event
#      dispatched through replica B; both exit 0 on SIGTERM;
#   7. nginx with docker/nginx-grpc.conf in front of both replicas: health and
#      dispatches through it, spread over both replicas.
# Any failure stops the script with "FAIL: ..." and a non-zero exit; the
# containers, the volume and the receiver are removed in every case.
#
# The base image tarball is cached in docker/.cache/ (gitignored): delete it
# to rebuild the base. HD_IMAGE_MAX_MB (default 120) bounds the image size.
# Checks 6 and 7 need PostgreSQL and nginx images, which no registry serves
# here: docker/postgres-test.Containerfile and docker/nginx-test.Containerfile
# build them from the same base. They stay in podman's storage
# (localhost/handlerd-test-postgres, localhost/handlerd-test-nginx) and are
# rebuilt only when their Containerfile or the base changes.
# HANDLERCTL=path picks the host's handlerctl (default: build/client/ or
# build-test/client/handlerctl, else a Python grpcio client).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  exec sudo --preserve-env=HD_IMAGE_MAX_MB,HANDLERCTL "$PWD/docker/test-image.sh" "$@"
fi
root=$PWD
t0=$(date +%s)
PODMAN=(podman --storage-driver vfs)
# crun and raising rlimits fail on these machines: runc, host network, fixed ulimits.
RUN_OPTS=(--runtime runc --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
IMAGE=localhost/handlerd:latest
BASE_CACHE=$root/docker/.cache/debian-bookworm-minbase.tar
PY=/usr/bin/python3
TEST_KEY=docker-test

log() { printf '[test-image %4ss] %s\n' $(($(date +%s) - t0)) "$*"; }
ok() { printf '[test-image %4ss] ok: %s\n' $(($(date +%s) - t0)) "$*"; }
fail() {
  printf '\n[test-image] FAIL: %s\n' "$*" >&2
  local c shown=" "
  for c in ${ctr:-} "${log_ctrs[@]}"; do
    case $shown in *" $c "*) continue ;; esac
    shown="$shown$c "
    if "${PODMAN[@]}" container exists "$c" 2>/dev/null; then
      printf '[test-image] last log lines of %s:\n' "$c" >&2
      "${PODMAN[@]}" logs --tail 40 "$c" >&2 2>&1 || true
    fi
  done
  exit 1
}

# ---- cleanup, whatever happens ----------------------------------------------
tmp=$(mktemp -d /tmp/handlerd-image-test.XXXXXX)
volume=handlerd-test-state-$$
containers=()
log_ctrs=() # more containers whose last log lines a failure shows
receiver_pid=
ctr=
cleanup() {
  local rc=$?
  set +e
  for c in "${containers[@]}"; do "${PODMAN[@]}" rm -f -t 0 "$c" >/dev/null 2>&1; done
  "${PODMAN[@]}" volume rm -f "$volume" >/dev/null 2>&1
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null && wait "$receiver_pid" 2>/dev/null
  rm -rf "$tmp"
  log "elapsed: $(($(date +%s) - t0)) s"
  exit $rc
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port_open() { # port_open PORT: something accepts TCP connections on 127.0.0.1:PORT
  "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1).close()' "$1" 2>/dev/null
}

# ---- 1. tools ---------------------------------------------------------------
need=()
for t in podman buildah debootstrap runc; do command -v "$t" >/dev/null || need+=("$t"); done
[ -x "$PY" ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing podman buildah debootstrap runc (missing: ${need[*]})"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman buildah debootstrap runc python3 \
    || fail "cannot install podman/buildah/debootstrap/runc"
fi

# ---- 2. base images (debian:bookworm, debian:bookworm-slim) -----------------
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || fail "no Debian mirror in /etc/apt/sources.list.d/debian.sources (URIs:) or /etc/apt/sources.list"

if [ ! -s "$BASE_CACHE" ]; then
  log "debootstrap --variant=minbase bookworm from $mirror"
  rootfs=$tmp/rootfs
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -20 "$tmp/debootstrap.log" >&2; fail "debootstrap failed (log above)"; }
  # Make it look like the official image: this machine's apt sources (the
  # same mirror, with -updates and -security), no caches, no host files, and
  # the -slim dpkg excludes (no docs, man pages, locales).
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
  echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,locale}/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/* \
    "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf
  mkdir -p "$(dirname "$BASE_CACHE")"
  tar --numeric-owner -C "$rootfs" -cf "$BASE_CACHE.tmp" .
  mv "$BASE_CACHE.tmp" "$BASE_CACHE"
  rm -rf "$rootfs"
  log "base rootfs: $(du -m "$BASE_CACHE" | cut -f1) MB (cached in ${BASE_CACHE#"$root"/})"
else
  log "base rootfs from the cache ${BASE_CACHE#"$root"/}"
fi
# Import only when the local image is not already this tarball.
base_sum=$(sha256sum "$BASE_CACHE" | cut -c1-16)
have_sum=$("${PODMAN[@]}" image inspect --format '{{index .Labels "handlerd.test.base"}}' \
  docker.io/library/debian:bookworm-slim 2>/dev/null || true)
if [ "$have_sum" != "$base_sum" ]; then
  log "podman import -> debian:bookworm-slim, debian:bookworm"
  "${PODMAN[@]}" import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL handlerd.test.base=$base_sum" \
    - docker.io/library/debian:bookworm-slim <"$BASE_CACHE" >/dev/null \
    || fail "podman import of the base image failed"
  "${PODMAN[@]}" tag docker.io/library/debian:bookworm-slim docker.io/library/debian:bookworm
fi

# ---- 3. build ---------------------------------------------------------------
old_image=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
version=$(sed -n 's/^project(handlerd VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
log "podman build -f docker/Dockerfile -t handlerd . (version $version)"
# --format docker: the OCI image format has no HEALTHCHECK. --layers=false:
# with the vfs driver every committed layer is a full copy of the tree, and
# committing each step made the build 4x slower (CI starts clean anyway).
"${PODMAN[@]}" build --pull=never --isolation chroot --format docker --layers=false \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  -f docker/Dockerfile -t handlerd . >"$tmp/build.log" 2>&1 \
  || { tail -40 "$tmp/build.log" >&2; fail "podman build failed (last lines above)"; }
# The image this build replaced would stay behind untagged: drop it.
if [ -n "$old_image" ] && [ "$old_image" != "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  "${PODMAN[@]}" rmi "$old_image" >/dev/null 2>&1 || true
fi
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
size_mb=$((size / 1000000))
log "image $IMAGE: $size bytes ($size_mb MB)"
[ "$size_mb" -le "${HD_IMAGE_MAX_MB:-120}" ] || fail "image is $size_mb MB, over ${HD_IMAGE_MAX_MB:-120} MB"

# Static facts of the image.
inspect() { "${PODMAN[@]}" image inspect --format "$1" "$IMAGE"; }
[ "$(inspect '{{.Config.User}}')" = "10001:10001" ] || fail "image USER is '$(inspect '{{.Config.User}}')', not 10001:10001"
inspect '{{json .Config.Healthcheck}}' | grep -q '"handlerctl","health"' \
  || fail "image has no HEALTHCHECK handlerctl health: $(inspect '{{json .Config.Healthcheck}}')"
label_version=$(inspect '{{index .Labels "org.opencontainers.image.version"}}')
# (podman's stderr is kept aside: without systemd it complains that it
# cannot set up healthcheck timers, which does not matter here.)
bin_version=$("${PODMAN[@]}" run --rm "${RUN_OPTS[@]}" "$IMAGE" --version 2>"$tmp/podman.err") \
  || fail "handlerd --version in the image failed: $(cat "$tmp/podman.err")"
[ "$bin_version" = "handlerd $label_version" ] \
  || fail "label org.opencontainers.image.version=$label_version but the binary says '$bin_version'"
ok "image: USER 10001:10001, HEALTHCHECK handlerctl health, version label $label_version"

# ---- 4. run -----------------------------------------------------------------
port=$(free_port)
token=test-token-$RANDOM$RANDOM$RANDOM
printf '%s\n' "$token" >"$tmp/token"
chmod 0444 "$tmp/token"
"${PODMAN[@]}" volume create "$volume" >/dev/null

start_container() { # start_container NAME: handlerd on 127.0.0.1:$port with the state volume
  ctr=$1
  containers+=("$ctr")
  "${PODMAN[@]}" run -d --name "$ctr" "${RUN_OPTS[@]}" \
    -v "$volume:/var/lib/handlerd" \
    -v "$tmp/token:/run/secrets/handlerd_token:ro" \
    -e HANDLERD_LISTEN="127.0.0.1:$port" -e HANDLERD_ADDR="127.0.0.1:$port" \
    -e HANDLERD_TOKEN_FILE=/run/secrets/handlerd_token \
    "$IMAGE" >"$tmp/run.log" 2>&1 || fail "podman run $ctr failed: $(cat "$tmp/run.log")"
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$ctr")" = true ] \
      || fail "container $ctr exited (code $("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$ctr")) before serving"
    sleep 0.2
  done
  fail "handlerd in $ctr is not listening on 127.0.0.1:$port after 20 s"
}

# The host-side client: handlerctl from a build tree, else Python grpcio with
# code generated from proto/.
hctl=
for c in "${HANDLERCTL:-}" build/client/handlerctl build-test/client/handlerctl; do
  if [ -n "$c" ] && [ -x "$c" ]; then hctl=$c; break; fi
done
if [ -z "$hctl" ]; then
  log "no handlerctl on the host (build/client/handlerctl): using a Python grpc client"
  if ! command -v protoc >/dev/null || ! command -v grpc_python_plugin >/dev/null ||
    ! "$PY" -c 'import grpc, google.protobuf' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf >/dev/null \
      || fail "cannot install the Python grpc client's packages"
  fi
  # health.proto is generated as hd_health_pb2: grpc.health would clash with grpcio.
  mkdir -p "$tmp/py" "$tmp/proto"
  cp proto/grpc/health/v1/health.proto "$tmp/proto/hd_health.proto"
  protoc -Iproto -I"$tmp/proto" --python_out="$tmp/py" --grpc_python_out="$tmp/py" \
    --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
    proto/handlers/v1/handlers.proto "$tmp/proto/hd_health.proto" \
    || fail "protoc could not generate the Python client"
  cat >"$tmp/py/client.py" <<'EOF'
import os, sys, grpc
from handlers.v1 import handlers_pb2 as pb, handlers_pb2_grpc as pbg
import hd_health_pb2 as health_pb2, hd_health_pb2_grpc as health_pb2_grpc

ch = grpc.insecure_channel(os.environ["HANDLERD_ADDR"])
md = [("authorization", "Bearer " + os.environ["HANDLERD_TOKEN"])]
stub = pbg.HandlersStub(ch)
cmd, argv = sys.argv[1], [a for a in sys.argv[2:] if a != "--async"]
args, is_async = dict(zip(argv[0::2], argv[1::2])), "--async" in sys.argv[2:]
try:
    if cmd == "health":
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
        sys.exit(0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1)
    if cmd == "add":
        if "--webhook" in args:
            t = pb.Target(webhook=pb.Webhook(url=args["--webhook"], secret=args.get("--secret", ""),
                                             **{"async": is_async}))
        else:
            t = pb.Target(local=args["--local"])
        print(stub.AddHandler(pb.AddHandlerRequest(key=args["--key"], target=t), metadata=md, timeout=10))
    elif cmd == "dispatch":
        r = stub.Dispatch(pb.DispatchRequest(key=args["--key"], event=args["--event"],
            update=pb.UpdateArgs(topic_path=args["--topic"],
                                 topic_value=pb.TopicValue(json_value=args["--value"]))),
            metadata=md, timeout=30)
        print(r)
    elif cmd == "list":
        print(stub.ListHandlers(pb.ListHandlersRequest(), metadata=md, timeout=10))
except grpc.RpcError as e:
    print(f"{e.code().name}: {e.details()}", file=sys.stderr)
    sys.exit(1)
EOF
fi
client() { # client health|add|dispatch|list ARGS...: one call to the container
  if [ -n "$hctl" ]; then
    HANDLERD_ADDR=127.0.0.1:$port HANDLERD_TOKEN=$token "$hctl" "$@"
  else
    HANDLERD_ADDR=127.0.0.1:$port HANDLERD_TOKEN=$token PYTHONPATH="$tmp/py" "$PY" "$tmp/py/client.py" "$@"
  fi
}
client_to() { # client_to PORT health|add|dispatch|list ARGS...: one call to 127.0.0.1:PORT
  local port=$1
  shift
  client "$@"
}
log "host client: ${hctl:-python3 grpcio}"

start_container "handlerd-test-$$-a"
log "container $ctr serving on 127.0.0.1:$port"

# Check 1: the HEALTHCHECK command, run by podman inside the container.
# (podman healthcheck run runs the image's HEALTHCHECK command.)
"${PODMAN[@]}" healthcheck run "$ctr" >"$tmp/hc.out" 2>&1 \
  || fail "the HEALTHCHECK (handlerctl health in the container) failed: $(cat "$tmp/hc.out")"
"${PODMAN[@]}" exec "$ctr" handlerctl health >"$tmp/hc.out" 2>&1 \
  || fail "podman exec $ctr handlerctl health failed: $(cat "$tmp/hc.out")"
ok "healthcheck: podman healthcheck run (handlerctl health in the container) succeeds"
client health >"$tmp/health.out" 2>&1 || fail "health check from the host failed: $(cat "$tmp/health.out")"
ok "health from the host (${hctl:-python}) succeeds"

# Check 2: not root, inside and as seen from the host.
uid_in=$("${PODMAN[@]}" exec "$ctr" id -u)
[ "$uid_in" != 0 ] || fail "the container runs as root (id -u = 0)"
"${PODMAN[@]}" top "$ctr" user huser args >"$tmp/top" || fail "podman top failed"
awk 'NR > 1 && $3 ~ /handlerd/' "$tmp/top" | grep -q . || fail "no handlerd process in podman top: $(cat "$tmp/top")"
if awk 'NR > 1 && $3 ~ /handlerd/ && ($1 == "root" || $1 == "0" || $2 == "root" || $2 == "0")' "$tmp/top" | grep -q .; then
  fail "handlerd runs as root: $(cat "$tmp/top")"
fi
ok "non-root: id -u = $uid_in; podman top: $(awk 'NR > 1 && $3 ~ /handlerd/ {print "user " $1 ", host user " $2; exit}' "$tmp/top")"

# A local handler: persistence is checked on it even without webhooks.
client add --key "$TEST_KEY" --local count >"$tmp/add-local.out" 2>&1 \
  || fail "add --local count failed: $(cat "$tmp/add-local.out")"
client dispatch --key "$TEST_KEY" --event update --topic prices/eur --value '{"bid":1.1}' \
  >"$tmp/dispatch-local.out" 2>&1 || fail "dispatch to the local handler failed: $(cat "$tmp/dispatch-local.out")"
ok "local handler 'count' registered under $TEST_KEY and dispatched to"

# Check 3: a signed webhook delivery to a receiver on the host.
rport=$(free_port)
webhook_url="http://127.0.0.1:$rport/hook"
secret=whsec_$(head -c 24 /dev/urandom | base64)
"$PY" docker/receiver.py --bind 127.0.0.1 --port "$rport" --record "$tmp/requests.jsonl" \
  >"$tmp/receiver.log" 2>&1 &
receiver_pid=$!
for _ in $(seq 1 50); do port_open "$rport" && break; sleep 0.1; done
port_open "$rport" || fail "the webhook receiver did not start: $(cat "$tmp/receiver.log")"
client add --key "$TEST_KEY" --webhook "$webhook_url" --secret "$secret" >"$tmp/add-webhook.out" 2>&1 \
  || fail "add --webhook failed: $(cat "$tmp/add-webhook.out")"
client dispatch --key "$TEST_KEY" --event update --topic prices/eur --value '{"bid":1.2}' \
  >"$tmp/dispatch.out" 2>&1 || fail "dispatch to the webhook failed: $(cat "$tmp/dispatch.out")"
for _ in $(seq 1 100); do [ -s "$tmp/requests.jsonl" ] && break; sleep 0.1; done
[ -s "$tmp/requests.jsonl" ] || fail "the receiver got no request; dispatch said: $(cat "$tmp/dispatch.out")"
# Standard Webhooks: v1,base64(HMAC-SHA256(base64decode(secret minus whsec_), "id.timestamp.body")).
"$PY" - "$tmp/requests.jsonl" "$secret" <<'EOF' || fail "webhook delivery did not verify (above)"
import base64, hashlib, hmac, json, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
key = base64.b64decode(sys.argv[2][len("whsec_"):])
r = next((r for r in reqs if r["method"] == "POST"), None)
if r is None:
    sys.exit(f"no POST among {len(reqs)} request(s)")
h = r["headers"]
missing = [n for n in ("webhook-id", "webhook-timestamp", "webhook-signature") if n not in h]
if missing:
    sys.exit(f"POST {r['path']} lacks {', '.join(missing)}; headers: {h}")
body = base64.b64decode(r["body_base64"])
signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + body
want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
sigs = [s.split(",", 1)[1] for s in h["webhook-signature"].split() if s.startswith("v1,")]
if not any(hmac.compare_digest(s, want) for s in sigs):
    sys.exit(f"webhook-signature {h['webhook-signature']!r} does not match v1,{want}")
if "prices/eur" not in r["body"]:
    sys.exit(f"the body does not carry the event: {r['body']}")
print(f"POST {r['path']} webhook-id {h['webhook-id']}: signature verifies")
EOF
ok "webhook: the receiver on the host got a POST with a valid Standard Webhooks signature"

# Check 4: podman stop sends SIGTERM; handlerd exits 0 within 10 s.
[ "$("${PODMAN[@]}" inspect -f '{{.Config.StopSignal}}' "$ctr")" = 15 ] ||
  [ "$("${PODMAN[@]}" inspect -f '{{.Config.StopSignal}}' "$ctr")" = SIGTERM ] ||
  fail "stop signal is $("${PODMAN[@]}" inspect -f '{{.Config.StopSignal}}' "$ctr"), not SIGTERM"
s0=$(date +%s%N)
"${PODMAN[@]}" stop -t 10 "$ctr" >/dev/null 2>"$tmp/podman.err" || fail "podman stop failed: $(cat "$tmp/podman.err")"
stop_ms=$((($(date +%s%N) - s0) / 1000000))
code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$ctr")
[ "$code" = 0 ] || fail "handlerd exited with code $code on SIGTERM (137: killed after the 10 s timeout)"
[ "$stop_ms" -lt 10000 ] || fail "podman stop took $stop_ms ms (limit 10 s)"
ok "SIGTERM: handlerd exited 0 after $stop_ms ms"

# Check 5: a new container on the same volume still has the registrations.
start_container "handlerd-test-$$-b"
client list >"$tmp/list.out" 2>&1 || fail "list after restart failed: $(cat "$tmp/list.out")"
{ grep -q "$TEST_KEY" "$tmp/list.out" && grep -q count "$tmp/list.out"; } ||
  fail "the local handler registration did not survive the restart; list says: $(cat "$tmp/list.out")"
grep -q "$webhook_url" "$tmp/list.out" ||
  fail "the webhook registration did not survive the restart; list says: $(cat "$tmp/list.out")"
if grep -qF "${secret#whsec_}" "$tmp/list.out"; then fail "list shows the webhook secret"; fi
ok "persistence: a new container on volume $volume lists the registrations"
"${PODMAN[@]}" stop -t 10 "$ctr" >/dev/null 2>&1 || true

# ---- 6. two replicas on one PostgreSQL --------------------------------------
ctr= # the containers of checks 1-5 are done with
# test_image NAME CONTAINERFILE: builds localhost/NAME from docker/CONTAINERFILE
# (it copies nothing: an empty context), unless the image there already comes from this
# Containerfile on this base (label handlerd.test.key).
test_image() {
  local name=localhost/$1 file=docker/$2 key have old
  key=$(sha256sum <"$file" | cut -c1-16)-$base_sum
  have=$("${PODMAN[@]}" image inspect --format '{{index .Labels "handlerd.test.key"}}' "$name" 2>/dev/null || true)
  if [ "$have" = "$key" ]; then
    log "$name: up to date with ${file#docker/}"
    return 0
  fi
  log "podman build -f $file -t $name"
  mkdir -p "$tmp/empty"
  old=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  "${PODMAN[@]}" build --pull=never --isolation chroot --layers=false --label "handlerd.test.key=$key" \
    -f "$file" -t "$name" "$tmp/empty" >"$tmp/build-$1.log" 2>&1 ||
    { tail -30 "$tmp/build-$1.log" >&2; fail "podman build of $name failed (last lines above)"; }
  if [ -n "$old" ]; then "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true; fi
}
PG_IMAGE=localhost/handlerd-test-postgres
NGINX_IMAGE=localhost/handlerd-test-nginx
test_image handlerd-test-postgres postgres-test.Containerfile
test_image handlerd-test-nginx nginx-test.Containerfile

wait_port() { # wait_port CONTAINER PORT WHAT: it listens on 127.0.0.1:PORT within 20 s
  for _ in $(seq 1 100); do
    port_open "$2" && return 0
    if [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$1")" != true ]; then
      ctr=$1
      fail "$3: container $1 exited (code $("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$1"))"
    fi
    sleep 0.2
  done
  ctr=$1
  fail "$3: nothing listens on 127.0.0.1:$2 after 20 s"
}

pgport=$(free_port)
pg=handlerd-test-$$-postgres
containers+=("$pg")
log_ctrs+=("$pg")
"${PODMAN[@]}" run -d --name "$pg" "${RUN_OPTS[@]}" "$PG_IMAGE" -p "$pgport" >"$tmp/run.log" 2>&1 ||
  fail "podman run $pg failed: $(cat "$tmp/run.log")"
wait_port "$pg" "$pgport" "PostgreSQL"
for _ in $(seq 1 50); do
  "${PODMAN[@]}" exec "$pg" pg_isready -q -h 127.0.0.1 -p "$pgport" -U handlerd -d handlerd && break
  sleep 0.2
done
"${PODMAN[@]}" exec "$pg" pg_isready -h 127.0.0.1 -p "$pgport" -U handlerd -d handlerd >"$tmp/pg.out" 2>&1 ||
  fail "PostgreSQL is not ready: $(cat "$tmp/pg.out")"
database_url="postgres://handlerd:secret@127.0.0.1:$pgport/handlerd"
log "PostgreSQL 15 ($pg) ready on 127.0.0.1:$pgport"

# As in docker/compose.yaml: no state dir (HANDLERD_STATE_DIR empty: the
# image's default and --database exclude each other) and a read-only root
# (--image-volume ignore: no anonymous volume for the image's VOLUME), so
# what they keep is in PostgreSQL. Both start at once: each creates the
# schema if it is not there yet.
run_replica() { # run_replica NAME PORT REPLICA_ID
  containers+=("$1")
  log_ctrs+=("$1")
  "${PODMAN[@]}" run -d --name "$1" "${RUN_OPTS[@]}" --read-only --image-volume ignore \
    --cap-drop ALL --security-opt no-new-privileges \
    -v "$tmp/token:/run/secrets/handlerd_token:ro" \
    -e HANDLERD_DATABASE_URL="$database_url" -e HANDLERD_STATE_DIR= \
    -e HANDLERD_REPLICA_ID="$3" -e HANDLERD_DELIVERY_LEASE=30s \
    -e HANDLERD_LISTEN="127.0.0.1:$2" -e HANDLERD_ADDR="127.0.0.1:$2" \
    -e HANDLERD_TOKEN_FILE=/run/secrets/handlerd_token \
    "$IMAGE" >"$tmp/run.log" 2>&1 || fail "podman run $1 failed: $(cat "$tmp/run.log")"
}
pa=$(free_port)
pb=$(free_port)
while [ "$pb" = "$pa" ]; do pb=$(free_port); done
ra=handlerd-test-$$-replica-a
rb=handlerd-test-$$-replica-b
run_replica "$ra" "$pa" replica-a
run_replica "$rb" "$pb" replica-b
wait_port "$ra" "$pa" "replica A"
wait_port "$rb" "$pb" "replica B"
for r in "$ra" "$rb"; do
  "${PODMAN[@]}" healthcheck run "$r" >"$tmp/hc.out" 2>&1 ||
    { ctr=$r; fail "the HEALTHCHECK of $r failed: $(cat "$tmp/hc.out")"; }
done
ok "replicas: A on 127.0.0.1:$pa and B on 127.0.0.1:$pb, one database, both healthy"

# Registered through A ...
REPLICA_KEY=docker-test-replicas
client_to "$pa" add --key "$REPLICA_KEY" --local echo >"$tmp/add-r.out" 2>&1 ||
  fail "add --local echo through replica A failed: $(cat "$tmp/add-r.out")"
client_to "$pa" add --key "$REPLICA_KEY" --webhook "http://127.0.0.1:$rport/replicas" --secret "$secret" \
  >"$tmp/add-r.out" 2>&1 || fail "add --webhook through replica A failed: $(cat "$tmp/add-r.out")"
client_to "$pa" add --key "$REPLICA_KEY" --webhook "http://127.0.0.1:$rport/replicas-async" --secret "$secret" \
  --async >"$tmp/add-r.out" 2>&1 || fail "add --webhook --async through replica A failed: $(cat "$tmp/add-r.out")"
# ... dispatched through B, once B lists them: it learns of them from the
# database (at once when notified, else within HANDLERD_SYNC_INTERVAL, 1 s).
for _ in $(seq 1 50); do
  client_to "$pb" list >"$tmp/list-r.out" 2>&1 && grep -q "/replicas-async" "$tmp/list-r.out" && break
  sleep 0.2
done
grep -q "/replicas-async" "$tmp/list-r.out" ||
  fail "replica B does not list the handlers added through A after 10 s: $(cat "$tmp/list-r.out")"
client_to "$pb" dispatch --key "$REPLICA_KEY" --event update --topic replicas/check --value '{"via":"b"}' \
  >"$tmp/dispatch-r.out" 2>&1 || fail "dispatch through replica B failed: $(cat "$tmp/dispatch-r.out")"
grep -q 'replicas/check' "$tmp/dispatch-r.out" ||
  fail "dispatch through replica B: no echo result: $(cat "$tmp/dispatch-r.out")"
# The sync webhook's POST comes from B's dispatch, the async one from the
# shared outbox (the replica holding the delivery's lease).
received() { # received PATH: the host receiver got a POST to PATH carrying replicas/check
  "$PY" - "$tmp/requests.jsonl" "$1" <<'EOF'
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
sys.exit(0 if any(r["method"] == "POST" and r["path"] == sys.argv[2] and "replicas/check" in r["body"]
                  for r in reqs) else 1)
EOF
}
for _ in $(seq 1 150); do received /replicas && received /replicas-async && break; sleep 0.1; done
received /replicas || fail "the webhook added through A got no POST from B's dispatch: $(cat "$tmp/dispatch-r.out")"
received /replicas-async ||
  fail "the async webhook added through A got no delivery within 15 s: $(cat "$tmp/dispatch-r.out")"
ok "replicas: echo, a webhook and an async webhook added through A served an event dispatched through B"

# ---- 7. nginx in front of both replicas (docker/nginx-grpc.conf) -----------
# The compose file's configuration with its upstream servers and listen
# address rewritten to the replicas' and a free port on 127.0.0.1.
pn=$(free_port)
sed -e "s/server handlerd-a:50051 /server 127.0.0.1:$pa /" \
  -e "s/server handlerd-b:50051 /server 127.0.0.1:$pb /" \
  -e "s/listen 50051 http2;/listen 127.0.0.1:$pn http2;/" docker/nginx-grpc.conf >"$tmp/nginx.conf"
[ "$(grep -cE "server 127\.0\.0\.1:($pa|$pb) |listen 127\.0\.0\.1:$pn http2;" "$tmp/nginx.conf")" = 3 ] ||
  fail "docker/nginx-grpc.conf lacks 'server handlerd-a:50051 ', 'server handlerd-b:50051 ' or 'listen 50051 http2;'"
chmod 0444 "$tmp/nginx.conf"
ngx=handlerd-test-$$-nginx
containers+=("$ngx")
log_ctrs+=("$ngx")
"${PODMAN[@]}" run -d --name "$ngx" "${RUN_OPTS[@]}" --read-only \
  -v "$tmp/nginx.conf:/etc/nginx/nginx.conf:ro" "$NGINX_IMAGE" >"$tmp/run.log" 2>&1 ||
  fail "podman run $ngx failed: $(cat "$tmp/run.log")"
wait_port "$ngx" "$pn" "nginx"
client_to "$pn" health >"$tmp/health-n.out" 2>&1 || fail "health through nginx failed: $(cat "$tmp/health-n.out")"
for i in 1 2 3 4; do
  client_to "$pn" dispatch --key "$REPLICA_KEY" --event update --topic replicas/check \
    --value "{\"via\":\"nginx-$i\"}" >"$tmp/dispatch-n.out" 2>&1 ||
    fail "dispatch $i through nginx failed: $(cat "$tmp/dispatch-n.out")"
  grep -q "nginx-$i" "$tmp/dispatch-n.out" || fail "dispatch $i through nginx: no echo result: $(cat "$tmp/dispatch-n.out")"
done
"${PODMAN[@]}" logs "$ngx" >"$tmp/nginx.log" 2>&1 || true
for p in "$pa" "$pb"; do
  grep 'Handlers/Dispatch' "$tmp/nginx.log" | grep -q "upstream=127.0.0.1:$p " ||
    fail "nginx sent no Dispatch to 127.0.0.1:$p; its log: $(grep 'Handlers/Dispatch' "$tmp/nginx.log")"
done
ok "nginx: health and 4 dispatches through 127.0.0.1:$pn, served by both replicas"
"${PODMAN[@]}" stop -t 5 "$ngx" >/dev/null 2>&1 || true

for r in "$ra" "$rb"; do
  "${PODMAN[@]}" stop -t 10 "$r" >/dev/null 2>"$tmp/podman.err" || fail "podman stop $r failed: $(cat "$tmp/podman.err")"
  code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$r")
  [ "$code" = 0 ] || { ctr=$r; fail "$r exited with code $code on SIGTERM"; }
done
"${PODMAN[@]}" stop -t 10 "$pg" >/dev/null 2>&1 || true
ok "replicas: both exited 0 on SIGTERM"

echo
log "image size: $size_mb MB ($size bytes)"
log "PASSED"
