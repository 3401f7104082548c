"""KEDA's two ways in: the gRPC external scaler (overlays/keda-scaler plus
examples/keda/external-scaler.yaml: mutual TLS from one CA, no unsafeSsl) and the metrics-api
scaler (examples/keda/scaledobject.yaml: a bound service account token, with everything it
needs). The examples' trigger metadata is parsed by the scaler's own parser."""

from __future__ import annotations

from pathlib import Path

from adapter.config import load_config
from adapter.keda.proto.externalscaler_pb2 import ScaledObjectRef
from adapter.keda.scaler import Trigger
from adapter.metrics_catalog import SERVED_METRIC_NAMES
from tests.manifests.test_adapter import (
    adapter_container,
    flag_value,
    mount_of,
    port_named,
    rendered_config,
)
from tests.manifests.test_examples import example_config, series_group_labels
from tests.manifests.test_validate import (
    KEDA_SCALER,
    MANIFESTS,
    Obj,
    load_yaml_file,
    objects_of,
    one_of,
    render,
    validation_problems,
)

EXTERNAL_SCALER = MANIFESTS / "examples" / "keda" / "external-scaler.yaml"
METRICS_API = MANIFESTS / "examples" / "keda" / "scaledobject.yaml"


def trigger_of(path: Path) -> tuple[Obj, Obj]:
    scaled = one_of(load_yaml_file(path), "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    return scaled, trigger


# --- the overlay ----------------------------------------------------------------------------


def test_overlay_serves_grpc_on_a_named_port_through_the_service() -> None:
    objects = render(KEDA_SCALER)
    container = adapter_container(objects)
    listen = flag_value(container["args"], "--keda-scaler-listen")
    assert listen is not None
    assert port_named(container, "grpc")["containerPort"] == int(listen.rsplit(":", 1)[1])
    service = one_of(objects, "Service", "tritonscale")
    (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_port["targetPort"] == "grpc" and grpc_port["appProtocol"] == "grpc"


def test_overlay_config_turns_the_scaler_on_with_client_certificates(tmp_path: Path) -> None:
    objects = render(KEDA_SCALER)
    _, text = rendered_config(objects)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    listen = flag_value(adapter_container(objects)["args"], "--keda-scaler-listen")
    config = load_config(path, {"keda_scaler": {"listen": listen}})  # as the CLI merges it
    scaler = config.keda_scaler
    assert config.auth.mode == "delegated" and scaler.client_ca_file is not None
    # the client CA is the ca.crt of the mounted serving-certificate secret
    directory, _, key = scaler.client_ca_file.rpartition("/")
    _, volume = mount_of(objects, directory)
    assert key == "ca.crt"
    serving = one_of(objects, "Certificate", "tritonscale-serving-cert")
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    client = one_of(objects, "Certificate", "tritonscale-keda-client")
    assert client["spec"]["commonName"] in scaler.client_allowed_names


def test_one_cluster_ca_issues_the_serving_and_the_client_certificate() -> None:
    objects = render(KEDA_SCALER)
    assert not objects_of(objects, "Issuer"), "the namespaced CA of cert-manager/ is replaced"
    issuers = {obj["metadata"]["name"]: obj for obj in objects_of(objects, "ClusterIssuer")}
    serving = one_of(objects, "Certificate", "tritonscale-serving-cert")["spec"]
    client = one_of(objects, "Certificate", "tritonscale-keda-client")["spec"]
    assert serving["issuerRef"] == client["issuerRef"]
    ca_issuer = issuers[serving["issuerRef"]["name"]]
    root = one_of(objects, "Certificate", "tritonscale-scaler-root-ca")
    assert ca_issuer["spec"]["ca"]["secretName"] == root["spec"]["secretName"]
    assert root["metadata"]["namespace"] == "cert-manager" and root["spec"]["isCA"] is True
    assert "client auth" in client["usages"] and "server auth" not in client["usages"]
    assert "server auth" in serving["usages"]


def test_keda_client_secret_is_where_the_cluster_trigger_authentication_reads() -> None:
    objects = render(KEDA_SCALER)
    client = one_of(objects, "Certificate", "tritonscale-keda-client")
    auth = one_of(load_yaml_file(EXTERNAL_SCALER), "ClusterTriggerAuthentication")
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert {p: (r["name"], r["key"]) for p, r in refs.items()} == {
        "caCert": (client["spec"]["secretName"], "ca.crt"),
        "tlsClientCert": (client["spec"]["secretName"], "tls.crt"),
        "tlsClientKey": (client["spec"]["secretName"], "tls.key"),
    }
    assert client["metadata"]["namespace"] == "keda"  # KEDA's namespace: ClusterTA reads there


# --- the external scaler example ----------------------------------------------------------


def test_external_scaler_trigger_dials_the_grpc_port_verifying_the_certificate() -> None:
    scaled, trigger = trigger_of(EXTERNAL_SCALER)
    assert trigger["type"] == "external-push"
    metadata = trigger["metadata"]
    assert "unsafeSsl" not in metadata and "enableTLS" not in metadata
    host, port = metadata["scalerAddress"].rsplit(":", 1)
    objects = render(KEDA_SCALER)
    service = one_of(objects, "Service", "tritonscale")
    assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    serving = one_of(objects, "Certificate", "tritonscale-serving-cert")
    assert host in serving["spec"]["dnsNames"]
    assert trigger["authenticationRef"] == {
        "name": "tritonscale-scaler",
        "kind": "ClusterTriggerAuthentication",
    }
    assert scaled["spec"]["minReplicaCount"] == 0  # activation is what the example shows


def test_external_scaler_metadata_is_what_the_scaler_parses(tmp_path: Path) -> None:
    scaled, trigger = trigger_of(EXTERNAL_SCALER)
    ref = ScaledObjectRef(
        name=scaled["metadata"]["name"],
        namespace=scaled["metadata"]["namespace"],
        scalerMetadata=trigger["metadata"],
    )
    parsed = Trigger.from_ref(ref)
    assert parsed.metric in SERVED_METRIC_NAMES
    assert parsed.activation_metric == "triton_arrival_rate"
    assert parsed.target_value == 1.0 and parsed.activation_threshold == 0.5
    groups = series_group_labels(example_config(tmp_path))
    assert any(parsed.selector.matches({**group, "model": "resnet"}) for group in groups)


# --- the metrics-api example: a bound service account token --------------------------------


def test_metrics_api_uses_a_bound_token_not_a_secret() -> None:
    documents = load_yaml_file(METRICS_API)
    auth = one_of(documents, "TriggerAuthentication", "tritonscale-reader")
    assert "secretTargetRef" not in auth["spec"]
    (token,) = auth["spec"]["boundServiceAccountToken"]
    assert token["parameter"] in {"token", "bearerToken"}  # metrics-api's bearer parameter
    account = one_of(documents, "ServiceAccount", token["serviceAccountName"])
    assert account["metadata"]["namespace"] == auth["metadata"]["namespace"]
    assert account["automountServiceAccountToken"] is False
    _, trigger = trigger_of(METRICS_API)
    assert trigger["metadata"]["authMode"] == "bearer"


def test_the_token_may_read_and_keda_may_mint_it() -> None:
    documents = load_yaml_file(METRICS_API)
    auth = one_of(documents, "TriggerAuthentication", "tritonscale-reader")
    (token,) = auth["spec"]["boundServiceAccountToken"]
    namespace = auth["metadata"]["namespace"]
    account = {
        "kind": "ServiceAccount",
        "name": token["serviceAccountName"],
        "namespace": namespace,
    }
    reader = one_of(documents, "ClusterRole", "tritonscale-keda-reader")
    binding = one_of(documents, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == reader["metadata"]["name"]
    assert binding["subjects"] == [account]
    minting = one_of(documents, "Role")
    assert minting["metadata"]["namespace"] == namespace
    assert minting["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts/token"],
            "verbs": ["create"],
            "resourceNames": [token["serviceAccountName"]],
        }
    ]
    role_binding = one_of(documents, "RoleBinding")
    assert role_binding["roleRef"]["name"] == minting["metadata"]["name"]
    assert role_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "keda-operator", "namespace": "keda"}
    ]


def test_the_kubernetes_objects_of_the_keda_examples_are_valid() -> None:
    for path in (EXTERNAL_SCALER, METRICS_API):
        for obj in load_yaml_file(path):
            if obj["apiVersion"].startswith("keda.sh/"):
                continue  # KEDA's CRDs: checked field by field above
            assert validation_problems(obj) == [], f"{path.name}: {obj['kind']}"
