"""A request reads only its namespace's series of its metric (the snapshot's index), so its
cost does not grow with the rest of the snapshot. Proved by counting selector evaluations,
not by timing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import cast

import pytest

from adapter.kube.selectors import Selector
from adapter.provider import (
    DEPLOYMENTS,
    PODS,
    CustomMetricInfo,
    NoMatchingSeriesError,
    SnapshotCustomMetricsProvider,
    SnapshotProvider,
)
from adapter.snapshot import MetricInfo, PodKey, SeriesPoint, Snapshot

NOW = 1_700_000_000.0
METRICS = ("triton_queue_depth", "triton_arrival_rate")
BUSY_NAMESPACES = 20
DEPLOYMENTS_PER_NAMESPACE = 50
PODS_PER_DEPLOYMENT = 4
MODELS = 5


class CountingSelector:
    """A selector that counts the label sets it is asked about."""

    def __init__(self, text: str) -> None:
        self._inner = Selector.parse(text)
        self.source = self._inner.source
        self.requirements = self._inner.requirements
        self.evaluated = 0

    def matches(self, labels: Mapping[str, str]) -> bool:
        self.evaluated += 1
        return self._inner.matches(labels)

    def is_everything(self) -> bool:
        return self._inner.is_everything()


class CountedLabels(Mapping[str, str]):
    """Labels that count every read, to prove a request never looks at a series."""

    reads = 0

    def __init__(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)

    def __getitem__(self, key: str) -> str:
        CountedLabels.reads += 1
        return self._labels[key]

    def __iter__(self) -> Iterator[str]:
        CountedLabels.reads += 1
        return iter(self._labels)

    def __len__(self) -> int:
        CountedLabels.reads += 1
        return len(self._labels)


def as_selector(counting: CountingSelector) -> Selector:
    return cast(Selector, counting)


def big_snapshot(busy_labels: type[Mapping[str, str]] = dict) -> Snapshot:
    """``busy-*`` namespaces with 1,000 group series per metric each (and 4,000 per-pod),
    and one small namespace ``small`` with 1 Deployment, 2 pods and 2 models."""
    series: dict[str, list[SeriesPoint]] = {m: [] for m in METRICS}
    pod_series: dict[str, list[SeriesPoint]] = {m: [] for m in METRICS}
    pods: dict[PodKey, Mapping[str, str]] = {}

    def add(namespace: str, deployment: str, pod_names: list[str], models: int) -> None:
        wrap = busy_labels if namespace.startswith("busy-") else dict
        for metric in METRICS:
            for m in range(models):
                group = {"namespace": namespace, "deployment": deployment, "model": f"m{m}"}
                series[metric].append(SeriesPoint(wrap(group), 1.0, NOW))
                for pod in pod_names:
                    pod_series[metric].append(SeriesPoint(wrap({**group, "pod": pod}), 1.0, NOW))
        for pod in pod_names:
            pods[(namespace, pod)] = {"app": deployment}

    for n in range(BUSY_NAMESPACES):
        for d in range(DEPLOYMENTS_PER_NAMESPACE):
            names = [f"triton-{d}-{p}" for p in range(PODS_PER_DEPLOYMENT)]
            add(f"busy-{n}", f"triton-{d}", names, MODELS)
    add("small", "triton-0", ["triton-0-a", "triton-0-b"], 2)
    return Snapshot(
        built_at=NOW,
        series=MappingProxyType({m: tuple(p) for m, p in series.items()}),
        pod_series=MappingProxyType({m: tuple(p) for m, p in pod_series.items()}),
        pods=MappingProxyType(pods),
    )


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return big_snapshot()


def external(snapshot: Snapshot) -> SnapshotProvider:
    infos = [MetricInfo(name, name, "") for name in METRICS]
    return SnapshotProvider(infos, lambda: snapshot, lambda: NOW, max_age_seconds=60)


def custom(snapshot: Snapshot) -> SnapshotCustomMetricsProvider:
    return SnapshotCustomMetricsProvider(
        lambda: snapshot,
        lambda: NOW,
        60,
        pod_metrics=METRICS,
        pod_aliases={},
        deployment_metrics=METRICS,
        additive=METRICS,
    )


def test_the_snapshot_is_large(snapshot: Snapshot) -> None:
    total = sum(len(p) for p in snapshot.series.values())
    assert total > 10_000
    assert len(snapshot.points_in("triton_queue_depth", "small")) == 2


def test_external_request_evaluates_only_its_namespace_series(snapshot: Snapshot) -> None:
    selector = CountingSelector("deployment=triton-0")
    values = external(snapshot).get_external_metric(
        "small", "triton_queue_depth", as_selector(selector)
    )
    assert len(values) == 2
    assert selector.evaluated == 2  # the 2 series of that metric in "small", none of 10,000


def test_a_404_in_a_small_namespace_does_not_scan_the_others(snapshot: Snapshot) -> None:
    selector = CountingSelector("deployment=absent")
    with pytest.raises(NoMatchingSeriesError, match="namespace small has 2 series"):
        external(snapshot).get_external_metric(
            "small", "triton_arrival_rate", as_selector(selector)
        )
    assert selector.evaluated == 0  # no series of that Deployment: nothing to evaluate


def test_a_deployment_selector_reads_that_deployments_series_only(snapshot: Snapshot) -> None:
    selector = CountingSelector("deployment=triton-3,model=m1")
    values = external(snapshot).get_external_metric(
        "busy-7", "triton_queue_depth", as_selector(selector)
    )
    assert [(v.labels["deployment"], v.labels["model"]) for v in values] == [("triton-3", "m1")]
    assert selector.evaluated == MODELS  # that Deployment's series, not its namespace's


def test_other_selectors_read_their_namespace_only(snapshot: Snapshot) -> None:
    selector = CountingSelector("model in (m1,m2)")
    values = external(snapshot).get_external_metric(
        "busy-7", "triton_queue_depth", as_selector(selector)
    )
    assert len(values) == 2 * DEPLOYMENTS_PER_NAMESPACE
    assert selector.evaluated == DEPLOYMENTS_PER_NAMESPACE * MODELS  # not x 20 namespaces


def test_no_series_of_another_namespace_is_read() -> None:
    """The old provider checked every series' namespace label: thousands of reads here."""
    snapshot = big_snapshot(busy_labels=CountedLabels)
    snapshot.pod_points_in("triton_queue_depth", "small")  # builds the per-pod index (once)
    CountedLabels.reads = 0  # building the indexes reads each series once
    provider, pods = external(snapshot), custom(snapshot)
    everything = Selector.everything()
    assert len(provider.get_external_metric("small", "triton_queue_depth", everything)) == 2
    with pytest.raises(NoMatchingSeriesError):
        provider.get_external_metric("small", "triton_queue_depth", Selector.parse("model=x"))
    info = CustomMetricInfo(PODS, "triton_arrival_rate")
    assert len(pods.get_metric_by_selector("small", everything, info, everything)) == 2
    assert pods.get_metric_by_name("small", "triton-0-a", info, everything).value == 2.0
    assert CountedLabels.reads == 0
    provider.get_external_metric("busy-1", "triton_queue_depth", Selector.parse("model=m1"))
    assert CountedLabels.reads > 0  # the instrument works


def test_custom_by_name_reads_only_the_named_objects_series(snapshot: Snapshot) -> None:
    metric_selector = CountingSelector("")
    provider = custom(snapshot)
    pod = provider.get_metric_by_name(
        "busy-2",
        "triton-9-1",
        CustomMetricInfo(PODS, "triton_queue_depth"),
        as_selector(metric_selector),
    )
    assert pod.value == MODELS  # additive: the sum of its models' series
    assert metric_selector.evaluated == MODELS
    deployment_selector = CountingSelector("model=m0")
    deployment = provider.get_metric_by_name(
        "busy-2",
        "triton-9",
        CustomMetricInfo(DEPLOYMENTS, "triton_arrival_rate"),
        as_selector(deployment_selector),
    )
    assert deployment.value == 1.0
    assert deployment_selector.evaluated == MODELS


def test_custom_by_selector_reads_only_its_namespace(snapshot: Snapshot) -> None:
    pods = CountingSelector("app=triton-0")
    metric_selector = CountingSelector("")
    values = custom(snapshot).get_metric_by_selector(
        "small",
        as_selector(pods),
        CustomMetricInfo(PODS, "triton_queue_depth"),
        as_selector(metric_selector),
    )
    assert sorted(v.described_object.name for v in values) == ["triton-0-a", "triton-0-b"]
    assert pods.evaluated == 2  # the pods of "small", not the 4,000 others
    assert metric_selector.evaluated == 4  # 2 pods x 2 models


def test_index_keeps_every_series_once(snapshot: Snapshot) -> None:
    for metric in METRICS:
        indexed = [
            p for ns in snapshot.namespaces_of(metric) for p in snapshot.points_in(metric, ns)
        ]
        assert sorted(map(id, indexed)) == sorted(map(id, snapshot.points(metric)))
    assert snapshot.namespaces_of("triton_queue_depth")[-1] == "small"
    assert snapshot.points_in("no_such_metric", "small") == ()
