"""A small reader of the external metrics API, as the HPA reads it (HTTPS, no verification).

Used by the demo, the HPA emulator and the live tests: one GET per metric, the items'
Kubernetes quantities parsed back to floats (per ``model`` label, or as the HPA takes them:
the list of every matching item's value).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field

import aiohttp

from adapter.kube.quantity import parse_quantity
from loadtest.harness.triton_server import LOOPBACK

API_PREFIX = "/apis/external.metrics.k8s.io/v1beta1/namespaces"


class ApiResponseError(RuntimeError):
    """The answer is not what this reader can use: not JSON (the wire contract says JSON
    always), or two series of one model (narrow them with a label selector)."""


@dataclass(frozen=True)
class Served:
    """One answer: HTTP ``status``; for a 200, ``values`` (model -> value in the metric's unit)
    and ``timestamps`` (model -> Unix seconds of the newest scrape behind the value, whole
    seconds as the API serves them). A non-200 answer has neither, never a 0 stand-in."""

    status: int
    values: dict[str, float] = field(default_factory=dict)
    timestamps: dict[str, float] = field(default_factory=dict)


def metric_url(port: int, namespace: str, metric: str) -> str:
    return f"https://{LOOPBACK}:{port}{API_PREFIX}/{namespace}/{metric}"


def _unix_seconds(rfc3339: str) -> float:
    """``2026-08-20T12:00:00Z`` -> Unix seconds (the API serves whole-second UTC times)."""
    return float(calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ")))


async def read_metric(
    session: aiohttp.ClientSession, port: int, namespace: str, metric: str, selector: str = ""
) -> Served:
    """GET ``metric`` in ``namespace`` (optionally ``labelSelector=selector``) from the adapter
    on 127.0.0.1:``port``: one value per ``model`` label. Raises ApiResponseError when the
    body is not JSON or two items share a model."""
    params = {"labelSelector": selector} if selector else None
    async with session.get(
        metric_url(port, namespace, metric), params=params, ssl=False
    ) as response:
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("application/json"):
            raise ApiResponseError(
                f"GET {metric}: HTTP {response.status} with Content-Type {content_type!r}, "
                "expected application/json"
            )
        body = await response.json()
    if response.status != 200:
        return Served(response.status)
    values: dict[str, float] = {}
    timestamps: dict[str, float] = {}
    for item in body["items"]:
        model = item["metricLabels"]["model"]
        if model in values:
            raise ApiResponseError(
                f"GET {metric}: several series of model {model!r}; add a label selector"
            )
        values[model] = float(parse_quantity(item["value"]))
        timestamps[model] = _unix_seconds(item["timestamp"])
    return Served(200, values, timestamps)


@dataclass(frozen=True)
class ExternalAnswer:
    """What the HPA gets: ``status``; for a 200 every item's value in order, else the Status
    ``message`` (why the metric is not available)."""

    status: int
    values: list[float] = field(default_factory=list)
    message: str = ""


async def read_external(
    session: aiohttp.ClientSession, port: int, namespace: str, metric: str, selector: str = ""
) -> ExternalAnswer:
    """GET ``metric`` with ``labelSelector=selector`` as the HPA controller does."""
    params = {"labelSelector": selector} if selector else None
    async with session.get(
        metric_url(port, namespace, metric), params=params, ssl=False
    ) as response:
        body = await response.json(content_type=None)
    if response.status != 200:
        return ExternalAnswer(response.status, message=str(body.get("message", "")))
    return ExternalAnswer(200, [float(parse_quantity(i["value"])) for i in body["items"]])
