# syntax=docker/dockerfile:1
# Image of the retrieval service, two targets over shared layers:
#   cuda (the default, last stage): the CUDA 12 runtime, cuDNN 9 and ONNX Runtime's CUDA provider
#        added on top of the shared app; for GPU hosts.
#   cpu: the shared app as it is; for HNSW/Flat search on CPU hosts and CPU replicas of a fleet.
# Both are the same layers up to the built app, so a host that pulls both stores those once.
#
#   docker build --target cpu -t agentic-retriever:cpu .
#   docker build -t agentic-retriever:cuda .
#   docker run -p 8000:8000 agentic-retriever:cpu                  # serves the bundled demo
#   docker run --gpus all -p 8000:8000 -v /srv/e5:/models:ro -v /srv/index:/index:ro \
#     -v /srv/wiki18:/corpus:ro -v retriever-data:/data agentic-retriever:cuda \
#     --host 0.0.0.0 --device cuda --retriever_model /models/e5-base-v2/1 \
#     --index_path /index/e5_Flat.index --corpus_path /corpus/wiki-18.jsonl \
#     --sidecar_path /data/wiki-18.jsonl.offsets
#
# What has run: the cpu target, built by buildah from this file and serving the demo
# (scripts/image-check.sh; README "Container image"). The cuda target's NVIDIA layers have never
# been fetched: where this project is developed only Debian's apt and the npm registry are
# reachable, not NVIDIA's repository or NuGet. It has never been built.
#
# The base is Debian 12 (Node's official image), not nvidia/cuda:*-ubuntu22.04: faiss-node needs
# libfaiss >= 1.7.3 (faiss/impl/IDSelector.h, Index::merge_from) and Ubuntu 22.04 ships 1.7.2,
# which no compat header can fix; Debian 12 ships the static libfaiss 1.7.3 that
# scripts/build-faiss-node.sh is developed against. BASE is an argument only so that
# image-check.sh can build this same file from a Debian 12 + Node 20 base made without a registry.
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS system
ARG DEBIAN_FRONTEND=noninteractive
# What scripts/install.sh needs to build faiss-node; the tests' tools (python3-faiss, chromium) stay
# out of an image that serves (INSTALL_TEST_TOOLS=0 below).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates g++ patch libfaiss-dev libopenblas-dev liblapack-dev \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /app /models /index /corpus /data \
 && chown node:node /app /data

FROM system AS app
WORKDIR /app
COPY --chown=node:node . .
USER node
# npm's download cache (about 240 MB) is of no use once node_modules is installed.
RUN INSTALL_TEST_TOOLS=0 bash scripts/install.sh \
 && npm run build \
 && node dist/src/cli.js build-demo --data_dir /data \
 && npm cache clean --force
# Set only now: NODE_ENV=production would make `npm ci` above skip the TypeScript compiler.
ENV NODE_ENV=production \
    RETRIEVER_DATA_DIR=/data
VOLUME ["/models", "/index", "/corpus", "/data"]
EXPOSE 8000
# Loading a full wiki18 index takes minutes; /ready answers 200 only once it is served.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8000/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli.js", "serve"]

FROM app AS cpu
CMD ["--host", "0.0.0.0", "--device", "cpu"]

# The CUDA layers sit above the app so that both targets share it; the price is that a change to
# the app re-runs the NVIDIA download when the cuda target is rebuilt.
FROM app AS cuda
USER root
# ONNX Runtime 1.30's provider that `ONNXRUNTIME_NODE_INSTALL=cuda12` fetches from NuGet is built
# for CUDA 12 and cuDNN 9 and links the libraries checked below. Any CUDA 12 minor works with it
# (minor version compatibility). The driver comes from the host (NVIDIA Container Toolkit) and
# must support CUDA 12: a CUDA 13 driver does, drivers run every older CUDA runtime. (The
# npm-only bundle of scripts/gpu-bundle.sh is ORT 1.29 built for CUDA 13, a different set of
# libraries: scripts/cuda-libraries.sh lists those; it is not what this image installs.)
ARG CUDA_PACKAGES=12-8
ARG DEBIAN_FRONTEND=noninteractive
ADD https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb /tmp/cuda-keyring.deb
RUN dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      cuda-cudart-${CUDA_PACKAGES} cuda-nvrtc-${CUDA_PACKAGES} libcublas-${CUDA_PACKAGES} \
      libcufft-${CUDA_PACKAGES} libcurand-${CUDA_PACKAGES} libcudnn9-cuda-12 \
 && rm -rf /var/lib/apt/lists/* \
 && ldconfig \
 && for lib in libcudart.so.12 libcublasLt.so.12 libcublas.so.12 libcurand.so.10 libcufft.so.11 libnvrtc.so.12 libcudnn.so.9; do \
      ldconfig -p | grep -q "$lib" || { echo "missing $lib on the loader path" >&2; exit 1; }; \
    done
USER node
# install.sh's other steps are done (their stamps are in the app layer); this fetches the provider.
RUN INSTALL_TEST_TOOLS=0 ONNXRUNTIME_NODE_INSTALL=cuda12 bash scripts/install.sh
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
CMD ["--host", "0.0.0.0", "--device", "cuda"]
