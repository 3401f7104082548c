"""The service runs KEDA's scaler beside the HTTPS API: same certificate, same snapshot,
stopped with the service, and /readyz fails while it cannot serve."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from adapter.config import ConfigError, load_config
from adapter.service import running_service
from tests.support.helpers import async_wait_until
from tests.support.keda_support import KEDA_CN, channel, make_scaler_pki, ref, stub

DEADLINE = 30.0


def write_pki(tmp_path: Path) -> tuple[Any, dict[str, str]]:
    pki = make_scaler_pki()
    files = {}
    for name, data in (
        ("tls.crt", pki.serving.cert),
        ("tls.key", pki.serving.key),
        ("ca.crt", pki.ca_pem),
    ):
        (tmp_path / name).write_bytes(data)
        files[name] = str(tmp_path / name)
    return pki, files


def config_for(files: dict[str, str], scaler_listen: str) -> Any:
    return load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "scrape": {"interval_seconds": 0.2},
            "tls": {"cert_file": files["tls.crt"], "private_key_file": files["tls.key"]},
            "keda_scaler": {
                "listen": scaler_listen,
                "client_ca_file": files["ca.crt"],
                "client_allowed_names": [KEDA_CN],
                "retry_seconds": 0.05,
            },
        },
    )


async def served_certificate(port: int, client: tuple[str, str] | None = None) -> bytes:
    """The leaf certificate a TLS listener presents (DER); ``client`` is (cert, key) files."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    if client is not None:
        context.load_cert_chain(*client)
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context), DEADLINE
    )
    try:
        certificate = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    assert certificate is not None
    return bytes(certificate)


async def readyz(session: aiohttp.ClientSession, port: int) -> tuple[int, str]:
    async with session.get(f"https://127.0.0.1:{port}/readyz/metrics-ready", ssl=False) as r:
        return r.status, await r.text()


async def test_the_scaler_serves_the_services_snapshot_with_its_certificate(
    tmp_path: Path,
) -> None:
    pki, files = write_pki(tmp_path)
    async with running_service(config_for(files, "127.0.0.1:0")) as service:
        assert service.scaler is not None and service.scaler.readiness() is None
        port = service.scaler.port
        keda_files = (str(tmp_path / "keda.crt"), str(tmp_path / "keda.key"))
        Path(keda_files[0]).write_bytes(pki.keda.cert)
        Path(keda_files[1]).write_bytes(pki.keda.key)
        grpc_certificate = await served_certificate(port, keda_files)
        assert grpc_certificate == await served_certificate(service.port)
        ch = channel(port, pki, pki.keda)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as raised:  # no targets: nothing known
                await stub(ch).IsActive(ref(metric="triton_desired_replicas"))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await ch.close()
    with pytest.raises(OSError):  # stopped with the service
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_readiness_fails_while_the_scaler_cannot_serve(tmp_path: Path) -> None:
    _pki, files = write_pki(tmp_path)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        async with (
            running_service(config_for(files, f"127.0.0.1:{port}")) as service,
            aiohttp.ClientSession() as session,
        ):

            async def scaler_reason() -> str | None:
                status, text = await readyz(session, service.port)
                return text if status == 500 and "keda scaler" in text else None

            reason = await async_wait_until(scaler_reason, DEADLINE, 0.05, "a scaler failure")
            assert f"keda scaler on 127.0.0.1:{port}: cannot serve" in reason
            blocker.close()

            async def ready() -> bool:
                return (await readyz(session, service.port))[0] == 200

            await async_wait_until(ready, DEADLINE, 0.05, "ready once the port is free")
    finally:
        blocker.close()


def test_delegated_auth_needs_client_certificates_on_the_scaler() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, {"auth": {"mode": "delegated"}, "keda_scaler": {"listen": ":9443"}})
    assert "keda_scaler.client_ca_file is required" in str(error.value)
    with pytest.raises(ConfigError) as names:
        load_config(None, {"keda_scaler": {"client_allowed_names": ["keda-operator"]}})
    assert "keda_scaler: client_allowed_names: only used with client_ca_file" in str(names.value)
    with pytest.raises(ConfigError) as listen:
        load_config(None, {"keda_scaler": {"listen": "9443"}})
    assert "keda_scaler.listen" in str(listen.value)
