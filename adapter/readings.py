"""From parsed exposition families to one typed reading per scrape.

A reading is what one target said at one moment: per-model Triton counters and
gauges, and GPU utilisation (0-1) per GPU. Families that are absent stay absent.

Every value is checked against what its family can be: counters and the pending
count are finite and >= 0, utilisations finite and within their range. A sample that
is not is *rejected*, never clamped: the model it belongs to (or the target's GPU
utilisation) is left out of the reading and listed as rejected, so signals hold its
series (the previous value ages out) instead of computing one from a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapter.exposition import Families, Sample
from adapter.gpus import GpuSample, dcgm_samples_from_families, triton_samples
from adapter.targets import TargetKind

ModelKey = tuple[str, str]  # (model, version); version is "" when versions are summed

PENDING = "nv_inference_pending_request_count"
SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
QUEUE_US = "nv_inference_queue_duration_us"
COMPUTE_US = "nv_inference_compute_infer_duration_us"
TRITON_GPU = "nv_gpu_utilization"
DCGM_UTIL = "DCGM_FI_DEV_GPU_UTIL"
DCGM_ENGINE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"

# Largest valid value per family (all are >= 0 and finite). Triton's counters and the
# pending count are unsigned 64-bit integers: anything above 2**64 cannot come from Triton.
UINT64_MAX = float(2**64)
VALID_MAX = {
    PENDING: UINT64_MAX,
    SUCCESS: UINT64_MAX,
    FAILURE: UINT64_MAX,
    QUEUE_US: UINT64_MAX,
    COMPUTE_US: UINT64_MAX,
    TRITON_GPU: 1.0,  # a ratio
    DCGM_UTIL: 100.0,  # a percentage
    DCGM_ENGINE: 1.0,  # a ratio
}
REJECT_REASONS = ("nan", "inf", "negative", "above_range")


class ReadingError(ValueError):
    """The scrape as a whole cannot be used (e.g. more models than the cap)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


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
class Rejection:
    """Samples of one family refused for one reason in one scrape.

    ``reason`` is one of :data:`REJECT_REASONS`; ``example`` names the first refused
    sample (its model or GPU) for the log line.
    """

    family: str
    reason: str
    count: int
    example: str

    def describe(self) -> str:
        return f"{self.reason} {self.family} ({self.example}, {self.count} sample(s))"


@dataclass(frozen=True, slots=True)
class Reading:
    """One successful scrape. ``mono`` is a monotonic clock (s) for deltas, ``wall`` Unix (s).

    ``rejected_models`` were reported with an invalid value and are absent from
    ``models``; ``gpu_rejected`` means a utilisation sample was invalid, so the target's
    GPU utilisation is unknown at this scrape. ``series`` counts the kept samples.

    ``gpu_utilization`` (0-1 per GPU) are the GPUs that belong to the target itself: Triton's
    own, or a dcgm-exporter's devices that no pod holds. ``gpus`` are every device with its
    identity and, from dcgm-exporter, the pod it is assigned to (:mod:`adapter.gpus`); a
    rejected device's utilisation there is NaN.
    """

    mono: float
    wall: float
    models: dict[ModelKey, ModelCounters] = field(default_factory=dict)
    gpu_utilization: tuple[float, ...] = ()
    rejected_models: frozenset[ModelKey] = frozenset()
    gpu_rejected: bool = False
    rejections: tuple[Rejection, ...] = ()
    series: int = 0
    gpus: tuple[GpuSample, ...] = ()

    @property
    def clean(self) -> bool:
        """No sample of this scrape was rejected."""
        return not self.rejections


def problem(value: float, highest: float) -> str | None:
    """Why ``value`` is not valid for a family whose values lie in [0, ``highest``]."""
    if 0.0 <= value <= highest and value != math.inf:
        return None
    if value != value:
        return "nan"
    if value in (math.inf, -math.inf):
        return "inf"
    return "negative" if value < 0 else "above_range"


class _Rejections:
    """Collects rejected samples by (family, reason), first example kept."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], tuple[int, str]] = {}

    def add(self, family: str, reason: str, example: str) -> None:
        count, first = self.found.get((family, reason), (0, example))
        self.found[(family, reason)] = (count + 1, first)

    def as_tuple(self) -> tuple[Rejection, ...]:
        return tuple(
            Rejection(family, reason, count, example)
            for (family, reason), (count, example) in sorted(self.found.items())
        )


def _by_model(
    samples: list[Sample] | None,
    family: str,
    sum_versions: bool,
    rejected: set[ModelKey],
    rejections: _Rejections,
) -> dict[ModelKey, float] | None:
    if samples is None:
        return None  # family absent: unknown, not zero
    highest = VALID_MAX[family]
    totals: dict[ModelKey, float] = {}
    for sample in samples:
        model = sample.labels.get("model")
        if model is None:
            continue
        key = (model, "" if sum_versions else sample.labels.get("version", ""))
        value = sample.value
        reason = problem(value, highest)
        if reason is not None:
            rejected.add(key)
            rejections.add(family, reason, f"model {model!r}")
            continue
        totals[key] = totals.get(key, 0.0) + value  # bounded: at most max_series x 2**64
    return totals


def reading_from_families(
    families: Families,
    kind: TargetKind,
    mono: float,
    wall: float,
    sum_versions: bool = True,
    max_models: int | None = None,
) -> Reading:
    """Build the reading of one scrape.

    Raises :class:`ReadingError` (reason ``too_many_models``) when the scrape names
    more than ``max_models`` distinct models: dropping some would silently shrink
    group sums, so the scrape is refused whole.
    """
    series = sum(len(samples) for samples in families.values())
    rejections = _Rejections()
    if kind == "dcgm":
        _dcgm_utilization(families, rejections)  # records the rejected samples
        devices = dcgm_samples_from_families(families)
        unassigned = _unassigned(devices)
        gpu_rejected = any(math.isnan(u) for u in unassigned)
        return Reading(
            mono,
            wall,
            {},
            () if gpu_rejected else unassigned,
            gpu_rejected=gpu_rejected,
            rejections=rejections.as_tuple(),
            series=series,
            gpus=devices,
        )
    rejected: set[ModelKey] = set()

    def by_model(family: str) -> dict[ModelKey, float] | None:
        return _by_model(families.get(family), family, sum_versions, rejected, rejections)

    pending = by_model(PENDING)
    success = by_model(SUCCESS) or {}
    failure = by_model(FAILURE) or {}
    queue = by_model(QUEUE_US)
    compute = by_model(COMPUTE_US)
    if max_models is not None:
        names = _model_names((pending, success, failure, queue, compute), rejected)
        if len(names) > max_models:
            raise ReadingError(
                "too_many_models",
                f"{len(names)} models in one scrape, more than {max_models} "
                "(scrape.max_models_per_target)",
            )

    def known(values: dict[ModelKey, float] | None, key: ModelKey) -> float | None:
        return None if values is None else values.get(key)

    models: dict[ModelKey, ModelCounters] = {}
    for key, succeeded in success.items():  # a model Triton reports at all has a success counter
        if key in rejected:
            continue
        models[key] = ModelCounters(
            pending=known(pending, key),
            success=succeeded,
            failure=failure.get(key, 0.0),  # Triton emits failures only once one happened
            queue_us=known(queue, key),
            compute_infer_us=known(compute, key),
        )
    gpu, gpu_rejected = _checked(families.get(TRITON_GPU, ()), TRITON_GPU, 1.0, rejections)
    return Reading(
        mono,
        wall,
        models,
        gpu,
        rejected_models=frozenset(rejected),
        gpu_rejected=gpu_rejected,
        rejections=rejections.as_tuple(),
        series=series,
        gpus=triton_samples(families),
    )


def _model_names(
    per_family: Iterable[dict[ModelKey, float] | None], rejected: set[ModelKey]
) -> set[str]:
    names = {key[0] for key in rejected}
    for values in per_family:
        if values is not None:
            names.update(key[0] for key in values)
    return names


def _checked(
    samples: Iterable[Sample], family: str, scale: float, rejections: _Rejections
) -> tuple[tuple[float, ...], bool]:
    """Utilisation samples divided by ``scale``; (values, rejected): any invalid sample
    makes the whole set unknown, since a mean over the rest would be a different GPU set."""
    highest = VALID_MAX[family]
    values: list[float] = []
    rejected = False
    for sample in samples:
        reason = problem(sample.value, highest)
        if reason is not None:
            rejected = True
            gpu = sample.labels.get("gpu_uuid") or sample.labels.get("gpu") or "gpu"
            rejections.add(family, reason, f"gpu {gpu!r}")
            continue
        values.append(sample.value / scale)
    return (() if rejected else tuple(values)), rejected


def _dcgm_utilization(
    families: Families, rejections: _Rejections
) -> tuple[tuple[float, ...], bool]:
    """Prefer GR_ENGINE_ACTIVE (0-1, works under MIG); else GPU_UTIL (percent)."""
    engine = families.get(DCGM_ENGINE)
    if engine:
        return _checked(engine, DCGM_ENGINE, 1.0, rejections)
    return _checked(families.get(DCGM_UTIL, ()), DCGM_UTIL, 100.0, rejections)


def _unassigned(devices: tuple[GpuSample, ...]) -> tuple[float, ...]:
    """Utilisation of the devices no pod holds, once per device (GR_ENGINE_ACTIVE, 0-1 and
    valid under MIG, else GPU_UTIL / 100: see :func:`adapter.gpus.dcgm_samples`)."""
    seen: dict[str, float] = {}
    for device in devices:
        if device.pod is None:
            seen.setdefault(device.device, device.utilization)
    return tuple(seen.values())
