#!/usr/bin/env bash
# Lays a bundle made by scripts/gpu-bundle.sh into node_modules: onnxruntime-node 1.29.0 with
# ONNX Runtime's CUDA 13 provider beside its core library, in place of the installed package.
# Checks the tarball against its .sha256 and every file against the bundle's SHA256SUMS first.
# Safe to run again: a bundle already in place is left alone.
#   bash scripts/install-gpu-bundle.sh gpu-bundle/onnxruntime-node-1.29.0-linux-x64-cuda13.tar.gz [project-dir]
set -euo pipefail
tarball=$(realpath "$1")
cd "${2:-$(dirname "$0")/..}"

log() { echo "[install-gpu-bundle] $*" >&2; }

target=node_modules/onnxruntime-node
stamp=$target/.gpu-bundle
digest=$(sha256sum "$tarball" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
  exit 0
fi
if [ -f "$tarball.sha256" ] && [ "$(cut -d' ' -f1 "$tarball.sha256")" != "$digest" ]; then
  log "$tarball does not match $tarball.sha256"
  exit 1
fi

work=$(mktemp -d "$PWD/node_modules/.gpu-bundle-XXXXXX")
trap 'rm -rf "$work"' EXIT
tar xzf "$tarball" -C "$work"
bundle=$(find "$work" -mindepth 1 -maxdepth 1 -type d)
(cd "$bundle" && sha256sum --quiet -c SHA256SUMS) || { log "files of $tarball do not match its SHA256SUMS"; exit 1; }

echo "$digest" >"$bundle/onnxruntime-node/.gpu-bundle"
rm -rf "$target"
mv "$bundle/onnxruntime-node" "$target"
log "onnxruntime-node $(node -p "require('./$target/package.json').version") with the CUDA provider installed from $tarball"
