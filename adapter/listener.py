"""One process's HTTPS listener: its certificate, delegated auth, and what follows rotations.

Shared by the main process (``adapter.service``) and, with ``server.api_process``, by the API
process (``adapter.api_process``): each process that listens sets up its own TLS context,
its own connection to the Kubernetes API for TokenReview and SubjectAccessReview, and its
own reloads of every mounted credential.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from adapter.api.auth import CertificateAuthority, DelegatedAuth
from adapter.api.rotation import (
    CredentialReloader,
    apply_client_ca,
    apply_front_proxy,
    certificate_summary,
)
from adapter.api.tls import (
    ClientTrust,
    ServingTLS,
    TLSOptions,
    serving_certificate,
    start_server,
)
from adapter.config import AuthConfig, Config, ServerConfig, TLSConfig
from adapter.kube.mounted import MountedFiles
from adapter.kube.reviews import (
    CAFileError,
    KubernetesReviewClient,
    RequestHeaderConfig,
    RequestHeaderConfigError,
    ReviewError,
    ca_bundle,
    connect,
    request_header_config_from_config_map,
    request_header_config_from_pem,
)

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start (port in use, unusable TLS files): one line naming what to fix."""


def read_mounted(files: MountedFiles, setting: str) -> tuple[bytes, ...]:
    """``files.read()``; CAFileError naming ``setting`` and the path when one cannot be read."""
    try:
        return files.read()
    except OSError as exc:
        raise CAFileError(
            f"{setting} {exc.filename or files.paths[0]!r}: cannot read: {exc.strerror or exc}"
        ) from None


@dataclass
class AuthSetup:
    """Delegated auth ready to serve: the middleware, its Kubernetes client, the CAs the
    serving context must trust, and where the front-proxy settings are re-read from
    (``front_proxy_files``: the CA file; ``config_map_version``: the ConfigMap's
    resourceVersion; neither: front-proxy authentication is off)."""

    auth: DelegatedAuth
    client: KubernetesReviewClient
    trust: ClientTrust
    front_proxy_files: MountedFiles | None = None
    config_map_version: str | None = None
    client_ca_files: MountedFiles | None = None

    async def close(self) -> None:
        await self.client.close()


async def _front_proxy_settings(
    settings: AuthConfig, client: KubernetesReviewClient
) -> tuple[RequestHeaderConfig | None, MountedFiles | None, str | None]:
    """The front-proxy settings: from ``requestheader_client_ca_file``, else (unless
    ``authentication_skip_lookup``) the ConfigMap; with where to re-read them."""
    ca_file = settings.requestheader_client_ca_file
    if ca_file is not None:
        files = MountedFiles((ca_file,))
        setting = "auth.requestheader_client_ca_file"
        try:
            (content,) = read_mounted(files, setting)
            pem = content.decode("utf-8")
        except (CAFileError, UnicodeDecodeError) as exc:
            raise RequestHeaderConfigError(str(exc)) from None
        config = request_header_config_from_pem(
            pem,
            source=f"{setting} {ca_file!r}",
            allowed_names=settings.requestheader_allowed_names,
            username_headers=settings.requestheader_username_headers,
            group_headers=settings.requestheader_group_headers,
            extra_headers_prefixes=settings.requestheader_extra_headers_prefix,
        )
        return config, files, None
    if settings.authentication_skip_lookup:
        return None, None, None
    try:
        version, data = await client.read_authentication_config_map()
    except ReviewError as exc:
        raise RequestHeaderConfigError(
            f"auth: cannot load the front-proxy settings from {client.host}: {exc} "
            "(bind the Role kube-system/extension-apiserver-authentication-reader, "
            "or set auth.requestheader_client_ca_file)"
        ) from None
    return request_header_config_from_config_map(data), None, version


async def start_auth(settings: AuthConfig) -> AuthSetup | None:
    """None for ``mode: none``; else connect to the Kubernetes API and load the front-proxy CA
    (from ``requestheader_client_ca_file``, or the ``extension-apiserver-authentication``
    ConfigMap when it is not given and lookup is not skipped) and the client CA. Any failure
    is fatal, as in the Go servers (``--authentication-tolerate-lookup-failure=false``): a
    ValueError naming what to fix."""
    if settings.mode == "none":
        return None
    client = await connect(
        settings.authentication_kubeconfig or settings.kubeconfig,
        timeout_seconds=settings.review_timeout_seconds,
        authorization_kubeconfig=settings.authorization_kubeconfig or settings.kubeconfig,
        token_audiences=settings.token_audiences,
    )
    try:
        request_header, front_proxy_files, version = await _front_proxy_settings(settings, client)
        client_ca: CertificateAuthority | None = None
        client_ca_files: MountedFiles | None = None
        if settings.client_ca_file is not None:
            client_ca_files = MountedFiles((settings.client_ca_file,))
            source = f"auth.client_ca_file {settings.client_ca_file!r}"
            (content,) = read_mounted(client_ca_files, "auth.client_ca_file")
            client_ca = CertificateAuthority(ca_bundle(content, source), "client_ca", source)
    except BaseException:
        await client.close()
        raise
    auth = DelegatedAuth(
        client,
        request_header,
        cache_seconds=settings.authorization_cache_seconds,
        always_allow_paths=settings.always_allow_paths,
        client_ca=client_ca,
    )
    log.info(
        "delegated authentication and authorization",
        extra={
            "kubernetes_api": client.host,
            "authorization_api": client.authorization_host,
            "requestheader_source": request_header.source if request_header else "off",
            "requestheader_allowed_names": (
                list(request_header.allowed_names) if request_header else []
            ),
            "client_ca": client_ca.source if client_ca else "off",
        },
    )
    trust = ClientTrust(
        request_header.client_ca_pem if request_header else None,
        client_ca.pem if client_ca else None,
    )
    return AuthSetup(auth, client, trust, front_proxy_files, version, client_ca_files)


def serving_certificate_files(tls: TLSConfig) -> MountedFiles | None:
    """The certificate and key files to watch; None for a self-signed certificate."""
    if tls.cert_file is None or tls.private_key_file is None:
        return None
    return MountedFiles((tls.cert_file, tls.private_key_file))


def credential_reloader(
    config: Config,
    serving: ServingTLS,
    certificate_files: MountedFiles | None,
    auth_setup: AuthSetup | None,
    certificate_listeners: Sequence[Callable[[tuple[bytes, bytes]], None]] = (),
) -> CredentialReloader:
    """What follows rotations: the serving certificate (or the self-signed one's renewal)
    for the HTTPS API and ``certificate_listeners`` (the KEDA scaler), and delegated auth's
    front-proxy settings (file or ConfigMap) and client CA."""
    reloader = CredentialReloader(
        interval_seconds=config.tls.reload_interval_seconds,
        config_map_poll_seconds=config.auth.config_map_poll_seconds,
    )

    def new_certificate(certificate: tuple[bytes, bytes]) -> None:
        for listener in certificate_listeners:
            listener(certificate)

    if certificate_files is None:
        reloader.renew_self_signed(serving, config.tls.hostnames, new_certificate)
    else:

        def certificate_changed(contents: tuple[bytes, ...]) -> dict[str, object]:
            cert_pem, key_pem = contents
            serving.replace(certificate=(cert_pem, key_pem))  # ValueError: keep the old one
            new_certificate((cert_pem, key_pem))
            return dict(certificate_summary(cert_pem))

        reloader.watch_files(
            f"serving certificate {config.tls.cert_file!r}", certificate_files, certificate_changed
        )
    if auth_setup is None:
        return reloader
    auth = auth_setup.auth
    if auth_setup.front_proxy_files is not None and auth.request_header is not None:
        current = auth.request_header

        def front_proxy_changed(contents: tuple[bytes, ...]) -> dict[str, object]:
            try:
                config_now = dataclasses.replace(
                    current, client_ca_pem=ca_bundle(contents[0], current.source)
                )
            except CAFileError as exc:
                raise ValueError(str(exc)) from None
            apply_front_proxy(serving, auth, config_now)
            return {}

        reloader.watch_files(current.source, auth_setup.front_proxy_files, front_proxy_changed)
    if auth_setup.config_map_version is not None:
        reloader.watch_config_map(
            auth_setup.client.read_authentication_config_map,
            lambda request_header: apply_front_proxy(serving, auth, request_header),
            auth_setup.config_map_version,
        )
    if auth_setup.client_ca_files is not None and auth.client_ca is not None:
        client_source = auth.client_ca.source

        def client_ca_changed(contents: tuple[bytes, ...]) -> dict[str, object]:
            apply_client_ca(serving, auth, ca_bundle(contents[0], client_source), client_source)
            return {}

        reloader.watch_files(client_source, auth_setup.client_ca_files, client_ca_changed)
    return reloader


@dataclass
class Serving:
    """A process's serving TLS and its reloads. ``certificate_listeners`` are told of every
    new serving certificate (the KEDA scaler's gRPC server serves the same one)."""

    certificate: tuple[bytes, bytes]
    tls: ServingTLS
    reloader: CredentialReloader
    certificate_listeners: list[Callable[[tuple[bytes, bytes]], None]] = field(default_factory=list)


def start_serving(config: Config, auth_setup: AuthSetup | None) -> Serving:
    """The serving certificate (files, else self-signed), the TLS context trusting
    ``auth_setup``'s CAs, and the reloader that follows them (not started). OSError or
    ValueError naming the file when one is unusable."""
    tls = config.tls
    certificate_files = serving_certificate_files(tls)
    certificate = serving_certificate(
        tls.cert_file, tls.private_key_file, hostnames=tls.hostnames, files=certificate_files
    )
    serving = ServingTLS(
        certificate,
        auth_setup.trust if auth_setup is not None else ClientTrust(),
        TLSOptions.from_config(tls),
    )
    listeners: list[Callable[[tuple[bytes, bytes]], None]] = []
    reloader = credential_reloader(config, serving, certificate_files, auth_setup, listeners)
    return Serving(certificate, serving, reloader, listeners)


async def listen(
    app: web.Application, address: str, serving: Serving, settings: ServerConfig
) -> web.AppRunner:
    """Serve ``app`` on ``address`` (HOST:PORT) over TLS; StartupError when it cannot."""
    try:
        return await start_server(app, address, serving.tls.context, settings)
    except OSError as err:
        raise StartupError(f"cannot listen on {address}: {err.strerror or err}") from None
