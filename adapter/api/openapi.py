"""OpenAPI v2 and v3 documents for the one served path.

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

from adapter.snapshot import MetricInfo

__all__ = [
    "GROUP_VERSION_PATH",
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


def openapi_v2(metrics: Sequence[MetricInfo]) -> dict[str, Any]:
    """The Swagger 2.0 document served at ``/openapi/v2``."""
    ref = "#/definitions/"
    return {
        "swagger": "2.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": {METRIC_PATH: {"get": _operation(metrics, ref, v3=False)}},
        "definitions": _schemas(ref),
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


def openapi_v3_discovery(v3_hash: str) -> dict[str, Any]:
    """The ``/openapi/v3`` discovery document pointing at the group-version document."""
    return {
        "paths": {
            GROUP_VERSION_PATH: {
                "serverRelativeURL": f"/openapi/v3/{GROUP_VERSION_PATH}?hash={v3_hash}"
            }
        }
    }
