"""The Kubernetes client factory (kubernetes-asyncio) shared by discovery and delegated auth.

:func:`api_client` builds a client from the in-cluster service account when
``KUBERNETES_SERVICE_HOST`` is set, else from a kubeconfig (``--kubeconfig``, ``$KUBECONFIG``,
``~/.kube/config``); an explicit kubeconfig wins, as with the Go servers'
``--authentication-kubeconfig``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

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

__all__ = ["KubernetesClientError", "api_client", "api_exception_message", "server_for_logs"]


class KubernetesClientError(ValueError):
    """No usable Kubernetes client configuration (in-cluster or kubeconfig)."""


def server_for_logs(client: k8s_client.ApiClient) -> str:
    """The API server's URL as logs may show it: scheme, host, port and path only (a
    kubeconfig ``server:`` could carry ``user:password@`` or a query; logs never do)."""
    parts = urlsplit(str(client.configuration.host))
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def api_exception_message(exc: ApiException) -> str:
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
    except Exception as exc:  # the loader's YAML, decoding and key errors: one line, no trace
        raise KubernetesClientError(
            f"{purpose}: kubeconfig {kubeconfig or '(default)'}{_line_of(exc)} is not usable: "
            f"{type(exc).__name__}: {_first_line(exc)} ({hint})"
        ) from None
    return k8s_client.ApiClient(configuration=configuration)


def _line_of(exc: Exception) -> str:
    """``:LINE`` where a YAML error says where it is, else nothing."""
    mark = getattr(exc, "problem_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
