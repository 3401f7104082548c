"""manifests/monitoring: valid Prometheus Operator objects (the Operator's published JSON
schemas, strict), and pieces that fit together when applied: the ServiceMonitor finds the
adapter's Service and keeps its labels, its token is allowed to read /metrics, the PodMonitor
finds the Triton pods the adapter discovers, and the base stays free of CRD objects."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.manifests.test_validate import (
    BASE,
    EXAMPLES,
    MONITORING,
    REPO_ROOT,
    describe,
    one_of,
    render,
    validation_problems,
)
from tests.service.test_selfmetrics import exposed_samples

SCHEMAS = REPO_ROOT / "tests" / "data" / "prometheus-operator-crds"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
}
# Target labels the Prometheus Operator sets on every ServiceMonitor target.
OPERATOR_TARGET_LABELS = frozenset({"job", "instance", "pod", "service", "endpoint", "container"})

Obj = dict[str, Any]


@functools.cache
def _validator(file_name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / file_name).read_text(encoding="utf-8"))
    # no check_schema(): the Operator's patterns are Go regexes (e.g. a mid-pattern "(?i)")
    # that Python's re would reject as formats, though no value the manifests set uses them
    return jsonschema.validators.validator_for(schema)(schema)


def crd_problems(obj: Obj) -> list[str]:
    """Problems of a monitoring.coreos.com object against the Operator's schema."""
    file_name = CRD_SCHEMAS[(obj["apiVersion"], obj["kind"])]
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in _validator(file_name).iter_errors(obj)
    ]


def monitoring() -> list[Obj]:
    return render(MONITORING)


def problems_of(obj: Obj) -> list[str]:
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        return crd_problems(obj)
    return validation_problems(obj)


def test_every_object_is_valid() -> None:
    objects = monitoring()
    assert {obj["kind"] for obj in objects} == {
        "ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding",
        "ServiceMonitor", "PodMonitor", "PrometheusRule",
    }  # fmt: skip
    assert {describe(obj): problems_of(obj) for obj in objects} == {
        describe(obj): [] for obj in objects
    }


@pytest.mark.parametrize(
    ("kind", "break_it", "needle"),
    [
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(honorLabel=True),
         "honorLabel"),
        ("ServiceMonitor", lambda o: o["spec"].pop("selector"), "selector"),
        ("PodMonitor", lambda o: o["spec"]["podMetricsEndpoints"][0].update(interval="15 s"),
         "interval"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0].update(interval="often"),
         "interval"),
    ],
)  # fmt: skip
def test_the_schemas_reject_broken_objects(kind: str, break_it: Any, needle: str) -> None:
    obj = one_of(monitoring(), kind)
    break_it(obj)
    assert any(needle in problem for problem in crd_problems(obj))


def test_the_base_has_no_prometheus_operator_objects() -> None:
    # clusters without the Operator's CRDs must be able to apply the base
    assert not [
        describe(obj) for obj in render(BASE) if obj["apiVersion"].startswith("monitoring.")
    ]


# --- the ServiceMonitor -------------------------------------------------------------------


def _endpoint() -> Obj:
    endpoint: Obj = one_of(monitoring(), "ServiceMonitor")["spec"]["endpoints"][0]
    return endpoint


def test_the_service_monitor_selects_the_adapter_service_and_its_https_port() -> None:
    monitor = one_of(monitoring(), "ServiceMonitor")
    service = one_of(render(BASE), "Service", "tritonscale")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    endpoint = _endpoint()
    assert (endpoint["port"], endpoint["scheme"], endpoint["path"]) == (
        port["name"],
        "https",
        "/metrics",
    )


def test_the_service_monitor_keeps_the_adapters_labels() -> None:
    assert _endpoint()["honorLabels"] is True


def test_honored_labels_never_replace_the_operators_target_labels() -> None:
    """With honorLabels a series' own label wins: the adapter must not set job, pod... ."""
    names = {name for _, labels in exposed_samples() for name in labels}
    assert {"namespace", "deployment", "model", "handler", "target"} <= names
    assert not names & OPERATOR_TARGET_LABELS


def test_the_service_monitor_uses_a_token_secret_not_the_deprecated_fields() -> None:
    endpoint = _endpoint()
    assert "bearerTokenFile" not in endpoint and "bearerTokenSecret" not in endpoint
    credentials = endpoint["authorization"]["credentials"]
    secret = one_of(monitoring(), "Secret", credentials["name"])
    monitor = one_of(monitoring(), "ServiceMonitor")
    # the Operator reads the Secret from the ServiceMonitor's namespace
    assert secret["metadata"]["namespace"] == monitor["metadata"]["namespace"]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert credentials["key"] == "token"  # what the token controller writes
    assert endpoint["authorization"].get("type", "Bearer") == "Bearer"


def test_the_token_is_allowed_to_get_metrics() -> None:
    """The Secret's ServiceAccount is bound to a ClusterRole with get on /metrics, which is
    exactly what the adapter's SubjectAccessReview asks for a scrape."""
    objects = monitoring()
    secret = one_of(objects, "Secret")
    account = secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
    namespace = secret["metadata"]["namespace"]
    one_of(objects, "ServiceAccount", account)
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    roles = {
        binding["roleRef"]["name"]
        for binding in objects
        if binding["kind"] == "ClusterRoleBinding" and subject in binding["subjects"]
    }
    rules = [
        rule
        for role in objects
        if role["kind"] == "ClusterRole" and role["metadata"]["name"] in roles
        for rule in role["rules"]
    ]
    assert rules == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]  # nothing more


def test_delegated_auth_does_not_let_metrics_through_unauthenticated() -> None:
    # otherwise the RBAC above would be pointless: /metrics must be authorised
    config = yaml.safe_load((REPO_ROOT / "manifests/base/config.yaml").read_text())
    assert config["auth"]["mode"] == "delegated"
    assert "/metrics" not in config["auth"].get("always_allow_paths", [])


# --- the PodMonitor -----------------------------------------------------------------------


def test_the_pod_monitor_finds_the_pods_the_adapter_discovers() -> None:
    spec = one_of(monitoring(), "PodMonitor")["spec"]
    config = yaml.safe_load((REPO_ROOT / "manifests/base/config.yaml").read_text())
    discoveries = config["discovery"]["kubernetes"]
    selected = spec["namespaceSelector"]
    # discovery without namespaces watches every namespace: the PodMonitor must select any
    monitored_namespaces = [] if selected.get("any") else selected["matchNames"]
    assert [(d.get("namespaces", []), d["label_selector"], d["port"]) for d in discoveries] == [
        (
            monitored_namespaces,
            ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items()),
            spec["podMetricsEndpoints"][0]["port"],
        )
    ]
    # and the example Triton Deployment's pods match it
    deployment = one_of(render(EXAMPLES), "Deployment", "triton-llm")
    template = deployment["spec"]["template"]
    assert selected.get("any") or deployment["metadata"]["namespace"] in selected["matchNames"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
    assert spec["podMetricsEndpoints"][0]["port"] in ports


@pytest.mark.parametrize(
    ("kind", "owner", "deployment"),
    [
        ("ReplicaSet", "triton-llm-5d4f8b7c9d", "triton-llm"),
        ("ReplicaSet", "triton-llm-v2-7f9c6d", "triton-llm-v2"),
        ("StatefulSet", "triton-llm", None),  # not a Deployment's pod: no deployment label
    ],
)
def test_the_pod_monitor_labels_the_deployment_as_the_adapter_does(
    kind: str, owner: str, deployment: str | None
) -> None:
    (rule,) = one_of(monitoring(), "PodMonitor")["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert (rule["targetLabel"], rule["action"]) == ("deployment", "replace")
    joined = rule["separator"].join(
        {"__meta_kubernetes_pod_controller_kind": kind,
         "__meta_kubernetes_pod_controller_name": owner}[name]
        for name in rule["sourceLabels"]
    )  # fmt: skip
    match = re.fullmatch(rule["regex"], joined)  # Prometheus anchors relabel regexes
    got = match.expand(rule["replacement"].replace("$", "\\")) if match else None
    assert got == deployment


def test_the_pod_monitor_does_not_honor_triton_labels() -> None:
    endpoint = one_of(monitoring(), "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert not endpoint.get("honorLabels", False)


# --- the PrometheusRule -------------------------------------------------------------------


def alert_rules() -> list[Obj]:
    spec = one_of(monitoring(), "PrometheusRule")["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_severity_summary_and_description() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule.get("for"), f"{rule['alert']} fires on a single evaluation"


def test_the_readme_explains_every_alert() -> None:
    text = (REPO_ROOT / "manifests/grafana/README.md").read_text(encoding="utf-8")
    explained = set(re.findall(r"^#### `(\w+)`", text, flags=re.MULTILINE))
    assert explained == {rule["alert"] for rule in alert_rules()}


def test_the_alerts_cover_what_issue_12_asks_for() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert "absent(up{" in exprs["TritonscaleDown"]
    assert "tritonscale_signal_max_age_seconds" in exprs["TritonscaleSignalsStale"]
    assert "tritonscale_scrape_errors_total" in exprs["TritonscaleTargetScrapesFailing"]
    assert "tritonscale_forecast_quantile" in exprs["TritonscaleForecastBelowCalibration"]
    assert 'code=~"5.."' in exprs["TritonscaleAPIErrors"]
    assert "tritonscale_serving_certificate_expiry" in exprs["TritonscaleCertificateExpiry"]


def test_the_rules_file_promtool_reads_is_the_rules_spec(tmp_path: Path) -> None:
    # what test_monitoring_alerts.py hands to promtool: the PrometheusRule's spec, verbatim
    from tests.manifests.test_monitoring_alerts import write_rule_file

    path = write_rule_file(tmp_path)
    assert yaml.safe_load(path.read_text()) == one_of(monitoring(), "PrometheusRule")["spec"]
