"""Wires one running service: config -> targets -> pipeline -> provider -> HTTPS API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from adapter.api.server import create_app
from adapter.api.tls import bound_port, make_server_ssl_context, start_server
from adapter.config import Config
from adapter.metrics_catalog import SERVED_METRICS
from adapter.pipeline import Pipeline
from adapter.predictive import PredictiveStage
from adapter.provider import SnapshotProvider
from adapter.selfmetrics import SelfMetrics
from adapter.targets import StaticTargets, Target, TargetSource

log = logging.getLogger(__name__)


def static_source(config: Config) -> StaticTargets:
    return StaticTargets(Target.create(t.url, t.kind, t.labels) for t in config.targets)


@dataclass
class RunningService:
    pipeline: Pipeline
    app: web.Application
    runner: web.AppRunner
    port: int


def build_app(pipeline: Pipeline, config: Config, metrics: SelfMetrics) -> web.Application:
    max_age = config.signals.max_age_seconds
    provider = SnapshotProvider(
        SERVED_METRICS,
        pipeline.snapshot,
        time.time,
        max_age_seconds={},
        default_max_age_seconds=max_age,
    )
    app = create_app(provider, readiness=pipeline.readiness)
    app.middlewares.append(metrics.middleware)
    app.router.add_get("/metrics", metrics.handle_metrics)
    return app


@contextlib.asynccontextmanager
async def running_service(
    config: Config, source: TargetSource | None = None
) -> AsyncIterator[RunningService]:
    """Start scraping and serving; stop both on exit."""
    metrics = SelfMetrics()
    pipeline = Pipeline(
        config,
        source or static_source(config),
        stages=(PredictiveStage(config),),
        scrape_observer=metrics.observe_scrape,
        on_publish=metrics.observe_snapshot,
    )
    app = build_app(pipeline, config, metrics)
    ssl_context = make_server_ssl_context(
        config.tls.cert_file, config.tls.private_key_file, hostnames=config.tls.hostnames
    )
    runner = await start_server(app, config.listen, ssl_context)
    port = bound_port(runner)
    task = asyncio.create_task(pipeline.run(), name="pipeline")
    log.info(
        "serving external.metrics.k8s.io/v1beta1",
        extra={"listen": config.listen, "port": port, "targets": len(config.targets)},
    )
    try:
        yield RunningService(pipeline, app, runner, port)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()


async def serve_forever(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_service(config):
        await stop.wait()
        log.info("shutting down")
