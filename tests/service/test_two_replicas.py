"""Two adapters on the same targets (the Deployment's two replicas) serve the same answers
within one scrape interval, and the one started later is not Ready, so not in the Service,
until its forecasts are warm; once warm the two agree on the predictive outputs too."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from adapter.config import Config, load_config
from adapter.kube.quantity import parse_quantity
from adapter.service import RunningService, running_service
from loadtest.harness.fake_triton import start_fake_targets
from tests.support.helpers import async_wait_until

DEADLINE = 120.0
GV = "/apis/external.metrics.k8s.io/v1beta1/namespaces/prod"
RATE_RPS = 20.0  # per model per target
PENDING = 3.0
PODS_PER_DEPLOYMENT = 2


def replica_config(urls: list[str]) -> Config:
    targets = [
        {"url": url, "labels": {"namespace": "prod", "deployment": f"triton-{index % 2}"}}
        for index, url in enumerate(urls)
    ]
    return load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "targets": targets,
            "scrape": {"interval_seconds": 0.5},
            "signals": {"rate_window_seconds": 3.0},
            "predictive": {
                # small steps so that warm (horizon 3 steps + 20 headroom errors) is 23 s
                "defaults": {
                    "step_seconds": 1.0,
                    "cold_start_seconds": 2.0,
                    "hpa_sync_period_seconds": 1.0,
                    "capacity_rps": 15.0,
                },
                "readiness_max_wait_seconds": DEADLINE,
            },
        },
    )


def steps_of(readiness_text: str) -> int:
    """The steps a not-Ready replica reports for its coldest series (0 when none)."""
    found = re.search(r"(\d+) of \d+ steps", readiness_text)
    return int(found.group(1)) if found else 0


async def readyz(session: aiohttp.ClientSession, service: RunningService) -> tuple[int, str]:
    url = f"https://127.0.0.1:{service.port}/readyz?verbose"
    async with session.get(url, ssl=False) as response:
        return response.status, await response.text()


async def value(
    session: aiohttp.ClientSession, service: RunningService, metric: str, deployment: str
) -> float | None:
    selector = f"deployment%3D{deployment},model%3Dresnet"
    url = f"https://127.0.0.1:{service.port}{GV}/{metric}?labelSelector={selector}"
    async with session.get(url, ssl=False) as response:
        if response.status != 200:
            return None
        body: dict[str, Any] = await response.json()
    (item,) = body["items"]
    return float(parse_quantity(item["value"]))


@contextlib.asynccontextmanager
async def watching_readiness(
    session: aiohttp.ClientSession, service: RunningService, seen: list[tuple[int, str]]
) -> AsyncIterator[None]:
    async def watch() -> None:
        while True:
            seen.append(await readyz(session, service))
            await asyncio.sleep(0.2)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_two_replicas_agree_and_the_later_one_waits_until_warm() -> None:
    runner, ports, _targets = await start_fake_targets(
        2 * PODS_PER_DEPLOYMENT, rate_rps=RATE_RPS, pending=PENDING
    )
    urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
    try:
        async with (
            aiohttp.ClientSession() as session,
            running_service(replica_config(urls)) as first,
        ):
            first_seen: list[tuple[int, str]] = []
            async with watching_readiness(session, first, first_seen):
                # a rollout: the second replica starts while the first has some history
                await async_wait_until(
                    lambda: max((steps_of(text) for _, text in first_seen), default=0) >= 5,
                    DEADLINE,
                    message="the first replica's forecasts five steps in",
                )
                async with running_service(replica_config(urls)) as second:
                    second_seen: list[tuple[int, str]] = []
                    async with watching_readiness(session, second, second_seen):
                        await async_wait_until(
                            lambda: (
                                any(status == 200 for status, _ in first_seen)
                                and any(status == 200 for status, _ in second_seen)
                            ),
                            DEADLINE,
                            message="both replicas Ready",
                        )
                    for seen in (first_seen, second_seen):
                        # held out of the Service while its forecasts were cold
                        assert seen[0][0] != 200
                        assert any("forecasts not warm yet" in text for _, text in seen)
                    # the later one became Ready later: it waited for its own history
                    first_ready = next(i for i, (s, _) in enumerate(first_seen) if s == 200)
                    assert steps_of(second_seen[0][1]) < steps_of(first_seen[first_ready - 1][1])
                    await compare(session, first, second)
    finally:
        await runner.cleanup()


async def compare(
    session: aiohttp.ClientSession, first: RunningService, second: RunningService
) -> None:
    expected_rate = RATE_RPS * PODS_PER_DEPLOYMENT
    for deployment in ("triton-0", "triton-1"):
        started = time.monotonic()
        answers = {}
        for metric in (
            "triton_queue_depth",
            "triton_arrival_rate",
            "triton_request_rate",
            "triton_queue_time_seconds",
            "triton_arrival_rate_forecast",
            "triton_desired_replicas",
        ):
            answers[metric] = (
                await value(session, first, metric, deployment),
                await value(session, second, metric, deployment),
            )
        assert time.monotonic() - started < 5.0, "the comparison itself took too long"
        for metric, (a, b) in answers.items():
            assert a is not None and b is not None, f"{metric} of {deployment}: {a}, {b}"
        assert answers["triton_queue_depth"] == (PENDING * 2, PENDING * 2)
        for metric in ("triton_arrival_rate", "triton_request_rate"):
            a, b = answers[metric]
            assert abs(a - expected_rate) < 0.1 * expected_rate, (metric, a)
            assert abs(a - b) < 0.05 * expected_rate, (metric, a, b)
        a, b = answers["triton_queue_time_seconds"]
        assert abs(a - 0.001) < 1e-4 and abs(b - 0.001) < 1e-4
        # The planned rate is the forecast over the planned utilisation (here far above the
        # arrival rate: the fakes' queue never drains, so the policy's budget feedback sees a
        # standing backlog); each replica calibrates on the errors it has seen, so the two agree
        # within 10 % of what they serve, not exactly, until their windows hold the same steps.
        a, b = answers["triton_arrival_rate_forecast"]
        assert abs(a - b) < 0.1 * max(a, b), ("forecast", a, b)
        a, b = answers["triton_desired_replicas"]
        assert abs(a - b) <= max(1.0, 0.1 * max(a, b)), ("desired", a, b)
