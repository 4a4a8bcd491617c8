#!/usr/bin/env bash
# Compiles faiss-node's single source file against Debian's static libfaiss (1.7.3). The package's
# own install downloads from GitHub, which is unreachable here, so we do its build ourselves.
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

echo "[install] compiling faiss-node against Debian libfaiss" >&2
g++ -O2 -std=c++17 -shared -fPIC -fopenmp \
  -include "$compat" \
  -I"$node_headers" -Inode_modules/node-addon-api \
  -DNAPI_VERSION=6 -DNAPI_DISABLE_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED \
  "$pkg/src/faiss.cc" -o "$out.tmp" \
  -l:libfaiss.a -lopenblas -llapack
mv "$out.tmp" "$out"
