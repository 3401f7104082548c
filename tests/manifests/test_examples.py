"""The example HPAs ask for metrics the adapter serves, with selectors that match the
example config's series (manifests/examples/adapter), targets that make sense for the
signal's kind, and capacities that agree with that config (external-metrics-api-and-hpa.md
§3)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.config import Config, load_config
from adapter.discovery import pod_target
from adapter.kube.quantity import parse_quantity
from adapter.kube.selectors import Selector
from adapter.metrics_catalog import SERVED_METRIC_NAMES
from adapter.targets import Target
from policies.predictive import PredictiveSettings
from tests.manifests.test_adapter import CONFIG_KEY, rendered_config
from tests.manifests.test_validate import (
    EXAMPLE_ADAPTER,
    EXAMPLE_HPA_FILES,
    EXAMPLES,
    Obj,
    load_yaml_file,
    objects_of,
    one_of,
    render,
)

# A GPU serves every model on it: gpu_utilization has no `model` label.
METRICS_WITHOUT_MODEL_LABEL = frozenset({"gpu_utilization"})
# Per-request means and ratios: splitting them among replicas (AverageValue) is meaningless,
# the HPA must compare them as they are (Value: desired = ceil(ready x value / target)).
NON_ADDITIVE_METRICS = frozenset({"triton_queue_time_seconds", "triton_queue_compute_ratio"})
# Rates whose per-replica target is the replica capacity in requests/s.
CAPACITY_TARGETED_METRICS = frozenset({"triton_arrival_rate", "triton_arrival_rate_forecast"})
# Served, but deliberately without an example HPA.
NO_EXAMPLE = {
    "triton_request_rate": "completions saturate at capacity; scale on triton_arrival_rate",
}


def example_hpas() -> list[tuple[Path, Obj]]:
    return [(path, load_yaml_file(path)[0]) for path in EXAMPLE_HPA_FILES]


def external_metric(hpa: Obj) -> Obj:
    metrics = hpa["spec"]["metrics"]
    assert len(metrics) == 1 and metrics[0]["type"] == "External", hpa["metadata"]["name"]
    external: Obj = metrics[0]["external"]
    return external


def target_quantity(hpa: Obj) -> tuple[str, Decimal]:
    target = external_metric(hpa)["target"]
    field = {"Value": "value", "AverageValue": "averageValue"}[target["type"]]
    assert set(target) == {"type", field}, f"{hpa['metadata']['name']}: {target}"
    return target["type"], parse_quantity(str(target[field]))


def example_config(tmp_path: Path) -> Config:
    _, text = rendered_config(render(EXAMPLE_ADAPTER))
    path = tmp_path / CONFIG_KEY
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def example_pod(deployment: Obj) -> dict[str, Any]:
    """A Running, Ready pod of ``deployment`` as the API server would show it."""
    template = deployment["spec"]["template"]
    name = deployment["metadata"]["name"]
    return {
        "metadata": {
            "name": f"{name}-7d9f8c6b5-x2x4q",
            "namespace": deployment["metadata"]["namespace"],
            "labels": {**template["metadata"]["labels"], "pod-template-hash": "7d9f8c6b5"},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": f"{name}-7d9f8c6b5", "controller": True}
            ],
        },
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def series_group_labels(config: Config) -> list[dict[str, str]]:
    """Labels of the targets the config yields: static ones, and the example Triton
    Deployment's pods as the configured discovery sees them (selector and port checked)."""
    labels = [dict(Target.create(t.url, t.kind, t.labels).labels) for t in config.targets]
    triton = one_of(render(EXAMPLES), "Deployment")
    pod = example_pod(triton)
    for settings in config.discovery.kubernetes:
        pod_namespace = pod["metadata"]["namespace"]
        if settings.namespaces and pod_namespace not in settings.namespaces:
            continue
        if not Selector.parse(settings.label_selector).matches(pod["metadata"]["labels"]):
            continue
        target = pod_target(pod, settings)
        assert isinstance(target, Target), target  # e.g. the named port must exist
        labels.append(dict(target.labels))
    return labels


def series_settings(config: Config, hpa: Obj) -> PredictiveSettings:
    labels = {"namespace": hpa["metadata"]["namespace"]}
    labels |= external_metric(hpa)["metric"]["selector"]["matchLabels"]
    return config.predictive.for_series(labels)


IDS = [path.stem for path in EXAMPLE_HPA_FILES]


def test_every_served_metric_has_an_example_or_a_reason() -> None:
    used = {external_metric(hpa)["metric"]["name"] for _, hpa in example_hpas()}
    assert used | NO_EXAMPLE.keys() == set(SERVED_METRIC_NAMES)
    assert not used & NO_EXAMPLE.keys()


@pytest.mark.parametrize(("path", "hpa"), example_hpas(), ids=IDS)
def test_hpa_asks_for_a_served_metric(path: Path, hpa: Obj) -> None:
    assert external_metric(hpa)["metric"]["name"] in SERVED_METRIC_NAMES


@pytest.mark.parametrize(("path", "hpa"), example_hpas(), ids=IDS)
def test_hpa_selects_one_series_by_deployment_and_model(path: Path, hpa: Obj) -> None:
    metric = external_metric(hpa)["metric"]
    selector = metric["selector"]
    assert set(selector) == {"matchLabels"}, "select with matchLabels only"
    expected = {"deployment"} if metric["name"] in METRICS_WITHOUT_MODEL_LABEL else {
        "deployment", "model"
    }  # fmt: skip
    assert set(selector["matchLabels"]) == expected


@pytest.mark.parametrize(("path", "hpa"), example_hpas(), ids=IDS)
def test_hpa_target_is_positive_and_of_the_right_kind(path: Path, hpa: Obj) -> None:
    target_type, quantity = target_quantity(hpa)
    assert quantity > 0
    name = external_metric(hpa)["metric"]["name"]
    assert target_type == ("Value" if name in NON_ADDITIVE_METRICS else "AverageValue")


@pytest.mark.parametrize(("path", "hpa"), example_hpas(), ids=IDS)
def test_hpa_bounds_are_sane(path: Path, hpa: Obj) -> None:
    spec = hpa["spec"]
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]


@pytest.mark.parametrize(("path", "hpa"), example_hpas(), ids=IDS)
def test_hpa_selects_a_series_the_example_config_produces(
    path: Path, hpa: Obj, tmp_path: Path
) -> None:
    # The adapter labels a series with its target's labels (namespace, deployment) plus model.
    wanted = {"namespace": hpa["metadata"]["namespace"]}
    wanted["deployment"] = external_metric(hpa)["metric"]["selector"]["matchLabels"]["deployment"]
    labels = series_group_labels(example_config(tmp_path))
    assert any(wanted.items() <= target.items() for target in labels), (wanted, labels)


@pytest.mark.parametrize(
    ("path", "hpa"),
    [(p, h) for p, h in example_hpas() if external_metric(h)["metric"]["name"]
     in CAPACITY_TARGETED_METRICS],
    ids=lambda value: value.stem if isinstance(value, Path) else "",
)  # fmt: skip
def test_rate_target_per_replica_is_the_configured_capacity(
    path: Path, hpa: Obj, tmp_path: Path
) -> None:
    capacity = series_settings(example_config(tmp_path), hpa).capacity_rps
    assert capacity is not None, "the selected series has no capacity_rps in the config"
    assert target_quantity(hpa) == ("AverageValue", Decimal(repr(capacity)))


def desired_replicas_hpa() -> Obj:
    found = [
        hpa
        for _, hpa in example_hpas()
        if external_metric(hpa)["metric"]["name"] == "triton_desired_replicas"
    ]
    assert len(found) == 1
    return found[0]


def test_desired_replicas_is_taken_as_is() -> None:
    assert target_quantity(desired_replicas_hpa()) == ("AverageValue", Decimal(1))


def test_desired_replicas_behavior_is_what_the_simulator_evaluated() -> None:
    from loadtest.simulator.controllers import TritonscaleTuning

    behavior = desired_replicas_hpa()["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert {policy["type"] for policy in behavior["scaleUp"]["policies"]} == {"Pods", "Percent"}
    # The policy holds scale-down itself (scale_down_delay_seconds); the HPA adds nothing.
    evaluated = TritonscaleTuning().hpa_scale_down_stabilization_seconds
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == evaluated


def test_desired_replicas_series_has_a_capacity(tmp_path: Path) -> None:
    # triton_desired_replicas needs capacity_rps for its series (config contract).
    settings = series_settings(example_config(tmp_path), desired_replicas_hpa())
    assert settings.capacity_rps is not None


@pytest.mark.parametrize(("path", "hpa"), example_hpas(), ids=IDS)
def test_hpa_scales_the_example_triton_deployment(path: Path, hpa: Obj) -> None:
    deployment = one_of(render(EXAMPLES), "Deployment")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    assert ref["name"] == deployment["metadata"]["name"]
    assert hpa["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_examples_kustomization_has_one_hpa_per_scale_target() -> None:
    hpas = objects_of(render(EXAMPLES), "HorizontalPodAutoscaler")
    targets = [hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas]
    assert len(targets) == len(set(targets)) == 1


def test_example_hpa_files_hold_one_hpa_each_with_distinct_names() -> None:
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in EXAMPLE_HPA_FILES]
    assert len(names) == len(set(names)) == len(EXAMPLE_HPA_FILES)


def test_triton_exposes_metrics_on_8002_through_a_named_port() -> None:
    objects = render(EXAMPLES)
    container = one_of(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == 8002
    assert "--metrics-port=8002" in container["args"]
    service_ports = {p["name"]: p for p in one_of(objects, "Service")["spec"]["ports"]}
    assert service_ports["metrics"]["targetPort"] == "metrics"


def test_keda_scaledobject_reads_a_served_series(tmp_path: Path) -> None:
    from urllib.parse import parse_qs, urlsplit

    from adapter.api.server import KEDA_PATH

    documents = list(
        yaml.safe_load_all(Path("manifests/examples/keda/scaledobject.yaml").read_text())
    )
    scaled = next(d for d in documents if d["kind"] == "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api" and trigger["metadata"]["valueLocation"] == "value"
    url = urlsplit(trigger["metadata"]["url"])
    prefix, namespace, metric = url.path.rsplit("/", 2)
    assert prefix == f"{KEDA_PATH}/namespaces"
    assert namespace == scaled["metadata"]["namespace"]
    assert metric in SERVED_METRIC_NAMES
    selector = Selector.parse(parse_qs(url.query)["labelSelector"][0])
    labels = series_group_labels(example_config(tmp_path))
    assert any(selector.matches({**group, "model": "resnet"}) for group in labels)
    role = next(d for d in documents if d["kind"] == "ClusterRole")
    assert role["rules"] == [{"nonResourceURLs": [f"{KEDA_PATH}/*"], "verbs": ["get"]}]
