"""The adapter's manifests hang together the way the aggregator, the kubelet and the
HPA controller need (external-metrics-api-and-hpa.md §1.9, §2, §5): APIService -> Service
-> named container port; probes; RBAC; the ConfigMap is a config the adapter accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapter.config import Config, load_config
from tests.manifests.test_validate import (
    BASE,
    CERT_MANAGER,
    Obj,
    describe,
    objects_of,
    one_of,
    render,
)

ADAPTER_NAMESPACE = "tritonscale"
CONFIG_KEY = "config.yaml"


def pod_spec(objects: list[Obj]) -> Obj:
    spec: Obj = one_of(objects, "Deployment", "tritonscale")["spec"]["template"]["spec"]
    return spec


def adapter_container(objects: list[Obj]) -> Obj:
    containers = pod_spec(objects)["containers"]
    assert len(containers) == 1
    container: Obj = containers[0]
    return container


def port_named(container: Obj, name: str) -> Obj:
    found = [port for port in container.get("ports", []) if port.get("name") == name]
    assert len(found) == 1, f"container {container['name']} has no port named {name!r}"
    port: Obj = found[0]
    return port


def mount_of(objects: list[Obj], path: str) -> tuple[Obj, Obj]:
    """(volumeMount, volume) whose mountPath is ``path``."""
    mounts = [m for m in adapter_container(objects)["volumeMounts"] if m["mountPath"] == path]
    assert len(mounts) == 1, f"nothing is mounted at {path}"
    volumes = [v for v in pod_spec(objects)["volumes"] if v["name"] == mounts[0]["name"]]
    assert len(volumes) == 1, f"volume {mounts[0]['name']} is not defined"
    return mounts[0], volumes[0]


def flag_value(args: list[str], flag: str) -> str | None:
    """Value of ``--flag VALUE`` or ``--flag=VALUE`` in a container's args."""
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def rendered_config(objects: list[Obj]) -> tuple[str, str]:
    """(path the adapter is started with, text of that file from the ConfigMap)."""
    args = adapter_container(objects)["args"]
    config_path = flag_value(args, "--config")
    assert config_path, f"the adapter is not started with --config: {args}"
    directory, _, filename = config_path.rpartition("/")
    _, volume = mount_of(objects, directory)
    config_map = one_of(objects, "ConfigMap", volume["configMap"]["name"])
    assert config_map["metadata"]["namespace"] == ADAPTER_NAMESPACE
    return config_path, config_map["data"][filename]


# --- APIService -> Service -> Pod --------------------------------------------------------


@pytest.mark.parametrize("kustomization", [BASE, CERT_MANAGER])
def test_apiservice_name_is_version_dot_group(kustomization: str) -> None:
    api_service = one_of(render(kustomization), "APIService")
    spec = api_service["spec"]
    assert (spec["group"], spec["version"]) == ("external.metrics.k8s.io", "v1beta1")
    assert api_service["metadata"]["name"] == f"{spec['version']}.{spec['group']}"
    assert 0 < spec["groupPriorityMinimum"] <= 20000
    assert 0 < spec["versionPriority"] <= 1000


@pytest.mark.parametrize("kustomization", [BASE, CERT_MANAGER])
def test_apiservice_reaches_the_adapter_port_through_the_service(kustomization: str) -> None:
    objects = render(kustomization)
    reference = one_of(objects, "APIService")["spec"]["service"]
    service = one_of(objects, "Service", reference["name"])
    assert service["metadata"]["namespace"] == reference["namespace"]
    service_port = [p for p in service["spec"]["ports"] if p["port"] == reference.get("port", 443)]
    assert len(service_port) == 1, "the APIService port is not a port of the Service"
    # targetPort by name, and that name is the adapter container's HTTPS port.
    target = service_port[0]["targetPort"]
    container = adapter_container(objects)
    assert isinstance(target, str), "use the container port's name as targetPort"
    port_named(container, target)
    template_labels = one_of(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()


def test_container_listens_where_the_config_says() -> None:
    objects = render(BASE)
    _, text = rendered_config(objects)
    listen = yaml.safe_load(text)["listen"]  # HOST:PORT
    port = int(listen.rpartition(":")[2])
    assert port_named(adapter_container(objects), "https")["containerPort"] == port


@pytest.mark.parametrize(
    ("probe", "path"), [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")]
)
def test_probes_hit_health_endpoints_over_https(probe: str, path: str) -> None:
    container = adapter_container(render(BASE))
    http_get = container[probe]["httpGet"]
    assert (http_get["path"], http_get["scheme"]) == (path, "HTTPS")
    port_named(container, http_get["port"])


# --- TLS: self-signed in base, cert-manager in the overlay ------------------------------


def test_base_skips_tls_verification_and_has_no_ca_bundle() -> None:
    spec = one_of(render(BASE), "APIService")["spec"]
    assert spec["insecureSkipTLSVerify"] is True
    assert "caBundle" not in spec


def test_cert_manager_overlay_injects_the_ca_of_the_served_certificate() -> None:
    objects = render(CERT_MANAGER)
    api_service = one_of(objects, "APIService")
    # The API rejects insecureSkipTLSVerify together with a caBundle.
    assert "insecureSkipTLSVerify" not in api_service["spec"]
    injected = api_service["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    namespace, _, name = injected.partition("/")
    certificate = one_of(objects, "Certificate", name)
    assert certificate["metadata"]["namespace"] == namespace
    service = api_service["spec"]["service"]
    # kube-aggregator dials ServerName <service>.<namespace>.svc.
    assert f"{service['name']}.{service['namespace']}.svc" in certificate["spec"]["dnsNames"]
    issuer_name = certificate["spec"]["issuerRef"]["name"]
    issuer = one_of(objects, certificate["spec"]["issuerRef"]["kind"], issuer_name)
    # A CA issuer: the secret's ca.crt (what cainjector copies) is then a real CA.
    ca_certificate = [
        cert
        for cert in objects_of(objects, "Certificate")
        if cert["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]
    ]
    assert len(ca_certificate) == 1 and ca_certificate[0]["spec"]["isCA"] is True


def test_cert_manager_overlay_serves_the_certificate_secret() -> None:
    objects = render(CERT_MANAGER)
    certificate = one_of(objects, "Certificate", "tritonscale-serving-cert")
    args = adapter_container(objects)["args"]
    paths = {flag: flag_value(args, flag) for flag in ("--tls-cert-file", "--tls-private-key-file")}
    assert None not in paths.values(), args
    directories = {path.rpartition("/")[0] for path in paths.values() if path}
    assert len(directories) == 1
    _, volume = mount_of(objects, directories.pop())
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert {path.rpartition("/")[2] for path in paths.values() if path} == {"tls.crt", "tls.key"}


def test_base_config_asks_for_the_service_name_in_the_self_signed_certificate() -> None:
    objects = render(BASE)
    service = one_of(objects, "APIService")["spec"]["service"]
    _, text = rendered_config(objects)
    hostnames = yaml.safe_load(text)["tls"]["hostnames"]
    assert f"{service['name']}.{service['namespace']}.svc" in hostnames


# --- the pod: two replicas, locked down, writable /tmp only ------------------------------
# (spread, disruption budget and priority: tests/manifests/test_availability.py)


def test_two_replicas_that_surge_before_they_stop() -> None:
    spec = one_of(render(BASE), "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pod_runs_non_root_read_only_without_capabilities() -> None:
    objects = render(BASE)
    pod = pod_spec(objects)["securityContext"]
    container = adapter_container(objects)["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container["capabilities"]


def test_tmp_is_a_writable_empty_dir_for_the_self_signed_certificate() -> None:
    mount, volume = mount_of(render(BASE), "/tmp")
    assert "emptyDir" in volume
    assert not mount.get("readOnly", False)


@pytest.mark.parametrize("kind", ["requests", "limits"])
def test_container_declares_cpu_and_memory(kind: str) -> None:
    resources = adapter_container(render(BASE))["resources"][kind]
    assert {"cpu", "memory"} <= resources.keys()


def test_every_object_stays_in_its_namespace() -> None:
    # Guards against a kustomize `namespace:` transformer moving the kube-system binding.
    placed = {
        describe(obj): obj["metadata"].get("namespace")
        for obj in render(BASE)
        if obj["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding", "APIService"}
    }
    expected = {
        name: "kube-system" if "RoleBinding" in name else ADAPTER_NAMESPACE for name in placed
    }
    assert placed == expected
    assert one_of(render(BASE), "Namespace")["metadata"]["name"] == ADAPTER_NAMESPACE


# --- RBAC --------------------------------------------------------------------------------


def binding_subjects(objects: list[Obj], role_kind: str, role_name: str) -> set[str]:
    """``namespace/name`` of every ServiceAccount bound to the role."""
    subjects = set()
    for binding in objects_of(objects, "ClusterRoleBinding") + objects_of(objects, "RoleBinding"):
        ref = binding["roleRef"]
        if (ref["kind"], ref["name"]) == (role_kind, role_name):
            subjects |= {
                f"{s['namespace']}/{s['name']}"
                for s in binding["subjects"]
                if s["kind"] == "ServiceAccount"
            }
    return subjects


def grants(objects: list[Obj], role_name: str, group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in one_of(objects, "ClusterRole", role_name)["rules"]:
        if group in rule["apiGroups"] and {resource, "*"} & set(rule["resources"]):
            verbs |= set(rule["verbs"])
    return verbs


def adapter_service_account(objects: list[Obj]) -> str:
    name = pod_spec(objects)["serviceAccountName"]
    account = one_of(objects, "ServiceAccount", name)
    return f"{account['metadata']['namespace']}/{name}"


@pytest.mark.parametrize(
    ("role_kind", "role_name"),
    [
        ("ClusterRole", "system:auth-delegator"),  # TokenReview + SubjectAccessReview
        ("Role", "extension-apiserver-authentication-reader"),  # front-proxy CA ConfigMap
        ("ClusterRole", "tritonscale-discovery"),  # Kubernetes target discovery
    ],
)
def test_the_adapter_service_account_is_bound_to(role_kind: str, role_name: str) -> None:
    objects = render(BASE)
    assert adapter_service_account(objects) in binding_subjects(objects, role_kind, role_name)


def test_auth_reader_binding_is_in_kube_system() -> None:
    objects = render(BASE)
    bindings = [
        b
        for b in objects_of(objects, "RoleBinding")
        if b["roleRef"]["name"] == "extension-apiserver-authentication-reader"
    ]
    assert [b["metadata"]["namespace"] for b in bindings] == ["kube-system"]


def test_hpa_controller_may_read_external_metrics() -> None:
    objects = render(BASE)
    role = "tritonscale-external-metrics-reader"
    assert {"get", "list"} <= grants(objects, role, "external.metrics.k8s.io", "*")
    hpa_controller = "kube-system/horizontal-pod-autoscaler"
    assert hpa_controller in binding_subjects(objects, "ClusterRole", role)


def test_discovery_may_list_and_watch_pods() -> None:
    assert {"list", "watch"} <= grants(render(BASE), "tritonscale-discovery", "", "pods")


def test_discovery_role_grants_only_what_discovery_reads() -> None:
    # adapter/discovery.py LISTs and WATCHes pods and reads nothing else (no EndpointSlices,
    # no single-pod GET); a grant beyond that is a permission nothing uses.
    rules = one_of(render(BASE), "ClusterRole", "tritonscale-discovery")["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {("", "pods", "list"), ("", "pods", "watch")}


# --- the ConfigMap is a config the adapter accepts --------------------------------------


def test_configmap_config_has_every_top_level_section_of_the_contract() -> None:
    _, text = rendered_config(render(BASE))
    raw = yaml.safe_load(text)
    assert isinstance(raw, dict)
    assert set(raw) == set(Config.model_fields)


def test_configmap_config_loads_with_the_adapter_loader(tmp_path: Path) -> None:
    _, text = rendered_config(render(BASE))
    path = tmp_path / CONFIG_KEY
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert config.discovery.kubernetes, "the example config discovers no pods"
    assert {d.kind for d in config.discovery.kubernetes} == {"triton"}


def test_configmap_is_mounted_from_the_generated_name() -> None:
    # configMapGenerator appends a content hash; the Deployment must follow it.
    objects = render(BASE)
    config_maps = objects_of(objects, "ConfigMap")
    assert len(config_maps) == 1
    name: Any = config_maps[0]["metadata"]["name"]
    assert name.startswith("tritonscale-config-") and name != "tritonscale-config-"
    _, volume = mount_of(objects, "/etc/tritonscale")
    assert volume["configMap"]["name"] == name


def test_base_config_delegates_auth_to_the_cluster(tmp_path: Path) -> None:
    # §5 items 2-3: front-proxy CA from kube-system/extension-apiserver-authentication (so the
    # reader RoleBinding above is what makes it readable) and SubjectAccessReviews
    # (system:auth-delegator).
    _, text = rendered_config(render(BASE))
    path = tmp_path / CONFIG_KEY
    path.write_text(text, encoding="utf-8")
    auth = load_config(path).auth
    assert auth.mode == "delegated"
    assert auth.requestheader_client_ca_file is None
    assert {"/livez", "/readyz"} <= set(auth.always_allow_paths)
