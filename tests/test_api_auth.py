"""Delegated authentication and authorisation (external-metrics-api-and-hpa.md §2.2-§2.5, §5
items 2-3), over real TLS with real client certificates, and the kubernetes-asyncio client
against an in-process fake Kubernetes API."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from adapter.api.auth import (
    ANONYMOUS,
    USER_KEY,
    AccessDecision,
    DelegatedAuth,
    PeerCertificate,
    RequestAttributes,
    RequestHeaderConfig,
    RequestHeaderConfigError,
    ReviewError,
    UserInfo,
    bearer_token,
    forbidden_message,
    front_proxy_rejection,
    request_attributes,
    request_header_config_from_config_map,
    request_header_config_from_file,
    user_from_headers,
)
from adapter.api.kube_client import KubernetesClientError, connect
from adapter.api.server import create_app
from adapter.api.tls import bound_port, make_server_ssl_context, start_server
from adapter.cli import main as cli_main
from adapter.config import AuthConfig, Config, ConfigError, load_config
from adapter.service import running_service, start_auth
from tests.api_support import FakeClock, make_provider, status_body
from tests.auth_support import (
    ADAPTER_TOKEN,
    CONFIG_MAP_PATH,
    FRONT_PROXY_CN,
    HPA_GROUPS,
    HPA_USER,
    PKI,
    SAR_PATH,
    TOKEN_REVIEW_PATH,
    ClientCert,
    FakeKubeAPI,
    FakeReviews,
    client_context,
    config_map_data,
    make_pki,
)

GROUP = "external.metrics.k8s.io"
GV = f"/apis/{GROUP}/v1beta1"
METRIC_PATH = f"{GV}/namespaces/prod/triton_queue_depth"
CACHE_SECONDS = 10.0

HPA_HEADERS = CIMultiDict(
    [
        ("X-Remote-User", HPA_USER),
        *[("X-Remote-Group", group) for group in HPA_GROUPS],
        ("X-Remote-Extra-Authentication.kubernetes.io%2fcredential-id", "JTI=1234"),
    ]
)
SPOOFED_HEADERS = CIMultiDict([("X-Remote-User", "admin"), ("X-Remote-Group", "system:masters")])
TOKEN_USER = UserInfo.create(
    "system:serviceaccount:monitoring:prometheus",
    uid="b0c1",
    groups=["system:serviceaccounts", "system:serviceaccounts:monitoring"],
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def front_proxy_config(
    pki: PKI, allowed: tuple[str, ...] = (FRONT_PROXY_CN,)
) -> RequestHeaderConfig:
    return RequestHeaderConfig(pki.front_proxy_ca_pem, allowed_names=allowed, source="test CA")


@dataclass
class Answer:
    status: int
    body: Any
    content_type: str


@dataclass
class Served:
    """The API app with delegated auth, on 127.0.0.1 over TLS."""

    pki: PKI
    url: str
    reviews: FakeReviews
    cache_clock: FakeClock

    async def get(
        self,
        path: str,
        *,
        cert: ClientCert | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        method: str = "GET",
    ) -> Answer:
        sent = CIMultiDict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        connector = aiohttp.TCPConnector(ssl=client_context(self.pki, cert))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, self.url + path, headers=sent) as response,
        ):
            text = await response.text()
            content_type = response.headers.get("Content-Type", "")
            body = json.loads(text) if content_type.startswith("application/json") else text
            return Answer(response.status, body, content_type)


async def serve_app(app: web.Application, pki: PKI, client_ca_pem: str | None) -> web.AppRunner:
    context = make_server_ssl_context(
        str(pki.serving_cert_file),
        str(pki.serving_key_file),
        hostnames=[],
        client_ca_data=client_ca_pem,
    )
    return await start_server(app, "127.0.0.1:0", context)


async def _echo_identity(request: web.Request) -> web.Response:
    """What a handler sees: the user and any identity header left on the request."""
    leaked = {
        name: value
        for name, value in request.headers.items()
        if name.lower().startswith("x-remote-") or name.lower() == "authorization"
    }
    user = request.get(USER_KEY)
    return web.json_response({"user": user.name if user else None, "headers": leaked})


@pytest.fixture
async def served(pki: PKI) -> AsyncIterator[Served]:
    reviews = FakeReviews(users={"good-token": TOKEN_USER})
    cache_clock = FakeClock(now=1000.0)
    auth = DelegatedAuth(
        reviews, front_proxy_config(pki), cache_seconds=CACHE_SECONDS, clock=cache_clock
    )
    app = create_app(make_provider(FakeClock()), auth=auth)
    app.router.add_get("/echo-identity", _echo_identity)
    runner = await serve_app(app, pki, pki.front_proxy_ca_pem)
    try:
        yield Served(pki, f"https://127.0.0.1:{bound_port(runner)}", reviews, cache_clock)
    finally:
        await runner.cleanup()


UNAUTHORIZED = status_body(401, "Unauthorized", "Unauthorized")


# --- authentication: who the request is from ------------------------------------------------

HPA = (HPA_USER, HPA_GROUPS)
ANONYMOUS_IDENTITY = ("system:anonymous", ("system:unauthenticated",))
TOKEN_IDENTITY = (TOKEN_USER.name, (*TOKEN_USER.groups, "system:authenticated"))


@pytest.mark.parametrize(
    ("cert_name", "headers", "token", "identity"),
    [
        pytest.param("front_proxy", HPA_HEADERS, None, HPA, id="front-proxy-cert-header-user"),
        pytest.param(
            "front_proxy",
            CIMultiDict([("X-Remote-User", "alice")]),
            None,
            ("alice", ("system:authenticated",)),
            id="front-proxy-user-without-groups-is-authenticated",
        ),
        pytest.param("front_proxy", {}, None, ANONYMOUS_IDENTITY, id="front-proxy-no-user-header"),
        pytest.param(None, SPOOFED_HEADERS, None, ANONYMOUS_IDENTITY, id="no-cert-headers-ignored"),
        pytest.param(None, {}, "good-token", TOKEN_IDENTITY, id="bearer-token-reviewed"),
        pytest.param(
            None, SPOOFED_HEADERS, "good-token", TOKEN_IDENTITY, id="token-with-spoofed-headers"
        ),
        pytest.param(
            "front_proxy", HPA_HEADERS, "good-token", HPA, id="front-proxy-wins-over-token"
        ),
        pytest.param(
            "wrong_cn", SPOOFED_HEADERS, "good-token", TOKEN_IDENTITY, id="wrong-cn-but-token"
        ),
        pytest.param(None, {}, None, ANONYMOUS_IDENTITY, id="nothing-anonymous"),
    ],
)
async def test_the_request_is_authorised_as(
    served: Served,
    cert_name: str | None,
    headers: Mapping[str, str],
    token: str | None,
    identity: tuple[str, tuple[str, ...]],
) -> None:
    cert = getattr(served.pki, cert_name) if cert_name else None
    answer = await served.get(METRIC_PATH, cert=cert, headers=headers, token=token)
    assert answer.status == 200, answer.body
    [attributes] = served.reviews.access_calls
    assert (attributes.user.name, attributes.user.groups) == identity


async def test_front_proxy_extra_headers_are_unescaped_and_lowercased(served: Served) -> None:
    await served.get(METRIC_PATH, cert=served.pki.front_proxy, headers=HPA_HEADERS)
    [attributes] = served.reviews.access_calls
    assert attributes.user.extra_dict() == {
        "authentication.kubernetes.io/credential-id": ["JTI=1234"]
    }


async def test_front_proxy_user_is_not_asked_for_a_token_review(served: Served) -> None:
    await served.get(
        METRIC_PATH, cert=served.pki.front_proxy, headers=HPA_HEADERS, token="good-token"
    )
    assert served.reviews.token_calls == []


@pytest.mark.parametrize(
    ("cert_name", "token"),
    [
        pytest.param("wrong_cn", None, id="cn-not-in-allowed-names"),
        pytest.param(None, "bad-token", id="token-rejected-by-token-review"),
        pytest.param("wrong_cn", "bad-token", id="both-fail"),
    ],
)
async def test_a_failed_authenticator_is_401_not_anonymous(
    served: Served, cert_name: str | None, token: str | None
) -> None:
    cert = getattr(served.pki, cert_name) if cert_name else None
    answer = await served.get(METRIC_PATH, cert=cert, headers=SPOOFED_HEADERS, token=token)
    assert (answer.status, answer.body) == (401, UNAUTHORIZED)
    assert served.reviews.access_calls == []


async def test_token_review_failure_is_401(served: Served) -> None:
    served.reviews.token_error = "TokenReview: HTTP 503"
    answer = await served.get(METRIC_PATH, token="good-token")
    assert (answer.status, answer.body) == (401, UNAUTHORIZED)
    assert served.reviews.access_calls == []


@pytest.mark.parametrize("cert_name", ["stranger", "server_auth_only"])
async def test_certificate_the_front_proxy_ca_did_not_issue_for_clients_is_refused(
    served: Served, cert_name: str
) -> None:
    # OpenSSL refuses it in the handshake: an untrusted issuer, or no clientAuth usage
    with pytest.raises(aiohttp.ClientError):
        await served.get(
            "/echo-identity", cert=getattr(served.pki, cert_name), headers=SPOOFED_HEADERS
        )
    assert served.reviews.access_calls == []


async def test_handlers_never_see_identity_headers_or_tokens(served: Served) -> None:
    answer = await served.get(
        "/echo-identity", cert=served.pki.front_proxy, headers=HPA_HEADERS, token="good-token"
    )
    assert answer.body == {"user": HPA_USER, "headers": {}}


# --- unit level: the pieces of authentication ----------------------------------------------


def test_front_proxy_certificate_is_accepted(pki: PKI) -> None:
    peer = PeerCertificate(pki.front_proxy.certificate(), verified=True)
    assert front_proxy_rejection(peer, front_proxy_config(pki)) is None


@pytest.mark.parametrize(
    ("cert_name", "verified", "allowed", "rejection"),
    [
        ("front_proxy", False, (FRONT_PROXY_CN,), "was not verified"),
        ("wrong_cn", True, (FRONT_PROXY_CN,), "cn=not-the-aggregator is not in the allowed list"),
        ("server_auth_only", True, (FRONT_PROXY_CN,), "incompatible key usage"),
        ("front_proxy", True, ("someone-else",), "cn=front-proxy-client is not in the allowed"),
    ],
)
def test_front_proxy_rejection_reasons(
    pki: PKI, cert_name: str, verified: bool, allowed: tuple[str, ...], rejection: str
) -> None:
    cert: ClientCert = getattr(pki, cert_name)
    reason = front_proxy_rejection(
        PeerCertificate(cert.certificate(), verified), front_proxy_config(pki, allowed)
    )
    assert reason is not None and rejection in reason


def test_empty_allowed_names_accept_any_cn_from_the_ca(pki: PKI) -> None:
    peer = PeerCertificate(pki.wrong_cn.certificate(), verified=True)
    assert front_proxy_rejection(peer, front_proxy_config(pki, allowed=())) is None


def test_user_from_headers_follows_requestheader_go(pki: PKI) -> None:
    config = RequestHeaderConfig(
        pki.front_proxy_ca_pem,
        username_headers=("X-Remote-User", "X-Other-User"),
        group_headers=("X-Remote-Group", "X-Other-Group"),
        extra_headers_prefixes=("X-Remote-Extra-", "X-Other-Extra-"),
    )
    headers = CIMultiDict(
        [
            ("X-Remote-User", ""),  # empty: the next username header is used
            ("X-Other-User", "bob"),
            ("x-remote-group", "a"),
            ("X-Remote-Group", ""),  # empty values are dropped
            ("X-Remote-Group", "b"),
            ("X-Other-Group", "c"),
            ("X-Remote-Extra-Scopes", "read"),
            ("x-other-extra-scopes", "write"),
            ("X-Remote-Extra-Weird%zzKey", "kept"),  # malformed escape: key kept as sent
        ]
    )
    assert user_from_headers(headers, config) == UserInfo.create(
        "bob",
        groups=["a", "b", "c"],
        extra={"scopes": ["read", "write"], "weird%zzkey": ["kept"]},
    )
    assert user_from_headers(CIMultiDict([("X-Remote-Group", "a")]), config) is None


@pytest.mark.parametrize(
    ("authorization", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer abc", "abc"),
        ("  Bearer abc  ", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer  abc", None),  # Go splits on single spaces: the token is empty
        ("", None),
    ],
)
def test_bearer_token(authorization: str, token: str | None) -> None:
    assert bearer_token({"Authorization": authorization}) == token


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


# --- the kubernetes-asyncio client against a fake Kubernetes API -----------------------------


@pytest.fixture
async def kube_api(pki: PKI) -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI(config_map_data=config_map_data(pki))
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


HPA_INFO = UserInfo.create(
    HPA_USER,
    uid="7f1c",
    groups=HPA_GROUPS,
    extra={"authentication.kubernetes.io/credential-id": ["JTI=1234"]},
)


async def test_kube_client_posts_the_exact_subject_access_review(
    kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    client = await connect(str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
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
    client = await connect(str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
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
    client = await connect(str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
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
    client = await connect(str(kubeconfig))
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
            None, environ=environ, token_file=str(token_file), ca_file=str(pki.serving_ca_file)
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
        await connect(str(tmp_path / "missing-kubeconfig"), environ={})


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
        create_app(make_provider(FakeClock()), auth=setup.auth), pki, setup.client_ca_pem
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


async def test_running_service_in_delegated_mode_wires_tls_and_auth(
    pki: PKI, kube_api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kube_api.decide = lambda spec: (False, "")
    config = Config.model_validate(
        {
            "listen": "127.0.0.1:0",
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


# --- configuration and flags ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "auth:\n  requestheader_client_ca_file: /ca.crt\n",
            "auth: requestheader_client_ca_file: only used with mode: delegated",
        ),
        (
            "auth:\n  mode: delegated\n  requestheader_allowed_names: [front-proxy-client]\n",
            "auth: requestheader_allowed_names: only used with requestheader_client_ca_file",
        ),
        (
            "auth:\n  mode: delegated\n  always_allow_paths: [healthz]\n",
            "auth.always_allow_paths: 'healthz' must be an absolute path",
        ),
        ("auth:\n  mode: strict\n", "auth.mode: Input should be 'none' or 'delegated'"),
        (
            "auth:\n  mode: delegated\n  requestheader_client_ca_file: /ca.crt\n"
            "  requestheader_username_headers: []\n",
            "auth.requestheader_username_headers: ",
        ),
    ],
)
def test_auth_config_errors_name_the_field(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("listen: 0.0.0.0:6443\n" + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    pattern = re.compile(rf"^{re.escape(str(path))}:\d+: {re.escape(problem)}")
    assert any(pattern.match(p) for p in caught.value.problems), caught.value.problems


def test_auth_config_from_file_with_ca(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "auth:\n  mode: delegated\n  requestheader_client_ca_file: /etc/fp/ca.crt\n"
        "  requestheader_allowed_names: [front-proxy-client, aggregator]\n"
        "  authorization_cache_seconds: 5\n"
    )
    auth = load_config(path).auth
    assert auth.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    assert auth.authorization_cache_seconds == 5
    assert auth.requestheader_username_headers == ("X-Remote-User",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--requestheader-client-ca-file", "/ca.crt"],
            "requestheader_client_ca_file: only used with mode: delegated",
        ),
        (
            ["--auth-mode", "delegated", "--requestheader-allowed-names", "a,b"],
            "requestheader_allowed_names: only used with requestheader_client_ca_file",
        ),
    ],
)
def test_serve_flags_reach_the_auth_config(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["serve", "--target", "http://127.0.0.1:8002/metrics", *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_flags_build_the_auth_overrides() -> None:
    from adapter.cli import _overrides

    parser_args = _parse_serve(
        [
            "--auth-mode",
            "delegated",
            "--requestheader-client-ca-file",
            "/fp/ca.crt",
            "--requestheader-allowed-names",
            "front-proxy-client, aggregator",
            "--kubeconfig",
            "/kube/config",
        ]
    )
    auth = load_config(None, _overrides(parser_args)).auth
    assert (auth.mode, auth.requestheader_client_ca_file, auth.kubeconfig) == (
        "delegated",
        "/fp/ca.crt",
        "/kube/config",
    )
    assert auth.requestheader_allowed_names == ("front-proxy-client", "aggregator")
    empty = load_config(
        None,
        _overrides(
            _parse_serve(
                [
                    "--auth-mode",
                    "delegated",
                    "--requestheader-client-ca-file",
                    "/fp/ca.crt",
                    "--requestheader-allowed-names",
                    "",
                ]
            )
        ),
    ).auth
    assert empty.requestheader_allowed_names == ()


def _parse_serve(argv: list[str]) -> Any:
    import argparse

    from adapter.cli import _serve_parser

    parser = argparse.ArgumentParser()
    _serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_ssl_context_requests_but_does_not_require_client_certificates(pki: PKI) -> None:
    context = make_server_ssl_context(
        str(pki.serving_cert_file),
        str(pki.serving_key_file),
        hostnames=[],
        client_ca_data=pki.front_proxy_ca_pem,
    )
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert len(context.get_ca_certs()) == 1  # only the front-proxy CA is trusted


def test_serve_reports_an_unusable_kubernetes_config_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("adapter.logging_setup.configure_logging", lambda level, fmt: None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    argv = ["serve", "--target", "http://127.0.0.1:8002/metrics", "--listen", "127.0.0.1:0"]
    argv += ["--auth-mode", "delegated", "--kubeconfig", str(tmp_path / "absent")]
    assert cli_main(argv) == 2
    error = capsys.readouterr().err
    assert "cannot configure the Kubernetes client" in error and "absent" in error
