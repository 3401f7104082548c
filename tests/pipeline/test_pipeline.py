"""The pipeline publishes immutable snapshots; restarts and dead targets are held, not zeroed."""

from __future__ import annotations

import math

import pytest

from adapter.config import load_config
from adapter.kube.selectors import Selector
from adapter.metrics_catalog import SERVED_METRICS
from adapter.pipeline import Pipeline
from adapter.predictive import (
    ARRIVAL_FORECAST,
    DESIRED_REPLICAS,
    QUEUE_DEPTH_FORECAST,
    PredictiveStage,
)
from adapter.provider import NoMatchingSeriesError, SnapshotProvider, StaleMetricError
from adapter.readings import ModelCounters, Reading
from adapter.snapshot import SeriesPoint
from adapter.targets import StaticTargets, Target

T0 = 1_700_000_000.0


def reading(t: float, success: float, pending: float = 0.0) -> Reading:
    return Reading(t, T0 + t, {("resnet", ""): ModelCounters(pending, success, 0.0, 0.0, 0.0)})


def make(capacity: bool = False) -> tuple[Pipeline, list[Target]]:
    overrides = {
        "predictive": {
            "defaults": {
                "cold_start_seconds": 10,
                "hpa_sync_period_seconds": 5,
                **({"capacity_rps": 10} if capacity else {}),
            }
        }
    }
    config = load_config(None, overrides)
    targets = [
        Target.create("http://a/metrics", "triton", {"namespace": "prod", "deployment": "llm"}),
        Target.create("http://b/metrics", "triton", {"namespace": "dev", "deployment": "llm"}),
    ]
    pipeline = Pipeline(
        config.scrape,
        config.signals,
        StaticTargets(targets),
        stages=(PredictiveStage(config.predictive),),
    )
    return pipeline, targets


def provider(pipeline: Pipeline, now: float) -> SnapshotProvider:
    return SnapshotProvider(SERVED_METRICS, pipeline.snapshot, lambda: now, 30.0)


def test_published_snapshot_is_served_per_namespace() -> None:
    pipeline, (prod, dev) = make()
    assert pipeline.readiness() == "no snapshot has been published yet"
    a, b = pipeline.track(prod), pipeline.track(dev)
    for t in range(6):
        a.history.add(reading(t, success=10 * t, pending=3))
        b.history.add(reading(t, success=2 * t, pending=1))
    before = pipeline.snapshot()
    snapshot = pipeline.publish(5.0, T0 + 5.0)
    assert pipeline.snapshot() is snapshot and snapshot is not before
    assert pipeline.readiness() is None
    served = provider(pipeline, T0 + 6)
    (prod_rate,) = served.get_external_metric("prod", "triton_request_rate", Selector.everything())
    (dev_rate,) = served.get_external_metric("dev", "triton_request_rate", Selector.everything())
    assert prod_rate.value == pytest.approx(10.0) and dev_rate.value == pytest.approx(2.0)
    assert prod_rate.labels == {"namespace": "prod", "deployment": "llm", "model": "resnet"}
    with pytest.raises(NoMatchingSeriesError):
        served.get_external_metric("other", "triton_request_rate", Selector.everything())
    with pytest.raises(NoMatchingSeriesError):
        served.get_external_metric("prod", "triton_request_rate", Selector.parse("model=bert"))


def test_restart_holds_last_rate_then_recomputes_without_spike() -> None:
    pipeline, (prod, _dev) = make()
    state = pipeline.track(prod)
    for t in range(6):
        state.history.add(reading(t, success=1000 + 10 * t, pending=5))
    pipeline.publish(5.0, T0 + 5.0)
    # Triton restarts: counters drop to near zero.
    state.history.add(reading(9, success=4, pending=0))
    snapshot = pipeline.publish(9.0, T0 + 9.0)
    (held,) = snapshot.points("triton_request_rate")
    assert held.value == pytest.approx(10.0)
    assert held.timestamp == T0 + 5  # the old value keeps its old time and ages out
    with pytest.raises(StaleMetricError):
        provider(pipeline, T0 + 5 + 31).get_external_metric(
            "prod", "triton_request_rate", Selector.everything()
        )
    state.history.add(reading(10, success=14, pending=0))
    (fresh,) = pipeline.publish(10.0, T0 + 10.0).points("triton_request_rate")
    assert fresh.value == pytest.approx(10.0) and fresh.timestamp == T0 + 10
    (arrival,) = pipeline.snapshot().points("triton_arrival_rate")
    assert 0 <= arrival.value <= 20


def test_dead_target_goes_stale_never_zero() -> None:
    pipeline, (prod, _dev) = make()
    state = pipeline.track(prod)
    for t in range(3):
        state.history.add(reading(t, success=10 * t, pending=2))
    pipeline.publish(2.0, T0 + 2.0)
    served = provider(pipeline, T0 + 2 + 29)
    (depth,) = served.get_external_metric("prod", "triton_queue_depth", Selector.everything())
    assert depth.value == 2
    for later in (40.0, 100.0):  # no new readings arrive
        pipeline.publish(later, T0 + later)
        with pytest.raises(StaleMetricError, match="holding"):
            provider(pipeline, T0 + later).get_external_metric(
                "prod", "triton_queue_depth", Selector.everything()
            )


def test_predictive_outputs_need_capacity() -> None:
    for capacity in (False, True):
        pipeline, (prod, _dev) = make(capacity=capacity)
        state = pipeline.track(prod)
        for t in range(40):
            state.history.add(reading(t, success=20 * t, pending=0))
            snapshot = pipeline.publish(float(t), T0 + t)
        forecast = snapshot.points(ARRIVAL_FORECAST)
        assert len(forecast) == 1 and forecast[0].value >= 19.0
        desired = snapshot.points(DESIRED_REPLICAS)
        if capacity:
            # 20 req/s at 10 req/s per replica needs at least 2
            assert desired and desired[0].value >= 2
            assert snapshot.points(QUEUE_DEPTH_FORECAST)
        else:
            assert desired == ()  # unknown capacity: not served rather than guessed


def test_missing_arrival_rate_is_not_forecast_as_zero() -> None:
    pipeline, (prod, _dev) = make(capacity=True)
    state = pipeline.track(prod)
    state.history.add(reading(0, success=0, pending=4))
    snapshot = pipeline.publish(0.0, T0 + 0.0)
    assert snapshot.points(ARRIVAL_FORECAST) == ()
    assert not any(math.isnan(p.value) for p in snapshot.points("triton_queue_depth"))


def test_policy_steps_on_the_mean_of_fresh_rates_only() -> None:
    config = load_config(None, {"predictive": {"defaults": {"step_seconds": 15}}})
    stage = PredictiveStage(config.predictive)
    labels = {"namespace": "prod", "model": "m"}

    def point(value: float, timestamp: float) -> SeriesPoint:
        return SeriesPoint(labels, value, timestamp)

    group = (("namespace", "prod"),)
    feed = [(0.0, 10.0, T0), (5.0, 30.0, T0 + 5), (10.0, 30.0, T0 + 5)]  # the last one is held
    for now, rate, stamp in feed:
        raw = {"triton_arrival_rate": [point(rate, stamp)], "triton_queue_depth": [point(0, stamp)]}
        assert stage.step(now, raw, {group: 1}) == {}  # no step due yet: nothing to serve
    raw = {"triton_arrival_rate": [point(50.0, T0 + 15)], "triton_queue_depth": [point(0, T0 + 15)]}
    out = stage.step(15.0, raw, {group: 1})
    (forecast,) = out[ARRIVAL_FORECAST]
    # fresh readings, each once; before any forecast error is known the plan adds the
    # headroom's prior margin (50 % of the rate) to the point forecast
    assert forecast.value == pytest.approx(1.5 * (10 + 30 + 50) / 3)
    assert forecast.timestamp == T0 + 15


def test_unloaded_model_is_held_then_dropped_so_wider_selectors_recover() -> None:
    pipeline, (prod, _dev) = make()
    state = pipeline.track(prod)

    def two_models(t: float, bert: bool) -> Reading:
        models = {("resnet", ""): ModelCounters(1.0, 10 * t, 0.0, 0.0, 0.0)}
        if bert:
            models[("bert", "")] = ModelCounters(2.0, 5 * t, 0.0, 0.0, 0.0)
        return Reading(t, T0 + t, models)

    for t in range(3):
        state.history.add(two_models(t, bert=True))
    pipeline.publish(2.0, T0 + 2)
    models_served: dict[int, list[str]] = {}
    for t in range(3, 40):  # bert is unloaded at t=3
        state.history.add(two_models(t, bert=False))
        pipeline.publish(float(t), T0 + t)
        served = provider(pipeline, T0 + t)
        depths = served.get_external_metric("prod", "triton_queue_depth", Selector.everything())
        models_served[t] = sorted(v.labels["model"] for v in depths)
    assert models_served[20] == ["bert", "resnet"]  # held within max age (30 s)
    assert models_served[39] == ["resnet"]  # then dropped: wider selectors recover


def test_dcgm_target_in_a_group_is_not_a_replica() -> None:
    config = load_config(None, {"predictive": {"defaults": {"capacity_rps": 10}}})
    labels = {"namespace": "prod", "deployment": "llm"}
    triton = Target.create("http://a/metrics", "triton", labels)
    dcgm = Target.create("http://a:9400/metrics", "dcgm", labels)
    seen: list[dict[tuple[tuple[str, str], ...], int]] = []

    class Spy:
        def step(self, now_mono, raw, replicas):  # type: ignore[no-untyped-def]
            seen.append(dict(replicas))
            return {}

    pipeline = Pipeline(
        config.scrape, config.signals, StaticTargets([triton, dcgm]), stages=(Spy(),)
    )
    pipeline.track(triton).history.add(reading(0, success=0))
    pipeline.track(dcgm).history.add(Reading(0, T0, {}, (0.5,)))
    pipeline.publish(0.0, T0)
    assert seen == [{triton.group: 1}]


def stale_answer(pipeline: Pipeline, at: float, metric: str = "triton_queue_depth") -> str:
    """Publish at ``T0 + at`` and return the provider's answer: a value, or the error text."""
    pipeline.publish(at, T0 + at)
    try:
        (value,) = provider(pipeline, T0 + at).get_external_metric(
            "prod", metric, Selector.everything()
        )
    except (StaleMetricError, NoMatchingSeriesError) as err:
        return f"{type(err).__name__}: {err}"
    return f"value {value.value:g}"


def test_silent_target_is_503_naming_it_for_minutes_then_forgotten() -> None:
    pipeline, (prod, _dev) = make()
    state = pipeline.track(prod)
    for t in range(3):
        state.history.add(reading(t, success=10 * t, pending=2))
    assert stale_answer(pipeline, 2.0) == "value 2"
    assert stale_answer(pipeline, 31.0) == "value 2"  # younger than max age (30 s): held
    answer = stale_answer(pipeline, 45.0)
    assert answer.startswith("StaleMetricError: stale: last data 43 s ago from http://a/metrics"), (
        answer
    )
    assert "holding rather than reporting a guess" in answer
    assert stale_answer(pipeline, 2.0 + 299).startswith("StaleMetricError: stale: last data 299 s")
    gone = stale_answer(pipeline, 2.0 + 301)  # forget_after_seconds (300 s) passed
    assert gone.startswith("NoMatchingSeriesError: no series of metric triton_queue_depth"), gone


def test_group_that_left_discovery_is_held_as_stale_not_dropped() -> None:
    pipeline, (prod, _dev) = make()
    state = pipeline.track(prod)
    for t in range(3):
        state.history.add(reading(t, success=10 * t, pending=2))
    assert stale_answer(pipeline, 2.0, "triton_request_rate") == "value 10"
    pipeline.untrack(prod)  # e.g. the pod went NotReady after Triton died
    assert stale_answer(pipeline, 10.0, "triton_request_rate") == "value 10"
    answer = stale_answer(pipeline, 100.0, "triton_request_rate")
    assert answer.startswith("StaleMetricError: stale: last data 98 s ago from http://a/metrics")
    gone = stale_answer(pipeline, 400.0, "triton_request_rate")
    assert gone.startswith("NoMatchingSeriesError"), gone


def test_forget_after_must_cover_max_age() -> None:
    with pytest.raises(ValueError, match=r"forget_after_seconds \(30\) must be at least max_age"):
        load_config(None, {"signals": {"max_age_seconds": 60, "forget_after_seconds": 30}})


@pytest.mark.parametrize(
    ("capacity", "steps", "metric", "selector", "why"),
    [
        pytest.param(
            False,
            40,
            DESIRED_REPLICAS,
            "",
            "served only for series with a per-replica "
            "capacity: set predictive.defaults.capacity_rps",
            id="replicas-need-capacity",
        ),
        pytest.param(
            False,
            40,
            QUEUE_DEPTH_FORECAST,
            "",
            "per-replica capacity",
            id="depth-forecast",
        ),
        pytest.param(
            True,
            3,
            DESIRED_REPLICAS,
            "",
            "no forecast yet: the predictive policy publishes its first one step",
            id="before-the-first-step",
        ),
        pytest.param(
            True,
            1,
            "triton_request_rate",
            "",
            "no rate yet: a rate needs two scrapes",
            id="one-scrape-no-rate",
        ),
        pytest.param(
            True,
            40,
            "gpu_utilization",
            "",
            "these targets report no GPU utilisation",
            id="no-gpu-metrics",
        ),
        pytest.param(
            True,
            40,
            "triton_queue_depth",
            "model=bert",
            "namespace prod has 1 series of it, "
            "none with these labels: {deployment=llm, model=resnet, namespace=prod}",
            id="selector-matches-nothing",
        ),
    ],
)
def test_404_says_what_is_missing(
    capacity: bool, steps: int, metric: str, selector: str, why: str
) -> None:
    pipeline, (prod, _dev) = make(capacity=capacity)
    state = pipeline.track(prod)
    for t in range(steps):
        state.history.add(reading(t, success=20 * t, pending=0))
        pipeline.publish(float(t), T0 + t)
    with pytest.raises(NoMatchingSeriesError) as raised:
        provider(pipeline, T0 + steps).get_external_metric("prod", metric, Selector.parse(selector))
    assert why in str(raised.value)


def test_404_names_the_namespaces_that_have_the_metric() -> None:
    pipeline, (prod, _dev) = make()
    state = pipeline.track(prod)
    state.history.add(reading(0, success=0, pending=1))
    pipeline.publish(0.0, T0)
    with pytest.raises(NoMatchingSeriesError, match=r"has series only in namespace\(s\) prod"):
        provider(pipeline, T0).get_external_metric(
            "staging", "triton_queue_depth", Selector.everything()
        )
