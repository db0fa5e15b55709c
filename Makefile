# cloudpickle-rs: every target sets itself up from a fresh clone (venv, pinned packages, release build).
# `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
CARGO_TEST_CRATES := -p pickle_wire -p function_source
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help venv build build-dev system-deps test test-rust test-python demo bench fuzz integ-env lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $@

venv: $(STAMP) ## Create .venv with the pinned build and test dependencies

build: $(STAMP) ## Build the extension in release mode into .venv
	flock .build.lock maturin develop --release --quiet

build-dev: $(STAMP) ## Build the extension with the dev profile (fast edit loop)
	flock .build.lock maturin develop --quiet

system-deps: ## Debian packages the tests need: pypy3 (PyPy 3.9, the "other Python" receiver)
	@command -v pypy3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pypy3 >/dev/null; }

test-rust: system-deps ## cargo test of the pure-Rust crates
	cargo test --quiet $(CARGO_TEST_CRATES)

test-python: build ## pytest suite against the release build
	$(PY) -m pytest -q tests

test: test-rust test-python ## Everything CI runs: cargo tests, then the pytest suite on a release build

demo: build system-deps ## Run the demo
	$(PY) examples/demo.py

bench: build ## Benchmarks: us vs pickle vs cloudpickle, medians and ratios from one run
	$(PY) benches/run.py

fuzz: build ## Differential fuzzing vs stock cloudpickle, 100 000 examples (CI runs 4 000 in make test)
	$(PY) tools/fuzz_differential.py -n 100000 --jobs 2

integ-env: ## Build .venvs/integ (Dask, Ray, joblib, loky) ahead of the integration tests
	$(PY) tests/integrations/integ_env.py build

lint: ## cargo clippy and fmt check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo fmt --all --check

clean: ## Remove build products and the venv
	rm -rf target $(VENV) .build.lock

# --- Test infrastructure: loader environments and cloudpickle's own suite -----------------------
# Loader envs live in .venvs/ (stock cloudpickle, no cloudpickle_rs); tests build them on demand
# through tests/support/loaders.py, this target builds them ahead of time.
CP_CHECKOUT ?=
CP_SUITE_ARGS ?=
.PHONY: loaders cloudpickle-suite

loaders: ## Build the loader envs .venvs/{stock-cp312,stock-cp300,pypy39} (stock cloudpickle only)
	$(PYTHON) tests/support/loaders.py build

cloudpickle-suite: ## cloudpickle's own tests via a shim: make cloudpickle-suite CP_CHECKOUT=/path
	@test -n "$(CP_CHECKOUT)" || { echo "usage: make cloudpickle-suite CP_CHECKOUT=/path/to/cloudpickle-checkout [CP_SUITE_ARGS='-x -k name']"; exit 2; }
	tools/run_cloudpickle_suite.sh "$(CP_CHECKOUT)" $(CP_SUITE_ARGS)
