"""The scrape's HTTP client: one keep-alive HTTP/1.1 connection per target, one GET at a time.

A scrape loop asks one target for one body, over and over; it never has two requests in
flight and never needs a pool, cookies, redirects or proxies. aiohttp's client paid for all
of those on every request: about 0.25 ms of CPU per GET on uvloop against 0.08 ms for this
client (``loadtest/bench/scrape_client.py``), a third of a core at 2,000 targets a second.
The answer is parsed by ``httptools`` (the llhttp parser that Node.js uses, which uvicorn
uses too): status line, headers, ``Content-Length``, chunked and close-delimited bodies,
all in C, and malformed answers are refused by the parser, not by hand-written code.

What a scrape needs and gets: a deadline over connect, request and answer together (the
caller's ``asyncio.timeout``); a cap on the body as it arrives, and on a declared
``Content-Length`` before any body is read; the time the last byte arrived; a gzip or
deflate body decoded within the same cap (we ask for ``identity``; a target may send one
anyway); TLS for https targets. Any failure closes the connection, so that the next scrape
starts on a clean one; a kept-alive connection that the target closed while idle is opened
again once, as a reused connection's first GET may meet the close.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from dataclasses import dataclass

import httptools
from yarl import URL

USER_AGENT = "tritonscale"
MAX_HEAD_BYTES = 65536
"""Status line and headers together, at most (aiohttp's client allowed 8 KiB a line): a
target that sends headers for ever fails, it does not fill the memory."""
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


class HttpScrapeError(Exception):
    """A GET failed; ``reason`` is the scrape's failure label (``http_503``, ``too_large``,
    ``connection``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Body:
    """A response body, its media type ("" if the header is absent) and when it was
    received: ``received_mono`` (monotonic s) and ``received_wall`` (Unix s) are taken
    as the last byte has been read."""

    data: bytes
    content_type: str
    received_mono: float
    received_wall: float


class _Closed(Exception):
    """The connection closed before any byte of the answer: a reused connection may be
    opened again and the GET sent once more."""


class _Answer(asyncio.Protocol):
    """The connection's protocol: feeds bytes to the parser and completes one waiter per GET."""

    def __init__(self, max_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.max_bytes = max_bytes
        self._waiter: asyncio.Future[Body] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._headers: dict[bytes, bytes] = {}
        self._headers_done = False
        self._head_bytes = 0
        self._any_byte = False
        self._failure: HttpScrapeError | None = None

    # -- the GET -------------------------------------------------------------------
    def send(self, request: bytes) -> asyncio.Future[Body]:
        assert self.transport is not None
        self._reset()
        self._parser = httptools.HttpResponseParser(self)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def _finish(self, result: Body | BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        if isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)

    def _fail(self, error: HttpScrapeError) -> None:
        """Stop reading this answer: the connection is closed and the GET fails."""
        self._failure = error
        if self.transport is not None:
            self.transport.close()
        self._finish(error)

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes no GET asked for: the connection cannot be trusted
            assert self.transport is not None
            self.transport.close()
            return
        self._any_byte = True
        if not self._headers_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            if self._failure is None:  # not a cap or status that stopped the parser on purpose
                self._fail(HttpScrapeError("connection", f"not an HTTP/1.1 answer: {err}"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(HttpScrapeError("connection", "the target asked to switch protocols"))
            return
        if not self._headers_done and self._head_bytes > MAX_HEAD_BYTES:
            self._fail(HttpScrapeError("too_large", f"headers exceed {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._waiter is None:
            return
        if not self._any_byte:
            self._finish(_Closed())
        elif self._headers_done and self._close_delimited():
            self._complete()  # the body ran to the end of the connection (no length given)
        else:
            cause = f": {exc}" if exc else ""
            self._finish(HttpScrapeError("connection", f"connection closed mid-answer{cause}"))

    # -- httptools callbacks ---------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second answer in the bytes after the one asked for
            self._fail(HttpScrapeError("connection", "an answer no GET asked for"))
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._parser.get_status_code()
        if status != 200:
            self._fail(HttpScrapeError(f"http_{status}", f"HTTP {status}"))
            raise _Stop
        declared = self._headers.get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            self._fail(
                HttpScrapeError("too_large", f"body of {int(declared)} bytes > {self.max_bytes}")
            )
            raise _Stop

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.max_bytes:
            self._fail(HttpScrapeError("too_large", f"body exceeds {self.max_bytes} bytes"))
            raise _Stop
        self._chunks.append(chunk)

    def on_message_complete(self) -> None:
        self._complete()
        if not self._parser.should_keep_alive() and self.transport is not None:
            self.transport.close()

    # -- helpers -------------------------------------------------------------------
    def _close_delimited(self) -> bool:
        return b"content-length" not in self._headers and b"chunked" not in self._headers.get(
            b"transfer-encoding", b""
        )

    def _complete(self) -> None:
        received_mono, received_wall = time.monotonic(), time.time()
        data = b"".join(self._chunks)
        encoding = self._headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"identity", b""):
            try:
                data = _decoded(data, encoding, self.max_bytes)
            except HttpScrapeError as err:
                self._fail(err)
                return
        media_type = self._headers.get(b"content-type", b"").decode("latin-1").partition(";")[0]
        self._finish(Body(data, media_type.strip(), received_mono, received_wall))


class _Stop(Exception):
    """Raised from a parser callback to stop parsing an answer already failed."""


def _decoded(data: bytes, encoding: bytes, max_bytes: int) -> bytes:
    """A gzip or deflate body decoded, refused when it would exceed ``max_bytes``."""
    if encoding == b"gzip":
        attempts = [zlib.MAX_WBITS | 16]
    elif encoding == b"deflate":
        attempts = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # zlib-wrapped, as the RFC says; or raw
    else:
        shown = encoding.decode("latin-1")[:40]
        raise HttpScrapeError("not_exposition", f"Content-Encoding {shown!r} is not supported")
    for wbits in attempts:
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(data, max_bytes + 1)
        except zlib.error:
            continue
        if len(out) > max_bytes:
            raise HttpScrapeError("too_large", f"decoded body exceeds {max_bytes} bytes")
        if not decoder.eof:
            break
        return out
    shown = encoding.decode("latin-1")
    raise HttpScrapeError("not_exposition", f"body is not valid {shown} data")


class TargetConnection:
    """GETs one URL over one kept-alive connection; not safe for two GETs at once.

    ``tls`` verifies an https target (None: the system's CAs); unused for http.
    """

    def __init__(self, url: str | URL, tls: ssl.SSLContext | None = None) -> None:
        self._url = URL(url)
        if self._url.scheme not in ("http", "https") or not self._url.raw_host:
            raise ValueError(f"not an http(s) URL with a host: {self._url.with_query(None)}")
        self._https = self._url.scheme == "https"
        self._tls = tls
        self._host = self._url.raw_host
        self._port = self._url.port or (443 if self._https else 80)
        self._request = (
            f"GET {self._url.raw_path_qs} HTTP/1.1\r\n"
            f"Host: {self._url.host_port_subcomponent}\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
            f"Accept: {ACCEPT}\r\n"
            "Accept-Encoding: identity\r\n"
            "\r\n"
        ).encode("latin-1")
        self._answer: _Answer | None = None

    async def get(self, max_bytes: int) -> Body:
        """The body of one 200 answer; :class:`HttpScrapeError` otherwise. The caller bounds
        the time (connect, request and answer) with its own deadline; a cancelled GET closes
        the connection."""
        while True:
            answer, reused = await self._connected()
            answer.max_bytes = max_bytes
            try:
                body = await answer.send(self._request)
            except _Closed:
                self.close()
                if reused:
                    continue  # the target closed an idle kept-alive connection: once more
                raise HttpScrapeError("connection", "connection closed before any answer") from None
            except BaseException:
                self.close()
                raise
            if answer.transport is None or answer.transport.is_closing():
                self._answer = None
            return body

    async def _connected(self) -> tuple[_Answer, bool]:
        """The open connection and True, or a new one and False."""
        answer = self._answer
        if answer is not None and answer.transport and not answer.transport.is_closing():
            return answer, True
        self._answer = None
        tls: ssl.SSLContext | None = None
        if self._https:
            tls = self._tls or _default_tls()
        try:
            _, answer = await asyncio.get_running_loop().create_connection(
                lambda: _Answer(0),
                self._host,
                self._port,
                ssl=tls,
                server_hostname=self._host if tls is not None else None,
            )
        except ssl.SSLError as err:
            raise HttpScrapeError("connection", f"TLS: {err.reason or err}") from None
        except OSError as err:
            raise HttpScrapeError("connection", f"{type(err).__name__}: {err}") from None
        self._answer = answer
        return answer, False

    def close(self) -> None:
        """Close the connection (the next GET opens a new one)."""
        answer, self._answer = self._answer, None
        if answer is not None and answer.transport is not None:
            answer.transport.close()


_DEFAULT_TLS: ssl.SSLContext | None = None


def _default_tls() -> ssl.SSLContext:
    """One verifying context for every https target without a CA of its own: building a
    context loads the system's CA bundle, milliseconds each time."""
    global _DEFAULT_TLS
    if _DEFAULT_TLS is None:
        _DEFAULT_TLS = ssl.create_default_context()
    return _DEFAULT_TLS
