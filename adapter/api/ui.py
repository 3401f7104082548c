"""The live page (``/ui``) and its JSON, served from the series recorder.

Routes (GET):

- ``/ui``, ``/ui/`` and ``/ui/namespaces/{namespace}``: the page (one HTML file);
- ``/ui/static/{name}``: its script and style sheet, shipped in the package and held in memory
  (no build step, no CDN, no third-party code);
- ``/ui/api/v1/namespaces``: the namespaces with recorded series that the user may read;
- ``/ui/api/v1/namespaces/{namespace}/series?since=<unix s>``: that namespace's series, with
  the rows recorded after ``since`` (all of the last hour without it).

Handlers only read the recorder (:class:`adapter.recorder.SeriesRecorder`) and answer; an
answer is bounded by the recorder's limits (series, rows) and a polling page asks for the new
rows only. Authorisation: the middleware checks the path (``/ui``, ``/ui/*``: RBAC
``nonResourceURLs``), and the data endpoints also check that the user may read the page's
metrics in the namespace (:class:`adapter.api.access.NamespaceAccess`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from adapter.api import status
from adapter.api.access import NamespaceAccess
from adapter.api.auth import DelegatedAuth
from adapter.predictive import ARRIVAL_FORECAST, DESIRED_REPLICAS
from adapter.recorder import AIM_FIELDS, COLUMNS, NamespaceRows, SeriesRecorder
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH

UI_METRICS = (ARRIVAL_RATE, ARRIVAL_FORECAST, DESIRED_REPLICAS, QUEUE_DEPTH)
"""What the page shows; reading a namespace's page needs ``list`` on each of them there."""

_STATIC = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("adapter.api").joinpath("static", name).read_bytes()


def series_json(rows: NamespaceRows) -> dict[str, Any]:
    """The series endpoint's body: NaN (unknown) is null, never 0."""

    def known(values: list[float]) -> list[float | None]:
        return [v if math.isfinite(v) else None for v in values]

    def one(v: float) -> float | None:
        return v if math.isfinite(v) else None

    return {
        "namespace": rows.namespace,
        "recorded_at": one(rows.recorded_at),
        "step_seconds": rows.step_seconds,
        "window_seconds": rows.window_seconds,
        "max_series": rows.max_series,
        "unrecorded_series": rows.unrecorded_series,
        "series": [
            {
                "key": ",".join(
                    f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "namespace"
                ),
                "labels": dict(s.labels),
                "horizon_seconds": one(s.horizon_seconds),
                "t": s.times,
                **{name: known(s.columns[name]) for name in COLUMNS},
                "latest": {name: one(s.latest[name]) for name in COLUMNS},
                "aim": {name: one(s.aim.get(name, math.nan)) for name in AIM_FIELDS},
            }
            for s in rows.series
        ],
    }


def add_ui_routes(
    app: web.Application,
    recorder: SeriesRecorder,
    auth: DelegatedAuth | None,
    get: Callable[[str, Callable[[web.Request], Any]], None],
) -> None:
    """Serve the page and its JSON on ``app`` (``get`` adds a GET route)."""
    access = NamespaceAccess(auth)
    page = _asset("index.html")
    assets = {name: (_asset(name), kind) for name, kind in _STATIC.items()}

    async def index(_: web.Request) -> web.Response:
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers=_SECURITY_HEADERS
        )

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(
            body=body, content_type=kind, charset="utf-8", headers=_SECURITY_HEADERS
        )

    async def namespaces(request: web.Request) -> web.Response:
        readable = await access.readable(request, recorder.namespaces(), UI_METRICS)
        return _json({"namespaces": readable})

    async def series(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        since_text = request.query.get("since")
        since = -math.inf
        if since_text is not None:
            try:
                since = float(since_text)
            except ValueError:
                return status.bad_request(
                    f"since must be a Unix time in seconds, got {since_text!r}"
                )
            if not math.isfinite(since):
                return status.bad_request(f"since must be a finite number, got {since_text!r}")
        denied = await access.denial(request, namespace, UI_METRICS)
        if denied is not None:
            return denied
        return _json(series_json(recorder.rows(namespace, since)))

    get("/ui", redirect)
    get("/ui/", index)
    get("/ui/namespaces/{namespace}", index)
    get("/ui/static/{name}", asset)
    get("/ui/api/v1/namespaces", namespaces)
    get("/ui/api/v1/namespaces/{namespace}/series", series)


def _json(body: dict[str, Any]) -> web.Response:
    text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    return web.Response(
        text=text,
        content_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
