"""Slow, idle, excess and malformed clients (adapter/api/connections.py), over real sockets.

Each bound is tested by a client that would otherwise hold the connection for ever: the
server must close it after the configured time (generous deadlines: the machine is shared),
and a normal client must still get its answers.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from adapter.api.connections import ConnectionStats
from adapter.api.server import create_app
from adapter.api.tls import CONNECTION_STATS_KEY, bound_port, make_server_ssl_context, start_server
from adapter.config import ServerConfig
from tests.support.api_support import FakeClock, make_provider
from tests.support.helpers import async_wait_until

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 1.0
PARTIAL_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: tritonscale\r\nX-Slow: "
FULL_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: tritonscale\r\n\r\n"

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Served:
    """A started server with small limits, and ways to connect to it."""

    def __init__(self, runner: web.AppRunner, app: web.Application, tls: bool) -> None:
        self.runner = runner
        self.port = bound_port(runner)
        self.stats: ConnectionStats = app[CONNECTION_STATS_KEY]
        self.tls = tls

    async def connect(self, *, handshake: bool = True) -> Streams:
        """A raw connection; ``handshake=False`` opens TCP only (TLS never starts)."""
        context = _client_tls() if self.tls and handshake else None
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=context)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"


Start = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def start(*, tls: bool, app: web.Application | None = None, **limits: float) -> Served:
        settings = {
            "header_timeout_seconds": HEADER_TIMEOUT,
            "idle_timeout_seconds": IDLE_TIMEOUT,
            **limits,
        }
        app = app or create_app(make_provider(FakeClock()))
        context = make_server_ssl_context(None, None, hostnames=[]) if tls else None
        runner = await start_server(
            app,
            "127.0.0.1:0",
            context,
            ServerConfig(**settings),  # type: ignore[arg-type]
        )
        runners.append(runner)
        return Served(runner, app, tls)

    yield start
    for runner in runners:
        await runner.cleanup()


async def _closed_by_server(streams: Streams, within: float = 20.0) -> float:
    """Seconds until the server closes the connection (EOF or reset); fails after ``within``."""
    reader, writer = streams
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        while await asyncio.wait_for(reader.read(4096), timeout=within):
            pass
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
    return loop.time() - started


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
async def test_partial_headers_are_closed_after_the_header_timeout(serve: Start, tls: bool) -> None:
    server = await serve(tls=tls)
    loop = asyncio.get_running_loop()
    connecting = loop.time()  # the deadline runs from accept: not before this
    streams = await server.connect()
    streams[1].write(PARTIAL_REQUEST)
    await streams[1].drain()
    await _closed_by_server(streams)
    assert loop.time() - connecting >= HEADER_TIMEOUT * 0.95
    await async_wait_until(lambda: server.stats.closed.get("header_timeout") == 1, timeout=10)
    assert server.stats.open == 0


async def test_a_tls_handshake_that_never_starts_is_closed(serve: Start) -> None:
    server = await serve(tls=True)
    await _closed_by_server(await server.connect(handshake=False))
    assert server.stats.closed.get("header_timeout") == 1


async def test_dripping_header_bytes_does_not_extend_the_deadline(serve: Start) -> None:
    server = await serve(tls=True)
    reader, writer = await server.connect()
    writer.write(PARTIAL_REQUEST)

    async def drip() -> None:
        while not writer.is_closing():
            writer.write(b"x")
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(drip())
    try:
        seconds = await _closed_by_server((reader, writer), within=20)
    finally:
        dripping.cancel()
    assert seconds < 15  # closed although a byte arrived every 50 ms
    assert server.stats.closed.get("header_timeout") == 1


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    serve: Start, tls: bool
) -> None:
    server = await serve(tls=tls, header_timeout_seconds=30.0)
    reader, writer = await server.connect()
    loop = asyncio.get_running_loop()
    for _ in range(2):  # two requests: the connection is reused, then left idle
        asked = loop.time()  # the idle deadline runs from the answer: not before this
        writer.write(FULL_REQUEST)
        await writer.drain()
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
        assert status.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readexactly(2), timeout=20)  # body "ok"
    await _closed_by_server((reader, writer))
    assert loop.time() - asked >= IDLE_TIMEOUT * 0.95
    await async_wait_until(lambda: server.stats.closed.get("idle_timeout") == 1, timeout=10)


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
async def test_at_the_cap_a_new_client_replaces_the_oldest_slow_one(
    serve: Start, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("adapter.api.connections.EVICTION_MIN_AGE_SECONDS", 0.0)
    cap = 5
    server = await serve(tls=tls, max_connections=cap, header_timeout_seconds=60.0)
    slow = []
    for _ in range(cap):
        streams = await server.connect()
        streams[1].write(PARTIAL_REQUEST)
        slow.append(streams)
    await async_wait_until(lambda: server.stats.open == cap, timeout=10)
    context = _client_tls() if tls else None
    connector = aiohttp.TCPConnector(ssl=context if context else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(3):  # keep-alive: the three stay open, so each one evicts a slow one
            async with session.get(f"{server.url}/healthz") as response:
                assert response.status == 200
                assert await response.text() == "ok"
            assert server.stats.open <= cap
        # the oldest slowloris connection made room; the client's own idle connection is
        # reused, so one eviction was enough
        await _closed_by_server(slow[0], within=10)
        assert server.stats.closed == {"evicted_at_cap": 1}
        # two more clients at once: two more of the oldest slow connections go
        other = aiohttp.TCPConnector(ssl=context if context else False)
        async with aiohttp.ClientSession(connector=other) as second:
            answers = await asyncio.gather(*(second.get(f"{server.url}/healthz") for _ in range(2)))
            assert [a.status for a in answers] == [200, 200]
            for answer in answers:
                answer.release()
            await _closed_by_server(slow[1], within=10)
            await _closed_by_server(slow[2], within=10)
            assert server.stats.closed == {"evicted_at_cap": 3}
            assert server.stats.open == cap
    assert not slow[3][0].at_eof() and not slow[4][0].at_eof()
    for _, writer in slow[3:]:
        writer.close()


async def test_at_the_cap_young_connections_are_kept_and_the_newcomer_refused(
    serve: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a flood, evicting connections still in their handshake would let none finish."""
    monkeypatch.setattr("adapter.api.connections.EVICTION_MIN_AGE_SECONDS", 3600.0)
    server = await serve(tls=True, max_connections=2, header_timeout_seconds=60.0)
    slow = [await server.connect() for _ in range(2)]
    await async_wait_until(lambda: server.stats.open == 2, timeout=10)
    refused = await server.connect(handshake=False)
    assert await _closed_by_server(refused, within=10) < 5
    assert server.stats.closed == {"refused_at_cap": 1}
    assert server.stats.open == 2
    for _, writer in slow:
        writer.close()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
async def test_a_flood_from_one_address_never_keeps_another_client_out(
    serve: Start, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """127.0.0.1 holds every slot with young connections; 127.0.0.2 still gets answers."""
    monkeypatch.setattr("adapter.api.connections.EVICTION_MIN_AGE_SECONDS", 3600.0)
    cap = 4
    server = await serve(tls=tls, max_connections=cap, header_timeout_seconds=60.0)
    flood = [await server.connect() for _ in range(cap)]
    await async_wait_until(lambda: server.stats.open == cap, timeout=10)
    more = await server.connect(handshake=False)  # the flooder's own newcomer: refused
    await _closed_by_server(more, within=10)
    assert server.stats.closed == {"refused_at_cap": 1}
    context = _client_tls() if tls else False
    connector = aiohttp.TCPConnector(ssl=context, local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(2):
            async with session.get(f"{server.url}/healthz") as response:
                assert (response.status, await response.text()) == (200, "ok")
    assert server.stats.closed["refused_at_cap"] == 1
    assert server.stats.closed["evicted_at_cap"] == 1  # one, for the client's one connection
    await _closed_by_server(flood[0], within=10)  # the flooder's oldest made room
    for _, writer in flood[1:]:
        writer.close()


async def test_at_the_cap_with_every_request_in_flight_a_new_connection_is_refused(
    serve: Start,
) -> None:
    release = asyncio.Event()
    started: list[None] = []

    async def slow_handler(request: web.Request) -> web.Response:
        started.append(None)
        await release.wait()
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow_handler)
    server = await serve(tls=False, app=app, max_connections=2)
    async with aiohttp.ClientSession() as session:
        in_flight = [asyncio.create_task(session.get(f"{server.url}/slow")) for _ in range(2)]
        await async_wait_until(lambda: len(started) == 2, timeout=10)
        refused = await server.connect()
        refused[1].write(FULL_REQUEST)
        assert await _closed_by_server(refused, within=10) < 5
        assert server.stats.closed.get("refused_at_cap") == 1
        release.set()
        for task in in_flight:
            async with await task as response:
                assert await response.text() == "done"


async def test_malformed_requests_are_counted_400s_with_few_log_lines_and_no_traceback(
    serve: Start, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(tls=False)
    caplog.set_level(logging.DEBUG)
    floods = 40
    for index in range(floods):
        reader, writer = await server.connect()
        garbage = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: y\r\n\r\n"
        writer.write(garbage if index % 2 else b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=20)
        writer.close()
        assert answer.split(b" ", 2)[1] == b"400", answer[:100]
    assert sum(server.stats.bad_requests.values()) == floods
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    lines = [r for r in caplog.records if r.getMessage() == "bad request answered 400"]
    assert 1 <= len(lines) <= 8  # a burst of 5, then one per 10 s
