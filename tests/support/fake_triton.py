"""A Triton-like /metrics for service tests: the request counter grows at ``base + swing *
sin(2 pi t / period)`` per second, the queue is constant, and ``failing`` makes it answer 503."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from adapter.api.tls import bound_port, start_server


@dataclass
class FakeTriton:
    base: float
    swing: float = 0.0
    depth: float = 0.0
    period_seconds: float = 20.0
    model: str = "resnet"
    failing: bool = False
    url: str = ""
    started: float = field(default_factory=time.monotonic)

    def completed(self) -> float:
        t = time.monotonic() - self.started
        w = 2 * math.pi / self.period_seconds
        return self.base * t + self.swing * (1 - math.cos(w * t)) / w

    async def metrics(self, _: web.Request) -> web.Response:
        if self.failing:
            return web.Response(status=503, text="unavailable")
        done = self.completed()
        m = f'model="{self.model}",version="1"'
        return web.Response(
            text=f"nv_inference_request_success{{{m}}} {done:.6f}\n"
            f'nv_inference_request_failure{{{m},reason="OTHER"}} 0\n'
            f"nv_inference_pending_request_count{{{m}}} {self.depth}\n"
        )


@contextlib.asynccontextmanager
async def serving(*fakes: FakeTriton) -> AsyncIterator[tuple[FakeTriton, ...]]:
    """Serve each fake on its own loopback port (sets ``url``); stop them on exit."""
    runners = []
    try:
        for fake in fakes:
            app = web.Application()
            app.router.add_get("/metrics", fake.metrics)
            runner = await start_server(app, "127.0.0.1:0", None)
            runners.append(runner)
            fake.url = f"http://127.0.0.1:{bound_port(runner)}/metrics"
        yield fakes
    finally:
        for runner in runners:
            await runner.cleanup()
