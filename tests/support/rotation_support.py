"""Support for the rotation tests: a directory laid out as the kubelet mounts a Secret, and a
client that keeps requesting over a keep-alive connection and over new ones, recording
every failure and the certificate each new connection was served."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from cryptography import x509


class SecretVolume:
    """Files as the kubelet's atomic writer lays them out: ``<dir>/<name>`` ->
    ``..data/<name>``, ``..data`` -> ``..<generation>``; :meth:`write` swaps ``..data`` with
    one rename, as the kubelet does when the Secret changes."""

    def __init__(self, directory: Path, files: Mapping[str, bytes]) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._generation = 0
        self.write(files)
        for name in files:
            (directory / name).symlink_to(Path("..data") / name)

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def write(self, files: Mapping[str, bytes]) -> None:
        self._generation += 1
        generation = self.directory / f"..2026_01_01_00_00_{self._generation:02d}.000000001"
        generation.mkdir()
        for name, content in files.items():
            (generation / name).write_bytes(content)
        data = self.directory / "..data"
        previous = data.resolve() if data.is_symlink() else None
        staged = self.directory / "..data_tmp"
        staged.symlink_to(generation.name)
        os.replace(staged, data)  # the atomic swap
        if previous is not None:
            for old in previous.iterdir():
                old.unlink()
            previous.rmdir()


def served_certificate(der: bytes | None) -> x509.Certificate:
    assert der is not None
    return x509.load_der_x509_certificate(der)


@dataclass
class LiveClient:
    """Requests ``path`` on ``port`` without pause over one aiohttp keep-alive connection
    and, alternately, over new TLS connections (one request each); records failures, how
    many connections the keep-alive session opened, and the serial of the certificate each
    new connection was served."""

    port: int
    path: str
    context: ssl.SSLContext
    headers: Mapping[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    keepalive_answers: int = 0
    keepalive_connections_opened: int = 0
    new_connection_serials: list[int] = field(default_factory=list)

    async def _keepalive(self, session: aiohttp.ClientSession) -> None:
        url = f"https://127.0.0.1:{self.port}{self.path}"
        while True:
            try:
                async with session.get(url, headers=self.headers) as response:
                    await response.read()
                    if response.status != 200:
                        self.failures.append(f"keep-alive: HTTP {response.status}")
                self.keepalive_answers += 1
            except aiohttp.ClientError as exc:
                self.failures.append(f"keep-alive: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0)

    async def _one_new_connection(self) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.context, server_hostname="localhost"
        )
        try:
            certificate = served_certificate(
                writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            )
            headers = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
            writer.write(
                f"GET {self.path} HTTP/1.1\r\nHost: localhost\r\n{headers}"
                "Connection: close\r\n\r\n".encode()
            )
            status_line = await reader.readline()
            await reader.read()
        finally:
            writer.close()
        status = status_line.decode(errors="replace").split(" ")
        if len(status) < 2 or status[1] != "200":
            self.failures.append(f"new connection: {status_line!r}")
        self.new_connection_serials.append(certificate.serial_number)

    async def _new_connections(self) -> None:
        while True:
            try:
                await self._one_new_connection()
            except (OSError, ssl.SSLError) as exc:
                self.failures.append(f"new connection: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.01)

    async def _connection_opened(self, *_args: object) -> None:
        self.keepalive_connections_opened += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LiveClient]:
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(self._connection_opened)
        connector = aiohttp.TCPConnector(ssl=self.context, limit=1)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
            tasks = [
                asyncio.create_task(self._keepalive(session)),
                asyncio.create_task(self._new_connections()),
            ]
            try:
                yield self
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
