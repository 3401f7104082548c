"""Shared fixtures for the API tests: a fixed snapshot served by the real SnapshotProvider."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from adapter.metrics_catalog import SERVED_METRICS
from adapter.provider import SnapshotProvider
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
    return SeriesPoint(labels(namespace, model, deployment), value, NOW - age, window)


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
