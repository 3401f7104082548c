"""Delegated authentication and authorisation, as Kubernetes aggregated API servers do it.

Reference: external-metrics-api-and-hpa.md §2.2-§2.5 (the Go ``DelegatingAuthenticationOptions``
and ``DelegatingAuthorizationOptions`` with their defaults). Per request:

1. **Authenticate**, first success wins (``authenticatorfactory/delegating.go``):

   - *front proxy*: the peer presented a client certificate that the TLS handshake verified,
     that the *current* request-header CA issued, whose extended key usage allows client
     authentication and whose CN is an allowed name (none listed = any CN). Only then are
     ``X-Remote-User`` / ``X-Remote-Group`` (repeated) / ``X-Remote-Extra-<%-escaped key>``
     believed;
   - *client certificate* (``auth.client_ca_file``, Go's ``--client-ca-file``): a verified
     certificate that CA issued, with client-auth usage: user = its CN, groups = its O values;
   - *bearer token*: ``Authorization: Bearer <token>`` checked with a TokenReview, cached;
   - otherwise *anonymous*: ``system:anonymous`` in ``system:unauthenticated``.

   As in Go, an authenticator that *fails* (a certificate with a CN that is not allowed, a
   token the API server rejects) makes the request 401 unless another one succeeds; it never
   silently turns into anonymous.

2. **Authorise**: non-resource paths matching ``always_allow_paths`` (health) and users in
   ``system:masters`` (the aggregator's availability probe) pass without a check; everything
   else is a SubjectAccessReview with the attributes Go's ``RequestInfoFactory`` derives from
   the path (a metric GET is verb ``list`` on resource ``<metric>``). Allowed and denied
   decisions are cached for ``cache_seconds``; a failed review is a 500, never an allow.

Which CA issued a certificate is checked on every request, as Go's x509 authenticators do:
the handshake verified it against every CA the serving context trusted when the connection
opened, and a keep-alive connection outlives CA rotations (:class:`CertificateAuthority`).
The CAs and front-proxy settings can be replaced while serving (:meth:`DelegatedAuth.update`).

The Kubernetes calls sit behind :class:`ReviewClient` (the kubernetes-asyncio implementation
is :mod:`adapter.kube.reviews`); handlers never see identity headers or tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from multidict import CIMultiDict, MultiMapping

from adapter.api import status
from adapter.api.tls import ClientTrust, client_trust_of
from adapter.kube.reviews import (
    ANONYMOUS,
    AUTHENTICATED_GROUP,
    MASTERS_GROUP,
    UNAUTHENTICATED_GROUP,
    AccessDecision,
    RequestAttributes,
    RequestHeaderConfig,
    ReviewClient,
    ReviewError,
    TokenReviewResult,
    UserInfo,
    request_attributes,
)
from adapter.logging_setup import LogLimiter

__all__ = [
    "USER_KEY",
    "AuthenticationError",
    "CertificateAuthority",
    "DelegatedAuth",
    "PeerCertificate",
    "bearer_token",
    "client_certificate_user",
    "forbidden_message",
    "front_proxy_rejection",
    "user_from_headers",
]

log = logging.getLogger(__name__)

_CACHE_MAX_ENTRIES = 4096

USER_KEY = web.RequestKey[UserInfo]("user")
"""The authenticated user, on the request the handlers receive (delegated mode only)."""


def _with_authenticated_group(user: UserInfo) -> UserInfo:
    """Go's ``AuthenticatedGroupAdder``: every authenticated user is in system:authenticated."""
    if AUTHENTICATED_GROUP in user.groups or UNAUTHENTICATED_GROUP in user.groups:
        return user
    return UserInfo(user.name, user.uid, (*user.groups, AUTHENTICATED_GROUP), user.extra)


# --- front-proxy (request-header) authentication -------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The client certificate of a TLS connection.

    ``verified`` is True when the handshake verified it (Python's ``getpeercert()`` returns
    an empty dict for an unverified certificate). With ``CERT_OPTIONAL`` OpenSSL refuses a
    certificate that does not verify, so in practice a presented certificate is verified.
    ``trust``: the CAs the handshake verified against (None: not known).
    """

    certificate: x509.Certificate
    verified: bool
    trust: ClientTrust | None = None

    @classmethod
    def of_request(cls, request: web.BaseRequest) -> PeerCertificate | None:
        transport = request.transport
        if transport is None:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            return None
        verified = bool(ssl_object.getpeercert())
        trust = client_trust_of(ssl_object.context)
        return cls(x509.load_der_x509_certificate(der), verified, trust)


_ISSUED_CACHE_ENTRIES = 1024


class CertificateAuthority:
    """One purpose's CA bundle (PEM) and the answer to "did it issue this certificate?".

    A handshake verified against exactly this bundle and nothing else settles it (and keeps
    chains with intermediates working). Otherwise (the connection opened before a rotation,
    or the serving context trusts the front-proxy and the client CA together) the leaf must be
    directly issued by one of the bundle's certificates (signature checked) and be within its
    validity period now. Answers are cached per certificate and time-checked per request.
    """

    def __init__(
        self,
        pem: str,
        purpose: Literal["front_proxy_ca", "client_ca"],
        source: str,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.pem = pem
        self.source = source
        self._purpose = purpose
        self._certificates = tuple(x509.load_pem_x509_certificates(pem.encode()))
        self._wall_clock = wall_clock
        self._issued: OrderedDict[bytes, bool] = OrderedDict()

    def _settled_by_handshake(self, trust: ClientTrust | None) -> bool:
        if trust is None:
            return False
        if self._purpose == "front_proxy_ca":
            return trust.front_proxy_ca == self.pem and trust.client_ca is None
        return trust.client_ca == self.pem and trust.front_proxy_ca is None

    def _directly_issued(self, certificate: x509.Certificate) -> bool:
        key = certificate.fingerprint(hashes.SHA256())
        known = self._issued.get(key)
        if known is None:
            known = False
            for ca in self._certificates:
                try:
                    certificate.verify_directly_issued_by(ca)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                known = True
                break
            self._issued[key] = known
            while len(self._issued) > _ISSUED_CACHE_ENTRIES:
                self._issued.popitem(last=False)
        return known

    def rejection(self, peer: PeerCertificate) -> str | None:
        """Why this CA does not vouch for ``peer``'s certificate now; None when it does."""
        if not peer.verified:
            return f"x509: client certificate was not verified against {self.source}"
        if self._settled_by_handshake(peer.trust):
            return None
        certificate = peer.certificate
        if not self._directly_issued(certificate):
            return f"x509: certificate signed by unknown authority (not issued by {self.source})"
        now = self._wall_clock()
        if not (
            certificate.not_valid_before_utc.timestamp()
            <= now
            <= certificate.not_valid_after_utc.timestamp()
        ):
            return "x509: certificate has expired or is not yet valid"
        return None


def _common_name(certificate: x509.Certificate) -> str:
    """Go's ``Subject.CommonName``: the last CN attribute, or empty."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[-1].value if names else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def _allows_client_auth(certificate: x509.Certificate) -> bool:
    """Go's ``Verify(KeyUsages: [ClientAuth])`` on the leaf: no EKU extension means any use."""
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return (
        ExtendedKeyUsageOID.CLIENT_AUTH in usages
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    )


def front_proxy_rejection(
    peer: PeerCertificate,
    config: RequestHeaderConfig,
    authority: CertificateAuthority | None = None,
) -> str | None:
    """Why ``peer`` may not assert X-Remote-* identities; None when it may (``x509.go``).

    ``authority`` is ``config``'s CA (made from it when not given)."""
    if authority is None:
        authority = CertificateAuthority(config.client_ca_pem, "front_proxy_ca", config.source)
    if not peer.verified:
        return f"x509: client certificate was not verified against {config.source}"
    if not _allows_client_auth(peer.certificate):
        return "x509: certificate specifies an incompatible key usage (needs clientAuth)"
    issuer_rejection = authority.rejection(peer)
    if issuer_rejection is not None:
        return issuer_rejection
    common_name = _common_name(peer.certificate)
    if config.allowed_names and common_name not in config.allowed_names:
        return f"x509: subject with cn={common_name} is not in the allowed list"
    return None


def client_certificate_user(
    peer: PeerCertificate, authority: CertificateAuthority
) -> tuple[UserInfo | None, str | None]:
    """Go's x509 authenticator with ``CommonNameUserConversion``: (user, None) when
    ``authority`` issued the certificate (user = CN, groups = O values), else (None, why)."""
    if not _allows_client_auth(peer.certificate):
        return None, "x509: certificate specifies an incompatible key usage (needs clientAuth)"
    rejection = authority.rejection(peer)
    if rejection is not None:
        return None, rejection
    common_name = _common_name(peer.certificate)
    if not common_name:
        return None, None  # Go abstains: no user name, not an error
    organizations = [
        value if isinstance(value, str) else value.decode(errors="replace")
        for value in (
            attribute.value
            for attribute in peer.certificate.subject.get_attributes_for_oid(
                NameOID.ORGANIZATION_NAME
            )
        )
    ]
    return UserInfo.create(common_name, groups=organizations), None


def _first_value(headers: MultiMapping[str], names: Sequence[str]) -> str:
    for name in names:
        name = name.strip()
        if name and (value := headers.get(name, "")):
            return value
    return ""


def _all_values(headers: MultiMapping[str], names: Sequence[str]) -> list[str]:
    values: list[str] = []
    for name in names:
        values += [value for value in headers.getall(name, []) if value]
    return values


def _extra(headers: MultiMapping[str], prefixes: Sequence[str]) -> dict[str, list[str]]:
    """``X-Remote-Extra-<key>``: key lower-cased then %-unescaped; values accumulate."""
    extra: dict[str, list[str]] = {}
    for prefix in prefixes:
        lowered_prefix = prefix.lower()
        for header, value in headers.items():
            if header.lower().startswith(lowered_prefix):
                key = unquote(header[len(prefix) :].lower())
                extra.setdefault(key, []).append(value)
    return extra


def user_from_headers(headers: MultiMapping[str], config: RequestHeaderConfig) -> UserInfo | None:
    """The identity the front proxy asserts (``requestheader.go``); None without a username.

    Only call this once :func:`front_proxy_rejection` returned None for the peer.
    """
    name = _first_value(headers, config.username_headers)
    if not name:
        return None
    return UserInfo.create(
        name,
        groups=_all_values(headers, config.group_headers),
        extra=_extra(headers, config.extra_headers_prefixes),
    )


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (``bearertoken.go``), else None."""
    parts = headers.get("Authorization", "").strip().split(" ")
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


class AuthenticationError(Exception):
    """Every authenticator that had an opinion rejected the request (401)."""


# --- caches ---------------------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _TTLCache(Generic[K, V]):
    """Entries expire ``ttl_seconds`` after they are put (by ``clock``); bounded in size."""

    def __init__(
        self, ttl_seconds: float, clock: Callable[[], float], max_entries: int = _CACHE_MAX_ENTRIES
    ) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self._ttl <= 0:
            return
        now = self._clock()
        self._entries.pop(key, None)
        self._entries[key] = (now + self._ttl, value)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)  # the oldest put

    def __len__(self) -> int:
        return len(self._entries)


# --- the middleware -------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _path_allowed(path: str, patterns: Sequence[str]) -> bool:
    """Go's path authorizer: exact match, or prefix match for patterns ending in ``*``."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern:
            return True
    return False


def forbidden_message(attributes: RequestAttributes, reason: str = "") -> str:
    """The 403 message of the Go apiserver (``responsewriters.Forbidden`` + ``NewForbidden``).

    E.g. ``triton_queue_depth.external.metrics.k8s.io is forbidden: User "x" cannot list
    resource "triton_queue_depth" in API group "external.metrics.k8s.io" in the namespace
    "prod"``.
    """
    user = json.dumps(attributes.user.name)
    if not attributes.is_resource_request:
        detail = f"User {user} cannot {attributes.verb} path {json.dumps(attributes.path)}"
    else:
        resource = attributes.resource
        if attributes.subresource:
            resource = f"{resource}/{attributes.subresource}"
        detail = (
            f"User {user} cannot {attributes.verb} resource {json.dumps(resource)} "
            f"in API group {json.dumps(attributes.api_group)}"
        )
        if attributes.namespace:
            detail += f" in the namespace {json.dumps(attributes.namespace)}"
        else:
            detail += " at the cluster scope"
    if reason:
        detail = f"{detail}: {reason}"
    qualified = attributes.resource
    if attributes.api_group and qualified:
        qualified = f"{attributes.resource}.{attributes.api_group}"
    if not attributes.is_resource_request or not qualified:
        return f"forbidden: {detail}"
    if attributes.name:
        return f"{qualified} {json.dumps(attributes.name)} is forbidden: {detail}"
    return f"{qualified} is forbidden: {detail}"


def _forbidden(attributes: RequestAttributes, reason: str) -> web.Response:
    details: status.StatusDetails = {}
    if attributes.is_resource_request:
        if attributes.api_group:
            details["group"] = attributes.api_group
        if attributes.resource:
            details["kind"] = attributes.resource
        if attributes.name:
            details["name"] = attributes.name
    return status.forbidden(forbidden_message(attributes, reason), details=details or None)


class DelegatedAuth:
    """Authentication and authorisation delegated to the Kubernetes API, as an aiohttp
    middleware (:meth:`middleware`).

    ``request_header`` None disables front-proxy authentication; ``client_ca`` (PEM, Go's
    ``--client-ca-file``) enables client-certificate users. ``clock`` (monotonic seconds)
    drives the caches; tests pass a fake one.
    """

    def __init__(
        self,
        reviews: ReviewClient,
        request_header: RequestHeaderConfig | None,
        *,
        cache_seconds: float,
        always_allow_paths: Sequence[str],
        always_allow_groups: Sequence[str] = (MASTERS_GROUP,),
        client_ca: CertificateAuthority | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviews = reviews
        self._request_header: RequestHeaderConfig | None = None
        self._front_proxy_authority: CertificateAuthority | None = None
        self._identity_headers: tuple[str, ...] = ()
        self._identity_prefixes: tuple[str, ...] = ()
        self.update(request_header=request_header, client_ca=client_ca)
        self._always_allow_paths = tuple(always_allow_paths)
        self._always_allow_groups = frozenset(always_allow_groups)
        self._decisions: _TTLCache[RequestAttributes, AccessDecision] = _TTLCache(
            cache_seconds, clock
        )
        self._tokens: _TTLCache[bytes, TokenReviewResult] = _TTLCache(cache_seconds, clock)
        # anyone can send a bad token: these lines have a budget (LogLimiter)
        self._unauthorized_log = LogLimiter()
        self._review_failed_log = LogLimiter()
        # tokens are cached under a keyed hash, so the cache never holds a usable token
        self._token_key = secrets.token_bytes(32)

    @property
    def request_header(self) -> RequestHeaderConfig | None:
        return self._request_header

    @property
    def client_ca(self) -> CertificateAuthority | None:
        return self._client_authority

    def update(
        self,
        *,
        request_header: RequestHeaderConfig | None,
        client_ca: CertificateAuthority | None,
    ) -> None:
        """Authenticate with these front-proxy settings and client CA from now on (both are
        replaced: pass the current value to keep one). Open connections are judged by them
        at their next request."""
        authority = None
        if request_header is not None:
            authority = CertificateAuthority(
                request_header.client_ca_pem, "front_proxy_ca", request_header.source
            )
        header_names = ["Authorization"]
        if request_header is not None:
            header_names += request_header.identity_header_names()
        self._request_header = request_header
        self._front_proxy_authority = authority
        self._client_authority = client_ca
        self._identity_headers = tuple(name.lower() for name in header_names)
        self._identity_prefixes = tuple(
            prefix.lower()
            for prefix in (request_header.extra_headers_prefixes if request_header else ())
        )

    # -- authentication --

    async def authenticate(
        self, peer: PeerCertificate | None, headers: MultiMapping[str]
    ) -> UserInfo:
        """The request's user; raises AuthenticationError when it must be refused (401)."""
        failures: list[str] = []
        request_header = self._request_header
        if request_header is not None and peer is not None:
            rejection = front_proxy_rejection(peer, request_header, self._front_proxy_authority)
            if rejection is not None:
                failures.append(rejection)
            elif (user := user_from_headers(headers, request_header)) is not None:
                return _with_authenticated_group(user)
        if self._client_authority is not None and peer is not None:
            certificate_user, rejection = client_certificate_user(peer, self._client_authority)
            if certificate_user is not None:
                return _with_authenticated_group(certificate_user)
            if rejection is not None:
                failures.append(rejection)
        token = bearer_token(headers)
        if token is not None:
            try:
                result = await self._review_token(token)
            except ReviewError as exc:
                failures.append(f"TokenReview failed: {exc}")
            else:
                if result.user is not None:
                    return _with_authenticated_group(result.user)
                failures.append(f"invalid bearer token: {result.error or 'not authenticated'}")
        if failures:
            raise AuthenticationError("; ".join(failures))
        return ANONYMOUS

    async def _review_token(self, token: str) -> TokenReviewResult:
        key = hmac.new(self._token_key, token.encode(), hashlib.sha256).digest()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached
        result = await self._reviews.review_token(token)
        self._tokens.put(key, result)
        return result

    # -- authorisation --

    async def authorize(self, attributes: RequestAttributes) -> AccessDecision:
        """Allow or deny; raises ReviewError when the SubjectAccessReview fails."""
        if not attributes.is_resource_request and _path_allowed(
            attributes.path, self._always_allow_paths
        ):
            return AccessDecision(True, "always allowed path")
        if self._always_allow_groups.intersection(attributes.user.groups):
            return AccessDecision(True, "always allowed group")
        cached = self._decisions.get(attributes)
        if cached is not None:
            return cached
        decision = await self._reviews.review_access(attributes)
        self._decisions.put(attributes, decision)
        return decision

    # -- the middleware --

    def _without_identity_headers(self, request: web.Request) -> web.Request:
        """The request minus credentials and X-Remote-* headers (handlers never need them)."""

        def is_identity(name: str) -> bool:
            lowered = name.lower()
            return lowered in self._identity_headers or lowered.startswith(self._identity_prefixes)

        if not any(is_identity(name) for name in request.headers):
            return request
        kept = CIMultiDict(
            (name, value) for name, value in request.headers.items() if not is_identity(name)
        )
        return request.clone(headers=kept)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            user = await self.authenticate(PeerCertificate.of_request(request), request.headers)
        except AuthenticationError as exc:
            if (suppressed := self._unauthorized_log.allow()) is not None:
                log.info(
                    "unauthorized method=%s path=%s reason=%s suppressed=%d",
                    request.method,
                    request.path[:200],
                    exc,
                    suppressed,
                )
            return status.unauthorized()
        attributes = request_attributes(user, request.method, request.path, request.query)
        try:
            decision = await self.authorize(attributes)
        except ReviewError as exc:
            if (suppressed := self._review_failed_log.allow()) is not None:
                log.warning(
                    "authorization failed method=%s path=%s user=%s error=%s suppressed=%d",
                    request.method,
                    request.path[:200],
                    user.name,
                    exc,
                    suppressed,
                )
            return status.internal_error(
                f"authorizing {request.method} {request.path} for user {user.name!r}: "
                f"SubjectAccessReview failed: {exc}"
            )
        if not decision.allowed:
            log.debug(
                "forbidden method=%s path=%s user=%s reason=%s",
                request.method,
                request.path,
                user.name,
                decision.reason,
            )
            return _forbidden(attributes, decision.reason)
        cleaned = self._without_identity_headers(request)
        cleaned[USER_KEY] = user
        return await handler(cleaned)
