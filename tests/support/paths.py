"""Where the tests find the repository, its test data and (optionally) the full traces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = REPO_ROOT / "tests" / "data"
SIM_DATA = TEST_DATA / "sim"
FIXTURES = TEST_DATA / "fixtures"
TRITON_FIXTURE = FIXTURES / "triton-2.51-cpu-two-models-under-load.metrics.txt"
DCGM_FIXTURE = FIXTURES / "dcgm-exporter-L4-idle.metrics.txt"

TRACES_ENV = "TRITONSCALE_TRACES"
"""A directory holding the full public traces (tests/data/README.md lists them)."""


def full_trace(name: str) -> Path:
    """The full trace ``name`` from ``$TRITONSCALE_TRACES``; skips the test, naming the variable
    and the file, when it is not there (a plain clone ships only slices)."""
    directory = os.environ.get(TRACES_ENV)
    if not directory:
        pytest.skip(f"set {TRACES_ENV} to a directory holding {name} to run this test")
    path = Path(directory) / name
    if not path.exists():
        pytest.skip(f"{TRACES_ENV}={directory} holds no {name}")
    return path
