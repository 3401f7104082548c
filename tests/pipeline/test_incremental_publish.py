"""Publishing is incremental: a group whose members have no new reading is not recomputed,
and what is served is exactly what a full recomputation gives."""

from __future__ import annotations

from adapter.config import load_config
from adapter.gpus import GpuSample, PodGpus
from adapter.pipeline import Pipeline
from adapter.readings import ModelCounters, Reading
from adapter.series_cache import GroupSeriesCache
from adapter.signals import Labels, Member, ReadingHistory, group_series
from adapter.snapshot import PodKey
from adapter.targets import StaticTargets, Target

T0 = 1_700_000_000.0
WINDOW = 5.0
NO_GPUS: dict[PodKey, PodGpus] = {}


def reading(t: float, success: float) -> Reading:
    return Reading(t, T0 + t, {("resnet", ""): ModelCounters(1.0, success, 0.0, 0.0, 0.0)})


def group(name: str) -> Labels:
    return (("deployment", name), ("namespace", "prod"))


def key(metric: str, name: str) -> tuple[str, Labels]:
    return metric, tuple(sorted((*group(name), ("model", "resnet"))))


def histories(count: int) -> list[ReadingHistory]:
    out = []
    for _ in range(count):
        history = ReadingHistory(60.0)
        for t in range(4):
            history.add(reading(float(t), 10.0 * t))
        out.append(history)
    return out


def test_only_groups_with_a_new_reading_are_recomputed() -> None:
    a, b = histories(2)
    owners = {
        group("a"): [Member("triton", a, "http://a/metrics")],
        group("b"): [Member("triton", b, "http://b/metrics")],
    }
    cache = GroupSeriesCache()
    first = cache.entries(owners.items(), WINDOW, NO_GPUS)
    assert cache.recomputed == 2
    again = cache.entries(owners.items(), WINDOW, NO_GPUS)
    assert cache.recomputed == 0
    assert again == first
    a.add(reading(4.0, 100.0))  # a jump: a's rate changes
    after = dict(cache.entries(owners.items(), WINDOW, NO_GPUS))
    assert cache.recomputed == 1
    rate_key = key("triton_request_rate", "a")
    assert rate_key in after
    expected = group_series(group("a"), owners[group("a")], WINDOW)["triton_request_rate"]
    assert after[rate_key][1] == expected[0]
    assert after[rate_key][1] != dict(first)[rate_key][1]


def test_a_changed_membership_is_recomputed() -> None:
    a, b = histories(2)
    cache = GroupSeriesCache()
    one = {group("g"): [Member("triton", a, "http://a/metrics")]}
    two = {group("g"): [Member("triton", a, "http://a/metrics"), Member("triton", b, "http://b")]}
    cache.entries(one.items(), WINDOW, NO_GPUS)
    sums = dict(cache.entries(two.items(), WINDOW, NO_GPUS))
    assert cache.recomputed == 1
    (point,) = group_series(group("g"), two[group("g")], WINDOW)["triton_queue_depth"]
    assert sums[key("triton_queue_depth", "g")][1].value == 2.0
    assert point.value == 2.0
    cache.entries(one.items(), WINDOW, NO_GPUS)
    assert cache.recomputed == 1  # back to one member: computed again, not the old entry


def test_incremental_publishes_serve_what_full_ones_do() -> None:
    config = load_config(None, {})
    targets = [
        Target.create(
            f"http://{name}{pod}/metrics",
            "triton",
            {"namespace": "prod", "deployment": name},
            pod=f"{name}-{pod}",
        )
        for name in ("a", "b", "c")
        for pod in range(3)
    ]
    incremental = Pipeline(config.scrape, config.signals, StaticTargets(targets))
    full = Pipeline(config.scrape, config.signals, StaticTargets(targets))
    states = [(incremental.track(t, 0.0), full.track(t, 0.0)) for t in targets]
    for step in range(1, 40):
        now = step * 0.25
        for index, (one, other) in enumerate(states):
            if (step + index) % 4 == 0:  # each target scraped every 4th publish, staggered
                point = reading(now, 7.0 * now * (index + 1))
                one.history.add(point)
                other.history.add(point)
        full._group_cache = GroupSeriesCache()  # the reference: computed from scratch
        full._pod_cache = GroupSeriesCache()
        got = incremental.publish(now, T0 + now)
        want = full.publish(now, T0 + now)
        assert dict(got.series) == dict(want.series)
        assert dict(got.pod_series) == dict(want.pod_series)
    assert got.points_in("triton_request_rate", "prod")


def test_a_change_in_the_gpus_assigned_to_a_pod_is_recomputed() -> None:
    (history,) = histories(1)
    pod = ("prod", "a-0")
    owners = {group("a"): [Member("triton", history, "http://a/metrics", pod)]}
    cache = GroupSeriesCache()

    def gpus(utilization: float) -> dict[PodKey, PodGpus]:
        return {pod: PodGpus((GpuSample("GPU-0", utilization, pod),), T0 + 3)}

    first = dict(cache.entries(owners.items(), WINDOW, gpus(0.5)))
    assert cache.recomputed == 1
    cache.entries(owners.items(), WINDOW, gpus(0.5))  # equal, though rebuilt
    assert cache.recomputed == 0
    after = dict(cache.entries(owners.items(), WINDOW, gpus(0.9)))
    assert cache.recomputed == 1
    utilization = ("gpu_utilization", group("a"))
    assert first[utilization][1].value == 0.5 and after[utilization][1].value == 0.9
