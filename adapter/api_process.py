"""The API in a process of its own (``server.api_process: true``).

One Python process has one core's worth of interpreter: scraping 2,000 targets every second
takes most of it, and a publish holds its event loop for a few hundred milliseconds, so the
API's latency in the same process follows the scrapes. With ``server.api_process`` the main
process (discovery, scraping, signals, policies, the live page, ``explain``, the KEDA
scaler) starts one child that answers ``listen``: the external and custom metrics APIs, API
discovery, OpenAPI, the health probes and its own ``/metrics``, with the same TLS, delegated
auth and connection limits. The child reads each published snapshot and the main process's
health from the snapshot feed (:mod:`adapter.snapshot_feed`) and serves from memory; the
main process serves its full app on ``server.main_listen``.

Either process exiting ends the other: the child exits when the feed closes, and the main
process stops (``ApiProcessExitedError``) when the child exits, so the pod restarts whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from adapter.api.server import create_app
from adapter.api.tls import CONNECTION_STATS_KEY, bound_port
from adapter.config import Config
from adapter.event_loop import running_loop_name
from adapter.listener import StartupError, listen, start_auth, start_serving
from adapter.logging_setup import configure_logging
from adapter.memory import (
    collect_cycles_less_often,
    freeze_startup_objects,
    keep_large_buffers_out_of_the_heap,
)
from adapter.metrics_catalog import SERVED_METRICS
from adapter.provider import SnapshotCustomMetricsProvider, SnapshotProvider
from adapter.selfmetrics import SelfMetrics, merged_exposition
from adapter.snapshot_feed import (
    CONFIG,
    METRICS,
    METRICS_WANTED,
    FeedClosedError,
    FeedReader,
    FeedWriter,
    Health,
    frame,
    read_frame,
    silence_limit,
)

log = logging.getLogger(__name__)

LISTENING = "listening"  # (LISTENING, port): the child serves
FAILED = "failed"  # (FAILED, message): the child cannot start; the message names what to fix

START_TIMEOUT_SECONDS = 120.0
"""How long the main process waits for the child to listen (imports, TLS, auth lookups)."""

MAIN_METRICS_TIMEOUT_SECONDS = 5.0
"""How long the API process's /metrics waits for the main process's part of it."""

STOP_TIMEOUT_SECONDS = 10.0
"""How long the child has to finish its requests after SIGTERM before it is killed."""


class ApiProcessExitedError(StartupError):
    """The API process exited while the service ran: the service stops so the pod restarts."""


@dataclass
class ApiProcess:
    """The main process's handle on its API process: the feed it writes, the child's port,
    and ``exited``, done (with the exit code) when the child has exited."""

    feed: FeedWriter
    port: int
    process: asyncio.subprocess.Process
    exited: asyncio.Task[int]

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_SECONDS``."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                self.process.kill()
        with contextlib.suppress(asyncio.CancelledError):
            await self.exited


async def start_api_process(
    config: Config,
    stack: contextlib.AsyncExitStack,
    health: Callable[[], Health],
    exposition: Callable[[], bytes],
) -> ApiProcess:
    """Start the child, send it ``config``, and wait until it listens on ``config.listen``;
    StartupError with the child's own message when it cannot (port in use, TLS files, auth).
    ``health`` is sent with every snapshot and every second; ``exposition`` (this process's
    /metrics) whenever the child's /metrics is scraped."""
    ours, theirs = socket.socketpair()
    command = [
        sys.executable,
        "-m",
        "adapter",
        "api-process",
        "--feed-fd",
        str(theirs.fileno()),
        "--event-loop",
        running_loop_name(),
    ]
    try:
        process = await asyncio.create_subprocess_exec(
            *command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
        )
    finally:
        theirs.close()
    reader, writer = await asyncio.open_connection(sock=ours)
    feed = FeedWriter(writer, health)
    feed.send((CONFIG, config))
    try:
        reply = await asyncio.wait_for(read_frame(reader), START_TIMEOUT_SECONDS)
    except (FeedClosedError, TimeoutError):
        reply = (FAILED, "")
    except BaseException:  # cancelled while starting: leave no child behind
        process.kill()
        writer.close()
        raise
    if reply[0] != LISTENING:
        try:
            code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            code = await process.wait()
        writer.close()
        raise StartupError(reply[1] or f"the API process did not start (exit code {code})")
    exited = asyncio.create_task(_watch(process, reader, feed, exposition), name="API process")
    api = ApiProcess(feed, int(reply[1]), process, exited)
    stack.push_async_callback(_close, writer)
    stack.push_async_callback(api.stop)
    heartbeat = asyncio.create_task(feed.heartbeat(), name="snapshot feed heartbeat")
    stack.callback(heartbeat.cancel)
    log.info("API process serving", extra={"pid": process.pid, "port": api.port})
    return api


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):  # the child may be gone: the feed is broken
        await writer.wait_closed()


async def _watch(
    process: asyncio.subprocess.Process,
    reader: asyncio.StreamReader,
    feed: FeedWriter,
    exposition: Callable[[], bytes],
) -> int:
    """Answer the child's requests for this process's /metrics; the child's exit code, once
    its end of the feed has closed and it has exited."""
    with contextlib.suppress(FeedClosedError):
        while True:
            if (await read_frame(reader))[0] == METRICS_WANTED:
                feed.send((METRICS, exposition()))
    return await process.wait()


# --- the child ----------------------------------------------------------------------------


async def serve_api_process(feed_fd: int) -> int:
    """The child's life: read the config, listen, serve the feed's snapshots until the feed
    closes or SIGTERM. Returns the exit code (2: could not start, the reason sent first)."""
    keep_large_buffers_out_of_the_heap()
    collect_cycles_less_often()
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=feed_fd))
    message = await read_frame(reader)
    if message[0] != CONFIG or not isinstance(message[1], Config):
        raise FeedClosedError("snapshot feed: the first message is not the config")
    config: Config = message[1]
    configure_logging(config.log.level, config.log.format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # ^C reaches both: the main decides
    try:
        async with contextlib.AsyncExitStack() as stack:
            feed = FeedReader(silence_limit(config.scrape.interval_seconds))
            try:
                port = await _start_serving(config, feed, writer, stack)
            except Exception as err:  # the main process prints it, as `serve` would its own
                if not isinstance(err, StartupError | OSError | ValueError):
                    log.exception("API process: cannot start")
                writer.write(frame((FAILED, f"API process: {err}")))
                await writer.drain()
                return 2
            writer.write(frame((LISTENING, port)))
            freeze_startup_objects()
            feeding = asyncio.create_task(feed.run(reader), name="snapshot feed")
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait((feeding, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if feeding.done():
                log.error("snapshot feed closed: the main process is gone; stopping")
                with contextlib.suppress(FeedClosedError, asyncio.CancelledError):
                    feeding.result()
                return 1
            feeding.cancel()
            log.info("API process shutting down")
            return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _start_serving(
    config: Config,
    feed: FeedReader,
    feed_writer: asyncio.StreamWriter,
    stack: contextlib.AsyncExitStack,
) -> int:
    """The child's HTTPS app on ``config.listen``; its bound port.

    Its /metrics is its own (requests, connections, its process) and the main process's
    (scraping, served values, forecasts), every sample labelled ``process="api"`` or
    ``process="main"``: the served values are exported once, by the main process."""
    metrics = SelfMetrics(max_age_seconds=config.signals.max_age_seconds)

    async def handle_metrics(_request: web.Request) -> web.Response:
        parts = [("api", metrics.exposition())]
        main = await feed.main_metrics(feed_writer, MAIN_METRICS_TIMEOUT_SECONDS)
        if main is not None:
            parts.append(("main", main))
        return web.Response(
            body=merged_exposition(parts), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    auth_setup = await start_auth(config.auth)
    if auth_setup is not None:
        stack.push_async_callback(auth_setup.close)
    serving = start_serving(config, auth_setup)
    max_age = config.signals.max_age_seconds
    app = create_app(
        SnapshotProvider(SERVED_METRICS, feed.snapshot, time.time, max_age),
        readiness=feed.readiness,
        liveness=feed.liveness,
        auth=auth_setup.auth if auth_setup is not None else None,
        observers=(metrics.middleware,),
        custom=SnapshotCustomMetricsProvider(feed.snapshot, time.time, max_age),
    )
    app.router.add_get("/metrics", handle_metrics, allow_head=False)
    metrics.observe_serving_certificate(serving.tls.context)
    runner = await listen(app, config.listen, serving, config.server)
    stack.push_async_callback(runner.cleanup)
    metrics.serve_connection_stats(app[CONNECTION_STATS_KEY])
    serving.reloader.start()
    stack.push_async_callback(serving.reloader.stop)
    port = bound_port(runner)
    log.info(
        "API process: serving external.metrics.k8s.io/v1beta1 and custom.metrics.k8s.io",
        extra={"listen": config.listen, "port": port, "event_loop": running_loop_name()},
    )
    return port
