# kfp-tabular: the README's two commands are `make demo` and `make test`; both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast test-long lint compile bench lock clean

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
	$(BIN)/python -m pytest -q --timeout=900 --ignore=tests/deploy
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

## lock: re-resolve the pinned runtime (image) and dev (tests) requirements from pyproject.toml
lock: $(STAMP)
	$(BIN)/python scripts/lock.py

clean:
	rm -rf $(VENV) dist local_outputs .pytest_cache .ruff_cache
