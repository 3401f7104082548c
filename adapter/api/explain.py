"""``GET /explain/v1/namespaces/{namespace}/{metric}?labelSelector=...``: why a metric has the
value it has (:class:`adapter.explain.Explainer`), as JSON; ``tritonscale explain`` reads it.

Authorisation: the middleware checks the path (RBAC ``nonResourceURLs: ["/explain/*"]``), and
the handler checks that the user may read the metric in the namespace, as the external API
would (:class:`adapter.api.access.NamespaceAccess`). Explaining only reads (bounded, see
:mod:`adapter.explain`); it is not on the HPA's path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from adapter.api import status
from adapter.api.access import NamespaceAccess
from adapter.api.auth import DelegatedAuth
from adapter.explain import Explainer
from adapter.kube.selectors import Selector, SelectorError

EXPLAIN_PATH = "/explain/v1"


def _valid_segment(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "%" not in name


def add_explain_routes(
    app: web.Application,
    explainer: Explainer,
    auth: DelegatedAuth | None,
    get: Callable[[str, Callable[[web.Request], Any]], None],
) -> None:
    access = NamespaceAccess(auth)

    async def explain(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        metric = request.match_info["metric"]
        if not _valid_segment(namespace) or not _valid_segment(metric):
            return status.not_found(
                f"{namespace!r}/{metric!r} is not a valid namespace/metric path"
            )
        try:
            selector = Selector.parse(request.query.get("labelSelector", ""))
        except SelectorError as exc:
            return status.bad_request(str(exc))
        denied = await access.denial(request, namespace, (metric,))
        if denied is not None:
            return denied
        body = explainer.explain(namespace, metric, selector)
        return web.Response(
            text=json.dumps(body, separators=(",", ":"), allow_nan=False),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    get(EXPLAIN_PATH + "/namespaces/{namespace}/{metric}", explain)
