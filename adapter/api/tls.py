"""Serving TLS and the listener.

The kube-aggregator only speaks HTTPS to an APIService backend. Like the Go framework
(``MaybeDefaultWithSelfSignedCerts``), when no certificate files are given we make a
self-signed one at start; the APIService then needs ``insecureSkipTLSVerify`` or the
certificate as ``caBundle``.

ALPN offers only ``http/1.1``: aiohttp has no HTTP/2 server. The Go servers offer
``h2`` too, but the aggregator and kubelet probes fall back to HTTP/1.1 fine.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapter.api.connections import ConnectionGuard, ConnectionStats, ProtocolErrorLog
from adapter.config import ServerConfig, parse_listen

__all__ = [
    "CONNECTION_STATS_KEY",
    "bound_port",
    "generate_self_signed",
    "make_server_ssl_context",
    "serving_certificate",
    "serving_certificate_not_after",
    "start_server",
]

CONNECTION_STATS_KEY = web.AppKey[ConnectionStats]("connection_stats")
"""What the listener's :class:`ConnectionGuard` has done (open, closed by reason, bad requests)."""

_DEFAULT_HOSTNAMES = ("localhost",)
_DEFAULT_IPS = ("127.0.0.1", "::1")
_SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)
# notAfter (Unix s) of the certificate each server context serves, for the expiry self-metric.
_NOT_AFTER: weakref.WeakKeyDictionary[ssl.SSLContext, float] = weakref.WeakKeyDictionary()


def generate_self_signed(hostnames: Sequence[str]) -> tuple[bytes, bytes]:
    """A self-signed serving certificate and its key, PEM encoded: ``(cert, key)``.

    SANs: ``localhost``, ``127.0.0.1``, ``::1`` and each of ``hostnames`` (DNS names or IP
    literals, e.g. ``tritonscale.tritonscale.svc``). ECDSA P-256, valid one year from one
    hour ago (clock skew). CA:TRUE so the certificate itself can be a ``caBundle``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    dns_names: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name in [*_DEFAULT_HOSTNAMES, *_DEFAULT_IPS, *hostnames]:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            if name not in dns_names:
                dns_names.append(name)
        else:
            if ip not in ips:
                ips.append(ip)
    common_name = hostnames[0] if hostnames else "localhost"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = datetime.datetime.now(datetime.UTC)
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def serving_certificate(
    cert_file: str | None, key_file: str | None, *, hostnames: Sequence[str]
) -> tuple[bytes, bytes]:
    """The serving certificate and key as PEM, ``(cert, key)``: read from the two files, or
    self-signed for ``hostnames`` when neither is given. One pair serves every listener of
    the process (the HTTPS API and the gRPC scaler); errors name the flag and file."""
    if (cert_file is None) != (key_file is None):
        missing = "--tls-private-key-file" if key_file is None else "--tls-cert-file"
        raise ValueError(f"TLS: {missing} is required when the other TLS file is given")
    if cert_file is None or key_file is None:
        return generate_self_signed(hostnames)
    pems: list[bytes] = []
    for label, path in (("--tls-cert-file", cert_file), ("--tls-private-key-file", key_file)):
        try:
            pems.append(Path(path).read_bytes())
        except OSError as exc:
            raise FileNotFoundError(
                f"TLS: {label} {path!r} cannot be read: {exc.strerror}"
            ) from None
    return pems[0], pems[1]


def make_server_ssl_context(
    cert_file: str | None,
    key_file: str | None,
    *,
    hostnames: Sequence[str],
    client_ca_file: str | None = None,
    client_ca_data: str | None = None,
    certificate: tuple[bytes, bytes] | None = None,
) -> ssl.SSLContext:
    """Server TLS context: TLS >= 1.2, ALPN ``http/1.1``.

    With both files given, they are loaded (a missing or bad file raises an error naming
    it). With neither, a self-signed certificate for ``hostnames`` is generated, written
    to a private (0700) temporary directory as 0600 files only long enough to load it,
    and removed. With ``client_ca_file``, client certificates are requested and verified
    against it but not required (front-proxy authentication, as the Go servers do);
    ``client_ca_data`` is the same as PEM text (e.g. read from the
    ``extension-apiserver-authentication`` ConfigMap). These CAs are the only ones trusted for
    client certificates, so a certificate the handshake accepted was issued by one of them.
    A certificate that does not verify ends the handshake (the stdlib cannot request a
    certificate without verifying it). ``certificate`` (PEM ``(cert, key)``, from
    :func:`serving_certificate`) is used instead of the files when given.
    """
    if (cert_file is None) != (key_file is None):
        missing = "--tls-private-key-file" if key_file is None else "--tls-cert-file"
        raise ValueError(f"TLS: {missing} is required when the other TLS file is given")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if certificate is None and cert_file is not None and key_file is not None:
        for label, path in (("--tls-cert-file", cert_file), ("--tls-private-key-file", key_file)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"TLS: {label} {path!r} does not exist or is not a file")
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise ValueError(
                f"TLS: cannot load certificate {cert_file!r} with key {key_file!r}: {exc}"
            ) from exc
        _NOT_AFTER[context] = _not_after(Path(cert_file).read_bytes())
    else:
        cert_pem, key_pem = certificate or generate_self_signed(hostnames)
        directory = Path(tempfile.mkdtemp(prefix="tritonscale-tls-"))
        try:
            cert_path, key_path = directory / "apiserver.crt", directory / "apiserver.key"
            _write_private(cert_path, cert_pem)
            _write_private(key_path, key_pem)
            try:
                context.load_cert_chain(cert_path, key_path)
            except ssl.SSLError as exc:
                raise ValueError(f"TLS: cannot load the serving certificate: {exc}") from exc
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        _NOT_AFTER[context] = _not_after(cert_pem)
    if client_ca_file is not None or client_ca_data is not None:
        try:
            if client_ca_file is not None:
                context.load_verify_locations(cafile=client_ca_file)
            if client_ca_data is not None:
                context.load_verify_locations(cadata=client_ca_data)
        except (ssl.SSLError, OSError) as exc:
            where = client_ca_file if client_ca_file is not None else "the given PEM data"
            raise ValueError(f"TLS: cannot load client CA from {where}: {exc}") from exc
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _not_after(cert_pem: bytes) -> float:
    """notAfter of the first (leaf) certificate in a PEM chain, Unix seconds."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def serving_certificate_not_after(context: ssl.SSLContext) -> float | None:
    """Unix time (s) at which the certificate ``context`` serves expires; None if that
    context was not made by :func:`make_server_ssl_context`."""
    return _NOT_AFTER.get(context)


class _GuardedSite(web.BaseSite):
    """A TCP listener whose connections go through a :class:`ConnectionGuard` (TLS included)."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str | None, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"tcp://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.protocol_factory, self._host, self._port, reuse_address=True
        )

    async def stop(self) -> None:
        self._guard.close_all()
        await super().stop()


async def start_server(
    app: web.Application,
    listen: str,
    ssl_context: ssl.SSLContext | None,
    limits: ServerConfig | None = None,
) -> web.AppRunner:
    """Start serving ``app`` on ``listen`` (``HOST:PORT``, port 0 = any free port).

    Returns the runner; ``await runner.cleanup()`` stops it. ``ssl_context=None`` serves
    plain HTTP (tests only: the aggregator requires HTTPS). Connections are bounded by
    ``limits`` (the config's ``server:`` section; default its defaults); the guard's counters are
    ``app[CONNECTION_STATS_KEY]``.
    """
    host, port = parse_listen(listen)
    limits = limits or ServerConfig()
    guard = ConnectionGuard(limits, ssl_context=ssl_context)
    app.middlewares.insert(0, guard.middleware)
    app[CONNECTION_STATS_KEY] = guard.stats
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=5.0,
        # aiohttp's own keep-alive timer (from connect, then after each response) is only a
        # backstop: the guard's header and idle deadlines come first
        keepalive_timeout=max(limits.idle_timeout_seconds, limits.header_timeout_seconds) + 1.0,
        logger=ProtocolErrorLog(guard.stats),
    )
    await runner.setup()
    assert runner.server is not None
    guard.attach(runner.server)
    try:
        await _GuardedSite(runner, host, port, guard).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner listens on (useful after starting on port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the runner has no TCP listener")
