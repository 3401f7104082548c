"""The custom metrics API (``custom.metrics.k8s.io`` ``v1beta2`` and ``v1beta1``), HTTP only.

Served by the same process, from the same snapshot, as the external metrics API: handlers read
through the :class:`~adapter.provider.CustomMetricsProvider` and never wait on I/O. Routes
(GET only), after ``/apis/custom.metrics.k8s.io/{version}``, as the Go framework
(custom-metrics-apiserver) installs them:

- (nothing): the ``APIResourceList`` of ``<group-resource>/<metric>`` entries;
- ``/namespaces/{ns}/{resource}/{name}/{metric}``: one object, or every object matching
  ``labelSelector`` when ``{name}`` is ``*`` (the HPA's Pods metrics);
- ``/{resource}/{name}/{metric}``: root-scoped objects (none is served: 404);
- ``/namespaces/{ns}/metrics/{metric}``: the namespace object itself (not served: 404).

Every answer is a ``MetricValueList`` in the requested version's shape, even for one object;
errors are ``metav1.Status`` bodies: 404 for an unknown metric, object or selector match, 400
for a bad selector or an ambiguous request, 503 when the value is stale or not known yet (the
HPA holds; it never sees a 0 it did not measure).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from adapter.api import status
from adapter.api.wire import json_response, rfc3339_seconds
from adapter.kube.quantity import format_quantity
from adapter.kube.selectors import Selector, SelectorError, label_selector_json
from adapter.provider import (
    AmbiguousSeriesError,
    CustomMetricInfo,
    CustomMetricsProvider,
    CustomMetricValue,
    MetricNotFoundError,
    NoMatchingObjectsError,
    NoMatchingSeriesError,
    ObjectMetricNotFoundError,
    StaleMetricError,
    UnsupportedSelectorError,
    normalize_resource,
)

__all__ = [
    "CUSTOM_PROVIDER_KEY",
    "GROUP",
    "PREFERRED_VERSION",
    "VERSIONS",
    "add_routes",
    "api_group",
    "api_resource_list",
    "metric_value_list",
]

log = logging.getLogger(__name__)

GROUP = "custom.metrics.k8s.io"
VERSIONS = ("v1beta2", "v1beta1")
"""Served versions, preferred first (clients use the preferred one: v1beta2)."""
PREFERRED_VERSION = VERSIONS[0]
WILDCARD = "*"
"""The ``AllObjects`` name: every object ``labelSelector`` matches."""

CUSTOM_PROVIDER_KEY = web.AppKey[CustomMetricsProvider]("custom_provider")


# --- bodies ---------------------------------------------------------------------------------


def api_group() -> dict[str, Any]:
    """The ``APIGroup`` entry: both versions, v1beta2 preferred."""
    versions = [{"groupVersion": f"{GROUP}/{v}", "version": v} for v in VERSIONS]
    return {"name": GROUP, "versions": versions, "preferredVersion": versions[0]}


def api_resource_list(version: str, infos: Sequence[CustomMetricInfo]) -> dict[str, Any]:
    """One ``<group-resource>/<metric>`` entry per served metric (``resource_lister.go``)."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{GROUP}/{version}",
        "resources": [
            {
                "name": f"{info.group_resource}/{info.metric}",
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": "MetricValueList",
                "verbs": ["get"],
            }
            for info in infos
        ],
    }


def _item(version: str, value: CustomMetricValue, selector: dict[str, Any] | None) -> Any:
    reference = value.described_object
    described = {
        "kind": reference.kind,
        "namespace": reference.namespace,
        "name": reference.name,
        "apiVersion": reference.api_version,
    }
    timestamp = rfc3339_seconds(value.timestamp)
    quantity = format_quantity(value.value)
    if version == "v1beta1":
        item: dict[str, Any] = {
            "describedObject": described,
            "metricName": value.metric,
            "timestamp": timestamp,
        }
        if value.window_seconds is not None:
            item["window"] = int(value.window_seconds)
        item["value"] = quantity
        item["selector"] = selector
        return item
    item = {
        "describedObject": described,
        "metric": {"name": value.metric, "selector": selector},
        "timestamp": timestamp,
    }
    if value.window_seconds is not None:
        item["windowSeconds"] = int(value.window_seconds)
    item["value"] = quantity
    return item


def metric_value_list(
    version: str, values: Sequence[CustomMetricValue], metric_selector: Selector
) -> dict[str, Any]:
    """The ``MetricValueList`` of ``version``: v1beta2 nests ``metric: {name, selector}`` and
    says ``windowSeconds``; v1beta1 has ``metricName``, a top-level ``selector`` and
    ``window``. The selector echoes ``metricLabelSelector`` (null when empty)."""
    selector = label_selector_json(metric_selector)
    return {
        "kind": "MetricValueList",
        "apiVersion": f"{GROUP}/{version}",
        "metadata": {},
        "items": [_item(version, value, selector) for value in values],
    }


# --- handlers -------------------------------------------------------------------------------


def _valid_segment(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "%" not in name


def _selector(request: web.Request, parameter: str) -> Selector:
    """A selector query parameter (Go's url.Values: first value wins; absent = everything)."""
    text = request.query.get(parameter, "")
    try:
        return Selector.parse(text)
    except SelectorError as exc:
        raise _Answer(status.bad_request(f"{parameter}: {exc}")) from None


class _Answer(Exception):
    """A finished error answer, raised out of the lookup."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.reason)
        self.response = response


def _lookup(
    request: web.Request,
    version: str,
    namespace: str,
    resource: str,
    name: str,
    metric: str,
) -> web.Response:
    if not all(_valid_segment(part) for part in (resource, name, metric)) or (
        namespace and not _valid_segment(namespace)
    ):
        return status.not_found("the server could not find the requested resource")
    try:
        metric_selector = _selector(request, "metricLabelSelector")
        info = CustomMetricInfo(normalize_resource(resource), metric, namespaced=bool(namespace))
        provider = request.app[CUSTOM_PROVIDER_KEY]
        if name == WILDCARD:
            selector = _selector(request, "labelSelector")
            values = provider.get_metric_by_selector(namespace, selector, info, metric_selector)
        else:  # labelSelector is ignored for one named object, as in the Go framework
            values = [provider.get_metric_by_name(namespace, name, info, metric_selector)]
    except _Answer as answer:
        return answer.response
    except MetricNotFoundError as exc:
        return status.not_found(str(exc), details={"name": metric, "group": GROUP})
    except (ObjectMetricNotFoundError, NoMatchingObjectsError, NoMatchingSeriesError) as exc:
        return status.not_found(str(exc), details={"name": name, "group": GROUP})
    except (AmbiguousSeriesError, UnsupportedSelectorError) as exc:
        return status.bad_request(str(exc))
    except StaleMetricError as exc:
        log.info(
            "holding stale custom metric namespace=%s resource=%s name=%s metric=%s reason=%s",
            namespace,
            resource,
            name,
            metric,
            exc,
        )
        return status.service_unavailable(str(exc))
    return _json(metric_value_list(version, values, metric_selector))


def _json(body: Any) -> web.Response:
    return json_response(body)


def _object_handler(version: str) -> Handler:
    async def get_object_metric(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return _lookup(
            request,
            version,
            info.get("namespace", ""),
            info["resource"],
            info["name"],
            info["metric"],
        )

    return get_object_metric


def _namespace_handler(version: str) -> Handler:
    async def get_namespace_metric(request: web.Request) -> web.StreamResponse:
        # the namespace object itself: the Go framework asks for resource namespaces, name ns
        info = request.match_info
        return _lookup(request, version, "", "namespaces", info["namespace"], info["metric"])

    return get_namespace_metric


def _resource_list_handler(version: str) -> Handler:
    async def get_resource_list(request: web.Request) -> web.StreamResponse:
        infos = request.app[CUSTOM_PROVIDER_KEY].list_all_metrics()
        return _json(api_resource_list(version, infos))

    return get_resource_list


async def get_api_group(request: web.Request) -> web.StreamResponse:
    return _json({"kind": "APIGroup", "apiVersion": "v1", **api_group()})


def add_routes(
    app: web.Application,
    provider: CustomMetricsProvider,
    get: Callable[[str, Handler], None],
) -> None:
    """Serve ``provider`` under ``/apis/custom.metrics.k8s.io`` (both versions) on ``app``,
    registering each GET route with ``get``."""
    app[CUSTOM_PROVIDER_KEY] = provider
    get(f"/apis/{GROUP}", get_api_group)
    for version in VERSIONS:
        prefix = f"/apis/{GROUP}/{version}"
        get(prefix, _resource_list_handler(version))
        get(prefix + "/namespaces/{namespace}/metrics/{metric}", _namespace_handler(version))
        get(
            prefix + "/namespaces/{namespace}/{resource}/{name}/{metric}",
            _object_handler(version),
        )
        get(prefix + "/{resource}/{name}/{metric}", _object_handler(version))
