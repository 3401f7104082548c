"""Every manifest renders with kustomize and is a valid object for Kubernetes 1.30 to 1.33.

Rendering uses ``kubectl kustomize`` (kustomize v5 inside kubectl); no cluster is needed
and none is contacted. Schema validation uses the ``kubernetes-validate`` package in
strict mode (unknown fields are errors), whose JSON schemas ship inside the package, so
it reads files only. CRDs it has no schema for (cert-manager) are on an explicit
allowlist and get a structural check instead.

The helpers here (``render``, ``objects_of``...) are shared by the other
``tests/manifests/`` files.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.paths import REPO_ROOT

MANIFESTS = REPO_ROOT / "manifests"
# The releases the manifests support: the oldest still maintained upstream to the newest
# whose schemas have been checked. Every object must be valid for each.
KUBERNETES_VERSIONS = ("1.30", "1.31", "1.32", "1.33")
KUBERNETES_VERSION = "1.32"  # for single-version checks (the validator's own behaviour)

BASE = "manifests/base"
CERT_MANAGER = "manifests/overlays/cert-manager"
CUSTOM_METRICS = "manifests/overlays/custom-metrics"
KEDA_SCALER = "manifests/overlays/keda-scaler"
EXAMPLES = "manifests/examples"
EXAMPLE_ADAPTER = "manifests/examples/adapter"
GRAFANA = "manifests/grafana"
KUSTOMIZATIONS = (
    BASE,
    CERT_MANAGER,
    CUSTOM_METRICS,
    KEDA_SCALER,
    EXAMPLES,
    EXAMPLE_ADAPTER,
    GRAFANA,
)

# One HPA per served signal lives in examples/hpa/ (only one is in the examples
# kustomization: several HPAs on one Deployment would fight).
EXAMPLE_HPA_FILES = tuple(sorted((MANIFESTS / "examples" / "hpa").glob("*.yaml")))
# HPAs on the custom metrics API (Pods and Object metrics), NVIDIA's recipe among them.
CUSTOM_HPA_FILES = tuple(sorted((MANIFESTS / "examples" / "custom-metrics").glob("*.yaml")))
# Every YAML file under manifests/ belongs to some kustomization or is an example HPA file:
# nothing ships unvalidated.
OUTSIDE_KUSTOMIZATIONS = (
    frozenset(EXAMPLE_HPA_FILES)
    | frozenset(CUSTOM_HPA_FILES)
    | {
        # KEDA CRDs (and their RBAC), applied on their own; checked by tests/keda/
        MANIFESTS / "examples" / "keda" / "scaledobject.yaml",
        MANIFESTS / "examples" / "keda" / "external-scaler.yaml",
    }
)

Obj = dict[str, Any]

_KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


@functools.cache
def _render_text(kustomization: str) -> str:
    if not Path(_KUBECTL).exists():
        pytest.skip("kubectl (with built-in kustomize) is not installed")
    done = subprocess.run(
        [_KUBECTL, "kustomize", str(REPO_ROOT / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {kustomization} failed:\n{done.stderr}")
    return done.stdout


def render(kustomization: str) -> list[Obj]:
    """The objects ``kubectl kustomize <dir>`` produces (fresh copies, safe to mutate)."""
    return [doc for doc in yaml.safe_load_all(_render_text(kustomization)) if doc]


def load_yaml_file(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def objects_of(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def one_of(objects: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    """The single object of ``kind`` (and ``name``, when given); fails otherwise."""
    found = [
        obj for obj in objects_of(objects, kind) if name is None or obj["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def describe(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    namespace = meta.get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{obj.get('apiVersion')} {obj.get('kind')} {where}{meta.get('name')}"


# --- CRDs without a schema in kubernetes-validate: structural checks instead ------------


def _check_issuer(obj: Obj) -> list[str]:
    spec = obj.get("spec") or {}
    kinds = {"selfSigned", "ca", "acme", "vault", "venafi"} & set(spec)
    problems = [] if len(kinds) == 1 else [f"spec needs exactly one issuer type, has {kinds}"]
    if "ca" in spec and not spec["ca"].get("secretName"):
        problems.append("spec.ca.secretName is missing")
    return problems


def _check_certificate(obj: Obj) -> list[str]:
    spec = obj.get("spec") or {}
    problems = []
    if not spec.get("secretName"):
        problems.append("spec.secretName is missing")
    issuer = spec.get("issuerRef") or {}
    if not issuer.get("name") or issuer.get("kind") not in {"Issuer", "ClusterIssuer"}:
        problems.append("spec.issuerRef needs name and kind Issuer/ClusterIssuer")
    usages = set(spec.get("usages") or ())
    client_only = "client auth" in usages and "server auth" not in usages
    if not spec.get("isCA") and not client_only and not spec.get("dnsNames"):
        problems.append("a serving certificate needs spec.dnsNames")
    if client_only and not spec.get("commonName"):
        problems.append("a client certificate needs spec.commonName (the name it is allowed by)")
    known = {
        "secretName", "issuerRef", "isCA", "dnsNames", "commonName", "duration",
        "renewBefore", "usages", "privateKey", "ipAddresses", "subject", "secretTemplate",
    }  # fmt: skip
    problems += [
        f"spec.{key} is not a cert-manager v1 Certificate field" for key in spec.keys() - known
    ]
    return problems


STRUCTURAL_CHECKS: Mapping[tuple[str, str], Callable[[Obj], list[str]]] = {
    ("cert-manager.io/v1", "Issuer"): _check_issuer,
    ("cert-manager.io/v1", "ClusterIssuer"): _check_issuer,
    ("cert-manager.io/v1", "Certificate"): _check_certificate,
}


def validation_problems(obj: Obj, version: str = KUBERNETES_VERSION) -> list[str]:
    """Schema (strict, Kubernetes ``version``) or, for allowlisted CRDs, structural problems."""
    check = STRUCTURAL_CHECKS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if check is not None:
        return check(obj)
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(part) for part in err.absolute_path)
        return [f"{path or '(root)'}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no Kubernetes {version} schema and not on the CRD allowlist (STRUCTURAL_CHECKS)"]
    return []


# --- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_validator_ships_the_schemas_of(version: str) -> None:
    # validate() silently falls back to the newest older version it has; make sure the
    # answer really is that version and not, say, the one before.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    assert kubernetes_validate.validate(namespace, version, strict=True) == version


def test_strict_validation_rejects_a_misspelled_field() -> None:
    deployment = one_of(render(BASE), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    problems = validation_problems(deployment)
    assert problems and "livenesProbe" in problems[0]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders_named_objects(kustomization: str) -> None:
    objects = render(kustomization)
    assert objects, f"{kustomization} renders nothing"
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), f"{describe(obj)} has no name"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid_for(kustomization: str, version: str) -> None:
    problems = {
        describe(obj): found
        for obj in render(kustomization)
        if (found := validation_problems(obj, version))
    }
    assert not problems, f"{kustomization} on Kubernetes {version}: {problems}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "path", EXAMPLE_HPA_FILES + CUSTOM_HPA_FILES, ids=lambda path: f"{path.parent.name}/{path.name}"
)
def test_every_example_hpa_file_is_valid_for(path: Path, version: str) -> None:
    objects = load_yaml_file(path)
    assert [obj["kind"] for obj in objects] == ["HorizontalPodAutoscaler"]
    assert validation_problems(objects[0], version) == []


def kustomization_files(directory: Path) -> set[Path]:
    """The files a kustomization.yaml in ``directory`` takes, following local directories."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {directory / "kustomization.yaml"}
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        files |= kustomization_files(path) if path.is_dir() else {path}
    for patch in spec.get("patches", []):
        if "path" in patch:  # an inline patch (``patch:``) has no file
            files.add((directory / patch["path"]).resolve())
    for generator in spec.get("configMapGenerator", []):
        files |= {(directory / name).resolve() for name in generator.get("files", [])}
    return files


MONITORING = "manifests/monitoring"
"""Prometheus Operator objects: validated against the Operator's own schemas (and the core
kinds strictly) by tests/manifests/test_monitoring_manifests.py."""


def test_every_manifest_file_is_in_a_validated_kustomization() -> None:
    covered = set(OUTSIDE_KUSTOMIZATIONS)
    for kustomization in (*KUSTOMIZATIONS, MONITORING):
        covered |= kustomization_files(REPO_ROOT / kustomization)
    shipped = set(MANIFESTS.rglob("*.yaml")) | set(MANIFESTS.rglob("*.json"))
    assert sorted(str(p.relative_to(REPO_ROOT)) for p in shipped - covered) == []


def test_the_crd_allowlist_covers_only_objects_that_lack_a_schema() -> None:
    # An allowlisted kind that kubernetes-validate can check should be checked for real.
    for api_version, kind in STRUCTURAL_CHECKS:
        obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("kind", "spec", "needle"),
    [
        ("Certificate", {"issuerRef": {"name": "ca", "kind": "Issuer"}, "dnsNames": ["a"]},
         "secretName"),
        ("Certificate", {"secretName": "s", "issuerRef": {"name": "ca", "kind": "Issuer"}},
         "dnsNames"),
        ("Certificate", {"secretName": "s", "issuerRef": {"name": "ca", "kind": "Issuer"},
                         "dnsNames": ["a"], "dnsName": ["b"]}, "spec.dnsName"),
        ("Issuer", {}, "exactly one issuer type"),
        ("Issuer", {"ca": {}}, "secretName"),
    ],
)  # fmt: skip
def test_structural_checks_reject_broken_cert_manager_objects(
    kind: str, spec: Obj, needle: str
) -> None:
    obj = {"apiVersion": "cert-manager.io/v1", "kind": kind, "metadata": {"name": "x"}}
    obj["spec"] = spec
    assert any(needle in problem for problem in validation_problems(obj))


def test_cert_manager_objects_in_the_overlay_pass_the_structural_checks() -> None:
    crd_objects = [
        obj for obj in render(CERT_MANAGER) if obj["apiVersion"].startswith("cert-manager.io/")
    ]
    assert {obj["kind"] for obj in crd_objects} == {"Issuer", "Certificate"}
    assert {describe(obj): validation_problems(obj) for obj in crd_objects} == {
        describe(obj): [] for obj in crd_objects
    }
