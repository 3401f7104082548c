"""Forecasters: convergence on synthetic series, missing data, O(1) updates, the factory."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from policies.forecast import (
    FORECASTER_NAMES,
    DampedHolt,
    Ewma,
    Forecaster,
    HoltWinters,
    LastValue,
    LinearRegression,
    detect_period,
    make_forecaster,
)

SEED = 20240601


def all_forecasters() -> list[Forecaster]:
    return [
        LastValue(),
        Ewma(0.3),
        DampedHolt(0.5, 0.1),
        HoltWinters(0.3, 0.05, 0.2, period_steps=12),
        LinearRegression(30),
    ]


@pytest.mark.parametrize("forecaster", all_forecasters(), ids=lambda f: type(f).__name__)
def test_converges_on_a_constant_series(forecaster: Forecaster) -> None:
    for _ in range(200):
        forecaster.update(42.0)
    assert forecaster.ready
    result = forecaster.forecast(8)
    assert result.point == pytest.approx(42.0, abs=1e-6)
    assert result.upper >= result.point


@pytest.mark.parametrize(
    "forecaster",
    [DampedHolt(0.5, 0.3, phi=1.0), LinearRegression(40)],
    ids=lambda f: type(f).__name__,
)
def test_trend_models_extrapolate_a_line(forecaster: Forecaster) -> None:
    for t in range(300):
        forecaster.update(5.0 + 0.5 * t)
    # Truth 10 steps after the last observation (t = 299).
    assert forecaster.forecast(10).point == pytest.approx(5.0 + 0.5 * 309, rel=1e-3)


def test_level_models_lag_a_line_and_holt_does_not() -> None:
    holt, ewma = DampedHolt(0.5, 0.3, phi=1.0), Ewma(0.3)
    for t in range(300):
        holt.update(float(t))
        ewma.update(float(t))
    truth = 309.0
    assert abs(holt.forecast(10).point - truth) < 1.0
    assert truth - ewma.forecast(10).point > 10.0


def seasonal_series(periods: int, period: int, noise: float) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(SEED)
    t = np.arange(periods * period)
    series: npt.NDArray[np.float64] = (
        100.0 + 40.0 * np.sin(2 * np.pi * t / period) + rng.normal(0.0, noise, t.size)
    )
    return series


def mean_abs_error(
    forecaster: Forecaster, series: npt.NDArray[np.float64], horizon: int, skip: int
) -> float:
    errors = []
    for i, y in enumerate(series[:-horizon]):
        forecaster.update(float(y))
        if i >= skip:
            errors.append(abs(forecaster.forecast(horizon).point - series[i + horizon]))
    return float(np.mean(errors))


def test_holt_winters_learns_the_season_better_than_holt() -> None:
    series = seasonal_series(periods=20, period=24, noise=2.0)
    hw_error = mean_abs_error(HoltWinters(0.2, 0.01, 0.3, period_steps=24), series, 6, 24 * 10)
    holt_error = mean_abs_error(DampedHolt(0.5, 0.1), series, 6, 24 * 10)
    assert hw_error < 4.0  # noise sd is 2
    assert hw_error < holt_error / 3


def test_holt_winters_keeps_the_phase_across_missing_steps() -> None:
    series = seasonal_series(periods=12, period=24, noise=0.5)
    with_gaps = series.copy()
    with_gaps[200:210] = np.nan  # ten missing steps must not shift the season
    model = HoltWinters(0.2, 0.01, 0.3, period_steps=24)
    for y in with_gaps[:-6]:
        model.update(float(y))
    assert model.forecast(6).point == pytest.approx(series[-1], abs=3.0)


@pytest.mark.parametrize("forecaster", all_forecasters(), ids=lambda f: type(f).__name__)
def test_nan_is_skipped_not_zero(forecaster: Forecaster) -> None:
    for _ in range(100):
        forecaster.update(50.0)
    before = forecaster.forecast(4)
    for _ in range(3):
        forecaster.update(math.nan)
    after = forecaster.forecast(4)
    assert after.point == pytest.approx(before.point, abs=1e-6)
    assert after.point > 40.0


def test_forecasts_are_clamped_at_zero() -> None:
    model = LinearRegression(20)
    for t in range(20):
        model.update(100.0 - 10.0 * t)
    result = model.forecast(50)
    assert result.point == 0.0
    assert result.upper >= 0.0


def test_linear_regression_matches_numpy_polyfit_after_many_updates() -> None:
    rng = np.random.default_rng(SEED)
    window = 50
    model = LinearRegression(window)
    values = rng.normal(10.0, 3.0, 1037) + 0.01 * np.arange(1037)
    values[rng.choice(1037, 100, replace=False)] = np.nan
    for y in values:
        model.update(float(y))
    tail = values[-window:]
    x = np.arange(-(window - 1), 1, dtype=float)
    keep = np.isfinite(tail)
    slope, intercept = np.polyfit(x[keep], tail[keep], 1)
    assert model.forecast(7).point == pytest.approx(intercept + slope * 7, rel=1e-9)


def test_linear_regression_upper_is_a_prediction_bound() -> None:
    rng = np.random.default_rng(SEED)
    model = LinearRegression(200)
    covered = 0
    trials = 0
    series = 50.0 + rng.normal(0.0, 5.0, 3000)
    for i, y in enumerate(series[:-1]):
        model.update(float(y))
        if i > 200:
            trials += 1
            covered += series[i + 1] <= model.forecast(1).upper
    assert 0.92 <= covered / trials <= 0.98  # a one-sided 95 % bound


def test_detect_period_finds_the_season() -> None:
    series = seasonal_series(periods=10, period=24, noise=5.0)
    assert detect_period(series, [10, 24, 37]) == 24


def test_detect_period_returns_none_on_noise() -> None:
    noise = np.random.default_rng(SEED).normal(0.0, 1.0, 500)
    assert detect_period(noise, [10, 24, 37]) is None


def test_detect_period_ignores_nans() -> None:
    series = seasonal_series(periods=10, period=24, noise=1.0)
    series[::7] = np.nan
    assert detect_period(series, [10, 24, 37]) == 24


def test_make_forecaster_converts_seconds_to_steps() -> None:
    model = make_forecaster("linear", 15.0, window_seconds=60)
    assert isinstance(model, LinearRegression)
    assert model.window_steps == 4
    seasonal = make_forecaster("holt-winters", 15.0, period_seconds=3600)
    assert isinstance(seasonal, HoltWinters)
    assert seasonal.period_steps == 240


@pytest.mark.parametrize("name", FORECASTER_NAMES)
def test_make_forecaster_knows_every_name(name: str) -> None:
    params = {"period_steps": 4} if name == "holt-winters" else {}
    model = make_forecaster(name, 15.0, **params)
    for _ in range(10):
        model.update(3.0)
    assert model.forecast(2).point == pytest.approx(3.0, abs=1e-6)


def test_make_forecaster_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="valid names: last, ewma, holt, holt-winters, linear"):
        make_forecaster("arima", 15.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        make_forecaster("ewma", 15.0, alpha=0.2, gamma=0.1)
    with pytest.raises(ValueError, match="period_steps or period_seconds"):
        make_forecaster("holt-winters", 15.0)
    with pytest.raises(ValueError, match="alpha"):
        Ewma(1.5)
