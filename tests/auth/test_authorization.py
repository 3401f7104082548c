"""SubjectAccessReview authorisation (external-metrics-api-and-hpa.md §2.4-§2.5, §5 item 3):
what is checked, how denials read, what is cached, and mode none."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from adapter.api.auth import (
    forbidden_message,
)
from adapter.api.server import create_app
from adapter.api.tls import bound_port
from adapter.config import AuthConfig
from adapter.kube.reviews import (
    ANONYMOUS,
    AccessDecision,
    RequestAttributes,
    request_attributes,
)
from adapter.listener import start_auth
from tests.support.api_support import FakeClock, make_provider, status_body
from tests.support.auth_support import (
    CACHE_SECONDS,
    GROUP,
    GV,
    HPA_HEADERS,
    HPA_USER,
    METRIC_PATH,
    PKI,
    SPOOFED_HEADERS,
    FakeReviews,
    Served,
    serve_app,
)

# --- authorisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/healthz", "/livez", "/readyz", "/readyz/ping", "/healthz/ping", "/livez?verbose"]
)
async def test_health_paths_skip_authorization(served: Served, path: str) -> None:
    served.reviews.access_error = "must not be asked"
    answer = await served.get(path)  # anonymous, as the kubelet probes
    assert answer.status == 200, answer.body
    assert served.reviews.access_calls == []


@pytest.mark.parametrize("path", [GV, METRIC_PATH, "/openapi/v2"])
async def test_system_masters_skip_the_subject_access_review(served: Served, path: str) -> None:
    served.reviews.access_error = "must not be asked"
    # the aggregator's availability probe identity
    headers = CIMultiDict(
        [("X-Remote-User", "system:kube-aggregator"), ("X-Remote-Group", "system:masters")]
    )
    answer = await served.get(path, cert=served.pki.front_proxy, headers=headers)
    assert answer.status == 200, answer.body
    assert served.reviews.access_calls == []


def _deny(_: RequestAttributes) -> AccessDecision:
    return AccessDecision(False, "no RBAC policy matched")


async def test_denied_metric_read_is_403_status_worded_like_kubernetes(served: Served) -> None:
    served.reviews.decide = _deny
    answer = await served.get(METRIC_PATH, cert=served.pki.front_proxy, headers=HPA_HEADERS)
    assert answer.status == 403
    assert answer.content_type == "application/json"
    assert answer.body == status_body(
        403,
        "Forbidden",
        f'triton_queue_depth.{GROUP} is forbidden: User "{HPA_USER}" cannot list resource '
        f'"triton_queue_depth" in API group "{GROUP}" in the namespace "prod": '
        "no RBAC policy matched",
        details={"group": GROUP, "kind": "triton_queue_depth"},
    )


async def test_denied_discovery_is_403_naming_the_path(served: Served) -> None:
    served.reviews.decide = _deny
    answer = await served.get("/apis")
    assert (answer.status, answer.body) == (
        403,
        status_body(
            403,
            "Forbidden",
            'forbidden: User "system:anonymous" cannot get path "/apis": no RBAC policy matched',
        ),
    )


async def test_review_failure_is_500_never_allow(served: Served) -> None:
    served.reviews.access_error = "SubjectAccessReview: HTTP 500 InternalError: etcd is down"
    answer = await served.get("/echo-identity", cert=served.pki.front_proxy, headers=HPA_HEADERS)
    assert answer.status == 500
    assert answer.body["reason"] == "InternalError"
    assert "SubjectAccessReview failed" in answer.body["message"]
    assert "etcd is down" in answer.body["message"]
    assert "user" not in answer.body  # the handler did not run


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        (
            "GET",
            METRIC_PATH,
            {},
            dict(
                verb="list",
                api_group=GROUP,
                api_version="v1beta1",
                namespace="prod",
                resource="triton_queue_depth",
            ),
        ),
        (
            "GET",
            METRIC_PATH,
            {"watch": "true"},
            dict(
                verb="watch",
                api_group=GROUP,
                api_version="v1beta1",
                namespace="prod",
                resource="triton_queue_depth",
            ),
        ),
        (
            "GET",
            METRIC_PATH,
            {"watch": "0"},
            dict(
                verb="list",
                api_group=GROUP,
                api_version="v1beta1",
                namespace="prod",
                resource="triton_queue_depth",
            ),
        ),
        (
            "POST",
            METRIC_PATH,
            {},
            dict(
                verb="create",
                api_group=GROUP,
                api_version="v1beta1",
                namespace="prod",
                resource="triton_queue_depth",
            ),
        ),
        (
            "DELETE",
            METRIC_PATH,
            {},
            dict(
                verb="deletecollection",
                api_group=GROUP,
                api_version="v1beta1",
                namespace="prod",
                resource="triton_queue_depth",
            ),
        ),
        (
            "GET",
            METRIC_PATH + "/extra",
            {},
            dict(
                verb="get",
                api_group=GROUP,
                api_version="v1beta1",
                namespace="prod",
                resource="triton_queue_depth",
                name="extra",
            ),
        ),
        (
            "GET",
            f"{GV}/namespaces/prod",
            {},
            dict(
                verb="get",
                api_group=GROUP,
                api_version="v1beta1",
                namespace="prod",
                resource="namespaces",
                name="prod",
            ),
        ),
        (
            "GET",
            f"{GV}/triton_queue_depth",
            {},
            dict(
                verb="list", api_group=GROUP, api_version="v1beta1", resource="triton_queue_depth"
            ),
        ),
        (
            "GET",
            "/api/v1/namespaces/kube-system/configmaps/x",
            {},
            dict(
                verb="get",
                api_version="v1",
                namespace="kube-system",
                resource="configmaps",
                name="x",
            ),
        ),
        ("GET", GV, {}, None),
        ("GET", f"/apis/{GROUP}", {}, None),
        ("GET", "/apis", {}, None),
        ("GET", "/openapi/v2", {}, None),
        ("GET", f"/openapi/v3/apis/{GROUP}/v1beta1", {}, None),
        ("GET", "/metrics", {}, None),
        ("HEAD", "/", {}, None),
    ],
)
def test_request_attributes_follow_request_info_factory(
    method: str, path: str, query: dict[str, str], expected: dict[str, str] | None
) -> None:
    attributes = request_attributes(ANONYMOUS, method, path, query)
    if expected is None:
        assert attributes == RequestAttributes(ANONYMOUS, method.lower(), path)
    else:
        assert attributes == RequestAttributes(
            ANONYMOUS, path=path, is_resource_request=True, **expected
        )


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        (
            RequestAttributes(ANONYMOUS, "list", "/x", True, "apps", "v1", "", "deployments"),
            'deployments.apps is forbidden: User "system:anonymous" cannot list resource '
            '"deployments" in API group "apps" at the cluster scope',
        ),
        (
            RequestAttributes(ANONYMOUS, "get", "/x", True, "", "v1", "ns", "pods", "log", "p"),
            'pods "p" is forbidden: User "system:anonymous" cannot get resource "pods/log" '
            'in API group "" in the namespace "ns"',
        ),
        (
            RequestAttributes(ANONYMOUS, "get", "/openapi/v2"),
            'forbidden: User "system:anonymous" cannot get path "/openapi/v2"',
        ),
    ],
)
def test_forbidden_message_shapes(attributes: RequestAttributes, message: str) -> None:
    assert forbidden_message(attributes) == message


# --- caches (fake clock) -------------------------------------------------------------------


async def test_decisions_are_cached_for_the_ttl(served: Served) -> None:
    for _ in range(2):
        answer = await served.get(METRIC_PATH, cert=served.pki.front_proxy, headers=HPA_HEADERS)
        assert answer.status == 200
    assert len(served.reviews.access_calls) == 1
    served.cache_clock.now += CACHE_SECONDS - 0.01
    await served.get(METRIC_PATH, cert=served.pki.front_proxy, headers=HPA_HEADERS)
    assert len(served.reviews.access_calls) == 1
    served.cache_clock.now += 0.02
    await served.get(METRIC_PATH, cert=served.pki.front_proxy, headers=HPA_HEADERS)
    assert len(served.reviews.access_calls) == 2


async def test_denials_are_cached_and_keyed_by_user_and_attributes(served: Served) -> None:
    served.reviews.decide = _deny
    for _ in range(2):
        assert (await served.get(METRIC_PATH)).status == 403
    assert len(served.reviews.access_calls) == 1
    # another user, another namespace: separate decisions
    await served.get(METRIC_PATH, cert=served.pki.front_proxy, headers=HPA_HEADERS)
    await served.get(f"{GV}/namespaces/staging/triton_queue_depth")
    assert len(served.reviews.access_calls) == 3


async def test_review_errors_are_not_cached(served: Served) -> None:
    served.reviews.access_error = "SubjectAccessReview: timeout"
    assert (await served.get(METRIC_PATH)).status == 500
    served.reviews.access_error = None
    assert (await served.get(METRIC_PATH)).status == 200
    assert len(served.reviews.access_calls) == 2


async def test_token_reviews_are_cached_for_the_ttl(served: Served) -> None:
    for _ in range(2):
        assert (await served.get(METRIC_PATH, token="good-token")).status == 200
    assert served.reviews.token_calls == ["good-token"]
    served.cache_clock.now += CACHE_SECONDS
    await served.get(METRIC_PATH, token="good-token")
    assert served.reviews.token_calls == ["good-token", "good-token"]


async def test_the_token_is_never_logged(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    served.reviews.token_error = "TokenReview: HTTP 500"
    await served.get(METRIC_PATH, token="secret-token-value")
    served.reviews.token_error = None
    await served.get(METRIC_PATH, token="secret-token-value")
    assert caplog.records, "expected the 401s to be logged"
    assert "secret-token-value" not in caplog.text


# --- mode none ------------------------------------------------------------------------------


async def test_mode_none_has_no_auth_at_all(pki: PKI) -> None:
    assert await start_auth(AuthConfig()) is None
    app = create_app(make_provider(FakeClock()))
    runner = await serve_app(app, pki, client_ca_pem=None)
    try:
        served = Served(pki, f"https://127.0.0.1:{bound_port(runner)}", FakeReviews(), FakeClock())
        answer = await served.get(METRIC_PATH, headers=SPOOFED_HEADERS, token="anything")
    finally:
        await runner.cleanup()
    assert answer.status == 200
    assert [item["metricLabels"]["deployment"] for item in answer.body["items"]]
