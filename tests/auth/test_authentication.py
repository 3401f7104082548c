"""Delegated authentication (external-metrics-api-and-hpa.md §2.2-§2.3, §5 item 2) over real
TLS with real client certificates: front proxy, TokenReview, anonymous."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import aiohttp
import pytest
from multidict import CIMultiDict

from adapter.api.auth import (
    PeerCertificate,
    bearer_token,
    front_proxy_rejection,
    user_from_headers,
)
from adapter.api.tls import make_server_ssl_context
from adapter.kube.reviews import (
    RequestHeaderConfig,
    UserInfo,
)
from tests.support.auth_support import (
    FRONT_PROXY_CN,
    HPA_GROUPS,
    HPA_HEADERS,
    HPA_USER,
    METRIC_PATH,
    PKI,
    SPOOFED_HEADERS,
    TOKEN_USER,
    UNAUTHORIZED,
    ClientCert,
    Served,
    front_proxy_config,
)

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


def test_ssl_context_requests_but_does_not_require_client_certificates(pki: PKI) -> None:
    context = make_server_ssl_context(
        str(pki.serving_cert_file),
        str(pki.serving_key_file),
        hostnames=[],
        client_ca_data=pki.front_proxy_ca_pem,
    )
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert len(context.get_ca_certs()) == 1  # only the front-proxy CA is trusted
