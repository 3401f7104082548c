"""loadtest.harness.api_client against the real API app serving a fixed snapshot over HTTPS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from adapter.api.server import create_app
from adapter.api.tls import bound_port, make_server_ssl_context, start_server
from loadtest.harness.api_client import API_PREFIX, ApiResponseError, Served, read_metric
from tests.support.api_support import NOW, FakeClock, make_provider

# tests.support.api_support serves every prod value from a scrape 2 s before NOW (a whole second).
SCRAPED = NOW - 2.0


async def _serve(app: web.Application) -> AsyncIterator[int]:
    context = make_server_ssl_context(None, None, hostnames=[])
    runner = await start_server(app, "127.0.0.1:0", context)
    try:
        yield bound_port(runner)
    finally:
        await runner.cleanup()


@pytest.fixture
async def api_port() -> AsyncIterator[int]:
    async for port in _serve(create_app(make_provider(FakeClock()))):
        yield port


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.mark.parametrize(
    ("namespace", "metric", "selector", "expected"),
    [
        pytest.param(
            "prod",
            "triton_request_rate",
            "",
            Served(200, {"resnet": 0.08}, {"resnet": SCRAPED}),
            id="value-and-timestamp",
        ),
        pytest.param(
            "prod",
            "triton_queue_depth",
            "model=bert",
            Served(200, {"bert": 12000.0}, {"bert": SCRAPED}),
            id="selector",
        ),
        pytest.param("prod", "triton_queue_time_seconds", "", Served(503), id="stale-is-503"),
        pytest.param("prod", "no_such_metric", "", Served(404), id="unknown-is-404"),
    ],
)
async def test_read_metric_returns_status_values_and_timestamps(
    session: aiohttp.ClientSession,
    api_port: int,
    namespace: str,
    metric: str,
    selector: str,
    expected: Served,
) -> None:
    assert await read_metric(session, api_port, namespace, metric, selector) == expected


async def test_two_series_of_one_model_are_an_error(
    session: aiohttp.ClientSession, api_port: int
) -> None:
    with pytest.raises(ApiResponseError, match="several series of model 'resnet'"):
        await read_metric(session, api_port, "prod", "triton_queue_depth")


async def test_a_body_that_is_not_json_is_an_error(session: aiohttp.ClientSession) -> None:
    async def text(_: web.Request) -> web.Response:
        return web.Response(text="upstream connect error", status=503)

    app = web.Application()
    app.router.add_get(f"{API_PREFIX}/prod/triton_queue_depth", text)
    async for port in _serve(app):
        with pytest.raises(ApiResponseError, match=r"HTTP 503 with Content-Type 'text/plain"):
            await read_metric(session, port, "prod", "triton_queue_depth")
