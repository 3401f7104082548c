"""The Prometheus source's parts become the same signals as the scrape path's readings.

Rows are built from the same counters the readings carry, as Prometheus' ``rate()``,
``increase()`` and ``delta()`` would return them over the window for evenly spaced samples
(no extrapolation), so the two paths must agree exactly; the live comparison with Prometheus'
own arithmetic is tests/service/test_prometheus_source.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from adapter.config import load_config
from adapter.promsource import GroupSpec, Rows, evaluate
from adapter.readings import ModelCounters, Reading
from adapter.signals import (
    ARRIVAL_RATE,
    GPU_UTILIZATION,
    QUEUE_COMPUTE_RATIO,
    QUEUE_DEPTH,
    QUEUE_TIME,
    REQUEST_RATE,
    Member,
    ReadingHistory,
    group_series,
)

T0 = 1_700_000_000.0
WINDOW = 5.0
GROUP = {"namespace": "prod", "deployment": "llm"}
METRICS = (QUEUE_DEPTH, REQUEST_RATE, ARRIVAL_RATE, QUEUE_TIME, QUEUE_COMPUTE_RATIO)


def spec(matchers: str = 'job="triton"', **source: object) -> GroupSpec:
    config = load_config(
        None,
        {
            "sources": {
                "prometheus": [
                    {
                        "url": "http://prometheus:9090",
                        "scrape_interval_seconds": 1,
                        "rate_window_seconds": WINDOW,
                        **source,
                        "groups": [{"labels": GROUP, "matchers": matchers}],
                    }
                ]
            }
        },
    )
    settings = config.sources.prometheus[0]
    return GroupSpec.create(settings.groups[0], settings, config.signals.sum_versions)


Pod = tuple[ModelCounters, ModelCounters]  # (window start, now)


def counters(
    success: float, pending: float, queue_us: float | None, compute_us: float | None
) -> ModelCounters:
    return ModelCounters(pending, success, 1.0, queue_us, compute_us)


def scraped(pods: Mapping[str, Pod]) -> dict[str, float]:
    """The scrape path's group values."""
    members = []
    for old, new in pods.values():
        history = ReadingHistory(60.0)
        history.add(Reading(0.0, T0, {("m", ""): old}))
        history.add(Reading(WINDOW, T0 + WINDOW, {("m", ""): new}))
        members.append(Member("triton", history))
    series = group_series(tuple(sorted(GROUP.items())), members, WINDOW)
    return {metric: points[0].value for metric, points in series.items()}


def rows_for(pods: Mapping[str, Pod], up: Mapping[str, float] | None = None) -> Rows:
    """What Prometheus would answer for the same counters."""
    rows: Rows = {}

    def add(part: str, pod: str, value: float | None, model: bool = True) -> None:
        if value is not None:
            labels = {"pod": pod, "model": "m"} if model else {"pod": pod}
            rows.setdefault(part, []).append((labels, value))

    def delta(new: float | None, old: float | None) -> float | None:
        return None if new is None or old is None else new - old

    for pod, (old, new) in pods.items():
        add("up", pod, (up or {}).get(pod, 1.0), model=False)
        add("seen", pod, T0 + WINDOW, model=False)
        add("present", pod, 1.0)
        add("pending", pod, new.pending)
        add("completed", pod, (new.completed - old.completed) / WINDOW)
        add("pending_delta", pod, delta(new.pending, old.pending))
        add("success", pod, new.success - old.success)
        add("queue_us", pod, delta(new.queue_us, old.queue_us))
        add("compute_us", pod, delta(new.compute_infer_us, old.compute_infer_us))
    return rows


def read(pods: Mapping[str, Pod]) -> dict[str, float]:
    evaluation = evaluate(rows_for(pods), spec())
    assert evaluation is not None
    return {metric: points[0].value for metric, points in evaluation.group.items()}


CASES = {
    "steady": {
        "a": (counters(100, 2, 1e6, 4e6), counters(150, 3, 2e6, 6e6)),
        "b": (counters(10, 0, 1e5, 2e5), counters(30, 1, 3e5, 6e5)),
    },
    "backlog growing, nothing finished": {
        "a": (counters(100, 2, 1e6, 4e6), counters(100, 9, 1e6, 4e6)),
    },
    "idle": {"a": (counters(5, 0, 10.0, 20.0), counters(5, 0, 10.0, 20.0))},
    "latency counters off": {"a": (counters(0, 0, None, None), counters(40, 1, None, None))},
}


@pytest.mark.parametrize("pods", CASES.values(), ids=CASES.keys())
def test_the_parts_give_the_scrape_paths_values(pods: Mapping[str, Pod]) -> None:
    expected, got = scraped(pods), read(pods)
    assert set(got) == set(expected)
    for metric, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[metric]), metric
        else:
            assert got[metric] == pytest.approx(value), metric


def test_each_pod_gets_its_own_series_with_its_own_time() -> None:
    pods = CASES["steady"]
    rows = rows_for(pods)
    rows["seen"] = [({"pod": "a"}, T0 + 5), ({"pod": "b"}, T0 + 4)]
    evaluation = evaluate(rows, spec())
    assert evaluation is not None and evaluation.replicas == 2
    rates = {p.labels["pod"]: p for p in evaluation.pods["a"][REQUEST_RATE]}
    assert rates["a"].value == pytest.approx(10.0)  # 50 completions in 5 s
    assert dict(rates["a"].labels) == {**GROUP, "model": "m", "pod": "a"}
    assert rates["a"].window_seconds == 5 and rates["a"].timestamp == T0 + 5
    (group_rate,) = evaluation.group[REQUEST_RATE]
    assert group_rate.timestamp == T0 + 4  # the oldest of its pods': one late pod ages it


def test_a_pod_whose_target_is_down_holds_the_group_but_not_the_others() -> None:
    evaluation = evaluate(rows_for(CASES["steady"], up={"b": 0.0}), spec())
    assert evaluation is not None
    assert evaluation.down == {"b"} and evaluation.group == {}
    assert set(evaluation.pods) == {"a"}


def test_a_pod_without_two_samples_in_the_window_holds_the_rates() -> None:
    rows = rows_for(CASES["steady"])
    for part in ("completed", "success", "pending_delta", "queue_us", "compute_us"):
        rows[part] = [row for row in rows[part] if row[0]["pod"] != "b"]
    evaluation = evaluate(rows, spec())
    assert evaluation is not None
    assert set(evaluation.group) == {QUEUE_DEPTH}  # the depth is known, the rates are not
    assert evaluation.group[QUEUE_DEPTH][0].value == 4.0
    assert REQUEST_RATE in evaluation.pods["a"] and set(evaluation.pods["b"]) == {QUEUE_DEPTH}


def test_no_target_at_all_is_no_evaluation() -> None:
    assert evaluate({}, spec()) is None
    assert evaluate({"present": [({"pod": "a", "model": "m"}, 1.0)]}, spec()) is None


def test_gpus_join_the_groups_pods_from_dcgm_or_from_triton() -> None:
    rows = rows_for(CASES["steady"])
    engine = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
    rows[engine] = [
        ({"UUID": "GPU-1", "exported_namespace": "prod", "exported_pod": "a"}, 0.8),
        ({"UUID": "GPU-2", "exported_namespace": "other", "exported_pod": "a"}, 1.0),
        ({"UUID": "GPU-3", "exported_namespace": "prod", "exported_pod": "zz"}, 1.0),
    ]
    rows["nv_gpu_utilization"] = [
        ({"gpu_uuid": "GPU-1", "pod": "a"}, 0.1),  # dcgm-exporter's value wins for a
        ({"gpu_uuid": "GPU-9", "pod": "b"}, 0.4),
    ]
    evaluation = evaluate(
        rows,
        spec(
            gpu_namespace_label="exported_namespace",
            gpu_pod_label="exported_pod",
            gpu_container_label="exported_container",
        ),
    )
    assert evaluation is not None
    by_pod = {pod: points[GPU_UTILIZATION][0].value for pod, points in evaluation.pods.items()}
    assert by_pod == pytest.approx({"a": 0.8, "b": 0.4})
    assert evaluation.group[GPU_UTILIZATION][0].value == pytest.approx(0.6)


def test_the_query_carries_the_matchers_window_and_grouping() -> None:
    promql = spec('namespace="prod",pod=~"llm-.+"').promql()
    assert 'nv_inference_pending_request_count{namespace="prod",pod=~"llm-.+"}' in promql
    assert "[5000ms]" in promql and "sum by (pod, model)" in promql
    assert 'DCGM_FI_PROF_GR_ENGINE_ACTIVE{namespace="prod"}' in promql
    assert promql.count(" or ") == 11
    assert "DCGM" not in spec().promql(gpu=False)
    per_version = load_config(None, {"signals": {"sum_versions": False}})
    assert not per_version.signals.sum_versions
    versions = GroupSpec(**{**_fields(spec()), "sum_versions": False}).promql()
    assert "sum by (pod, model, version)" in versions


def _fields(group: GroupSpec) -> dict[str, object]:
    return {name: getattr(group, name) for name in GroupSpec.__slots__}
