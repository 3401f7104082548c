"""The kubernetes-asyncio review client against an in-process fake Kubernetes API, and the
front-proxy settings from the ConfigMap or a CA file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapter.api.tls import make_server_ssl_context
from adapter.kube.client import KubernetesClientError
from adapter.kube.reviews import (
    ANONYMOUS,
    AccessDecision,
    RequestHeaderConfig,
    RequestHeaderConfigError,
    ReviewError,
    UserInfo,
    connect,
    request_attributes,
    request_header_config_from_config_map,
    request_header_config_from_file,
)
from tests.support.auth_support import (
    ADAPTER_TOKEN,
    FRONT_PROXY_CN,
    GROUP,
    HPA_GROUPS,
    HPA_INFO,
    HPA_USER,
    METRIC_PATH,
    PKI,
    SAR_PATH,
    TOKEN_REVIEW_PATH,
    TOKEN_USER,
    FakeKubeAPI,
    config_map_data,
)

# --- the kubernetes-asyncio client against a fake Kubernetes API -----------------------------


async def test_kube_client_posts_the_exact_subject_access_review(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    client = await connect(
        str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")), timeout_seconds=10
    )
    try:
        attributes = request_attributes(HPA_INFO, "GET", METRIC_PATH, {})
        decision = await client.review_access(attributes)
        non_resource = await client.review_access(request_attributes(ANONYMOUS, "GET", "/apis", {}))
    finally:
        await client.close()
    assert decision == AccessDecision(True, "allowed by the fake")
    assert non_resource.allowed
    assert kube_api.bodies(SAR_PATH) == [
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": HPA_USER,
                "uid": "7f1c",
                "groups": list(HPA_GROUPS),
                "extra": {"authentication.kubernetes.io/credential-id": ["JTI=1234"]},
                "resourceAttributes": {
                    "namespace": "prod",
                    "verb": "list",
                    "group": GROUP,
                    "version": "v1beta1",
                    "resource": "triton_queue_depth",
                },
            },
        },
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": "system:anonymous",
                "groups": ["system:unauthenticated"],
                "nonResourceAttributes": {"path": "/apis", "verb": "get"},
            },
        },
    ]
    # the adapter calls the API as itself (the kubeconfig's credentials)
    assert kube_api.credentials == [f"Bearer {ADAPTER_TOKEN}"] * 2


async def test_kube_client_reads_denials_and_token_reviews(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kube_api.decide = lambda spec: (False, f"{spec['user']} may not")
    kube_api.tokens["t0k3n"] = {
        "username": TOKEN_USER.name,
        "uid": "b0c1",
        "groups": list(TOKEN_USER.groups),
        "extra": {"scopes": ["a", "b"]},
    }
    client = await connect(
        str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")), timeout_seconds=10
    )
    try:
        decision = await client.review_access(request_attributes(ANONYMOUS, "GET", "/apis", {}))
        known = await client.review_token("t0k3n")
        unknown = await client.review_token("nope")
    finally:
        await client.close()
    assert decision == AccessDecision(False, "system:anonymous may not")
    assert known.user == UserInfo.create(
        TOKEN_USER.name, uid="b0c1", groups=TOKEN_USER.groups, extra={"scopes": ["a", "b"]}
    )
    assert (unknown.user, unknown.error) == (None, "invalid token")
    assert kube_api.bodies(TOKEN_REVIEW_PATH) == [
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": t}}
        for t in ("t0k3n", "nope")
    ]


@pytest.mark.parametrize(
    ("http_status", "status_override", "error"),
    [
        (500, None, "SubjectAccessReview: HTTP 500 Internal Server Error: etcd is on fire"),
        (201, {"reason": "no allowed field"}, "SubjectAccessReview: malformed answer"),
    ],
)
async def test_kube_client_review_failures_are_review_errors(
    kube_api: FakeKubeAPI,
    tmp_path: Path,
    http_status: int,
    status_override: dict[str, Any] | None,
    error: str,
) -> None:
    kube_api.sar_http_status = http_status
    kube_api.sar_status_override = status_override
    client = await connect(
        str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")), timeout_seconds=10
    )
    try:
        with pytest.raises(ReviewError, match=error):
            await client.review_access(request_attributes(ANONYMOUS, "GET", "/apis", {}))
    finally:
        await client.close()


async def test_kube_client_unreachable_api_is_a_review_error(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    await kube_api.stop()  # nothing listens on the port any more
    client = await connect(str(kubeconfig), timeout_seconds=10)
    try:
        with pytest.raises(ReviewError, match=r"^TokenReview: ") as caught:
            await client.review_token("secret-token-value")
    finally:
        await client.close()
    assert "secret-token-value" not in str(caught.value)


async def test_kube_client_in_cluster_uses_the_service_account(pki: PKI, tmp_path: Path) -> None:
    api = FakeKubeAPI(config_map_data=config_map_data(pki))
    server_context = make_server_ssl_context(
        str(pki.serving_cert_file), str(pki.serving_key_file), hostnames=[]
    )
    await api.start(server_context)
    token_file = tmp_path / "token"
    token_file.write_text("in-cluster-token")
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)}
    try:
        client = await connect(
            None,
            environ=environ,
            token_file=str(token_file),
            ca_file=str(pki.serving_ca_file),
            timeout_seconds=10,
        )
        try:
            request_header = await client.read_request_header_config()
        finally:
            await client.close()
    finally:
        await api.stop()
    assert client.host == f"https://127.0.0.1:{api.port}"
    assert api.credentials == ["Bearer in-cluster-token"]
    assert request_header.allowed_names == (FRONT_PROXY_CN,)
    assert request_header.client_ca_pem == pki.front_proxy_ca_pem


async def test_connect_without_any_configuration_names_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(KubernetesClientError, match=r"auth\.kubeconfig"):
        await connect(str(tmp_path / "missing-kubeconfig"), environ={}, timeout_seconds=10)


# --- the ConfigMap and the CA file ----------------------------------------------------------


def test_config_map_parsed_as_the_kube_apiserver_writes_it(pki: PKI) -> None:
    config = request_header_config_from_config_map(config_map_data(pki))
    assert config == RequestHeaderConfig(
        pki.front_proxy_ca_pem,
        allowed_names=(FRONT_PROXY_CN,),
        username_headers=("X-Remote-User",),
        group_headers=("X-Remote-Group",),
        extra_headers_prefixes=("X-Remote-Extra-",),
        source="ConfigMap kube-system/extension-apiserver-authentication",
    )


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"requestheader-client-ca-file": ""}, "has no requestheader-client-ca-file"),
        ({"requestheader-client-ca-file": "not a pem"}, "not a PEM bundle"),
        (
            {"requestheader-allowed-names": "[front-proxy"},
            "requestheader-allowed-names is not JSON",
        ),
        ({"requestheader-group-headers": '{"a": 1}'}, "must be a JSON array of strings"),
        ({"requestheader-username-headers": "[]"}, "lists no requestheader-username-headers"),
    ],
)
def test_config_map_problems_are_named(pki: PKI, changes: dict[str, str], error: str) -> None:
    with pytest.raises(RequestHeaderConfigError, match=error):
        request_header_config_from_config_map({**config_map_data(pki), **changes})


@pytest.mark.parametrize("allowed", ["", "[]", "null"])
def test_config_map_empty_allowed_names_means_any(pki: PKI, allowed: str) -> None:
    data = {**config_map_data(pki), "requestheader-allowed-names": allowed}
    assert request_header_config_from_config_map(data).allowed_names == ()


def test_ca_file_problems_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(
        RequestHeaderConfigError, match=r"auth\.requestheader_client_ca_file .*cannot read"
    ):
        request_header_config_from_file(str(tmp_path / "missing.crt"))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("hello")
    with pytest.raises(RequestHeaderConfigError, match=r"garbage\.crt.*not a PEM bundle"):
        request_header_config_from_file(str(garbage))
