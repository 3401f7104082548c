"""Shared fixtures for the API tests: a fixed snapshot served by the real SnapshotProvider."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from adapter.metrics_catalog import SERVED_METRICS
from adapter.provider import SnapshotCustomMetricsProvider, SnapshotProvider
from adapter.snapshot import MetricInfo, SeriesPoint, Snapshot

NOW = 1_787_227_200.0  # 2026-08-20T12:00:00Z
NOW_RFC3339 = "2026-08-20T12:00:00Z"
MAX_AGE_SECONDS = 30.0

METRICS: tuple[MetricInfo, ...] = SERVED_METRICS


def status_body(code: int, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    """The metav1.Status failure body the kube-apiserver (and the adapter) answer with."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
        **extra,
    }


def labels(namespace: str, model: str, deployment: str) -> dict[str, str]:
    return {"namespace": namespace, "model": model, "deployment": deployment}


def point(
    namespace: str,
    model: str,
    deployment: str,
    value: float,
    *,
    age: float = 2.0,
    window: int | None = None,
) -> SeriesPoint:
    source = f"http://{deployment}.{namespace}:8002/metrics"
    return SeriesPoint(labels(namespace, model, deployment), value, NOW - age, window, source)


SERIES: dict[str, tuple[SeriesPoint, ...]] = {
    "triton_queue_depth": (
        point("prod", "resnet", "resnet-a", 1.5),
        point("prod", "resnet", "resnet-b", 2.0),
        point("prod", "bert", "bert-a", 12000.0),
        point("staging", "resnet", "resnet-a", 7.0),
    ),
    "triton_request_rate": (point("prod", "resnet", "resnet-a", 0.08, window=60),),
    # one series fresh, one past max age: the whole answer must be 503, not a partial sum
    "triton_queue_time_seconds": (
        point("prod", "resnet", "resnet-a", 0.25),
        point("prod", "resnet", "resnet-b", 0.5, age=MAX_AGE_SECONDS + 5.0),
        point("staging", "resnet", "resnet-a", 0.1, age=MAX_AGE_SECONDS + 100.0),
    ),
    "triton_arrival_rate_forecast": (point("prod", "resnet", "resnet-a", float("nan")),),
    "triton_queue_depth_forecast": (point("prod", "resnet", "resnet-a", float("inf")),),
    "gpu_utilization": (point("prod", "resnet", "resnet-a", 0.0),),
    "triton_desired_replicas": (point("prod", "resnet", "resnet-a", -1.5),),
}


@dataclass
class FakeClock:
    """Unix time in seconds, advanced by hand."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now


def make_snapshot() -> Snapshot:
    return Snapshot(built_at=NOW, series=MappingProxyType(dict(SERIES)))


def make_provider(clock: FakeClock, metrics: tuple[MetricInfo, ...] = METRICS) -> SnapshotProvider:
    snapshot = make_snapshot()
    return SnapshotProvider(
        metrics=metrics,
        current=lambda: snapshot,
        clock=clock,
        max_age_seconds=MAX_AGE_SECONDS,
    )


# --- custom metrics: per-pod series and the pods' own labels ------------------------------


def pod_point(
    namespace: str,
    pod: str,
    value: float,
    *,
    model: str | None = "resnet",
    age: float = 2.0,
    window: int | None = None,
) -> SeriesPoint:
    labels = {"namespace": namespace, "deployment": "llm", "pod": pod}
    if model is not None:
        labels["model"] = model
    return SeriesPoint(labels, value, NOW - age, window)


POD_SERIES: dict[str, tuple[SeriesPoint, ...]] = {
    "triton_queue_depth": (
        pod_point("prod", "llm-a", 2.0),
        pod_point("prod", "llm-a", 1.0, model="bert"),
        pod_point("prod", "llm-b", 4.0),
        pod_point("prod", "other-a", 7.0),
        pod_point("staging", "llm-a", 9.0),
    ),
    "triton_queue_compute_ratio": (
        pod_point("prod", "llm-a", 1.25, window=5),
        pod_point("prod", "llm-a", 0.5, model="bert", window=5),
        pod_point("prod", "llm-b", 0.8, window=5),
    ),
    # llm-b is past max age: left out of a selector answer (the HPA counts it missing)
    "triton_arrival_rate": (
        pod_point("prod", "llm-a", 10.0, window=5),
        pod_point("prod", "llm-b", 20.0, window=5, age=MAX_AGE_SECONDS + 10.0),
    ),
    # no pod has a known value: the whole answer is 503
    "triton_queue_time_seconds": (
        pod_point("prod", "llm-a", float("nan"), window=5),
        pod_point("prod", "llm-b", 0.3, window=5, age=MAX_AGE_SECONDS + 10.0),
    ),
    "gpu_utilization": (
        pod_point("prod", "llm-a", 0.5, model=None),
        pod_point("prod", "llm-b", 0.25, model=None),
    ),
}

PODS: dict[tuple[str, str], dict[str, str]] = {
    ("prod", "llm-a"): {"app": "llm", "tier": "gpu"},
    ("prod", "llm-b"): {"app": "llm"},
    ("prod", "llm-c"): {"app": "llm"},  # scraped, but no series yet
    ("prod", "other-a"): {"app": "other"},
    ("staging", "llm-a"): {"app": "llm"},
}


def make_full_snapshot() -> Snapshot:
    """Group series, per-pod series and the pods' labels, as the pipeline publishes them."""
    return Snapshot(
        built_at=NOW,
        series=MappingProxyType(dict(SERIES)),
        pod_series=MappingProxyType(dict(POD_SERIES)),
        pods=MappingProxyType(dict(PODS)),
    )


def make_custom_provider(clock: FakeClock) -> SnapshotCustomMetricsProvider:
    snapshot = make_full_snapshot()
    return SnapshotCustomMetricsProvider(lambda: snapshot, clock, MAX_AGE_SECONDS)
