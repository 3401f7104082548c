"""Every metric the adapter serves, with its unit and meaning (one place, used by
discovery, OpenAPI, the manifests' tests and the docs)."""

from __future__ import annotations

from adapter.snapshot import MetricInfo

SERVED_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(
        "triton_queue_depth",
        "Requests waiting in Triton's scheduler queues (sum of "
        "nv_inference_pending_request_count over the group's pods).",
        "requests",
    ),
    MetricInfo(
        "triton_request_rate",
        "Completed requests per second (success + failure) over the rate window.",
        "requests/s",
    ),
    MetricInfo(
        "triton_arrival_rate",
        "Offered load: completions per second plus backlog growth per second; "
        "not capped at capacity when the server is saturated.",
        "requests/s",
    ),
    MetricInfo(
        "triton_queue_time_seconds",
        "Mean queue wait per completed request over the window "
        "(delta nv_inference_queue_duration_us / delta successes).",
        "seconds",
    ),
    MetricInfo(
        "triton_queue_compute_ratio",
        "Queue time over compute time in the window (NVIDIA's reference scaling signal).",
        "ratio",
    ),
    MetricInfo(
        "gpu_utilization",
        "Mean GPU utilisation (0-1) over the group's GPUs, from Triton or dcgm-exporter.",
        "ratio",
    ),
    MetricInfo(
        "triton_arrival_rate_forecast",
        "Arrival rate forecast one cold start + HPA sync period ahead, at the configured "
        "quantile (calibrated upper bound).",
        "requests/s",
    ),
    MetricInfo(
        "triton_queue_depth_forecast",
        "Queue depth expected at the horizon if the current replicas stay.",
        "requests",
    ),
    MetricInfo(
        "triton_desired_replicas",
        "Replicas the predictive policy wants; use with an HPA AverageValue target of 1.",
        "replicas",
    ),
)

SERVED_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in SERVED_METRICS)
