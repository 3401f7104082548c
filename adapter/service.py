"""Wires one running service: config -> targets -> pipeline -> providers -> HTTPS API, and
KEDA's gRPC external scaler beside it when configured."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from adapter.api.auth import CertificateAuthority, DelegatedAuth
from adapter.api.explain import add_explain_routes
from adapter.api.rotation import (
    CredentialReloader,
    apply_client_ca,
    apply_front_proxy,
    certificate_summary,
)
from adapter.api.server import ReadinessCheck, create_app
from adapter.api.tls import (
    CONNECTION_STATS_KEY,
    ClientTrust,
    ServingTLS,
    TLSOptions,
    bound_port,
    make_server_ssl_context,
    serving_certificate,
    start_server,
)
from adapter.api.ui import add_ui_routes
from adapter.config import (
    MAX_CONFIG_BYTES,
    AuthConfig,
    Config,
    DiscoveryConfig,
    KedaScalerConfig,
    TargetConfig,
    TLSConfig,
)
from adapter.config_yaml import read_yaml
from adapter.discovery import CombinedTargets, discovery_from_config
from adapter.event_loop import running_loop_name
from adapter.explain import Explainer
from adapter.keda.scaler import ExternalScaler
from adapter.keda.server import ScalerServer
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
    request_header_config_from_file,
    request_header_config_from_pem,
)
from adapter.memory import (
    collect_cycles_less_often,
    freeze_startup_objects,
    keep_large_buffers_out_of_the_heap,
)
from adapter.metrics_catalog import SERVED_METRICS
from adapter.pipeline import Pipeline
from adapter.predictive import PredictiveStage, WarmReadiness
from adapter.promsource import PrometheusSource
from adapter.provider import SnapshotCustomMetricsProvider, SnapshotProvider
from adapter.recorder import SeriesRecorder
from adapter.selfmetrics import SelfMetrics
from adapter.targets import StaticTargets, Target, TargetSource

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The service cannot start (port in use, unusable TLS files): one line naming what to fix."""


@dataclass(frozen=True)
class FileCheck:
    """What ``check-config`` found in the files a config names.

    ``problems``: files that exist and would stop ``serve`` (unreadable, not a certificate, a
    key that is not the certificate's, not a kubeconfig). ``absent``: files not found here,
    which is expected when the config is checked away from where it runs (a Secret mounted in
    the pod); ``serve`` stops with one line if they are absent there too.
    """

    problems: tuple[str, ...]
    absent: tuple[str, ...]


def check_files(config: Config) -> FileCheck:
    """Load the TLS files as ``serve`` does; the CA files must hold certificates; a
    kubeconfig must be readable YAML with clusters (it is used only against the API server)."""
    problems: list[str] = []
    absent: list[str] = []

    def present(setting: str, path: str | None) -> bool:
        if path is None:
            return False
        if not Path(path).exists():
            absent.append(f"{setting} {path!r} is not here")
            return False
        return True

    tls = config.tls
    cert_here = present("tls.cert_file", tls.cert_file)
    key_here = present("tls.private_key_file", tls.private_key_file)
    if cert_here and key_here:
        try:
            make_server_ssl_context(tls.cert_file, tls.private_key_file, hostnames=tls.hostnames)
        except (OSError, ValueError) as err:
            problems.append(str(err))
    for setting, ca_file in (
        ("auth.requestheader_client_ca_file", config.auth.requestheader_client_ca_file),
        ("auth.client_ca_file", config.auth.client_ca_file),
        ("keda_scaler.client_ca_file", config.keda_scaler.client_ca_file),
    ):
        if present(setting, ca_file):
            assert ca_file is not None
            try:
                request_header_config_from_file(ca_file, setting=setting)
            except RequestHeaderConfigError as err:
                problems.append(str(err))
    for index, source in enumerate(config.sources.prometheus):
        where = f"sources.prometheus.{index}"
        if present(f"{where}.ca_file", source.ca_file):
            try:
                ssl.create_default_context(cafile=source.ca_file)
            except (OSError, ssl.SSLError) as err:
                problems.append(f"{where}.ca_file {source.ca_file!r}: cannot load: {err}")
        token = source.bearer_token_file
        if present(f"{where}.bearer_token_file", token):
            try:
                Path(str(token)).read_bytes()
            except OSError as err:
                problems.append(f"{where}.bearer_token_file {token!r}: {err.strerror or err}")
    for setting, kubeconfig in (
        ("auth.kubeconfig", config.auth.kubeconfig),
        ("auth.authentication_kubeconfig", config.auth.authentication_kubeconfig),
        ("auth.authorization_kubeconfig", config.auth.authorization_kubeconfig),
        ("discovery.kubeconfig", config.discovery.kubeconfig),
    ):
        if present(setting, kubeconfig):
            assert kubeconfig is not None
            problem = _kubeconfig_problem(kubeconfig)
            if problem is not None:
                problems.append(f"{setting}: {problem}")
    return FileCheck(tuple(problems), tuple(absent))


def _kubeconfig_problem(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_CONFIG_BYTES + 1).decode("utf-8")
        document, _ = read_yaml(text)
    except OSError as err:
        return f"cannot read {path}: {err.strerror or err}"
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text"
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        return f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}"
    if not isinstance(document, dict) or "clusters" not in document:
        return f"{path} is not a kubeconfig (no clusters)"
    return None


async def start_sources(
    targets: Sequence[TargetConfig],
    discovery: DiscoveryConfig,
    fallback_kubeconfig: str | None,
    stack: contextlib.AsyncExitStack,
) -> TargetSource:
    """Static targets plus every configured pod discovery, as one source.

    Discoveries connect here, so an unusable Kubernetes configuration fails at start; each is
    closed by ``stack``. Discovery uses ``discovery.kubeconfig``, else ``fallback_kubeconfig``
    (auth's), else in-cluster / the default kubeconfig.
    """
    kubeconfig = discovery.kubeconfig or fallback_kubeconfig
    sources: list[TargetSource] = [static_source(targets)] if targets else []
    for settings in discovery.kubernetes:
        pods = await discovery_from_config(settings, kubeconfig)
        stack.push_async_callback(pods.close)
        sources.append(pods)
    if not sources:
        return static_source(())
    return sources[0] if len(sources) == 1 else CombinedTargets(sources)


def static_source(targets: Iterable[TargetConfig]) -> StaticTargets:
    return StaticTargets(
        Target.create(
            t.url, t.kind, t.labels, t.scrape_interval_seconds, pod=t.pod, pod_labels=t.pod_labels
        )
        for t in targets
    )


@dataclass
class RunningService:
    pipeline: Pipeline
    app: web.Application
    runner: web.AppRunner
    port: int
    scaler: ScalerServer | None = None
    prometheus: tuple[PrometheusSource, ...] = ()
    warm_start: asyncio.Task[int] | None = None  # the forecasts' warm start from Prometheus


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


def build_app(
    pipeline: Pipeline,
    provider: SnapshotProvider,
    max_age_seconds: float,
    metrics: SelfMetrics,
    *,
    auth: DelegatedAuth | None = None,
    readiness: ReadinessCheck | None = None,
    recorder: SeriesRecorder | None = None,
    explainer: Explainer | None = None,
) -> web.Application:
    """The HTTPS app: external and custom metrics from the pipeline's snapshot; ``readiness``
    defaults to the pipeline's; the live page with a ``recorder``, ``/explain`` with an
    ``explainer``."""
    custom = SnapshotCustomMetricsProvider(pipeline.snapshot, time.time, max_age_seconds)
    # metrics observe outside auth, so 401/403 answers are counted too
    app = create_app(
        provider,
        readiness=readiness or pipeline.readiness,
        liveness=pipeline.liveness,
        auth=auth,
        observers=(metrics.middleware,),
        custom=custom,
    )
    app.router.add_get("/metrics", metrics.handle_metrics)

    def get(path: str, handler: Any) -> None:
        app.router.add_get(path, handler, allow_head=False)

    if recorder is not None:
        add_ui_routes(app, recorder, auth, get)
    if explainer is not None:
        add_explain_routes(app, explainer, auth, get)
    return app


async def start_keda_scaler(
    settings: KedaScalerConfig,
    provider: SnapshotProvider,
    certificate: tuple[bytes, bytes],
    stack: contextlib.AsyncExitStack,
    reloader: CredentialReloader | None = None,
) -> ScalerServer | None:
    """KEDA's external scaler over gRPC when ``settings.listen`` is set (stopped by ``stack``).

    A client CA that cannot be read is fatal (a ValueError naming the setting); a port that
    cannot be bound is not: the server keeps trying and readiness reports it. With
    ``reloader`` the client CA file is re-read when it changes."""
    if settings.listen is None:
        return None
    client_ca: bytes | None = None
    client_ca_files: MountedFiles | None = None
    if settings.client_ca_file is not None:
        client_ca_files = MountedFiles((settings.client_ca_file,))
        (client_ca,) = read_mounted(client_ca_files, "keda_scaler.client_ca_file")
    scaler = ExternalScaler(
        provider,
        stream_check_seconds=settings.stream_check_seconds,
        allowed_names=settings.client_allowed_names,
    )
    server = ScalerServer(
        scaler,
        settings.listen,
        certificate=certificate,
        client_ca_pem=client_ca,
        retry_seconds=settings.retry_seconds,
    )
    await server.start()
    stack.push_async_callback(server.stop)
    if reloader is not None and client_ca_files is not None:
        source = f"keda_scaler.client_ca_file {settings.client_ca_file!r}"

        def new_client_ca(contents: tuple[bytes, ...]) -> dict[str, object]:
            (content,) = contents
            ca_bundle(content, source)  # CAFileError (a ValueError) when unusable
            server.replace_client_ca(content)
            return {}

        reloader.watch_files(source, client_ca_files, new_client_ca)
    return server


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


def start_prometheus_sources(
    sources: Sequence[PrometheusSource],
    predictive: PredictiveStage,
    stack: contextlib.AsyncExitStack,
) -> asyncio.Task[int] | None:
    """Each Prometheus source's refresh loop, and one warm start of the forecasts from their
    history (the task returns how many series it warmed; None when no source reads any)."""
    for source in sources:
        stack.push_async_callback(source.close)
        task = asyncio.create_task(source.run(), name=f"prometheus {source.settings.url}")
        stack.push_async_callback(_stop, task)
    if not any(source.settings.warm_start_seconds > 0 for source in sources):
        return None
    warm = asyncio.create_task(warm_start(sources, predictive), name="warm start")
    stack.push_async_callback(_stop, warm)
    return warm


async def warm_start(sources: Sequence[PrometheusSource], predictive: PredictiveStage) -> int:
    """Read every source's history and replay it into the predictive stage."""
    history = {}
    for found in await asyncio.gather(*(source.warm_history() for source in sources)):
        history.update(found)
    warmed = predictive.warm_start(history, time.monotonic(), time.time())
    log.info("forecasts warm-started from Prometheus", extra={"series": warmed})
    return warmed


def all_ready(*checks: ReadinessCheck | None) -> ReadinessCheck:
    """One readiness check: ready when every check is; otherwise the first reason."""

    def ready() -> str | None:
        for check in checks:
            reason = check() if check is not None else None
            if reason is not None:
                return reason
        return None

    return ready


@contextlib.asynccontextmanager
async def running_service(
    config: Config, source: TargetSource | None = None
) -> AsyncIterator[RunningService]:
    """Start scraping and serving; stop both on exit (in reverse order of starting)."""
    async with contextlib.AsyncExitStack() as stack:
        metrics = SelfMetrics(max_age_seconds=config.signals.max_age_seconds)
        if source is None:
            source = await start_sources(
                config.targets, config.discovery, config.auth.kubeconfig, stack
            )
        predictive = PredictiveStage(config.predictive, wall_clock=time.time)
        recorder = (
            SeriesRecorder(
                step_seconds=config.scrape.interval_seconds,
                max_age_seconds=config.signals.max_age_seconds,
                window_seconds=config.ui.history_seconds,
                max_series=config.ui.max_series,
                forecasts=predictive.forecast_views,
            )
            if config.ui.enabled
            else None
        )
        prometheus = tuple(
            PrometheusSource(settings, config.signals) for settings in config.sources.prometheus
        )
        pipeline = Pipeline(
            config.scrape,
            config.signals,
            source,
            stages=(predictive,),
            scrape_observer=metrics.observe_scrape,
            on_target_removed=metrics.forget_target,
            on_publish=(recorder.record,) if recorder is not None else (),
            series_sources=prometheus,
        )
        metrics.serve_snapshots(pipeline.snapshot)
        metrics.serve_scrape_pacing(pipeline.pacing)
        metrics.serve_forecast_checks(predictive.forecast_checks)
        auth_setup = await start_auth(config.auth)
        if auth_setup is not None:
            stack.push_async_callback(auth_setup.close)
        max_age = config.signals.max_age_seconds
        provider = SnapshotProvider(SERVED_METRICS, pipeline.snapshot, time.time, max_age)
        tls = config.tls
        try:
            certificate_files = serving_certificate_files(tls)
            certificate = serving_certificate(
                tls.cert_file,
                tls.private_key_file,
                hostnames=tls.hostnames,
                files=certificate_files,
            )
            serving = ServingTLS(
                certificate,
                auth_setup.trust if auth_setup is not None else ClientTrust(),
                TLSOptions.from_config(tls),
            )
            certificate_listeners: list[Callable[[tuple[bytes, bytes]], None]] = []
            reloader = credential_reloader(
                config, serving, certificate_files, auth_setup, certificate_listeners
            )
            scaler = await start_keda_scaler(
                config.keda_scaler, provider, certificate, stack, reloader
            )
        except (OSError, ValueError) as err:
            raise StartupError(str(err)) from None
        if scaler is not None:
            certificate_listeners.append(scaler.replace_certificate)
        warm = start_prometheus_sources(prometheus, predictive, stack)
        app = build_app(
            pipeline,
            provider,
            max_age,
            metrics,
            auth=auth_setup.auth if auth_setup is not None else None,
            readiness=all_ready(
                pipeline.readiness,
                scaler.readiness if scaler else None,
                WarmReadiness(
                    predictive,
                    pipeline.published_after_every_target_scraped,
                    config.predictive.readiness_max_wait_seconds,
                    warm_start_done=None if warm is None else warm.done,
                ),
            ),
            recorder=recorder,
            explainer=Explainer(
                pipeline,
                predictive.forecast_views,
                provider,
                SERVED_METRICS,
                config.signals,
                time.time,
            ),
        )
        metrics.observe_serving_certificate(serving.context)
        try:
            runner = await start_server(app, config.listen, serving.context, config.server)
        except OSError as err:
            raise StartupError(f"cannot listen on {config.listen}: {err.strerror or err}") from None
        stack.push_async_callback(runner.cleanup)
        metrics.serve_connection_stats(app[CONNECTION_STATS_KEY])
        reloader.start()
        stack.push_async_callback(reloader.stop)
        port = bound_port(runner)
        task = asyncio.create_task(pipeline.run(), name="pipeline")
        stack.push_async_callback(_stop, task)
        log.info(
            "serving external.metrics.k8s.io/v1beta1 and custom.metrics.k8s.io/v1beta2,v1beta1",
            extra={
                "listen": config.listen,
                "port": port,
                "targets": len(config.targets),
                "event_loop": running_loop_name(),
            },
        )
        yield RunningService(pipeline, app, runner, port, scaler, prometheus, warm)


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task  # a pipeline failure was logged and failed /livez already


async def serve_forever(config: Config) -> None:
    keep_large_buffers_out_of_the_heap()  # RSS returns after a burst of TLS connections
    thresholds = collect_cycles_less_often()  # no full collection of the heap every second
    try:
        await _serve_until_stopped(config)
    finally:
        gc.set_threshold(*thresholds)  # as it was, for a caller that goes on (tests)


async def _serve_until_stopped(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_service(config):
            frozen = freeze_startup_objects()  # short full collections: no API pauses of 70 ms
            log.debug("startup objects frozen", extra={"objects": frozen})
            await stop.wait()
            log.info("shutting down")
    finally:
        # uvloop leaves its handlers installed when the loop closes (asyncio's loop removes
        # them): a caller that goes on, or forks, would ignore SIGTERM
        for sig in signals:
            loop.remove_signal_handler(sig)
