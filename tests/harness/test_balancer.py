"""The replicas' load balancer spreads connections like a Kubernetes Service and drains."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from adapter.api.tls import bound_port, start_server
from loadtest.harness.balancer import Balancer
from tests.support.helpers import async_wait_until


async def backend(name: str, release: asyncio.Event | None = None) -> web.AppRunner:
    async def who(_: web.Request) -> web.Response:
        if release is not None:
            await release.wait()
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/", who)
    return await start_server(app, "127.0.0.1:0", None)


@pytest.fixture
async def two() -> AsyncIterator[tuple[web.AppRunner, web.AppRunner]]:
    a, b = await backend("a"), await backend("b")
    yield a, b
    await a.cleanup()
    await b.cleanup()


async def ask(port: int, count: int) -> Counter[str]:
    """``count`` requests, each on its own connection (``Connection: close``)."""
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(
                f"http://127.0.0.1:{port}/", headers={"Connection": "close"}
            ) as response:
                seen[await response.text()] += 1
    return seen


async def test_round_robin_alternates_per_connection(
    two: tuple[web.AppRunner, web.AppRunner],
) -> None:
    balancer = Balancer("round-robin")
    port = await balancer.start()
    try:
        balancer.set_backends([("127.0.0.1", bound_port(r)) for r in two])
        assert await ask(port, 10) == {"a": 5, "b": 5}
    finally:
        await balancer.stop()


async def test_random_reaches_every_backend_and_removal_stops_new_connections(
    two: tuple[web.AppRunner, web.AppRunner],
) -> None:
    balancer = Balancer("random", seed=3)
    port = await balancer.start()
    a, b = (("127.0.0.1", bound_port(r)) for r in two)
    try:
        balancer.set_backends([a, b])
        first = await ask(port, 40)
        assert first["a"] >= 8 and first["b"] >= 8
        balancer.remove(a)
        assert await ask(port, 10) == {"b": 10}
        assert balancer.connections[a] == first["a"]
    finally:
        await balancer.stop()


async def test_removed_backend_finishes_its_open_requests() -> None:
    release = asyncio.Event()
    slow = await backend("slow", release)
    balancer = Balancer("round-robin")
    port = await balancer.start()
    target = ("127.0.0.1", bound_port(slow))
    try:
        balancer.add(target)
        request = asyncio.ensure_future(ask(port, 1))
        await async_wait_until(lambda: balancer.active(target) == 1, timeout=10)
        balancer.remove(target)  # draining: no new connection, the open one goes on
        release.set()
        assert await request == {"slow": 1}
        await async_wait_until(lambda: balancer.active(target) == 0, timeout=10)
    finally:
        await balancer.stop()
        await slow.cleanup()


async def test_no_ready_backend_is_a_failed_request_not_a_wait() -> None:
    balancer = Balancer()
    port = await balancer.start()
    try:
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(ask(port, 1), timeout=10)
        assert balancer.refused >= 1  # (aiohttp may retry an idempotent GET once)
    finally:
        await balancer.stop()


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="choose random, round-robin"):
        Balancer("least-loaded")  # type: ignore[arg-type]
