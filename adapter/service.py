"""Wires one running service: config -> targets -> pipeline -> providers -> HTTPS API, and
KEDA's gRPC external scaler beside it when configured."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from adapter.api.auth import DelegatedAuth
from adapter.api.explain import add_explain_routes
from adapter.api.rotation import CredentialReloader
from adapter.api.server import ReadinessCheck, create_app
from adapter.api.tls import CONNECTION_STATS_KEY, bound_port, make_server_ssl_context
from adapter.api.ui import add_ui_routes
from adapter.api_process import ApiProcess, ApiProcessExitedError, start_api_process
from adapter.config import (
    MAX_CONFIG_BYTES,
    Config,
    DiscoveryConfig,
    KedaScalerConfig,
    TargetConfig,
)
from adapter.config_yaml import read_yaml
from adapter.discovery import CombinedTargets, discovery_from_config
from adapter.event_loop import running_loop_name
from adapter.explain import Explainer
from adapter.keda.scaler import ExternalScaler
from adapter.keda.server import ScalerServer
from adapter.kube.mounted import MountedFiles
from adapter.kube.reviews import (
    RequestHeaderConfigError,
    ca_bundle,
    request_header_config_from_file,
)
from adapter.listener import (
    StartupError,
    listen,
    read_mounted,
    start_auth,
    start_serving,
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
from adapter.snapshot_feed import Health
from adapter.targets import StaticTargets, Target, TargetSource

log = logging.getLogger(__name__)


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
    main_port: int = 0  # where ``app`` listens: ``port`` unless the API has its own process
    api_process: ApiProcess | None = None


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
    """Start scraping and serving; stop both on exit (in reverse order of starting).

    With ``server.api_process`` the metrics APIs on ``listen`` are answered by a child fed
    every published snapshot (:mod:`adapter.api_process`), and this process's full app
    listens on ``server.main_listen``."""
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
        try:
            serving = start_serving(config, auth_setup)
            scaler = await start_keda_scaler(
                config.keda_scaler, provider, serving.certificate, stack, serving.reloader
            )
        except (OSError, ValueError) as err:
            raise StartupError(str(err)) from None
        if scaler is not None:
            serving.certificate_listeners.append(scaler.replace_certificate)
        warm = start_prometheus_sources(prometheus, predictive, stack)
        readiness = all_ready(
            pipeline.readiness,
            scaler.readiness if scaler else None,
            WarmReadiness(
                predictive,
                pipeline.published_after_every_target_scraped,
                config.predictive.readiness_max_wait_seconds,
                warm_start_done=None if warm is None else warm.done,
            ),
        )
        api_process: ApiProcess | None = None
        if config.server.api_process:
            api_process = await start_api_process(
                config,
                stack,
                lambda: Health(readiness(), pipeline.liveness()),
                metrics.exposition,
            )
            pipeline.subscribe(api_process.feed.publish)
            metrics.serve_feed_stats(api_process.feed)
        app = build_app(
            pipeline,
            provider,
            max_age,
            metrics,
            auth=auth_setup.auth if auth_setup is not None else None,
            readiness=readiness,
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
        metrics.observe_serving_certificate(serving.tls.context)
        address = config.listen if api_process is None else config.server.main_listen
        runner = await listen(app, address, serving, config.server)
        stack.push_async_callback(runner.cleanup)
        metrics.serve_connection_stats(app[CONNECTION_STATS_KEY])
        serving.reloader.start()
        stack.push_async_callback(serving.reloader.stop)
        port = bound_port(runner)
        task = asyncio.create_task(pipeline.run(), name="pipeline")
        stack.push_async_callback(_stop, task)
        log.info(
            "serving external.metrics.k8s.io/v1beta1 and custom.metrics.k8s.io/v1beta2,v1beta1",
            extra={
                "listen": address,
                "port": port,
                "api_process_port": api_process.port if api_process else None,
                "targets": len(config.targets),
                "event_loop": running_loop_name(),
            },
        )
        yield RunningService(
            pipeline,
            app,
            runner,
            port if api_process is None else api_process.port,
            scaler,
            prometheus,
            warm,
            main_port=port,
            api_process=api_process,
        )


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


async def _until_stopped(stop: asyncio.Event, api_process: ApiProcess | None) -> None:
    """Until SIGINT/SIGTERM; ApiProcessExitedError if the API process exits first."""
    if api_process is None:
        await stop.wait()
        return
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((stopping, api_process.exited), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not stop.is_set():
        code = api_process.exited.result()
        log.error("the API process exited; stopping", extra={"exit_code": code})
        raise ApiProcessExitedError(f"the API process exited (code {code})")


async def _serve_until_stopped(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_service(config) as service:
            frozen = freeze_startup_objects()  # short full collections: no API pauses of 70 ms
            log.debug("startup objects frozen", extra={"objects": frozen})
            await _until_stopped(stop, service.api_process)
            log.info("shutting down")
    finally:
        # uvloop leaves its handlers installed when the loop closes (asyncio's loop removes
        # them): a caller that goes on, or forks, would ignore SIGTERM
        for sig in signals:
            loop.remove_signal_handler(sig)
