"""Publishing is incremental: a group whose members have no new reading is not recomputed,
and what is served is exactly what a full recomputation gives."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from adapter.config import load_config
from adapter.gpus import GpuSample, PodGpus
from adapter.pipeline import Pipeline, _Published
from adapter.readings import ModelCounters, Reading
from adapter.series_cache import GroupSeriesCache, SeriesKey, Served
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


def three_deployments_of_three_pods() -> list[Target]:
    """Deployments a, b and c in namespace prod, pods a-0 .. c-2."""
    return [
        Target.create(
            f"http://{name}{pod}/metrics",
            "triton",
            {"namespace": "prod", "deployment": name},
            pod=f"{name}-{pod}",
        )
        for name in ("a", "b", "c")
        for pod in range(3)
    ]


def entries(
    cache: GroupSeriesCache,
    owners: Iterable[tuple[Labels, Sequence[Member]]],
    window_seconds: float = WINDOW,
    pod_gpus: Mapping[PodKey, PodGpus] = NO_GPUS,
) -> Served:
    """Every owner's series from ``cache``, merged as a publish merges them."""
    merged: Served = {}
    for _owner, series in cache.owner_series(owners, window_seconds, pod_gpus):
        merged.update(series)
    return merged


def test_only_groups_with_a_new_reading_are_recomputed() -> None:
    a, b = histories(2)
    owners = {
        group("a"): [Member("triton", a, "http://a/metrics")],
        group("b"): [Member("triton", b, "http://b/metrics")],
    }
    cache = GroupSeriesCache()
    first = entries(cache, owners.items())
    assert cache.recomputed == 2
    again = entries(cache, owners.items())
    assert cache.recomputed == 0
    assert again == first
    a.add(reading(4.0, 100.0))  # a jump: a's rate changes
    after = dict(entries(cache, owners.items()))
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
    entries(cache, one.items())
    sums = dict(entries(cache, two.items()))
    assert cache.recomputed == 1
    (point,) = group_series(group("g"), two[group("g")], WINDOW)["triton_queue_depth"]
    assert sums[key("triton_queue_depth", "g")][1].value == 2.0
    assert point.value == 2.0
    entries(cache, one.items())
    assert cache.recomputed == 1  # back to one member: computed again, not the old entry


def test_incremental_publishes_serve_what_full_ones_do() -> None:
    config = load_config(None, {})
    targets = three_deployments_of_three_pods()
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


class SetDifferencePipeline(Pipeline):
    """The reference: finds the series no longer computed by a set difference over every
    series (what publishing did before it looked only at the owners that changed)."""

    @staticmethod
    def _no_longer_computed(
        last: _Published,
        current: list[tuple[Labels, Served]],
        owners: Mapping[Labels, list[Member]],
        fresh: Served,
    ) -> set[SeriesKey]:
        return set(last.series.keys() - fresh.keys())


def test_carried_and_dropped_series_match_a_full_recomputation() -> None:
    """Series stop being computed (a model unloaded, targets silent, a pod removed, a whole
    group removed), are carried, age past max age and are forgotten: publish after publish,
    the incremental pipeline serves what one recomputing everything serves."""
    config = load_config(None, {"signals": {"max_age_seconds": 3.0, "forget_after_seconds": 6.0}})
    targets = three_deployments_of_three_pods()
    incremental = Pipeline(config.scrape, config.signals, StaticTargets(targets))
    full = SetDifferencePipeline(config.scrape, config.signals, StaticTargets(targets))
    pairs = {t: (incremental.track(t, 0.0), full.track(t, 0.0)) for t in targets}
    silent = {targets[1], targets[2]}  # b is served from a-0 only after step 20
    unloads = targets[3]  # b-0 stops reporting "bert" after step 16
    served = carried_seen = 0
    for step in range(1, 80):
        now = step * 0.25
        if step == 30:  # pod c-2 leaves discovery; at 50 all of group c does
            for pipeline in (incremental, full):
                pipeline.untrack(targets[8])
            del pairs[targets[8]]
        if step == 50:
            for target in targets[6:8]:
                for pipeline in (incremental, full):
                    pipeline.untrack(target)
                del pairs[target]
        for index, (target, (one, other)) in enumerate(pairs.items()):
            if (step + index) % 4 or (target in silent and step > 20):
                continue
            models = {("resnet", ""): ModelCounters(1.0, 7.0 * now * (index + 1), 0.0, 0.0, 0.0)}
            if not (target is unloads and step > 16):
                models[("bert", "")] = ModelCounters(0.0, 3.0 * now, 0.0, 0.0, 0.0)
            point = Reading(now, T0 + now, models)
            one.history.add(point)
            other.history.add(point)
        full._group_cache = GroupSeriesCache()  # the reference: computed from scratch
        full._pod_cache = GroupSeriesCache()
        got = incremental.publish(now, T0 + now)
        want = full.publish(now, T0 + now)
        assert dict(got.series) == dict(want.series)
        assert dict(got.pod_series) == dict(want.pod_series)
        assert dict(got.pods) == dict(want.pods)
        served += sum(len(p) for p in got.series.values())
        carried_seen += len(incremental._last_points.carried)
    assert served and carried_seen  # series were served, and some were carried


def test_a_change_in_the_gpus_assigned_to_a_pod_is_recomputed() -> None:
    (history,) = histories(1)
    pod = ("prod", "a-0")
    owners = {group("a"): [Member("triton", history, "http://a/metrics", pod)]}
    cache = GroupSeriesCache()

    def gpus(utilization: float) -> dict[PodKey, PodGpus]:
        return {pod: PodGpus((GpuSample("GPU-0", utilization, pod),), T0 + 3)}

    first = dict(entries(cache, owners.items(), WINDOW, gpus(0.5)))
    assert cache.recomputed == 1
    entries(cache, owners.items(), WINDOW, gpus(0.5))  # equal, though rebuilt
    assert cache.recomputed == 0
    after = dict(entries(cache, owners.items(), WINDOW, gpus(0.9)))
    assert cache.recomputed == 1
    utilization = ("gpu_utilization", group("a"))
    assert first[utilization][1].value == 0.5 and after[utilization][1].value == 0.9
