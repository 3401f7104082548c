"""Warm start of the predictive stage: history replayed step by step gives the state live
steps would have given, and a warm-started series serves a warm forecast at once. "Warm" is
readiness' notion (``predictive.warm_steps`` steps fed a known rate): replayed steps count,
so a warm start that covers them makes ``/readyz`` ready, and one that does not leaves the
series cold."""

from __future__ import annotations

import math

import pytest

from adapter.config import load_config
from adapter.predictive import ARRIVAL_FORECAST, PredictiveStage, WarmReadiness
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH, Labels, WarmSample
from adapter.snapshot import SeriesPoint
from tests.support.api_support import FakeClock

T0 = 1_700_000_000.0
LABELS = {"namespace": "prod", "deployment": "llm", "model": "m"}
KEY: Labels = tuple(sorted(LABELS.items()))
GROUP: Labels = (("deployment", "llm"), ("namespace", "prod"))


WARM_STEPS = 6  # the 120 s histories below replay 8 steps of 15 s


def stage(warm_steps: int = WARM_STEPS) -> PredictiveStage:
    predictive = {
        "defaults": {"step_seconds": 15, "cold_start_seconds": 30},
        "warm_steps": warm_steps,
    }
    return PredictiveStage(load_config(None, {"predictive": predictive}).predictive)


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
    assert cold.is_warm(LABELS) is False
    assert [(c.labels, c.steps, c.needed) for c in cold.cold_series()] == [(LABELS, 0, 6)]
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


def test_readiness_waits_for_the_warm_start_and_a_warm_started_series_counts_as_warm() -> None:
    warm = stage()
    done = [False]
    ready = WarmReadiness(
        warm,
        lambda: True,
        max_wait_seconds=600,
        clock=FakeClock(now=0.0),
        warm_start_done=lambda: done[0],
    )
    warm.step(0.0, raw(120), {GROUP: 3})  # live and cold: the warm start is still reading
    reason = ready()
    assert reason == "waiting for the warm start of the forecasts from Prometheus"
    assert warm.warm_start(history(120), now_mono=0.5, now_wall=T0 + 120) == 1
    done[0] = True
    assert warm.cold_series() == () and warm.is_warm(LABELS) is True
    assert ready() is None


def test_a_warm_start_shorter_than_warm_steps_leaves_the_series_cold() -> None:
    short = stage(warm_steps=20)  # 8 replayed steps of the 20 needed
    ready = WarmReadiness(short, lambda: True, max_wait_seconds=600, clock=FakeClock(now=0.0))
    short.warm_start(history(120), now_mono=0.0, now_wall=T0 + 120)
    assert ARRIVAL_FORECAST in short.step(0.0, raw(120), {GROUP: 3})  # it forecasts already
    assert short.is_warm(LABELS) is False
    assert [(c.steps, c.needed) for c in short.cold_series()] == [(8, 20)]
    reason = ready()
    assert reason is not None and "prod/llm/m: 8 of 20 steps" in reason
