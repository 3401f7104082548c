"""The HPA YAML files users apply, read into the HPA model the emulator and simulator run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loadtest.harness.hpa_manifest import HPAManifestError, hpa_from_object, load_hpa
from policies.hpa import HPAController, ScalingPolicy
from tests.support.paths import REPO_ROOT

EXAMPLES = REPO_ROOT / "manifests" / "examples" / "hpa"

# file -> (metric, target type, target, selector)
EXPECTED = {
    "arrival-rate-forecast.yaml": (
        "triton_arrival_rate_forecast",
        "AverageValue",
        40.0,
        "deployment=triton-llm,model=resnet",
    ),
    "arrival-rate.yaml": (
        "triton_arrival_rate",
        "AverageValue",
        40.0,
        "deployment=triton-llm,model=resnet",
    ),
    "desired-replicas.yaml": (
        "triton_desired_replicas",
        "AverageValue",
        1.0,
        "deployment=triton-llm,model=resnet",
    ),
    "gpu-utilization.yaml": ("gpu_utilization", "AverageValue", 0.7, "deployment=triton-llm"),
    "queue-compute-ratio.yaml": (
        "triton_queue_compute_ratio",
        "Value",
        1.0,
        "deployment=triton-llm,model=resnet",
    ),
    "queue-depth-forecast.yaml": (
        "triton_queue_depth_forecast",
        "AverageValue",
        8.0,
        "deployment=triton-llm,model=resnet",
    ),
    "queue-depth.yaml": (
        "triton_queue_depth",
        "AverageValue",
        8.0,
        "deployment=triton-llm,model=resnet",
    ),
    "queue-time.yaml": (
        "triton_queue_time_seconds",
        "Value",
        0.1,
        "deployment=triton-llm,model=resnet",
    ),
}


def test_every_example_file_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_hpa_is_read_as_applied(name: str) -> None:
    hpa = load_hpa(EXAMPLES / name)
    metric, kind, target, selector = EXPECTED[name]
    assert (hpa.namespace, hpa.scale_target) == ("prod", "Deployment/triton-llm")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 8)
    (query,) = hpa.metrics
    assert (query.name, query.target.kind, query.selector) == (metric, kind, selector)
    assert query.target.target == pytest.approx(target)
    assert hpa.spec.metrics == (query.target,)
    HPAController(hpa.spec)  # the controller accepts it


def test_behavior_is_read_field_by_field() -> None:
    behavior = load_hpa(EXAMPLES / "desired-replicas.yaml").spec.behavior
    assert behavior is not None and behavior.scale_up is not None
    assert behavior.scale_down is not None
    assert behavior.scale_up.stabilization_window_seconds == 0
    assert behavior.scale_up.policies == (
        ScalingPolicy("Pods", 4, 15),
        ScalingPolicy("Percent", 100, 15),
    )
    assert behavior.scale_down.stabilization_window_seconds == 0
    assert behavior.scale_down.policies == (ScalingPolicy("Percent", 100, 15),)
    assert load_hpa(EXAMPLES / "queue-compute-ratio.yaml").spec.behavior is None  # defaults


def base(**spec: object) -> dict[str, object]:
    metric = {
        "type": "External",
        "external": {
            "metric": {
                "name": "m",
                "selector": {
                    "matchLabels": {"b": "2", "a": "1"},
                    "matchExpressions": [
                        {"key": "tier", "operator": "In", "values": ["gpu", "cpu"]},
                        {"key": "canary", "operator": "DoesNotExist"},
                    ],
                },
            },
            "target": {"type": "AverageValue", "averageValue": "500m"},
        },
    }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "d"},
            "maxReplicas": 4,
            "metrics": [metric],
            **spec,
        },
    }


def test_selectors_are_sent_as_the_hpa_sends_them() -> None:
    (query,) = hpa_from_object(base()).metrics
    assert query.selector == "a=1,b=2,tier in (cpu,gpu),!canary"
    assert query.target.target == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"maxReplicas": 0}, "spec.maxReplicas: must be an integer >= 1"),
        ({"minReplicas": 5}, "spec.minReplicas: 5 is above maxReplicas 4"),
        ({"metrics": []}, "spec.metrics: must list at least one metric"),
        (
            {"metrics": [{"type": "Resource", "resource": {"name": "cpu"}}]},
            "spec.metrics[0].type: only External metrics are emulated",
        ),
        (
            {
                "behavior": {
                    "scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}
                }
            },
            "spec.behavior.scaleUp.policies[0].value: must be an integer >= 1",
        ),
        (
            {"behavior": {"scaleDown": {"selectPolicy": "Sometimes"}}},
            "spec.behavior.scaleDown: ScalingRules.select_policy must be",
        ),
    ],
)
def test_invalid_objects_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(HPAManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        hpa_from_object(base(**change), "hpa.yaml")


def test_bad_target_quantity_names_the_field(tmp_path: Path) -> None:
    obj = base()
    obj["spec"]["metrics"][0]["external"]["target"] = {  # type: ignore[index]
        "type": "AverageValue",
        "averageValue": "lots",
    }
    path = tmp_path / "hpa.yaml"
    path.write_text(yaml.safe_dump(obj))
    with pytest.raises(HPAManifestError, match=r"hpa.yaml: spec.metrics\[0\].external.target"):
        load_hpa(path)
    path.write_text("kind: ConfigMap\n")
    with pytest.raises(HPAManifestError, match="expected one HorizontalPodAutoscaler, found 0"):
        load_hpa(path)


def test_max_replicas_cap_keeps_everything_else() -> None:
    hpa = load_hpa(EXAMPLES / "desired-replicas.yaml")
    capped = hpa.with_max_replicas(5)
    assert capped.spec.max_replicas == 5
    assert capped.spec.behavior == hpa.spec.behavior and capped.metrics == hpa.metrics
    assert hpa.with_max_replicas(50) is hpa
