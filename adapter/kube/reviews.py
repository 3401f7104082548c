"""Delegated authentication and authorisation in Kubernetes' own vocabulary.

Who a caller is (:class:`UserInfo`), what the front proxy asserts and how it is configured
(:class:`RequestHeaderConfig`, from a CA file or the ConfigMap
``kube-system/extension-apiserver-authentication``), what a request asks for
(:class:`RequestAttributes`, Go's ``RequestInfoFactory``), and the TokenReview /
SubjectAccessReview calls that decide (:class:`ReviewClient`, implemented over
kubernetes-asyncio by :class:`KubernetesReviewClient`). No HTTP serving here: the aiohttp
middleware that uses all this is :mod:`adapter.api.auth`.

Reference: external-metrics-api-and-hpa.md §2.2-§2.5. Every failure of a call is a
:class:`ReviewError` whose message names the call and the HTTP status or transport error;
tokens never appear in messages or logs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from cryptography import x509
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.incluster_config import SERVICE_CERT_FILENAME, SERVICE_TOKEN_FILENAME

from adapter.kube.client import api_client, api_exception_message, server_for_logs

ANONYMOUS_USER = "system:anonymous"
UNAUTHENTICATED_GROUP = "system:unauthenticated"
AUTHENTICATED_GROUP = "system:authenticated"
MASTERS_GROUP = "system:masters"

GO_DEFAULT_USERNAME_HEADERS = ("X-Remote-User",)
GO_DEFAULT_GROUP_HEADERS = ("X-Remote-Group",)
GO_DEFAULT_EXTRA_HEADERS_PREFIXES = ("X-Remote-Extra-",)
"""The kube-apiserver's conventional front-proxy headers: ``auth.requestheader_*`` defaults."""

CONFIG_MAP = "kube-system/extension-apiserver-authentication"


# --- identities ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who made a request. Hashable (``extra`` is sorted pairs) so it can key caches."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def create(
        cls,
        name: str,
        *,
        uid: str = "",
        groups: Iterable[str] = (),
        extra: Mapping[str, Iterable[str]] | None = None,
    ) -> UserInfo:
        pairs = tuple(sorted((key, tuple(values)) for key, values in (extra or {}).items()))
        return cls(name, uid, tuple(groups), pairs)

    def extra_dict(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in self.extra}


ANONYMOUS = UserInfo(ANONYMOUS_USER, groups=(UNAUTHENTICATED_GROUP,))


# --- front-proxy (request-header) settings -------------------------------------------------


class RequestHeaderConfigError(ValueError):
    """The request-header settings (file or ConfigMap) are unusable; the message says why."""


@dataclass(frozen=True, slots=True)
class RequestHeaderConfig:
    """What the front proxy (kube-aggregator) authenticates with and which headers it sets.

    ``client_ca_pem`` must be exactly what the serving TLS context trusts for client
    certificates: a certificate the handshake verified is then one this CA issued.
    """

    client_ca_pem: str
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = GO_DEFAULT_USERNAME_HEADERS
    group_headers: tuple[str, ...] = GO_DEFAULT_GROUP_HEADERS
    extra_headers_prefixes: tuple[str, ...] = GO_DEFAULT_EXTRA_HEADERS_PREFIXES
    source: str = "configuration"

    def identity_header_names(self) -> tuple[str, ...]:
        return (*self.username_headers, *self.group_headers)


class CAFileError(ValueError):
    """A CA file cannot be used; the message names the setting and the path."""


def _check_ca_pem(
    pem: str, source: str, error: type[ValueError] = RequestHeaderConfigError
) -> None:
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise error(f"{source}: not a PEM bundle of CA certificates ({exc})") from None
    if not certificates:
        raise error(f"{source}: holds no certificate")


def ca_bundle(content: bytes, source: str) -> str:
    """``content`` as PEM text holding CA certificates; CAFileError naming ``source`` (the
    setting and path) otherwise."""
    try:
        pem = content.decode("utf-8")
    except UnicodeDecodeError:
        raise CAFileError(f"{source}: not a PEM (text) file") from None
    _check_ca_pem(pem, source, CAFileError)
    return pem


def request_header_config_from_file(
    ca_file: str,
    *,
    allowed_names: Sequence[str] = (),
    username_headers: Sequence[str] = GO_DEFAULT_USERNAME_HEADERS,
    group_headers: Sequence[str] = GO_DEFAULT_GROUP_HEADERS,
    extra_headers_prefixes: Sequence[str] = GO_DEFAULT_EXTRA_HEADERS_PREFIXES,
    setting: str = "auth.requestheader_client_ca_file",
) -> RequestHeaderConfig:
    """Read the front-proxy CA from ``ca_file``; errors name ``setting`` and the path."""
    source = f"{setting} {ca_file!r}"
    try:
        with open(ca_file, encoding="utf-8") as handle:
            pem = handle.read()
    except OSError as exc:
        raise RequestHeaderConfigError(f"{source}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RequestHeaderConfigError(f"{source}: not a PEM (text) file") from None
    return request_header_config_from_pem(
        pem,
        source=source,
        allowed_names=allowed_names,
        username_headers=username_headers,
        group_headers=group_headers,
        extra_headers_prefixes=extra_headers_prefixes,
    )


def request_header_config_from_pem(
    pem: str,
    *,
    source: str,
    allowed_names: Sequence[str] = (),
    username_headers: Sequence[str] = GO_DEFAULT_USERNAME_HEADERS,
    group_headers: Sequence[str] = GO_DEFAULT_GROUP_HEADERS,
    extra_headers_prefixes: Sequence[str] = GO_DEFAULT_EXTRA_HEADERS_PREFIXES,
) -> RequestHeaderConfig:
    """The front-proxy settings with ``pem`` as CA; RequestHeaderConfigError naming
    ``source`` when it holds no CA certificate."""
    _check_ca_pem(pem, source)
    return RequestHeaderConfig(
        client_ca_pem=pem,
        allowed_names=tuple(allowed_names),
        username_headers=tuple(username_headers),
        group_headers=tuple(group_headers),
        extra_headers_prefixes=tuple(extra_headers_prefixes),
        source=source,
    )


def _json_strings(data: Mapping[str, str], key: str) -> tuple[str, ...]:
    """Go's ``deserializeStrings``: a JSON array of strings; empty or absent means none."""
    text = data.get(key, "")
    if not text:
        return ()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestHeaderConfigError(
            f"ConfigMap {CONFIG_MAP}: {key} is not JSON ({exc.msg}): {text!r}"
        ) from None
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RequestHeaderConfigError(
            f"ConfigMap {CONFIG_MAP}: {key} must be a JSON array of strings, got {text!r}"
        )
    return tuple(value)


def request_header_config_from_config_map(data: Mapping[str, str]) -> RequestHeaderConfig:
    """Parse the ``data`` of ``kube-system/extension-apiserver-authentication`` (§2.3)."""
    pem = data.get("requestheader-client-ca-file", "")
    if not pem.strip():
        raise RequestHeaderConfigError(
            f"ConfigMap {CONFIG_MAP} has no requestheader-client-ca-file: the kube-apiserver "
            "runs without --requestheader-client-ca-file, so the aggregator cannot "
            "authenticate to this adapter; set auth.requestheader_client_ca_file or run "
            "with auth.mode: none"
        )
    _check_ca_pem(pem, f"ConfigMap {CONFIG_MAP} key requestheader-client-ca-file")
    username_headers = _json_strings(data, "requestheader-username-headers")
    if not username_headers:
        raise RequestHeaderConfigError(
            f"ConfigMap {CONFIG_MAP} lists no requestheader-username-headers; front-proxy "
            "users could never be recognised (the kube-apiserver needs "
            "--requestheader-username-headers=X-Remote-User)"
        )
    return RequestHeaderConfig(
        client_ca_pem=pem,
        allowed_names=_json_strings(data, "requestheader-allowed-names"),
        username_headers=username_headers,
        group_headers=_json_strings(data, "requestheader-group-headers"),
        extra_headers_prefixes=_json_strings(data, "requestheader-extra-headers-prefix"),
        source=f"ConfigMap {CONFIG_MAP}",
    )


# --- request attributes (Go's RequestInfoFactory) -------------------------------------------

_API_PREFIXES = frozenset({"api", "apis"})
_GROUPLESS_API_PREFIXES = frozenset({"api"})
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_RESOURCE_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What is authorised: ``authorizer.Attributes`` of the Go apiserver."""

    user: UserInfo
    verb: str
    path: str
    is_resource_request: bool = False
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def request_attributes(
    user: UserInfo, method: str, path: str, query: Mapping[str, str]
) -> RequestAttributes:
    """``RequestInfoFactory.NewRequestInfo`` for our paths.

    ``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/prod/triton_queue_depth`` is a
    resource request: group ``external.metrics.k8s.io``, version ``v1beta1``, namespace
    ``prod``, resource ``triton_queue_depth`` and, having no name, verb ``list``. Shorter
    paths (``/apis``, ``/apis/<group>/<version>``, ``/openapi/v2``) are non-resource
    requests whose verb is the lower-cased method.
    """
    non_resource = RequestAttributes(user, method.lower(), path)
    parts = path.strip("/").split("/") if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix not in _GROUPLESS_API_PREFIXES:
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:  # Go answers an error; authorise it as the path it is
            return non_resource
        verb, parts = parts[0], parts[1:]
    else:
        verb = _RESOURCE_VERBS.get(method.upper(), "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0] if parts else ""
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES else ""
    if not name and verb == "get":
        watch = query.get("watch")
        verb = "list" if watch is None or watch.lower() in ("false", "0") else "watch"
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestAttributes(
        user,
        verb,
        path,
        is_resource_request=True,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )


# --- wire bodies ----------------------------------------------------------------------------


def subject_access_review(attributes: RequestAttributes) -> dict[str, Any]:
    """The SubjectAccessReview the Go webhook authorizer posts (empty fields omitted)."""
    user = attributes.user
    spec: dict[str, Any] = {"user": user.name}
    if user.uid:
        spec["uid"] = user.uid
    if user.groups:
        spec["groups"] = list(user.groups)
    if user.extra:
        spec["extra"] = user.extra_dict()
    if attributes.is_resource_request:
        resource_fields = {
            "namespace": attributes.namespace,
            "verb": attributes.verb,
            "group": attributes.api_group,
            "version": attributes.api_version,
            "resource": attributes.resource,
            "subresource": attributes.subresource,
            "name": attributes.name,
        }
        spec["resourceAttributes"] = {k: v for k, v in resource_fields.items() if v}
    else:
        spec["nonResourceAttributes"] = {"path": attributes.path, "verb": attributes.verb}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def token_review(token: str, audiences: Sequence[str] = ()) -> dict[str, Any]:
    """The TokenReview body for ``token``: for ``audiences`` (none: the API server's own)."""
    spec: dict[str, Any] = {"token": token}
    if audiences:
        spec["audiences"] = list(audiences)
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}


def audience_problem(wanted: Sequence[str], answered: Sequence[str] | None) -> str | None:
    """Why an authenticated TokenReview answer does not hold for ``wanted`` audiences, as Go's
    webhook token authenticator checks it: the answer's ``status.audiences`` must include one
    of them (an API server that checked them says which matched). None: it holds."""
    if not wanted or set(answered or ()) & set(wanted):
        return None
    return (
        f"token audiences {sorted(answered or ())} are not any of {list(wanted)} "
        "(auth.token_audiences)"
    )


# --- the Kubernetes calls -------------------------------------------------------------------


class ReviewError(Exception):
    """The Kubernetes API did not answer a review; the message says what failed (no secrets)."""


@dataclass(frozen=True, slots=True)
class TokenReviewResult:
    """``status`` of a TokenReview: the user when authenticated, else the error (if any)."""

    user: UserInfo | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class AccessDecision:
    allowed: bool
    reason: str = ""


class ReviewClient(Protocol):
    """TokenReview and SubjectAccessReview against the Kubernetes API."""

    async def review_token(self, token: str) -> TokenReviewResult:
        """Raises ReviewError when the API cannot be asked or does not answer."""
        ...

    async def review_access(self, attributes: RequestAttributes) -> AccessDecision:
        """Raises ReviewError when the API cannot be asked or does not answer."""
        ...


T = TypeVar("T")


class KubernetesReviewClient:
    """TokenReview and the authentication ConfigMap over one ApiClient, SubjectAccessReview
    over ``authorization_client`` (the same one when not given), as the Go servers'
    ``--authentication-kubeconfig`` and ``--authorization-kubeconfig``."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        timeout_seconds: float,
        authorization_client: k8s_client.ApiClient | None = None,
        token_audiences: Sequence[str] = (),
    ) -> None:
        self._api_client = api_client
        self._token_audiences = tuple(token_audiences)
        self._authorization_client = authorization_client
        self._timeout = timeout_seconds
        self._authentication: Any = k8s_client.AuthenticationV1Api(api_client)
        self._authorization: Any = k8s_client.AuthorizationV1Api(authorization_client or api_client)
        self._core: Any = k8s_client.CoreV1Api(api_client)

    @property
    def host(self) -> str:
        return server_for_logs(self._api_client)

    @property
    def authorization_host(self) -> str:
        client = self._authorization_client or self._api_client
        return str(client.configuration.host)

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except ApiException as exc:
            raise ReviewError(f"{what}: {api_exception_message(exc)}") from None
        except TimeoutError:
            raise ReviewError(f"{what}: no answer within {self._timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ReviewError(f"{what}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # the model rejected the answer (e.g. no status.allowed)
            raise ReviewError(f"{what}: malformed answer: {exc}") from None

    async def review_token(self, token: str) -> TokenReviewResult:
        review = await self._call(
            "TokenReview",
            self._authentication.create_token_review(
                token_review(token, self._token_audiences), _request_timeout=self._timeout
            ),
        )
        result = review.status
        if result is None:
            raise ReviewError("TokenReview: the answer has no status")
        if not result.authenticated or result.user is None or not result.user.username:
            return TokenReviewResult(None, str(result.error or ""))
        problem = audience_problem(self._token_audiences, result.audiences)
        if problem is not None:
            return TokenReviewResult(None, problem)
        user = result.user
        return TokenReviewResult(
            UserInfo.create(
                str(user.username),
                uid=str(user.uid or ""),
                groups=[str(group) for group in user.groups or ()],
                extra={
                    str(key): [str(value) for value in values or ()]
                    for key, values in (user.extra or {}).items()
                },
            )
        )

    async def review_access(self, attributes: RequestAttributes) -> AccessDecision:
        review = await self._call(
            "SubjectAccessReview",
            self._authorization.create_subject_access_review(
                subject_access_review(attributes), _request_timeout=self._timeout
            ),
        )
        result = review.status
        if result is None:
            raise ReviewError("SubjectAccessReview: the answer has no status")
        reason = str(result.reason or "")
        if result.evaluation_error and not reason:
            reason = str(result.evaluation_error)
        return AccessDecision(bool(result.allowed), reason)

    async def read_request_header_config(self) -> RequestHeaderConfig:
        """The front-proxy settings from ``kube-system/extension-apiserver-authentication``.

        Raises ReviewError when it cannot be read (RBAC: the
        ``extension-apiserver-authentication-reader`` Role in kube-system) and
        RequestHeaderConfigError when it holds no usable request-header settings.
        """
        _version, data = await self.read_authentication_config_map()
        return request_header_config_from_config_map(data)

    async def read_authentication_config_map(self) -> tuple[str, Mapping[str, str]]:
        """``(resourceVersion, data)`` of ``kube-system/extension-apiserver-authentication``;
        raises ReviewError when it cannot be read. (An API server always sets the version;
        without one, a hash of the data stands in, so a change is still seen.)"""
        namespace, name = CONFIG_MAP.split("/")
        config_map = await self._call(
            f"reading ConfigMap {CONFIG_MAP}",
            self._core.read_namespaced_config_map(name, namespace, _request_timeout=self._timeout),
        )
        metadata = config_map.metadata
        version = str(metadata.resource_version or "") if metadata is not None else ""
        data = {str(key): str(value) for key, value in (config_map.data or {}).items()}
        if not version:
            encoded = json.dumps(data, sort_keys=True).encode()
            version = "sha256:" + hashlib.sha256(encoded).hexdigest()
        return version, data

    async def close(self) -> None:
        await self._api_client.close()
        if self._authorization_client is not None:
            await self._authorization_client.close()


async def connect(
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
    timeout_seconds: float,
    authorization_kubeconfig: str | None = None,
    token_audiences: Sequence[str] = (),
) -> KubernetesReviewClient:
    """The review client of delegated auth (see :func:`api_client` for the lookup order):
    TokenReview and the ConfigMap through ``kubeconfig``, SubjectAccessReview through
    ``authorization_kubeconfig`` when it is given and differs; bearer tokens are reviewed for
    ``token_audiences`` (none: the API server's own)."""
    hint = (
        "delegated auth needs the API server; set auth.kubeconfig / --kubeconfig, "
        "run in a pod, or use auth.mode: none"
    )
    client = await api_client(
        kubeconfig,
        purpose="auth",
        hint=hint,
        environ=environ,
        token_file=token_file,
        ca_file=ca_file,
    )
    authorization_client = None
    if authorization_kubeconfig is not None and authorization_kubeconfig != kubeconfig:
        try:
            authorization_client = await api_client(
                authorization_kubeconfig,
                purpose="auth (authorization)",
                hint=hint,
                environ=environ,
                token_file=token_file,
                ca_file=ca_file,
            )
        except BaseException:
            await client.close()
            raise
    return KubernetesReviewClient(
        client,
        timeout_seconds=timeout_seconds,
        authorization_client=authorization_client,
        token_audiences=token_audiences,
    )
