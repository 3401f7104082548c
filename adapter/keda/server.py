"""The gRPC server of KEDA's external scaler, beside the HTTPS API.

It serves the HTTPS API's certificate (one pair per process, so one ``caCert`` verifies both)
and, with a client CA, requires a client certificate it issued: KEDA's TriggerAuthentication
gives ``caCert``, ``tlsClientCert`` and ``tlsClientKey``. Both follow rotations without a
restart: gRPC asks :meth:`ScalerServer._configuration` before each handshake
(``grpc.dynamic_ssl_server_credentials``), and it answers with the material last given to
:meth:`~ScalerServer.replace_certificate` / :meth:`~ScalerServer.replace_client_ca` when that
changed; open connections keep theirs. gRPC's asyncio server runs on the
service's event loop. A start that fails (the port is taken) does not stop the service: it is
logged, ``/readyz`` reports it, and the start is retried until it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from adapter.config import parse_listen
from adapter.keda.proto.externalscaler_pb2_grpc import add_ExternalScalerServicer_to_server
from adapter.keda.scaler import ExternalScaler

__all__ = ["ScalerServer", "grpc_address"]

log = logging.getLogger(__name__)

_STOP_GRACE_SECONDS = 2.0


def grpc_address(listen: str) -> str:
    """``HOST:PORT`` as gRPC writes addresses: IPv6 in brackets, empty host = every interface."""
    host, port = parse_listen(listen)
    if host is None:
        return f"[::]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ScalerServer:
    """Serves ``scaler`` on ``listen`` over TLS until :meth:`stop`.

    ``certificate`` is the PEM ``(cert, key)`` pair; ``client_ca_pem`` the CA that must have
    issued each client's certificate (None: no client certificate asked for).
    ``retry_seconds``: the wait between start attempts after a failure.
    """

    def __init__(
        self,
        scaler: ExternalScaler,
        listen: str,
        *,
        certificate: tuple[bytes, bytes],
        client_ca_pem: bytes | None,
        retry_seconds: float,
    ) -> None:
        self._scaler = scaler
        self._listen = listen
        # (cert, key, client CA) as one tuple: gRPC's handshake threads read it while the
        # event loop replaces it, and one attribute swap is atomic
        self._material: tuple[bytes, bytes, bytes | None] = (*certificate, client_ca_pem)
        self._given: tuple[bytes, bytes, bytes | None] | None = None
        self._require_client_certificate = client_ca_pem is not None
        self._retry_seconds = retry_seconds
        self._server: grpc.aio.Server | None = None
        self._retry: asyncio.Task[None] | None = None
        self._failure: str | None = "not started"
        self.port = 0

    def readiness(self) -> str | None:
        """None while serving; otherwise why not (for /readyz)."""
        if self._failure is None:
            return None
        return f"keda scaler on {self._listen}: {self._failure}"

    async def start(self) -> None:
        """Try to serve now; on failure keep retrying in the background (see readiness)."""
        if await self._try_start():
            return
        self._retry = asyncio.create_task(self._retry_until_started(), name="keda scaler start")

    def replace_certificate(self, certificate: tuple[bytes, bytes]) -> None:
        """Serve ``certificate`` (PEM cert, key) from the next handshake on."""
        self._material = (*certificate, self._material[2])

    def replace_client_ca(self, client_ca_pem: bytes) -> None:
        """Require client certificates from ``client_ca_pem`` from the next handshake on."""
        if not self._require_client_certificate:
            raise ValueError("the scaler was started without a client CA")
        self._material = (self._material[0], self._material[1], client_ca_pem)

    @staticmethod
    def _certificate_configuration(
        material: tuple[bytes, bytes, bytes | None],
    ) -> grpc.ServerCertificateConfiguration:
        cert_pem, key_pem, client_ca = material
        return grpc.ssl_server_certificate_configuration(
            [(key_pem, cert_pem)], root_certificates=client_ca
        )

    def _configuration(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-handshake fetcher (runs on gRPC's threads): the new configuration when
        the material changed since it last asked, else None (keep the current one)."""
        material = self._material
        if material is self._given:
            return None
        self._given = material
        return self._certificate_configuration(material)

    async def _try_start(self) -> bool:
        self._given = self._material
        credentials = grpc.dynamic_ssl_server_credentials(
            self._certificate_configuration(self._material),
            self._configuration,
            require_client_authentication=self._require_client_certificate,
        )
        # no SO_REUSEPORT: a second process on the same port is an error, not a silent share
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        add_ExternalScalerServicer_to_server(self._scaler, server)
        try:
            port = server.add_secure_port(grpc_address(self._listen), credentials)
            if port == 0:
                raise RuntimeError("the address cannot be bound")
            await server.start()
        except Exception as exc:  # grpc raises RuntimeError for a taken port
            await server.stop(None)
            reason = f"cannot serve: {type(exc).__name__}: {exc}"
            if reason != self._failure:
                log.error(
                    "keda scaler not serving", extra={"listen": self._listen, "error": reason}
                )
            self._failure = reason
            return False
        self._server, self.port, self._failure = server, port, None
        log.info(
            "serving externalscaler.ExternalScaler",
            extra={
                "listen": self._listen,
                "port": port,
                "client_certificates": (
                    "required" if self._require_client_certificate else "not asked"
                ),
            },
        )
        return True

    async def _retry_until_started(self) -> None:
        while not await self._try_start():
            await asyncio.sleep(self._retry_seconds)

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if self._server is not None:
            await self._server.stop(_STOP_GRACE_SECONDS)
            self._server = None
            log.info("keda scaler stopped", extra={"listen": self._listen})
        self._failure = "stopped"
