"""The published snapshot: what the API serves, built by the pipeline, read by handlers.

The pipeline builds a new :class:`Snapshot` after each signal pass and swaps it in
atomically (one reference assignment); API handlers only ever read the current one,
so no request waits on a scrape and no request sees a half-built state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One served value of one series.

    ``labels`` identify the series (always includes ``namespace``); ``value`` is in the
    metric's own unit (requests, requests/s, seconds, ratio); ``timestamp`` is the Unix
    time (s) of the newest scrape the value is built from; ``window_seconds`` is the
    averaging window, if any. ``value`` may be NaN only when no value can be computed yet;
    such a point is never served. ``source`` names the scrape target (URL) whose newest data
    is the oldest behind the value, so a stale answer can say where data stopped coming from.
    """

    labels: Mapping[str, str]
    value: float
    timestamp: float
    window_seconds: int | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """A metric the adapter serves, for discovery and OpenAPI.

    ``served_beside``/``absent_because`` explain a 404: where a series of ``served_beside``
    matches a request but none of this metric does, ``absent_because`` says why (e.g. the
    replica count needs a capacity), instead of a bare "no series matches".
    """

    name: str
    description: str
    unit: str
    served_beside: str | None = None
    absent_because: str = ""


PodKey = tuple[str, str]
"""``(namespace, pod name)``."""


def _empty() -> Mapping[str, tuple[SeriesPoint, ...]]:
    return MappingProxyType({})


def _no_pods() -> Mapping[PodKey, Mapping[str, str]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable view of every series, keyed by metric name.

    ``built_at`` is the Unix time (s) the snapshot was published. ``series`` are the group
    series (one per model and group of pods, e.g. a Deployment). ``pod_series`` are the same
    signals per pod: their labels are the group's plus ``pod`` (the pod's name), whatever
    produced them (scraping each pod, or a per-pod query). ``pods`` maps every pod with
    per-pod series to its own Kubernetes labels, which custom metrics' ``labelSelector``
    selects on.
    """

    built_at: float = 0.0
    series: Mapping[str, tuple[SeriesPoint, ...]] = field(default_factory=_empty)
    pod_series: Mapping[str, tuple[SeriesPoint, ...]] = field(default_factory=_empty)
    pods: Mapping[PodKey, Mapping[str, str]] = field(default_factory=_no_pods)

    def points(self, metric: str) -> tuple[SeriesPoint, ...]:
        return self.series.get(metric, ())

    def pod_points(self, metric: str) -> tuple[SeriesPoint, ...]:
        return self.pod_series.get(metric, ())
