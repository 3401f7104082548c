"""What the listener does with slow, idle, excess and malformed clients.

aiohttp alone keeps a connection that never finishes its headers (or its TLS handshake) for
minutes and accepts any number of them; each TLS connection holds a 256 KiB read buffer
(``asyncio.sslproto``), so 4,000 slowloris connections took 1.3 GB. :class:`ConnectionGuard`
sits between the listening socket and aiohttp and bounds every phase, as the Go apiserver's
``ReadHeaderTimeout`` and ``IdleTimeout`` do, plus a cap on open connections (the settings
are :class:`adapter.config.ServerConfig`, the ``server:`` section):

- *header timeout*: from accept, the TLS handshake and the first request's headers must be
  done within ``header_timeout_seconds``; after a response, the next request's headers too,
  counted from its first byte;
- *idle timeout*: a keep-alive connection without a request for ``idle_timeout_seconds`` is
  closed (the Go servers' 90 s);
- *cap*: at most ``max_connections`` are open, counted on TCP connections before TLS, so a
  flood never allocates more than ``max_connections`` TLS buffers. One more makes the client
  address holding the most connections give up its oldest connection that has no request
  yet (a slowloris connection, typically), else its oldest idle one; a newcomer from that
  very address only replaces its own connections older than
  :data:`EVICTION_MIN_AGE_SECONDS`, else it is closed before any TLS work. So one address
  flooding the port churns only its own connections, and every other client (the
  aggregator, the kubelet's probes, Prometheus) still gets in.

A request the HTTP parser rejects is answered 400 by aiohttp; :class:`ProtocolErrorLog`
(aiohttp's server logger for this listener) counts it and writes a rate-limited warning,
never a traceback. Counters are in :class:`ConnectionStats` (exported as self-metrics).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import ssl
import traceback
from asyncio import sslproto
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from adapter.config import ServerConfig
from adapter.event_loop import is_uvloop
from adapter.logging_setup import LogLimiter
from adapter.memory import return_free_memory

__all__ = ["ConnectionGuard", "ConnectionStats", "ProtocolErrorLog"]

log = logging.getLogger(__name__)

_CLOSE_GRACE_SECONDS = 5.0
"""After a graceful close (idle timeout), the connection is aborted if still open."""

EVICTION_MIN_AGE_SECONDS = 1.0
"""At the cap, a newcomer from the address holding the most connections replaces only its
own connections that have waited this long (for a first request, or idle): younger ones are
left to finish their TLS handshake and headers. Evicting the youngest instead would, under a
flood, let no handshake complete."""

_TRIM_AFTER_CLOSES = 64
_TRIM_DELAY_SECONDS = 2.0
"""After 64 connections have closed, free heap pages go back to the OS 2 s later."""


@dataclass(slots=True)
class ConnectionStats:
    """What the guard did: counts since start, ``open`` now. Exported as self-metrics at each
    scrape of /metrics, so the guard only adds."""

    open: int = 0
    accepted: int = 0
    closed: dict[str, int] = field(default_factory=dict)  # reason -> connections
    bad_requests: dict[str, int] = field(default_factory=dict)  # parser error -> requests

    def count_close(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1


class _State(enum.Enum):
    NEW = "new"  # accepted; no request has started yet (TLS handshake, first headers)
    ACTIVE = "active"  # a request is being handled
    IDLE = "idle"  # between requests on a keep-alive connection
    READING = "reading"  # the next request's first bytes arrived; its headers are not done


class _Connection:
    """One accepted TCP connection and the deadline of its current phase."""

    __slots__ = (
        "app_transport",
        "deadline",
        "guard",
        "handler",
        "peer",
        "raw",
        "released",
        "state",
    )

    def __init__(
        self,
        guard: ConnectionGuard,
        raw: asyncio.Transport,
        peer: _Peer,
    ) -> None:
        self.guard = guard
        self.raw = raw
        # aiohttp's RequestHandler, made once TLS is up: a connection that never finishes
        # its handshake costs no aiohttp objects (they hold reference cycles)
        self.handler: asyncio.Protocol | None = None
        self.peer = peer
        self.app_transport: asyncio.BaseTransport | None = None  # TLS transport once made
        self.state = _State.NEW
        self.deadline: asyncio.TimerHandle | None = None
        self.released = False

    def close(self, reason: str, *, graceful: bool = False) -> None:
        """Close now (abort: no lingering buffers) or gracefully with an abort as backstop."""
        if self.released:
            return
        self.guard._release(self, reason)
        if graceful and self.app_transport is not None:
            self.app_transport.close()
            self.guard._loop.call_later(_CLOSE_GRACE_SECONDS, self.raw.abort)
        else:
            self.raw.abort()


class _Peer:
    """The connections of one client address, oldest first in each queue (value: the loop
    time the connection entered it)."""

    __slots__ = ("address", "idle", "new", "open")

    def __init__(self, address: str) -> None:
        self.address = address
        self.open = 0
        self.new: OrderedDict[_Connection, float] = OrderedDict()  # no request yet
        self.idle: OrderedDict[_Connection, float] = OrderedDict()  # idle, or reading again

    def oldest(self, not_after: float = math.inf) -> _Connection | None:
        """The oldest connection without a request, else the oldest idle one, that entered
        its queue no later than ``not_after``."""
        for queue in (self.new, self.idle):
            for connection, since in queue.items():
                if since <= not_after:
                    return connection
                break  # the rest of this queue is younger still
        return None


_NOT_MADE = asyncio.Protocol()  # stands in for the handler until the connection is made


class _AppSide(asyncio.Protocol):
    """The protocol under TLS (or on the raw socket): forwards to aiohttp's RequestHandler
    and tells the guard when a request's bytes arrive."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._handler: asyncio.Protocol = _NOT_MADE
        self.made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connection.app_transport = transport
        self._handler = self._connection.guard._made(self._connection)
        self.made = True
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._connection.guard._data(self._connection)
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self.made else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.guard._release(self._connection, "closed")
        if self.made:
            self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.made:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self.made:
            self._handler.resume_writing()


class _Accept(asyncio.Protocol):
    """The protocol of a freshly accepted socket: hands it to the guard at once."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have its methods
        self._guard._accept(cast(asyncio.Transport, transport))

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # refused before the guard took it; nothing to release


class ConnectionGuard:
    """The listener's protocol factory: aiohttp behind the bounds of ``limits``.

    ``server`` is aiohttp's low-level server (``runner.server``): it makes one RequestHandler
    per connection. ``ssl_context`` None serves plain HTTP (tests). Add :attr:`middleware` to
    the app first in the chain, so the guard knows when a request starts and ends.
    """

    def __init__(
        self,
        limits: ServerConfig,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits
        self.stats = ConnectionStats()
        self._ssl = ssl_context
        self._server: Callable[[], asyncio.Protocol] | None = None
        self._loop = asyncio.get_running_loop()
        self._open = 0
        self._peers: dict[str, _Peer] = {}
        self._by_handler: dict[asyncio.Protocol, _Connection] = {}
        self._closed_since_trim = 0
        self._trim: asyncio.TimerHandle | None = None

    def attach(self, server: Callable[[], asyncio.Protocol]) -> None:
        self._server = server

    def protocol_factory(self) -> asyncio.Protocol:
        return _Accept(self)

    # -- accept ---------------------------------------------------------------------------

    def _accept(self, raw: asyncio.Transport) -> None:
        peername = raw.get_extra_info("peername")
        address = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if self._open >= self.limits.max_connections:
            victim = self._victim(address)
            if victim is None:
                self.stats.count_close("refused_at_cap")
                raw.abort()  # before any TLS work: a refusal costs next to nothing
                return
            victim.close("evicted_at_cap")
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(address)
        connection = _Connection(self, raw, peer)
        self._open += 1
        peer.open += 1
        peer.new[connection] = self._loop.time()
        self.stats.open += 1
        self.stats.accepted += 1
        self._set_deadline(connection, self.limits.header_timeout_seconds)
        app_side = _AppSide(connection)
        if self._ssl is None:
            raw.set_protocol(app_side)
            app_side.connection_made(raw)
            return
        # TLS is wrapped around the accepted socket here, in the same callback, before the
        # loop reads from it (``loop.start_tls`` would take a loop turn, in which uvloop has
        # already read the ClientHello into ``_Accept``: uvloop starts reading after
        # ``connection_made`` whatever it did). The TLS protocol calls ``app_side``'s
        # ``connection_made`` once the handshake is done; ``handshake`` ends it otherwise.
        handshake = self._loop.create_future()
        tls = _tls_protocol(self._loop)(
            self._loop,
            app_side,
            self._ssl,
            handshake,
            server_side=True,
            ssl_handshake_timeout=self.limits.header_timeout_seconds + 1.0,
            ssl_shutdown_timeout=_CLOSE_GRACE_SECONDS,
        )
        raw.set_protocol(tls)
        tls.connection_made(raw)
        handshake.add_done_callback(lambda done: self._handshake_done(done, connection, app_side))

    def _victim(self, address: str) -> _Connection | None:
        """Who makes room for a newcomer from ``address`` at the cap; None: refuse it.

        The client address holding the most connections gives one up: its oldest connection
        without a request, else its oldest idle one (never one with a request in flight).
        When the newcomer's own address holds the most, it only replaces its own connections
        that have waited :data:`EVICTION_MIN_AGE_SECONDS`, so a flood from one address cannot
        churn its own handshakes to nothing nor push out anyone else's connections.
        """
        largest = max(self._peers.values(), key=lambda peer: peer.open)
        own = self._peers.get(address)
        if own is None or own.open < largest.open:
            return largest.oldest()
        return own.oldest(not_after=self._loop.time() - EVICTION_MIN_AGE_SECONDS)

    @staticmethod
    def _handshake_done(
        done: asyncio.Future[None], connection: _Connection, app_side: _AppSide
    ) -> None:
        """A handshake that failed, or a connection lost during it, closes the connection."""
        if done.cancelled():
            connection.close("server_stopped")
            return
        error = done.exception()
        if error is not None:
            # The traceback's frames hold the TLS protocol (and its 256 KiB buffer) in a
            # cycle with the future: clear them, or each failure waits for a full GC.
            traceback.clear_frames(error.__traceback__)
        if error is not None or not app_side.made:
            connection.close("tls_handshake_failed")  # a no-op if a deadline closed it

    def _made(self, connection: _Connection) -> asyncio.Protocol:
        """aiohttp's RequestHandler for a connection whose TLS (if any) is up."""
        assert self._server is not None, "attach() the aiohttp server before serving"
        handler = self._server()
        connection.handler = handler
        self._by_handler[handler] = connection
        return handler

    # -- requests -------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection active while a request runs, idle after."""
        connection = self._by_handler.get(request.protocol)
        if connection is None or connection.released:
            return await handler(request)
        self._activate(connection)
        try:
            return await handler(request)
        finally:
            if not connection.released:
                self._idle_after_response(connection)

    def _activate(self, connection: _Connection) -> None:
        connection.state = _State.ACTIVE
        self._cancel_deadline(connection)
        connection.peer.new.pop(connection, None)
        connection.peer.idle.pop(connection, None)

    def _idle_after_response(self, connection: _Connection) -> None:
        connection.state = _State.IDLE
        connection.peer.idle[connection] = self._loop.time()
        self._set_deadline(connection, self.limits.idle_timeout_seconds)

    def _data(self, connection: _Connection) -> None:
        if connection.state is _State.IDLE:
            connection.state = _State.READING
            idle = connection.peer.idle
            idle.move_to_end(connection)
            idle[connection] = self._loop.time()
            self._set_deadline(connection, self.limits.header_timeout_seconds)

    # -- deadlines and release ---------------------------------------------------------------

    def _set_deadline(self, connection: _Connection, seconds: float) -> None:
        self._cancel_deadline(connection)
        connection.deadline = self._loop.call_later(seconds, self._expired, connection)

    @staticmethod
    def _cancel_deadline(connection: _Connection) -> None:
        if connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None

    def _expired(self, connection: _Connection) -> None:
        connection.deadline = None
        if connection.state is _State.IDLE:
            connection.close("idle_timeout", graceful=True)
        elif connection.state in (_State.NEW, _State.READING):
            connection.close("header_timeout")

    def _release(self, connection: _Connection, reason: str) -> None:
        if connection.released:
            return
        connection.released = True
        self._cancel_deadline(connection)
        peer = connection.peer
        peer.new.pop(connection, None)
        peer.idle.pop(connection, None)
        peer.open -= 1
        if peer.open == 0:
            del self._peers[peer.address]
        self._open -= 1
        if connection.handler is not None:
            self._by_handler.pop(connection.handler, None)
        self.stats.open -= 1
        self.stats.count_close(reason)
        self._closed_since_trim += 1
        if self._closed_since_trim >= _TRIM_AFTER_CLOSES and self._trim is None:
            self._trim = self._loop.call_later(_TRIM_DELAY_SECONDS, self._return_memory)

    def _return_memory(self) -> None:
        self._trim = None
        self._closed_since_trim = 0
        return_free_memory()

    def close_all(self) -> None:
        """Abort every connection still in its TLS handshake or before its first request
        (aiohttp's shutdown closes the others gracefully)."""
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None
        for peer in list(self._peers.values()):
            for connection in list(peer.new):
                connection.close("server_stopped")


def _tls_protocol(loop: asyncio.AbstractEventLoop) -> Callable[..., asyncio.BaseProtocol]:
    """The loop's own TLS protocol class: uvloop's (compiled) on a uvloop loop, asyncio's
    otherwise. Both take ``(loop, app_protocol, context, waiter, server_side=..., ...)``."""
    if is_uvloop(loop):
        from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]

        return cast(Callable[..., asyncio.BaseProtocol], SSLProtocol)
    return sslproto.SSLProtocol


class ProtocolErrorLog:
    """aiohttp's server logger for one listener (``RequestHandler(logger=...)``).

    aiohttp logs a request its parser rejects (bad request line, oversized header, binary
    garbage) with ``logger.exception`` before answering 400: a traceback per request, before
    authentication. Here it is counted by error type and logged as a warning through a
    :class:`LogLimiter`. Anything else (a bug) stays an error with its traceback, also limited.
    """

    def __init__(self, stats: ConnectionStats, limiter: LogLimiter | None = None) -> None:
        self._stats = stats
        self._bad_requests = limiter or LogLimiter()
        self._errors = LogLimiter()

    def _bad_request(self, error: HttpProcessingError, peer: object) -> None:
        kind = type(error).__name__
        self._stats.bad_requests[kind] = self._stats.bad_requests.get(kind, 0) + 1
        suppressed = self._bad_requests.allow()
        if suppressed is not None:
            message = str(getattr(error, "message", "") or error).splitlines()[0][:200]
            log.warning(
                "bad request answered 400",
                extra={
                    "peer": str(peer),
                    "error": kind,
                    "detail": message,
                    "suppressed": suppressed,
                },
            )

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):
            self._bad_request(error, args[0] if args else "")
            return
        suppressed = self._errors.allow()
        if suppressed is not None:
            log.error(msg, *args, extra={"suppressed": suppressed}, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError):  # aiohttp's non-HTTP first request
            self._bad_request(error, args[0] if args else "")
        elif log.isEnabledFor(logging.DEBUG):
            kwargs.pop("exc_info", None)
            log.debug(msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if self._errors.allow() is not None:
            log.warning(msg, *args, **kwargs)
