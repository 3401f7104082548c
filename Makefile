# tritonscale — every target builds what it needs from nothing.
# The venv is made from Debian's python3.11: Triton's Python-backend stub links
# against Debian's libpython3.11, so one venv runs Triton, the adapter and the tests.
SHELL := /bin/bash
PY_SYS ?= /usr/bin/python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help system-deps venv test verify lint typecheck imports demo bench fuzz clean

help:
	@echo "make demo   - start a local Triton, load it, run tritonscale against it"
	@echo "make test   - build everything from nothing and run the test suite"
	@echo "make verify - ruff, mypy, import contracts, tests"
	@echo "make bench  - run the benchmarks (figures and commands are kept in BENCHMARKS.md)"
	@echo "make fuzz   - property-based tests at 100,000 cases each (FUZZ_TARGETS to narrow)"

system-deps:
	@need=""; \
	[ -x $(PY_SYS) ] || need="$$need python3.11"; \
	$(PY_SYS) -c 'import ensurepip' 2>/dev/null || need="$$need python3.11-venv"; \
	command -v prometheus >/dev/null || need="$$need prometheus"; \
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

# Every test marked `fuzz` (hypothesis), at 100,000 cases each instead of the few hundred of
# `make test`. FUZZ_TARGETS narrows it, e.g. FUZZ_TARGETS=tests/scrape; a new property test
# joins by carrying the marker. No per-test timeout: a hang shows as a run that never ends.
FUZZ_TARGETS ?= tests
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -m fuzz -o timeout=0 -q --hypothesis-show-statistics $(FUZZ_TARGETS)

demo: $(STAMP)
	$(PY) -m loadtest.demo

bench: $(STAMP)
	$(PY) -m loadtest.bench_parser
	$(PY) -m loadtest.bench_api
	$(PY) -m loadtest.bench_signal_lag
	$(PY) -m loadtest.bench.hostile --seconds 30 --drop-seconds 10
	$(PY) -m loadtest.harness_bench --quick
	$(PY) -m loadtest.sim_evaluate --out out/sim

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
