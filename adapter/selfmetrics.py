"""The adapter's own Prometheus metrics, served at ``/metrics`` (names fixed: the
Grafana dashboard and the alerts in manifests/ read them; manifests/grafana/README.md
lists them).

Values that live elsewhere (served signals, forecast scores, the serving certificate) are
read by collectors when /metrics is scraped, so nothing is done on the publish path. A
value that is not known is left out, never exported as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from adapter.api.connections import ConnectionStats
from adapter.api.tls import serving_certificate_not_after
from adapter.metrics_catalog import SERVED_METRIC_NAMES
from adapter.predictive import ForecastCheck
from adapter.readings import Reading
from adapter.scrape_pacing import ScrapePacing
from adapter.snapshot import Snapshot
from adapter.snapshot_feed import FeedWriter
from adapter.targets import Target

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERIES_LABELS = ("namespace", "deployment", "model")
"""Labels of per-series self-metrics (the served series' own labels, bounded by the targets)."""

# The ``handler`` label of API request metrics: path prefix -> kind of request. Bounded:
# every path maps to one of these values or ``other``. (Not ``endpoint``: the Prometheus
# Operator sets that target label to the scraped port's name.)
_HANDLER_PREFIXES: tuple[tuple[str, str], ...] = (
    ("/apis/external.metrics.k8s.io/v1beta1/namespaces/", "metric"),  # what the HPA reads
    ("/keda/", "keda"),  # KEDA's metrics-api scaler
    ("/apis", "discovery"),
    ("/openapi", "openapi"),
    ("/healthz", "probe"),
    ("/livez", "probe"),
    ("/readyz", "probe"),
    ("/metrics", "metrics"),  # Prometheus scraping this endpoint
)
HANDLERS = ("metric", "keda", "discovery", "openapi", "probe", "metrics", "other")


def handler_of(path: str) -> str:
    """The bounded ``handler`` label value of a request path."""
    for prefix, handler in _HANDLER_PREFIXES:
        if path.startswith(prefix) and (
            prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"
        ):
            return handler
    return "other"


def _version() -> str:
    try:
        return metadata.version("tritonscale")
    except metadata.PackageNotFoundError:
        return "unknown"


class _SnapshotCollector(Collector):
    """Reads the published snapshot when /metrics is scraped: no work on the publish path."""

    def __init__(self, current: Callable[[], Snapshot]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        snapshot = self._current()
        values = GaugeMetricFamily(
            "tritonscale_signal_value",
            "Every value the adapter serves, by metric and series labels.",
            labels=["metric", "namespace", "model", "deployment"],
        )
        ages = GaugeMetricFamily(
            "tritonscale_series_age_seconds",
            "Age of the oldest series of a metric in a namespace (s); the API holds (503) "
            "a series older than tritonscale_signal_max_age_seconds.",
            labels=["metric", "namespace"],
        )
        now = time.time()
        for metric, points in snapshot.series.items():
            oldest: dict[str, float] = {}
            for point in points:
                labels = point.labels
                namespace = labels.get("namespace", "")
                if math.isfinite(point.value):
                    values.add_metric(
                        [metric, namespace, labels.get("model", ""), labels.get("deployment", "")],
                        point.value,
                    )
                age = min(now - point.timestamp, 1e9)
                oldest[namespace] = max(oldest.get(namespace, 0.0), age)
            for namespace, age in oldest.items():
                ages.add_metric([metric, namespace], age)
        yield values
        yield ages


class _ForecastCollector(Collector):
    """Each series' forecast score (``adapter.predictive.ForecastCheck``), read at scrape time."""

    def __init__(self, current: Callable[[], Iterable[ForecastCheck]]) -> None:
        self._current = current

    def collect(self) -> Iterator[Metric]:
        labels = list(SERIES_LABELS)
        checks = CounterMetricFamily(
            "tritonscale_forecast_checks",
            "Arrival-rate forecasts compared with the rate that then arrived (one per step "
            "once the horizon has passed and the step's rate is known).",
            labels=labels,
        )
        misses = CounterMetricFamily(
            "tritonscale_forecast_misses",
            "Compared forecasts whose planned rate the arriving rate exceeded (an overloaded "
            "plan); misses / checks should stay well below 1 - tritonscale_forecast_quantile.",
            labels=labels,
        )
        quantile = GaugeMetricFamily(
            "tritonscale_forecast_quantile",
            "The stated SLO attainment the plan is calibrated for (predictive slo_attainment).",
            labels=labels,
        )
        horizon = GaugeMetricFamily(
            "tritonscale_forecast_horizon_seconds",
            "How far ahead the forecast looks (s): cold start + HPA sync, in whole steps.",
            labels=labels,
        )
        due = GaugeMetricFamily(
            "tritonscale_forecast_due_arrival_rate",
            "The arrival-rate forecast (req/s) made one horizon ago for the step that just "
            "ended: the forecast drawn at the time it forecasts. bound=point|upper.",
            labels=[*labels, "bound"],
        )
        actual = GaugeMetricFamily(
            "tritonscale_forecast_actual_arrival_rate",
            "Mean arrival rate (req/s) over the step that just ended, the value the due "
            "forecast is compared with.",
            labels=labels,
        )
        for check in self._current():
            values = [check.labels.get(name, "") for name in SERIES_LABELS]
            checks.add_metric(values, check.checks)
            misses.add_metric(values, check.misses)
            quantile.add_metric(values, check.quantile)
            horizon.add_metric(values, check.horizon_seconds)
            for bound, value in (("point", check.due_point), ("upper", check.due_upper)):
                if math.isfinite(value):
                    due.add_metric([*values, bound], value)
            if math.isfinite(check.actual):
                actual.add_metric(values, check.actual)
        yield from (checks, misses, quantile, horizon, due, actual)


class _CertificateCollector(Collector):
    """notAfter of the certificate the API serves, read at scrape time (it may be reloaded)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context

    def collect(self) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            "tritonscale_serving_certificate_expiry_timestamp_seconds",
            "When the API's serving certificate expires (Unix s, its notAfter).",
        )
        not_after = serving_certificate_not_after(self._context)
        if not_after is not None:
            expiry.add_metric([], not_after)
        yield expiry


class _ConnectionCollector(Collector):
    def __init__(self, stats: ConnectionStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield GaugeMetricFamily(
            "tritonscale_api_connections_open", "Open API connections.", value=stats.open
        )
        yield CounterMetricFamily(
            "tritonscale_api_connections_accepted",
            "API connections accepted.",
            value=stats.accepted,
        )
        closed = CounterMetricFamily(
            "tritonscale_api_connections_closed",
            "API connections closed, by reason (closed: by either side after its requests; "
            "header_timeout, idle_timeout, evicted_at_cap, refused_at_cap, "
            "tls_handshake_failed, server_stopped).",
            labels=["reason"],
        )
        for reason, count in sorted(stats.closed.items()):
            closed.add_metric([reason], count)
        yield closed
        bad = CounterMetricFamily(
            "tritonscale_api_bad_requests",
            "Requests the HTTP parser rejected (answered 400 before any handler), by error.",
            labels=["error"],
        )
        for error, count in sorted(stats.bad_requests.items()):
            bad.add_metric([error], count)
        yield bad


class _FeedCollector(Collector):
    """The snapshot feed to the API process (``server.api_process``), read at scrape time."""

    def __init__(self, feed: FeedWriter) -> None:
        self._feed = feed

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "tritonscale_api_process_snapshots_sent",
            "Published snapshots sent to the API process.",
            value=self._feed.sent,
        )
        yield CounterMetricFamily(
            "tritonscale_api_process_snapshots_skipped",
            "Published snapshots not sent because the API process had not yet read the one "
            "before (it gets the next one: its values are one publish older).",
            value=self._feed.skipped,
        )


class _PacingCollector(Collector):
    """How far scraping keeps up (``adapter.scrape_pacing.ScrapePacing``), read at scrape time."""

    def __init__(self, pacing: ScrapePacing) -> None:
        self._pacing = pacing

    def collect(self) -> Iterator[Metric]:
        pacing = self._pacing
        yield GaugeMetricFamily(
            "tritonscale_scrape_interval_stretch",
            "Recent mean of each target's effective scrape interval / the configured one: 1 "
            "when every target is scraped on time; 2 when every other start is skipped because "
            "the CPU cannot carry them all (values then age by about 2 intervals).",
            value=pacing.stretch,
        )
        yield CounterMetricFamily(
            "tritonscale_scrape_cycles",
            "Scrape cycles finished by healthy targets (successful scrapes on their schedule).",
            value=pacing.cycles,
        )
        yield CounterMetricFamily(
            "tritonscale_scrape_cycles_skipped",
            "Scrape start times skipped because the cycle before overran its interval (CPU "
            "shortage or slow targets): the shortfall.",
            value=pacing.skipped_cycles,
        )
        yield GaugeMetricFamily(
            "tritonscale_scrapes_in_flight",
            f"Scrapes being fetched or parsed now (at most {pacing.max_concurrent}, "
            "scrape.max_concurrent_scrapes).",
            value=pacing.in_flight,
        )
        yield GaugeMetricFamily(
            "tritonscale_scrapes_waiting",
            "Scrapes due and waiting for a slot (scrape.max_concurrent_scrapes).",
            value=pacing.waiting,
        )


@dataclass(frozen=True, slots=True)
class _TargetChildren:
    """One target's children of the per-scrape metrics (``labels()`` takes a lock and checks
    the label values: 2,000 targets scraped every second call it thousands of times)."""

    duration: Histogram
    series: Gauge
    models: Gauge


class SelfMetrics:
    """The registry behind /metrics, and the hooks that feed it.

    ``max_age_seconds`` is ``signals.max_age_seconds`` (exported so alerts compare series
    ages with the limit the API enforces); None leaves it out.
    """

    def __init__(self, max_age_seconds: float | None = None) -> None:
        self.registry = CollectorRegistry()
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.registry)  # process_*, python_info, python_gc_*
        Info("tritonscale_build", "The running tritonscale version.", registry=self.registry).info(
            {"version": _version()}
        )
        if max_age_seconds is not None:
            Gauge(
                "tritonscale_signal_max_age_seconds",
                "Data older than this is not served (signals.max_age_seconds): the API answers "
                "503 and the HPA holds.",
                registry=self.registry,
            ).set(max_age_seconds)
        self.scrape_duration = Histogram(
            "tritonscale_scrape_duration_seconds",
            "Time to fetch and parse one target's /metrics (every attempt, failed ones too).",
            ["target"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "tritonscale_scrape_errors_total",
            "Failed scrapes by target and reason (timeout, connection, http_NNN, too_large, "
            "malformed, duplicate, not_exposition, too_many_series, too_many_models, internal).",
            ["target", "reason"],
            registry=self.registry,
        )
        self.rejected_samples = Counter(
            "tritonscale_rejected_samples_total",
            "Samples refused as invalid for their family (their series are held, never 0), "
            "by target, family and reason (nan, inf, negative, above_range, overflow).",
            ["target", "family", "reason"],
            registry=self.registry,
        )
        self.target_series = Gauge(
            "tritonscale_target_series",
            "Samples of the families the adapter reads in a target's last good scrape "
            "(capped by scrape.max_series_per_target).",
            ["target"],
            registry=self.registry,
        )
        self.target_models = Gauge(
            "tritonscale_target_models",
            "Models in a target's last good scrape (capped by scrape.max_models_per_target).",
            ["target"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "tritonscale_api_requests_total",
            "HTTP requests by code, handler (metric, keda, discovery, openapi, probe, "
            "metrics, other) and metric (metric and keda reads; other: not a served metric).",
            ["code", "handler", "metric"],
            registry=self.registry,
        )
        self.api_duration = Histogram(
            "tritonscale_api_request_duration_seconds",
            "Time to answer one HTTP request, by handler (as in tritonscale_api_requests_total).",
            ["handler"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self._error_reasons: dict[str, set[str]] = {}
        self._rejection_labels: dict[str, set[tuple[str, str]]] = {}
        self._per_target: dict[str, _TargetChildren] = {}  # labels() looked up once per target

    def serve_snapshots(self, current: Callable[[], Snapshot]) -> None:
        """Export every served value from ``current()`` at each scrape of /metrics."""
        self.registry.register(_SnapshotCollector(current))

    def serve_forecast_checks(self, current: Callable[[], Iterable[ForecastCheck]]) -> None:
        """Export the predictive stage's forecast scores (``PredictiveStage.forecast_checks``)."""
        self.registry.register(_ForecastCollector(current))

    def observe_serving_certificate(self, context: ssl.SSLContext) -> None:
        """Export the expiry of the certificate ``context`` serves."""
        self.registry.register(_CertificateCollector(context))

    def serve_scrape_pacing(self, pacing: ScrapePacing) -> None:
        """Export the scrape pacing's stretch, skipped cycles and slots at each scrape."""
        self.registry.register(_PacingCollector(pacing))

    def serve_feed_stats(self, feed: FeedWriter) -> None:
        """Export the snapshot feed's counters (the main process, with an API process)."""
        self.registry.register(_FeedCollector(feed))

    def serve_connection_stats(self, stats: ConnectionStats) -> None:
        """Export the API listener's connection counters at each scrape of /metrics."""
        self.registry.register(_ConnectionCollector(stats))

    def observe_scrape(
        self, target: Target, seconds: float, error: str | None, reading: Reading | None = None
    ) -> None:
        children = self._per_target.get(target.url)
        if children is None:
            children = self._per_target[target.url] = _TargetChildren(
                self.scrape_duration.labels(target.url),
                self.target_series.labels(target.url),
                self.target_models.labels(target.url),
            )
        children.duration.observe(seconds)
        if error is not None:
            self.scrape_errors.labels(target.url, error).inc()
            self._error_reasons.setdefault(target.url, set()).add(error)
        if reading is None:
            return
        children.series.set(reading.series)
        children.models.set(len(reading.models) + len(reading.rejected_models))
        for rejection in reading.rejections:
            self.rejected_samples.labels(target.url, rejection.family, rejection.reason).inc(
                rejection.count
            )
            self._rejection_labels.setdefault(target.url, set()).add(
                (rejection.family, rejection.reason)
            )

    def forget_target(self, target: Target) -> None:
        """Drop a removed target's series so churn does not grow the registry."""
        self._per_target.pop(target.url, None)
        with contextlib.suppress(KeyError):
            self.scrape_duration.remove(target.url)
        for reason in self._error_reasons.pop(target.url, ()):
            with contextlib.suppress(KeyError):
                self.scrape_errors.remove(target.url, reason)
        for family, reason in self._rejection_labels.pop(target.url, ()):
            with contextlib.suppress(KeyError):
                self.rejected_samples.remove(target.url, family, reason)
        for gauge in (self.target_series, self.target_models):
            with contextlib.suppress(KeyError):
                gauge.remove(target.url)

    def _count(self, request: web.Request, status: int, started: float) -> None:
        handler = handler_of(request.path)
        self.api_duration.labels(handler).observe(time.perf_counter() - started)
        metric = ""
        if handler in ("metric", "keda"):
            metric = request.match_info.get("metric", "")
            if metric not in SERVED_METRIC_NAMES:
                metric = "other"  # bounded: any path segment could otherwise become a label
        self.api_requests.labels(str(status), handler, metric).inc()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count and time every request, also those answered by raising (404, 405, 500)."""
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._count(request, exc.status, started)
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            self._count(request, 500, started)
            raise
        self._count(request, response.status, started)
        return response

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (what /metrics answers)."""
        return bytes(generate_latest(self.registry))

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def merged_exposition(by_process: Sequence[tuple[str, bytes]]) -> bytes:
    """Several processes' expositions as one: every sample gains ``process="<name>"``, and a
    family both export keeps one HELP and TYPE with every process's samples under it (the
    text format wants a family's samples together). With ``server.api_process`` the API
    process answers /metrics with its own and the main process's, so one scrape of the
    Service port sees the whole service, as without it."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    for process, text in by_process:
        label = f'process="{process}"'
        current: list[str] | None = None
        for line in text.decode("utf-8").splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split(" ", 3)[2]
                headers, current = families.setdefault(name, ([], []))
                if line not in headers:
                    headers.append(line)
            elif line and not line.startswith("#") and current is not None:
                current.append(_with_label(line, label))
    lines = [line for headers, samples in families.values() for line in (*headers, *samples)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _with_label(sample: str, label: str) -> str:
    """``name{a="b"} 1`` -> ``name{process="api",a="b"} 1``; ``name 1`` -> ``name{...} 1``."""
    name_end = min((i for i in (sample.find("{"), sample.find(" ")) if i >= 0), default=-1)
    if name_end < 0:
        return sample
    if sample[name_end] == "{":
        return f"{sample[: name_end + 1]}{label},{sample[name_end + 1 :]}"
    return f"{sample[:name_end]}{{{label}}}{sample[name_end:]}"
