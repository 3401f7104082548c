"""Process fixtures: a live Triton (session-wide) and Prometheus launchers.

A Triton that fails to start fails the tests that need it, with the server log tail: these tests
are never skipped, because a silently skipped live test hides a broken harness.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from loadtest.harness.prometheus import PrometheusProcess, PrometheusStartError
from loadtest.harness.triton_server import DEMO_MODELS, TritonProcess, TritonStartError

PrometheusFactory = Callable[..., PrometheusProcess]

# Property-based tests (marked ``fuzz``): a few hundred cases each in the normal run, so a
# run sees a few thousand in all; ``make fuzz`` sets HYPOTHESIS_PROFILE=fuzz for 100,000
# cases per test (FUZZ_EXAMPLES overrides, for a shorter look). No deadline: a loaded CI
# machine must not turn slowness into failures (pytest-timeout catches a hang in CI).
settings.register_profile(
    "ci",
    max_examples=300,
    derandomize=True,  # the same cases every run: CI failures reproduce
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def start_triton_or_fail(process: TritonProcess) -> TritonProcess:
    """Start ``process``; on failure fail the test loudly with the server log tail."""
    try:
        process.start()
    except TritonStartError as error:
        pytest.fail(f"Triton did not start: {error}", pytrace=False)
    return process


@pytest.fixture(scope="session")
def triton() -> Iterator[TritonProcess]:
    """Triton with ``resnet`` (50 ms/batch, max batch 4) and ``bert`` (20 ms/batch, max batch 4).

    Shared by the session: tests must measure counter deltas, not absolute values, and leave the
    queue drained.
    """
    process = start_triton_or_fail(TritonProcess(DEMO_MODELS))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def prometheus_factory() -> Iterator[PrometheusFactory]:
    """``make(targets, **PrometheusProcess kwargs)``: a started Prometheus, stopped at teardown."""
    started: list[PrometheusProcess] = []

    def make(targets: Sequence[str], **kwargs: Any) -> PrometheusProcess:
        process = PrometheusProcess(targets, **kwargs)
        try:
            process.start()
        except PrometheusStartError as error:
            pytest.fail(f"Prometheus did not start: {error}", pytrace=False)
        started.append(process)
        return process

    try:
        yield make
    finally:
        for process in started:
            process.stop()
