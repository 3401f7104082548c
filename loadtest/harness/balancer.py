"""A small TCP load balancer in front of the replicas, as a Kubernetes Service spreads load.

kube-proxy chooses a backend once per *connection*, at random (iptables mode) or in turn
(IPVS round-robin), among the Service's ready endpoints; everything on that connection then
goes to that pod. This balancer does the same on loopback: each accepted connection is piped
to one ready backend, chosen at random (the default) or round-robin. A client that wants each
request balanced opens a connection per request (the replay sends ``Connection: close``);
HTTP/2 (gRPC) multiplexes every request on one connection and so reaches one pod, as behind a
real Service.

Backends join when their replica is ready and leave when it is removed: a removed backend
gets no new connection while the ones it has run to completion (:meth:`Balancer.active`
counts them, so the replica manager can wait for the drain). With no backend at all a new
connection is closed at once: the client sees a failed request, never a silent wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import Counter
from collections.abc import Iterable
from typing import Literal

log = logging.getLogger(__name__)

BalancePolicy = Literal["random", "round-robin"]
BALANCE_POLICIES: tuple[str, ...] = ("random", "round-robin")
Backend = tuple[str, int]  # (host, port)

_CHUNK = 65536


class Balancer:
    """TCP proxy on ``127.0.0.1:port`` over a changing set of backends."""

    def __init__(self, policy: BalancePolicy = "random", *, seed: int | None = None) -> None:
        if policy not in BALANCE_POLICIES:
            raise ValueError(f"balancer policy {policy!r}: choose {', '.join(BALANCE_POLICIES)}")
        self.policy = policy
        self._rng = random.Random(seed)
        self._backends: list[Backend] = []
        self._turn = itertools.count()
        self._active: Counter[Backend] = Counter()
        self.connections: Counter[Backend] = Counter()  # connections ever sent to each backend
        self.refused = 0  # connections closed because no backend was ready
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- backends ---------------------------------------------------------------------------
    @property
    def backends(self) -> tuple[Backend, ...]:
        return tuple(self._backends)

    def add(self, backend: Backend) -> None:
        if backend not in self._backends:
            self._backends.append(backend)
            log.info("backend added", extra={"backend": f"{backend[0]}:{backend[1]}"})

    def remove(self, backend: Backend) -> None:
        """No new connection goes to ``backend``; its open ones finish (see :meth:`active`)."""
        if backend in self._backends:
            self._backends.remove(backend)
            log.info("backend removed", extra={"backend": f"{backend[0]}:{backend[1]}"})

    def set_backends(self, backends: Iterable[Backend]) -> None:
        wanted = list(dict.fromkeys(backends))
        for gone in [b for b in self._backends if b not in wanted]:
            self.remove(gone)
        for new in wanted:
            self.add(new)

    def active(self, backend: Backend) -> int:
        """Connections to ``backend`` still open (requests in flight, with one per request)."""
        return self._active[backend]

    def _choose(self) -> Backend | None:
        if not self._backends:
            return None
        if self.policy == "random":
            return self._rng.choice(self._backends)
        return self._backends[next(self._turn) % len(self._backends)]

    # -- serving ----------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the bound port (``port`` 0: a free one)."""
        self._server = await asyncio.start_server(self._accept, host, port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._pipes.add(task)
        backend = self._choose()
        try:
            if backend is None:
                self.refused += 1
                return
            self._active[backend] += 1
            self.connections[backend] += 1
            try:
                await self._pipe_to(backend, reader, writer)
            finally:
                self._active[backend] -= 1
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._pipes.discard(task)

    async def _pipe_to(
        self, backend: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*backend)
        except OSError:
            return  # the client sees its connection closed: a failed request, counted there
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            with contextlib.suppress(Exception):
                up_writer.close()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close ``sink`` so the other side sees the end."""
    try:
        while True:
            data = await source.read(_CHUNK)
            if not data:
                break
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
