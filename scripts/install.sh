#!/usr/bin/env bash
# Installs whatever is missing, offline-safe: Debian's faiss/OpenBLAS (for the native build and
# for the Python-faiss compatibility tests) and chromium (for the /docs browser test), npm
# dependencies without their install scripts (faiss-node's downloads from GitHub,
# onnxruntime-node's fetches the CUDA provider), and our own compile of faiss-node against
# Debian's libfaiss. Safe to run again: each step checks first.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[install] $*" >&2; }

need_apt=()
[ -f /usr/lib/x86_64-linux-gnu/libfaiss.a ] || [ -f /usr/lib/libfaiss.a ] || need_apt+=(libfaiss-dev)
[ -e /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h ] || [ -e /usr/include/cblas.h ] || need_apt+=(libopenblas-dev)
command -v g++ >/dev/null || need_apt+=(g++)
command -v patch >/dev/null || need_apt+=(patch)
# Tools only the tests use; an install that only serves (the Dockerfile's) sets INSTALL_TEST_TOOLS=0.
if [ "${INSTALL_TEST_TOOLS:-1}" != 0 ]; then
  /usr/bin/python3 -c 'import faiss, numpy' 2>/dev/null || need_apt+=(python3-faiss python3-numpy)
  # The /docs test drives Debian's browser through playwright-core, which downloads none of its own.
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  # The load balancer in front of replicas (deploy/nginx/retriever.conf); the scale-out tests start a real one.
  [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need_apt+=(nginx)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

stamp=node_modules/.install-stamp
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  log "installing npm dependencies (install scripts skipped; native parts are built below)"
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi

if [[ "${ONNXRUNTIME_NODE_INSTALL:-skip}" == bundle:* ]]; then
  # GPU hosts without NuGet: onnxruntime-node and its CUDA provider from scripts/gpu-bundle.sh's tarball.
  bash scripts/install-gpu-bundle.sh "${ONNXRUNTIME_NODE_INSTALL#bundle:}"
elif [ "${ONNXRUNTIME_NODE_INSTALL:-skip}" != skip ] && [ ! -f node_modules/.onnxruntime-cuda-stamp ]; then
  # GPU hosts: let onnxruntime-node's own installer fetch the CUDA provider it names (e.g. cuda12).
  log "fetching onnxruntime-node execution provider: $ONNXRUNTIME_NODE_INSTALL"
  (cd node_modules/onnxruntime-node && node script/install)
  touch node_modules/.onnxruntime-cuda-stamp
fi

addon=node_modules/faiss-node/build/Release/faiss-node.node
# Rebuilt when this script, the build script or a patch of the binding is newer than the addon.
stale=$(find "$0" scripts/build-faiss-node.sh scripts/patches -newer "$addon" 2>/dev/null | head -1 || true)
if [ ! -f "$addon" ] || [ -n "$stale" ]; then
  bash scripts/build-faiss-node.sh
fi
