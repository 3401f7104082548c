"""The HPA emulator reads the adapter's HTTPS API as the HPA does and scales the target."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest

from adapter.api.server import create_app
from adapter.api.tls import bound_port, make_server_ssl_context, start_server
from adapter.kube.selectors import Selector
from adapter.metrics_catalog import SERVED_METRICS
from adapter.provider import ExternalMetricValue, StaleMetricError
from adapter.snapshot import MetricInfo
from loadtest.harness.hpa_emulator import HPAEmulator
from loadtest.harness.hpa_manifest import load_hpa
from tests.support.paths import REPO_ROOT

HPA_DIR = REPO_ROOT / "manifests" / "examples" / "hpa"


@dataclass
class Provider:
    """Serves ``values`` for any metric, or a 503 while ``stale``; records every request."""

    values: list[float] = field(default_factory=lambda: [1.0])
    stale: bool = False
    asked: list[tuple[str, str, str]] = field(default_factory=list)

    def list_all_external_metrics(self) -> Sequence[MetricInfo]:
        return SERVED_METRICS

    def get_external_metric(
        self, namespace: str, metric: str, selector: Selector
    ) -> list[ExternalMetricValue]:
        self.asked.append((namespace, metric, selector.source))
        if self.stale:
            raise StaleMetricError("stale: last data 45 s ago from http://10.0.0.9:8002/metrics")
        return [
            ExternalMetricValue(metric, {"namespace": namespace}, v, 0.0, None) for v in self.values
        ]


@dataclass
class Target:
    desired: int = 1
    existing: int = 1
    ready: int = 1

    def scale(self, desired: int) -> None:
        self.desired = self.existing = self.ready = desired


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def served() -> AsyncIterator[tuple[Provider, int]]:
    provider = Provider()
    context = make_server_ssl_context(None, None, hostnames=("localhost",))
    runner = await start_server(create_app(provider), "127.0.0.1:0", context)
    yield provider, bound_port(runner)
    await runner.cleanup()


async def test_reads_like_the_hpa_and_scales_the_target(served: tuple[Provider, int]) -> None:
    provider, port = served
    target, clock = Target(), Clock()
    hpa = load_hpa(HPA_DIR / "desired-replicas.yaml")
    emulator = HPAEmulator(hpa, port, target, clock=clock)
    provider.values = [3.0]
    async with aiohttp.ClientSession() as session:
        record = await emulator.sync_once(session)
        assert provider.asked == [
            ("prod", "triton_desired_replicas", "deployment=triton-llm,model=resnet")
        ]
        assert (record.spec_replicas, record.desired, target.desired) == (1, 3, 3)
        assert record.values == ((3.0,),) and record.error is None

        provider.stale = True  # the HPA holds: no value is made up
        clock.now += 15
        record = await emulator.sync_once(session)
        assert target.desired == 3 and record.values == (None,)
        assert record.error is not None and "HTTP 503: stale: last data 45 s ago" in record.error


async def test_windows_count_in_the_controllers_time(served: tuple[Provider, int]) -> None:
    """queue-compute-ratio.yaml has no behavior: scale-down waits the default 300 s window,
    which at time_scale 20 is 15 real seconds."""
    provider, port = served
    target, clock = Target(desired=4, existing=4, ready=4), Clock()
    hpa = load_hpa(HPA_DIR / "queue-compute-ratio.yaml")
    emulator = HPAEmulator(hpa, port, target, time_scale=20, clock=clock)
    assert emulator.sync_period_s / emulator.time_scale == pytest.approx(0.75)
    async with aiohttp.ClientSession() as session:
        provider.values = [1.0]  # on target: 4 replicas stay
        await emulator.sync_once(session)
        provider.values = [0.2]  # wants ceil(0.2 x 4) = 1
        clock.now += 14.0  # 280 controller seconds
        await emulator.sync_once(session)
        assert target.desired == 4
        clock.now += 1.5  # 310 s: the first recommendation left the window
        record = await emulator.sync_once(session)
        assert record.t == pytest.approx(310.0)
        assert target.desired == 1
