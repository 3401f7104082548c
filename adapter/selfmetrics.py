"""The adapter's own Prometheus metrics, served at ``/metrics`` (names fixed: the
Grafana dashboard in manifests/grafana reads them)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from adapter.snapshot import Snapshot
from adapter.targets import Target

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SelfMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.signal_value = Gauge(
            "tritonscale_signal_value",
            "Every value the adapter serves, by metric and series labels.",
            ["metric", "namespace", "model", "deployment"],
            registry=self.registry,
        )
        self.series_age = Gauge(
            "tritonscale_series_age_seconds",
            "Age of the oldest series of a metric in a namespace at the last publish.",
            ["metric", "namespace"],
            registry=self.registry,
        )
        self.scrape_duration = Histogram(
            "tritonscale_scrape_duration_seconds",
            "Time to fetch and parse one target's /metrics.",
            ["target"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "tritonscale_scrape_errors_total",
            "Failed scrapes by target and reason (timeout, connection, http_NNN, malformed).",
            ["target", "reason"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "tritonscale_api_requests_total",
            "External metrics API requests by HTTP code and metric.",
            ["code", "metric"],
            registry=self.registry,
        )
        self.api_duration = Histogram(
            "tritonscale_api_request_duration_seconds",
            "Time to answer one API request.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )

    def observe_scrape(self, target: Target, seconds: float, error: str | None) -> None:
        self.scrape_duration.labels(target.url).observe(seconds)
        if error is not None:
            self.scrape_errors.labels(target.url, error).inc()

    def observe_snapshot(self, snapshot: Snapshot) -> None:
        self.signal_value.clear()
        self.series_age.clear()
        now = time.time()
        for metric, points in snapshot.series.items():
            oldest: dict[str, float] = {}
            for point in points:
                labels = point.labels
                namespace = labels.get("namespace", "")
                if not math.isnan(point.value):
                    self.signal_value.labels(
                        metric, namespace, labels.get("model", ""), labels.get("deployment", "")
                    ).set(point.value)
                age = now - point.timestamp
                oldest[namespace] = max(oldest.get(namespace, 0.0), age)
            for namespace, age in oldest.items():
                self.series_age.labels(metric, namespace).set(min(age, 1e9))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        self.api_duration.observe(time.perf_counter() - started)
        metric = request.match_info.get("metric", "")
        self.api_requests.labels(str(response.status), metric).inc()
        return response

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
