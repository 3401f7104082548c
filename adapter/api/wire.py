"""Wire formats shared by the API groups: JSON answers as Go servers send them, and
``metav1.Time``."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from aiohttp import web

__all__ = ["json_response", "rfc3339_seconds"]


def rfc3339_seconds(unix_seconds: float) -> str:
    """``metav1.Time`` JSON: UTC, whole seconds (truncated, as Go's RFC3339 layout), ``Z``."""
    return _rfc3339(int(unix_seconds // 1))


@functools.lru_cache(maxsize=1024)  # the seconds of the series served now: a few hundred
def _rfc3339(whole_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole_seconds))


def json_response(body: Any, *, headers: dict[str, str] | None = None) -> web.Response:
    """A compact JSON answer whose Content-Type is exactly ``application/json``."""
    # body= (bytes) keeps the header exactly "application/json", as Go servers send it
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )
