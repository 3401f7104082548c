"""Sizing formula and burst guard."""

from __future__ import annotations

import math

import pytest

from policies.burst import BurstGuard
from policies.sizing import SizingParams, replicas_for_load

SIZING = SizingParams(capacity_rps=10.0, slo_seconds=1.0, min_replicas=1, max_replicas=50)


@pytest.mark.parametrize(
    ("rate", "backlog", "slo", "drain", "want"),
    [
        (100.0, 0.0, 1.0, None, 10.0),  # rate / capacity
        (0.0, 50.0, 1.0, None, 5.0),  # backlog drained within the SLO
        (100.0, 50.0, 2.0, None, 12.5),  # 10 + 50 / (10 * 2)
        (100.0, 50.0, 1.0, 5.0, 11.0),  # drain time overrides the SLO (policy: max(SLO, step))
        (100.0, math.nan, 1.0, None, 10.0),  # unknown backlog: rate only
        (-5.0, -5.0, 1.0, None, 0.0),  # negative inputs count as 0
    ],
)
def test_replicas_for_load(
    rate: float, backlog: float, slo: float, drain: float | None, want: float
) -> None:
    params = SizingParams(capacity_rps=10.0, slo_seconds=slo, min_replicas=1, max_replicas=50)
    assert replicas_for_load(rate, backlog, params, drain) == pytest.approx(want)


def test_replicas_for_load_refuses_an_unknown_rate() -> None:
    with pytest.raises(ValueError, match="arrival_rate"):
        replicas_for_load(math.nan, 0.0, SIZING)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"capacity_rps": 0.0, "slo_seconds": 1.0, "min_replicas": 1, "max_replicas": 2},
            "capacity_rps",
        ),
        (
            {"capacity_rps": 1.0, "slo_seconds": -1.0, "min_replicas": 1, "max_replicas": 2},
            "slo_seconds",
        ),
        (
            {"capacity_rps": 1.0, "slo_seconds": 1.0, "min_replicas": 5, "max_replicas": 2},
            "max_replicas",
        ),
    ],
)
def test_sizing_params_validation_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SizingParams(**kwargs)  # type: ignore[arg-type]


# --- burst guard ------------------------------------------------------------------------------


def test_burst_guard_enters_above_factor_and_holds() -> None:
    guard = BurstGuard(panic_factor=2.0, hold_steps=2)
    assert guard.update(19.0, 10.0) is False  # below 2x
    assert guard.update(20.0, 10.0) is False  # strictly above is required
    assert guard.update(21.0, 10.0) is True  # trigger
    assert [guard.update(1.0, 10.0) for _ in range(3)] == [True, True, False]


def test_burst_guard_retrigger_extends_and_nan_never_triggers() -> None:
    guard = BurstGuard(panic_factor=2.0, hold_steps=1)
    assert guard.update(math.nan, 0.0) is False
    assert guard.update(50.0, 10.0) is True
    assert guard.update(50.0, 10.0) is True  # extends
    assert guard.update(math.nan, 10.0) is True  # hold counts down
    assert guard.update(math.nan, 10.0) is False
