"""The adapter's own Prometheus metrics, served at ``/metrics`` (names fixed: the
Grafana dashboard in manifests/grafana reads them)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapter.metrics_catalog import SERVED_METRIC_NAMES
from adapter.readings import Reading
from adapter.snapshot import Snapshot
from adapter.targets import Target

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
            "Age of the oldest series of a metric in a namespace.",
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


class SelfMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.scrape_duration = Histogram(
            "tritonscale_scrape_duration_seconds",
            "Time to fetch and parse one target's /metrics.",
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
            "External metrics API requests by HTTP code and metric (other: not a served metric).",
            ["code", "metric"],
            registry=self.registry,
        )
        self.api_duration = Histogram(
            "tritonscale_api_request_duration_seconds",
            "Time to answer one API request.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self._error_reasons: dict[str, set[str]] = {}
        self._rejection_labels: dict[str, set[tuple[str, str]]] = {}

    def serve_snapshots(self, current: Callable[[], Snapshot]) -> None:
        """Export every served value from ``current()`` at each scrape of /metrics."""
        self.registry.register(_SnapshotCollector(current))

    def observe_scrape(
        self, target: Target, seconds: float, error: str | None, reading: Reading | None = None
    ) -> None:
        self.scrape_duration.labels(target.url).observe(seconds)
        if error is not None:
            self.scrape_errors.labels(target.url, error).inc()
            self._error_reasons.setdefault(target.url, set()).add(error)
        if reading is None:
            return
        self.target_series.labels(target.url).set(reading.series)
        self.target_models.labels(target.url).set(
            len(reading.models) + len(reading.rejected_models)
        )
        for rejection in reading.rejections:
            self.rejected_samples.labels(target.url, rejection.family, rejection.reason).inc(
                rejection.count
            )
            self._rejection_labels.setdefault(target.url, set()).add(
                (rejection.family, rejection.reason)
            )

    def forget_target(self, target: Target) -> None:
        """Drop a removed target's series so churn does not grow the registry."""
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

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        self.api_duration.observe(time.perf_counter() - started)
        metric = request.match_info.get("metric", "")
        if metric and metric not in SERVED_METRIC_NAMES:
            metric = "other"  # bounded: any path segment could otherwise become a label
        self.api_requests.labels(str(response.status), metric).inc()
        return response

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
