"""The one protocol between the HTTP layer and the data.

Modelled on custom-metrics-apiserver's ``ExternalMetricsProvider``: the API layer asks
for the metrics it may list and for the values of one metric in one namespace under a
label selector; it never sees scrapes, targets or windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from adapter.kube.selectors import Selector
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
    ``max_age_seconds``: data older than this is not served (the HPA holds).
    """

    def __init__(
        self,
        metrics: Sequence[MetricInfo],
        current: SnapshotSource,
        clock: Clock,
        max_age_seconds: float,
    ) -> None:
        self._metrics = tuple(metrics)
        self._names = frozenset(m.name for m in metrics)
        self._current = current
        self._clock = clock
        self._max_age = max_age_seconds

    def list_all_external_metrics(self) -> Sequence[MetricInfo]:
        return self._metrics

    def get_external_metric(
        self, namespace: str, metric: str, selector: Selector
    ) -> list[ExternalMetricValue]:
        if metric not in self._names:
            raise MetricNotFoundError(metric)
        snapshot = self._current()
        matched = [
            p
            for p in snapshot.points(metric)
            if p.labels.get("namespace") == namespace and selector.matches(p.labels)
        ]
        if not matched:
            raise NoMatchingSeriesError(
                f"no series of metric {metric} in namespace {namespace} "
                f"matches selector {selector.source!r}"
            )
        max_age = self._max_age
        now = self._clock()
        stale = [p for p in matched if now - p.timestamp > max_age]
        if stale:
            oldest = max(now - p.timestamp for p in stale)
            raise StaleMetricError(
                f"metric {metric} in namespace {namespace}: {len(stale)} of {len(matched)} "
                f"matching series have no data younger than {max_age:g}s "
                f"(oldest {oldest:.1f}s); holding rather than reporting a guess"
            )
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


class SnapshotSource(Protocol):
    def __call__(self) -> Snapshot: ...


class Clock(Protocol):
    def __call__(self) -> float: ...


__all__ = [
    "Clock",
    "ExternalMetricValue",
    "ExternalMetricsProvider",
    "MetricNotFoundError",
    "NoMatchingSeriesError",
    "SeriesPoint",
    "SnapshotProvider",
    "SnapshotSource",
    "StaleMetricError",
]
