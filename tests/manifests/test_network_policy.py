"""The adapter's NetworkPolicy admits what it must and nothing else, evaluated the way the
NetworkPolicy API defines it (peers, selectors, named and numbered ports):

- in: the API server (a host-network or out-of-cluster address, never a pod), the kubelet and
  Prometheus on the serving port; nothing on any other port;
- out: the pods config.yaml discovers on their metrics port (tied to the config, so the two
  cannot drift apart), dcgm-exporter, the Kubernetes API on 443/6443, DNS; nothing else.

With overlays/keda-scaler, KEDA's operator (and only it) reaches the external scaler's gRPC
port, in the namespace where the overlay puts KEDA's client certificate.

The example policy for a default-deny Triton namespace admits the adapter's scrapes and
keeps inference open.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adapter.config import load_config
from adapter.kube.selectors import Selector
from tests.manifests.labels import selects
from tests.manifests.test_adapter import adapter_container, flag_value, rendered_config
from tests.manifests.test_validate import (
    BASE,
    CERT_MANAGER,
    EXAMPLE_ADAPTER,
    EXAMPLES,
    KEDA_SCALER,
    Obj,
    objects_of,
    one_of,
    render,
)

ADAPTER_NAMESPACE = "tritonscale"


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection. ``namespace`` None: not a pod (a host-network process such as
    kube-apiserver, or an address outside the cluster)."""

    ip: str
    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # its containers' named ports

    def namespace_labels(self) -> dict[str, str]:
        # The API server sets this label on every namespace.
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


API_SERVER = Endpoint("10.0.0.10")  # kube-apiserver on a control-plane node's host network
INTERNET = Endpoint("203.0.113.7")
PROMETHEUS = Endpoint("10.244.3.9", "monitoring", {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = Endpoint("10.244.0.3", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
DATABASE = Endpoint("10.244.5.5", "prod", {"app": "postgres"}, {"postgres": 5432})
KEDA_OPERATOR = Endpoint(
    "10.244.4.4", "keda", {"app": "keda-operator", "app.kubernetes.io/name": "keda-operator"}
)
DCGM = Endpoint(
    "10.244.6.6", "gpu-operator", {"app": "nvidia-dcgm-exporter"}, {"gpu-metrics": 9400}
)


def peer_matches(peer: Obj, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.namespace is None:
        return False  # pod and namespace selectors select pods only
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        in_namespace = other.namespace == policy_namespace
    else:
        in_namespace = selects(namespace_selector, other.namespace_labels())
    return in_namespace and selects(peer.get("podSelector", {}), other.labels)


def port_matches(rule_port: Obj, port: int, protocol: str, named: dict[str, int]) -> bool:
    if rule_port.get("protocol", "TCP") != protocol:
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):  # a named port of the destination pod
        return named.get(wanted) == port
    end = rule_port.get("endPort") or wanted
    return int(wanted) <= port <= int(end)


def admits(
    policy: Obj, direction: str, other: Endpoint, port: int, protocol: str, named: dict[str, int]
) -> bool:
    """Whether ``policy`` admits a connection with ``other`` on ``port`` (``named``: the named
    ports of the destination: the policy's pod for ingress, ``other`` for egress)."""
    peers_key = {"ingress": "from", "egress": "to"}[direction]
    namespace = policy["metadata"]["namespace"]
    for rule in policy["spec"].get(direction, []):
        peers = rule.get(peers_key) or []
        ports = rule.get("ports") or []
        peer_ok = not peers or any(peer_matches(p, other, namespace) for p in peers)
        port_ok = not ports or any(port_matches(p, port, protocol, named) for p in ports)
        if peer_ok and port_ok:
            return True
    return False


def adapter_policy(kustomization: str = BASE) -> Obj:
    return one_of(render(kustomization), "NetworkPolicy", "tritonscale")


def adapter_ports(kustomization: str = BASE) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"] for p in adapter_container(render(kustomization))["ports"]
    }


def receives(other: Endpoint, port: int, kustomization: str = BASE) -> bool:
    return admits(
        adapter_policy(kustomization), "ingress", other, port, "TCP", adapter_ports(kustomization)
    )


def sends(other: Endpoint, port: int, protocol: str = "TCP", kustomization: str = BASE) -> bool:
    return admits(adapter_policy(kustomization), "egress", other, port, protocol, other.ports)


def example_triton_pod() -> Endpoint:
    deployment = one_of(render(EXAMPLES), "Deployment", "triton-llm")
    template = deployment["spec"]["template"]
    ports = {
        port["name"]: port["containerPort"]
        for container in template["spec"]["containers"]
        for port in container["ports"]
    }
    return Endpoint(
        "10.244.1.20", deployment["metadata"]["namespace"], template["metadata"]["labels"], ports
    )


def selector_labels(text: str) -> dict[str, str]:
    """Labels satisfying an equality-only selector such as ``a=b,c==d``."""
    labels = {}
    for term in text.split(","):
        key, _, value = term.replace("==", "=").partition("=")
        assert value and "!" not in key, f"not an equality selector: {text!r}"
        labels[key.strip()] = value.strip()
    assert Selector.parse(text).matches(labels)
    return labels


# --- the evaluator ------------------------------------------------------------------------


def test_evaluator_follows_the_api_rules() -> None:
    policy = {
        "metadata": {"namespace": "a"},
        "spec": {
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"x": "1"}}}], "ports": [{"port": "m"}]},
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}}]},
            ]
        },
    }
    same_ns = Endpoint("192.168.0.1", "a", {"x": "1"}, {"m": 9})
    other_ns = Endpoint("192.168.0.2", "b", {"x": "1"}, {"m": 9})
    assert admits(policy, "egress", same_ns, 9, "TCP", same_ns.ports)
    assert not admits(policy, "egress", same_ns, 9, "UDP", same_ns.ports)
    assert not admits(policy, "egress", same_ns, 10, "TCP", same_ns.ports)
    assert not admits(policy, "egress", other_ns, 9, "TCP", other_ns.ports)  # no nsSelector
    assert admits(policy, "egress", Endpoint("10.1.2.3"), 1, "TCP", {})
    assert not admits(policy, "egress", Endpoint("10.9.2.3"), 1, "TCP", {})
    assert not admits(policy, "ingress", same_ns, 9, "TCP", {})  # no ingress rules: deny


# --- the adapter's policy ----------------------------------------------------------------


@pytest.mark.parametrize("kustomization", [BASE, CERT_MANAGER, EXAMPLE_ADAPTER, KEDA_SCALER])
def test_policy_governs_both_directions_of_the_adapter_pods(kustomization: str) -> None:
    policy = adapter_policy(kustomization)
    assert policy["metadata"]["namespace"] == ADAPTER_NAMESPACE
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    deployment = one_of(render(kustomization), "Deployment", "tritonscale")
    assert selects(
        policy["spec"]["podSelector"], deployment["spec"]["template"]["metadata"]["labels"]
    )


@pytest.mark.parametrize(
    "caller", [API_SERVER, PROMETHEUS, INTERNET], ids=["apiserver", "prometheus", "any"]
)
def test_the_serving_port_is_open_to_the_api_server_and_prometheus(caller: Endpoint) -> None:
    # The API server is not a pod, so the port cannot be limited to selected pods; every
    # request is authenticated and authorised by the adapter itself.
    assert receives(caller, adapter_ports()["https"])


@pytest.mark.parametrize("port", [8080, 8002, 22])
def test_no_other_port_is_reachable(port: int) -> None:
    assert not receives(PROMETHEUS, port)
    assert not receives(API_SERVER, port)


def test_scrapes_the_example_triton_pods_on_their_metrics_port_only() -> None:
    triton = example_triton_pod()
    assert sends(triton, triton.ports["metrics"])
    assert not sends(triton, triton.ports["http"])
    assert not sends(triton, triton.ports["grpc"])


def test_every_discovered_pod_is_reachable_on_the_discovered_port(tmp_path: Path) -> None:
    # Ties the policy to config.yaml: the pods discovery finds (any namespace the entry
    # covers) on the port it scrapes. Changing one without the other fails here.
    _, text = rendered_config(render(BASE))
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    entries = load_config(tmp_path / "config.yaml").discovery.kubernetes
    assert entries
    for entry in entries:
        port = entry.port if isinstance(entry.port, int) else 8002
        named = {entry.port: port} if isinstance(entry.port, str) else {}
        for namespace in entry.namespaces or ("prod", "team-a", "default"):
            pod = Endpoint("10.244.7.7", namespace, selector_labels(entry.label_selector), named)
            assert sends(pod, port), (namespace, entry.label_selector, entry.port)


def test_does_not_scrape_pods_that_discovery_does_not_select() -> None:
    assert not sends(DATABASE, 5432)
    unlabelled = Endpoint("10.244.8.8", "prod", {"app": "other"}, {"metrics": 8002})
    assert not sends(unlabelled, 8002)


def test_reaches_dcgm_exporter() -> None:
    assert sends(DCGM, 9400)


@pytest.mark.parametrize("port", [443, 6443])
def test_reaches_the_kubernetes_api_which_is_no_pod(port: int) -> None:
    assert sends(API_SERVER, port)


def test_reaches_nothing_else_outside_the_pod_network() -> None:
    for port in (80, 2379, 5432, 8002):
        assert not sends(API_SERVER, port), port
        assert not sends(INTERNET, port), port


@pytest.mark.parametrize("protocol", ["UDP", "TCP"])
def test_resolves_names_through_cluster_dns(protocol: str) -> None:
    assert sends(KUBE_DNS, 53, protocol)
    assert not sends(DATABASE, 53, protocol)


# --- overlays/keda-scaler: KEDA's gRPC connections ---------------------------------------


def keda_scaler_port() -> int:
    """The container port the overlay's ``--keda-scaler-listen`` binds."""
    listen = flag_value(adapter_container(render(KEDA_SCALER))["args"], "--keda-scaler-listen")
    assert listen is not None
    return int(listen.rpartition(":")[2])


def test_keda_operator_reaches_the_scalers_grpc_port() -> None:
    port = keda_scaler_port()
    assert adapter_ports(KEDA_SCALER)["grpc"] == port == 9443
    assert receives(KEDA_OPERATOR, port, KEDA_SCALER)


def test_the_keda_rule_is_in_the_namespace_of_kedas_client_certificate() -> None:
    # KEDA reads its client certificate from a Secret in its own namespace: the rule must
    # admit that namespace's operator, so the two edits go together.
    certificate = one_of(render(KEDA_SCALER), "Certificate", "tritonscale-keda-client")
    namespace = certificate["metadata"]["namespace"]
    moved = Endpoint(KEDA_OPERATOR.ip, namespace, KEDA_OPERATOR.labels)
    assert receives(moved, keda_scaler_port(), KEDA_SCALER)


@pytest.mark.parametrize(
    "caller",
    [
        PROMETHEUS,
        INTERNET,
        API_SERVER,
        Endpoint("10.244.4.5", "prod", KEDA_OPERATOR.labels),  # right labels, wrong namespace
        Endpoint("10.244.4.6", "keda", {"app": "keda-operator-metrics-apiserver"}),
    ],
    ids=["prometheus", "any", "apiserver", "impostor", "keda-metrics-apiserver"],
)
def test_nothing_else_reaches_the_grpc_port(caller: Endpoint) -> None:
    assert not receives(caller, keda_scaler_port(), KEDA_SCALER)


def test_the_overlay_keeps_the_base_rules() -> None:
    https = adapter_ports(KEDA_SCALER)["https"]
    for caller in (API_SERVER, PROMETHEUS):
        assert receives(caller, https, KEDA_SCALER)
    assert not receives(PROMETHEUS, 8080, KEDA_SCALER)
    assert sends(API_SERVER, 443, kustomization=KEDA_SCALER)


def test_without_the_overlay_nothing_reaches_9443() -> None:
    assert not receives(KEDA_OPERATOR, 9443)


# --- the example policy for a default-deny Triton namespace -------------------------------


def triton_policy() -> Obj:
    (policy,) = objects_of(render(EXAMPLES), "NetworkPolicy")
    return policy


def adapter_pod() -> Endpoint:
    labels = one_of(render(BASE), "Deployment", "tritonscale")["spec"]["template"]["metadata"][
        "labels"
    ]
    return Endpoint("10.244.2.2", ADAPTER_NAMESPACE, labels)


def triton_receives(caller: Endpoint, port_name: str) -> bool:
    triton = example_triton_pod()
    policy = triton_policy()
    assert policy["metadata"]["namespace"] == triton.namespace
    assert selects(policy["spec"]["podSelector"], triton.labels)
    return admits(policy, "ingress", caller, triton.ports[port_name], "TCP", triton.ports)


def test_example_triton_policy_admits_the_adapter_on_metrics_only_from_it_and_prometheus() -> None:
    assert triton_receives(adapter_pod(), "metrics")
    assert triton_receives(PROMETHEUS, "metrics")
    assert not triton_receives(DATABASE, "metrics")
    impostor = Endpoint("10.244.2.3", "prod", adapter_pod().labels)  # right labels, wrong ns
    assert not triton_receives(impostor, "metrics")


@pytest.mark.parametrize("port_name", ["http", "grpc"])
def test_example_triton_policy_keeps_inference_open(port_name: str) -> None:
    assert triton_receives(DATABASE, port_name)
