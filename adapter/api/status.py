"""``metav1.Status`` error bodies, as the Go apiserver writes them.

client-go turns a Status body into a ``StatusError`` whose message the HPA copies into
its ``FailedGetExternalMetric`` event, so the message is what an operator will read.
Every error response carries ``Content-Type: application/json`` (without it client-go
would try to decode protobuf).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NotRequired, TypedDict

from aiohttp import web

__all__ = [
    "StatusBody",
    "bad_request",
    "forbidden",
    "internal_error",
    "method_not_allowed",
    "not_found",
    "service_unavailable",
    "status_body",
    "status_response",
    "unauthorized",
]


class StatusDetails(TypedDict, total=False):
    name: str
    group: str
    kind: str


class StatusBody(TypedDict):
    kind: str
    apiVersion: str
    metadata: dict[str, str]
    status: str
    message: str
    reason: str
    code: int
    details: NotRequired[StatusDetails]


def status_body(
    code: int, reason: str, message: str, details: StatusDetails | None = None
) -> StatusBody:
    body: StatusBody = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def status_response(
    code: int,
    reason: str,
    message: str,
    *,
    details: StatusDetails | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    payload = json.dumps(status_body(code, reason, message, details), separators=(",", ":"))
    return web.Response(
        status=code,
        body=payload.encode(),
        content_type="application/json",
        headers=headers,
    )


def not_found(message: str, *, details: StatusDetails | None = None) -> web.Response:
    """404 NotFound: unknown metric, no matching series, or a path that is not served."""
    return status_response(404, "NotFound", message, details=details)


def bad_request(message: str) -> web.Response:
    """400 BadRequest: the request itself is wrong (e.g. an invalid label selector)."""
    return status_response(400, "BadRequest", message)


def unauthorized() -> web.Response:
    """401 Unauthorized, worded as the Go apiserver does (the reason goes to the log only)."""
    return status_response(401, "Unauthorized", "Unauthorized")


def forbidden(message: str, *, details: StatusDetails | None = None) -> web.Response:
    """403 Forbidden: authenticated, but a SubjectAccessReview denied the request."""
    return status_response(403, "Forbidden", message, details=details)


def method_not_allowed(method: str, allowed: list[str]) -> web.Response:
    """405 MethodNotAllowed with an ``Allow`` header listing what is served."""
    return status_response(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({method}); "
        f"allowed: {', '.join(allowed)}",
        headers={"Allow": ", ".join(allowed)},
    )


def service_unavailable(message: str) -> web.Response:
    """503 ServiceUnavailable: the value is not known right now (stale or NaN); HPA holds."""
    return status_response(503, "ServiceUnavailable", message)


def internal_error(message: str = "an internal error occurred") -> web.Response:
    """500 InternalError with a generic message; details go to the log, not the client."""
    return status_response(500, "InternalError", f"Internal error occurred: {message}")
