#!/usr/bin/env bash
# Packs onnxruntime-node with ONNX Runtime's CUDA provider from the npm registry alone, for GPU
# hosts that cannot reach NuGet (where `ONNXRUNTIME_NODE_INSTALL=cuda12` fetches it from).
#
# npm's only CUDA build of the provider is in a Unity package: ONNX Runtime 1.29.0's
# libonnxruntime_providers_cuda.so, built for CUDA 13 and cuDNN 9. The provider refuses a core
# library of another version ("onnxruntime version mismatch"), so the bundle carries
# onnxruntime-node 1.29.0 (binding and libonnxruntime.so.1 of ORT 1.29.0) with its own
# onnxruntime-common, in place of the 1.30 package.json pins; our code uses only the API both have.
#
#   bash scripts/gpu-bundle.sh [out-dir]     (default gpu-bundle/)
# writes <out-dir>/onnxruntime-node-1.29.0-linux-x64-cuda13.tar.gz and its .sha256;
# scripts/install-gpu-bundle.sh (or ONNXRUNTIME_NODE_INSTALL=bundle:<tarball> with install.sh) lays it out.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: name@version and the registry's integrity of each tarball.
PACKAGES=(
  "onnxruntime-node@1.29.0 sha512-WjiVVB72riILz8HbYvxvmjKyE/WmkYoSfKY++axo5jAR609HQg8MwiG/HhShpTcJfmmAdzxxmB+MMST3A+SiPA=="
  "onnxruntime-common@1.29.0 sha512-/F63/e2VJoaVXGGNu6S5QH7jivBThGO95OzAVXXQ8hTta/b1QxI8udHa6cI3+3mAb5WWIIaMMwfZw01oivjJ1g=="
  "com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w=="
)
ORT_VERSION=1.29.0
NAME=onnxruntime-node-$ORT_VERSION-linux-x64-cuda13
out=$(realpath -m "${1:-gpu-bundle}")

log() { echo "[gpu-bundle] $*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/packs" "$work/$NAME" "$out"

for entry in "${PACKAGES[@]}"; do
  read -r spec integrity <<<"$entry"
  log "fetching $spec"
  file=$(cd "$work/packs" && npm pack "$spec" --silent --loglevel=error | tail -1)
  actual="sha512-$(openssl dgst -sha512 -binary "$work/packs/$file" | base64 -w0)"
  if [ "$actual" != "$integrity" ]; then
    log "integrity mismatch for $spec: expected $integrity, got $actual"
    exit 1
  fi
  mkdir -p "$work/unpacked/${spec%@*}"
  tar xzf "$work/packs/$file" -C "$work/unpacked/${spec%@*}" --strip-components=1
done

node_pkg=$work/$NAME/onnxruntime-node
cp -a "$work/unpacked/onnxruntime-node" "$node_pkg"
# Other platforms' binaries are 200 MB this host never loads.
find "$node_pkg/bin/napi-v6" -mindepth 2 -maxdepth 2 -type d ! -path '*/linux/x64' -exec rm -rf {} +
find "$node_pkg/bin/napi-v6" -mindepth 1 -maxdepth 1 -type d ! -name linux -exec rm -rf {} +
mkdir -p "$node_pkg/node_modules"
cp -a "$work/unpacked/onnxruntime-common" "$node_pkg/node_modules/onnxruntime-common"
# ORT's core library loads its providers from its own folder.
bin=$node_pkg/bin/napi-v6/linux/x64
plugins=$work/unpacked/com.github.asus4.onnxruntime.linux-x64-gpu/Plugins/Linux/x64
cp "$plugins/libonnxruntime_providers_shared.so" "$plugins/libonnxruntime_providers_cuda.so" "$bin/"
cp "$work/unpacked/com.github.asus4.onnxruntime.linux-x64-gpu/LICENSE" "$bin/LICENSE.providers"

# Both libraries must say the same ORT version, or the provider refuses to load.
for library in libonnxruntime.so.1 libonnxruntime_providers_cuda.so; do
  if ! grep -qaxF "$ORT_VERSION" <(strings -n 6 "$bin/$library"); then
    log "$library does not carry ONNX Runtime version $ORT_VERSION"
    exit 1
  fi
done

(
  cd "$work/$NAME"
  printf '{\n  "ortVersion": "%s",\n  "cuda": "13",\n  "cudnn": "9",\n  "packages": [\n' "$ORT_VERSION"
  sep=""
  for entry in "${PACKAGES[@]}"; do
    read -r spec integrity <<<"$entry"
    printf '%s    {"spec": "%s", "integrity": "%s"}' "$sep" "$spec" "$integrity"
    sep=$',\n'
  done
  printf '\n  ]\n}\n'
) >"$work/$NAME/BUNDLE.json"
(cd "$work/$NAME" && find onnxruntime-node -type f -print0 | sort -z | xargs -0 sha256sum >SHA256SUMS)

tar czf "$out/$NAME.tar.gz" -C "$work" "$NAME"
(cd "$out" && sha256sum "$NAME.tar.gz" >"$NAME.tar.gz.sha256")
log "wrote $out/$NAME.tar.gz ($(du -h "$out/$NAME.tar.gz" | cut -f1))"
echo "$out/$NAME.tar.gz"
