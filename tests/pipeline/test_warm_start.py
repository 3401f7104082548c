"""Warm start of the predictive stage: history replayed step by step gives the state live
steps would have given, and a warm-started series serves a warm forecast at once."""

from __future__ import annotations

import math

import pytest

from adapter.config import load_config
from adapter.predictive import ARRIVAL_FORECAST, PredictiveStage
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH, Labels, WarmSample
from adapter.snapshot import SeriesPoint

T0 = 1_700_000_000.0
LABELS = {"namespace": "prod", "deployment": "llm", "model": "m"}
KEY: Labels = tuple(sorted(LABELS.items()))
GROUP: Labels = (("deployment", "llm"), ("namespace", "prod"))


def stage() -> PredictiveStage:
    config = load_config(
        None, {"predictive": {"defaults": {"step_seconds": 15, "cold_start_seconds": 30}}}
    )
    return PredictiveStage(config.predictive)


def rate(t: int) -> float:
    """A ramp with a wobble, so level, trend and errors all matter."""
    return 10.0 + 0.5 * t + (3.0 if t % 7 == 0 else 0.0)


def raw(t: int) -> dict[str, list[SeriesPoint]]:
    return {
        ARRIVAL_RATE: [SeriesPoint(LABELS, rate(t), T0 + t)],
        QUEUE_DEPTH: [SeriesPoint(LABELS, 2.0, T0 + t)],
    }


def live_stage(seconds: int) -> tuple[PredictiveStage, dict[str, list[SeriesPoint]]]:
    live = stage()
    out: dict[str, list[SeriesPoint]] = {}
    for t in range(seconds + 1):
        out = live.step(float(t), raw(t), {GROUP: 3})
    return live, out


def history(seconds: int) -> dict[Labels, list[WarmSample]]:
    return {KEY: [WarmSample(T0 + t, rate(t), 2.0, 3) for t in range(seconds + 1)]}


def test_replayed_history_reproduces_the_live_state() -> None:
    live, live_out = live_stage(120)
    warm = stage()
    assert warm.warm_start(history(120), now_mono=120.0, now_wall=T0 + 120) == 1
    warm_out = warm.step(120.0, raw(120), {GROUP: 3})
    (live_forecast,) = live_out[ARRIVAL_FORECAST]
    (warm_forecast,) = warm_out[ARRIVAL_FORECAST]
    assert warm_forecast.value == pytest.approx(live_forecast.value, rel=1e-9)
    (live_check,) = live.forecast_checks()
    (warm_check,) = warm.forecast_checks()
    assert (warm_check.checks, warm_check.misses) == (live_check.checks, live_check.misses)
    assert warm.is_warm(LABELS) is live.is_warm(LABELS) is True


def test_a_cold_stage_serves_no_forecast_until_it_steps_and_a_warm_one_does() -> None:
    cold, warm = stage(), stage()
    warm.warm_start(history(120), now_mono=0.0, now_wall=T0 + 120)
    assert cold.step(0.0, raw(120), {GROUP: 3}) == {}
    assert cold.is_warm(LABELS) is False and cold.cold_series() == (LABELS,)
    assert ARRIVAL_FORECAST in warm.step(0.0, raw(120), {GROUP: 3})
    assert warm.is_warm(LABELS) is True and warm.cold_series() == ()


def test_a_warm_state_waits_for_its_series_and_replaces_only_a_cold_one() -> None:
    warm = stage()
    warm.warm_start(history(120), now_mono=0.0, now_wall=T0 + 120)
    assert warm.step(0.0, {}, {}) == {}  # not live yet: kept, not dropped
    assert warm.is_warm(LABELS) is None
    assert ARRIVAL_FORECAST in warm.step(1.0, raw(121), {GROUP: 3})

    live, _ = live_stage(120)
    before = live.step(121.0, raw(121), {GROUP: 3})[ARRIVAL_FORECAST][0].value
    flat = {KEY: [WarmSample(T0 + t, 500.0, 0.0, 3) for t in range(121)]}
    assert live.warm_start(flat, now_mono=121.0, now_wall=T0 + 121) == 0  # already warm
    assert live.step(121.5, raw(121), {GROUP: 3})[ARRIVAL_FORECAST][0].value == before


def test_gaps_in_the_history_are_missing_steps_not_zeros() -> None:
    checks = {}
    for name, samples in (
        ("full", history(120)[KEY]),
        ("gappy", [s for s in history(120)[KEY] if not 30 <= s.wall - T0 < 75]),
    ):
        warm = stage()
        warm.warm_start({KEY: samples}, now_mono=0.0, now_wall=T0 + 120)
        forecast = warm.step(0.0, raw(120), {GROUP: 3})[ARRIVAL_FORECAST][0].value
        assert math.isfinite(forecast) and forecast > 0
        (check,) = warm.forecast_checks()
        checks[name] = check.checks
    # the steps ending at 45 and 60 s had no rate: not scored, not taught a 0
    assert checks["gappy"] < checks["full"]
