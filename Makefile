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
.PHONY: toolchain help venv build build-dev system-deps test test-rust test-python test-versions test-future wheels senders demo bench fuzz integ-env lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements/dev.txt | toolchain
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $@

toolchain: ## The Rust toolchain rust-toolchain.toml names (1.95.0): linked to stable when that is 1.95 and rustup lacks the name
	@cd / && rustup toolchain list | grep -q '^1\.95\.0' || { \
	  v=$$(rustc +stable --version) && case "$$v" in \
	    "rustc 1.95."*) ln -sfn "$$(rustc +stable --print sysroot)" "$${RUSTUP_HOME:-$$HOME/.rustup}/toolchains/1.95.0-$$(rustc +stable -vV | sed -n 's/^host: //p')" ;; \
	    *) echo "rust-toolchain.toml pins 1.95.0 and stable is $$v: install 1.95.0" >&2; exit 1 ;; \
	  esac; }

venv: $(STAMP) ## Create .venv with the pinned build and test dependencies

build: $(STAMP) ## Build the extension in release mode into .venv
	flock .build.lock maturin develop --release --quiet

build-dev: $(STAMP) ## Build the extension with the dev profile (fast edit loop)
	flock .build.lock maturin develop --quiet

system-deps: ## Debian packages the tests need: pypy3 (PyPy 3.9, the "other Python" receiver)
	@command -v pypy3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pypy3 >/dev/null; }

test-rust: system-deps toolchain ## cargo test of the pure-Rust crates
	cargo test --quiet $(CARGO_TEST_CRATES)

test-python: build senders ## pytest suite against the release build (3.11), the version matrix included
	$(PY) -m pytest -q tests

test: lint test-rust senders test-python test-versions test-future ## Everything CI runs (lint, cargo tests, every Python version)

wheels: $(STAMP) ## One wheel per supported CPython (3.9-3.13) into dist/, rebuilt when the sources change
	$(PY) tools/versions.py wheels

senders: $(STAMP) system-deps ## .venvs/send-3.X: each version's wheel installed in a fresh venv (the matrix's senders)
	$(PY) tools/versions.py senders

test-versions: senders ## The pytest suite on the 3.9, 3.10, 3.12 and 3.13 wheels (3.11: test-python), 2 at a time
	$(PY) tools/versions.py suite

test-future: $(STAMP) ## cargo check + clippy of the extension for CPython 3.14, 3.14t (free-threaded) and 3.15 (no interpreter)
	$(PY) tools/versions.py future

demo: build system-deps ## Run the demo
	$(PY) examples/demo.py

bench: build ## Benchmarks: us vs pickle vs cloudpickle, medians and ratios from one run; then isolate's
	$(PY) benches/run.py
	$(PY) benches/isolate_bench.py

fuzz: build ## Differential fuzzing vs stock cloudpickle, 100 000 examples (CI runs 4 000 in make test)
	$(PY) tools/fuzz_differential.py -n 100000 --jobs 2

integ-env: ## Build .venvs/integ (Dask, Ray, joblib, loky) ahead of the integration tests
	$(PY) tests/integrations/integ_env.py build

lint: $(STAMP) ## cargo clippy and fmt check (clippy needs the venv's python for pyo3), the crate's import-cycle ratchet
	cargo clippy --quiet --workspace --all-targets -- -D warnings
	cargo fmt --all --check
	$(PYTHON) tools/import_graph.py --check

clean: ## Remove build products and the venv
	rm -rf target dist $(VENV) .build.lock

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
