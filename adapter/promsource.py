"""Prometheus as a source: a group's signals read with PromQL instead of scraped from its pods.

For fleets where Prometheus (or Thanos, Mimir, Cortex: anything serving Prometheus' HTTP query
API) already scrapes Triton, or that are larger than one adapter can scrape, a configured group
(``sources.prometheus[].groups[]``) is read with **one instant query per group and refresh**
(``/api/v1/query``, POST, so hundreds of pods never make a URL too long). The query returns the
*parts* of every signal per pod and model, each tagged with a ``tritonscale_signal`` label and
joined with ``or``, all evaluated at one instant over the same window W.
``M`` is the group's matchers, every part is per pod and model (``sum by (pod, model)``):

* ``up``, ``seen``: ``up{M}`` and ``timestamp(up{M})`` (a target down; the reading's time);
* ``present``: ``count(nv_inference_request_success{M})`` (the models a pod serves);
* ``pending``: ``sum(nv_inference_pending_request_count{M})`` (queue depth);
* ``completed``: ``sum(rate({__name__=~"nv_inference_request_(success|failure)",M}[W]))``;
* ``pending_delta``: ``sum(delta(nv_inference_pending_request_count{M}[W]))`` (backlog growth);
* ``success``, ``queue_us``, ``compute_us``: ``sum(increase(...[W]))`` of the success,
  queue-duration and compute-infer-duration counters (Δsuccess, Δqueue_us, Δcompute_us);
* GPU: ``nv_gpu_utilization{M}`` and dcgm-exporter's series of the group's namespace, raw, so
  their devices join the pods as scraped ones do (:mod:`adapter.gpus`).

The parts become :class:`~adapter.signals.ModelWindow` s and go through the scrape path's own
:func:`~adapter.signals.model_signals`, and the group's through the same sums, so every rule is
the same: arrival rate = completions + backlog growth (``pending_delta / W``), queue time =
Δqueue_us / Δsuccess (and its edge cases), the ratio's unknown cases, absent families absent,
never 0. Where they differ: ``rate()``/``increase()`` add counter resets back instead of
holding for a window after a restart, and extrapolate the sampled span to the window's edges
(the same factor for every part of one target, so ratios do not move); the values trail the
pods by up to Prometheus' scrape interval plus the refresh interval
(``loadtest/bench/signal_lag.py`` measures it).

Staleness is the scrape path's: each value carries the time of its newest sample
(``timestamp(up)``), and the group's the oldest of its pods'. A query that fails, a Prometheus
that is down or an empty answer keep the last values, which age until the API answers 503; a
pod whose target is down (``up == 0``) holds its group's series likewise (never a smaller sum);
a pod that left Prometheus' targets leaves the group.

At start, :meth:`PrometheusSource.warm_history` reads the same parts with one range query per
group over ``warm_start_seconds`` at the refresh interval, so the predictive stage can replay
the recent arrival rates into its forecasters and serve a warm forecast at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from adapter.config import PrometheusGroupConfig, PrometheusSourceConfig, SignalsConfig
from adapter.gpus import (
    DCGM_ENGINE,
    DCGM_UTIL,
    TRITON_GPU,
    DcgmLabels,
    GpuSample,
    dcgm_samples,
    gpu_sample,
    mean_utilization,
)
from adapter.readings import ModelKey
from adapter.signals import (
    ARRIVAL_RATE,
    GPU_UTILIZATION,
    QUEUE_DEPTH,
    Labels,
    ModelWindow,
    SourcedSeries,
    WarmSample,
    model_signals,
    pod_group,
)
from adapter.snapshot import PodKey, SeriesPoint

log = logging.getLogger(__name__)

SIGNAL_LABEL = "tritonscale_signal"
"""The label each part of a group's query is tagged with."""

MAX_RESPONSE_BYTES = 64 * 1024 * 1024

Row = tuple[Mapping[str, str], float]
Rows = dict[str, list[Row]]  # by part
SeriesKey = tuple[str, Labels]


class PrometheusSourceError(ValueError):
    """A source cannot be used as configured (an unreadable CA or token file); the message
    names the setting and the file. Raised at start."""


class PrometheusError(Exception):
    """A query failed; ``reason`` is a short label for logs (timeout, http_503, query, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# --- the query --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """What one group's query needs: its labels and matchers, the source's settings."""

    labels: Mapping[str, str]
    matchers: str
    pod_labels: Mapping[str, str]
    live: bool
    window_seconds: float
    pod_label: str
    sum_versions: bool
    gpu_names: DcgmLabels
    gpu_matchers: str

    @classmethod
    def create(
        cls, group: PrometheusGroupConfig, source: PrometheusSourceConfig, sum_versions: bool
    ) -> GroupSpec:
        return cls(
            labels=group.group_labels(),
            matchers=group.matchers.strip().removeprefix("{").removesuffix("}"),
            pod_labels=dict(group.pod_labels),
            live=group.live,
            window_seconds=source.rate_window_seconds,
            pod_label=source.pod_label,
            sum_versions=sum_versions,
            gpu_names=DcgmLabels(
                source.gpu_namespace_label, source.gpu_pod_label, source.gpu_container_label
            ),
            gpu_matchers=source.gpu_matchers.strip().removeprefix("{").removesuffix("}"),
        )

    @property
    def key(self) -> Labels:
        return tuple(sorted(self.labels.items()))

    def promql(self, *, gpu: bool = True) -> str:
        """The group's one query: every part, tagged, joined with ``or``."""
        m = self.matchers
        w = f"{max(1, round(self.window_seconds * 1000))}ms"
        pod = self.pod_label
        by = f"{pod}, model" if self.sum_versions else f"{pod}, model, version"
        completions = (
            f'{{__name__=~"nv_inference_request_success|nv_inference_request_failure",{m}}}'
        )
        parts = {
            "up": f"max by ({pod}) (up{{{m}}})",
            "seen": f"max by ({pod}) (timestamp(up{{{m}}}))",
            "present": f"count by ({by}) (nv_inference_request_success{{{m}}})",
            "pending": f"sum by ({by}) (nv_inference_pending_request_count{{{m}}})",
            "completed": f"sum by ({by}) (rate({completions}[{w}]))",
            "pending_delta": (
                f"sum by ({by}) (delta(nv_inference_pending_request_count{{{m}}}[{w}]))"
            ),
            "success": f"sum by ({by}) (increase(nv_inference_request_success{{{m}}}[{w}]))",
            "queue_us": f"sum by ({by}) (increase(nv_inference_queue_duration_us{{{m}}}[{w}]))",
            "compute_us": (
                f"sum by ({by}) (increase(nv_inference_compute_infer_duration_us{{{m}}}[{w}]))"
            ),
        }
        if gpu:
            namespace = self.labels["namespace"].replace("\\", "\\\\").replace('"', '\\"')
            dcgm = f'{self.gpu_names.namespace}="{namespace}"'
            if self.gpu_matchers:
                dcgm += f",{self.gpu_matchers}"
            parts[TRITON_GPU] = f"{TRITON_GPU}{{{m}}}"
            parts[DCGM_ENGINE] = f"{DCGM_ENGINE}{{{dcgm}}}"
            parts[DCGM_UTIL] = f"{DCGM_UTIL}{{{dcgm}}}"
        return " or ".join(
            f'label_replace({expr}, "{SIGNAL_LABEL}", "{name}", "", "")'
            for name, expr in parts.items()
        )


# --- from the parts to the signals ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One group at one instant: its series (empty when a pod is down), each pod's series,
    the pods whose target is down, and how many pods it has."""

    group: dict[str, list[SeriesPoint]]
    pods: dict[str, dict[str, list[SeriesPoint]]]
    down: frozenset[str]
    replicas: int


def evaluate(rows: Rows, spec: GroupSpec) -> Evaluation | None:
    """The group's signals from its query's parts; None when no target of the group is known
    (no ``up`` at all: Prometheus does not scrape it, or the matchers select nothing)."""
    pod_of = spec.pod_label

    def by_pod(part: str) -> dict[str, float]:
        return {labels.get(pod_of, ""): value for labels, value in rows.get(part, ())}

    up = by_pod("up")
    if not up:
        return None
    seen = by_pod("seen")
    down = frozenset(pod for pod, value in up.items() if value != 1.0)
    live = sorted(pod for pod in up if pod not in down)

    def by_model(part: str) -> dict[tuple[str, ModelKey], float]:
        values: dict[tuple[str, ModelKey], float] = {}
        for labels, value in rows.get(part, ()):
            model = labels.get("model")
            if model is not None:
                version = "" if spec.sum_versions else labels.get("version", "")
                values[(labels.get(pod_of, ""), (model, version))] = value
        return values

    present = by_model("present")
    pending = by_model("pending")
    completed = by_model("completed")
    growth = by_model("pending_delta")
    success = by_model("success")
    queue = by_model("queue_us")
    compute = by_model("compute_us")
    window = spec.window_seconds

    def pod_window(key: tuple[str, ModelKey]) -> ModelWindow | None:
        if key not in completed or key not in success:
            return None  # fewer than two samples in the window (new or restarted target): hold
        delta = growth.get(key)
        return ModelWindow(
            completed_rate=completed[key],
            pending_growth_rate=None if delta is None else delta / window,
            success=success[key],
            queue_us=queue.get(key),
            compute_us=compute.get(key),
        )

    base = dict(spec.labels)
    window_int = max(1, round(window))
    pods: dict[str, dict[str, list[SeriesPoint]]] = {}
    group: dict[str, list[SeriesPoint]] = {}
    group_stamp = min((seen.get(pod, -math.inf) for pod in up), default=-math.inf)
    models = sorted({key for (pod, key) in present if pod in live})
    for model_key in models:
        windows: list[ModelWindow | None] = []
        depths: list[float | None] = []
        for pod in live:
            key = (pod, model_key)
            if key not in present:
                continue
            pod_w, depth = pod_window(key), pending.get(key)
            windows.append(pod_w)
            depths.append(depth)
            if pod:
                labels = _series_labels(dict(pod_group(spec.key, pod)), model_key)
                _add(pods.setdefault(pod, {}), pod_w, depth, labels, seen.get(pod), window)
        if down:
            continue  # a down pod's share is unknown: the group holds
        labels = _series_labels(base, model_key)
        _add(group, _sum_windows(windows), _sum_known(depths), labels, group_stamp, window)

    gpus = _gpus_by_pod(rows, spec, live)
    for pod, samples in gpus.items():
        value = mean_utilization(samples)
        if pod and value is not None:
            point = SeriesPoint(dict(pod_group(spec.key, pod)), value, seen.get(pod, -math.inf))
            pods.setdefault(pod, {}).setdefault(GPU_UTILIZATION, []).append(point)
    value = mean_utilization(s for samples in gpus.values() for s in samples)
    if value is not None and not down:
        group[GPU_UTILIZATION] = [SeriesPoint(base, value, group_stamp)]
    for points in (group, *pods.values()):
        for metric, series in points.items():
            if metric not in (QUEUE_DEPTH, GPU_UTILIZATION):
                points[metric] = [
                    SeriesPoint(p.labels, p.value, p.timestamp, window_int) for p in series
                ]
    return Evaluation(group, pods, down, len(up))


def _series_labels(base: Mapping[str, str], key: ModelKey) -> dict[str, str]:
    model, version = key
    labels = {**base, "model": model}
    if version:
        labels["version"] = version
    return labels


def _add(
    out: dict[str, list[SeriesPoint]],
    window: ModelWindow | None,
    depth: float | None,
    labels: Mapping[str, str],
    stamp: float | None,
    window_seconds: float,
) -> None:
    timestamp = -math.inf if stamp is None else stamp
    for metric, value in model_signals(window, depth, window_seconds).items():
        out.setdefault(metric, []).append(SeriesPoint(labels, value, timestamp))


def _sum_known(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _sum_windows(windows: list[ModelWindow | None]) -> ModelWindow | None:
    """The group's window: the pods' summed, as the scrape path sums its members'."""
    if not windows or any(w is None for w in windows):
        return None
    known = [w for w in windows if w is not None]
    return ModelWindow(
        completed_rate=sum(w.completed_rate for w in known),
        pending_growth_rate=_sum_known(w.pending_growth_rate for w in known),
        success=sum(w.success for w in known),
        queue_us=_sum_known(w.queue_us for w in known),
        compute_us=_sum_known(w.compute_us for w in known),
    )


def _gpus_by_pod(rows: Rows, spec: GroupSpec, live: list[str]) -> dict[str, list[GpuSample]]:
    """Each live pod's GPUs: dcgm-exporter's devices assigned to it, else Triton's own."""
    namespace = spec.labels["namespace"]
    dcgm = dcgm_samples(
        {family: rows.get(family, []) for family in (DCGM_ENGINE, DCGM_UTIL)}, spec.gpu_names
    )
    assigned: dict[str, list[GpuSample]] = {}
    for sample in dcgm:
        if sample.pod is not None and sample.pod[0] == namespace:
            assigned.setdefault(sample.pod[1], []).append(sample)
    own: dict[str, list[GpuSample]] = {}
    for labels, value in rows.get(TRITON_GPU, ()):
        own.setdefault(labels.get(spec.pod_label, ""), []).append(
            gpu_sample(TRITON_GPU, labels, value)
        )
    out: dict[str, list[GpuSample]] = {}
    for pod in live:
        samples = assigned.get(pod) or own.get(pod)
        if samples:
            out[pod] = samples
    return out


# --- the HTTP API ----------------------------------------------------------------------------


class PrometheusClient:
    """Prometheus' HTTP query API (``/api/v1/query``, ``/api/v1/query_range``), as Thanos,
    Mimir and Cortex also serve it: bearer token, tenant header, CA, size cap, timeout."""

    def __init__(self, settings: PrometheusSourceConfig) -> None:
        """Loads the CA and reads the token once, so a bad file fails the start
        (:class:`PrometheusSourceError`) rather than every query."""
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        if settings.ca_file:
            try:
                self._ssl = ssl.create_default_context(cafile=settings.ca_file)
            except (OSError, ssl.SSLError) as err:
                raise PrometheusSourceError(
                    f"sources.prometheus ({settings.url}): ca_file {settings.ca_file}: "
                    f"cannot load: {err}"
                ) from None
        try:
            self._headers()
        except PrometheusError as err:
            raise PrometheusSourceError(f"sources.prometheus ({settings.url}): {err}") from None

    @property
    def url(self) -> str:
        return self._settings.url

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        settings = self._settings
        if settings.tenant:
            headers["X-Scope-OrgID"] = settings.tenant
        if settings.bearer_token_file:
            try:
                token = Path(settings.bearer_token_file).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise PrometheusError(
                    "token",
                    f"bearer_token_file {settings.bearer_token_file}: cannot read: {err.strerror}",
                ) from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            limit = self._settings.max_concurrent_queries
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=limit)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, path: str, form: dict[str, str]) -> Any:
        settings = self._settings
        if not settings.partial_response:
            form["partial_response"] = "false"  # Thanos: fail rather than answer from some stores
        url = f"{settings.url}{path}"
        try:
            headers = self._headers()
            async with self._open().post(
                url,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=settings.timeout_seconds),
            ) as response:
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                status = response.status
        except TimeoutError:
            raise PrometheusError(
                "timeout", f"{url}: no answer within {settings.timeout_seconds:g}s"
            ) from None
        except (aiohttp.ClientError, ssl.SSLError, OSError) as err:
            raise PrometheusError("connection", f"{url}: {type(err).__name__}: {err}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise PrometheusError("too_large", f"{url}: answer above {MAX_RESPONSE_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            raise PrometheusError(
                f"http_{status}", f"{url}: HTTP {status}, not JSON: {raw[:200]!r}"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            kind = body.get("errorType") if isinstance(body, dict) else None
            reason = "query" if status in (200, 400, 422) else f"http_{status}"
            raise PrometheusError(reason, f"{url}: HTTP {status}: {kind}: {error}")
        for warning in body.get("warnings") or ():
            log.warning("prometheus warning", extra={"url": url, "warning": str(warning)[:500]})
        return body.get("data")

    async def query(self, promql: str, at: float) -> Rows:
        """Instant query at Unix time ``at``: rows by part (``tritonscale_signal``)."""
        data = await self._call("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise PrometheusError("malformed", f"{self.url}: expected a vector, got {data!r:.200}")
        rows: Rows = {}
        for item in data.get("result") or ():
            labels, value = _labels(item), _value(item.get("value"))
            if value is not None:
                rows.setdefault(labels.pop(SIGNAL_LABEL, ""), []).append((labels, value))
        return rows

    async def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> dict[float, Rows]:
        """Range query: rows by part, for each evaluation time (Unix s)."""
        form = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:.3f}",
        }
        data = await self._call("/api/v1/query_range", form)
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise PrometheusError("malformed", f"{self.url}: expected a matrix, got {data!r:.200}")
        by_time: dict[float, Rows] = {}
        for item in data.get("result") or ():
            labels = _labels(item)
            part = labels.pop(SIGNAL_LABEL, "")
            for pair in item.get("values") or ():
                value = _value(pair)
                if value is not None:
                    at = round(float(pair[0]), 3)
                    by_time.setdefault(at, {}).setdefault(part, []).append((labels, value))
        return by_time


def _labels(item: Any) -> dict[str, str]:
    metric = item.get("metric") if isinstance(item, dict) else None
    return {str(k): str(v) for k, v in metric.items()} if isinstance(metric, dict) else {}


def _value(pair: Any) -> float | None:
    """A sample's value; None when malformed (never a 0 stand-in)."""
    try:
        return float(pair[1])
    except (TypeError, ValueError, IndexError):
        return None


# --- the reader --------------------------------------------------------------------------------


@dataclass(slots=True)
class _GroupState:
    spec: GroupSpec
    points: dict[SeriesKey, SeriesPoint] = field(default_factory=dict)
    pod_points: dict[str, dict[SeriesKey, SeriesPoint]] = field(default_factory=dict)
    replicas: int | None = None
    problem: str | None = None  # why the last refresh did not update the group


def _keyed(points: Mapping[str, list[SeriesPoint]]) -> dict[SeriesKey, SeriesPoint]:
    return {
        (metric, tuple(sorted(p.labels.items()))): p
        for metric, series in points.items()
        for p in series
    }


def _carried(
    last: Mapping[SeriesKey, SeriesPoint],
    fresh: dict[SeriesKey, SeriesPoint],
    *,
    healthy: bool,
    now: float,
    max_age: float,
) -> dict[SeriesKey, SeriesPoint]:
    """This refresh's points plus the last ones it did not recompute: all of them while the
    owner cannot be read (they age until the API holds), for max age otherwise (a model that
    was unloaded stops blocking wider selectors)."""
    for key, point in last.items():
        if key not in fresh and (not healthy or now - point.timestamp <= max_age):
            fresh[key] = point
    return fresh


class PrometheusSource:
    """Reads its groups' signals from one Prometheus-compatible API, every refresh interval;
    the pipeline merges :meth:`latest` into each snapshot."""

    def __init__(
        self,
        settings: PrometheusSourceConfig,
        signals: SignalsConfig,
        *,
        clock: Callable[[], float] = time.time,
        client: PrometheusClient | None = None,
    ) -> None:
        self.settings = settings
        self._max_age = signals.max_age_seconds
        self._clock = clock
        self.client = client or PrometheusClient(settings)
        self._groups = [
            _GroupState(GroupSpec.create(group, settings, signals.sum_versions))
            for group in settings.groups
        ]
        self._latest = SourcedSeries()
        self._limit = asyncio.Semaphore(settings.max_concurrent_queries)
        self.refreshes = 0

    def latest(self) -> SourcedSeries:
        return self._latest

    def queries(self) -> dict[Labels, str]:
        """Each group's instant query (PromQL), by group labels: what one refresh sends."""
        return {state.spec.key: state.spec.promql() for state in self._groups}

    async def close(self) -> None:
        await self.client.close()

    async def run(self) -> None:
        """Refresh every ``query_interval_seconds`` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.refresh()
            await asyncio.sleep(
                max(0.0, started + self.settings.query_interval_seconds - loop.time())
            )

    async def refresh(self) -> None:
        """Query every live group once (concurrently, bounded) and rebuild :meth:`latest`."""
        now = self._clock()
        await asyncio.gather(*(self._refresh(g, now) for g in self._groups if g.spec.live))
        self.refreshes += 1
        self._latest = self._build()

    async def _refresh(self, state: _GroupState, now: float) -> None:
        spec = state.spec
        try:
            async with self._limit:
                rows = await self.client.query(spec.promql(), now)
            evaluation = evaluate(rows, spec)
            problem = None if evaluation is not None else "no target of the group in Prometheus"
        except PrometheusError as err:
            evaluation, problem = None, f"{err.reason}: {err}"
        except Exception as err:  # a bug must not stop the other groups or later refreshes
            log.exception("prometheus refresh failed", extra={"group": dict(spec.labels)})
            evaluation, problem = None, f"internal: {type(err).__name__}: {err}"
        if evaluation is not None and evaluation.down:
            problem = f"targets down (up == 0): {', '.join(sorted(evaluation.down)) or '?'}"
        self._note(state, problem)
        max_age = self._max_age
        if evaluation is None:
            state.points = _carried(state.points, {}, healthy=False, now=now, max_age=max_age)
            return
        state.points = _carried(
            state.points,
            _keyed(evaluation.group),
            healthy=not evaluation.down,
            now=now,
            max_age=max_age,
        )
        pod_points: dict[str, dict[SeriesKey, SeriesPoint]] = {}
        for pod in set(state.pod_points) | set(evaluation.pods):
            fresh = _keyed(evaluation.pods.get(pod, {}))
            healthy = pod not in evaluation.down
            merged = _carried(
                state.pod_points.get(pod, {}), fresh, healthy=healthy, now=now, max_age=max_age
            )
            if merged:
                pod_points[pod] = merged
        state.pod_points = pod_points
        state.replicas = evaluation.replicas

    def _note(self, state: _GroupState, problem: str | None) -> None:
        """One log line per change of a group's state."""
        if problem == state.problem:
            return
        group = dict(state.spec.labels)
        if problem is None:
            log.info("prometheus group read", extra={"url": self.client.url, "group": group})
        else:
            log.warning(
                "prometheus group not read; its values age",
                extra={"url": self.client.url, "group": group, "problem": problem},
            )
        state.problem = problem

    def _build(self) -> SourcedSeries:
        series: dict[str, list[SeriesPoint]] = {}
        pod_series: dict[str, list[SeriesPoint]] = {}
        pods: dict[PodKey, Mapping[str, str]] = {}
        replicas: dict[Labels, int] = {}
        for state in self._groups:
            for (metric, _labels), point in state.points.items():
                series.setdefault(metric, []).append(point)
            namespace = state.spec.labels["namespace"]
            for pod, points in state.pod_points.items():
                pods[(namespace, pod)] = state.spec.pod_labels
                for (metric, _labels), point in points.items():
                    pod_series.setdefault(metric, []).append(point)
            if state.replicas is not None:
                replicas[state.spec.key] = state.replicas
        return SourcedSeries(series, pod_series, pods, replicas)

    async def warm_history(self, now: float | None = None) -> dict[Labels, list[WarmSample]]:
        """Every group's recent arrival rate and queue depth per series (model), read with one
        range query per group over ``warm_start_seconds`` at the refresh interval; {} when off.

        A group whose query fails is logged and left out (its forecast warms up live)."""
        settings = self.settings
        if settings.warm_start_seconds <= 0:
            return {}
        end = self._clock() if now is None else now
        start = end - settings.warm_start_seconds
        history: dict[Labels, list[WarmSample]] = {}

        async def one(state: _GroupState) -> None:
            spec = state.spec
            try:
                async with self._limit:
                    by_time = await self.client.query_range(
                        spec.promql(gpu=False), start, end, settings.query_interval_seconds
                    )
            except PrometheusError as err:
                log.warning(
                    "prometheus warm start failed; the forecast warms up live",
                    extra={"url": self.client.url, "group": dict(spec.labels), "problem": str(err)},
                )
                return
            samples = 0
            for at in sorted(by_time):
                evaluation = evaluate(by_time[at], spec)
                if evaluation is None:
                    continue
                arrivals = {_key(p.labels): p.value for p in evaluation.group.get(ARRIVAL_RATE, ())}
                for depth in evaluation.group.get(QUEUE_DEPTH, ()):
                    key = _key(depth.labels)
                    rate = arrivals.get(key, math.nan)
                    sample = WarmSample(at, rate, depth.value, evaluation.replicas)
                    history.setdefault(key, []).append(sample)
                    samples += 1
            log.info(
                "prometheus warm start read",
                extra={"group": dict(spec.labels), "samples": samples, "points": len(by_time)},
            )

        await asyncio.gather(*(one(state) for state in self._groups))
        return history


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


__all__ = [
    "SIGNAL_LABEL",
    "Evaluation",
    "GroupSpec",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusSource",
    "PrometheusSourceError",
    "evaluate",
]
