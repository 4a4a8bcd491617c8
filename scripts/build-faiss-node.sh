#!/usr/bin/env bash
# Compiles faiss-node's single source file against Debian's static libfaiss (1.7.3). The package's
# own install downloads from GitHub, which is unreachable here, so we do its build ourselves.
# Our patches (scripts/patches/faiss-node-*.patch, reviewed diffs of src/faiss.cc) are applied to
# a fresh copy of the source each time, so the build is repeatable and node_modules stays pristine.
set -euo pipefail
cd "$(dirname "$0")/.."

pkg=node_modules/faiss-node
out=$pkg/build/Release/faiss-node.node
nodedir="$(npm config get nodedir 2>/dev/null || true)"
node_headers=""
for d in "${nodedir:+$nodedir/include/node}" "$(dirname "$(dirname "$(command -v node)")")/include/node" /usr/include/node /usr/local/include/node; do
  if [ -n "$d" ] && [ -f "$d/node_api.h" ]; then node_headers="$d"; break; fi
done
[ -n "$node_headers" ] || { echo "build-faiss-node: node headers (node_api.h) not found" >&2; exit 1; }

mkdir -p "$pkg/build/Release"
compat="$pkg/build/faiss-compat.h"
# faiss-node is written against faiss >= 1.7.4, where idx_t moved from faiss::Index to faiss.
printf '#pragma once\n#include <cstdint>\nnamespace faiss { using idx_t = int64_t; }\n' > "$compat"

patched="$pkg/build/patched"
rm -rf "$patched"
mkdir -p "$patched/src"
cp "$pkg/src/faiss.cc" "$patched/src/faiss.cc"
for p in scripts/patches/faiss-node-*.patch; do
  echo "[install] applying $p" >&2
  patch --quiet --forward --batch -p1 -d "$patched" < "$p"
done

echo "[install] compiling faiss-node against Debian libfaiss" >&2
g++ -O2 -std=c++17 -shared -fPIC -fopenmp \
  -include "$compat" \
  -I"$node_headers" -Inode_modules/node-addon-api \
  -DNAPI_VERSION=6 -DNAPI_DISABLE_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED \
  "$patched/src/faiss.cc" -o "$out.tmp" \
  -l:libfaiss.a -lopenblas -llapack
mv "$out.tmp" "$out"
