# syntax=docker/dockerfile:1
# The one image every kfp-tabular component runs in (CPU).
#
#   docker build --build-arg VERSION=0.1.0 -t kfp-tabular:0.1.0 .
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
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
# --no-deps: everything was pinned above; pip check fails the build if the lock misses a dependency.
RUN pip install --no-cache-dir --no-deps . \
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
# allows security updates but fails loudly if BASE_IMAGE moves to another Debian release.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1=14.2.* \
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
