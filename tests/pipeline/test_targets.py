"""Targets coming and going while the pipeline runs: no spike, no dip to zero, no stale ghost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from adapter.api.tls import bound_port, start_server
from adapter.config import load_config
from adapter.pipeline import Pipeline
from adapter.targets import Target
from tests.support.helpers import async_wait_until


class QueueSource:
    """A TargetSource driven by the test, like a discovery watch."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[frozenset[Target]] = asyncio.Queue()

    async def watch(self) -> AsyncIterator[frozenset[Target]]:
        while True:
            yield await self.queue.get()


async def counter_server(rate: float) -> tuple[web.AppRunner, str]:
    """A Triton-like /metrics whose success counter grows at ``rate`` per second."""
    started = time.monotonic()

    async def metrics(_: web.Request) -> web.Response:
        done = int(rate * (time.monotonic() - started))
        return web.Response(
            text=f'nv_inference_request_success{{model="m",version="1"}} {done}\n'
            f'nv_inference_pending_request_count{{model="m",version="1"}} 0\n'
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = await start_server(app, "127.0.0.1:0", None)
    return runner, f"http://127.0.0.1:{bound_port(runner)}/metrics"


async def test_pods_joining_and_leaving_a_group() -> None:
    (runner_a, url_a), (runner_b, url_b) = await counter_server(100), await counter_server(50)
    labels = {"namespace": "prod", "deployment": "llm"}
    pod_a = Target.create(url_a, "triton", labels)
    pod_b = Target.create(url_b, "triton", labels)
    config = load_config(
        None,
        {"scrape": {"interval_seconds": 0.1}, "signals": {"rate_window_seconds": 1.0}},
    )
    source = QueueSource()
    pipeline = Pipeline(config.scrape, config.signals, source)
    task = asyncio.create_task(pipeline.run())
    seen: list[float] = []

    def rate() -> float | None:
        points = pipeline.snapshot().points("triton_request_rate")
        if points:
            seen.append(points[0].value)
            return points[0].value
        return None

    try:
        await source.queue.put(frozenset({pod_a}))
        await async_wait_until(lambda: (rate() or 0) > 80, timeout=10, interval=0.05)
        await source.queue.put(frozenset({pod_a, pod_b}))
        await async_wait_until(lambda: (rate() or 0) > 130, timeout=10, interval=0.05)
        assert len(pipeline.snapshot().points("triton_request_rate")) == 1  # one group
        await source.queue.put(frozenset({pod_b}))
        await async_wait_until(lambda: (rate() or 999) < 70, timeout=10, interval=0.05)
        assert set(pipeline.targets) == {pod_b}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner_a.cleanup()
        await runner_b.cleanup()

    assert min(seen) > 0, "a pod joining or leaving must not read as zero load"
    assert max(seen) < 150 * 1.3, "a pod joining must not read as a spike"
