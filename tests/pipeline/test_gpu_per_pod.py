"""GPU utilisation per pod: node-wide dcgm-exporters joined to the Triton pods by the pod
labels the kubelet mapping puts on each GPU, so another tenant's GPUs never move a group's
signal; per-pod values reach the custom metrics API's Pods metric."""

from __future__ import annotations

import re

import pytest

from adapter.config import load_config
from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.kube.selectors import Selector
from adapter.pipeline import Pipeline
from adapter.provider import (
    PODS,
    CustomMetricInfo,
    SnapshotCustomMetricsProvider,
    StaleMetricError,
)
from adapter.readings import ModelCounters, Reading, reading_from_families
from adapter.snapshot import Snapshot
from adapter.targets import StaticTargets, Target
from tests.support.paths import DCGM_NODE_A, DCGM_NODE_B

T0 = 1_700_000_000.0
LLM = "triton-llm-7d9f8b6c5d"
EMB = "triton-embed-5b8c9d7f4c"
LLM_PODS = (f"{LLM}-abcde", f"{LLM}-fghij", f"{LLM}-klmno")
EMB_PODS = (f"{EMB}-pqrst", f"{EMB}-uvwxy", f"{EMB}-zabcd")
PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)


def triton_pod(pod: str, deployment: str, container: str | None = "triton") -> Target:
    return Target.create(
        f"http://{pod}:8002/metrics",
        "triton",
        {"namespace": "prod", "deployment": deployment},
        pod=pod,
        pod_labels={"app": deployment},
        container=container,
    )


def exporter(node: str) -> Target:
    """A discovered dcgm-exporter DaemonSet pod: its own namespace and workload."""
    labels = {"namespace": "gpu-operator", "deployment": "nvidia-dcgm-exporter"}
    return Target.create(f"http://{node}:9400/metrics", "dcgm", labels, pod=f"dcgm-{node}")


def triton_reading(t: float, gpu_text: str = "") -> Reading:
    reading = reading_from_families(PARSER.parse(gpu_text), "triton", t, T0 + t)
    counters = ModelCounters(0.0, 10.0 * t, 0.0, 0.0, 0.0)
    models = {("m", ""): counters}
    return Reading(reading.mono, reading.wall, models, reading.gpu_utilization, reading.gpus)


def dcgm_reading(t: float, text: str) -> Reading:
    return reading_from_families(PARSER.parse(text), "dcgm", t, T0 + t)


def cluster(node_a: str | None = None, node_b: str | None = None) -> Pipeline:
    """Both deployments' pods and both nodes' exporters, each with two readings."""
    texts = {"a": node_a or DCGM_NODE_A.read_text(), "b": node_b or DCGM_NODE_B.read_text()}
    targets = [triton_pod(p, "triton-llm") for p in LLM_PODS]
    targets += [triton_pod(p, "triton-embed") for p in EMB_PODS]
    nodes = {"a": exporter("a"), "b": exporter("b")}
    config = load_config(None)
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([*targets, *nodes.values()]))
    for target in targets:
        state = pipeline.track(target)
        for t in (0, 1):
            state.history.add(triton_reading(t))
    for name, target in nodes.items():
        pipeline.track(target).history.add(dcgm_reading(1, texts[name]))
    return pipeline


def gpu(snapshot: Snapshot) -> dict[str, float]:
    return {p.labels["deployment"]: p.value for p in snapshot.points("gpu_utilization")}


def pod_gpu(snapshot: Snapshot) -> dict[str, float]:
    return {p.labels["pod"]: p.value for p in snapshot.pod_points("gpu_utilization")}


def test_a_group_averages_its_own_pods_gpus_only() -> None:
    snapshot = cluster().publish(1.0, T0 + 1.0)
    # triton-llm: L4 0.80 and 0.60 on node a, its 3g.40gb MIG instance 0.50 on node b.
    # triton-embed: its MIG instance 0.20, and the time-sliced GPU 0.70 counted once although
    # two of its pods share it. Never the other team's 0.99 / 0.95 nor the idle GPUs' 0.
    assert gpu(snapshot) == pytest.approx({"triton-llm": 0.63333333, "triton-embed": 0.45})
    assert "gpu-operator" not in {p.labels["namespace"] for p in snapshot.points("gpu_utilization")}


def test_another_tenants_gpus_do_not_move_the_signal() -> None:
    before = gpu(cluster().publish(1.0, T0 + 1.0))

    def quiet(text: str, pod: str) -> str:
        changed = re.sub(rf'(pod="{pod}"\}} )[0-9.]+', r"\g<1>0.010000", text)
        assert changed != text
        return changed

    node_a = quiet(DCGM_NODE_A.read_text(), "train-job-0")
    node_b = quiet(DCGM_NODE_B.read_text(), "train-job-1")
    after = gpu(cluster(node_a=node_a, node_b=node_b).publish(1.0, T0 + 1.0))
    assert after == pytest.approx(before)


def test_each_pod_gets_its_own_gpus() -> None:
    values = pod_gpu(cluster().publish(1.0, T0 + 1.0))
    assert values == pytest.approx(
        {
            f"{LLM}-abcde": 0.80,
            f"{LLM}-fghij": 0.60,
            f"{LLM}-klmno": 0.50,  # its MIG slice's own engine activity
            f"{EMB}-pqrst": 0.20,
            f"{EMB}-uvwxy": 0.70,  # time-sliced: the whole GPU's value, for each sharer
            f"{EMB}-zabcd": 0.70,
        }
    )


def test_the_pods_metric_serves_the_pods_own_gpus() -> None:
    snapshot = cluster().publish(1.0, T0 + 1.0)
    provider = SnapshotCustomMetricsProvider(lambda: snapshot, lambda: T0 + 2.0, 30.0)
    info = CustomMetricInfo(PODS, "gpu_utilization")
    values = provider.get_metric_by_selector(
        "prod", Selector.parse("app=triton-llm"), info, Selector.parse("")
    )
    assert {v.described_object.name: round(v.value, 3) for v in values} == {
        f"{LLM}-abcde": 0.8,
        f"{LLM}-fghij": 0.6,
        f"{LLM}-klmno": 0.5,
    }


def test_a_dead_exporter_makes_its_pods_gpus_stale_never_zero() -> None:
    pipeline = cluster()
    for target, state in pipeline.targets.items():
        if target.kind == "triton":
            state.history.add(triton_reading(60))  # the Tritons keep answering; exporters don't
    snapshot = pipeline.publish(60.0, T0 + 60.0)
    stamps = {p.labels["deployment"]: p.timestamp for p in snapshot.points("gpu_utilization")}
    assert stamps == {"triton-llm": T0 + 1, "triton-embed": T0 + 1}
    provider = SnapshotCustomMetricsProvider(lambda: snapshot, lambda: T0 + 60.0, 30.0)
    with pytest.raises(StaleMetricError, match="no data younger than 30s"):
        provider.get_metric_by_name(
            "prod", f"{LLM}-abcde", CustomMetricInfo(PODS, "gpu_utilization"), Selector.parse("")
        )


def test_without_a_dcgm_mapping_a_pod_uses_tritons_own_gpus() -> None:
    target = triton_pod("solo-0", "solo")
    config = load_config(None)
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([target, exporter("a")]))
    state = pipeline.track(target)
    text = (
        'nv_gpu_utilization{gpu_uuid="GPU-aa"} 0.25\nnv_gpu_utilization{gpu_uuid="GPU-bb"} 0.75\n'
    )
    for t in (0, 1):
        state.history.add(triton_reading(t, text))
    pipeline.track(exporter("a")).history.add(dcgm_reading(1, DCGM_NODE_A.read_text()))
    snapshot = pipeline.publish(1.0, T0 + 1.0)
    assert gpu(snapshot) == {"solo": 0.5}
    assert pod_gpu(snapshot) == {"solo-0": 0.5}


def test_dcgm_assignment_wins_over_tritons_own_value_for_the_same_gpu() -> None:
    """Triton's nv_gpu_utilization and dcgm-exporter see the same GPU: counted once, from
    dcgm-exporter (GR_ENGINE_ACTIVE is valid under MIG, Triton's value is not per instance)."""
    target = triton_pod(f"{LLM}-abcde", "triton-llm")
    config = load_config(None)
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([target, exporter("a")]))
    state = pipeline.track(target)
    text = 'nv_gpu_utilization{gpu_uuid="GPU-0a1b2c3d-0000-4e5f-8a9b-000000000a00"} 0.92\n'
    for t in (0, 1):
        state.history.add(triton_reading(t, text))
    pipeline.track(exporter("a")).history.add(dcgm_reading(1, DCGM_NODE_A.read_text()))
    assert pod_gpu(pipeline.publish(1.0, T0 + 1.0)) == {f"{LLM}-abcde": 0.8}


def test_only_the_triton_containers_gpus_count_when_it_is_known() -> None:
    text = (
        'DCGM_FI_PROF_GR_ENGINE_ACTIVE{UUID="GPU-1",container="triton",namespace="prod",'
        'pod="p-0"} 0.4\n'
        'DCGM_FI_PROF_GR_ENGINE_ACTIVE{UUID="GPU-2",container="encoder",namespace="prod",'
        'pod="p-0"} 1.0\n'
    )
    results = {}
    for container in ("triton", None):
        target = triton_pod("p-0", "p", container=container)
        config = load_config(None)
        pipeline = Pipeline(config.scrape, config.signals, StaticTargets([target, exporter("a")]))
        state = pipeline.track(target)
        for t in (0, 1):
            state.history.add(triton_reading(t))
        pipeline.track(exporter("a")).history.add(dcgm_reading(1, text))
        results[container] = pod_gpu(pipeline.publish(1.0, T0 + 1.0))["p-0"]
    assert results == pytest.approx({"triton": 0.4, None: 0.7})


def test_an_exporter_pod_forms_no_group_of_its_own() -> None:
    snapshot = cluster().publish(1.0, T0 + 1.0)
    groups = {p.labels["deployment"] for m in snapshot.series for p in snapshot.points(m)}
    assert groups == {"triton-llm", "triton-embed"}
    assert ("gpu-operator", "dcgm-a") not in snapshot.pods


def test_a_static_exporter_named_for_a_group_feeds_it_the_unassigned_gpus() -> None:
    """The setup before pod mapping: a dcgm target configured with the group its node serves."""
    group = {"namespace": "prod", "deployment": "dedicated"}
    static = Target.create("http://node:9400/metrics", "dcgm", group)
    config = load_config(None)
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([static]))
    pipeline.track(static).history.add(dcgm_reading(1, DCGM_NODE_A.read_text()))
    # only the idle GPU is unassigned: the others belong to pods, which this group is not
    assert gpu(pipeline.publish(1.0, T0 + 1.0)) == {"dedicated": 0.0}
