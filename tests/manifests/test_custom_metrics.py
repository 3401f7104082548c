"""The custom metrics overlay registers both versions on the adapter's Service, and every
custom-metrics HPA example asks for something the adapter answers: the request the HPA would
send for it is run through the real provider against series the example config produces
(custom-metrics-api.md §5.1, §6, §7.1)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from adapter.api.custom import VERSIONS
from adapter.discovery import pod_target
from adapter.kube.quantity import parse_quantity
from adapter.kube.selectors import Selector
from adapter.metrics_catalog import DEPLOYMENT_METRIC_NAMES, POD_METRIC_ALIASES, POD_METRIC_NAMES
from adapter.provider import (
    DEPLOYMENTS,
    PODS,
    CustomMetricInfo,
    SnapshotCustomMetricsProvider,
)
from adapter.signals import pod_group
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.targets import Target
from tests.manifests.test_adapter import adapter_container, port_named
from tests.manifests.test_examples import example_config, example_pod
from tests.manifests.test_validate import (
    BASE,
    CUSTOM_HPA_FILES,
    CUSTOM_METRICS,
    EXAMPLES,
    Obj,
    load_yaml_file,
    objects_of,
    one_of,
    render,
)

IDS = [path.stem for path in CUSTOM_HPA_FILES]
NOW = 1_787_227_200.0


def hpas() -> list[Obj]:
    return [load_yaml_file(path)[0] for path in CUSTOM_HPA_FILES]


# --- the overlay ----------------------------------------------------------------------------


def test_overlay_registers_both_versions_v1beta2_preferred() -> None:
    services = {
        obj["spec"]["version"]: obj
        for obj in objects_of(render(CUSTOM_METRICS), "APIService")
        if obj["spec"]["group"] == "custom.metrics.k8s.io"
    }
    assert set(services) == set(VERSIONS)
    for version, api_service in services.items():
        assert api_service["metadata"]["name"] == f"{version}.custom.metrics.k8s.io"
    assert (
        services["v1beta2"]["spec"]["versionPriority"]
        > services["v1beta1"]["spec"]["versionPriority"]
    )


def test_overlay_keeps_the_external_api_and_adds_nothing_to_the_base_by_itself() -> None:
    overlay = render(CUSTOM_METRICS)
    names = {obj["metadata"]["name"] for obj in objects_of(overlay, "APIService")}
    assert "v1beta1.external.metrics.k8s.io" in names
    base_names = {obj["metadata"]["name"] for obj in objects_of(render(BASE), "APIService")}
    assert base_names == {"v1beta1.external.metrics.k8s.io"}


def test_custom_apiservices_reach_the_same_adapter_port() -> None:
    objects = render(CUSTOM_METRICS)
    external = one_of(objects, "APIService", "v1beta1.external.metrics.k8s.io")["spec"]["service"]
    container = adapter_container(objects)
    service = one_of(objects, "Service", external["name"])
    for api_service in objects_of(objects, "APIService"):
        assert api_service["spec"]["service"] == external
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == external["port"]]
    port_named(container, port["targetPort"])


def test_hpa_controller_may_read_custom_metrics() -> None:
    objects = render(CUSTOM_METRICS)
    role = one_of(objects, "ClusterRole", "tritonscale-custom-metrics-reader")
    assert role["rules"] == [
        {"apiGroups": ["custom.metrics.k8s.io"], "resources": ["*"], "verbs": ["get", "list"]}
    ]
    binding = one_of(objects, "ClusterRoleBinding", "tritonscale-hpa-custom-metrics")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}
    ]


# --- the HPA examples -----------------------------------------------------------------------


def test_nvidia_recipe_is_their_hpa_object() -> None:
    """The HPA of NVIDIA's tutorial chart with its template defaults (§7.1), unchanged."""
    (hpa,) = load_yaml_file(Path(EXAMPLES) / "custom-metrics" / "nvidia-queue-compute-ratio.yaml")
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 4)
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert spec["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "triton:queue_compute:ratio"},
                "target": {"type": "AverageValue", "averageValue": "1000m"},
            },
        }
    ]
    assert POD_METRIC_ALIASES["triton:queue_compute:ratio"] == "triton_queue_compute_ratio"


def test_every_metric_kind_has_an_example() -> None:
    kinds = {hpa["spec"]["metrics"][0]["type"] for hpa in hpas()}
    assert kinds == {"Pods", "Object"}


@pytest.mark.parametrize("hpa", hpas(), ids=IDS)
def test_metric_is_served_for_its_kind(hpa: Obj) -> None:
    (metric,) = hpa["spec"]["metrics"]
    if metric["type"] == "Pods":
        name = metric["pods"]["metric"]["name"]
        assert name in POD_METRIC_NAMES or name in POD_METRIC_ALIASES
        assert metric["pods"]["target"]["type"] == "AverageValue"  # the only one Pods allows
    else:
        described = metric["object"]["describedObject"]
        assert (described["apiVersion"], described["kind"]) == ("apps/v1", "Deployment")
        assert described["name"] == hpa["spec"]["scaleTargetRef"]["name"]
        assert metric["object"]["metric"]["name"] in DEPLOYMENT_METRIC_NAMES


def _example_snapshot(tmp_path: Path) -> tuple[Snapshot, Obj]:
    """Per-pod and group series for one pod of the example Triton Deployment, as the example
    config's discovery would label them."""
    config = example_config(tmp_path)
    deployment = one_of(render(EXAMPLES), "Deployment")
    pod = example_pod(deployment)
    (settings,) = config.discovery.kubernetes
    target = pod_target(pod, settings)
    assert isinstance(target, Target) and target.pod is not None
    group = {**dict(target.group), "model": "resnet"}
    per_pod = {**dict(pod_group(target.group, target.pod.name)), "model": "resnet"}
    series = {m: (SeriesPoint(group, 1.0, NOW, 5),) for m in DEPLOYMENT_METRIC_NAMES}
    pod_series = {m: (SeriesPoint(per_pod, 1.0, NOW, 5),) for m in POD_METRIC_NAMES}
    pods = {(target.namespace, target.pod.name): dict(target.pod.labels)}
    snapshot = Snapshot(
        built_at=NOW,
        series=MappingProxyType(series),
        pod_series=MappingProxyType(pod_series),
        pods=MappingProxyType(pods),
    )
    return snapshot, deployment


@pytest.mark.parametrize("hpa", hpas(), ids=IDS)
def test_the_hpa_request_is_answered_from_the_example_series(hpa: Obj, tmp_path: Path) -> None:
    snapshot, deployment = _example_snapshot(tmp_path)
    provider = SnapshotCustomMetricsProvider(lambda: snapshot, lambda: NOW, 30.0)
    namespace = hpa["metadata"]["namespace"]
    (metric,) = hpa["spec"]["metrics"]
    source = metric["pods"] if metric["type"] == "Pods" else metric["object"]
    labels = source["metric"].get("selector", {}).get("matchLabels", {})
    metric_selector = Selector.parse(",".join(f"{k}={v}" for k, v in labels.items()))
    name = source["metric"]["name"]
    if metric["type"] == "Pods":
        # what the HPA sends: labelSelector = the scale target's selector (status.selector)
        match = deployment["spec"]["selector"]["matchLabels"]
        selector = Selector.parse(",".join(f"{k}={v}" for k, v in match.items()))
        values = provider.get_metric_by_selector(
            namespace, selector, CustomMetricInfo(PODS, name), metric_selector
        )
        assert len(values) == 1 and values[0].described_object.kind == "Pod"
    else:
        described = source["describedObject"]["name"]
        value = provider.get_metric_by_name(
            namespace, described, CustomMetricInfo(DEPLOYMENTS, name), metric_selector
        )
        assert value.described_object.name == deployment["metadata"]["name"]
    assert parse_quantity(str(source["target"]["averageValue"])) > 0
