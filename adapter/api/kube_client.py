"""The Kubernetes API calls of delegated auth, through kubernetes-asyncio.

:class:`KubernetesReviewClient` implements :class:`adapter.api.auth.ReviewClient`
(TokenReview, SubjectAccessReview) and reads ``kube-system/extension-apiserver-authentication``.
:func:`connect` builds it from the in-cluster service account when ``KUBERNETES_SERVICE_HOST``
is set, else from a kubeconfig (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``); an
explicit kubeconfig wins, as with the Go servers' ``--authentication-kubeconfig``.

Every failure is a :class:`~adapter.api.auth.ReviewError` whose message names the call and the
HTTP status or transport error; tokens never appear in messages or logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from adapter.api.auth import (
    CONFIG_MAP,
    AccessDecision,
    RequestAttributes,
    RequestHeaderConfig,
    ReviewError,
    TokenReviewResult,
    UserInfo,
    request_header_config_from_config_map,
    subject_access_review,
    token_review,
)

__all__ = ["KubernetesClientError", "KubernetesReviewClient", "connect"]

DEFAULT_TIMEOUT_SECONDS = 10.0
"""Go's ``TokenRequestTimeout`` / authorisation ``ClientTimeout``."""

T = TypeVar("T")


class KubernetesClientError(ValueError):
    """No usable Kubernetes client configuration (in-cluster or kubeconfig)."""


def _api_exception_message(exc: ApiException) -> str:
    message = ""
    raw: object = exc.body
    body = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if isinstance(body, str) and body:
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError:
            message = body.strip()[:200]
        else:
            if isinstance(parsed, dict):
                message = str(parsed.get("message", ""))
    text = f"HTTP {exc.status} {exc.reason or ''}".rstrip()
    return f"{text}: {message}" if message else text


class KubernetesReviewClient:
    """TokenReview / SubjectAccessReview / the authentication ConfigMap over one ApiClient."""

    def __init__(
        self, api_client: k8s_client.ApiClient, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self._api_client = api_client
        self._timeout = timeout_seconds
        self._authentication: Any = k8s_client.AuthenticationV1Api(api_client)
        self._authorization: Any = k8s_client.AuthorizationV1Api(api_client)
        self._core: Any = k8s_client.CoreV1Api(api_client)

    @property
    def host(self) -> str:
        return str(self._api_client.configuration.host)

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except ApiException as exc:
            raise ReviewError(f"{what}: {_api_exception_message(exc)}") from None
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
                token_review(token), _request_timeout=self._timeout
            ),
        )
        result = review.status
        if result is None:
            raise ReviewError("TokenReview: the answer has no status")
        if not result.authenticated or result.user is None or not result.user.username:
            return TokenReviewResult(None, str(result.error or ""))
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
        namespace, name = CONFIG_MAP.split("/")
        config_map = await self._call(
            f"reading ConfigMap {CONFIG_MAP}",
            self._core.read_namespaced_config_map(name, namespace, _request_timeout=self._timeout),
        )
        data: Mapping[str, str] = config_map.data or {}
        return request_header_config_from_config_map(data)

    async def close(self) -> None:
        await self._api_client.close()


async def api_client(
    kubeconfig: str | None = None,
    *,
    purpose: str,
    hint: str,
    environ: Mapping[str, str] | None = None,
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
) -> k8s_client.ApiClient:
    """A kubernetes-asyncio client from ``kubeconfig`` if given, else in-cluster, else the
    default kubeconfig. Errors start with ``purpose`` (the config section that needs the
    API server) and end with ``hint`` (what to do about it).

    ``environ``, ``token_file`` and ``ca_file`` default to the process environment and the
    mounted service-account files (tests point them elsewhere).
    """
    environment = os.environ if environ is None else environ
    configuration = type.__call__(k8s_client.Configuration)  # not the shared default
    try:
        if kubeconfig is None and environment.get(SERVICE_HOST_ENV_NAME):
            loader = InClusterConfigLoader(
                token_filename=token_file, cert_filename=ca_file, environ=dict(environment)
            )
            loader.load_and_set(configuration)
        else:
            await k8s_config.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration, persist_config=False
            )
    except ConfigException as exc:
        where = (
            f"kubeconfig {kubeconfig!r}"
            if kubeconfig
            else "in-cluster service account"
            if environment.get(SERVICE_HOST_ENV_NAME)
            else "default kubeconfig ($KUBECONFIG or ~/.kube/config)"
        )
        raise KubernetesClientError(
            f"{purpose}: cannot configure the Kubernetes client from the {where}: {exc} ({hint})"
        ) from None
    except OSError as exc:
        raise KubernetesClientError(
            f"{purpose}: cannot read kubeconfig {kubeconfig or '(default)'}: {exc}"
        ) from None
    return k8s_client.ApiClient(configuration=configuration)


async def connect(
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> KubernetesReviewClient:
    """The review client of delegated auth (see :func:`api_client` for the lookup order)."""
    client = await api_client(
        kubeconfig,
        purpose="auth",
        hint=(
            "delegated auth needs the API server; set auth.kubeconfig / --kubeconfig, "
            "run in a pod, or use auth.mode: none"
        ),
        environ=environ,
        token_file=token_file,
        ca_file=ca_file,
    )
    return KubernetesReviewClient(client, timeout_seconds=timeout_seconds)
