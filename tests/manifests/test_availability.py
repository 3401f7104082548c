"""The adapter survives a node drain and a preemption: two replicas that surge before they
stop, spread over nodes (and zones when possible), a PodDisruptionBudget that lets a drain
evict only one at a time, and metrics-server's priority class with the quota that admits it
where clusters reserve it (GKE). Checked on base and on the overlays built on it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.labels import selects
from tests.manifests.test_validate import (
    BASE,
    CERT_MANAGER,
    EXAMPLE_ADAPTER,
    Obj,
    objects_of,
    one_of,
    render,
)

KUSTOMIZATIONS = (BASE, CERT_MANAGER, EXAMPLE_ADAPTER)
CRITICAL = "system-cluster-critical"


def deployment(kustomization: str) -> Obj:
    return one_of(render(kustomization), "Deployment", "tritonscale")


def template_labels(kustomization: str) -> dict[str, str]:
    labels: dict[str, str] = deployment(kustomization)["spec"]["template"]["metadata"]["labels"]
    return labels


def peak_pods(kustomization: str) -> int:
    """Pods a rollout runs at once: replicas plus the surge."""
    spec = deployment(kustomization)["spec"]
    surge = spec["strategy"]["rollingUpdate"]["maxSurge"]
    assert isinstance(surge, int), "use an absolute maxSurge"
    replicas: int = spec["replicas"]
    return replicas + surge


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {"a": "1"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"},
         False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
        ({}, {"anything": "x"}, True),
    ],
)  # fmt: skip
def test_selector_helper(selector: Obj, labels: dict[str, str], expected: bool) -> None:
    assert selects(selector, labels) is expected


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_two_replicas_and_no_gap_in_a_rollout(kustomization: str) -> None:
    spec = deployment(kustomization)["spec"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_disruption_budget_lets_drains_evict_one_at_a_time(kustomization: str) -> None:
    objects = render(kustomization)
    (budget,) = objects_of(objects, "PodDisruptionBudget")
    placed = deployment(kustomization)["metadata"]["namespace"]
    assert budget["metadata"]["namespace"] == placed
    spec = budget["spec"]
    assert selects(spec["selector"], template_labels(kustomization))
    replicas = deployment(kustomization)["spec"]["replicas"]
    # At least one stays; at least one may go (a budget nothing can satisfy blocks drains).
    assert spec["minAvailable"] == 1 < replicas
    assert "maxUnavailable" not in spec
    # A pod that is not Ready (crash-looping) must not block a drain.
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def spread(kustomization: str, topology_key: str) -> dict[str, Any]:
    constraints = deployment(kustomization)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    (found,) = [c for c in constraints if c["topologyKey"] == topology_key]
    assert isinstance(found, dict)
    assert selects(found["labelSelector"], template_labels(kustomization))
    assert found["maxSkew"] == 1
    # A rollout's new ReplicaSet spreads among itself; tainted/cordoned nodes do not count.
    assert found["matchLabelKeys"] == ["pod-template-hash"]
    assert found["nodeTaintsPolicy"] == "Honor"
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_replicas_never_share_a_node_while_another_exists(kustomization: str) -> None:
    assert spread(kustomization, "kubernetes.io/hostname")["whenUnsatisfiable"] == "DoNotSchedule"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_replicas_spread_over_zones_when_they_can(kustomization: str) -> None:
    zone = spread(kustomization, "topology.kubernetes.io/zone")
    assert zone["whenUnsatisfiable"] == "ScheduleAnyway"  # single-zone clusters still schedule


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_runs_with_the_priority_of_metrics_server(kustomization: str) -> None:
    assert deployment(kustomization)["spec"]["template"]["spec"]["priorityClassName"] == CRITICAL


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_a_quota_admits_the_critical_pods_in_the_namespace(kustomization: str) -> None:
    # Clusters that limit the critical classes (GKE) admit them only in namespaces holding a
    # quota scoped to them; it must cover every pod a rollout runs at once, with room for
    # pods still terminating during a drain.
    namespace = deployment(kustomization)["metadata"]["namespace"]
    scoped = [
        quota
        for quota in objects_of(render(kustomization), "ResourceQuota")
        if quota["metadata"]["namespace"] == namespace
        and {"scopeName": "PriorityClass", "operator": "In", "values": [CRITICAL]}
        in quota["spec"]["scopeSelector"]["matchExpressions"]
    ]
    assert len(scoped) == 1
    assert set(scoped[0]["spec"]["hard"]) == {"pods"}
    assert int(scoped[0]["spec"]["hard"]["pods"]) >= 2 * peak_pods(kustomization)
