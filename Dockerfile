# syntax=docker/dockerfile:1
# The one image every kfp-tabular component runs in (CPU).
#
#   docker build --build-arg VERSION=0.1.0 -t kfp-tabular:0.1.0 .
#   make image          # the same with docker, or with buildah on a local Debian base where no registry is reached
#
# BASE_IMAGE is a tag because digests cannot be resolved offline. CI and Skaffold should pass a digest-pinned
# reference of the same Debian release, e.g. --build-arg BASE_IMAGE=python:3.11-slim-trixie@sha256:<digest>.
# The Debian release is named in the tag so that the apt pin below stays meaningful.
# `--target gpu` builds the GPU variant for optimize_tensorrt (see the gpu stage); the default target is the CPU
# image and does not change.
ARG BASE_IMAGE=python:3.11-slim-trixie

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first: editing the source must not reinstall TensorFlow and AutoGluon. requirements.lock holds
# exact pins of the runtime dependencies, without the project itself (`make lock` writes it).
# A machine whose egress re-signs TLS passes its CA bundle as the build secret `ca_bundle` (`make image` passes
# the host's): it is mounted for this step only and never stored in a layer. Without it pip trusts its certifi.
COPY requirements.lock ./
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
# --no-deps: everything was pinned above; pip check fails the build if the lock misses a dependency.
# --no-build-isolation: the build backend (setuptools, wheel) is pinned in the lock too, so this step needs no
# network and a source edit rebuilds offline.
RUN pip install --no-cache-dir --no-build-isolation --no-deps . \
    && pip check

# GPU variant: the same venv on the same Python base, plus TensorRT and the CUDA user-space runtime as NVIDIA's
# wheels (the GPU driver comes from the node through the NVIDIA container toolkit). A CUDA base image would
# carry another Python than the one the venv was built with, so the CUDA runtime comes as wheels instead.
# TensorRT's builder wheels are not on PyPI (the `tensorrt-cu12` there is a stub that downloads from NVIDIA at
# install time), so the step needs NVIDIA's index: TENSORRT_INDEX_URL. Pin TENSORRT_VERSION to the TensorRT
# inside the Triton image of manifests/overlays/gpu (an engine runs only on the TensorRT that built it).
#   docker build --target gpu --build-arg VERSION=0.1.0 -t kfp-tabular:0.1.0-gpu .
FROM ${BASE_IMAGE} AS gpu-builder
ARG TENSORRT_VERSION=10.8.0.43
ARG TENSORRT_INDEX_URL=https://pypi.nvidia.com
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && pip install --no-cache-dir --extra-index-url "${TENSORRT_INDEX_URL}" \
        "tensorrt-cu12==${TENSORRT_VERSION}" "cuda-python>=12,<13" \
    && pip check

# What both final images share: the OpenMP runtime, the unprivileged user and the environment.
FROM ${BASE_IMAGE} AS base
# LightGBM loads OpenMP (libgomp) when it is imported. 14.2.* is Debian 13 (trixie)'s GCC runtime: the pin
# allows security updates but fails loudly if BASE_IMAGE moves to another Debian release. It is an argument so
# that another base of a named release can say its own (the local bookworm stand-in built by
# scripts/build-base-image.sh passes LIBGOMP1_VERSION=12.2.*; `make image` does that).
ARG LIBGOMP1_VERSION=14.2.*
RUN apt-get update \
    && apt-get install -y --no-install-recommends "libgomp1=${LIBGOMP1_VERSION}" \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 kfp \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/kfp --shell /usr/sbin/nologin kfp
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/kfp
WORKDIR /home/kfp
# KFP sets the command of every component; running the image by hand shows the CLI.
CMD ["kfp-tabular", "--help"]

FROM base AS gpu
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/kfp-tabular/kfp-tabular
LABEL org.opencontainers.image.title="kfp-tabular-gpu" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="kfp-tabular with TensorRT, for optimize_tensorrt on a GPU node"
COPY --from=gpu-builder /opt/venv /opt/venv
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 1000:1000

# The default target (last stage): the CPU image every other step runs in.
FROM base AS runtime
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/kfp-tabular/kfp-tabular
LABEL org.opencontainers.image.title="kfp-tabular" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="Kubeflow Pipelines components: ingest, AutoGluon training, evaluation, SHAP, SavedModel export, TF Serving deploy"
COPY --from=builder /opt/venv /opt/venv
USER 1000:1000
