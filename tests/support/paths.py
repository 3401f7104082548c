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
DCGM_NODE_A = FIXTURES / "dcgm-exporter-node-a-4xL4-pods.metrics.txt"
"""Node a: 4 L4s; two pods of triton-llm, another team's training pod, one idle GPU."""
DCGM_NODE_B = FIXTURES / "dcgm-exporter-node-b-4xA100-mig-timeslice.metrics.txt"
"""Node b: 4 A100s; GPU 0 in MIG mode (one 3g.40gb instance for triton-llm, one for
triton-embed), GPU 1 time-sliced by two triton-embed pods and another team's notebook, another
team's training pod, one idle GPU."""

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
