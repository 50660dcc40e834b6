# syntax=docker/dockerfile:1
# The one image every kfp-tabular component runs in (CPU).
#
#   docker build --build-arg VERSION=0.1.0 -t kfp-tabular:0.1.0 .
#   make image          # the same with docker, or with buildah on a local Debian base where no registry is reached
#
# BASE_IMAGE is a tag because digests cannot be resolved offline. CI and Skaffold should pass a digest-pinned
# reference of the same Debian release, e.g. --build-arg BASE_IMAGE=python:3.11-slim-trixie@sha256:<digest>.
# The Debian release is named in the tag so that the apt pin below stays meaningful.
# A GPU variant (CUDA base + TensorRT) is a separate, later target.
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

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/kfp-tabular/kfp-tabular
LABEL org.opencontainers.image.title="kfp-tabular" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.description="Kubeflow Pipelines components: ingest, AutoGluon training, evaluation, SHAP, SavedModel export, TF Serving deploy"

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

COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/kfp
WORKDIR /home/kfp
USER 1000:1000

# KFP sets the command of every component; running the image by hand shows the CLI.
CMD ["kfp-tabular", "--help"]
