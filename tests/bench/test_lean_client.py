"""The API bench's load client (loadtest/bench/lean_client.py) is a measuring instrument: every
request of the schedule goes out once, each answer is counted once with its status, and a
server that never answers shows up as errors, not as a hang or a shorter run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from adapter.api.tls import bound_port, make_server_ssl_context
from loadtest.bench.lean_client import drive_lean

RATE = 400.0
DURATION = 0.5
CONNECTIONS = 4


class Counting:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.release = asyncio.Event()

    async def answer(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        if request.path == "/busy":
            return web.json_response({"reason": "busy"}, status=503)
        if request.path == "/never" and self.hits[request.path] > CONNECTIONS:  # after warm-up
            await self.release.wait()
        if request.path.startswith("/slow"):  # requests overlap: several connections busy
            await asyncio.sleep(0.008)
        return web.Response(text="ok")


@pytest.fixture(params=[False, True], ids=["http", "https"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Counting]]:
    counting = Counting()
    app = web.Application()
    app.router.add_get("/{tail:.*}", counting.answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = make_server_ssl_context(None, None, hostnames=[]) if request.param else None
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    scheme = "https" if request.param else "http"
    yield f"{scheme}://127.0.0.1:{bound_port(runner)}", counting
    counting.release.set()
    await runner.cleanup()


def schedule(base_url: str, paths: list[str], **extra: object) -> dict[str, object]:
    return {
        "base_url": base_url,
        "paths": paths,
        "rate": RATE,
        "duration": DURATION,
        "connections": CONNECTIONS,
        **extra,
    }


async def test_every_request_goes_out_once_and_is_measured_once(
    server: tuple[str, Counting],
) -> None:
    base_url, counting = server
    result = await drive_lean(schedule(base_url, ["/slow/a", "/slow/b"]))
    total = int(RATE * DURATION)
    assert result["sent"] == total
    assert result["errors"] == 0
    assert result["statuses"] == {"200": total}
    assert len(result["latencies_s"]) == total
    assert all(0 < latency < 5 for latency in result["latencies_s"])
    # the warm-up sends one request per connection, on the first path
    assert counting.hits == {"/slow/a": total // 2 + CONNECTIONS, "/slow/b": total // 2}
    assert result["elapsed_s"] >= DURATION * 0.9  # the schedule was kept, not rushed


async def test_non_200_answers_are_errors_by_status(server: tuple[str, Counting]) -> None:
    base_url, _ = server
    result = await drive_lean(schedule(base_url, ["/busy", "/a"]))
    total = int(RATE * DURATION)
    assert result["statuses"] == {"503": total // 2, "200": total // 2}
    assert result["errors"] == total // 2


async def test_a_server_that_stops_answering_gives_errors_within_the_timeout(
    server: tuple[str, Counting],
) -> None:
    base_url, _ = server
    result = await drive_lean(schedule(base_url, ["/never"], timeout_s=1.0))
    total = int(RATE * DURATION)
    assert result["errors"] == total
    assert result["statuses"] == {"no answer": total}
    assert result["latencies_s"] == []
