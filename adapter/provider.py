"""The protocols between the serving layers (HTTP, gRPC) and the data.

Modelled on custom-metrics-apiserver's ``ExternalMetricsProvider`` and
``CustomMetricsProvider``: the API layer asks for the metrics it may list and for the values
of one metric, in one namespace, under label selectors; it never sees scrapes, targets or
windows. Both implementations here read the pipeline's published snapshot and nothing else,
and share its staleness rule: a value older than its max age, or not computable yet, is an
error (the autoscaler holds), never a 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from adapter.kube.selectors import Operator, Selector
from adapter.metrics_catalog import (
    ADDITIVE_METRICS,
    DEPLOYMENT_METRIC_NAMES,
    POD_METRIC_ALIASES,
    POD_METRIC_NAMES,
)
from adapter.snapshot import MetricInfo, SeriesPoint, Snapshot


class MetricNotFoundError(LookupError):
    """No such metric is served (HTTP 404, reason NotFound)."""


class NoMatchingSeriesError(LookupError):
    """The metric exists but no series in the namespace matches the selector (HTTP 404)."""


class StaleMetricError(RuntimeError):
    """Series exist but their newest data is older than the metric's max age.

    Served as HTTP 503 so the HPA holds (``FailedGetExternalMetric``) instead of acting
    on a value that is not known; missing data is never reported as 0.
    """


@dataclass(frozen=True, slots=True)
class ExternalMetricValue:
    metric_name: str
    labels: dict[str, str]
    value: float
    timestamp: float
    window_seconds: int | None


class ExternalMetricsProvider(Protocol):
    def list_all_external_metrics(self) -> Sequence[MetricInfo]: ...

    def get_external_metric(
        self, namespace: str, metric: str, selector: Selector
    ) -> list[ExternalMetricValue]:
        """Values of ``metric`` in ``namespace`` matching ``selector``, never empty.

        Raises MetricNotFoundError, NoMatchingSeriesError or StaleMetricError.
        """
        ...


class SnapshotProvider:
    """Serves from the pipeline's published snapshot; reads only, never scrapes.

    ``current`` returns the snapshot in force; ``clock`` the Unix time (s);
    ``max_age_seconds``: data older than this is not served (the HPA holds). Every error says
    why: a stale series names the target its data stopped coming from, and a 404 says what is
    missing where it can (a capacity, a GPU metric, a first forecast, the namespace).
    """

    def __init__(
        self,
        metrics: Sequence[MetricInfo],
        current: SnapshotSource,
        clock: Clock,
        max_age_seconds: float,
    ) -> None:
        self._metrics = tuple(metrics)
        self._by_name = {m.name: m for m in metrics}
        self._current = current
        self._clock = clock
        self._max_age = max_age_seconds

    def list_all_external_metrics(self) -> Sequence[MetricInfo]:
        return self._metrics

    def get_external_metric(
        self, namespace: str, metric: str, selector: Selector
    ) -> list[ExternalMetricValue]:
        info = self._by_name.get(metric)
        if info is None:
            raise MetricNotFoundError(metric)
        snapshot = self._current()
        matched = _matching(_candidates(snapshot, metric, namespace, selector), selector)
        if not matched:
            raise NoMatchingSeriesError(self._why_none(snapshot, info, namespace, selector))
        max_age = self._max_age
        now = self._clock()
        stale = [p for p in matched if not now - p.timestamp <= max_age]
        if stale:
            raise StaleMetricError(_stale_message(metric, namespace, stale, matched, now, max_age))
        unknown = [p for p in matched if p.value != p.value]
        if unknown:
            raise StaleMetricError(
                f"metric {metric} in namespace {namespace}: {len(unknown)} of {len(matched)} "
                "matching series have no value yet (not enough data to compute it); "
                "holding rather than reporting a guess"
            )
        return [
            ExternalMetricValue(
                metric_name=metric,
                labels=dict(p.labels),
                value=p.value,
                timestamp=p.timestamp,
                window_seconds=p.window_seconds,
            )
            for p in matched
        ]

    def _why_none(
        self, snapshot: Snapshot, info: MetricInfo, namespace: str, selector: Selector
    ) -> str:
        """The 404 message: what is missing, as precisely as the snapshot tells."""
        message = (
            f"no series of metric {info.name} in namespace {namespace} "
            f"matches selector {selector.source!r}"
        )
        # Walk down the metrics this one is served beside (desired replicas -> forecast ->
        # arrival rate -> queue depth): the first that matches says what is missing above it.
        upper = info
        while upper.served_beside is not None and upper.served_beside in self._by_name:
            lower = self._by_name[upper.served_beside]
            beside = _matching(_candidates(snapshot, lower.name, namespace, selector), selector)
            if beside:
                return f"{message}: {upper.absent_because} ({lower.name} has {_some(beside)})"
            upper = lower
        in_namespace = snapshot.points_in(info.name, namespace)
        if in_namespace:
            return (
                f"{message}: namespace {namespace} has {len(in_namespace)} series of it, none "
                f"with these labels: {_some(in_namespace)}"
            )
        namespaces = snapshot.namespaces_of(info.name)
        if namespaces:
            return f"{message}: it has series only in namespace(s) {', '.join(namespaces[:5])}"
        return (
            f"{message}: no target serves it yet (no target discovered or scraped, or none "
            "reports it)"
        )


def _candidates(
    snapshot: Snapshot, metric: str, namespace: str, selector: Selector
) -> Sequence[SeriesPoint]:
    """The series ``selector`` can match, from the snapshot's indexes: the namespace's series
    of ``metric``, or only one Deployment's when the selector requires ``deployment=NAME``
    (what an HPA sends), so a request's cost follows its answer, not the snapshot."""
    for requirement in selector.requirements:
        if (
            requirement.key == DEPLOYMENT_LABEL
            and requirement.operator in _SINGLE_VALUE_OPERATORS
            and len(requirement.values) == 1
        ):
            (name,) = requirement.values
            return snapshot.points_of(metric, namespace, DEPLOYMENT_LABEL, name)
    return snapshot.points_in(metric, namespace)


DEPLOYMENT_LABEL = "deployment"
_SINGLE_VALUE_OPERATORS = frozenset({Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN})


def _matching(points: Sequence[SeriesPoint], selector: Selector) -> list[SeriesPoint]:
    """``points`` (one namespace's, from the snapshot's index) that ``selector`` matches."""
    return [p for p in points if selector.matches(p.labels)]


def _some(points: Sequence[SeriesPoint], limit: int = 3) -> str:
    """Up to ``limit`` label sets, for messages that must show what exists."""
    shown = "; ".join(
        "{" + ", ".join(f"{k}={v}" for k, v in sorted(p.labels.items())) + "}"
        for p in points[:limit]
    )
    more = f" and {len(points) - limit} more" if len(points) > limit else ""
    return f"{shown}{more}"


def _stale_message(
    metric: str,
    namespace: str,
    stale: Sequence[SeriesPoint],
    matched: Sequence[SeriesPoint],
    now: float,
    max_age: float,
) -> str:
    """``stale: last data N s ago from TARGET`` for the oldest stale series, then context."""
    oldest = min(stale, key=lambda p: p.timestamp)
    source = oldest.source or "its targets"
    if math.isfinite(oldest.timestamp):
        head = f"stale: last data {now - oldest.timestamp:.0f} s ago from {source}"
    else:
        head = f"stale: no data yet from {source}"
    return (
        f"{head} (metric {metric} in namespace {namespace}: {len(stale)} of {len(matched)} "
        f"matching series have no data younger than {max_age:g}s); holding rather than "
        "reporting a guess"
    )


class SnapshotSource(Protocol):
    def __call__(self) -> Snapshot: ...


class Clock(Protocol):
    def __call__(self) -> float: ...


# --- custom metrics (custom.metrics.k8s.io): metrics that describe an object -----------------

PODS = "pods"
DEPLOYMENTS = "deployments.apps"

_RESOURCE_NAMES = {
    "pods": PODS,
    "pod": PODS,
    "deployments.apps": DEPLOYMENTS,
    "deployment.apps": DEPLOYMENTS,
    "deployments": DEPLOYMENTS,
    "deployment": DEPLOYMENTS,
}


def normalize_resource(resource: str) -> str:
    """The group-resource a path segment names: plural, group-qualified (``pod`` -> ``pods``,
    ``deployments`` -> ``deployments.apps``), as prometheus-adapter's REST mapper resolves it;
    a resource that is not served is returned as given."""
    return _RESOURCE_NAMES.get(resource.lower(), resource)


@dataclass(frozen=True, slots=True)
class CustomMetricInfo:
    """A metric of one kind of object (custom-metrics-apiserver's ``CustomMetricInfo``):
    ``group_resource`` is e.g. ``pods`` or ``deployments.apps``."""

    group_resource: str
    metric: str
    namespaced: bool = True


@dataclass(frozen=True, slots=True)
class ObjectReference:
    """The object a value describes (``describedObject``)."""

    kind: str
    api_version: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class CustomMetricValue:
    described_object: ObjectReference
    metric: str
    value: float
    timestamp: float
    window_seconds: int | None


class ObjectMetricNotFoundError(LookupError):
    """The named object has no series of the metric (HTTP 404, as
    ``NewMetricNotFoundForError``)."""


class NoMatchingObjectsError(LookupError):
    """``labelSelector`` matches no object the adapter knows in the namespace (HTTP 404)."""


class AmbiguousSeriesError(ValueError):
    """One object has several series of a metric that does not add up (a mean or a ratio,
    one per model): the request must select one with ``metricLabelSelector`` (HTTP 400)."""


class UnsupportedSelectorError(ValueError):
    """A ``labelSelector`` over objects whose labels the adapter does not know (HTTP 400)."""


class CustomMetricsProvider(Protocol):
    def list_all_metrics(self) -> Sequence[CustomMetricInfo]: ...

    def get_metric_by_name(
        self, namespace: str, name: str, info: CustomMetricInfo, metric_selector: Selector
    ) -> CustomMetricValue:
        """The value of ``info.metric`` for one object.

        Raises MetricNotFoundError, ObjectMetricNotFoundError, AmbiguousSeriesError or
        StaleMetricError.
        """
        ...

    def get_metric_by_selector(
        self,
        namespace: str,
        selector: Selector,
        info: CustomMetricInfo,
        metric_selector: Selector,
    ) -> list[CustomMetricValue]:
        """One value per object matching ``selector`` that has a fresh value, never empty.

        Objects without a fresh value are left out (a partial answer: the HPA treats them as
        missing pods); when none has one, raises StaleMetricError or NoMatchingSeriesError.
        Also raises MetricNotFoundError, NoMatchingObjectsError, AmbiguousSeriesError and
        UnsupportedSelectorError.
        """
        ...


_OBJECT_KINDS = {PODS: ("Pod", "v1"), DEPLOYMENTS: ("Deployment", "apps/v1")}
_OBJECT_LABEL = {PODS: "pod", DEPLOYMENTS: "deployment"}


class SnapshotCustomMetricsProvider:
    """Pods and Deployment metrics from the pipeline's published snapshot.

    A pod's values are the snapshot's per-pod series (labelled ``pod``) and ``labelSelector``
    selects among the pods the snapshot knows, by their own labels; a Deployment's values are
    the group series labelled with its name. When one object has several series matching
    ``metricLabelSelector`` (one per model), counts and rates are summed, as the HPA sums
    external series; means and ratios cannot be, and the request must pick one series.
    """

    def __init__(
        self,
        current: SnapshotSource,
        clock: Clock,
        max_age_seconds: float,
        *,
        pod_metrics: Iterable[str] = POD_METRIC_NAMES,
        pod_aliases: Mapping[str, str] = POD_METRIC_ALIASES,
        deployment_metrics: Iterable[str] = DEPLOYMENT_METRIC_NAMES,
        additive: Iterable[str] = ADDITIVE_METRICS,
    ) -> None:
        self._current = current
        self._clock = clock
        self._max_age = max_age_seconds
        pods = {name: name for name in pod_metrics}
        pods.update(pod_aliases)
        self._sources = {PODS: pods, DEPLOYMENTS: {name: name for name in deployment_metrics}}
        self._additive = frozenset(additive)
        self._infos = tuple(
            CustomMetricInfo(resource, metric)
            for resource, metrics in self._sources.items()
            for metric in metrics
        )

    def list_all_metrics(self) -> Sequence[CustomMetricInfo]:
        return self._infos

    def _source(self, info: CustomMetricInfo) -> str:
        """The snapshot metric ``info`` reads; MetricNotFoundError if it is not served."""
        source = self._sources.get(info.group_resource, {}).get(info.metric)
        if source is None or not info.namespaced:
            raise MetricNotFoundError(
                f"the server could not find the metric {info.metric} for {info.group_resource}"
            )
        return source

    def _points(
        self, snapshot: Snapshot, resource: str, source: str, namespace: str
    ) -> Sequence[SeriesPoint]:
        """``source``'s series in ``namespace`` (per pod for pods), from the index."""
        if resource == PODS:
            return snapshot.pod_points_in(source, namespace)
        return snapshot.points_in(source, namespace)

    def _object_points(
        self, snapshot: Snapshot, resource: str, source: str, namespace: str, name: str
    ) -> Sequence[SeriesPoint]:
        """``source``'s series of the object ``name`` in ``namespace``, from the index."""
        label = _OBJECT_LABEL[resource]
        if resource == PODS:
            return snapshot.pod_points_of(source, namespace, label, name)
        return snapshot.points_of(source, namespace, label, name)

    def get_metric_by_name(
        self, namespace: str, name: str, info: CustomMetricInfo, metric_selector: Selector
    ) -> CustomMetricValue:
        source = self._source(info)
        points = [
            p
            for p in self._object_points(
                self._current(), info.group_resource, source, namespace, name
            )
            if metric_selector.matches(p.labels)
        ]
        where = f"{info.group_resource} {name}"
        if not points:
            raise ObjectMetricNotFoundError(
                f"the server could not find the metric {info.metric} for {where}"
                + _with_metric_selector(metric_selector)
                + f" in namespace {namespace}"
            )
        value = self._combine(info, namespace, name, points, metric_selector)
        problem = self._problem(value)
        if problem is not None:
            raise StaleMetricError(
                f"metric {info.metric} for {where} in namespace {namespace}: {problem}; "
                "holding rather than reporting a guess"
            )
        return value

    def get_metric_by_selector(
        self,
        namespace: str,
        selector: Selector,
        info: CustomMetricInfo,
        metric_selector: Selector,
    ) -> list[CustomMetricValue]:
        source = self._source(info)
        snapshot = self._current()
        resource = info.group_resource
        key = _OBJECT_LABEL[resource]
        by_object: dict[str, list[SeriesPoint]] = {}
        for p in self._points(snapshot, resource, source, namespace):
            name = p.labels.get(key)
            if name and metric_selector.matches(p.labels):
                by_object.setdefault(name, []).append(p)
        if resource == PODS:
            known = snapshot.pods_in(namespace)
            objects = sorted(n for n in known if selector.matches(snapshot.pods[(namespace, n)]))
            if not objects:
                raise NoMatchingObjectsError(
                    f"no pod in namespace {namespace} matches labelSelector "
                    f"{selector.source!r} (tritonscale knows the {len(known)} Triton pods "
                    "it scrapes there)"
                )
        else:
            if not selector.is_everything():
                raise UnsupportedSelectorError(
                    f"labelSelector over {resource} is not supported (tritonscale does not "
                    "know Deployments' labels): name the Deployment, as an HPA Object "
                    "metric does"
                )
            objects = sorted(by_object)
        values: list[CustomMetricValue] = []
        problems: list[str] = []
        for name in objects:
            points = by_object.get(name)
            if not points:
                continue  # no series: the HPA counts the pod as missing
            value = self._combine(info, namespace, name, points, metric_selector)
            problem = self._problem(value)
            if problem is None:
                values.append(value)
            else:
                problems.append(f"{name}: {problem}")
        if values:
            return values
        if problems:
            raise StaleMetricError(
                f"metric {info.metric} in namespace {namespace}: no {resource} matching "
                f"labelSelector {selector.source!r} has a known value ({'; '.join(problems)}); "
                "holding rather than reporting a guess"
            )
        raise NoMatchingSeriesError(
            f"the server could not find the metric {info.metric} for {resource} matching "
            f"labelSelector {selector.source!r} in namespace {namespace}"
            + _with_metric_selector(metric_selector)
        )

    def _combine(
        self,
        info: CustomMetricInfo,
        namespace: str,
        name: str,
        points: Sequence[SeriesPoint],
        metric_selector: Selector,
    ) -> CustomMetricValue:
        """One object's value from its series: the one, or the sum of additive ones."""
        kind, api_version = _OBJECT_KINDS[info.group_resource]
        reference = ObjectReference(kind, api_version, namespace, name)
        if len(points) > 1 and self._source(info) not in self._additive:
            varying = sorted(
                {k for p in points for k, v in p.labels.items() if points[0].labels.get(k) != v}
                | {k for p in points for k in points[0].labels if k not in p.labels}
            )
            series = ", ".join(
                "{" + ",".join(f"{k}={p.labels.get(k, '')}" for k in varying) + "}" for p in points
            )
            raise AmbiguousSeriesError(
                f"{info.group_resource} {name} in namespace {namespace} has {len(points)} "
                f"series of metric {info.metric} matching metricLabelSelector "
                f"{metric_selector.source!r}: {series}; {info.metric} is a mean or a ratio, "
                "so they cannot be added up: select one with the HPA metric's selector "
                "(e.g. matchLabels on " + (varying[0] if varying else "model") + ")"
            )
        windows = [p.window_seconds for p in points if p.window_seconds is not None]
        return CustomMetricValue(
            described_object=reference,
            metric=info.metric,
            value=math.fsum(p.value for p in points),
            timestamp=min(p.timestamp for p in points),
            window_seconds=max(windows) if windows else None,
        )

    def _problem(self, value: CustomMetricValue) -> str | None:
        """Why ``value`` may not be served (stale, or not a number yet); None if it may."""
        age = self._clock() - value.timestamp
        if age > self._max_age:
            return f"no data younger than {self._max_age:g}s (newest {age:.1f}s old)"
        if not math.isfinite(value.value):
            return "no value yet (not enough data to compute it)"
        return None


def _with_metric_selector(selector: Selector) -> str:
    return "" if selector.is_everything() else f" with metricLabelSelector {selector.source!r}"


__all__ = [
    "DEPLOYMENTS",
    "PODS",
    "AmbiguousSeriesError",
    "Clock",
    "CustomMetricInfo",
    "CustomMetricValue",
    "CustomMetricsProvider",
    "ExternalMetricValue",
    "ExternalMetricsProvider",
    "MetricNotFoundError",
    "NoMatchingObjectsError",
    "NoMatchingSeriesError",
    "ObjectMetricNotFoundError",
    "ObjectReference",
    "SeriesPoint",
    "SnapshotCustomMetricsProvider",
    "SnapshotProvider",
    "SnapshotSource",
    "StaleMetricError",
    "UnsupportedSelectorError",
    "normalize_resource",
]
