"""An aiohttp app served from a background thread, for synchronous tests (hypothesis)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from adapter.api.tls import bound_port, start_server


@contextmanager
def served_in_thread(
    make_app: Callable[[], web.Application], ssl_context: ssl.SSLContext | None = None
) -> Iterator[int]:
    """Serve ``make_app()`` on a free loopback port in another thread; yield the port."""
    loop = asyncio.new_event_loop()

    async def start() -> web.AppRunner:
        return await start_server(make_app(), "127.0.0.1:0", ssl_context)

    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()
    try:
        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
        try:
            yield bound_port(runner)
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=60)
        loop.close()
