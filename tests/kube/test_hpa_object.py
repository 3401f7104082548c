"""HPA objects as explain reads them: External metrics with their selectors and targets, the
behavior, the status replicas; other metric types listed as not evaluated; errors name the field."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.kube.hpa import HPAObjectError, find_hpa, hpa_from_object, selector_text
from policies.hpa import ScalingPolicy


def hpa(metrics: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "llm", "namespace": "prod"},
        "spec": {"minReplicas": 2, "maxReplicas": 10, "metrics": metrics, **spec},
        "status": {"currentReplicas": 3},
    }


def external(name: str, target: dict[str, str], selector: Any = None) -> dict[str, Any]:
    metric: dict[str, Any] = {"name": name}
    if selector is not None:
        metric["selector"] = selector
    return {"type": "External", "external": {"metric": metric, "target": target}}


def test_an_hpa_with_external_metrics_and_behavior() -> None:
    obj = hpa(
        [
            external(
                "triton_queue_depth",
                {"type": "Value", "value": "500m"},
                {
                    "matchLabels": {"model": "resnet", "deployment": "llm"},
                    "matchExpressions": [
                        {"key": "version", "operator": "In", "values": ["2", "1"]}
                    ],
                },
            ),
            external("triton_desired_replicas", {"type": "AverageValue", "averageValue": "1"}),
            {"type": "Pods", "pods": {}},
        ],
        behavior={
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
            }
        },
    )
    parsed = hpa_from_object(find_hpa([{"kind": "List", "items": [obj]}]))
    assert (parsed.name, parsed.namespace, parsed.current_replicas) == ("llm", "prod", 3)
    first, second = parsed.metrics
    assert first.selector == "deployment=llm,model=resnet,version in (1,2)"
    assert (first.target.kind, first.target.target) == ("Value", 0.5)
    assert (second.selector, second.target.kind) == ("", "AverageValue")
    assert parsed.spec.min_replicas == 2 and parsed.spec.max_replicas == 10
    assert parsed.spec.behavior is not None and parsed.spec.behavior.scale_down is not None
    assert parsed.spec.behavior.scale_down.policies == (ScalingPolicy("Pods", 1, 60),)
    assert parsed.not_evaluated == ("spec.metrics[2] (Pods): only External metrics are evaluated",)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (hpa([external("m", {"type": "Utilization"})]), "spec.metrics[0].external.target.type"),
        (
            hpa([external("m", {"type": "Value", "value": "lots"})]),
            "spec.metrics[0].external.target.value",
        ),
        (
            hpa([external("m", {"type": "Value", "value": "1"})], maxReplicas="ten"),
            "spec.maxReplicas",
        ),
        (hpa([]), "spec.metrics: no External metric"),
        ({"kind": "HorizontalPodAutoscaler"}, "spec: missing"),
    ],
)
def test_errors_name_the_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(HPAObjectError, match=message.replace("[", r"\[").replace("]", r"\]")):
        hpa_from_object(obj)


def test_selectors_and_missing_objects() -> None:
    assert selector_text(None, "s") == ""
    expressions = [
        {"key": "a", "operator": "Exists"},
        {"key": "b", "operator": "DoesNotExist"},
        {"key": "c", "operator": "NotIn", "values": ["x"]},
    ]
    assert selector_text({"matchExpressions": expressions}, "s") == "a,!b,c notin (x)"
    with pytest.raises(HPAObjectError, match="no HorizontalPodAutoscaler"):
        find_hpa([{"kind": "Deployment"}])


def test_every_shipped_hpa_example_can_be_explained() -> None:
    import yaml

    from tests.support.paths import REPO_ROOT

    examples = sorted((REPO_ROOT / "manifests" / "examples" / "hpa").glob("*.yaml"))
    assert examples
    for path in examples:
        parsed = hpa_from_object(find_hpa(list(yaml.safe_load_all(path.read_text()))))
        assert parsed.metrics, path
