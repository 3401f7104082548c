"""KEDA's scaler follows rotations of its serving certificate and client CA without a
restart: gRPC asks for the configuration at each handshake."""

from __future__ import annotations

import grpc
import pytest

from tests.support.keda_support import (
    ScalerPKI,
    Snapshots,
    channel,
    make_scaler,
    make_scaler_pki,
    ref,
    start_scaler,
    stub,
)


async def _is_active(port: int, trusted: ScalerPKI, client: ScalerPKI) -> bool:
    """One IsActive over a new channel verifying the server with ``trusted``'s CA and
    presenting ``client``'s KEDA certificate."""
    ch = channel(port, trusted, client.keda)
    try:
        answer = await stub(ch).IsActive(
            ref(metric="triton_desired_replicas", labelSelector="deployment=llm"), timeout=30
        )
        return bool(answer.result)
    finally:
        await ch.close()


async def test_new_handshakes_get_the_new_certificate_and_client_ca() -> None:
    old, new = make_scaler_pki(), make_scaler_pki()
    server = await start_scaler(make_scaler(Snapshots()), old)
    try:
        assert await _is_active(server.port, old, old)
        server.replace_certificate((new.serving.cert, new.serving.key))
        server.replace_client_ca(new.ca_pem)
        # the server now proves itself with the new CA's certificate...
        assert await _is_active(server.port, new, new)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _is_active(server.port, old, new)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "connect" in (raised.value.details() or "")
        # ...and accepts only clients of the new client CA
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _is_active(server.port, new, old)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "connect" in (raised.value.details() or "")
    finally:
        await server.stop()
