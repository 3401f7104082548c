"""OpenAPI v2 and v3 documents for the served paths (external and custom metrics).

The kube-aggregator downloads ``/openapi/v2`` (or ``/openapi/v3`` and the group-version
document it points to) every minute and merges it into the cluster's spec; nothing the
HPA does depends on it, but a 5xx here would be retried with backoff, so the documents are
built from memory only. Schema names follow Kubernetes' generated ones so merged specs
line up with the Go adapters'.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from adapter.provider import CustomMetricInfo
from adapter.snapshot import MetricInfo

__all__ = [
    "CUSTOM_GROUP",
    "GROUP_VERSION_PATH",
    "custom_group_version_path",
    "custom_openapi_v3",
    "document_hash",
    "openapi_v2",
    "openapi_v3",
    "openapi_v3_discovery",
]

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION_PATH = f"apis/{GROUP}/{VERSION}"
METRIC_PATH = f"/{GROUP_VERSION_PATH}/namespaces/{{namespace}}/{{metric}}"
TITLE = "tritonscale external metrics"

_LIST = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList"
_VALUE = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValue"
_STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
_LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"
_TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _schemas(ref: str) -> dict[str, Any]:
    """Schema definitions; ``ref`` is the JSON-pointer prefix (v2 or v3 style)."""
    return {
        _LIST: {
            "description": "A list of external metric values; the HPA sums every item.",
            "type": "object",
            "required": ["items"],
            "properties": {
                "kind": {"type": "string", "description": "ExternalMetricValueList"},
                "apiVersion": {"type": "string", "description": f"{GROUP}/{VERSION}"},
                "metadata": {"$ref": ref + _LIST_META},
                "items": {"type": "array", "items": {"$ref": ref + _VALUE}},
            },
            "x-kubernetes-group-version-kind": [
                {"group": GROUP, "version": VERSION, "kind": "ExternalMetricValueList"}
            ],
        },
        _VALUE: {
            "description": "The value of one series of an external metric.",
            "type": "object",
            "required": ["metricName", "metricLabels", "timestamp", "value"],
            "properties": {
                "metricName": {"type": "string", "description": "the name of the metric"},
                "metricLabels": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "the complete label set identifying the series",
                },
                "timestamp": {"$ref": ref + _TIME},
                "window": {
                    "type": "integer",
                    "format": "int64",
                    "description": "averaging window of the value, in seconds, if any",
                },
                "value": {"$ref": ref + _QUANTITY},
            },
        },
        _STATUS: {
            "description": "An error: kind Status, status Failure, with reason and HTTP code.",
            "type": "object",
            "properties": {
                "kind": {"type": "string"},
                "apiVersion": {"type": "string"},
                "metadata": {"$ref": ref + _LIST_META},
                "status": {"type": "string"},
                "message": {"type": "string"},
                "reason": {"type": "string"},
                "code": {"type": "integer", "format": "int32"},
            },
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}],
        },
        _LIST_META: {
            "description": "Standard list metadata (always empty here).",
            "type": "object",
            "properties": {
                "resourceVersion": {"type": "string"},
                "continue": {"type": "string"},
            },
        },
        _TIME: {
            "description": "RFC 3339 UTC time, second precision (e.g. 2026-08-20T12:00:00Z).",
            "type": "string",
            "format": "date-time",
        },
        _QUANTITY: {
            "description": "Kubernetes resource.Quantity in canonical form (e.g. 1500m, 2, 12k).",
            "type": "string",
        },
    }


def _metric_description(metrics: Sequence[MetricInfo]) -> str:
    lines = [f"- {m.name} ({m.unit}): {m.description}" for m in metrics]
    return "The external metric name. Served metrics:\n" + "\n".join(lines)


def _operation(metrics: Sequence[MetricInfo], ref: str, v3: bool) -> dict[str, Any]:
    names = [m.name for m in metrics]

    def param(name: str, where: str, required: bool, schema: dict[str, Any], doc: str) -> Any:
        p: dict[str, Any] = {"name": name, "in": where, "required": required, "description": doc}
        if v3:
            p["schema"] = schema
        else:
            p.update(schema)
        return p

    def response(doc: str, schema_name: str) -> dict[str, Any]:
        if v3:
            return {
                "description": doc,
                "content": {"application/json": {"schema": {"$ref": ref + schema_name}}},
            }
        return {"description": doc, "schema": {"$ref": ref + schema_name}}

    metric_schema: dict[str, Any] = {"type": "string"}
    if names:
        metric_schema["enum"] = names
    op: dict[str, Any] = {
        "operationId": "listExternalMetricValue",
        "description": "The values of one external metric in one namespace, filtered by "
        "labelSelector. Errors: 400 bad selector, 404 unknown metric or no matching series, "
        "503 data stale or not a number (the HPA holds).",
        "tags": ["externalMetrics_v1beta1"],
        "parameters": [
            param("namespace", "path", True, {"type": "string"}, "namespace of the series"),
            param("metric", "path", True, metric_schema, _metric_description(metrics)),
            param(
                "labelSelector",
                "query",
                False,
                {"type": "string"},
                "A Kubernetes label selector (=, ==, !=, in, notin, key, !key); "
                "missing means everything.",
            ),
        ],
        "responses": {
            "200": response("OK", _LIST),
            "400": response("invalid label selector", _STATUS),
            "404": response("unknown metric or no matching series", _STATUS),
            "503": response("value not available (stale or NaN)", _STATUS),
        },
        "x-kubernetes-action": "list",
        "x-kubernetes-group-version-kind": {
            "group": GROUP,
            "version": VERSION,
            "kind": "ExternalMetricValueList",
        },
    }
    if not v3:
        op["produces"] = ["application/json"]
        op["schemes"] = ["https"]
    return op


def openapi_v2(
    metrics: Sequence[MetricInfo], custom: Sequence[CustomMetricInfo] = ()
) -> dict[str, Any]:
    """The Swagger 2.0 document served at ``/openapi/v2``; with ``custom``, the custom
    metrics paths of both versions too."""
    ref = "#/definitions/"
    paths: dict[str, Any] = {METRIC_PATH: {"get": _operation(metrics, ref, v3=False)}}
    definitions = _schemas(ref)
    if custom:
        for version in CUSTOM_VERSIONS:
            paths[_custom_path(version)] = {"get": _custom_operation(version, custom, ref, False)}
            definitions.update(_custom_schemas(version, ref))
    return {
        "swagger": "2.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": paths,
        "definitions": definitions,
    }


def openapi_v3(metrics: Sequence[MetricInfo]) -> dict[str, Any]:
    """The OpenAPI 3.0 document for ``/openapi/v3/apis/external.metrics.k8s.io/v1beta1``."""
    ref = "#/components/schemas/"
    return {
        "openapi": "3.0.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": {METRIC_PATH: {"get": _operation(metrics, ref, v3=True)}},
        "components": {"schemas": _schemas(ref)},
    }


def document_hash(document: dict[str, Any]) -> str:
    """Content hash of a document (uppercase SHA-512 hex, as the Go server uses)."""
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha512(encoded).hexdigest().upper()


def openapi_v3_discovery(hashes: dict[str, str] | str) -> dict[str, Any]:
    """The ``/openapi/v3`` discovery document pointing at each group-version document.

    ``hashes`` maps a group-version path (``apis/<group>/<version>``) to its document's hash;
    a lone hash is the external metrics document's.
    """
    if isinstance(hashes, str):
        hashes = {GROUP_VERSION_PATH: hashes}
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
            for path, digest in hashes.items()
        }
    }


# --- custom.metrics.k8s.io ------------------------------------------------------------------

CUSTOM_GROUP = "custom.metrics.k8s.io"
CUSTOM_VERSIONS = ("v1beta2", "v1beta1")
_OBJECT_REFERENCE = "io.k8s.api.core.v1.ObjectReference"
_LABEL_SELECTOR = "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"


def custom_group_version_path(version: str) -> str:
    return f"apis/{CUSTOM_GROUP}/{version}"


def _custom_path(version: str) -> str:
    object_path = "namespaces/{namespace}/{resource}/{name}/{metric}"
    return f"/{custom_group_version_path(version)}/{object_path}"


def _custom_names(version: str) -> tuple[str, str, str]:
    prefix = f"io.k8s.metrics.pkg.apis.custom_metrics.{version}."
    return prefix + "MetricValueList", prefix + "MetricValue", prefix + "MetricIdentifier"


def _custom_schemas(version: str, ref: str) -> dict[str, Any]:
    list_name, value_name, identifier_name = _custom_names(version)
    window = "windowSeconds" if version == "v1beta2" else "window"
    value_properties: dict[str, Any] = {
        "describedObject": {"$ref": ref + _OBJECT_REFERENCE},
        "timestamp": {"$ref": ref + _TIME},
        window: {
            "type": "integer",
            "format": "int64",
            "description": "averaging window of the value, in seconds, if any",
        },
        "value": {"$ref": ref + _QUANTITY},
    }
    schemas: dict[str, Any] = {}
    if version == "v1beta2":
        value_properties["metric"] = {"$ref": ref + identifier_name}
        required = ["describedObject", "metric", "timestamp", "value"]
        schemas[identifier_name] = {
            "description": "The metric's name and the metricLabelSelector it was read with.",
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "selector": {"$ref": ref + _LABEL_SELECTOR},
            },
        }
    else:
        value_properties["metricName"] = {"type": "string"}
        value_properties["selector"] = {"$ref": ref + _LABEL_SELECTOR}
        required = ["describedObject", "metricName", "timestamp", "value"]
    schemas[list_name] = {
        "description": "Values of one metric, one per described object.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "kind": {"type": "string", "description": "MetricValueList"},
            "apiVersion": {"type": "string", "description": f"{CUSTOM_GROUP}/{version}"},
            "metadata": {"$ref": ref + _LIST_META},
            "items": {"type": "array", "items": {"$ref": ref + value_name}},
        },
        "x-kubernetes-group-version-kind": [
            {"group": CUSTOM_GROUP, "version": version, "kind": "MetricValueList"}
        ],
    }
    schemas[value_name] = {
        "description": "The value of a metric for one object.",
        "type": "object",
        "required": required,
        "properties": value_properties,
    }
    schemas[_OBJECT_REFERENCE] = {
        "description": "The object a value describes.",
        "type": "object",
        "properties": {
            key: {"type": "string"} for key in ("kind", "namespace", "name", "apiVersion")
        },
    }
    schemas[_LABEL_SELECTOR] = {
        "description": "A label selector (matchLabels AND matchExpressions).",
        "type": "object",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {"type": "object"}},
        },
    }
    return schemas


def _custom_operation(
    version: str, infos: Sequence[CustomMetricInfo], ref: str, v3: bool
) -> dict[str, Any]:
    list_name, _, _ = _custom_names(version)
    resources = sorted({info.group_resource for info in infos})
    metrics = sorted({info.metric for info in infos})
    served = "; ".join(
        f"{resource}: " + ", ".join(i.metric for i in infos if i.group_resource == resource)
        for resource in resources
    )

    def param(name: str, where: str, schema: dict[str, Any], doc: str) -> Any:
        p: dict[str, Any] = {"name": name, "in": where, "required": where == "path"}
        p["description"] = doc
        if v3:
            p["schema"] = schema
        else:
            p.update(schema)
        return p

    def response(doc: str, schema_name: str) -> dict[str, Any]:
        if v3:
            return {
                "description": doc,
                "content": {"application/json": {"schema": {"$ref": ref + schema_name}}},
            }
        return {"description": doc, "schema": {"$ref": ref + schema_name}}

    selector_doc = "A Kubernetes label selector; missing means everything."
    op: dict[str, Any] = {
        "operationId": f"getCustomMetricValue{version.capitalize()}",
        "description": "The value of a metric for one object, or for every object matching "
        "labelSelector when name is '*'. Served: " + served + ". Errors: 400 bad selector "
        "or several series of a mean/ratio for one object, 404 unknown metric or object, "
        "503 value stale or not known yet (the HPA holds).",
        "tags": [f"customMetrics_{version}"],
        "parameters": [
            param("namespace", "path", {"type": "string"}, "namespace of the objects"),
            param("resource", "path", {"type": "string", "enum": resources}, "group-resource"),
            param("name", "path", {"type": "string"}, "object name, or * for every object"),
            param("metric", "path", {"type": "string", "enum": metrics}, "metric name"),
            param("labelSelector", "query", {"type": "string"}, "Objects: " + selector_doc),
            param("metricLabelSelector", "query", {"type": "string"}, "Series: " + selector_doc),
        ],
        "responses": {
            "200": response("OK", list_name),
            "400": response("invalid or ambiguous request", _STATUS),
            "404": response("unknown metric, or no matching object or series", _STATUS),
            "503": response("value not available (stale or not known yet)", _STATUS),
        },
        "x-kubernetes-action": "get",
        "x-kubernetes-group-version-kind": {
            "group": CUSTOM_GROUP,
            "version": version,
            "kind": "MetricValueList",
        },
    }
    if not v3:
        op["produces"] = ["application/json"]
        op["schemes"] = ["https"]
    return op


def custom_openapi_v3(version: str, infos: Sequence[CustomMetricInfo]) -> dict[str, Any]:
    """The OpenAPI 3.0 document for ``/openapi/v3/apis/custom.metrics.k8s.io/<version>``."""
    ref = "#/components/schemas/"
    schemas = _schemas(ref)
    schemas.update(_custom_schemas(version, ref))
    for name in (_LIST, _VALUE):
        schemas.pop(name)
    return {
        "openapi": "3.0.0",
        "info": {"title": "tritonscale custom metrics", "version": version},
        "paths": {_custom_path(version): {"get": _custom_operation(version, infos, ref, True)}},
        "components": {"schemas": schemas},
    }
