"""Certificates and CAs that change while the service runs (rotation without restart).

cert-manager renews a serving certificate at two thirds of its life and the kubelet swaps the
mounted Secret; a cluster rotates its front-proxy CA by rewriting
``kube-system/extension-apiserver-authentication``. The Go servers follow both
(``DynamicServingCertificateController``, ``DynamicFileCAContent``,
``DynamicCAFromConfigMapController``); so does :class:`CredentialReloader`:

- files (the serving certificate and key, ``auth.requestheader_client_ca_file``,
  ``auth.client_ca_file``, ``keda_scaler.client_ca_file``) are checked every
  ``tls.reload_interval_seconds`` (:class:`adapter.kube.mounted.MountedFiles`: one ``stat``
  per file while nothing changes, Secret-volume ``..data`` swaps included);
- the ConfigMap is read every ``auth.config_map_poll_seconds``; only a new
  ``resourceVersion`` is parsed.

New material that cannot be used (a certificate whose key has not arrived yet, a CA file
that is not PEM) is logged once and the previous material keeps serving; it is tried again
when the files change again. A change is applied to the TLS context first (new handshakes)
and then to authentication (every next request, open connections included), with no await
in between, so the two never disagree while a request is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509

from adapter.api.auth import CertificateAuthority, DelegatedAuth
from adapter.api.tls import ClientTrust, ServingTLS, generate_self_signed
from adapter.kube.mounted import MountedFiles
from adapter.kube.reviews import (
    RequestHeaderConfig,
    RequestHeaderConfigError,
    ReviewError,
    request_header_config_from_config_map,
)

__all__ = [
    "SELF_SIGNED_RENEW_BEFORE_SECONDS",
    "CredentialReloader",
    "apply_client_ca",
    "apply_front_proxy",
    "certificate_summary",
]

log = logging.getLogger(__name__)

SELF_SIGNED_RENEW_BEFORE_SECONDS = 30 * 86400.0
"""A self-signed certificate (valid a year) is replaced this long before it expires."""

ConfigMapReader = Callable[[], Awaitable[tuple[str, Mapping[str, str]]]]
Apply = Callable[[tuple[bytes, ...]], Mapping[str, object] | None]
"""Uses new file contents; returns details for the log line; ValueError when unusable."""


def certificate_summary(cert_pem: bytes) -> dict[str, str]:
    """What a log line says about a certificate: subject, serial, notAfter (no key)."""
    certificate = x509.load_pem_x509_certificate(cert_pem)
    return {
        "subject": certificate.subject.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "not_after": certificate.not_valid_after_utc.isoformat(),
    }


def apply_front_proxy(
    serving: ServingTLS, auth: DelegatedAuth, config: RequestHeaderConfig
) -> None:
    """Trust ``config``'s front-proxy CA for new handshakes, then authenticate with it.

    Raises ValueError (nothing changed) when the CA cannot be loaded."""
    serving.replace(trust=ClientTrust(config.client_ca_pem, serving.trust.client_ca))
    auth.update(request_header=config, client_ca=auth.client_ca)


def apply_client_ca(serving: ServingTLS, auth: DelegatedAuth, pem: str, source: str) -> None:
    """Accept client-certificate users issued by ``pem`` from now on (``auth.client_ca_file``).

    Raises ValueError (nothing changed) when it holds no usable CA."""
    authority = CertificateAuthority(pem, "client_ca", source)
    serving.replace(trust=ClientTrust(serving.trust.front_proxy_ca, pem))
    auth.update(request_header=auth.request_header, client_ca=authority)


@dataclass
class _FileWatch:
    what: str
    files: MountedFiles
    apply: Apply


@dataclass
class _ConfigMapWatch:
    read: ConfigMapReader
    apply: Callable[[RequestHeaderConfig], None]
    version: str


class CredentialReloader:
    """Polls files and the authentication ConfigMap and applies what changed.

    Register with :meth:`watch_files`, :meth:`watch_config_map` and
    :meth:`renew_self_signed`, then :meth:`start`; :meth:`check_files` and
    :meth:`check_config_map` run one pass (tests call them directly).
    """

    def __init__(
        self,
        *,
        interval_seconds: float,
        config_map_poll_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._interval = interval_seconds
        self._config_map_interval = config_map_poll_seconds
        self._wall_clock = wall_clock
        self._files: list[_FileWatch] = []
        self._config_map: _ConfigMapWatch | None = None
        self._self_signed: (
            tuple[ServingTLS, tuple[str, ...], Callable[[tuple[bytes, bytes]], None]] | None
        ) = None
        self._config_map_failure: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def watch_files(self, what: str, files: MountedFiles, apply: Apply) -> None:
        """Call ``apply(contents)`` when ``files`` change (``files`` already read once);
        ``apply`` raises ValueError when it cannot use them. ``what`` names them in logs."""
        self._files.append(_FileWatch(what, files, apply))

    def watch_config_map(
        self, read: ConfigMapReader, apply: Callable[[RequestHeaderConfig], None], version: str
    ) -> None:
        """Re-read the ConfigMap with ``read``; parse and ``apply`` each new resourceVersion
        (``version``: the one already applied)."""
        self._config_map = _ConfigMapWatch(read, apply, version)

    def renew_self_signed(
        self,
        serving: ServingTLS,
        hostnames: Sequence[str],
        on_renewed: Callable[[tuple[bytes, bytes]], None],
    ) -> None:
        """Replace ``serving``'s self-signed certificate before it expires, then tell
        ``on_renewed`` (the other listeners serving it)."""
        self._self_signed = (serving, tuple(hostnames), on_renewed)

    def check_files(self) -> None:
        """One pass over the watched files (and the self-signed certificate's expiry)."""
        for watch in self._files:
            try:
                contents = watch.files.poll()
            except OSError as exc:
                log.warning(
                    "cannot read for reload; keeping the previous one",
                    extra={"what": watch.what, "error": f"{type(exc).__name__}: {exc}"},
                )
                continue
            if contents is None:
                continue
            try:
                details = watch.apply(contents)
            except ValueError as exc:
                log.error(
                    "changed but unusable; keeping the previous one",
                    extra={"what": watch.what, "error": str(exc)},
                )
                continue
            log.info("reloaded", extra={"what": watch.what, **(details or {})})
        if self._self_signed is not None:
            serving, hostnames, on_renewed = self._self_signed
            if serving.not_after() - self._wall_clock() < SELF_SIGNED_RENEW_BEFORE_SECONDS:
                certificate = generate_self_signed(hostnames)
                serving.replace(certificate=certificate)
                on_renewed(certificate)
                log.info(
                    "self-signed serving certificate renewed",
                    extra=certificate_summary(certificate[0]),
                )

    async def check_config_map(self) -> None:
        """One read of the ConfigMap; a new resourceVersion is parsed and applied."""
        watch = self._config_map
        if watch is None:
            return
        try:
            version, data = await watch.read()
        except ReviewError as exc:
            self._report_config_map_failure(f"cannot read: {exc}")
            return
        if version == watch.version:
            self._report_config_map_failure(None)
            return
        watch.version = version  # a version that cannot be used is not retried
        try:
            config = request_header_config_from_config_map(data)
            watch.apply(config)
        except (RequestHeaderConfigError, ValueError) as exc:
            self._report_config_map_failure(
                f"resourceVersion {version} unusable, keeping the previous settings: {exc}"
            )
            return
        self._config_map_failure = None
        log.info(
            "reloaded",
            extra={
                "what": "front-proxy settings (ConfigMap)",
                "resource_version": version,
                "requestheader_allowed_names": list(config.allowed_names),
            },
        )

    def _report_config_map_failure(self, failure: str | None) -> None:
        """Log a failure once (and its end), not at every poll."""
        if failure == self._config_map_failure:
            return
        if failure is not None:
            log.warning("front-proxy ConfigMap not reloaded", extra={"error": failure})
        else:
            log.info("front-proxy ConfigMap readable again")
        self._config_map_failure = failure

    async def _every(self, seconds: float, check: Callable[[], Awaitable[None] | None]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                result = check()
                if result is not None:
                    await result
            except Exception:  # a bug in one pass must not end reloading
                log.exception("credential reload pass failed")

    def start(self) -> None:
        """Start polling in the background (:meth:`stop` ends it)."""
        if self._files or self._self_signed is not None:
            self._tasks.append(
                asyncio.create_task(self._every(self._interval, self.check_files), name="reload")
            )
        if self._config_map is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._every(self._config_map_interval, self.check_config_map),
                    name="reload configmap",
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
