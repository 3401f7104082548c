"""Every metric the adapter serves, with its unit and meaning (one place, used by
discovery, OpenAPI, the manifests' tests and the docs)."""

from __future__ import annotations

from adapter.snapshot import MetricInfo

NO_RATE_YET = (
    "no rate yet: a rate needs two scrapes of every target in the group within the rate "
    "window (and starts again after a target restarts)"
)
NO_DURATIONS = (
    "these targets do not report nv_inference_queue_duration_us and "
    "nv_inference_compute_infer_duration_us (Triton's --metrics-config "
    "counter_latencies=true, the default, serves them)"
)
NEEDS_CAPACITY = (
    "served only for series with a per-replica capacity: set predictive.defaults.capacity_rps, "
    "or capacity_rps in a predictive.series entry whose match covers these labels"
)

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
        served_beside="triton_queue_depth",
        absent_because=NO_RATE_YET,
    ),
    MetricInfo(
        "triton_arrival_rate",
        "Offered load: completions per second plus backlog growth per second; "
        "not capped at capacity when the server is saturated.",
        "requests/s",
        served_beside="triton_queue_depth",
        absent_because=NO_RATE_YET,
    ),
    MetricInfo(
        "triton_queue_time_seconds",
        "Mean queue wait per completed request over the window "
        "(delta nv_inference_queue_duration_us / delta successes).",
        "seconds",
        served_beside="triton_request_rate",
        absent_because=NO_DURATIONS,
    ),
    MetricInfo(
        "triton_queue_compute_ratio",
        "Queue time over compute time in the window (NVIDIA's reference scaling signal).",
        "ratio",
        served_beside="triton_request_rate",
        absent_because=NO_DURATIONS,
    ),
    MetricInfo(
        "gpu_utilization",
        "Mean GPU utilisation (0-1) over the group's own GPUs: those dcgm-exporter maps to its "
        "pods (each GPU or MIG instance once), else Triton's own nv_gpu_utilization.",
        "ratio",
        served_beside="triton_queue_depth",
        absent_because=(
            "these targets report no GPU utilisation (Triton's nv_gpu_utilization needs a GPU "
            "and GPU metrics on; or scrape dcgm-exporter as a target with kind=dcgm); the "
            "series has no model label, so select it by deployment only"
        ),
    ),
    MetricInfo(
        "triton_arrival_rate_forecast",
        "Arrival rate the plan is sized to serve one cold start + HPA sync period ahead: the "
        "forecast with its headroom (calibrated to the SLO attainment) over the planned "
        "utilisation, so forecast / capacity_rps is the planned replicas.",
        "requests/s",
        served_beside="triton_arrival_rate",
        absent_because=(
            "no forecast yet: the predictive policy publishes its first one step "
            "(predictive step_seconds) after the series' first arrival rate"
        ),
    ),
    MetricInfo(
        "triton_queue_depth_forecast",
        "Queue depth expected at the horizon if the current replicas stay.",
        "requests",
        served_beside="triton_arrival_rate_forecast",
        absent_because=NEEDS_CAPACITY,
    ),
    MetricInfo(
        "triton_desired_replicas",
        "Replicas the predictive policy wants; use with an HPA AverageValue target of 1.",
        "replicas",
        served_beside="triton_arrival_rate_forecast",
        absent_because=NEEDS_CAPACITY,
    ),
)

SERVED_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in SERVED_METRICS)

# --- the custom metrics API (custom.metrics.k8s.io): which metric on which object ----------

POD_METRIC_NAMES: tuple[str, ...] = (
    "triton_queue_depth",
    "triton_request_rate",
    "triton_arrival_rate",
    "triton_queue_time_seconds",
    "triton_queue_compute_ratio",
    "gpu_utilization",
)
"""Served per Triton pod (``pods/<metric>``): the raw signals of each pod alone."""

DEPLOYMENT_METRIC_NAMES: tuple[str, ...] = SERVED_METRIC_NAMES
"""Served on the Deployment (``deployments.apps/<metric>``): the group's series, which include
the predictive signals (forecast, desired replicas)."""

POD_METRIC_ALIASES: dict[str, str] = {"triton:queue_compute:ratio": "triton_queue_compute_ratio"}
"""Other names a pod metric answers to: NVIDIA's recording-rule name, so the HPA of their Triton
autoscaling tutorial works unchanged (reading this adapter's signal, not Prometheus)."""

ADDITIVE_METRICS: frozenset[str] = frozenset(
    {
        "triton_queue_depth",
        "triton_request_rate",
        "triton_arrival_rate",
        "triton_arrival_rate_forecast",
        "triton_queue_depth_forecast",
    }
)
"""Counts and rates: several series of one object (one per model) add up to the object's
value. Means, ratios and replica counts do not: their series must be selected one at a time."""
