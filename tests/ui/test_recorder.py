"""The page's history: one row per publish step, unknown values as NaN (never 0), one window
kept, at most max_series rings (the rest counted), rings freed after a window of absence."""

from __future__ import annotations

import math
from types import MappingProxyType

import pytest

from adapter.config import load_config
from adapter.predictive import PredictiveStage
from adapter.recorder import SeriesRecorder
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.views import ForecastView

LABELS = {"namespace": "prod", "deployment": "llm", "model": "resnet"}


def snapshot(
    at: float,
    arrival: float,
    *,
    labels: dict[str, str] = LABELS,
    age: float = 0.5,
    upper: float | None = None,
    desired: float | None = None,
) -> Snapshot:
    series = {
        "triton_arrival_rate": (SeriesPoint(labels, arrival, at - age),),
        "triton_queue_depth": (SeriesPoint(labels, 3.0, at - age),),
    }
    if upper is not None:
        series["triton_arrival_rate_forecast"] = (SeriesPoint(labels, upper, at - age),)
    if desired is not None:
        series["triton_desired_replicas"] = (SeriesPoint(labels, desired, at - age),)
    return Snapshot(at, MappingProxyType(series))


def test_one_row_per_step_and_unknown_is_nan() -> None:
    recorder = SeriesRecorder(step_seconds=1.0, max_age_seconds=30.0, window_seconds=10.0)
    recorder.record(snapshot(100.0, 5.0, upper=7.0, desired=2.0))
    recorder.record(snapshot(100.4, 6.0))  # within the step: skipped
    recorder.record(snapshot(101.0, 8.0, age=31.0))  # older than max age: unknown
    (series,) = recorder.rows("prod").series
    assert series.times == [100.0, 101.0]
    assert series.columns["arrival"][0] == 5.0 and math.isnan(series.columns["arrival"][1])
    assert series.columns["upper"][0] == 7.0 and math.isnan(series.columns["upper"][1])
    assert series.columns["queue_depth"][0] == 3.0
    assert math.isnan(series.columns["point"][0])  # no predictive state given
    assert math.isnan(series.latest["arrival"]) and math.isnan(series.latest["queue_depth"])
    assert recorder.rows("staging").series == ()


def test_rows_after_since_and_a_bounded_window() -> None:
    recorder = SeriesRecorder(step_seconds=1.0, max_age_seconds=30.0, window_seconds=5.0)
    for i in range(20):
        recorder.record(snapshot(100.0 + i, float(i)))
    (series,) = recorder.rows("prod").series
    assert series.times == [114.0, 115.0, 116.0, 117.0, 118.0, 119.0]  # 5 s: ceil(5/1)+1 rows
    (newer,) = recorder.rows("prod", since=117.0).series
    assert newer.times == [118.0, 119.0] and newer.columns["arrival"] == [18.0, 19.0]
    assert recorder.rows("prod", since=119.0).series[0].times == []
    assert recorder.rows("prod").recorded_at == 119.0


def test_series_beyond_the_cap_are_counted_and_rings_are_freed() -> None:
    recorder = SeriesRecorder(
        step_seconds=1.0, max_age_seconds=30.0, window_seconds=3.0, max_series=2
    )

    def many(at: float, names: list[str]) -> Snapshot:
        points = tuple(SeriesPoint({**LABELS, "model": n}, 1.0, at) for n in names)
        return Snapshot(at, MappingProxyType({"triton_arrival_rate": points}))

    recorder.record(many(100.0, ["a", "b", "c"]))
    assert recorder.series_count == 2 and recorder.unrecorded_series == 1
    assert recorder.rows("prod").unrecorded_series == 1
    assert recorder.namespaces() == ["prod"]
    for i in range(1, 6):  # a and b go away; after a window their rings are freed
        recorder.record(many(100.0 + i, ["c"]))
    assert [s.labels["model"] for s in recorder.rows("prod").series] == ["c"]
    assert recorder.unrecorded_series == 0


def test_the_forecast_point_horizon_and_replicas_come_from_the_stage() -> None:
    config = load_config(
        None,
        {
            "predictive": {
                "defaults": {
                    "step_seconds": 1,
                    "cold_start_seconds": 2,
                    "hpa_sync_period_seconds": 1,
                    "capacity_rps": 10,
                }
            }
        },
    )
    stage = PredictiveStage(config.predictive)
    recorder = SeriesRecorder(
        step_seconds=1.0, max_age_seconds=30.0, forecasts=stage.forecast_views
    )
    for i in range(6):
        at = 1000.0 + i
        raw = {
            "triton_arrival_rate": [SeriesPoint(LABELS, 20.0 + i, at)],
            "triton_queue_depth": [SeriesPoint(LABELS, 1.0, at)],
        }
        out = stage.step(float(i), raw, {(("deployment", "llm"), ("namespace", "prod")): 2})
        series = {m: tuple(p) for m, p in {**raw, **out}.items()}
        recorder.record(Snapshot(at, MappingProxyType(series)))
    (view,) = stage.forecast_views()
    assert isinstance(view, ForecastView)
    (rows,) = recorder.rows("prod").series
    assert rows.horizon_seconds == view.horizon_seconds == 3.0
    assert rows.latest["point"] == pytest.approx(view.point)
    assert rows.latest["upper"] == view.planned  # the served forecast: the planned rate
    assert rows.latest["desired"] == view.decision.desired_replicas  # type: ignore[union-attr]
    assert rows.latest["replicas"] == 2.0
    # what the policy aims for: the stated attainment, its last plan's budget and margin
    headroom = view.policy.headroom
    assert rows.aim["slo_attainment"] == 0.995  # the default
    assert rows.aim["margin"] == headroom.margin == pytest.approx(view.upper - view.point)
    assert rows.aim["budget"] == dict(headroom.details)["budget_now"]
    assert 0 < rows.aim["budget"] < 1 and 0 < rows.aim["utilisation"] <= 1


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_series >= 1"):
        SeriesRecorder(step_seconds=1.0, max_age_seconds=30.0, max_series=0)
