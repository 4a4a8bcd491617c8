#!/usr/bin/env bash
# The CUDA checks of benchmarks/gpu-check.ts on a GPU host, figures as JSON in $OUT (or ./gpu-check-out).
# On a lent GPU machine without Node or a registry it first unpacks what scripts/gpu-carry.sh
# packed and the calls carried (.gpu-carry/NN/); on a host with the project installed and built
# (npm start, ONNXRUNTIME_NODE_INSTALL=bundle:... or cuda12) it runs as it is.
#   bash scripts/gpu-check.sh [gpu-check.js flags, e.g. --device-ids 0,1]
#   GPU_CHECK_TIMEOUT_S=240 bash scripts/gpu-check.sh --quick    (a smaller, shorter run)
# The run stops at GPU_CHECK_TIMEOUT_S (default 450); its steps share the time up to 20 s before,
# each in its own slice (benchmarks/time-slices.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
log() { echo "[gpu-check] $*" >&2; }

if [ -d .gpu-carry ]; then
  parts=$(cat .gpu-carry/*/parts | sort -u)
  for n in $(seq -f %02g 1 "$parts"); do
    [ -f ".gpu-carry/$n/payload.$n" ] || { log "part $n of $parts has not been carried yet (.gpu-carry/$n)"; exit 2; }
    (cd ".gpu-carry/$n" && sha256sum --quiet -c "payload.$n.sha256")
  done
  if [ ! -f .gpu-carry/unpacked ] || [ "$(cat .gpu-carry/unpacked)" != "$(cat .gpu-carry/*/payload.*.sha256 | sha256sum)" ]; then
    log "unpacking $parts parts"
    rm -rf dist node_modules .gpu-carry/node .gpu-carry/lib
    # xz where the machine has it, Python's lzma otherwise.
    if command -v xz >/dev/null; then
      cat .gpu-carry/*/payload.[0-9][0-9] | xz -dc | tar x
    else
      cat .gpu-carry/*/payload.[0-9][0-9] | python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)' | tar x
    fi
    cat .gpu-carry/*/payload.*.sha256 | sha256sum >.gpu-carry/unpacked
  fi
  export PATH=$PWD/.gpu-carry/node/bin:$PATH
  LD_LIBRARY_PATH=$PWD/.gpu-carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

# The CUDA provider's libraries (CUDA 13, cuDNN 9): what the loader finds, the nvidia-* wheels of
# the Pythons on PATH (a PyTorch environment's), or the system's folders; where each one was found
# goes to $out/cuda-libraries.json and into gpu-check.json.
source scripts/cuda-libraries.sh
cuda_libraries_find "$out/cuda-libraries.json"
[ ${#cuda_libraries_missing[@]} -eq 0 ] || log "not found on this host: ${cuda_libraries_missing[*]} (the CUDA provider will not load)"

log "node $(node --version), onnxruntime-node $(node -p "require('onnxruntime-node/package.json').version")"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$out/nvidia-smi.txt" || true
# The whole check stays under 8 minutes on one GPU, so a 10-minute device call has room to report.
limit=${GPU_CHECK_TIMEOUT_S:-450}
timeout "$limit" node dist/benchmarks/gpu-check.js --out "$out/gpu-check.json" --budget-s $((limit - 20)) --cuda-libraries "$out/cuda-libraries.json" "$@" 2>&1 | tee "$out/gpu-check.log"
