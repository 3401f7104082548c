"""The published snapshot: what the API serves, built by the pipeline, read by handlers.

The pipeline builds a new :class:`Snapshot` after each signal pass and swaps it in
atomically (one reference assignment); API handlers only ever read the current one,
so no request waits on a scrape and no request sees a half-built state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple


class SeriesPoint(NamedTuple):
    """One served value of one series.

    ``labels`` identify the series (always includes ``namespace``); ``value`` is in the
    metric's own unit (requests, requests/s, seconds, ratio); ``timestamp`` is the Unix
    time (s) of the newest scrape the value is built from; ``window_seconds`` is the
    averaging window, if any. ``value`` may be NaN only when no value can be computed yet;
    such a point is never served. ``source`` names the scrape target (URL) whose newest data
    is the oldest behind the value, so a stale answer can say where data stopped coming from.

    A named tuple, not a dataclass: every publish builds one per series, and the API process
    rebuilds them from the snapshot feed, where a tuple is built in half the time
    (``python -m loadtest.bench.feed``).
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

_NO_POINTS: tuple[SeriesPoint, ...] = ()
_UNSET = object()


@dataclass(frozen=True, slots=True)
class SeriesIndex:
    """One metric map's series grouped by namespace and by the object they describe.

    Built once when a snapshot is made (O(series)) and never changed, so a request reads
    only its own namespace's series of one metric: its cost does not grow with the number of
    series elsewhere in the snapshot. ``by_namespace[(metric, namespace)]`` and
    ``by_object[(metric, namespace, label, value)]`` (label ``deployment`` or ``pod``) keep
    the snapshot's order; ``namespaces[metric]`` are sorted. ``object_label`` is the label
    naming the object a series describes (``deployment`` for group series, ``pod`` per pod).
    """

    by_namespace: Mapping[tuple[str, str], Sequence[SeriesPoint]]
    by_object: Mapping[tuple[str, str, str, str], Sequence[SeriesPoint]]
    namespaces: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, series: Mapping[str, Sequence[SeriesPoint]], object_label: str) -> SeriesIndex:
        """Index ``series`` in one go."""
        builder = SeriesIndexBuilder(object_label)
        for metric, points in series.items():
            builder.add(metric, points)
        return builder.build()


class SeriesIndexBuilder:
    """Builds a :class:`SeriesIndex` a slice of series at a time (the API process indexes a
    snapshot frame by frame as it arrives, so no single step indexes all of it).

    A group's series are adjacent in the snapshot, so the lists to append to are looked up
    only when the namespace or the object changes."""

    def __init__(self, object_label: str) -> None:
        self._label = object_label
        self._by_namespace: dict[tuple[str, str], list[SeriesPoint]] = {}
        self._by_object: dict[tuple[str, str, str, str], list[SeriesPoint]] = {}

    def add(self, metric: str, points: Iterable[SeriesPoint]) -> None:
        """Index ``points`` of ``metric``, after those already added (order is kept)."""
        by_namespace, by_object, object_label = self._by_namespace, self._by_object, self._label
        no_object: list[SeriesPoint] = []  # points without the object label: not indexed
        namespace: str | None = None
        name: str | object | None = _UNSET
        in_namespace = in_object = no_object
        for point in points:
            labels = point.labels
            point_namespace = labels.get("namespace", "")
            if point_namespace != namespace:
                namespace = point_namespace
                in_namespace = by_namespace.setdefault((metric, namespace), [])
                name = _UNSET
            in_namespace.append(point)
            point_name = labels.get(object_label)
            if point_name != name:
                name = point_name
                in_object = (
                    by_object.setdefault((metric, namespace, object_label, point_name), [])
                    if point_name
                    else no_object
                )
            in_object.append(point)

    def build(self) -> SeriesIndex:
        """The index. Its lists are handed over, not copied (a copy of every list would
        double the swap's time in the API process): add nothing after this."""
        namespaces: dict[str, list[str]] = {}
        for metric, namespace in self._by_namespace:
            namespaces.setdefault(metric, []).append(namespace)
        return SeriesIndex(
            MappingProxyType(self._by_namespace),
            MappingProxyType(self._by_object),
            MappingProxyType({metric: tuple(sorted(n)) for metric, n in namespaces.items()}),
        )


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

    Handlers read through the ``*_in`` / ``*_of`` methods: they use indexes built once per
    snapshot (the per-pod one on first use), so a request touches only its namespace's
    series of its metric.
    """

    built_at: float = 0.0
    series: Mapping[str, tuple[SeriesPoint, ...]] = field(default_factory=_empty)
    pod_series: Mapping[str, tuple[SeriesPoint, ...]] = field(default_factory=_empty)
    pods: Mapping[PodKey, Mapping[str, str]] = field(default_factory=_no_pods)
    _series_index: SeriesIndex = field(init=False, repr=False, compare=False)
    _pod_index: SeriesIndex | None = field(init=False, repr=False, compare=False)
    _pods_by_namespace: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pods_by_namespace: dict[str, list[str]] = {}
        for namespace, pod in self.pods:
            pods_by_namespace.setdefault(namespace, []).append(pod)
        object.__setattr__(self, "_series_index", SeriesIndex.of(self.series, "deployment"))
        object.__setattr__(self, "_pod_index", None)  # built by the first per-pod request
        object.__setattr__(
            self,
            "_pods_by_namespace",
            MappingProxyType({ns: tuple(names) for ns, names in pods_by_namespace.items()}),
        )

    @classmethod
    def with_pod_index(
        cls,
        built_at: float,
        series: Mapping[str, tuple[SeriesPoint, ...]],
        pod_series: Mapping[str, tuple[SeriesPoint, ...]],
        pods: Mapping[PodKey, Mapping[str, str]],
        pod_index: SeriesIndex,
    ) -> Snapshot:
        """A snapshot whose per-pod index was built as its series arrived (the API process,
        frame by frame), so that no request pays for building it; ``pod_index`` must index
        exactly ``pod_series``."""
        snapshot = cls(built_at, series, pod_series, pods)
        object.__setattr__(snapshot, "_pod_index", pod_index)
        return snapshot

    def points(self, metric: str) -> tuple[SeriesPoint, ...]:
        """Every series of ``metric``, all namespaces (for pages and self-metrics, not
        requests: see :meth:`points_in`)."""
        return self.series.get(metric, ())

    def pod_points(self, metric: str) -> tuple[SeriesPoint, ...]:
        return self.pod_series.get(metric, ())

    def points_in(self, metric: str, namespace: str) -> Sequence[SeriesPoint]:
        """The series of ``metric`` in ``namespace``, from the index (no scan)."""
        return self._series_index.by_namespace.get((metric, namespace), _NO_POINTS)

    def pod_points_in(self, metric: str, namespace: str) -> Sequence[SeriesPoint]:
        """The per-pod series of ``metric`` in ``namespace``, from the index (no scan)."""
        return self._pods_index().by_namespace.get((metric, namespace), _NO_POINTS)

    def points_of(
        self, metric: str, namespace: str, label: str, name: str
    ) -> Sequence[SeriesPoint]:
        """The group series of ``metric`` labelled ``label=name`` (``deployment``)."""
        return self._series_index.by_object.get((metric, namespace, label, name), _NO_POINTS)

    def pod_points_of(
        self, metric: str, namespace: str, label: str, name: str
    ) -> Sequence[SeriesPoint]:
        """The per-pod series of ``metric`` labelled ``label=name`` (``pod``)."""
        return self._pods_index().by_object.get((metric, namespace, label, name), _NO_POINTS)

    def _pods_index(self) -> SeriesIndex:
        """The per-pod series' index, built on first use and kept with this snapshot: the
        per-pod series outnumber the group series by the pods per Deployment, and only the
        custom metrics API's Pods requests read them, so a publish does not pay for it and
        the first such request after a publish pays it once (what every request paid before
        the snapshot was indexed)."""
        index = self._pod_index
        if index is None:
            index = SeriesIndex.of(self.pod_series, "pod")
            object.__setattr__(self, "_pod_index", index)
        return index

    def namespaces_of(self, metric: str) -> tuple[str, ...]:
        """The namespaces that have a series of ``metric``, sorted."""
        return self._series_index.namespaces.get(metric, ())

    def pods_in(self, namespace: str) -> tuple[str, ...]:
        """The names of the pods with per-pod series in ``namespace``."""
        return self._pods_by_namespace.get(namespace, ())
