"""An open-loop HTTPS load client that costs little CPU per request (the API bench's default
instrument).

The aiohttp client needs about 0.45 ms of CPU per request: at 2,000 req/s it takes most of a
core beside a server that needs most of the other, and its own scheduling delays land in the
measured latency. This one keeps ``connections`` TLS keep-alive connections as bare asyncio
protocols on uvloop, sends pre-built ``GET`` requests and reads each answer by its
``Content-Length`` (the server under test always sends one), so it spends a small fraction of
that per request.

Open loop, as ``loadtest.bench.api.drive``: request ``i`` is due at ``t0 + i/rate``; it goes
out on an idle connection, or waits for the first one to free up, and its latency runs from
its due time to the end of its body, so a slow server cannot slow the schedule down and any
wait (for a connection, for a timer tick) counts against the server, never for it. Times are
``time.perf_counter()``: uvloop's ``loop.time()`` moves in whole milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import re
import ssl
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

CONNECTIONS = 32
"""Keep-alive connections opened before the run: far more than are ever busy at once when
the server keeps up (2,000 req/s at 1 ms is 2 in flight)."""


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, answered: Callable[[_Connection, int | None], None]) -> None:
        self._answered = answered
        self._buffer = bytearray()
        self._needed: int | None = None  # bytes of the answer in flight, head included
        self._status = 0
        self.transport: asyncio.Transport | None = None
        self.due: float | None = None  # of the request in flight; None: idle
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._needed is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            self._status = int(head[9:12])
            length = _CONTENT_LENGTH.search(head)
            if length is None:  # chunked or close-delimited: not what the server under test sends
                self._fail()
                return
            self._needed = end + 4 + int(length[1])
        if len(self._buffer) >= self._needed:
            del self._buffer[: self._needed]
            self._needed = None
            self._answered(self, self._status)

    def _fail(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.due is not None:
            self._answered(self, None)


async def drive_lean(config: dict[str, Any]) -> dict[str, Any]:
    """Run the open-loop schedule of ``config`` (as ``drive``'s) and return the same result:
    sent, errors, elapsed_s, latencies_s, statuses."""
    gc.disable()  # the instrument must not pause on its own (see ``drive``)
    loop = asyncio.get_running_loop()
    url = urlsplit(config["base_url"])
    host = config.get("server_hostname") or url.hostname
    cafile = config.get("cafile")
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        context = ssl.create_default_context(cafile=cafile)
        if not cafile:  # a server's self-signed certificate: do not verify
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n".encode()
        for path in config["paths"]
    ]
    rate: float = config["rate"]
    total = int(rate * config["duration"])
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    measured = 0  # answers (or losses) of requests of the schedule
    idle: deque[_Connection] = deque()
    waiting: deque[tuple[bytes, float]] = deque()
    finished = asyncio.Event()

    def answered(connection: _Connection, status: int | None) -> None:
        nonlocal errors, measured
        due, connection.due = connection.due, None
        assert due is not None
        name = "no answer" if status is None else str(status)
        statuses[name] = statuses.get(name, 0) + 1
        if status != 200:
            errors += 1
        if due > 0:  # warm-up requests are due at 0 and not measured
            measured += 1
            if status is not None:
                latencies.append(perf_counter() - due)
        if not connection.lost:
            if waiting:
                connection.send(*waiting.popleft())
            else:
                idle.append(connection)
        if measured == total:
            finished.set()

    connections: list[_Connection] = []
    for _ in range(config.get("connections", CONNECTIONS)):
        _, connection = await loop.create_connection(
            lambda: _Connection(answered),
            url.hostname,
            url.port,
            ssl=context,
            server_hostname=host if context is not None else None,
        )
        connections.append(connection)
    for connection in connections:  # warm-up: one request each, not measured
        connection.send(requests[0], 0.0)
    deadline = loop.time() + 10.0
    while any(c.due is not None for c in connections) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    statuses.clear()  # each answered warm-up request put its connection in ``idle``
    errors = 0

    start = perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = perf_counter()
        while sent < total and start + sent / rate <= now:
            request, due = requests[sent % len(requests)], start + sent / rate
            while idle and idle[0].lost:
                idle.popleft()
            if idle:
                idle.popleft().send(request, due)
            else:
                waiting.append((request, due))
            sent += 1
        if sent < total:
            await asyncio.sleep(max(0.0, start + sent / rate - perf_counter()))
    try:
        await asyncio.wait_for(finished.wait(), config.get("timeout_s", 30.0))
    except TimeoutError:
        unanswered = total - measured
        errors += unanswered
        statuses["no answer"] = statuses.get("no answer", 0) + unanswered
    elapsed = perf_counter() - start
    for connection in connections:
        if connection.transport is not None:
            connection.transport.abort()
    return {
        "sent": total,
        "errors": errors,
        "elapsed_s": elapsed,
        "latencies_s": latencies,
        "statuses": statuses,
    }
