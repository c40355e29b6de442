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
#   5. a new container on the same state volume still lists the registrations.
# Any failure stops the script with "FAIL: ..." and a non-zero exit; the
# containers, the volume and the receiver are removed in every case.
#
# The base image tarball is cached in docker/.cache/ (gitignored): delete it
# to rebuild the base. HD_IMAGE_MAX_MB (default 120) bounds the image size.
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
  if [ -n "${ctr:-}" ] && "${PODMAN[@]}" container exists "$ctr" 2>/dev/null; then
    printf '[test-image] last log lines of %s:\n' "$ctr" >&2
    "${PODMAN[@]}" logs --tail 40 "$ctr" >&2 2>&1 || true
  fi
  exit 1
}

# ---- cleanup, whatever happens ----------------------------------------------
tmp=$(mktemp -d /tmp/handlerd-image-test.XXXXXX)
volume=handlerd-test-state-$$
containers=()
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
cmd, args = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
try:
    if cmd == "health":
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))
        sys.exit(0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1)
    if cmd == "add":
        if "--webhook" in args:
            t = pb.Target(webhook=pb.Webhook(url=args["--webhook"], secret=args.get("--secret", "")))
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

echo
log "image size: $size_mb MB ($size bytes)"
log "PASSED"
