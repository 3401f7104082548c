"""GPU utilisation per device and per pod: which GPU (or MIG instance) belongs to which pod.

dcgm-exporter runs once per node (a DaemonSet) and, with ``DCGM_EXPORTER_KUBERNETES=true``, asks
the kubelet's pod-resources API which pod holds each GPU and adds ``namespace``, ``pod`` and
``container`` labels to that GPU's series. A :class:`GpuSample` is one such series at one
scrape: the device, its utilisation (0-1) and the pod it is assigned to. Joining samples to the
Triton pods by ``(namespace, pod)`` gives each pod its own GPUs, so a group's utilisation is the
mean over its own pods' GPUs, never over every GPU of the node (another tenant's included).

Shared GPUs:

* **MIG**: each GPU instance is its own device (``GPU_I_ID``, profile ``GPU_I_PROFILE``) with its
  own pod; ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` is relative to the instance, so a pod's value is the
  busy fraction of the slice it was given. ``DCGM_FI_DEV_GPU_UTIL`` is not reported per instance
  and is not used for one.
* **time-slicing**: several pods hold one GPU UUID, and dcgm-exporter repeats that GPU's series
  once per pod, with the whole GPU's value: each sharing pod sees the GPU's total busy fraction,
  its neighbours' work included. Within one group a device counts once (:func:`mean_utilization`).

Triton's own ``nv_gpu_utilization`` (label ``gpu_uuid``) covers the GPUs visible to that Triton
process, so it is already per pod; it is used for a pod when dcgm-exporter maps no GPU to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from adapter.exposition import Families, Sample

PodKey = tuple[str, str]  # (namespace, pod name)

TRITON_GPU = "nv_gpu_utilization"
DCGM_ENGINE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
DCGM_UTIL = "DCGM_FI_DEV_GPU_UTIL"

_SCALE = {TRITON_GPU: 1.0, DCGM_ENGINE: 1.0, DCGM_UTIL: 100.0}
"""Each family's full scale: utilisation = value / scale (GPU_UTIL is a percentage)."""


@dataclass(frozen=True, slots=True)
class DcgmLabels:
    """The label names dcgm-exporter's pod mapping arrives under.

    Scraped directly they are ``namespace``, ``pod`` and ``container``; through a Prometheus
    whose scrape config does not honour the exporter's labels they become ``exported_namespace``
    and so on.
    """

    namespace: str = "namespace"
    pod: str = "pod"
    container: str = "container"


DIRECT_LABELS = DcgmLabels()


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU, or one MIG instance of a GPU, at one scrape.

    ``device`` identifies it across exporters and pods (the GPU's UUID, plus ``/<GPU_I_ID>``
    for a MIG instance); ``utilization`` is 0-1, NaN when the reported value is not a valid
    utilisation (unknown, never clamped); ``pod`` is ``(namespace, pod)`` when the kubelet
    assigned the device to a pod; ``container`` the container holding it ("" when not
    reported); ``profile`` the MIG profile (e.g. ``3g.40gb``, "" for a whole GPU).
    """

    device: str
    utilization: float
    pod: PodKey | None = None
    container: str = ""
    profile: str = ""


def _utilization(family: str, value: float) -> float:
    scaled = value / _SCALE[family]
    return scaled if 0.0 <= scaled <= 1.0 else math.nan


def _device(labels: Mapping[str, str]) -> str:
    uuid = labels.get("UUID") or labels.get("gpu_uuid")
    if not uuid:  # exporters without UUIDs: the index is unique on its host only
        uuid = f"{labels.get('Hostname', '')}/gpu{labels.get('gpu', '?')}"
    instance = labels.get("GPU_I_ID", "")
    return f"{uuid}/{instance}" if instance else uuid


def gpu_sample(
    family: str, labels: Mapping[str, str], value: float, names: DcgmLabels = DIRECT_LABELS
) -> GpuSample:
    """The :class:`GpuSample` of one series of ``family`` (``labels`` as exposed)."""
    namespace, pod = labels.get(names.namespace, ""), labels.get(names.pod, "")
    return GpuSample(
        device=_device(labels),
        utilization=_utilization(family, value),
        pod=(namespace, pod) if namespace and pod else None,
        container=labels.get(names.container, ""),
        profile=labels.get("GPU_I_PROFILE", ""),
    )


def dcgm_samples(
    by_family: Mapping[str, Sequence[tuple[Mapping[str, str], float]]],
    names: DcgmLabels = DIRECT_LABELS,
) -> tuple[GpuSample, ...]:
    """Every device dcgm-exporter reports, once per (device, pod) series.

    Per device, ``GR_ENGINE_ACTIVE`` (0-1, valid under MIG) when the exporter has it; else
    ``GPU_UTIL`` / 100, except for MIG instances, which it does not measure.
    """
    chosen: dict[tuple[str, PodKey | None, str], GpuSample] = {}
    for family in (DCGM_ENGINE, DCGM_UTIL):
        for labels, value in by_family.get(family, ()):
            if family == DCGM_UTIL and labels.get("GPU_I_ID"):
                continue
            sample = gpu_sample(family, labels, value, names)
            chosen.setdefault((sample.device, sample.pod, sample.container), sample)
    return tuple(chosen.values())


def _pairs(samples: Iterable[Sample]) -> list[tuple[Mapping[str, str], float]]:
    return [(s.labels, s.value) for s in samples]


def dcgm_samples_from_families(families: Families) -> tuple[GpuSample, ...]:
    """:func:`dcgm_samples` of one scrape of dcgm-exporter."""
    return dcgm_samples({f: _pairs(families[f]) for f in (DCGM_ENGINE, DCGM_UTIL) if f in families})


def triton_samples(families: Families) -> tuple[GpuSample, ...]:
    """Triton's ``nv_gpu_utilization``: the GPUs visible to that Triton (no pod labels; the
    scraped pod is their owner)."""
    return tuple(gpu_sample(TRITON_GPU, s.labels, s.value) for s in families.get(TRITON_GPU, ()))


def mean_utilization(samples: Iterable[GpuSample]) -> float | None:
    """Mean utilisation over distinct devices (a time-sliced GPU seen by several pods counts
    once); None without devices; NaN when any device's value is not valid."""
    by_device: dict[str, float] = {}
    for sample in samples:
        by_device.setdefault(sample.device, sample.utilization)
    if not by_device:
        return None
    return sum(by_device.values()) / len(by_device)


@dataclass(frozen=True, slots=True)
class PodGpus:
    """The devices dcgm-exporter assigns to one pod, and when they were read (Unix s: the
    oldest of the exporters' readings that reported them)."""

    samples: tuple[GpuSample, ...]
    wall: float

    def for_container(self, container: str | None) -> tuple[GpuSample, ...]:
        """Devices of ``container`` (all of the pod's when None; a sample without a container
        label belongs to the pod as a whole)."""
        if container is None:
            return self.samples
        return tuple(s for s in self.samples if s.container in ("", container))


def attribute(readings: Iterable[tuple[float, Sequence[GpuSample]]]) -> dict[PodKey, PodGpus]:
    """Group the exporters' samples by pod. ``readings``: (Unix s, samples) per exporter."""
    found: dict[PodKey, tuple[list[GpuSample], float]] = {}
    for wall, samples in readings:
        for sample in samples:
            if sample.pod is None:
                continue
            entry = found.setdefault(sample.pod, ([], wall))
            entry[0].append(sample)
            if wall < entry[1]:
                found[sample.pod] = (entry[0], wall)
    return {pod: PodGpus(tuple(samples), wall) for pod, (samples, wall) in found.items()}


def shared_devices(by_pod: Mapping[PodKey, PodGpus]) -> dict[str, tuple[PodKey, ...]]:
    """Devices assigned to more than one pod (time-slicing), with their pods."""
    holders: dict[str, set[PodKey]] = {}
    for pod, gpus in by_pod.items():
        for sample in gpus.samples:
            holders.setdefault(sample.device, set()).add(pod)
    return {device: tuple(sorted(p)) for device, p in holders.items() if len(p) > 1}
