"""Per-namespace authorisation of the live page's data and of ``explain``.

The middleware (:mod:`adapter.api.auth`) authorises every request by its path first: ``/ui``,
``/ui/...`` and ``/explain/...`` are non-resource paths (``nonResourceURLs`` in RBAC). What they
return is metric values and the state behind them, so a handler also asks whether the user may
read those metrics in the namespace, with the very attributes a metric read through the API
has (``list`` on resource ``<metric>`` in group ``external.metrics.k8s.io``): a user sees on the
page, or explained, exactly the namespaces and metrics the API would give them. Decisions are
cached with the middleware's (same attributes, same cache).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from adapter.api import status
from adapter.api.auth import USER_KEY, DelegatedAuth, forbidden_message
from adapter.kube.reviews import RequestAttributes, ReviewError

EXTERNAL_GROUP = "external.metrics.k8s.io"
EXTERNAL_VERSION = "v1beta1"


def metric_read(request: web.Request, namespace: str, metric: str) -> RequestAttributes:
    """The attributes of reading ``metric`` in ``namespace`` through the external API."""
    path = f"/apis/{EXTERNAL_GROUP}/{EXTERNAL_VERSION}/namespaces/{namespace}/{metric}"
    return RequestAttributes(
        request[USER_KEY],
        "list",
        path,
        is_resource_request=True,
        api_group=EXTERNAL_GROUP,
        api_version=EXTERNAL_VERSION,
        namespace=namespace,
        resource=metric,
    )


class NamespaceAccess:
    """Asks the authoriser whether a request's user may read metrics in a namespace.

    ``auth`` None (``auth.mode: none``): everyone may read everything.
    """

    def __init__(self, auth: DelegatedAuth | None) -> None:
        self._auth = auth

    async def denial(
        self, request: web.Request, namespace: str, metrics: Sequence[str]
    ) -> web.Response | None:
        """None when the user may read every one of ``metrics`` in ``namespace``; otherwise
        the answer to send (403 naming the first refused metric, 500 when a review fails)."""
        if self._auth is None:
            return None
        checks = [metric_read(request, namespace, metric) for metric in metrics]
        try:
            decisions = await asyncio.gather(*(self._auth.authorize(c) for c in checks))
        except ReviewError as exc:
            return status.internal_error(
                f"authorizing {request.path} for user {request[USER_KEY].name!r}: "
                f"SubjectAccessReview failed: {exc}"
            )
        for attributes, decision in zip(checks, decisions, strict=True):
            if not decision.allowed:
                return status.forbidden(
                    forbidden_message(attributes, decision.reason),
                    details={"group": EXTERNAL_GROUP, "kind": attributes.resource},
                )
        return None

    async def readable(
        self, request: web.Request, namespaces: Sequence[str], metrics: Sequence[str]
    ) -> list[str]:
        """The namespaces among ``namespaces`` whose ``metrics`` the user may read (a review
        that fails counts as a refusal here: the list only omits)."""
        if self._auth is None:
            return list(namespaces)
        answers = await asyncio.gather(
            *(self.denial(request, namespace, metrics) for namespace in namespaces)
        )
        return [ns for ns, denied in zip(namespaces, answers, strict=True) if denied is None]
