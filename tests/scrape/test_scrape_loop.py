"""Scraping: independent loops, timeouts, size caps, malformed bodies, keep-alive, backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from adapter.api.tls import bound_port, start_server
from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.scrape import ScrapeError, ScrapeLoop, TargetState, fetch_text
from adapter.signals import ReadingHistory
from adapter.targets import Target
from tests.support.helpers import async_wait_until
from tests.support.paths import TRITON_FIXTURE

FIXTURE = TRITON_FIXTURE.read_text()
PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = await start_server(app, "127.0.0.1:0", None)
        runners.append(runner)
        return f"http://127.0.0.1:{bound_port(runner)}/metrics"

    yield start
    for runner in runners:
        await runner.cleanup()


def make_loop(
    url: str,
    on_reading: Callable[[], None] = lambda: None,
    interval: float = 0.05,
    timeout: float = 0.5,
    max_bytes: int = 1 << 20,
) -> ScrapeLoop:
    state = TargetState(Target.create(url, "triton", {"namespace": "t"}), ReadingHistory(60))
    return ScrapeLoop(
        state,
        PARSER,
        interval_seconds=interval,
        timeout_seconds=timeout,
        max_bytes=max_bytes,
        backoff_max_seconds=1.0,
        sum_versions=True,
        on_reading=on_reading,
        rng=random.Random(1),
    )


async def test_reads_a_real_capture(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=FIXTURE)

    url = await serve(handler)
    reading = await make_loop(url).scrape_once()
    assert reading.models[("resnet", "")].pending == 47
    assert reading.models[("bert", "")].success == 344


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ("nv_gpu_utilization{gpu=broken} 1\n", 200, "malformed"),
        ("oops", 503, "http_503"),
        ("x" * 5000, 200, "too_large"),
    ],
)
async def test_bad_answers_are_errors_with_a_reason(
    serve: Callable[[Handler], Awaitable[str]], body: str, status: int, reason: str
) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=body, status=status)

    url = await serve(handler)
    with pytest.raises(ScrapeError) as caught:
        await make_loop(url, max_bytes=2048).scrape_once()
    assert caught.value.reason == reason


async def test_streamed_body_over_the_cap_is_refused(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to check up front
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"# padding line to exceed the cap\n" * 10)
        await response.write_eof()
        return response

    url = await serve(handler)
    with pytest.raises(ScrapeError, match="exceeds 4096 bytes"):
        await fetch_text(url, 1.0, 4096)


async def test_dead_target_is_a_connection_error() -> None:
    with pytest.raises(ScrapeError) as caught:
        await fetch_text("http://127.0.0.1:9/metrics", 1.0, 1024)
    assert caught.value.reason == "connection"


async def test_slow_target_does_not_delay_others(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text=FIXTURE)

    async def fast(_: web.Request) -> web.Response:
        return web.Response(text=FIXTURE)

    slow_url, fast_url = await serve(slow), await serve(fast)
    slow_loop = make_loop(slow_url, timeout=0.3)
    fast_loop = make_loop(fast_url)
    tasks = [asyncio.create_task(slow_loop.run()), asyncio.create_task(fast_loop.run())]
    try:
        await async_wait_until(lambda: fast_loop.state.scrapes >= 10, 5.0, 0.01, "10 fast scrapes")
        assert slow_loop.state.scrapes == 0
        await async_wait_until(
            lambda: slow_loop.state.last_error == "timeout", 5.0, 0.01, "slow scrape timeout"
        )
    finally:
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_failed_scrape_keeps_previous_readings(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    answers = [FIXTURE, "nv_inference_request_success{model=bad} 1\n"]

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=answers[0] if len(answers) == 2 else answers[-1])

    url = await serve(handler)
    loop = make_loop(url)
    await loop._tick()
    answers.pop(0)
    await loop._tick()
    assert loop.state.scrapes == 1
    assert loop.state.last_error == "malformed"
    assert loop.state.history.newest is not None
    assert loop.state.history.newest.models[("resnet", "")].pending == 47


async def test_connections_are_kept_alive(serve: Callable[[Handler], Awaitable[str]]) -> None:
    peers: set[object] = set()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport)
        return web.Response(text=FIXTURE)

    url = await serve(handler)
    loop = make_loop(url)
    for _ in range(5):
        await loop._tick()
    assert loop.state.scrapes == 5
    assert len(peers) == 1  # one TCP connection served all five scrapes


def test_backoff_grows_with_failures_and_is_jittered() -> None:
    state = TargetState(Target.create("http://127.0.0.1:1/m", "triton", {}), ReadingHistory(60))
    loop = ScrapeLoop(
        state,
        PARSER,
        interval_seconds=1.0,
        timeout_seconds=1.0,  # type: ignore[arg-type]
        max_bytes=1024,
        backoff_max_seconds=30.0,
        sum_versions=True,
        on_reading=lambda: None,
        rng=random.Random(7),
    )
    assert loop.next_delay() == 1.0
    state.consecutive_failures = 3
    delays = [loop.next_delay() for _ in range(50)]
    assert all(1.0 <= d <= 8.0 for d in delays)
    assert len(set(delays)) > 40  # jittered: targets failing together do not retry in lockstep
    state.consecutive_failures = 50
    assert max(loop.next_delay() for _ in range(200)) <= 30.0  # capped
    assert max(loop.next_delay() for _ in range(200)) > 15.0
