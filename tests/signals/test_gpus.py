"""GPU devices from dcgm-exporter with the kubelet's pod mapping: MIG instances, time-sliced
GPUs, idle GPUs, and Triton's own nv_gpu_utilization (fixtures: tests/data/README.md)."""

from __future__ import annotations

import math

import pytest

from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.gpus import (
    DcgmLabels,
    GpuSample,
    PodGpus,
    attribute,
    dcgm_samples,
    mean_utilization,
    shared_devices,
)
from adapter.readings import reading_from_families
from tests.support.paths import DCGM_FIXTURE, DCGM_NODE_A, DCGM_NODE_B

LLM = "triton-llm-7d9f8b6c5d"
EMB = "triton-embed-5b8c9d7f4c"
PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)


def devices(text: str) -> tuple[GpuSample, ...]:
    return reading_from_families(PARSER.parse(text), "dcgm", 0.0, 0.0).gpus


def by_pod(samples: tuple[GpuSample, ...]) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    for s in samples:
        key = "/".join(s.pod) if s.pod else "-"
        out.setdefault(key, []).append((s.device, s.utilization))
    return out


def test_each_gpu_is_assigned_to_the_pod_the_kubelet_gave_it() -> None:
    found = by_pod(devices(DCGM_NODE_A.read_text()))
    assert found == {
        f"prod/{LLM}-abcde": [("GPU-0a1b2c3d-0000-4e5f-8a9b-000000000a00", 0.8)],
        f"prod/{LLM}-fghij": [("GPU-0a1b2c3d-0001-4e5f-8a9b-000000000a01", 0.6)],
        "research/train-job-0": [("GPU-0a1b2c3d-0002-4e5f-8a9b-000000000a02", 0.99)],
        "-": [("GPU-0a1b2c3d-0003-4e5f-8a9b-000000000a03", 0.0)],  # idle: no pod holds it
    }


def test_gr_engine_active_is_preferred_and_gpu_util_is_the_fallback() -> None:
    text = DCGM_NODE_A.read_text()
    engine = {s.pod: s.utilization for s in devices(text)}
    without_dcp = "\n".join(
        line for line in text.splitlines() if "DCGM_FI_PROF_GR_ENGINE_ACTIVE" not in line
    )
    util = {s.pod: s.utilization for s in devices(without_dcp)}
    pod = ("prod", f"{LLM}-abcde")
    assert engine[pod] == pytest.approx(0.80)  # DCGM_FI_PROF_GR_ENGINE_ACTIVE 0.8
    assert util[pod] == pytest.approx(0.92)  # DCGM_FI_DEV_GPU_UTIL 92 (%)


def test_mig_instances_are_devices_of_their_own_with_their_own_pod() -> None:
    mig = [s for s in devices(DCGM_NODE_B.read_text()) if s.profile]
    assert [(s.device, s.profile, s.pod, s.utilization) for s in mig] == [
        ("GPU-5e6f7a8b-1000-4c2d-9e0f-00000000b000/1", "3g.40gb", ("prod", f"{LLM}-klmno"), 0.5),
        ("GPU-5e6f7a8b-1000-4c2d-9e0f-00000000b000/2", "3g.40gb", ("prod", f"{EMB}-pqrst"), 0.2),
    ]


def test_a_mig_instance_is_never_read_from_gpu_util() -> None:
    """DCGM does not measure GPU_UTIL per instance: without GR_ENGINE_ACTIVE it is unknown."""
    line = (
        'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-x",GPU_I_PROFILE="1g.10gb",GPU_I_ID="7",'
        'namespace="prod",pod="p"} 100\n'
    )
    assert devices(line) == ()


def test_a_time_sliced_gpu_appears_once_per_pod_with_the_whole_gpu_value() -> None:
    shared = [s for s in devices(DCGM_NODE_B.read_text()) if s.device.endswith("b001")]
    assert sorted((s.pod, s.container, s.utilization) for s in shared) == [
        (("prod", f"{EMB}-uvwxy"), "triton", 0.7),
        (("prod", f"{EMB}-zabcd"), "triton", 0.7),
        (("research", "notebook-0"), "jupyter", 0.7),
    ]
    by_pod_gpus = attribute([(100.0, devices(DCGM_NODE_B.read_text()))])
    assert shared_devices(by_pod_gpus) == {
        "GPU-5e6f7a8b-1001-4c2d-9e0f-00000000b001": (
            ("prod", f"{EMB}-uvwxy"),
            ("prod", f"{EMB}-zabcd"),
            ("research", "notebook-0"),
        )
    }


def test_a_device_counts_once_in_a_mean() -> None:
    a, b = GpuSample("g1", 0.7, ("prod", "x")), GpuSample("g1", 0.7, ("prod", "y"))
    assert mean_utilization([a, b, GpuSample("g2", 0.1)]) == pytest.approx(0.4)
    assert mean_utilization([]) is None


@pytest.mark.parametrize("value", ["NaN", "-1", "101", "+Inf"])
def test_an_invalid_value_makes_the_device_unknown_never_clamped(value: str) -> None:
    (sample,) = devices(f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="GPU-x"}} {value}\n')
    assert math.isnan(sample.utilization)
    assert math.isnan(mean_utilization([sample, GpuSample("GPU-y", 0.5)]) or 0.0)


def test_exporter_without_kubernetes_mapping_assigns_nothing() -> None:
    reading = reading_from_families(PARSER.parse(DCGM_FIXTURE.read_text()), "dcgm", 0.0, 0.0)
    assert [s.pod for s in reading.gpus] == [None]
    assert reading.gpu_utilization == (0.0,)  # the target's own (legacy static group)


def test_prometheus_renamed_labels_are_read_with_their_names() -> None:
    """A Prometheus scrape without honor_labels renames the exporter's pod labels."""
    names = DcgmLabels("exported_namespace", "exported_pod", "exported_container")
    labels = {
        "UUID": "GPU-1",
        "exported_namespace": "prod",
        "exported_pod": "p",
        "exported_container": "triton",
        "namespace": "gpu-operator",
        "pod": "nvidia-dcgm-exporter-x",
    }
    (sample,) = dcgm_samples({"DCGM_FI_PROF_GR_ENGINE_ACTIVE": [(labels, 0.25)]}, names)
    assert (sample.pod, sample.container, sample.utilization) == (("prod", "p"), "triton", 0.25)


def test_triton_reports_its_own_gpus_by_uuid() -> None:
    text = (
        "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n"
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="GPU-aa"} 0.25\n'
        'nv_gpu_utilization{gpu_uuid="GPU-bb"} 0.75\n'
    )
    reading = reading_from_families(PARSER.parse(text), "triton", 0.0, 0.0)
    assert [(s.device, s.utilization, s.pod) for s in reading.gpus] == [
        ("GPU-aa", 0.25, None),
        ("GPU-bb", 0.75, None),
    ]


def test_a_container_filter_keeps_pod_wide_samples() -> None:
    gpus = PodGpus(
        (GpuSample("a", 0.1, ("n", "p"), "triton"), GpuSample("b", 0.9, ("n", "p"), "sidecar")),
        0.0,
    )
    assert [s.device for s in gpus.for_container("triton")] == ["a"]
    assert [s.device for s in gpus.for_container(None)] == ["a", "b"]
