"""End to end: the aggregator's path through a running service in delegated mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from adapter.api.server import create_app
from adapter.api.tls import bound_port
from adapter.config import AuthConfig, Config
from adapter.kube.reviews import (
    RequestHeaderConfigError,
)
from adapter.listener import start_auth
from adapter.service import running_service
from tests.support.api_support import FakeClock, make_provider
from tests.support.auth_support import (
    CONFIG_MAP_PATH,
    GROUP,
    GV,
    HPA_GROUPS,
    HPA_HEADERS,
    HPA_USER,
    METRIC_PATH,
    PKI,
    SAR_PATH,
    FakeKubeAPI,
    FakeReviews,
    Served,
    serve_app,
)

# --- end to end: the aggregator's path ------------------------------------------------------


async def test_hpa_through_the_aggregator_gets_the_metric(
    pki: PKI, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    """ConfigMap -> TLS trust -> front-proxy headers -> SubjectAccessReview -> the values."""
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    setup = await start_auth(AuthConfig(mode="delegated", kubeconfig=str(kubeconfig)))
    assert setup is not None
    kube_api.decide = lambda spec: (spec["user"] == HPA_USER, "RBAC: allowed by ClusterRoleBinding")
    runner = await serve_app(
        create_app(make_provider(FakeClock()), auth=setup.auth), pki, setup.trust.front_proxy_ca
    )
    try:
        served = Served(pki, f"https://127.0.0.1:{bound_port(runner)}", FakeReviews(), FakeClock())
        answer = await served.get(METRIC_PATH, cert=pki.front_proxy, headers=HPA_HEADERS)
        anonymous = await served.get(METRIC_PATH, headers=HPA_HEADERS)  # no certificate
    finally:
        await runner.cleanup()
        await setup.close()
    assert answer.status == 200, answer.body
    assert answer.body["kind"] == "ExternalMetricValueList"
    assert {item["metricLabels"]["deployment"] for item in answer.body["items"]} == {
        "resnet-a",
        "resnet-b",
        "bert-a",
    }
    assert anonymous.status == 403
    assert 'User "system:anonymous" cannot list' in anonymous.body["message"]
    assert kube_api.received[0] == (CONFIG_MAP_PATH, None)
    assert [body["spec"] for body in kube_api.bodies(SAR_PATH)] == [
        {
            "user": HPA_USER,
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
        {
            "user": "system:anonymous",
            "groups": ["system:unauthenticated"],
            "resourceAttributes": {
                "namespace": "prod",
                "verb": "list",
                "group": GROUP,
                "version": "v1beta1",
                "resource": "triton_queue_depth",
            },
        },
    ]


@pytest.mark.parametrize("api_process", [False, True], ids=["one process", "API process"])
async def test_running_service_in_delegated_mode_wires_tls_and_auth(
    pki: PKI,
    kube_api: FakeKubeAPI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    api_process: bool,
) -> None:
    """The same TLS and delegated auth whichever process answers the API (with
    ``server.api_process`` the child sets up its own, from the same settings)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube_api.decide = lambda spec: (False, "")
    config = Config.model_validate(
        {
            "listen": "127.0.0.1:0",
            "server": {"api_process": api_process, "main_listen": "127.0.0.1:0"},
            "tls": {
                "cert_file": str(pki.serving_cert_file),
                "private_key_file": str(pki.serving_key_file),
            },
            "auth": {
                "mode": "delegated",
                "kubeconfig": str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")),
            },
        }
    )
    probe = CIMultiDict(
        [("X-Remote-User", "system:kube-aggregator"), ("X-Remote-Group", "system:masters")]
    )
    async with running_service(config) as service:
        served = Served(pki, f"https://127.0.0.1:{service.port}", FakeReviews(), FakeClock())
        availability = await served.get(GV, cert=pki.front_proxy, headers=probe)
        liveness = await served.get("/livez")
        metrics_anonymous = await served.get("/metrics")
    assert availability.status == 200, availability.body
    assert liveness.status == 200
    assert metrics_anonymous.status == 403
    assert [body["spec"]["nonResourceAttributes"] for body in kube_api.bodies(SAR_PATH)] == [
        {"path": "/metrics", "verb": "get"}
    ]


async def test_service_start_fails_clearly_without_the_config_map(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    kube_api.config_map_data = None  # 404
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    with pytest.raises(RequestHeaderConfigError, match="extension-apiserver-authentication-reader"):
        await start_auth(AuthConfig(mode="delegated", kubeconfig=str(kubeconfig)))
