"""The live page's history: a bounded ring per series, fed from each published snapshot.

The pipeline publishes a snapshot and calls :meth:`SeriesRecorder.record` with it (a
subscriber downstream of the snapshot); the recorder copies what the page draws into one ring
per series; the page's handlers only read the rings. Nothing flows back.

Per series (one model in one group, as ``triton_arrival_rate`` labels it) a row holds, at the
snapshot's publish time: the arrival rate, the queue depth, the point forecast and the rate
the plan is sized for (``triton_arrival_rate_forecast``; both drawn ``horizon_seconds`` later,
at the time they forecast), the desired replicas and the Triton pods scraped. A value the API
would not serve (older than the max age, or not known) is recorded as NaN, never 0. Beside the
rows, each series keeps what its policy aims for at its last step (:data:`AIM_FIELDS`: the
stated attainment, the violation budget its last plan spent, that plan's margin and
utilisation), from the headroom's state.

Bounds: at most one row per ``step_seconds`` (the publish step), ``window_seconds`` of rows
(one hour by default) and ``max_series`` rings: a series that appears while every ring is in
use is not recorded (counted in ``unrecorded_series``, shown on the page) until a ring is
freed; a ring is freed once its series has been absent from the snapshot for a whole window.
Memory: ``max_series * window_seconds / step_seconds * 32`` bytes at most (about 23 MB for
200 series at a 1 s step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from adapter.predictive import ARRIVAL_FORECAST, DESIRED_REPLICAS
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH, Labels
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.views import ForecastView

COLUMNS = ("arrival", "queue_depth", "point", "upper", "desired", "replicas")
"""The recorded values of a row, in order (req/s, requests, req/s, req/s, replicas, pods)."""

_FROM_SNAPSHOT = {
    ARRIVAL_RATE: COLUMNS.index("arrival"),
    QUEUE_DEPTH: COLUMNS.index("queue_depth"),
    ARRIVAL_FORECAST: COLUMNS.index("upper"),
    DESIRED_REPLICAS: COLUMNS.index("desired"),
}
_POINT = COLUMNS.index("point")

AIM_FIELDS = ("slo_attainment", "budget", "margin", "utilisation")
"""What a series' policy aims for (share, share, req/s over the point forecast, share; NaN:
not known, e.g. before the first plan or with a headroom that has no such setting)."""
_REPLICAS = COLUMNS.index("replicas")


@dataclass(frozen=True, slots=True)
class SeriesRows:
    """Rows of one series, oldest first: ``times`` (Unix s) and one list per column of
    :data:`COLUMNS` (NaN: not known; stored in float32). ``latest``: the newest row at full
    precision, as the API served it. ``horizon_seconds``: how far ahead the forecast columns
    look (NaN without a predictive state). ``aim``: :data:`AIM_FIELDS` at the series' last
    step (NaN: not known)."""

    labels: Mapping[str, str]
    horizon_seconds: float
    times: list[float]
    columns: dict[str, list[float]]
    latest: dict[str, float]
    aim: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NamespaceRows:
    """What the page of one namespace shows: its series' rows after ``since``."""

    namespace: str
    recorded_at: float
    step_seconds: float
    window_seconds: float
    max_series: int
    unrecorded_series: int
    series: tuple[SeriesRows, ...]


class _Ring:
    """A fixed-size ring of rows; times in float64, values in float32 (what a page draws)."""

    __slots__ = ("aim_of", "count", "head", "horizon", "labels", "latest", "times", "values")

    def __init__(self, capacity: int, labels: Mapping[str, str]) -> None:
        self.labels = dict(labels)
        # np.full writes every slot now: calloc'ed (np.zeros) pages would be committed one by
        # one as the ring fills, so RSS would climb for a whole window (an hour by default)
        # and look like a leak; this way the memory a ring holds is held from its first row
        self.times = np.full(capacity, np.nan, dtype=np.float64)
        self.values = np.full((capacity, len(COLUMNS)), np.nan, dtype=np.float32)
        self.head = 0  # slot of the next write
        self.count = 0
        self.horizon = math.nan
        self.aim_of: ForecastView | None = None  # read when a page is drawn, not per row
        self.latest = np.full(len(COLUMNS), np.nan, dtype=np.float64)

    def append(self, when: float, row: npt.NDArray[np.float64]) -> None:
        self.latest = row
        self.times[self.head] = when
        self.values[self.head] = row
        self.head = (self.head + 1) % len(self.times)
        self.count = min(self.count + 1, len(self.times))

    @property
    def newest(self) -> float:
        return float(self.times[(self.head - 1) % len(self.times)]) if self.count else -math.inf

    def rows_after(self, since: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        capacity = len(self.times)
        order = (self.head - self.count + np.arange(self.count)) % capacity
        times = self.times[order]
        first = int(np.searchsorted(times, since, side="right"))
        return times[first:], self.values[order[first:]]


class SeriesRecorder:
    """Keeps the last ``window_seconds`` of every series the page shows (see module docstring).

    ``forecasts`` returns the predictive stage's per-series views (the point forecast, the
    horizon and the replicas fed to the policy are not in the snapshot); ``max_age_seconds``
    is the API's: older values are recorded as unknown.
    """

    def __init__(
        self,
        *,
        step_seconds: float,
        max_age_seconds: float,
        window_seconds: float = 3600.0,
        max_series: int = 200,
        forecasts: Callable[[], Iterable[ForecastView]] = tuple,
    ) -> None:
        if not step_seconds > 0 or not window_seconds >= step_seconds or max_series < 1:
            raise ValueError(
                "SeriesRecorder needs step_seconds > 0, window_seconds >= step_seconds and "
                f"max_series >= 1 (got {step_seconds}, {window_seconds}, {max_series})"
            )
        self.step_seconds = step_seconds
        self.window_seconds = window_seconds
        self.max_series = max_series
        self._max_age = max_age_seconds
        self._forecasts = forecasts
        self._capacity = math.ceil(window_seconds / step_seconds) + 1
        self._rings: dict[Labels, _Ring] = {}
        self._last = -math.inf
        self._unrecorded: dict[str, int] = {}

    # -- writing (the pipeline's publish) ----------------------------------------------

    def record(self, snapshot: Snapshot) -> None:
        """Append one row per series of ``snapshot``, at most once per step."""
        now = snapshot.built_at
        if now < self._last + self.step_seconds * 0.999:
            return
        self._last = now
        rows: dict[Labels, npt.NDArray[np.float64]] = {}
        labels_of: dict[Labels, Mapping[str, str]] = {}

        def row(labels: Mapping[str, str]) -> npt.NDArray[np.float64]:
            key = _key(labels)
            found = rows.get(key)
            if found is None:
                found = rows[key] = np.full(len(COLUMNS), np.nan, dtype=np.float64)
                labels_of[key] = labels
            return found

        for point in snapshot.points(ARRIVAL_RATE):
            row(point.labels)[_FROM_SNAPSHOT[ARRIVAL_RATE]] = self._known(point, now)
        for metric, column in _FROM_SNAPSHOT.items():
            if metric == ARRIVAL_RATE:
                continue
            for point in snapshot.points(metric):
                key = _key(point.labels)
                if key in rows:
                    rows[key][column] = self._known(point, now)
        horizons: dict[Labels, float] = {}
        aims: dict[Labels, ForecastView] = {}
        for view in self._forecasts():
            key = _key(view.labels)
            if key in rows:
                fresh = now - view.input_time <= self._max_age
                rows[key][_POINT] = view.point if fresh else math.nan
                rows[key][_REPLICAS] = view.input_replicas
                horizons[key] = view.horizon_seconds
                aims[key] = view

        unrecorded: dict[str, int] = {}
        for key, values in rows.items():
            ring = self._rings.get(key)
            if ring is None:
                if len(self._rings) >= self.max_series:
                    namespace = labels_of[key].get("namespace", "")
                    unrecorded[namespace] = unrecorded.get(namespace, 0) + 1
                    continue
                ring = self._rings[key] = _Ring(self._capacity, labels_of[key])
            ring.horizon = horizons.get(key, ring.horizon)
            ring.aim_of = aims.get(key, ring.aim_of)
            ring.append(now, values)
        self._unrecorded = unrecorded
        oldest = now - self.window_seconds
        for key in [k for k, ring in self._rings.items() if ring.newest < oldest]:
            del self._rings[key]

    def _known(self, point: SeriesPoint, now: float) -> float:
        fresh = now - point.timestamp <= self._max_age
        return point.value if fresh and math.isfinite(point.value) else math.nan

    # -- reading (the page's handlers) -------------------------------------------------

    @property
    def series_count(self) -> int:
        return len(self._rings)

    @property
    def unrecorded_series(self) -> int:
        """Series of the last snapshot that have no ring (``max_series`` reached)."""
        return sum(self._unrecorded.values())

    def namespaces(self) -> list[str]:
        """Namespaces with a recorded series or an unrecorded one, sorted."""
        names = {ring.labels.get("namespace", "") for ring in self._rings.values()}
        return sorted(names | set(self._unrecorded))

    def rows(self, namespace: str, since: float = -math.inf) -> NamespaceRows:
        """The namespace's series with their rows newer than ``since`` (Unix s)."""
        series = []
        for ring in self._rings.values():
            if ring.labels.get("namespace") != namespace:
                continue
            times, values = ring.rows_after(since)
            columns = {
                name: values[:, i].astype(np.float64).tolist() for i, name in enumerate(COLUMNS)
            }
            latest = dict(zip(COLUMNS, ring.latest.tolist(), strict=True))
            series.append(
                SeriesRows(
                    ring.labels, ring.horizon, times.tolist(), columns, latest, _aim(ring.aim_of)
                )
            )
        series.sort(key=lambda s: sorted(s.labels.items()))
        return NamespaceRows(
            namespace=namespace,
            recorded_at=self._last,
            step_seconds=self.step_seconds,
            window_seconds=self.window_seconds,
            max_series=self.max_series,
            unrecorded_series=self._unrecorded.get(namespace, 0),
            series=tuple(series),
        )


def _aim(view: ForecastView | None) -> dict[str, float]:
    """:data:`AIM_FIELDS` from the headroom's state (NaN where it has no such value, or
    before the series' first view)."""
    if view is None:
        return dict.fromkeys(AIM_FIELDS, math.nan)
    headroom = view.policy.headroom
    target = dict(headroom.target)
    details = dict(headroom.details)
    return {
        "slo_attainment": target.get("slo_attainment", math.nan),
        "budget": details.get("budget_now", math.nan),
        "margin": headroom.margin,
        "utilisation": details.get("utilisation", math.nan),
    }


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))
