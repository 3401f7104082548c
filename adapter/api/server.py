"""The HTTP layer of the external metrics API server (aiohttp).

Handlers only read: they ask the :class:`~adapter.provider.ExternalMetricsProvider` for
values held in memory and never scrape or wait on I/O, so a request costs microseconds to
milliseconds whatever the inference servers are doing. Every error is a ``metav1.Status``
JSON body with ``Content-Type: application/json`` (see :mod:`adapter.api.status`).

Routes (GET only; other verbs get 405 with ``Allow``; unknown paths 404, never 5xx):

- ``/apis``, ``/apis/external.metrics.k8s.io``, ``/apis/external.metrics.k8s.io/v1beta1``:
  discovery (the last one gates ``APIService`` availability and is never empty);
- ``/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}``: the values;
- ``/healthz``, ``/livez``, ``/readyz`` and ``/<endpoint>/<check>``: health;
- ``/openapi/v2``, ``/openapi/v3``, ``/openapi/v3/apis/<group>/<version>``;
- with a custom metrics provider, ``custom.metrics.k8s.io`` (:mod:`adapter.api.custom`).

With delegated auth (:mod:`adapter.api.auth`) a middleware authenticates and authorises each
request first (401/403 Status, or 500 when the SubjectAccessReview fails); handlers never see
identity headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from adapter.api import custom as custom_api
from adapter.api import openapi, status
from adapter.api.auth import DelegatedAuth
from adapter.api.wire import json_response as _json_response
from adapter.api.wire import rfc3339_seconds
from adapter.kube.quantity import format_quantity
from adapter.kube.selectors import Selector, SelectorError
from adapter.logging_setup import LogLimiter
from adapter.provider import (
    CustomMetricInfo,
    CustomMetricsProvider,
    ExternalMetricsProvider,
    ExternalMetricValue,
    MetricNotFoundError,
    NoMatchingSeriesError,
    StaleMetricError,
)
from adapter.snapshot import MetricInfo

__all__ = [
    "API_VERSION",
    "GROUP",
    "GROUP_VERSION",
    "PLACEHOLDER_METRIC",
    "PROVIDER_KEY",
    "READINESS_KEY",
    "ReadinessCheck",
    "create_app",
    "is_valid_path_segment",
    "metric_value_list",
]

log = logging.getLogger(__name__)

GROUP = "external.metrics.k8s.io"
API_VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{API_VERSION}"
GROUP_VERSION_PATH = f"/apis/{GROUP_VERSION}"
PLACEHOLDER_METRIC = "externalmetrics"
"""Listed when no metric is configured: an empty resource list breaks kubectl discovery."""

READINESS_CHECK_NAME = "metrics-ready"

ReadinessCheck = Callable[[], str | None]
"""Returns None when ready, else the reason it is not (e.g. "no scrape has completed yet")."""

PROVIDER_KEY = web.AppKey[ExternalMetricsProvider]("provider")
READINESS_KEY = web.AppKey[ReadinessCheck | None]("readiness")
LIVENESS_KEY = web.AppKey[ReadinessCheck | None]("liveness")
LIVENESS_CHECK_NAME = "pipeline-running"
_DOCUMENTS_KEY = web.AppKey["_Documents"]("documents")


@dataclass(frozen=True, slots=True)
class _LogLimits:
    """Lines a client can cause at will, each kind within its own budget (LogLimiter)."""

    stale: LogLimiter = field(default_factory=LogLimiter)
    non_finite: LogLimiter = field(default_factory=LogLimiter)
    health: LogLimiter = field(default_factory=LogLimiter)
    unhandled: LogLimiter = field(default_factory=LogLimiter)


_LOG_LIMITS_KEY = web.AppKey[_LogLimits]("log_limits")

_JSON = "application/json"


# --- response bodies ----------------------------------------------------------------


class ExternalMetricValueJSON(TypedDict):
    metricName: str
    metricLabels: dict[str, str]
    timestamp: str
    window: NotRequired[int]
    value: str


class ExternalMetricValueListJSON(TypedDict):
    kind: str
    apiVersion: str
    metadata: dict[str, str]
    items: list[ExternalMetricValueJSON]


KEDA_PATH = "/keda/v1"


def metric_value_list(values: Sequence[ExternalMetricValue]) -> ExternalMetricValueListJSON:
    """The ``ExternalMetricValueList`` body; raises QuantityError for a NaN/±Inf value."""
    items: list[ExternalMetricValueJSON] = []
    for v in values:
        item: ExternalMetricValueJSON = {
            "metricName": v.metric_name,
            "metricLabels": dict(v.labels),
            "timestamp": rfc3339_seconds(v.timestamp),
            "value": format_quantity(v.value),
        }
        if v.window_seconds is not None:
            item["window"] = int(v.window_seconds)
        items.append(item)
    return {
        "kind": "ExternalMetricValueList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": items,
    }


def is_valid_path_segment(name: str) -> bool:
    """apimachinery ``IsValidPathSegmentName``: not ``.``/``..``, no ``/`` or ``%``."""
    return bool(name) and name not in (".", "..") and "/" not in name and "%" not in name


# --- the metric values --------------------------------------------------------------


def _lookup(request: web.Request) -> list[ExternalMetricValue] | web.Response:
    """The values a metric request asks for, or the Status answer that explains why not."""
    namespace = request.match_info["namespace"]
    metric = request.match_info["metric"]
    if not is_valid_path_segment(namespace) or not is_valid_path_segment(metric):
        return status.not_found(
            f"the server could not find the requested resource: {namespace!r}/{metric!r} "
            "is not a valid namespace/metric path"
        )
    # Go's url.Values decoding, as the aggregator re-encodes it: '+' is a space, first wins
    selector_text = request.query.get("labelSelector", "")
    try:
        selector = Selector.parse(selector_text)
    except SelectorError as exc:
        return status.bad_request(str(exc))
    provider = request.app[PROVIDER_KEY]
    try:
        values = provider.get_external_metric(namespace, metric, selector)
    except MetricNotFoundError:
        return status.not_found(
            f"the server could not find the metric {metric} for namespaces",
            details={"name": metric, "group": GROUP, "kind": "namespaces"},
        )
    except NoMatchingSeriesError as exc:
        return status.not_found(str(exc), details={"name": metric, "group": GROUP})
    except StaleMetricError as exc:
        if (suppressed := request.app[_LOG_LIMITS_KEY].stale.allow()) is not None:
            log.info(
                "holding stale metric namespace=%s metric=%s selector=%r reason=%s suppressed=%d",
                namespace,
                metric,
                selector_text[:200],
                exc,
                suppressed,
            )
        return status.service_unavailable(str(exc))
    if not values:  # the provider promises non-empty; an empty list is an HPA error anyway
        return status.not_found(
            f"no series of metric {metric} in namespace {namespace} "
            f"matches selector {selector_text!r}"
        )
    bad = next((v for v in values if not math.isfinite(v.value)), None)
    if bad is not None:
        if (suppressed := request.app[_LOG_LIMITS_KEY].non_finite.allow()) is not None:
            log.warning(
                "holding non-finite metric namespace=%s metric=%s labels=%s value=%r suppressed=%d",
                namespace,
                metric,
                bad.labels,
                bad.value,
                suppressed,
            )
        return status.service_unavailable(
            f"metric {metric} in namespace {namespace}: series {dict(bad.labels)} has value "
            f"{bad.value!r}, which is not a finite number; holding rather than reporting a guess"
        )
    return values


async def get_external_metric(request: web.Request) -> web.Response:
    values = _lookup(request)
    if isinstance(values, web.Response):
        return values
    return _json_response(metric_value_list(values))


async def get_keda_metric(request: web.Request) -> web.Response:
    """The same lookup for KEDA's ``metrics-api`` scaler (``valueLocation: value``).

    Only one server can own ``v1beta1.external.metrics.k8s.io``; where KEDA owns it,
    ScaledObjects read tritonscale here. ``value`` is the sum of the matched series (what
    the HPA would sum); errors are the same Status answers, so KEDA holds on stale data.
    """
    values = _lookup(request)
    if isinstance(values, web.Response):
        return values
    body = {
        "metricName": request.match_info["metric"],
        "namespace": request.match_info["namespace"],
        "value": math.fsum(v.value for v in values),
        "timestamp": rfc3339_seconds(min(v.timestamp for v in values)),
        "items": [{"labels": dict(v.labels), "value": v.value} for v in values],
    }
    return _json_response(body)


# --- discovery ----------------------------------------------------------------------


def _group_versions() -> dict[str, Any]:
    version = {"groupVersion": GROUP_VERSION, "version": API_VERSION}
    return {"name": GROUP, "versions": [version], "preferredVersion": version}


async def get_api_group_list(request: web.Request) -> web.Response:
    groups = [_group_versions()]
    if custom_api.CUSTOM_PROVIDER_KEY in request.app:
        groups.append(custom_api.api_group())
    body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    return _json_response(body)


async def get_api_group(request: web.Request) -> web.Response:
    return _json_response({"kind": "APIGroup", "apiVersion": "v1", **_group_versions()})


def api_resource_list(metrics: Sequence[MetricInfo]) -> dict[str, Any]:
    """``APIResourceList`` naming every served metric; the placeholder if there are none."""
    names = [m.name for m in metrics] or [PLACEHOLDER_METRIC]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": name,
                "singularName": "",
                "namespaced": True,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            }
            for name in names
        ],
    }


async def get_api_resource_list(request: web.Request) -> web.Response:
    metrics = request.app[PROVIDER_KEY].list_all_external_metrics()
    return _json_response(api_resource_list(metrics))


# --- OpenAPI ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rendered:
    body: bytes
    etag: str


class _Documents:
    """OpenAPI documents rendered once per distinct metric list (the list rarely changes):
    the v2 document, each group-version's v3 document (by ``apis/<group>/<version>``) and
    the v3 discovery document pointing at them."""

    def __init__(self) -> None:
        self._key: tuple[tuple[MetricInfo, ...], tuple[CustomMetricInfo, ...]] | None = None
        self._v2 = _Rendered(b"", "")
        self._v3: dict[str, _Rendered] = {}
        self._v3_discovery = _Rendered(b"", "")

    def get(
        self, metrics: Sequence[MetricInfo], custom: Sequence[CustomMetricInfo]
    ) -> tuple[_Rendered, dict[str, _Rendered], _Rendered]:
        key = (tuple(metrics), tuple(custom))
        if key != self._key:
            v3 = {openapi.GROUP_VERSION_PATH: openapi.openapi_v3(key[0])}
            if custom:
                for version in custom_api.VERSIONS:
                    path = openapi.custom_group_version_path(version)
                    v3[path] = openapi.custom_openapi_v3(version, key[1])
            hashes = {path: openapi.document_hash(doc) for path, doc in v3.items()}
            v2 = openapi.openapi_v2(key[0], key[1])
            discovery = openapi.openapi_v3_discovery(hashes)
            self._v2 = _render(v2, openapi.document_hash(v2))
            self._v3 = {path: _render(doc, hashes[path]) for path, doc in v3.items()}
            self._v3_discovery = _render(discovery, openapi.document_hash(discovery))
            self._key = key
        return self._v2, self._v3, self._v3_discovery


def _render(document: dict[str, Any], digest: str) -> _Rendered:
    return _Rendered(json.dumps(document, separators=(",", ":")).encode(), f'"{digest}"')


def _serve_document(request: web.Request, doc: _Rendered, *, immutable: bool) -> web.Response:
    headers = {"ETag": doc.etag}
    headers["Cache-Control"] = "public, immutable" if immutable else "no-cache, private"
    if request.headers.get("If-None-Match") == doc.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=doc.body, content_type=_JSON, headers=headers)


def _documents(request: web.Request) -> tuple[_Rendered, dict[str, _Rendered], _Rendered]:
    metrics = request.app[PROVIDER_KEY].list_all_external_metrics()
    custom = request.app.get(custom_api.CUSTOM_PROVIDER_KEY)
    infos = custom.list_all_metrics() if custom is not None else ()
    return request.app[_DOCUMENTS_KEY].get(metrics, infos)


async def get_openapi_v2(request: web.Request) -> web.Response:
    v2, _, _ = _documents(request)
    return _serve_document(request, v2, immutable=False)


async def get_openapi_v3_discovery(request: web.Request) -> web.Response:
    _, _, discovery = _documents(request)
    return _serve_document(request, discovery, immutable=False)


async def get_openapi_v3_group_version(request: web.Request) -> web.Response:
    _, documents, _ = _documents(request)
    path = f"apis/{request.match_info['group']}/{request.match_info['version']}"
    v3 = documents.get(path)
    if v3 is None:
        raise web.HTTPNotFound()
    asked = request.query.get("hash")
    return _serve_document(request, v3, immutable=asked is not None and f'"{asked}"' == v3.etag)


# --- health -------------------------------------------------------------------------


def _check_ping() -> str | None:
    return None


def _checks(app: web.Application, endpoint: str) -> dict[str, Callable[[], str | None]]:
    checks: dict[str, Callable[[], str | None]] = {"ping": _check_ping}
    readiness = app[READINESS_KEY]
    if endpoint == "readyz" and readiness is not None:
        checks[READINESS_CHECK_NAME] = readiness
    liveness = app[LIVENESS_KEY]
    if liveness is not None:  # a dead pipeline fails every probe: restart the pod
        checks[LIVENESS_CHECK_NAME] = liveness
    return checks


def _run_check(name: str, check: Callable[[], str | None]) -> str | None:
    try:
        return check()
    except Exception as exc:  # a failing probe must report, not crash the endpoint
        log.exception("health check raised check=%s", name)
        return f"check raised {type(exc).__name__}"


def _text(body: str, status_code: int = 200) -> web.Response:
    return web.Response(
        status=status_code,
        text=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _health_handler(endpoint: str) -> Handler:
    async def all_checks(request: web.Request) -> web.StreamResponse:
        excluded = set(request.query.getall("exclude", []))
        lines: list[str] = []
        failed = False
        for name, check in _checks(request.app, endpoint).items():
            if name in excluded:
                lines.append(f"[+]{name} excluded: ok")
                continue
            reason = _run_check(name, check)
            if reason is None:
                lines.append(f"[+]{name} ok")
            else:
                failed = True
                lines.append(f"[-]{name} failed: {reason}")
        if failed:
            if (suppressed := request.app[_LOG_LIMITS_KEY].health.allow()) is not None:
                log.info(
                    "health check failed endpoint=%s checks=%s suppressed=%d",
                    endpoint,
                    "; ".join(lines),
                    suppressed,
                )
            return _text("\n".join([*lines, f"{endpoint} check failed"]) + "\n", 500)
        if "verbose" in request.query:
            return _text("\n".join([*lines, f"{endpoint} check passed"]) + "\n")
        return _text("ok")

    return all_checks


def _single_check_handler(endpoint: str) -> Handler:
    async def one_check(request: web.Request) -> web.StreamResponse:
        name = request.match_info["check"]
        check = _checks(request.app, endpoint).get(name)
        if check is None:
            raise web.HTTPNotFound()
        reason = _run_check(name, check)
        if reason is None:
            return _text("ok")
        return _text(f"[-]{name} failed: {reason}\n", 500)

    return one_check


# --- middleware and factory ---------------------------------------------------------


@web.middleware
async def _errors_and_access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Status JSON for 404/405/500; a debug line per request with status and duration."""
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        response = status.method_not_allowed(request.method, sorted(exc.allowed_methods))
    except web.HTTPNotFound:
        response = status.not_found("the server could not find the requested resource")
    except web.HTTPException as exc:
        _log_request(request, exc.status, started)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        if (suppressed := request.app[_LOG_LIMITS_KEY].unhandled.allow()) is not None:
            log.exception(
                "unhandled error method=%s path=%s suppressed=%d",
                request.method,
                request.path[:200],
                suppressed,
            )
        response = status.internal_error()
    _log_request(request, response.status, started)
    return response


def _log_request(request: web.Request, status_code: int, started: float) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "request method=%s path=%s status=%d duration_ms=%.3f",
            request.method,
            request.path,
            status_code,
            (time.perf_counter() - started) * 1000.0,
        )


def create_app(
    provider: ExternalMetricsProvider,
    *,
    readiness: ReadinessCheck | None = None,
    liveness: ReadinessCheck | None = None,
    auth: DelegatedAuth | None = None,
    observers: Sequence[Middleware] = (),
    custom: CustomMetricsProvider | None = None,
) -> web.Application:
    """The one way to build the API app.

    ``readiness`` returns None when the service may receive traffic, otherwise the reason
    it may not; ``/readyz`` then answers 500 with ``[-]metrics-ready failed: <reason>``.
    ``liveness`` likewise, for every health endpoint (``pipeline-running``).
    ``auth`` (delegated mode) authenticates and authorises every request before any handler
    runs; None serves everyone (local use). ``observers`` are middlewares placed outside
    ``auth`` so they also see its 401/403/500 answers (e.g. request metrics). ``custom``
    also serves ``custom.metrics.k8s.io`` (:mod:`adapter.api.custom`).
    """
    middlewares: list[Middleware] = [_errors_and_access_log, *observers]
    if auth is not None:
        middlewares.append(auth.middleware)
    app = web.Application(middlewares=middlewares)
    app[PROVIDER_KEY] = provider
    app[READINESS_KEY] = readiness
    app[LIVENESS_KEY] = liveness
    app[_DOCUMENTS_KEY] = _Documents()
    app[_LOG_LIMITS_KEY] = _LogLimits()

    def get(path: str, handler: Handler) -> None:
        app.router.add_get(path, handler, allow_head=False)

    get("/apis", get_api_group_list)
    get(f"/apis/{GROUP}", get_api_group)
    get(GROUP_VERSION_PATH, get_api_resource_list)
    get(GROUP_VERSION_PATH + "/namespaces/{namespace}/{metric}", get_external_metric)
    get(KEDA_PATH + "/namespaces/{namespace}/{metric}", get_keda_metric)
    if custom is not None:
        custom_api.add_routes(app, custom, get)
    for endpoint in ("healthz", "livez", "readyz"):
        get(f"/{endpoint}", _health_handler(endpoint))
        get(f"/{endpoint}/{{check}}", _single_check_handler(endpoint))
    get("/openapi/v2", get_openapi_v2)
    get("/openapi/v3", get_openapi_v3_discovery)
    get("/openapi/v3/apis/{group}/{version}", get_openapi_v3_group_version)
    return app
