"""Serving TLS (self-signed or given files) and the HOST:PORT listener."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import ssl
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from adapter.api.server import create_app
from adapter.api.tls import (
    bound_port,
    generate_self_signed,
    make_server_ssl_context,
    start_server,
)
from tests.support.api_support import FakeClock, make_provider

SERVICE_HOST = "tritonscale.tritonscale.svc"


async def _handshake(port: int, client_context: ssl.SSLContext, host: str) -> ssl.SSLObject:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context, server_hostname=host
    )
    ssl_object: ssl.SSLObject = writer.get_extra_info("ssl_object")
    writer.close()
    await writer.wait_closed()
    return ssl_object


async def test_self_signed_certificate_has_sans_tls12_and_alpn_http11() -> None:
    context = make_server_ssl_context(None, None, hostnames=[SERVICE_HOST])
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    runner = await start_server(create_app(make_provider(FakeClock())), "127.0.0.1:0", context)
    try:
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.set_alpn_protocols(["h2", "http/1.1"])
        ssl_object = await _handshake(bound_port(runner), client, SERVICE_HOST)
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        der = ssl_object.getpeercert(binary_form=True)
    finally:
        await runner.cleanup()
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", SERVICE_HOST}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }


async def test_given_files_are_served_and_verify_for_the_service_name(tmp_path: Path) -> None:
    cert_pem, key_pem = generate_self_signed([SERVICE_HOST])
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    context = make_server_ssl_context(str(cert_file), str(key_file), hostnames=[])
    runner = await start_server(create_app(make_provider(FakeClock())), "127.0.0.1:0", context)
    try:
        # a client that trusts only this certificate (as an APIService caBundle) and checks
        # the service DNS name
        trusting = ssl.create_default_context(cafile=str(cert_file))
        url = f"https://127.0.0.1:{bound_port(runner)}/healthz"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, ssl=trusting, server_hostname=SERVICE_HOST) as response,
        ):
            assert response.status == 200
            assert await response.text() == "ok"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with aiohttp.ClientSession() as session:
                await session.get(url, ssl=trusting, server_hostname="other.example.com")
    finally:
        await runner.cleanup()


def test_generated_key_is_written_privately_then_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_rmtree: Callable[..., None] = shutil.rmtree

    def recording_rmtree(path: Path, ignore_errors: bool = False) -> None:
        seen["dir"] = Path(path)
        seen["dir_mode"] = stat.S_IMODE(os.stat(path).st_mode)
        seen["file_modes"] = {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path(path).iterdir()}
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr("adapter.api.tls.shutil.rmtree", recording_rmtree)
    make_server_ssl_context(None, None, hostnames=[SERVICE_HOST])
    assert seen["dir_mode"] == 0o700
    assert seen["file_modes"] == {"apiserver.crt": 0o600, "apiserver.key": 0o600}
    assert not seen["dir"].exists()


@pytest.mark.parametrize(
    ("cert", "key", "error", "fragment"),
    [
        ("/x.crt", None, ValueError, "--tls-private-key-file is required"),
        (None, "/x.key", ValueError, "--tls-cert-file is required"),
        ("/nonexistent/x.crt", "/nonexistent/x.key", FileNotFoundError, "/nonexistent/x.crt"),
    ],
)
def test_bad_tls_flags_name_what_to_fix(
    cert: str | None, key: str | None, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        make_server_ssl_context(cert, key, hostnames=[])


def test_mismatched_files_name_both(tmp_path: Path) -> None:
    cert_pem, _ = generate_self_signed([])
    _, other_key = generate_self_signed([])
    (tmp_path / "a.crt").write_bytes(cert_pem)
    (tmp_path / "b.key").write_bytes(other_key)
    with pytest.raises(ValueError, match=r"a\.crt.*b\.key"):
        make_server_ssl_context(str(tmp_path / "a.crt"), str(tmp_path / "b.key"), hostnames=[])


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback here")
async def test_start_server_on_ipv6_loopback() -> None:
    runner = await start_server(create_app(make_provider(FakeClock())), "[::1]:0", None)
    try:
        port = bound_port(runner)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://[::1]:{port}/livez") as response,
        ):
            assert response.status == 200
    finally:
        await runner.cleanup()
