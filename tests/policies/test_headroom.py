"""Calibrated headroom: empirical coverage, adaptivity, and horizon matching."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from policies.headroom import QuantileHeadroom

SEED = 7


def online_coverage(
    headroom: QuantileHeadroom, forecast: float, actuals: npt.NDArray[np.float64]
) -> float:
    """Fraction of actuals below the bound computed BEFORE each actual was seen."""
    hits = 0
    trials = 0
    for actual in actuals:
        if headroom.ready:
            trials += 1
            hits += actual <= headroom.upper(forecast)
        headroom.step(forecast, float(actual))
    return hits / trials


@pytest.mark.parametrize(
    ("quantile", "noise"),
    [
        (0.9, "normal"),
        (0.95, "normal"),
        (0.95, "exponential"),  # skewed: a symmetric rule would miss
        (0.8, "lognormal"),
    ],
)
def test_coverage_is_close_to_the_quantile(quantile: float, noise: str) -> None:
    rng = np.random.default_rng(SEED)
    size = 20_000
    draws = {
        "normal": rng.normal(0.0, 5.0, size),
        "exponential": rng.exponential(5.0, size),
        "lognormal": rng.lognormal(1.0, 1.0, size),
    }[noise]
    headroom = QuantileHeadroom(quantile, horizon_steps=1, window=512)
    coverage = online_coverage(headroom, 100.0, 100.0 + draws)
    assert coverage == pytest.approx(quantile, abs=0.015)


def test_headroom_is_larger_on_bursty_than_on_smooth_traffic() -> None:
    rng = np.random.default_rng(SEED)
    smooth = QuantileHeadroom(0.95, horizon_steps=2)
    bursty = QuantileHeadroom(0.95, horizon_steps=2)
    for _ in range(1000):
        smooth.step(100.0, 100.0 + rng.normal(0.0, 2.0))
        burst = rng.exponential(150.0) if rng.random() < 0.1 else 0.0
        bursty.step(100.0, 100.0 + rng.normal(0.0, 2.0) + burst)
    assert smooth.margin() < 6.0
    assert bursty.margin() > 5 * smooth.margin()


def test_headroom_shrinks_when_traffic_calms_down() -> None:
    rng = np.random.default_rng(SEED)
    headroom = QuantileHeadroom(0.95, horizon_steps=1, window=200)
    for _ in range(400):
        headroom.step(100.0, 100.0 + rng.normal(0.0, 30.0))
    noisy = headroom.margin()
    for _ in range(400):
        headroom.step(100.0, 100.0 + rng.normal(0.0, 1.0))
    assert headroom.margin() < noisy / 10


def test_actual_is_matched_with_the_forecast_made_horizon_steps_ago() -> None:
    # The forecast made at t for t + 3 is exactly right: -(t + 3). Matching any other lag
    # would see errors of 1 or 2 and give a positive margin.
    headroom = QuantileHeadroom(0.9, horizon_steps=3, min_samples=5)
    for t in range(50):
        headroom.step(-(t + 3.0), -float(t))
    assert headroom.samples == 47
    assert headroom.margin() == 0.0
    lagged = QuantileHeadroom(0.9, horizon_steps=1, min_samples=5)
    for t in range(50):
        lagged.step(-(t + 3.0), -float(t))
    assert lagged.margin() == pytest.approx(2.0)


def test_missing_actuals_and_forecasts_are_not_errors_of_zero() -> None:
    headroom = QuantileHeadroom(0.9, horizon_steps=1, min_samples=3)
    for _ in range(10):
        headroom.step(10.0, math.nan)
    assert headroom.samples == 0
    assert not headroom.ready
    assert headroom.upper(10.0) == 10.0  # no margin before min_samples
    for _ in range(5):
        headroom.step(math.nan, 20.0)
    # Only the first actual meets a real forecast (10.0, queued by the last loop).
    assert headroom.samples == 1


def test_observe_takes_matched_pairs() -> None:
    headroom = QuantileHeadroom(0.5, horizon_steps=4, min_samples=3)
    for error in (1.0, 2.0, 3.0, 4.0, 5.0):
        headroom.observe(10.0, 10.0 + error)
    # conformal rank ceil(6 * 0.5) = 3 -> the 3rd smallest error
    assert headroom.upper(10.0) == pytest.approx(13.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quantile": 1.0, "horizon_steps": 1}, "quantile"),
        ({"quantile": 0.9, "horizon_steps": 0}, "horizon_steps"),
        ({"quantile": 0.9, "horizon_steps": 1, "window": 10, "min_samples": 20}, "min_samples"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        QuantileHeadroom(**kwargs)  # type: ignore[arg-type]
