"""Forecasters: convergence on synthetic series, missing data, O(1) updates, the factory."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from policies import forecast as forecast_module
from policies.forecast import (
    FORECASTER_NAMES,
    AutoSeasonal,
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
        AutoSeasonal(15.0),
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


# --- auto: Holt until a daily season is detected ----------------------------------------------

STEP = 15.0
DAY_STEPS = 5760  # 15-s steps per day


def daily_ramps(days: int, noise: float) -> npt.NDArray[np.float64]:
    """15-s rates: 50 req/s at night, 150 from 08:30 to 20:00, 30-min ramps, Gaussian noise."""
    rng = np.random.default_rng(SEED)
    hours = (np.arange(days * DAY_STEPS) * STEP / 3600.0) % 24.0
    up = np.clip((hours - 8.0) * 2.0, 0.0, 1.0)  # 08:00-08:30
    down = np.clip((hours - 20.0) * 2.0, 0.0, 1.0)  # 20:00-20:30
    series: npt.NDArray[np.float64] = 50.0 + 100.0 * (up - down) + rng.normal(0, noise, hours.size)
    return series


def test_auto_detects_a_daily_season_and_anticipates_the_ramps() -> None:
    series = daily_ramps(days=4, noise=3.0)
    auto, holt = AutoSeasonal(STEP), DampedHolt(0.5, 0.1)
    horizon = 13  # cold start 180 s + sync 15 s
    detected_at = None
    auto_errors, holt_errors, on_ramp = [], [], []
    for i, y in enumerate(series[:-horizon]):
        auto.update(float(y))
        holt.update(float(y))
        if detected_at is None and auto.period_steps is not None:
            detected_at = i
        if i >= 3 * DAY_STEPS:  # day 4
            truth = series[i + horizon]
            auto_errors.append(abs(auto.forecast(horizon).point - truth))
            holt_errors.append(abs(holt.forecast(horizon).point - truth))
            hour = (i * STEP / 3600.0) % 24.0
            on_ramp.append(7.75 <= hour <= 8.5 or 19.75 <= hour <= 20.5)
    assert auto.period_steps == DAY_STEPS
    # Two full days of history are needed (index 2 * DAY_STEPS - 1 is the last step of day 2).
    assert detected_at is not None
    assert 2 * DAY_STEPS - 1 <= detected_at < 2 * DAY_STEPS + 240
    auto_abs, holt_abs, ramp = np.array(auto_errors), np.array(holt_errors), np.array(on_ramp)
    # Measured: 3.9 vs 4.6 req/s around the ramps, 3.82 vs 3.86 over the day. Holt's own trend
    # follows a 30-min ramp well at a 195-s horizon, so the profile's gain is modest.
    assert auto_abs[ramp].mean() < 0.9 * holt_abs[ramp].mean()
    assert auto_abs.mean() <= holt_abs.mean()


def test_auto_stays_holt_on_a_one_hour_series() -> None:
    rng = np.random.default_rng(SEED)
    t = np.arange(240)  # one hour of 15-s steps, with a strong 10-min cycle
    series = 100.0 + 30.0 * np.sin(2 * np.pi * t / 40) + rng.normal(0.0, 5.0, t.size)
    auto, holt = AutoSeasonal(STEP), DampedHolt(0.5, 0.1)
    for y in series:
        auto.update(float(y))
        holt.update(float(y))
        assert auto.period_steps is None
        assert auto.forecast(5) == holt.forecast(5)


def test_auto_without_a_season_stays_holt_after_days() -> None:
    rng = np.random.default_rng(SEED)
    walk = 200.0 + np.cumsum(rng.normal(0.0, 1.0, 3 * DAY_STEPS))  # no daily cycle
    auto, holt = AutoSeasonal(STEP), DampedHolt(0.5, 0.1)
    for y in walk:
        auto.update(float(y))
        holt.update(float(y))
    assert auto.period_steps is None
    assert auto.forecast(13).point == pytest.approx(holt.forecast(13).point)


def test_auto_switch_does_not_jump_the_forecast() -> None:
    series = daily_ramps(days=3, noise=0.0)
    auto = AutoSeasonal(STEP)
    before = None
    for y in series:
        auto.update(float(y))
        if auto.period_steps is not None:
            break
        before = auto.forecast(1).point
    assert before is not None
    # Re-basing Holt's level on the new profile keeps the one-step forecast continuous.
    assert auto.forecast(1).point == pytest.approx(before, abs=5.0)


def test_auto_keeps_the_phase_across_missing_steps() -> None:
    series = daily_ramps(days=4, noise=1.0)
    with_gap = series.copy()
    gap = slice(3 * DAY_STEPS + 6 * 240, 3 * DAY_STEPS + 7 * 240)  # 06:00-07:00 on day 4 missing
    with_gap[gap] = np.nan
    auto = AutoSeasonal(STEP)
    end = 3 * DAY_STEPS + 32 * 60 - 20  # 07:55, five minutes before the morning ramp
    for y in with_gap[:end]:
        auto.update(float(y))
    assert auto.period_steps == DAY_STEPS
    # 13 steps ahead = 08:00:15, on the ramp; a one-hour phase shift would say 50 req/s.
    assert auto.forecast(13).point == pytest.approx(series[end - 1 + 13], abs=15.0)


def test_auto_update_is_amortised_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = forecast_module.detect_period

    def counting(values: npt.ArrayLike, *args: object, **kwargs: object) -> int | None:
        calls.append(len(np.asarray(values)))
        return real(values, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forecast_module, "detect_period", counting)
    auto = AutoSeasonal(STEP)
    steps = 3 * DAY_STEPS
    for y in daily_ramps(days=3, noise=1.0):
        auto.update(float(y))
    # One detection per hour (240 steps of 15 s) over a history that never exceeds its cap.
    assert len(calls) == steps // 240
    assert max(calls) <= auto.history_bins
    assert auto.history_bins == 2 * 2016 + 288  # two weeks + a day of 5-min bins


def test_make_forecaster_auto_passes_holt_parameters() -> None:
    model = make_forecaster("auto", 15.0, alpha=0.3, beta=0.0, phi=0.9, min_strength=0.5)
    assert isinstance(model, AutoSeasonal)
    assert (model.holt.alpha, model.holt.beta, model.holt.phi) == (0.3, 0.0, 0.9)
    assert model.min_strength == 0.5
    assert model.bin_steps == 20
