"""The listener's tests run on both event loops the service can run on.

``serve`` runs on uvloop when it is installed (it is a runtime dependency) and on asyncio's
own loop otherwise; the connection guard wraps TLS around accepted sockets itself, which
depends on when each loop starts reading, so its tests run on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

ON_BOTH_LOOPS = {
    "tests.api.test_connection_limits",
    "tests.api.test_tls",
    "tests.api.test_server",
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    module = getattr(item, "module", None)
    if module is None or module.__name__ not in ON_BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop}  # one factory: no test id suffix
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
