"""From parsed exposition families to one typed reading per scrape.

A reading is what one target said at one moment: per-model Triton counters and
gauges, and GPU utilisation (0-1) per GPU. Families that are absent stay absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapter.exposition import Families, Sample
from adapter.targets import TargetKind

ModelKey = tuple[str, str]  # (model, version); version is "" when versions are summed


@dataclass(frozen=True, slots=True)
class ModelCounters:
    """Triton's per-model values at one scrape. Durations in microseconds.

    None means the family was absent (e.g. ``--metrics-config counter_latencies=false``):
    signals that need it are not served, rather than served as 0.
    """

    pending: float | None
    success: float
    failure: float
    queue_us: float | None
    compute_infer_us: float | None

    @property
    def completed(self) -> float:
        return self.success + self.failure


@dataclass(frozen=True, slots=True)
class Reading:
    """One successful scrape. ``mono`` is a monotonic clock (s) for deltas, ``wall`` Unix (s)."""

    mono: float
    wall: float
    models: dict[ModelKey, ModelCounters] = field(default_factory=dict)
    gpu_utilization: tuple[float, ...] = ()


def _by_model(samples: list[Sample] | None, sum_versions: bool) -> dict[ModelKey, float] | None:
    if samples is None:
        return None  # family absent: unknown, not zero
    totals: dict[ModelKey, float] = {}
    for sample in samples:
        model = sample.labels.get("model")
        if model is None:
            continue
        key = (model, "" if sum_versions else sample.labels.get("version", ""))
        totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def reading_from_families(
    families: Families, kind: TargetKind, mono: float, wall: float, sum_versions: bool = True
) -> Reading:
    if kind == "dcgm":
        return Reading(mono, wall, {}, _dcgm_utilization(families))
    pending = _by_model(families.get("nv_inference_pending_request_count"), sum_versions)
    success = _by_model(families.get("nv_inference_request_success"), sum_versions) or {}
    failure = _by_model(families.get("nv_inference_request_failure"), sum_versions) or {}
    queue = _by_model(families.get("nv_inference_queue_duration_us"), sum_versions)
    compute = _by_model(families.get("nv_inference_compute_infer_duration_us"), sum_versions)

    def known(values: dict[ModelKey, float] | None, key: ModelKey) -> float | None:
        return None if values is None else values.get(key)

    models = {
        key: ModelCounters(
            pending=known(pending, key),
            success=success[key],
            failure=failure.get(key, 0.0),  # Triton emits failures only once one happened
            queue_us=known(queue, key),
            compute_infer_us=known(compute, key),
        )
        for key in success  # a model Triton reports at all has a success counter
    }
    gpu = tuple(s.value for s in families.get("nv_gpu_utilization", ()))
    return Reading(mono, wall, models, gpu)


def _dcgm_utilization(families: Families) -> tuple[float, ...]:
    """Prefer GR_ENGINE_ACTIVE (0-1, works under MIG); else GPU_UTIL (percent)."""
    engine = families.get("DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    if engine:
        return tuple(s.value for s in engine)
    return tuple(s.value / 100.0 for s in families.get("DCGM_FI_DEV_GPU_UTIL", ()))
