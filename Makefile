# kfp-tabular: the README's two commands are `make demo` and `make test`; both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-long lint compile bench lock clean image test-image

$(STAMP): requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

## demo: set up, run the whole pipeline locally on the bundled penguins table, publish, serve one prediction
demo: $(STAMP)
	$(BIN)/kfp-tabular run --data builtin://penguins --label species --output local_outputs --serve

## test: set up, lint, then run every test (unit, S3, contract, manifests, local pipeline, notebooks)
test: $(STAMP) lint
	$(BIN)/python -m pytest -q --timeout=900 --ignore=tests/deploy --ignore=tests/image
	# The deploy suite (cluster double, real processes) runs in a process of its own: after it, TensorFlow in the
	# same process failed to build the tiny test SavedModel (autograph state; cause still open).
	$(BIN)/python -m pytest -q --timeout=900 tests/deploy

## test-fast: everything except the slow AutoGluon fits and whole-pipeline runs
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

## test-long: the long property-based run (80 random tables through ingest -> train -> export -> predict)
test-long: $(STAMP)
	$(BIN)/python -m pytest -q --runlong -m long --timeout=0

lint: $(STAMP)
	$(BIN)/ruff check .

compile: $(STAMP)
	$(BIN)/kfp-tabular compile --output dist/tabular_training.yaml

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/export.py
	$(BIN)/python benchmarks/explain.py
	$(BIN)/python benchmarks/local_run.py

## image: build the component (CPU) image, the Dockerfile's runtime target (`--target gpu` is the GPU variant):
## `docker build` where a Docker engine runs, else `buildah bud` on a local
## Debian stand-in for the python:3.11-slim base (no registry is reached here). BASE_IMAGE=<ref> overrides the base
## (with LIBGOMP1_VERSION=<its release's pin> when that is not trixie).
IMAGE_VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE           ?= localhost/kfp-tabular:$(IMAGE_VERSION)
LOCAL_BASE      := localhost/kfp-tabular-base:python3.11-bookworm
BASE_IMAGE      ?=
LIBGOMP1_VERSION ?=
# overlay needs a kernel overlay mount (works on these machines); BUILDAH_STORAGE=vfs works anywhere, slower.
BUILDAH_STORAGE ?= overlay
export BUILDAH_STORAGE
# The host's CA bundle, mounted as a build secret for pip only (some egress proxies re-sign TLS); never in a layer.
CA_BUNDLE       ?= $(firstword $(wildcard $(PIP_CERT) /etc/ssl/certs/ca-certificates.crt))
BUILD_ARGS       = --build-arg VERSION=$(IMAGE_VERSION) $(if $(CA_BUNDLE),--secret id=ca_bundle$(comma)src=$(CA_BUNDLE))
comma := ,
image:
	@if docker info >/dev/null 2>&1; then \
	    set -x; DOCKER_BUILDKIT=1 docker build --target runtime $(BUILD_ARGS) \
	        $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	        $(if $(LIBGOMP1_VERSION),--build-arg LIBGOMP1_VERSION=$(LIBGOMP1_VERSION)) -t $(IMAGE) . ; \
	else \
	    set -e; \
	    if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null; \
	    fi; \
	    $(if $(BASE_IMAGE),,scripts/build-base-image.sh $(LOCAL_BASE);) \
	    set -x; buildah --storage-driver $(BUILDAH_STORAGE) bud --isolation chroot --layers --target runtime $(BUILD_ARGS) \
	        $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE),--pull-never --build-arg BASE_IMAGE=$(LOCAL_BASE)) \
	        --build-arg LIBGOMP1_VERSION='$(or $(LIBGOMP1_VERSION),$(if $(BASE_IMAGE),14.2.*,12.2.*))' -t $(IMAGE) . ; \
	    buildah --storage-driver $(BUILDAH_STORAGE) images $(IMAGE); \
	fi

## test-image: build the image, then run the compiled pipeline's ingest_data and train_autogluon steps inside it
## (buildah run, network off) and check user, pip check, CLI, size and that nothing of the build is left in it.
## Measured on this 2-core machine (2026-12-02, overlay storage): from a clean state (no buildah storage, no base
## image; .venv present) 5 min 25 s (debootstrap ~1 min, pip install of the lock ~2.5 min, tests 12 s); after a
## source edit 3 min 7 s (the dependency layer is cached); image 3.65 GB. With `make test` (~13 min) CI needs ~19 min of 90.
test-image: $(STAMP) image
	KFP_TABULAR_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q --timeout=1800 -p no:cacheprovider tests/image

## lock: re-resolve the pinned runtime (image) and dev (tests) requirements from pyproject.toml
lock: $(STAMP)
	$(BIN)/python scripts/lock.py

clean:
	rm -rf $(VENV) dist local_outputs .pytest_cache .ruff_cache
