#!/usr/bin/env bash
# Proves the Dockerfile's cpu target without a registry or a Docker daemon: debootstrap makes a
# Debian 12 root filesystem, the build host's Node 20 is laid out in it as Node's official image
# lays it out (node:20-bookworm-slim is what the Dockerfile names for everyone else), buildah builds
# the unchanged Dockerfile on that base (only the BASE argument differs), runs the image's own
# entrypoint and command with `buildah run`, and asks its /retrieve the README's query.
# Writes a JSON record of the times and the image's size. Takes many minutes; not part of npm test.
#
#   sudo bash scripts/image-check.sh [record.json]    (default benchmarks/results/image-check.json)
#
# Needs root, the Debian packages buildah and debootstrap, Debian's apt and the npm registry.
# The base image and buildah's layers are cached under IMAGE_CHECK_CACHE, so a second run reuses
# them; IMAGE_CHECK_FRESH=1 starts from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${IMAGE_CHECK_CACHE:-/var/tmp/retriever-image-check}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
record=$(realpath -m "${1:-benchmarks/results/image-check.json}")
tag=localhost/agentic-retriever:cpu
# Seconds the served image may take to answer /ready (the demo is built into the image already).
ready_timeout_s=${IMAGE_CHECK_READY_TIMEOUT_S:-300}

log() { echo "[image-check] $*" >&2; }
fail() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root: debootstrap and buildah's chroot isolation need it"
for tool in buildah debootstrap curl node; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install buildah debootstrap)"
done
node_version=$(node -p process.versions.node)
[[ $node_version == 20.* ]] || fail "the build host's node is $node_version; the image's base is Node 20"
base=localhost/retriever-base:bookworm-node$node_version

if [ "${IMAGE_CHECK_FRESH:-0}" = 1 ] && [ -d "$cache" ]; then
  log "IMAGE_CHECK_FRESH=1: removing $cache"
  buildah --root "$cache/storage" --runroot "$cache/run" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$cache"
fi
mkdir -p "$cache"

# overlay where the kernel and the file system allow it, vfs (a full copy per layer) otherwise.
driver_file=$cache/storage-driver
if [ ! -f "$driver_file" ]; then
  driver=overlay
  buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver overlay images >/dev/null 2>&1 || driver=vfs
  echo "$driver" >"$driver_file"
fi
driver=$(cat "$driver_file")
storage=(--root "$cache/storage" --runroot "$cache/run" --storage-driver "$driver")
bh() { buildah "${storage[@]}" "$@"; }
log "buildah $(buildah --version | awk '{print $3}'), storage driver $driver, cache $cache"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# The base: Debian 12 minbase with Node laid out as in node:20-bookworm-slim (/usr/local/bin,
# /usr/local/lib/node_modules/npm, headers in /usr/local/include/node, user node with uid 1000).
debootstrap_s=null
base_s=null
if bh inspect --type image "$base" >/dev/null 2>&1; then
  log "base $base: cached"
else
  started=$(now)
  rootfs=$cache/rootfs.partial
  rm -rf "$rootfs"
  log "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || fail "debootstrap failed: see $cache/debootstrap.log"
  debootstrap_s=$(since "$started")
  node_bin=$(readlink -f "$(command -v node)")
  npm_dir=$(npm root -g)/npm
  headers=""
  for d in "$(dirname "$(dirname "$node_bin")")/include/node" /usr/include/node /usr/local/include/node; do
    if [ -f "$d/node_api.h" ]; then headers=$d; break; fi
  done
  [ -n "$headers" ] || fail "node's headers (node_api.h) are not on the build host"
  install -D -m 755 "$node_bin" "$rootfs/usr/local/bin/node"
  mkdir -p "$rootfs/usr/local/lib/node_modules" "$rootfs/usr/local/include"
  cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
  cp -a "$headers" "$rootfs/usr/local/include/node"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  # The stand-in base trusts the CAs the build host added (a TLS-inspecting proxy in front of the
  # npm registry, say): the Dockerfile's ca-certificates install folds them into the system bundle,
  # and NODE_EXTRA_CA_CERTS (set below) makes npm read that bundle. Nothing else differs.
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  host_cas=(/usr/local/share/ca-certificates/*.crt)
  [ -e "${host_cas[0]}" ] && cp "${host_cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" groupadd --gid 1000 node
  chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  # Debian's container images read these suites; debootstrap writes only the first.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # As in Debian's container images: apt keeps no .deb files after installing them.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$cache/base.tar" .
  ctr=$(bh from scratch)
  bh add "$ctr" "$cache/base.tar" / >/dev/null
  bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="$node_version" --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt --cmd node "$ctr"
  bh commit --rm --quiet "$ctr" "$base" >/dev/null
  rm -rf "$rootfs" "$cache/base.tar"
  base_s=$(since "$started")
  log "base $base made in ${base_s} s (debootstrap ${debootstrap_s} s)"
fi

log "building the cpu target (buildah bud --isolation chroot --layers)"
started=$(now)
bh bud --isolation chroot --format docker --layers --target cpu --build-arg BASE="$base" \
  -t "$tag" -f Dockerfile . >"$cache/build.log" 2>&1 || { tail -40 "$cache/build.log" >&2; fail "build failed: see $cache/build.log"; }
build_s=$(since "$started")
log "built $tag in ${build_s} s"

# Bytes of an image's root filesystem, unpacked (what a host stores; a registry holds it compressed).
unpacked_bytes() {
  local ctr mnt bytes
  ctr=$(bh from --pull=never "$1")
  mnt=$(bh mount "$ctr")
  bytes=$(du -sb "$mnt" | cut -f1)
  bh umount "$ctr" >/dev/null
  bh rm "$ctr" >/dev/null
  echo "$bytes"
}
image_bytes=$(unpacked_bytes "$tag")
base_bytes=$(unpacked_bytes "$base")
inspect_json=$(bh inspect --type image "$tag")

# The image's own entrypoint and command, with a free loopback port appended (a later flag wins):
# chroot isolation shares the host's network.
mapfile -t serve_argv < <(node -e '
  const config = JSON.parse(process.argv[1]).Docker.config;
  for (const arg of [...config.Entrypoint, ...(config.Cmd ?? [])]) console.log(arg);
' "$inspect_json")
port=$(node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
serve_argv+=(--host 127.0.0.1 --port "$port")

ctr=$(bh from --pull=never "$tag")
serve_log=$cache/serve.log
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    # setsid made the served process the leader of its own group: end that group only.
    kill -TERM -- "-$serve_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$serve_pid" 2>/dev/null || true
  fi
  bh rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
log "buildah run: ${serve_argv[*]}"
started=$(now)
setsid buildah "${storage[@]}" run --isolation chroot "$ctr" -- "${serve_argv[@]}" >"$serve_log" 2>&1 &
serve_pid=$!
until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do
  kill -0 "$serve_pid" 2>/dev/null || { tail -20 "$serve_log" >&2; fail "serve exited before /ready: see $serve_log"; }
  [ "$(since "$started" | cut -d. -f1)" -lt "$ready_timeout_s" ] || fail "no /ready 200 in ${ready_timeout_s} s: see $serve_log"
  sleep 1
done
ready_s=$(since "$started")
log "/ready answered 200 after ${ready_s} s"

# The README's query.
body='{"queries": ["who wrote hamlet", "longest river in africa"], "topk": 3, "return_scores": true}'
response=$cache/retrieve.json
status=$(curl -s -o "$response" -w '%{http_code}' "http://127.0.0.1:$port/retrieve" -H 'content-type: application/json' -d "$body")
[ "$status" = 200 ] || { cat "$response" >&2; fail "/retrieve answered $status"; }
info=$(curl -sf "http://127.0.0.1:$port/info")

mkdir -p "$(dirname "$record")"
RECORD=$record RESPONSE=$response IMAGE_BYTES=$image_bytes BASE_BYTES=$base_bytes INFO=$info BODY=$body \
BUILDAH_VERSION=$(buildah --version | awk '{print $3}') DRIVER=$driver NODE_VERSION=$node_version BASE=$base TAG=$tag \
DEBOOTSTRAP_S=$debootstrap_s BASE_S=$base_s BUILD_S=$build_s READY_S=$ready_s STATUS=$status \
node -e '
const fs = require("node:fs");
const env = process.env;
const response = JSON.parse(fs.readFileSync(env.RESPONSE, "utf8"));
const result = response.result;
if (!Array.isArray(result) || result.length !== 2 || result.some((hits) => hits.length !== 3)) {
  console.error("[image-check] /retrieve did not answer 2 queries x 3 hits:", JSON.stringify(response).slice(0, 500));
  process.exit(1);
}
const record = {
  date: new Date().toISOString(),
  machine: "development VM, 2 CPU cores shared with other work (times are indicative)",
  tools: { buildah: env.BUILDAH_VERSION, isolation: "chroot", storageDriver: env.DRIVER, node: env.NODE_VERSION },
  base: {
    image: env.BASE,
    madeBy: "debootstrap --variant=minbase bookworm, plus the build host node laid out as node:20-bookworm-slim and the build host CAs",
    debootstrapSeconds: JSON.parse(env.DEBOOTSTRAP_S),
    seconds: JSON.parse(env.BASE_S),
    unpackedBytes: Number(env.BASE_BYTES),
  },
  build: {
    target: "cpu",
    image: env.TAG,
    seconds: Number(env.BUILD_S),
    unpackedBytes: Number(env.IMAGE_BYTES),
    unpackedBytesAboveBase: Number(env.IMAGE_BYTES) - Number(env.BASE_BYTES),
  },
  serve: { argv: process.argv.slice(1), secondsToReady: Number(env.READY_S) },
  retrieve: {
    request: JSON.parse(env.BODY),
    status: Number(env.STATUS),
    topHits: result.map((hits) =>
      hits.map((hit) => ({ id: hit.document.id, title: hit.document.contents.split("\n")[0], score: hit.score })),
    ),
  },
  retriever: JSON.parse(env.INFO).retriever,
};
fs.writeFileSync(env.RECORD, JSON.stringify(record, null, 2) + "\n");
console.error("[image-check] record written to " + env.RECORD);
' "${serve_argv[@]}"
