"""Wires one running service: config -> targets -> pipeline -> provider -> HTTPS API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from adapter.api.auth import (
    DelegatedAuth,
    RequestHeaderConfigError,
    ReviewError,
    request_header_config_from_file,
)
from adapter.api.kube_client import KubernetesReviewClient, connect
from adapter.api.server import create_app
from adapter.api.tls import bound_port, make_server_ssl_context, start_server
from adapter.config import AuthConfig, Config
from adapter.discovery import CombinedTargets, PodDiscovery, discovery_from_config
from adapter.metrics_catalog import SERVED_METRICS
from adapter.pipeline import Pipeline
from adapter.predictive import PredictiveStage
from adapter.provider import SnapshotProvider
from adapter.selfmetrics import SelfMetrics
from adapter.targets import StaticTargets, Target, TargetSource

log = logging.getLogger(__name__)


async def start_sources(config: Config) -> tuple[TargetSource, list[PodDiscovery]]:
    """Static targets plus every configured pod discovery, as one source.

    Discoveries connect here, so an unusable Kubernetes configuration fails at start.
    """
    kubeconfig = config.discovery.kubeconfig or config.auth.kubeconfig
    discoveries: list[PodDiscovery] = []
    try:
        for settings in config.discovery.kubernetes:
            discoveries.append(await discovery_from_config(settings, kubeconfig))
    except BaseException:
        for discovery in discoveries:
            await discovery.close()
        raise
    if not discoveries:
        return static_source(config), []
    sources: list[TargetSource] = [*discoveries]
    if config.targets:
        sources.insert(0, static_source(config))
    return (sources[0] if len(sources) == 1 else CombinedTargets(sources)), discoveries


def static_source(config: Config) -> StaticTargets:
    return StaticTargets(
        Target.create(t.url, t.kind, t.labels, t.scrape_interval_seconds) for t in config.targets
    )


@dataclass
class RunningService:
    pipeline: Pipeline
    app: web.Application
    runner: web.AppRunner
    port: int


@dataclass
class AuthSetup:
    """Delegated auth ready to serve: the middleware, its Kubernetes client, the front-proxy CA."""

    auth: DelegatedAuth
    client: KubernetesReviewClient
    client_ca_pem: str

    async def close(self) -> None:
        await self.client.close()


async def start_auth(settings: AuthConfig) -> AuthSetup | None:
    """None for ``mode: none``; else connect to the Kubernetes API and load the front-proxy CA
    (from ``requestheader_client_ca_file``, or the ``extension-apiserver-authentication``
    ConfigMap when it is not given). Any failure is fatal, as in the Go servers
    (``--authentication-tolerate-lookup-failure=false``): a ValueError naming what to fix."""
    if settings.mode == "none":
        return None
    client = await connect(settings.kubeconfig, timeout_seconds=settings.review_timeout_seconds)
    try:
        if settings.requestheader_client_ca_file is not None:
            request_header = request_header_config_from_file(
                settings.requestheader_client_ca_file,
                allowed_names=settings.requestheader_allowed_names,
                username_headers=settings.requestheader_username_headers,
                group_headers=settings.requestheader_group_headers,
                extra_headers_prefixes=settings.requestheader_extra_headers_prefix,
            )
        else:
            try:
                request_header = await client.read_request_header_config()
            except ReviewError as exc:
                raise RequestHeaderConfigError(
                    f"auth: cannot load the front-proxy settings from {client.host}: {exc} "
                    "(bind the Role kube-system/extension-apiserver-authentication-reader, "
                    "or set auth.requestheader_client_ca_file)"
                ) from None
    except BaseException:
        await client.close()
        raise
    auth = DelegatedAuth(
        client,
        request_header,
        cache_seconds=settings.authorization_cache_seconds,
        always_allow_paths=settings.always_allow_paths,
    )
    log.info(
        "delegated authentication and authorization",
        extra={
            "kubernetes_api": client.host,
            "requestheader_source": request_header.source,
            "requestheader_allowed_names": list(request_header.allowed_names),
        },
    )
    return AuthSetup(auth, client, request_header.client_ca_pem)


def build_app(
    pipeline: Pipeline,
    config: Config,
    metrics: SelfMetrics,
    *,
    auth: DelegatedAuth | None = None,
) -> web.Application:
    provider = SnapshotProvider(
        SERVED_METRICS, pipeline.snapshot, time.time, config.signals.max_age_seconds
    )
    # metrics observe outside auth, so 401/403 answers are counted too
    app = create_app(
        provider,
        readiness=pipeline.readiness,
        liveness=pipeline.liveness,
        auth=auth,
        observers=(metrics.middleware,),
    )
    app.router.add_get("/metrics", metrics.handle_metrics)
    return app


@contextlib.asynccontextmanager
async def running_service(
    config: Config, source: TargetSource | None = None
) -> AsyncIterator[RunningService]:
    """Start scraping and serving; stop both on exit."""
    metrics = SelfMetrics(max_age_seconds=config.signals.max_age_seconds)
    discoveries: list[PodDiscovery] = []
    if source is None:
        source, discoveries = await start_sources(config)
    predictive = PredictiveStage(config)
    pipeline = Pipeline(
        config,
        source,
        stages=(predictive,),
        scrape_observer=metrics.observe_scrape,
        on_target_removed=metrics.forget_target,
    )
    metrics.serve_snapshots(pipeline.snapshot)
    metrics.serve_forecast_checks(predictive.forecast_checks)
    auth_setup = await start_auth(config.auth)
    try:
        app = build_app(
            pipeline, config, metrics, auth=auth_setup.auth if auth_setup is not None else None
        )
        ssl_context = make_server_ssl_context(
            config.tls.cert_file,
            config.tls.private_key_file,
            hostnames=config.tls.hostnames,
            client_ca_data=auth_setup.client_ca_pem if auth_setup is not None else None,
        )
        metrics.observe_serving_certificate(ssl_context)
        runner = await start_server(app, config.listen, ssl_context)
    except BaseException:
        if auth_setup is not None:
            await auth_setup.close()
        for discovery in discoveries:
            await discovery.close()
        raise
    port = bound_port(runner)
    task = asyncio.create_task(pipeline.run(), name="pipeline")
    log.info(
        "serving external.metrics.k8s.io/v1beta1",
        extra={"listen": config.listen, "port": port, "targets": len(config.targets)},
    )
    try:
        yield RunningService(pipeline, app, runner, port)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task  # a pipeline failure was logged and failed /livez already
        await runner.cleanup()
        if auth_setup is not None:
            await auth_setup.close()
        for discovery in discoveries:
            await discovery.close()


async def serve_forever(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_service(config):
        await stop.wait()
        log.info("shutting down")
