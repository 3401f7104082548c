"""Authorisation of the custom metrics API: the SubjectAccessReview attributes the Go apiserver
derives from its paths (custom-metrics-api.md §2.3: ``pods/<metric>``, verb ``get``, name
``*``), the exact review body, and the denial message an operator reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapter.api.auth import DelegatedAuth, forbidden_message
from adapter.api.server import create_app
from adapter.api.tls import bound_port
from adapter.config import DEFAULT_ALWAYS_ALLOW_PATHS
from adapter.kube.reviews import (
    ANONYMOUS,
    AccessDecision,
    RequestAttributes,
    connect,
    request_attributes,
)
from tests.support.api_support import FakeClock, make_custom_provider, make_provider
from tests.support.auth_support import (
    CACHE_SECONDS,
    HPA_GROUPS,
    HPA_HEADERS,
    HPA_INFO,
    HPA_USER,
    PKI,
    SAR_PATH,
    TOKEN_USER,
    FakeKubeAPI,
    FakeReviews,
    Served,
    front_proxy_config,
    serve_app,
)

CUSTOM = "custom.metrics.k8s.io"
V2 = f"/apis/{CUSTOM}/v1beta2"
PODS_PATH = f"{V2}/namespaces/prod/pods/*/triton:queue_compute:ratio"


@pytest.fixture
async def served(pki: PKI) -> AsyncIterator[Served]:
    reviews = FakeReviews(users={"good-token": TOKEN_USER})
    cache_clock = FakeClock(now=1000.0)
    auth = DelegatedAuth(
        reviews,
        front_proxy_config(pki),
        cache_seconds=CACHE_SECONDS,
        always_allow_paths=DEFAULT_ALWAYS_ALLOW_PATHS,
        clock=cache_clock,
    )
    clock = FakeClock()
    app = create_app(make_provider(clock), auth=auth, custom=make_custom_provider(clock))
    runner = await serve_app(app, pki, pki.front_proxy_ca_pem)
    try:
        yield Served(pki, f"https://127.0.0.1:{bound_port(runner)}", reviews, cache_clock)
    finally:
        await runner.cleanup()


def resource(**fields: str) -> RequestAttributes:
    path = fields.pop("path")
    return RequestAttributes(ANONYMOUS, path=path, is_resource_request=True, **fields)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            PODS_PATH,
            resource(
                path=PODS_PATH,
                verb="get",
                api_group=CUSTOM,
                api_version="v1beta2",
                namespace="prod",
                resource="pods",
                subresource="triton:queue_compute:ratio",
                name="*",
            ),
            id="pods-selector",
        ),
        pytest.param(
            f"/apis/{CUSTOM}/v1beta1/namespaces/prod/deployments.apps/llm/triton_desired_replicas",
            resource(
                path=f"/apis/{CUSTOM}/v1beta1/namespaces/prod/deployments.apps/llm/"
                "triton_desired_replicas",
                verb="get",
                api_group=CUSTOM,
                api_version="v1beta1",
                namespace="prod",
                resource="deployments.apps",
                subresource="triton_desired_replicas",
                name="llm",
            ),
            id="deployment-object",
        ),
        pytest.param(
            f"{V2}/namespaces/prod/metrics/triton_queue_depth",
            resource(
                path=f"{V2}/namespaces/prod/metrics/triton_queue_depth",
                verb="get",
                api_group=CUSTOM,
                api_version="v1beta2",
                namespace="prod",
                resource="metrics",
                name="triton_queue_depth",
            ),
            id="namespace-metric",
        ),
        pytest.param(
            f"{V2}/nodes/*/gpu_utilization",
            resource(
                path=f"{V2}/nodes/*/gpu_utilization",
                verb="get",
                api_group=CUSTOM,
                api_version="v1beta2",
                resource="nodes",
                subresource="gpu_utilization",
                name="*",
            ),
            id="root-scoped",
        ),
        pytest.param(V2, RequestAttributes(ANONYMOUS, "get", V2), id="discovery"),
    ],
)
def test_request_attributes_of_custom_metric_paths(path: str, expected: RequestAttributes) -> None:
    assert request_attributes(ANONYMOUS, "GET", path, {}) == expected


def test_denial_reads_as_the_go_apiserver_writes_it() -> None:
    attributes = request_attributes(ANONYMOUS, "GET", PODS_PATH, {})
    assert forbidden_message(attributes) == (
        'pods.custom.metrics.k8s.io "*" is forbidden: User "system:anonymous" cannot get '
        'resource "pods/triton:queue_compute:ratio" in API group "custom.metrics.k8s.io" '
        'in the namespace "prod"'
    )


async def test_kube_client_posts_the_review_the_go_webhook_authorizer_posts(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    client = await connect(
        str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")), timeout_seconds=10
    )
    try:
        await client.review_access(request_attributes(HPA_INFO, "GET", PODS_PATH, {}))
    finally:
        await client.close()
    (body,) = kube_api.bodies(SAR_PATH)
    assert body["spec"]["user"] == HPA_USER and body["spec"]["groups"] == list(HPA_GROUPS)
    assert body["spec"]["resourceAttributes"] == {
        "namespace": "prod",
        "verb": "get",
        "group": CUSTOM,
        "version": "v1beta2",
        "resource": "pods",
        "subresource": "triton:queue_compute:ratio",
        "name": "*",
    }


async def test_the_hpa_is_authorised_for_pods_metrics_by_review(served: Served) -> None:
    # Go's url.Values escapes * as %2A; the path is decoded before it is authorised
    query = "?labelSelector=app%3Dllm&metricLabelSelector=model%3Dresnet"
    path = PODS_PATH.replace("*", "%2A") + query
    answer = await served.get(path, cert=served.pki.front_proxy, headers=HPA_HEADERS)
    assert answer.status == 200, answer.body
    (attributes,) = served.reviews.access_calls
    assert (attributes.user.name, attributes.verb, attributes.resource) == (HPA_USER, "get", "pods")
    assert (attributes.name, attributes.subresource) == ("*", "triton:queue_compute:ratio")


async def test_a_denied_caller_gets_403_and_no_value(served: Served) -> None:
    def deny(attributes: RequestAttributes) -> AccessDecision:
        return AccessDecision(False, "no RBAC rule")

    served.reviews.decide = deny
    answer = await served.get(PODS_PATH + "?labelSelector=app%3Dllm")
    assert answer.status == 403
    assert isinstance(answer.body, dict)
    assert answer.body["reason"] == "Forbidden"
    assert answer.body["message"].endswith('in the namespace "prod": no RBAC rule')
    assert answer.body["details"] == {"group": CUSTOM, "kind": "pods", "name": "*"}
