# syntax=docker/dockerfile:1
# The rmserve image, in two variants (README, "Deployment"):
#   docker build -t rmserve:0.1.0-cpu .                            python:3.12-slim, torch's CPU wheel, ONNX Runtime
#   docker build --build-arg VARIANT=gpu -t rmserve:0.1.0-gpu .    CUDA 13 + cuDNN 9 runtime, torch's CUDA wheel, the gpu extra
# The model store is /models (RMSERVE_STORE): mount one there, or keep the demo model baked in at build
# time (BUILD_DEMO=true, the default; about 2½ minutes of CPU training).
# Both base images are build arguments. CI (.ci/build-image) builds with buildah, from a Debian
# bookworm base made with debootstrap (its python3 is 3.11, as is the CPU wheel of torch that can be
# installed there) and pip given only a local wheelhouse: PIP_NO_INDEX=1, PIP_FIND_LINKS=<mounted dir>.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# torch 2.13.0's default wheel and onnxruntime-gpu are built for CUDA 13 and cuDNN 9.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# The wheel (pure Python: one builder for both variants). pip from a venv, as a Debian base's python3
# has none. pip's own settings as build arguments, for builds without an index (see above).
FROM ${PYTHON_IMAGE} AS builder
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY model_store ./model_store
COPY rmserve_client ./rmserve_client
COPY rmserve_train ./rmserve_train
RUN python3 -m venv /tmp/build \
    && /tmp/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Python (3.12 in the default images) and tini (PID 1: forwards SIGTERM to the server, reaps
# children) on each base.
FROM ${PYTHON_IMAGE} AS base-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_IMAGE} AS base-gpu
# Ubuntu 24.04's python3 is 3.12. Unpinned: the base image tag fixes the release, and pins of Ubuntu
# package versions break with each security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv tini \
    && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="rmserve" \
      org.opencontainers.image.description="Reward-model scoring service: rewards for (prompt, response) pairs over HTTP and gRPC"
ARG TORCH_VERSION=2.13.0
ARG BUILD_DEMO=true
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
# Hugging Face's cache under /tmp, the one writable place with a read-only root filesystem (the chart's);
# no progress bars, which would break the JSON log lines; bind every address, not just loopback.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/tmp/huggingface \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    RMSERVE_HOST=0.0.0.0 \
    RMSERVE_STORE=/models

# torch first, pinned (as .ci/setup does): the project's torch>=2.4 then keeps it. The CPU variant
# takes the CPU wheel, not PyPI's multi-GB CUDA build; the GPU variant adds the gpu extra
# (onnxruntime-gpu) where the CPU one has the onnx extra. (With PIP_NO_INDEX, pip ignores the index
# URL and takes torch from the wheelhouse.)
SHELL ["/bin/sh", "-eu", "-c"]
RUN python3 -m venv /opt/venv \
    && if [ "$VARIANT" = gpu ]; then \
         pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
       else \
         pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
       fi
COPY --from=builder /wheels /wheels
# The local wheel is this build's version, with the server extra and the backend's; its dependencies
# keep the ranges of pyproject.toml.
# hadolint ignore=DL3013
RUN extra=onnx; [ "$VARIANT" != gpu ] || extra=gpu; set -- /wheels/rmserve-*.whl; \
    pip install --no-cache-dir "$1[server,$extra]" \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 rmserve \
    && useradd --system --uid 10001 --gid rmserve --home-dir /home/rmserve --create-home rmserve \
    && install -d -o rmserve -g rmserve /models

WORKDIR /home/rmserve
# Numeric, so that Kubernetes can check runAsNonRoot.
USER 10001:10001
# The demo model, trained into the store (CPU, deterministic); build with BUILD_DEMO=false for an
# image that serves only models mounted at /models.
RUN if [ "$BUILD_DEMO" = true ]; then rmserve models build-demo; fi

# HTTP (API, /healthz, /readyz, /metrics) and gRPC.
EXPOSE 8000 50051
# /healthz answers once the server listens: after the models' checksums are verified (and the demo
# model is trained, if it is missing), hence the start period. Python, as slim images have no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RMSERVE_PORT', '8000'), timeout=4)"]
# Exec form: tini, then the server, no shell; arguments to `docker run IMAGE ...` are serve flags.
ENTRYPOINT ["tini", "--", "rmserve", "serve"]
CMD []
