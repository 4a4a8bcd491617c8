#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a lent GPU machine that has no Node and reaches no
# registry: Node's binary, faiss-node's shared libraries, dist/, the production node_modules with
# the GPU bundle's onnxruntime-node in place of the CPU one (onnxruntime-web is left out:
# transformers.js carries its own copy), as one xz stream cut into parts that each fit one device
# call beside the working tree (64 MiB a call; parts of at most 56 MiB, under the 60 MiB a file may
# have).
#   npm run build && bash scripts/gpu-bundle.sh && bash scripts/gpu-carry.sh gpu-bundle/<bundle>.tar.gz
# writes .gpu-carry/01 … .gpu-carry/NN; carry one folder a call (carry: [".gpu-carry/01"], …)
# while the machine stays warm, then run bash scripts/gpu-check.sh in the last one.
set -euo pipefail
bundle=$(realpath "$1")
cd "$(dirname "$0")/.."
log() { echo "[gpu-carry] $*" >&2; }
[ -f dist/benchmarks/gpu-check.js ] || { log "build first (npm run build)"; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/.gpu-carry/node/bin" "$stage/node_modules"
cp "$(command -v node)" "$stage/.gpu-carry/node/bin/node"
cp -a dist "$stage/dist"
# faiss-node's libraries beyond glibc and the C++ runtime (OpenBLAS, OpenMP, gfortran's): a lent
# GPU machine's image need not have them; gpu-check.sh puts .gpu-carry/lib on the library path.
mkdir -p "$stage/.gpu-carry/lib"
ldd node_modules/faiss-node/build/Release/faiss-node.node | awk '$3 ~ /^\// {print $1, $3}' | grep -v -E '^(libc|libm|libstdc\+\+|libgcc_s)\.so' |
  while read -r name file; do cp -L "$file" "$stage/.gpu-carry/lib/$name"; done
npm ls --omit=dev --all --parseable 2>/dev/null | sed -n "s|^$PWD/node_modules/||p" | grep -v -e '/node_modules/' -e '^onnxruntime-node$' -e '^onnxruntime-web$' |
  while read -r package; do mkdir -p "$stage/node_modules/$(dirname "$package")"; cp -a "node_modules/$package" "$stage/node_modules/$package"; done
bash scripts/install-gpu-bundle.sh "$bundle" "$stage"

# What travels beside the parts in every call: the working tree (tracked and untracked, not ignored).
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
part=$(( (56 << 20) < (63 << 20) - tree ? (56 << 20) : (63 << 20) - tree ))
rm -rf .gpu-carry
mkdir -p .gpu-carry
log "compressing (xz, a few minutes)"
tar c -C "$stage" .gpu-carry/node .gpu-carry/lib dist node_modules | xz -6 -T0 >"$stage/payload.xz"
split -b "$part" -d -a 2 --numeric-suffixes=1 "$stage/payload.xz" "$stage/payload."
rm "$stage/payload.xz"
parts=$(ls "$stage"/payload.[0-9]* | wc -l)
for file in "$stage"/payload.[0-9]*; do
  n=${file##*.}
  mkdir -p ".gpu-carry/$n"
  mv "$file" ".gpu-carry/$n/"
  (cd ".gpu-carry/$n" && sha256sum "payload.$n" >"payload.$n.sha256" && echo "$parts" >parts)
done
log "$parts parts of at most $((part >> 20)) MiB in .gpu-carry/ (working tree: $((tree >> 20)) MiB)"
