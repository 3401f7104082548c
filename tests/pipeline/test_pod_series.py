"""Per-pod series: the pipeline publishes each pod's signals beside its group's, in one
snapshot, for the custom metrics API's Pods metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapter.config import load_config
from adapter.pipeline import Pipeline
from adapter.readings import ModelCounters, Reading
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.targets import StaticTargets, Target
from tests.support.helpers import async_wait_until

T0 = 1_700_000_000.0
GROUP = {"namespace": "prod", "deployment": "llm"}


def reading(t: float, success: float, pending: float, gpu: tuple[float, ...] = ()) -> Reading:
    counters = ModelCounters(pending, success, 0.0, 100.0 * success, 400.0 * success)
    return Reading(t, T0 + t, {("resnet", ""): counters}, gpu)


def pod_target(url: str, pod: str, **labels: str) -> Target:
    return Target.create(url, "triton", GROUP, pod=pod, pod_labels={"app": "llm", **labels})


def make(*targets: Target) -> Pipeline:
    config = load_config(None)
    return Pipeline(config.scrape, config.signals, StaticTargets(targets))


def by_pod(snapshot: Snapshot, metric: str) -> dict[str, SeriesPoint]:
    return {p.labels["pod"]: p for p in snapshot.pod_points(metric)}


def test_each_pod_gets_its_own_series_and_the_group_keeps_the_sum() -> None:
    a, b = pod_target("http://a/metrics", "llm-1"), pod_target("http://b/metrics", "llm-2")
    pipeline = make(a, b)
    state_a, state_b = pipeline.track(a), pipeline.track(b)
    for t in range(6):
        state_a.history.add(reading(t, success=10 * t, pending=3, gpu=(0.5, 0.7)))
        state_b.history.add(reading(t, success=2 * t, pending=1, gpu=(0.2,)))
    snapshot = pipeline.publish(5.0, T0 + 5.0)

    depth = by_pod(snapshot, "triton_queue_depth")
    assert {pod: p.value for pod, p in depth.items()} == {"llm-1": 3.0, "llm-2": 1.0}
    assert dict(depth["llm-1"].labels) == {**GROUP, "model": "resnet", "pod": "llm-1"}
    rates = by_pod(snapshot, "triton_request_rate")
    assert rates["llm-1"].value == pytest.approx(10.0)
    assert rates["llm-2"].value == pytest.approx(2.0)
    ratio = by_pod(snapshot, "triton_queue_compute_ratio")
    assert ratio["llm-1"].value == pytest.approx(0.25)
    gpu = by_pod(snapshot, "gpu_utilization")
    assert gpu["llm-1"].value == pytest.approx(0.6) and gpu["llm-2"].value == pytest.approx(0.2)
    assert "model" not in gpu["llm-1"].labels

    (group_depth,) = snapshot.points("triton_queue_depth")
    assert group_depth.value == 4.0 and "pod" not in group_depth.labels
    assert dict(snapshot.pods) == {
        ("prod", "llm-1"): {"app": "llm"},
        ("prod", "llm-2"): {"app": "llm"},
    }


def test_targets_without_a_pod_and_dcgm_targets_have_no_pod_series() -> None:
    static = Target.create("http://a/metrics", "triton", GROUP)
    dcgm = Target.create("http://d/metrics", "dcgm", GROUP, pod="dcgm-exporter-x")
    pipeline = make(static, dcgm)
    for target in (static, dcgm):
        state = pipeline.track(target)
        for t in range(3):
            state.history.add(reading(t, success=t, pending=0))
    snapshot = pipeline.publish(2.0, T0 + 2.0)
    assert snapshot.points("triton_queue_depth")
    assert not snapshot.pod_series and not snapshot.pods


def test_a_restarted_pod_holds_its_last_value_and_a_removed_one_disappears() -> None:
    a, b = pod_target("http://a/metrics", "llm-1"), pod_target("http://b/metrics", "llm-2")
    pipeline = make(a, b)
    state_a, state_b = pipeline.track(a), pipeline.track(b)
    for t in range(6):
        state_a.history.add(reading(t, success=1000 + 10 * t, pending=1))
        state_b.history.add(reading(t, success=10 * t, pending=1))
    pipeline.publish(5.0, T0 + 5.0)
    state_a.history.add(reading(9, success=3, pending=0))  # llm-1 restarted
    state_b.history.add(reading(9, success=90, pending=0))
    rates = by_pod(pipeline.publish(9.0, T0 + 9.0), "triton_request_rate")
    assert rates["llm-1"].timestamp == T0 + 5  # held with its old time: ages out, never 0
    assert rates["llm-2"].timestamp == T0 + 9

    del pipeline._states[a]  # the pod went away (as _reconcile does)
    snapshot = pipeline.publish(10.0, T0 + 10.0)
    assert set(by_pod(snapshot, "triton_request_rate")) == {"llm-2"}
    assert set(snapshot.pods) == {("prod", "llm-2")}


class ChangingTargets:
    """A target source the test drives: each ``put`` is yielded as the new complete set."""

    def __init__(self) -> None:
        self._sets: asyncio.Queue[frozenset[Target]] = asyncio.Queue()

    def put(self, *targets: Target) -> None:
        self._sets.put_nowait(frozenset(targets))

    async def watch(self) -> AsyncIterator[frozenset[Target]]:
        while True:
            yield await self._sets.get()


async def test_a_relabelled_pod_keeps_its_scrape_loop_and_history() -> None:
    # Port 1 on loopback refuses connections: the loop runs and fails fast, nothing is read.
    before = pod_target("http://127.0.0.1:1/metrics", "llm-1")
    after = pod_target("http://127.0.0.1:1/metrics", "llm-1", rollout="canary")
    source = ChangingTargets()
    config = load_config(None)
    pipeline = Pipeline(config.scrape, config.signals, source)
    task = asyncio.create_task(pipeline.run())
    try:
        source.put(before)
        await async_wait_until(lambda: before in pipeline.targets, 10.0, 0.01, "the first target")
        state = pipeline.targets[before]
        state.history.add(reading(0, success=1, pending=0))
        source.put(after)
        await async_wait_until(lambda: after in pipeline.targets, 10.0, 0.01, "the relabelled one")
        assert pipeline.targets[after] is state and state.target is after
        assert state.history.newest is not None and len(pipeline.targets) == 1
        assert dict(pipeline.publish(1.0, T0 + 1.0).pods) == {
            ("prod", "llm-1"): {"app": "llm", "rollout": "canary"}
        }
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
