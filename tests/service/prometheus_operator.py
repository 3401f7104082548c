"""The scrape configuration the Prometheus Operator generates for a ServiceMonitor or PodMonitor
endpoint, for a Prometheus that has no Kubernetes to discover targets in.

Kubernetes service discovery is replaced by static targets carrying the ``__meta_kubernetes_*``
labels it would set for the shipped objects (pod labels, container port names, Service name);
the relabelings are the Operator's (prometheus-operator ``pkg/prometheus/promcfg.go``:
selector and port ``keep`` rules, then ``namespace``/``service``/``pod``/``container``, ``job``,
``endpoint``, then the endpoint's own ``relabelings``), and ``honorLabels``, ``scheme``,
``path``, ``tlsConfig`` and ``authorization`` map to their Prometheus fields. A change to the
shipped monitor (a dropped ``honorLabels``, a selector that no longer matches, a relabeling)
changes what the live test's Prometheus stores, as it would in a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


def _label_name(name: str) -> str:
    """Kubernetes label key -> the Prometheus meta label suffix (the Operator's sanitiser)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


@dataclass(frozen=True)
class DiscoveredPod:
    """One pod as Kubernetes discovery would see it (what the meta labels are made from)."""

    address: str  # host:port of the scraped port
    namespace: str
    name: str
    labels: Mapping[str, str]
    container: str
    port_name: str
    controller_kind: str = "ReplicaSet"
    controller_name: str = ""

    def meta(self) -> dict[str, str]:
        out = {
            "__meta_kubernetes_namespace": self.namespace,
            "__meta_kubernetes_pod_name": self.name,
            "__meta_kubernetes_pod_container_name": self.container,
            "__meta_kubernetes_pod_container_port_name": self.port_name,
            "__meta_kubernetes_pod_controller_kind": self.controller_kind,
            "__meta_kubernetes_pod_controller_name": self.controller_name,
        }
        for key, value in self.labels.items():
            out[f"__meta_kubernetes_pod_label_{_label_name(key)}"] = value
            out[f"__meta_kubernetes_pod_labelpresent_{_label_name(key)}"] = "true"
        return out


@dataclass(frozen=True)
class DiscoveredEndpoint:
    """One endpoint of a Service (role endpoints): the Service, its port name and the pod."""

    pod: DiscoveredPod
    service_name: str
    service_labels: Mapping[str, str]
    endpoint_port_name: str

    def meta(self) -> dict[str, str]:
        out = self.pod.meta()
        out["__meta_kubernetes_service_name"] = self.service_name
        out["__meta_kubernetes_endpoint_port_name"] = self.endpoint_port_name
        for key, value in self.service_labels.items():
            out[f"__meta_kubernetes_service_label_{_label_name(key)}"] = value
            out[f"__meta_kubernetes_service_labelpresent_{_label_name(key)}"] = "true"
        return out


def _selector_rules(selector: Obj, prefix: str) -> list[Obj]:
    rules: list[Obj] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        name = _label_name(key)
        rules.append(
            {
                "action": "keep",
                "source_labels": [f"{prefix}_label_{name}", f"{prefix}_labelpresent_{name}"],
                "regex": f"({value});true",
            }
        )
    if selector.get("matchExpressions"):
        raise NotImplementedError("matchExpressions: not used by the shipped monitors")
    return rules


def _copy(source: str, target: str) -> Obj:
    return {"source_labels": [source], "target_label": target}


def _relabeling(rule: Obj) -> Obj:
    """A monitoring.coreos.com RelabelConfig -> Prometheus relabel_config (snake_case)."""
    names = {
        "sourceLabels": "source_labels",
        "targetLabel": "target_label",
        "separator": "separator",
        "regex": "regex",
        "replacement": "replacement",
        "action": "action",
        "modulus": "modulus",
    }
    out = {names[key]: value for key, value in rule.items()}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def scrape_config(
    monitor: Obj,
    targets: Sequence[DiscoveredPod | DiscoveredEndpoint],
    *,
    secrets: Mapping[tuple[str, str, str], str],
    interval: str | None = None,
) -> Obj:
    """The Operator's scrape config for the first endpoint of ``monitor`` over ``targets``.

    ``secrets`` maps (namespace, secret name, key) to the value the Operator would read.
    ``interval`` overrides the endpoint's (the live test scrapes every second).
    """
    kind = monitor["kind"]
    namespace, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
    spec = monitor["spec"]
    if spec.get("jobLabel") or spec.get("podTargetLabels") or spec.get("targetLabels"):
        raise NotImplementedError("jobLabel/targetLabels: not used by the shipped monitors")
    endpoints = spec["endpoints"] if kind == "ServiceMonitor" else spec["podMetricsEndpoints"]
    endpoint = endpoints[0]
    port = endpoint["port"]
    namespace_selector = spec.get("namespaceSelector", {})
    # the Operator's rules: any: true is every namespace; no matchNames is the monitor's own
    selected = (
        None
        if namespace_selector.get("any")
        else (namespace_selector.get("matchNames") or [namespace])
    )

    relabel: list[Obj] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    if kind == "ServiceMonitor":
        relabel += _selector_rules(spec["selector"], "__meta_kubernetes_service")
        relabel.append(
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
             "regex": port}
        )  # fmt: skip
        relabel += [
            _copy("__meta_kubernetes_namespace", "namespace"),
            _copy("__meta_kubernetes_service_name", "service"),
            _copy("__meta_kubernetes_pod_name", "pod"),
            _copy("__meta_kubernetes_pod_container_name", "container"),
            {**_copy("__meta_kubernetes_service_name", "job"), "replacement": "${1}"},
        ]
        job_name = f"serviceMonitor/{namespace}/{name}/0"
    elif kind == "PodMonitor":
        relabel += _selector_rules(spec["selector"], "__meta_kubernetes_pod")
        relabel.append(
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": port}
        )  # fmt: skip
        relabel += [
            _copy("__meta_kubernetes_namespace", "namespace"),
            _copy("__meta_kubernetes_pod_container_name", "container"),
            _copy("__meta_kubernetes_pod_name", "pod"),
            {"target_label": "job", "replacement": f"{namespace}/{name}"},
        ]
        job_name = f"podMonitor/{namespace}/{name}/0"
    else:
        raise ValueError(f"not a monitor: {kind}")
    relabel.append({"target_label": "endpoint", "replacement": port})
    relabel += [_relabeling(rule) for rule in endpoint.get("relabelings", [])]

    static: list[Obj] = []
    for target in targets:
        pod = target.pod if isinstance(target, DiscoveredEndpoint) else target
        if selected is not None and pod.namespace not in selected:
            continue  # outside the monitor's namespaceSelector: never discovered
        static.append({"targets": [pod.address], "labels": target.meta()})

    config: Obj = {
        "job_name": job_name,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "scheme": endpoint.get("scheme", "http"),
        "metrics_path": endpoint.get("path", "/metrics"),
        "scrape_interval": interval or endpoint.get("interval", "30s"),
        "static_configs": static,
        "relabel_configs": relabel,
    }
    if interval is not None:
        config["scrape_timeout"] = interval
    elif "scrapeTimeout" in endpoint:
        config["scrape_timeout"] = endpoint["scrapeTimeout"]
    tls = endpoint.get("tlsConfig")
    if tls:
        config["tls_config"] = {
            key: value
            for key, value in (
                ("insecure_skip_verify", tls.get("insecureSkipVerify")),
                ("server_name", tls.get("serverName")),
            )
            if value is not None
        }
    authorization = endpoint.get("authorization")
    if authorization:
        ref = authorization["credentials"]
        config["authorization"] = {
            "type": authorization.get("type", "Bearer"),
            "credentials": secrets[(namespace, ref["name"], ref["key"])],
        }
    for deprecated in ("bearerTokenFile", "bearerTokenSecret"):
        if deprecated in endpoint:
            raise NotImplementedError(f"{deprecated} is deprecated: use authorization")
    return config
