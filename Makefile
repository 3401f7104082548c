# tritonscale — every target builds what it needs from nothing.
# The venv is made from Debian's python3.11: Triton's Python-backend stub links
# against Debian's libpython3.11, so one venv runs Triton, the adapter and the tests.
SHELL := /bin/bash
PY_SYS ?= /usr/bin/python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?=
TRACES ?= $(TRITONSCALE_TRACES)

.PHONY: help system-deps venv lock test fuzz verify lint typecheck imports demo bench clean proto

help:
	@echo "make demo   - predictive vs reactive scaling of real Triton replicas (DEMO_ARGS=...)"
	@echo "make test   - build everything from nothing and run the test suite"
	@echo "make fuzz   - the property-based tests at 100,000 cases each (long)"
	@echo "make verify - ruff, mypy, import contracts, tests"
	@echo "make bench  - run the benchmarks (figures and commands are kept in BENCHMARKS.md)"
	@echo "make lock   - re-resolve requirements/runtime.lock (the image's hashed dependencies)"

system-deps:
	@need=""; \
	[ -x $(PY_SYS) ] || need="$$need python3.11"; \
	$(PY_SYS) -c 'import ensurepip' 2>/dev/null || need="$$need python3.11-venv"; \
	command -v prometheus >/dev/null || need="$$need prometheus"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	if [ -n "$$need" ]; then \
	  echo "installing Debian packages:$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,sim,triton]'
	touch $(STAMP)

venv: $(STAMP)

# The container image installs exactly this file, with --require-hashes. It holds the
# service's runtime dependencies only (pyproject `dependencies`, no extras), resolved for
# every platform (--universal: the amd64 and arm64 wheels are all hashed) on Python 3.11.
# Run it after editing `dependencies`; LOCK_ARGS=--upgrade moves every pin to the newest
# allowed release. Keep the command as it is: the lock's header records it, and Renovate
# re-runs that header to refresh the lock.
LOCK_ARGS ?=
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	  --generate-hashes --quiet --output-file requirements/runtime.lock $(LOCK_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)


lint: $(STAMP)
	$(VENV)/bin/ruff check adapter policies loadtest tests
	$(VENV)/bin/ruff format --check adapter policies loadtest tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy adapter policies loadtest

imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

verify: lint typecheck imports test

# KEDA's external scaler: regenerate the committed gRPC code from adapter/keda/proto's proto
# (tests/keda/test_generated_code.py fails when it is out of date).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
	  adapter/keda/proto/externalscaler.proto

# Every test marked `fuzz` (hypothesis), at 100,000 cases each instead of the few hundred of
# `make test`. FUZZ_TARGETS narrows it, e.g. FUZZ_TARGETS=tests/scrape; a new property test
# joins by carrying the marker. No per-test timeout: a hang shows as a run that never ends.
FUZZ_TARGETS ?= tests
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -m fuzz -o timeout=0 -q --hypothesis-show-statistics $(FUZZ_TARGETS)

demo: $(STAMP)
	$(PY) -m loadtest.harness.demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) -m loadtest.bench.parser
	$(PY) -m loadtest.bench.api
	$(PY) -m loadtest.bench.publish --baseline
	$(PY) -m loadtest.bench.signal_lag
	$(PY) -m loadtest.bench.hostile --seconds 30 --drop-seconds 10
	$(PY) -m loadtest.bench.loadgen --quick
	$(PY) -m loadtest.simulator.evaluate --traces "$(TRACES)" --out out/sim

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
