"""The scrape's HTTP client against targets scripted byte by byte: every body framing HTTP/1.1
allows, kept-alive connections and their closes, caps on headers, bodies and decoded bodies,
answers that are not HTTP, and TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from adapter.scrape_http import HttpScrapeError, TargetConnection

BODY = b'nv_inference_pending_request_count{model="m",version="1"} 3\n' * 40

# A target's handler: it reads the request itself and writes whatever the test scripts.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def plain(body: bytes = BODY, *headers: str) -> bytes:
    return answer(body, f"Content-Length: {len(body)}", "Content-Type: text/plain", *headers)


class Target:
    """A scripted target on loopback: counts connections and requests."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{port}/metrics?x=1"


@pytest.fixture
async def targets() -> AsyncIterator[Callable[..., Awaitable[tuple[Target, str]]]]:
    started: list[Target] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[Target, str]:
        target = Target(handler, tls)
        started.append(target)
        return target, await target.start()

    yield start
    for target in started:
        assert target.server is not None
        target.server.close()


def keep_answering(*answers: bytes, close_after: int | None = None) -> Handler:
    """Answer each request on the connection with the next of ``answers`` (the last one
    again once they run out); close after ``close_after`` answers."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count = 0
        while close_after is None or count < close_after:
            await read_request(reader)
            writer.write(answers[min(count, len(answers) - 1)])
            await writer.drain()
            count += 1

    return handler


async def get(url: str, max_bytes: int = 1 << 20, tls: ssl.SSLContext | None = None) -> bytes:
    connection = TargetConnection(url, tls)
    try:
        async with asyncio.timeout(5):
            return (await connection.get(max_bytes)).data
    finally:
        connection.close()


async def failure(url: str, max_bytes: int = 1 << 20) -> HttpScrapeError:
    with pytest.raises(HttpScrapeError) as caught:
        await get(url, max_bytes)
    return caught.value


# -- framing -------------------------------------------------------------------------------


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def encoded(data: bytes, encoding: str) -> bytes:
    return answer(data, f"Content-Encoding: {encoding}", f"Content-Length: {len(data)}")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("content-length", plain()),
        ("chunked", answer(chunked(BODY, 100), "Transfer-Encoding: chunked")),
        ("gzip", encoded(gzip.compress(BODY), "gzip")),
        ("deflate (zlib)", encoded(zlib.compress(BODY), "deflate")),
        ("deflate (raw)", encoded(zlib.compress(BODY)[2:-4], "deflate")),
    ],
)
async def test_every_framing_gives_the_same_body(
    targets: Callable[..., Awaitable[tuple[Target, str]]], name: str, raw: bytes
) -> None:
    _, url = await targets(keep_answering(raw))
    assert await get(url) == BODY, name


async def test_a_body_that_runs_to_the_close_is_read_whole(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"", "Content-Type: text/plain"))
        for i in range(0, len(BODY), 300):
            writer.write(BODY[i : i + 300])
            await writer.drain()
        writer.close()  # no length, not chunked: the end of the body is the close

    _, url = await targets(handler)
    assert await get(url) == BODY


async def test_the_request_names_the_host_path_and_asks_for_identity(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(plain())

    _, url = await targets(handler)
    await get(url)
    port = url.split(":")[2].split("/")[0]
    lines = seen[0].decode().split("\r\n")
    assert lines[0] == "GET /metrics?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Accept-Encoding: identity" in lines


async def test_the_receipt_time_is_that_of_the_last_byte(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    last_byte_sent: list[float] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        raw = plain()
        writer.write(raw[:-10])
        await writer.drain()
        await asyncio.sleep(0.05)  # the scripted target's slowness, not a wait on a condition
        last_byte_sent.append(time.monotonic())
        writer.write(raw[-10:])
        await writer.drain()

    _, url = await targets(handler)
    connection = TargetConnection(url)
    try:
        body = await connection.get(1 << 20)
    finally:
        connection.close()
    assert body.received_mono >= last_byte_sent[0]
    assert body.content_type == "text/plain"


# -- keep-alive ----------------------------------------------------------------------------


async def test_one_connection_carries_every_get(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    target, url = await targets(keep_answering(plain()))
    connection = TargetConnection(url)
    try:
        for _ in range(5):
            assert (await connection.get(1 << 20)).data == BODY
    finally:
        connection.close()
    assert target.connections == 1


async def test_a_kept_alive_connection_the_target_closed_is_opened_again_once(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    """The race a keep-alive client must survive: the target closes an idle connection as
    the next GET goes out on it. The GET is sent once more on a new connection."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(plain())
        await writer.drain()
        if connections == 1:
            await read_request(reader)  # the second GET arrives; closed without an answer
            return
        while True:
            await read_request(reader)
            writer.write(plain())

    target, url = await targets(handler)
    connection = TargetConnection(url)
    try:
        assert (await connection.get(1 << 20)).data == BODY
        assert (await connection.get(1 << 20)).data == BODY
    finally:
        connection.close()
    assert target.connections == 2


async def test_connection_close_from_the_target_is_honoured(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    target, url = await targets(keep_answering(plain(BODY, "Connection: close")))
    connection = TargetConnection(url)
    try:
        for _ in range(3):
            assert (await connection.get(1 << 20)).data == BODY
    finally:
        connection.close()
    assert target.connections == 3


async def test_a_new_connection_closed_before_any_answer_fails(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    target, url = await targets(keep_answering(plain(), close_after=0))
    error = await failure(url)
    assert error.reason == "connection"
    assert target.connections == 1  # not retried: only a reused connection is


# -- caps and refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "reason", "message"),
    [
        ("status", answer(b"busy", "Content-Length: 4", status="503 Busy"), "http_503", "503"),
        ("redirect", answer(b"", "Location: /x", "Content-Length: 0", status="302 Found"),
         "http_302", "302"),
        ("declared too long", answer(b"", "Content-Length: 5000"), "too_large", "5000 bytes"),
        ("body too long", answer(chunked(b"x" * 5000, 512), "Transfer-Encoding: chunked"),
         "too_large", "exceeds 4096"),
        ("gzip bomb", answer(gzip.compress(b"0" * 100_000), "Content-Encoding: gzip",
                             "Content-Length: " + str(len(gzip.compress(b"0" * 100_000)))),
         "too_large", "decoded body exceeds 4096"),
        ("bad gzip", answer(b"not gzip", "Content-Encoding: gzip", "Content-Length: 8"),
         "not_exposition", "not valid gzip"),
        ("brotli", answer(b"xx", "Content-Encoding: br", "Content-Length: 2"),
         "not_exposition", "'br' is not supported"),
        ("not http", b"SSH-2.0-OpenSSH_9.2\r\n" * 3, "connection", "not an HTTP/1.1 answer"),
        ("bad length", answer(b"12", "Content-Length: 1x"), "connection", "not an HTTP/1.1"),
    ],
)  # fmt: skip
async def test_answers_that_cannot_be_used_fail_with_a_reason(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
    name: str,
    raw: bytes,
    reason: str,
    message: str,
) -> None:
    _, url = await targets(keep_answering(raw))
    error = await failure(url, max_bytes=4096)
    assert error.reason == reason, name
    assert message in str(error), name


async def test_headers_that_never_end_are_refused_within_the_cap(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Padding: " + b"p" * 1000 + b"\r\n"
        while True:  # until the client closes (without a cap, until its deadline)
            writer.write(line)
            await writer.drain()

    _, url = await targets(handler)
    error = await failure(url)  # within get's 5 s deadline, or TimeoutError
    assert error.reason == "too_large"
    assert "headers exceed" in str(error)


async def test_a_connection_closed_mid_body_fails(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(plain()[:-100])
        await writer.drain()

    _, url = await targets(handler)
    error = await failure(url)
    assert error.reason == "connection"
    assert "mid-answer" in str(error)


async def test_after_a_failure_the_next_get_opens_a_clean_connection(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    bad = answer(b"nope", "Content-Length: 4", status="500 Oops")
    target, url = await targets(keep_answering(bad, plain()))
    connection = TargetConnection(url)
    try:
        with pytest.raises(HttpScrapeError):
            await connection.get(1 << 20)
        # a new connection starts the script again: it answers 500 again
        with pytest.raises(HttpScrapeError):
            await connection.get(1 << 20)
    finally:
        connection.close()
    assert target.connections == 2


async def test_bytes_no_get_asked_for_close_the_connection(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(plain() + b"HTTP/1.1 200 OK\r\n")  # and a stray answer after it
            await writer.drain()

    target, url = await targets(handler)
    connection = TargetConnection(url)
    try:
        for _ in range(3):
            assert (await connection.get(1 << 20)).data == BODY
    finally:
        connection.close()
    assert target.connections == 3  # never reused after the stray bytes


async def test_a_cancelled_get_closes_the_connection(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
) -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        await reader.read()  # never answers; returns when the client closes

    target, url = await targets(handler)
    connection = TargetConnection(url)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await connection.get(1 << 20)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await connection.get(1 << 20)
    connection.close()
    assert target.connections == 2 and requests == 2


async def test_a_dead_port_is_a_connection_error() -> None:
    error = await failure("http://127.0.0.1:9/metrics")
    assert error.reason == "connection"


def test_only_http_urls_with_a_host_are_taken() -> None:
    with pytest.raises(ValueError, match="not an http"):
        TargetConnection("ftp://example/metrics")


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A target's server context and a client context that trusts its CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_an_https_target_is_read_over_verified_tls(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, client = tls
    _, url = await targets(keep_answering(plain()), server)
    assert url.startswith("https://")
    assert await get(url, tls=client) == BODY


async def test_an_https_target_with_an_unknown_ca_fails(
    targets: Callable[..., Awaitable[tuple[Target, str]]],
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server, _ = tls
    _, url = await targets(keep_answering(plain()), server)
    with pytest.raises(HttpScrapeError) as caught:
        await get(url)  # the system's CAs do not know this one
    assert caught.value.reason == "connection"
    assert "TLS" in str(caught.value)
