"""Readiness waits for warm forecasts, with a bound: "warm" is a number of steps fed a known
arrival rate; a warm-started series counts its history; targets down or idle never hold a
pod out of the Service past the bound; steps fall on wall-clock multiples so replicas agree."""

from __future__ import annotations

import math
from collections.abc import Mapping

from adapter.config import PredictiveConfig, load_config
from adapter.predictive import (
    ARRIVAL_FORECAST,
    PredictiveStage,
    WarmReadiness,
)
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH
from adapter.snapshot import SeriesPoint
from tests.support.api_support import FakeClock

LLM = {"namespace": "prod", "deployment": "triton-llm", "model": "resnet"}
BERT = {"namespace": "prod", "deployment": "triton-bert", "model": "bert"}


def settings(**predictive: object) -> PredictiveConfig:
    defaults = {"step_seconds": 1.0, "cold_start_seconds": 2.0, "hpa_sync_period_seconds": 1.0}
    return load_config(None, {"predictive": {"defaults": defaults, **predictive}}).predictive


def raw(now: float, *series: tuple[Mapping[str, str], float]) -> dict[str, list[SeriesPoint]]:
    """This pass's raw signals: each series' arrival rate (NaN: unknown) and a queue depth."""
    out: dict[str, list[SeriesPoint]] = {ARRIVAL_RATE: [], QUEUE_DEPTH: []}
    for labels, rate in series:
        if not math.isnan(rate):
            out[ARRIVAL_RATE].append(SeriesPoint(labels, rate, now))
        out[QUEUE_DEPTH].append(SeriesPoint(labels, 2.0, now))
    return out


def run(
    stage: PredictiveStage,
    start: float,
    seconds: float,
    *series: tuple[Mapping[str, str], float],
    every: float = 0.25,
) -> float:
    now = start
    while now < start + seconds:
        stage.step(now, raw(now, *series), {})
        now += every
    return now


def test_the_default_warmth_is_the_horizon_plus_the_headroom_samples() -> None:
    stage = PredictiveStage(settings())
    policy = stage.policy_for(LLM)
    # horizon = cold start 2 s + HPA sync 1 s = 3 steps of 1 s; the headroom needs 20 errors
    assert stage.warm_steps(policy) == 3 + 20
    assert PredictiveStage(settings(warm_steps=5)).warm_steps(policy) == 5


def test_readiness_waits_for_every_series_to_be_warm_then_stays_ready() -> None:
    clock = FakeClock(now=0.0)
    stage = PredictiveStage(settings(warm_steps=4))
    seen = [False]
    ready = WarmReadiness(stage, lambda: seen[0], max_wait_seconds=600, clock=clock)
    assert ready() == "waiting for the first scrape of every target"
    seen[0] = True
    now = run(stage, 0.0, 1.5, (LLM, 10.0), (BERT, 0.0))  # idle traffic is a known rate
    reason = ready()
    assert reason is not None and "2 of 2 forecasts not warm yet" in reason
    assert "prod/triton-llm/resnet: 1 of 4 steps" in reason
    now = run(stage, now, 3.0, (LLM, 10.0), (BERT, 0.0))
    assert stage.cold_series() == ()
    assert ready() is None
    # a Deployment that appears later is as cold on every replica: the pod stays Ready
    run(stage, now, 1.0, (LLM, 10.0), (BERT, 0.0), ({**LLM, "deployment": "new"}, 5.0))
    assert len(stage.cold_series()) == 1
    assert ready() is None


def test_steps_without_a_known_rate_do_not_warm_and_the_wait_is_bounded() -> None:
    clock = FakeClock(now=0.0)
    stage = PredictiveStage(settings(warm_steps=4))
    ready = WarmReadiness(stage, lambda: True, max_wait_seconds=30, clock=clock)
    run(stage, 0.0, 20.0, (LLM, math.nan))  # e.g. completions never counted
    assert [c.steps for c in stage.cold_series()] == [0]
    clock.now = 29.0
    assert ready() is not None
    clock.now = 30.0
    assert ready() is None


def test_targets_that_are_down_give_no_series_to_wait_for() -> None:
    stage = PredictiveStage(settings())
    ready = WarmReadiness(stage, lambda: True, max_wait_seconds=600, clock=FakeClock(now=0.0))
    run(stage, 0.0, 2.0)  # every target failed its first scrape: no series
    assert ready() is None


def test_inputs_never_seen_are_bounded_too() -> None:
    clock = FakeClock(now=0.0)
    ready = WarmReadiness(PredictiveStage(settings()), lambda: False, 60, clock=clock)
    assert ready() is not None
    clock.now = 61.0
    assert ready() is None


def test_a_warm_started_series_is_warm_when_it_appears() -> None:
    """A warm start (history from Prometheus) replays the series' past through its policy
    before live data arrives; the replayed steps count, so no wait follows."""
    stage = PredictiveStage(settings())
    ready = WarmReadiness(stage, lambda: True, max_wait_seconds=600, clock=FakeClock(now=0.0))
    policy = stage.policy_for(LLM)
    for minute in range(30):
        policy.step(10.0 + math.sin(minute), 2.0, 1.0)
    assert stage.cold_series() == ()  # not live yet: nothing to wait for, nothing counted
    run(stage, 0.0, 0.5, (LLM, 10.0))
    assert stage.series_count() == 1
    assert stage.cold_series() == ()
    assert ready() is None
    # and it forecasts from its history at its first live step, not from one rate
    run(stage, 0.5, 1.0, (LLM, 10.0))
    assert policy.steps_with_rate == 31


def test_steps_fall_on_wall_clock_multiples_so_replicas_step_together() -> None:
    """Two replicas that saw the series first at different times step at the same wall
    times, so each step averages the same window."""
    step_times: dict[str, list[float]] = {"a": [], "b": []}
    for name, first_seen in (("a", 1000.25), ("b", 1007.75)):
        wall = FakeClock(now=first_seen)
        stage = PredictiveStage(settings(), wall_clock=wall)
        policy = stage.policy_for(LLM)
        offset = first_seen  # this replica's monotonic clock reads wall - offset
        now = 0.0
        while wall.now < 1015.0:
            before = policy.steps_with_rate
            stage.step(now, raw(wall.now, (LLM, 10.0)), {})
            if policy.steps_with_rate > before:
                step_times[name].append(now + offset)
            now += 0.25  # binary fractions: the times compared below are exact
            wall.now = now + offset
    whole_seconds = [1010.0, 1011.0, 1012.0, 1013.0, 1014.0]
    assert step_times["a"][-5:] == step_times["b"][-5:] == whole_seconds
    assert all(t == int(t) for t in step_times["a"] + step_times["b"])


def test_forecasts_are_published_from_the_first_step_as_before() -> None:
    stage = PredictiveStage(settings())
    out: dict[str, list[SeriesPoint]] = {}
    now = 0.0
    while ARRIVAL_FORECAST not in out and now < 5.0:
        out = stage.step(now, raw(now, (LLM, 10.0)), {})
        now += 0.25
    assert ARRIVAL_FORECAST in out
