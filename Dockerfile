# syntax=docker/dockerfile:1
# UNTESTED: written on a host without a Docker engine; this image has never been built or run.
#
# GPU image of the retrieval service. The base is Debian 12 (Node's official image), not
# nvidia/cuda:*-ubuntu22.04: faiss-node needs libfaiss >= 1.7.3 (faiss/impl/IDSelector.h,
# Index::merge_from) and Ubuntu 22.04 ships 1.7.2, which no compat header can fix; Debian 12
# ships the static libfaiss 1.7.3 that scripts/build-faiss-node.sh is developed against.
# The CUDA 12 runtime libraries and cuDNN 9 that onnxruntime-node's CUDA provider loads come
# from NVIDIA's Debian 12 repository; the driver comes from the host (NVIDIA Container Toolkit).
# Building needs internet: Debian and NVIDIA apt, the npm registry, and NuGet (ORT CUDA provider).
#
#   docker build -t agentic-retriever .
#   docker run --gpus all -p 8000:8000 agentic-retriever        # serves the bundled demo
#   docker run --gpus all -p 8000:8000 -v /srv/e5:/models:ro -v /srv/index:/index:ro \
#     -v /srv/wiki18:/corpus:ro -v retriever-data:/data agentic-retriever \
#     --host 0.0.0.0 --device cuda --retriever_model /models/e5-base-v2/1 \
#     --index_path /index/e5_Flat.index --corpus_path /corpus/wiki-18.jsonl \
#     --sidecar_path /data/wiki-18.jsonl.offsets
FROM node:20-bookworm-slim

# Any CUDA 12 minor works with ORT's CUDA 12 build; the host driver must support CUDA 12.
ARG CUDA_PACKAGES=12-8
ARG DEBIAN_FRONTEND=noninteractive
ADD https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb /tmp/cuda-keyring.deb
# python3-faiss/numpy and chromium are only checked for by scripts/install.sh (the Python
# compatibility tests, the /docs browser test); installing them here keeps that script from
# running apt as the unprivileged user.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ libfaiss-dev libopenblas-dev liblapack-dev python3-faiss python3-numpy chromium \
      cuda-cudart-${CUDA_PACKAGES} cuda-nvrtc-${CUDA_PACKAGES} libcublas-${CUDA_PACKAGES} \
      libcufft-${CUDA_PACKAGES} libcurand-${CUDA_PACKAGES} libcudnn9-cuda-12 \
 && rm -rf /var/lib/apt/lists/* \
 && ldconfig \
 && for lib in libcudart.so.12 libcublasLt.so.12 libcublas.so.12 libcufft.so.11 libcurand.so.10 libcudnn.so.9; do \
      ldconfig -p | grep -q "$lib" || { echo "missing $lib on the loader path" >&2; exit 1; }; \
    done \
 && mkdir -p /app /models /index /corpus /data \
 && chown node:node /app /data
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /app
COPY --chown=node:node . .
USER node
# install.sh fetches the CUDA 12 provider through onnxruntime-node's own installer when this is set.
ENV ONNXRUNTIME_NODE_INSTALL=cuda12
RUN bash scripts/install.sh \
 && npm run build \
 && node dist/src/cli.js build-demo --data_dir /data

# Set only now: NODE_ENV=production would make `npm ci` above skip the TypeScript compiler.
ENV NODE_ENV=production \
    RETRIEVER_DATA_DIR=/data
VOLUME ["/models", "/index", "/corpus", "/data"]
EXPOSE 8000
# Loading a full wiki18 index takes minutes; /ready answers 200 only once it is served.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8000/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli.js", "serve"]
CMD ["--host", "0.0.0.0", "--device", "cuda"]
