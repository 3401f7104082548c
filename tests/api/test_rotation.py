"""The serving certificate rotates without a restart: the kubelet swaps the mounted Secret
while clients hold keep-alive connections and open new ones; new handshakes get the new
certificate (HTTPS API and KEDA's gRPC scaler alike), the expiry self-metric follows, and
no request fails."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
from cryptography import x509

from adapter.api.rotation import CredentialReloader
from adapter.api.tls import ServingTLS, TLSOptions, generate_self_signed
from adapter.config import load_config
from adapter.kube.mounted import MountedFiles
from adapter.service import running_service
from tests.support.helpers import async_wait_until
from tests.support.rotation_support import LiveClient, SecretVolume, served_certificate

DEADLINE = 60.0
DISCOVERY = "/apis/external.metrics.k8s.io/v1beta1"


def _leaf(ca: trustme.CA, days: int) -> tuple[bytes, bytes, x509.Certificate]:
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert("127.0.0.1", "localhost", not_after=now + datetime.timedelta(days=days))
    cert_pem = leaf.cert_chain_pems[0].bytes()
    return cert_pem, leaf.private_key_pem.bytes(), x509.load_pem_x509_certificate(cert_pem)


async def _handshake_certificate(port: int, alpn: str) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context), DEADLINE
    )
    try:
        return served_certificate(writer.get_extra_info("ssl_object").getpeercert(True))
    finally:
        writer.close()


async def _expiry_metric(port: int) -> float | None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}/metrics", ssl=False) as response,
    ):
        for line in (await response.text()).splitlines():
            if line.startswith("tritonscale_serving_certificate_expiry_timestamp_seconds "):
                return float(line.split()[1])
    return None


async def test_a_swapped_secret_is_served_to_new_connections_and_nothing_fails(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    cert_1, key_1, first = _leaf(ca, days=90)
    cert_2, key_2, second = _leaf(ca, days=120)
    volume = SecretVolume(tmp_path / "serving", {"tls.crt": cert_1, "tls.key": key_1})
    keda_ca = trustme.CA()
    (tmp_path / "keda-ca.crt").write_bytes(keda_ca.cert_pem.bytes())
    config = load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "tls": {
                "cert_file": volume.path("tls.crt"),
                "private_key_file": volume.path("tls.key"),
                "reload_interval_seconds": 0.05,
            },
            "keda_scaler": {
                "listen": "127.0.0.1:0",
                "client_ca_file": str(tmp_path / "keda-ca.crt"),
            },
        },
    )
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with running_service(config) as service:
        assert service.scaler is not None
        assert await _expiry_metric(service.port) == first.not_valid_after_utc.timestamp()
        async with LiveClient(service.port, DISCOVERY, client_context).running() as client:
            await async_wait_until(
                lambda: client.keepalive_answers > 20 and len(client.new_connection_serials) > 3,
                DEADLINE,
                message="requests before the rotation",
            )
            assert set(client.new_connection_serials) == {first.serial_number}
            volume.write({"tls.crt": cert_2, "tls.key": key_2})
            await async_wait_until(
                lambda: second.serial_number in client.new_connection_serials,
                DEADLINE,
                message="a new connection served the new certificate",
            )
            rotated_at = len(client.new_connection_serials)
            answers_at = client.keepalive_answers
            await async_wait_until(
                lambda: (
                    len(client.new_connection_serials) > rotated_at + 5
                    and client.keepalive_answers > answers_at + 20
                ),
                DEADLINE,
                message="requests after the rotation",
            )
        assert client.failures == []
        # one keep-alive connection carried every keep-alive request, across the rotation
        assert client.keepalive_connections_opened == 1
        after = client.new_connection_serials[
            client.new_connection_serials.index(second.serial_number) :
        ]
        assert set(after) == {second.serial_number}, "no new handshake went back to the old one"
        assert await _expiry_metric(service.port) == second.not_valid_after_utc.timestamp()
        scaler_certificate = await _handshake_certificate(service.scaler.port, "h2")
        assert scaler_certificate.serial_number == second.serial_number


async def test_a_certificate_without_its_key_yet_keeps_the_old_one_until_the_key_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that is not atomic (cert first, key later): the half-written pair is refused
    with one log line, the old certificate keeps serving, the full pair is then served."""
    ca = trustme.CA()
    cert_1, key_1, first = _leaf(ca, days=90)
    cert_2, key_2, second = _leaf(ca, days=120)
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_file.write_bytes(cert_1)
    key_file.write_bytes(key_1)
    files = MountedFiles((str(cert_file), str(key_file)))
    serving = ServingTLS(files.read(), options=TLSOptions())  # type: ignore[arg-type]
    reloader = CredentialReloader(interval_seconds=1, config_map_poll_seconds=1)

    def apply(contents: tuple[bytes, ...]) -> dict[str, object]:
        serving.replace(certificate=(contents[0], contents[1]))
        return {}

    reloader.watch_files("serving certificate", files, apply)
    cert_file.write_bytes(cert_2)
    with caplog.at_level(logging.ERROR, logger="adapter.api.rotation"):
        reloader.check_files()
        reloader.check_files()
    assert [r.getMessage() for r in caplog.records] == [
        "changed but unusable; keeping the previous one"
    ]
    assert serving.not_after() == first.not_valid_after_utc.timestamp()
    key_file.write_bytes(key_2)
    reloader.check_files()
    assert serving.not_after() == second.not_valid_after_utc.timestamp()
    assert serving.certificate == (cert_2, key_2)


def test_a_self_signed_certificate_is_renewed_before_it_expires() -> None:
    serving = ServingTLS(generate_self_signed(["tritonscale.tritonscale.svc"]))
    expires = serving.not_after()
    now = [expires - 60 * 86400.0]
    renewed: list[tuple[bytes, bytes]] = []
    reloader = CredentialReloader(
        interval_seconds=1, config_map_poll_seconds=1, wall_clock=lambda: now[0]
    )
    reloader.renew_self_signed(serving, ["tritonscale.tritonscale.svc"], renewed.append)
    original = serving.certificate
    reloader.check_files()
    assert renewed == [] and serving.certificate == original
    now[0] = expires - 20 * 86400.0  # inside the last 30 days
    reloader.check_files()
    assert len(renewed) == 1 and renewed[0] == serving.certificate != original
