"""Serving TLS and the listener.

The kube-aggregator only speaks HTTPS to an APIService backend. Like the Go framework
(``MaybeDefaultWithSelfSignedCerts``), when no certificate files are given we make a
self-signed one at start; the APIService then needs ``insecureSkipTLSVerify`` or the
certificate as ``caBundle``.

ALPN offers only ``http/1.1``: aiohttp has no HTTP/2 server. The Go servers offer
``h2`` too, but the aggregator and kubelet probes fall back to HTTP/1.1 fine.

**Rotation without restart** (:class:`ServingTLS`). The listener is given one
``ssl.SSLContext`` for its lifetime; its SNI callback, which OpenSSL calls for every
ClientHello whether or not the client sent a server name, switches each new connection to
the newest context built from the current certificate and client CAs. Measured both ways on
a live asyncio server (TLS 1.2 and 1.3, with and without SNI): calling ``load_cert_chain``
again on the live context does serve the new certificate to new handshakes, but
``load_verify_locations`` can only add a CA to the context's store, never remove one, so a
retired front-proxy CA would stay trusted until a restart; switching whole contexts serves
the new certificate *and* trusts exactly the new CAs. Either way a connection keeps the
context it shook hands with, so keep-alive connections carry on untouched; the auth
middleware re-checks their client certificate against the current CAs on every request
(:mod:`adapter.api.auth`), as the Go servers verify per request.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapter.api.connections import ConnectionGuard, ConnectionStats, ProtocolErrorLog
from adapter.config import ServerConfig, TLSConfig, parse_listen
from adapter.kube.mounted import MountedFiles
from adapter.kube.tls_names import openssl_cipher_string

__all__ = [
    "CONNECTION_STATS_KEY",
    "ClientTrust",
    "ServingTLS",
    "TLSOptions",
    "bound_port",
    "client_trust_of",
    "generate_self_signed",
    "make_server_ssl_context",
    "serving_certificate",
    "serving_certificate_not_after",
    "start_server",
]

CONNECTION_STATS_KEY = web.AppKey[ConnectionStats]("connection_stats")
"""What the listener's :class:`ConnectionGuard` has done (open, closed by reason, bad requests)."""

log = logging.getLogger(__name__)

_DEFAULT_HOSTNAMES = ("localhost",)
_DEFAULT_IPS = ("127.0.0.1", "::1")
_SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)
# notAfter (Unix s) of the certificate each server context serves, for the expiry self-metric
# (a ServingTLS listener context: of the certificate its new connections get now).
_NOT_AFTER: weakref.WeakKeyDictionary[ssl.SSLContext, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class ClientTrust:
    """The CAs a serving context trusts for client certificates, by purpose (PEM text).

    ``front_proxy_ca``: the request-header CA (the aggregator's client certificate);
    ``client_ca``: ``auth.client_ca_file`` (callers authenticated by certificate). The
    handshake verifies against both; the auth middleware decides which one issued a
    certificate.
    """

    front_proxy_ca: str | None = None
    client_ca: str | None = None

    @property
    def any(self) -> bool:
        return self.front_proxy_ca is not None or self.client_ca is not None


# What each server context trusted, so a request can tell which CAs its handshake checked.
_TRUST: weakref.WeakKeyDictionary[ssl.SSLContext, ClientTrust] = weakref.WeakKeyDictionary()


def client_trust_of(context: ssl.SSLContext) -> ClientTrust | None:
    """The client CAs ``context`` verified against; None for a context not made here."""
    return _TRUST.get(context)


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """Protocol settings every serving context gets: lowest version, TLS 1.2 ciphers
    (OpenSSL's list; None: OpenSSL's defaults)."""

    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    ciphers: str | None = None

    @classmethod
    def from_config(cls, tls: TLSConfig) -> TLSOptions:
        version = (
            ssl.TLSVersion.TLSv1_3 if tls.min_version == "VersionTLS13" else ssl.TLSVersion.TLSv1_2
        )
        ciphers = openssl_cipher_string(tls.cipher_suites) if tls.cipher_suites else None
        return cls(version, ciphers or None)


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
    cert_file: str | None,
    key_file: str | None,
    *,
    hostnames: Sequence[str],
    files: MountedFiles | None = None,
) -> tuple[bytes, bytes]:
    """The serving certificate and key as PEM, ``(cert, key)``: read from the two files, or
    self-signed for ``hostnames`` when neither is given. One pair serves every listener of
    the process (the HTTPS API and the gRPC scaler); errors name the flag and file.
    ``files`` (``MountedFiles`` of the two paths) reads them as one version and remembers
    it, for reloading."""
    if (cert_file is None) != (key_file is None):
        missing = "--tls-private-key-file" if key_file is None else "--tls-cert-file"
        raise ValueError(f"TLS: {missing} is required when the other TLS file is given")
    if cert_file is None or key_file is None:
        return generate_self_signed(hostnames)
    files = files or MountedFiles((cert_file, key_file))
    try:
        cert_pem, key_pem = files.read()
    except OSError as exc:
        label = "--tls-private-key-file" if exc.filename == key_file else "--tls-cert-file"
        path = key_file if exc.filename == key_file else cert_file
        raise FileNotFoundError(
            f"TLS: {label} {path!r} cannot be read: {exc.strerror or exc}"
        ) from None
    return cert_pem, key_pem


def make_server_ssl_context(
    cert_file: str | None,
    key_file: str | None,
    *,
    hostnames: Sequence[str],
    client_ca_file: str | None = None,
    client_ca_data: str | None = None,
    certificate: tuple[bytes, bytes] | None = None,
    client_trust: ClientTrust | None = None,
    options: TLSOptions = TLSOptions(),
) -> ssl.SSLContext:
    """Server TLS context: TLS >= 1.2 (``options``), ALPN ``http/1.1``.

    With both files given, they are loaded (a missing or bad file raises an error naming
    it). With neither, a self-signed certificate for ``hostnames`` is generated, written
    to a private (0700) temporary directory as 0600 files only long enough to load it,
    and removed. With a front-proxy CA (``client_ca_file``, or ``client_ca_data`` as PEM
    text, e.g. read from the ``extension-apiserver-authentication`` ConfigMap), or the CAs
    of ``client_trust``, client certificates are requested and verified against them but not
    required (as the Go servers do). These CAs are the only ones trusted for client
    certificates. A certificate that does not verify ends the handshake (the stdlib cannot
    request a certificate without verifying it). ``certificate`` (PEM ``(cert, key)``, from
    :func:`serving_certificate`) is used instead of the files when given.
    """
    if (cert_file is None) != (key_file is None):
        missing = "--tls-private-key-file" if key_file is None else "--tls-cert-file"
        raise ValueError(f"TLS: {missing} is required when the other TLS file is given")
    if certificate is None and cert_file is not None and key_file is not None:
        for label, path in (("--tls-cert-file", cert_file), ("--tls-private-key-file", key_file)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"TLS: {label} {path!r} does not exist or is not a file")
        certificate = serving_certificate(cert_file, key_file, hostnames=hostnames)
        what = f"certificate {cert_file!r} with key {key_file!r}"
    else:
        certificate = certificate or generate_self_signed(hostnames)
        what = "the serving certificate"
    trust = client_trust or ClientTrust()
    if client_ca_file is not None or client_ca_data is not None:
        pems = [trust.front_proxy_ca] if trust.front_proxy_ca else []
        if client_ca_file is not None:
            try:
                pems.append(Path(client_ca_file).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"TLS: cannot load client CA from {client_ca_file}: {exc}"
                ) from exc
        if client_ca_data is not None:
            pems.append(client_ca_data)
        trust = ClientTrust("\n".join(pems), trust.client_ca)
    return _server_context(certificate, trust, options, what=what)


def _server_context(
    certificate: tuple[bytes, bytes], trust: ClientTrust, options: TLSOptions, *, what: str
) -> ssl.SSLContext:
    """One serving context; ValueError naming ``what`` when the material is unusable."""
    cert_pem, key_pem = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = options.minimum_version
    if options.ciphers is not None:
        try:
            context.set_ciphers(options.ciphers)
        except ssl.SSLError as exc:
            raise ValueError(f"TLS: cipher suites {options.ciphers!r}: {exc}") from exc
    context.set_alpn_protocols(["http/1.1"])
    # the stdlib loads a certificate and key only from files
    directory = Path(tempfile.mkdtemp(prefix="tritonscale-tls-"))
    try:
        cert_path, key_path = directory / "apiserver.crt", directory / "apiserver.key"
        _write_private(cert_path, cert_pem)
        _write_private(key_path, key_pem)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise ValueError(f"TLS: cannot load {what}: {exc}") from exc
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for purpose, pem in (("front-proxy", trust.front_proxy_ca), ("client", trust.client_ca)):
        if pem is None:
            continue
        try:
            context.load_verify_locations(cadata=pem)
        except ssl.SSLError as exc:
            raise ValueError(f"TLS: cannot load the {purpose} CA: {exc}") from exc
    if trust.any:
        context.verify_mode = ssl.CERT_OPTIONAL
    try:
        _NOT_AFTER[context] = _not_after(cert_pem)
    except ValueError as exc:
        raise ValueError(f"TLS: cannot read {what}: {exc}") from exc
    _TRUST[context] = trust
    return context


class ServingTLS:
    """The HTTPS listener's TLS, whose certificate and client CAs can change while it serves.

    Hand :attr:`context` to the listener once. :meth:`replace` builds a context from the new
    material (raising ValueError, and changing nothing, when it is unusable) and makes it the
    one every later handshake switches to (see the module docstring for why a switch and not
    an in-place reload). :attr:`certificate` is the pair served now, for the other listeners
    of the process (KEDA's gRPC scaler).
    """

    def __init__(
        self,
        certificate: tuple[bytes, bytes],
        trust: ClientTrust = ClientTrust(),
        options: TLSOptions = TLSOptions(),
    ) -> None:
        self._options = options
        self._certificate = certificate
        self._trust = trust
        self._current = _server_context(certificate, trust, options, what="the serving certificate")
        self.context = self._current
        self.context.sni_callback = self._choose

    def _choose(
        self, ssl_object: ssl.SSLObject, _server_name: str | None, context: ssl.SSLContext
    ) -> None:
        current = self._current
        if context is not current:
            ssl_object.context = current

    @property
    def certificate(self) -> tuple[bytes, bytes]:
        return self._certificate

    @property
    def trust(self) -> ClientTrust:
        return self._trust

    def replace(
        self, *, certificate: tuple[bytes, bytes] | None = None, trust: ClientTrust | None = None
    ) -> None:
        """Serve ``certificate`` and trust ``trust`` (unchanged when None) from the next
        handshake on; open connections keep theirs."""
        certificate = certificate or self._certificate
        trust = trust if trust is not None else self._trust
        new = _server_context(certificate, trust, self._options, what="the new certificate")
        self._current, self._certificate, self._trust = new, certificate, trust
        _NOT_AFTER[self.context] = _NOT_AFTER[new]

    def not_after(self) -> float:
        """notAfter (Unix s) of the certificate new connections get."""
        return _NOT_AFTER[self._current]


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
