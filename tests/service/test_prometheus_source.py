"""Prometheus as a source, against a real Prometheus (Debian's) scraping a live Triton.

The same Triton is read two ways at once: scraped by the adapter and read back from
Prometheus with the source's queries (1 s scrapes, 5 s windows on both sides). Tolerances:
the two windows are offset by up to a scrape plus a refresh (~2 s) and each sees its own
Poisson noise, so rates are compared as means over ~15 s of samples within 10 %, queue time
and the queue/compute ratio (means of noisy per-batch waits) within 30 %, and the queue depth
(an instantaneous gauge sampled at different moments) within 3 requests or 50 %.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapter.config import Config, load_config
from adapter.pipeline import Pipeline
from adapter.predictive import ARRIVAL_FORECAST, PredictiveStage
from adapter.promsource import PrometheusSource
from adapter.service import running_service, static_source
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH
from adapter.snapshot import Snapshot
from loadtest.harness.api_client import read_metric
from loadtest.harness.loadgen import RateSegment, run_schedule
from loadtest.harness.prometheus import PrometheusProcess
from loadtest.harness.triton_server import LOOPBACK, TritonProcess, free_port
from tests.conftest import PrometheusFactory
from tests.support.helpers import async_wait_until

pytestmark = [pytest.mark.prometheus, pytest.mark.triton]

WINDOW_S = 5.0
SCRAPED = {"namespace": "prod", "deployment": "scraped"}
READ = {"namespace": "prod", "deployment": "read"}
SIGNALS = (
    "triton_request_rate",
    "triton_arrival_rate",
    "triton_queue_depth",
    "triton_queue_time_seconds",
    "triton_queue_compute_ratio",
)


def start_prometheus(
    factory: PrometheusFactory, triton: TritonProcess, **jobs: list[dict[str, Any]]
) -> PrometheusProcess:
    """Prometheus scraping Triton every second as pod ``triton-0`` of namespace ``prod`` (the
    labels a PodMonitor adds), plus ``jobs``."""
    return factory(
        [],
        scrape_interval_s=1.0,
        static_configs=[
            {
                "targets": [triton.metrics_host_port],
                "labels": {"namespace": "prod", "pod": "triton-0"},
            }
        ],
        extra_jobs=jobs,
    )


class FakeTriton:
    """A Triton exposition whose counters grow by 10 requests per scrape, on its own port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.scrapes = 0
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.scrapes += 1
        n = 10 * self.scrapes
        return web.Response(
            text=(
                f'nv_inference_request_success{{model="resnet",version="1"}} {n}\n'
                f'nv_inference_pending_request_count{{model="resnet",version="1"}} 2\n'
                f'nv_inference_queue_duration_us{{model="resnet",version="1"}} {1000 * n}\n'
                f'nv_inference_compute_infer_duration_us{{model="resnet",version="1"}} {500 * n}\n'
            )
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def source(
    prometheus: PrometheusProcess, groups: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "url": prometheus.url,
        "scrape_interval_seconds": 1,
        "rate_window_seconds": WINDOW_S,
        "query_interval_seconds": 1,
        "groups": groups,
        **extra,
    }


def config(triton: TritonProcess, prometheus: PrometheusProcess, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "targets": [{"url": triton.metrics_url, "labels": SCRAPED, "pod": "triton-0"}],
        "signals": {"rate_window_seconds": WINDOW_S},
        "sources": {
            "prometheus": [
                source(
                    prometheus,
                    [{"labels": READ, "matchers": 'job="triton"', "pod_labels": {"app": "t"}}],
                    warm_start_seconds=0,
                )
            ]
        },
    }
    settings.update(overrides)
    return load_config(None, settings)


def resnet(snapshot: Snapshot, metric: str, labels: Mapping[str, str]) -> float | None:
    for point in snapshot.points(metric):
        if point.labels.get("model") == "resnet" and all(
            point.labels.get(k) == v for k, v in labels.items()
        ):
            return point.value
    return None


@pytest.fixture
async def running(
    triton: TritonProcess, prometheus_factory: PrometheusFactory
) -> AsyncIterator[tuple[Pipeline, PrometheusSource, PrometheusProcess]]:
    """The scrape path and the Prometheus source side by side in one pipeline."""
    prometheus = start_prometheus(prometheus_factory, triton)
    settings = config(triton, prometheus)
    reader = PrometheusSource(settings.sources.prometheus[0], settings.signals)
    pipeline = Pipeline(
        settings.scrape,
        settings.signals,
        static_source(settings.targets),
        series_sources=(reader,),
    )
    tasks = [asyncio.create_task(pipeline.run()), asyncio.create_task(reader.run())]
    try:
        yield pipeline, reader, prometheus
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await reader.close()


async def test_prometheus_values_agree_with_the_scrape_path(
    triton: TritonProcess,
    running: tuple[Pipeline, PrometheusSource, PrometheusProcess],
) -> None:
    pipeline, reader, _prometheus = running
    load_seconds = 45.0
    load_ends = time.monotonic() + load_seconds - 1.0  # sample only while the load is steady
    load = asyncio.create_task(
        run_schedule(
            triton.grpc_url, "resnet", [RateSegment(0.0, 50.0)], duration_s=load_seconds, seed=5
        )
    )
    try:

        def both_full_windows() -> bool:
            snapshot = pipeline.snapshot()
            rates = [resnet(snapshot, "triton_request_rate", g) for g in (SCRAPED, READ)]
            return all(r is not None and r > 40 for r in rates)

        await async_wait_until(both_full_windows, timeout=60, interval=0.25, message="50 req/s")
        samples: dict[str, dict[str, list[float]]] = {"scraped": {}, "read": {}}
        for _ in range(30):
            if time.monotonic() > load_ends:
                break
            snapshot = pipeline.snapshot()
            for name, group in (("scraped", SCRAPED), ("read", READ)):
                for metric in SIGNALS:
                    value = resnet(snapshot, metric, group)
                    if value is not None and math.isfinite(value):
                        samples[name].setdefault(metric, []).append(value)
            await asyncio.sleep(0.5)
        per_pod = {p.labels["pod"]: p.value for p in pipeline.snapshot().pod_points(ARRIVAL_RATE)}
    finally:
        result = await load
    assert result.failed == 0, result.summary()

    means = {
        name: {metric: statistics.fmean(values) for metric, values in by_metric.items()}
        for name, by_metric in samples.items()
    }
    scraped, read = means["scraped"], means["read"]
    assert set(read) == set(SIGNALS) == set(scraped), means
    assert min(len(v) for by_metric in samples.values() for v in by_metric.values()) >= 8
    for metric in ("triton_request_rate", "triton_arrival_rate"):
        assert read[metric] == pytest.approx(scraped[metric], rel=0.10), means
    for metric in ("triton_queue_time_seconds", "triton_queue_compute_ratio"):
        assert read[metric] == pytest.approx(scraped[metric], rel=0.30), means
    depth = scraped["triton_queue_depth"]
    assert abs(read["triton_queue_depth"] - depth) <= max(3.0, 0.5 * depth), means
    # per pod: the scraped target and the Prometheus group both name pod triton-0
    assert "triton-0" in per_pod and per_pod["triton-0"] > 20
    assert reader.latest().pods[("prod", "triton-0")] == {"app": "t"}
    assert reader.latest().replicas == {tuple(sorted(READ.items())): 1}


async def test_a_target_down_or_prometheus_down_is_503_never_0(
    triton: TritonProcess, prometheus_factory: PrometheusFactory
) -> None:
    fake = FakeTriton()
    await fake.start()
    try:
        await _target_down_then_prometheus_down(triton, prometheus_factory, fake)
    finally:
        await fake.stop()


async def _target_down_then_prometheus_down(
    triton: TritonProcess, prometheus_factory: PrometheusFactory, fake: FakeTriton
) -> None:
    fake_pod = {"namespace": "prod", "pod": "fake-0"}
    prometheus = start_prometheus(
        prometheus_factory,
        triton,
        fake=[{"targets": [f"{LOOPBACK}:{fake.port}"], "labels": fake_pod}],
    )
    max_age = 4.0
    both = {"namespace": "prod", "deployment": "both"}
    settings = config(
        triton,
        prometheus,
        targets=[],
        signals={"rate_window_seconds": WINDOW_S, "max_age_seconds": max_age},
        sources={
            "prometheus": [
                source(
                    prometheus,
                    [
                        {"labels": READ, "matchers": 'job="triton"'},
                        {"labels": both, "matchers": 'job=~"triton|fake"'},
                    ],
                    warm_start_seconds=0,
                )
            ]
        },
    )
    async with running_service(settings) as service, aiohttp.ClientSession() as session:

        async def depth(deployment: str) -> tuple[int, dict[str, float]]:
            served = await read_metric(
                session, service.port, "prod", "triton_queue_depth", f"deployment={deployment}"
            )
            return served.status, served.values

        async def served(deployment: str) -> bool:
            return (await depth(deployment))[0] == 200

        for deployment in ("read", "both"):
            await async_wait_until(
                lambda d=deployment: served(d), timeout=60, interval=0.25, message=deployment
            )
        status, values = await depth("both")
        assert status == 200 and values["resnet"] >= 2.0  # the fake's 2 pending, plus Triton's

        await fake.stop()  # a target goes down: Prometheus records up == 0
        gone = time.monotonic()

        async def stale(deployment: str, floor: float = 0.0) -> bool:
            status, values = await depth(deployment)
            assert status in (200, 503), status
            if status == 200:  # held at its last value meanwhile, never a smaller sum
                assert values["resnet"] >= floor, values
            return status == 503

        await async_wait_until(
            lambda: stale("both", floor=2.0), timeout=30, interval=0.25, message="503 once stale"
        )
        assert time.monotonic() - gone >= max_age - 2.0
        assert (await depth("read"))[0] == 200  # the healthy group is untouched
        pods = {p.labels["pod"] for p in service.prometheus[0].latest().pod_series[QUEUE_DEPTH]}
        assert "triton-0" in pods

        prometheus.stop()
        stopped = time.monotonic()
        await async_wait_until(
            lambda: stale("read"), timeout=30, interval=0.25, message="503 once stale"
        )
        assert time.monotonic() - stopped >= max_age - 2.0  # held the last value meanwhile
        # and it stays 503: the group is known, its data is not (never a 404, never 0)
        for _ in range(int(max_age / 0.5) * 2):
            for deployment in ("read", "both"):
                assert (await depth(deployment))[0] == 503
            await asyncio.sleep(0.5)


async def test_a_warm_start_reproduces_the_live_forecast(
    triton: TritonProcess, prometheus_factory: PrometheusFactory
) -> None:
    """A scraped group's forecasts, built live over ~40 s of changing load, against a fresh
    stage warm-started from Prometheus' history of the same group (``live: false``)."""
    prometheus = start_prometheus(prometheus_factory, triton)
    predictive = {
        "defaults": {
            "step_seconds": 2,
            "cold_start_seconds": 4,
            "hpa_sync_period_seconds": 2,
            "slo_attainment": 0.9,
        },
        "warm_steps": 10,  # readiness' notion of warm: 20 s of 2 s steps with a known rate
    }
    started = time.time()
    settings = config(
        triton,
        prometheus,
        targets=[{"url": triton.metrics_url, "labels": SCRAPED}],
        predictive=predictive,
        sources={
            "prometheus": [
                source(
                    prometheus,
                    [{"labels": SCRAPED, "matchers": 'job="triton"', "live": False}],
                    warm_start_seconds=60,
                )
            ]
        },
    )
    live = PredictiveStage(settings.predictive)
    pipeline = Pipeline(
        settings.scrape, settings.signals, static_source(settings.targets), stages=(live,)
    )
    reader = PrometheusSource(settings.sources.prometheus[0], settings.signals)
    task = asyncio.create_task(pipeline.run())
    try:
        await async_wait_until(
            lambda: resnet(pipeline.snapshot(), ARRIVAL_RATE, SCRAPED) is not None,
            timeout=30,
            interval=0.25,
            message="the scraped arrival rate",
        )
        schedule = [RateSegment(0.0, 15.0), RateSegment(12.0, 45.0), RateSegment(26.0, 30.0)]
        result = await run_schedule(triton.grpc_url, "resnet", schedule, duration_s=40.0, seed=9)
        assert result.failed == 0, result.summary()
        snapshot = pipeline.snapshot()
        live_forecast = resnet(snapshot, ARRIVAL_FORECAST, SCRAPED)
        now_wall, now_mono = time.time(), time.monotonic()
        history = await reader.warm_history(now=now_wall)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader.close()

    key = tuple(sorted({**SCRAPED, "model": "resnet"}.items()))
    assert key in history and history[key][0].wall <= started + 10
    cold = PredictiveStage(settings.predictive)
    warm = PredictiveStage(settings.predictive)
    assert warm.warm_start(history, now_mono, now_wall) >= 1
    raw = {
        m: [p for p in snapshot.points(m) if p.labels.get("model") == "resnet"]
        for m in (ARRIVAL_RATE, QUEUE_DEPTH)
    }
    raw = {
        m: [p for p in points if p.labels.get("deployment") == "scraped"]
        for m, points in raw.items()
    }
    replicas = {tuple(sorted(SCRAPED.items())): 1}
    labels = dict(key)
    assert cold.step(now_mono, raw, replicas) == {}  # a fresh stage has no forecast yet
    assert cold.is_warm(labels) is False
    served = warm.step(now_mono, raw, replicas)[ARRIVAL_FORECAST][0].value
    assert warm.is_warm(labels) is True and live.is_warm(labels) is True
    assert live_forecast is not None and math.isfinite(served)
    assert served == pytest.approx(live_forecast, rel=0.25), (served, live_forecast)
