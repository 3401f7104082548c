"""Rejected samples hold their series; a member failing for too long leaves its group
(as if its pod had left) while another member is healthy; memory per target is bounded."""

from __future__ import annotations

import logging
import math

import pytest

from adapter.config import load_config
from adapter.kube.selectors import Selector
from adapter.metrics_catalog import SERVED_METRICS
from adapter.pipeline import Pipeline
from adapter.provider import SnapshotProvider, StaleMetricError
from adapter.readings import ModelCounters, Reading, Rejection
from adapter.signals import (
    GPU_UTILIZATION,
    QUEUE_DEPTH,
    REQUEST_RATE,
    Member,
    ModelWindow,
    ReadingHistory,
    group_series,
    members_in_service,
    model_signals,
)
from adapter.targets import StaticTargets, Target

GROUP = (("deployment", "llm"), ("namespace", "prod"))
T0 = 1_700_000_000.0
M = ("m", "")
NAN_SUCCESS = (Rejection("nv_inference_request_success", "nan", 1, "model 'm'"),)


def good(t: float, success: float, pending: float = 5.0, model: str = "m") -> Reading:
    counters = ModelCounters(pending, success, 0.0, success * 1000, success * 2000)
    return Reading(t, T0 + t, {(model, ""): counters})


def nan(t: float) -> Reading:
    """What a scrape with ``nv_inference_request_success NaN`` for model m reads as."""
    return Reading(t, T0 + t, {}, rejected_models=frozenset({M}), rejections=NAN_SUCCESS)


def history(*readings: Reading, started: float | None = None) -> ReadingHistory:
    h = ReadingHistory(60, started_mono=started)
    for r in readings:
        h.add(r)
    return h


def test_a_model_rejected_on_one_member_is_held_for_the_group() -> None:
    a = history(good(0, 0), good(5, 50))
    b = history(good(0, 0), nan(5))
    other = good(5, 10, model="other")
    b.add(Reading(5.5, T0 + 5.5, dict(other.models), rejected_models=frozenset({M})))
    series = group_series(GROUP, [Member("triton", a), Member("triton", b)], 5.0)
    models = {p.labels["model"] for points in series.values() for p in points}
    assert "m" not in models  # neither A's half nor a zero for B: held
    assert series[QUEUE_DEPTH][0].labels["model"] == "other"


def test_model_back_after_rejection_holds_until_a_clean_window() -> None:
    h = history(good(0, 0), nan(1), good(2, 20))
    assert REQUEST_RATE not in {m for m in group_series(GROUP, [Member("triton", h)], 1.5)}
    h.add(good(3, 30))
    series = group_series(GROUP, [Member("triton", h)], 1.5)
    assert series[REQUEST_RATE][0].value == pytest.approx(10.0)


def test_rejected_gpu_utilization_is_not_averaged_over_the_rest() -> None:
    ok = history(Reading(0, T0, {}, (0.2,)))
    bad = history(Reading(0, T0, {}, (), gpu_rejected=True))
    assert GPU_UTILIZATION in group_series(GROUP, [Member("dcgm", ok)], 5.0)
    assert GPU_UTILIZATION not in group_series(
        GROUP, [Member("dcgm", ok), Member("dcgm", bad)], 5.0
    )


def test_extreme_but_valid_counters_never_give_a_non_finite_value() -> None:
    window = ModelWindow(math.inf, -math.inf, 1.7e308, 1.7e308, 0.0)
    values = model_signals(window, 1e308, 5.0)
    assert all(v != v or 0 <= v < math.inf for v in values.values())
    assert REQUEST_RATE not in values  # infinite: not served


def test_usable_means_clean_and_not_the_first_reading_since_a_reset() -> None:
    h = history(good(0, 100))
    assert h.last_usable_mono is None  # one reading gives no rate
    h.add(good(1, 110))
    assert h.last_usable_mono == 1
    h.add(nan(2))
    assert h.last_usable_mono == 1
    h.add(good(3, 5))  # restarted
    assert h.restarts == 1 and h.last_usable_mono == 1
    h.add(good(4, 15))
    assert h.last_usable_mono == 4


def test_members_in_service() -> None:
    healthy = Member("triton", history(good(0, 0), good(10, 100)), "a")
    stuck = Member("triton", history(good(0, 0), good(1, 10)), "b")
    silent = Member("triton", history(started=2.0), "c")
    dcgm_stuck = Member("dcgm", history(Reading(0, T0), Reading(1, T0 + 1)), "d")
    # within the drop time every member counts (the group holds)
    assert members_in_service([healthy, stuck, silent], 9.0, 8.5) == [healthy, stuck, silent]
    # past it, failing Triton members leave; the dcgm member has no healthy peer: it stays
    assert members_in_service([healthy, stuck, silent, dcgm_stuck], 11.0, 8.5) == [
        healthy,
        dcgm_stuck,
    ]
    # nobody healthy: nobody leaves, the group holds and goes stale
    assert members_in_service([stuck, silent], 100.0, 8.5) == [stuck, silent]
    # tracking time unknown and never read: cannot tell, stays
    unknown = Member("triton", history(), "e")
    assert members_in_service([healthy, unknown], 11.0, 8.5) == [healthy, unknown]


def test_remembered_models_are_bounded() -> None:
    h = ReadingHistory(60, max_models=50)
    for t in range(100):  # a target naming 20 new models at every scrape
        names = {(f"n{t}-{i}", ""): ModelCounters(0, 1, 0, 0, 0) for i in range(20)}
        h.add(Reading(t, T0 + t, names))
    assert h.remembered_models == 50
    assert len(h._readings) <= 63  # readings are bounded by the keep window


def make_pipeline(drop: float = 20.0) -> tuple[Pipeline, Target, Target]:
    config = load_config(None, {"signals": {"member_failure_drop_seconds": drop}})
    labels = {"namespace": "prod", "deployment": "llm"}
    a = Target.create("http://a/metrics", "triton", labels)
    b = Target.create("http://b/metrics", "triton", labels)
    return Pipeline(config.scrape, config.signals, StaticTargets([a, b])), a, b


def served(pipeline: Pipeline, now: float, metric: str = QUEUE_DEPTH) -> float | str:
    provider = SnapshotProvider(SERVED_METRICS, pipeline.snapshot, lambda: T0 + now, 30.0)
    try:
        (value,) = provider.get_external_metric("prod", metric, Selector.everything())
    except LookupError:
        return "404"
    except StaleMetricError:
        return "503"
    return value.value


def test_member_that_never_answers_leaves_after_the_drop_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="adapter.pipeline")
    pipeline, a, b = make_pipeline(drop=20.0)
    state_a = pipeline.track(a, now_mono=0.0)
    state_b = pipeline.track(b, now_mono=0.0)
    answers: dict[int, float | str] = {}
    for t in range(0, 41):
        state_a.history.add(good(t, 10 * t))
        pipeline.publish(float(t), T0 + t)
        answers[t] = served(pipeline, t)
    assert answers[5] == "503"  # B never answered: the group holds (its age is unknown)
    assert answers[20] == "503"
    assert answers[21] == 5 and answers[40] == 5  # A alone, as if B's pod had left
    assert served(pipeline, 40, REQUEST_RATE) == pytest.approx(10.0)
    left = [r for r in caplog.records if r.getMessage().startswith("group member left out")]
    assert [r.__dict__["target"] for r in left] == [b.url]  # once, not every pass
    for t in range(41, 45):  # B comes back
        state_a.history.add(good(t, 10 * t))
        state_b.history.add(good(t, 10 * t))
        pipeline.publish(float(t), T0 + t)
    assert served(pipeline, 44) == 10  # both pods' queues
    assert served(pipeline, 44, REQUEST_RATE) == pytest.approx(20.0)
    back = [r for r in caplog.records if r.getMessage().startswith("group member back")]
    assert len(back) == 1


def test_member_rejecting_samples_leaves_after_the_drop_time_never_halving_before() -> None:
    pipeline, a, b = make_pipeline(drop=20.0)
    state_a = pipeline.track(a, now_mono=0.0)
    state_b = pipeline.track(b, now_mono=0.0)
    depths: dict[int, float | str] = {}
    for t in range(0, 30):
        state_a.history.add(good(t, 10 * t))
        state_b.history.add(good(t, 10 * t) if t < 3 else nan(t))
        pipeline.publish(float(t), T0 + t)
        depths[t] = served(pipeline, t)
    assert depths[2] == 10  # both pods, before B goes bad
    held = [depths[t] for t in range(3, 23)]  # B's last usable reading was at t=2
    assert set(held) <= {10, "503", "404"}  # the old sum, held, then stale: never A's half
    assert depths[29] == 5


def test_all_members_failing_hold_and_go_stale_rather_than_vanish() -> None:
    pipeline, a, b = make_pipeline(drop=20.0)
    state_a = pipeline.track(a, now_mono=0.0)
    state_b = pipeline.track(b, now_mono=0.0)
    for t in range(3):
        state_a.history.add(good(t, 10 * t))
        state_b.history.add(good(t, 10 * t))
        pipeline.publish(float(t), T0 + t)
    assert served(pipeline, 2) == 10
    for t in (10, 25, 60, 200):  # nothing arrives any more
        pipeline.publish(float(t), T0 + t)
        assert served(pipeline, t) in (10, "503") and (t < 40 or served(pipeline, t) == "503")
