"""End to end against a live Triton: load goes in, the external metrics API tells the truth.

Open-loop load from tritonclient's asyncio client; values are read over HTTPS exactly as
the HPA reads them. Tolerances: Poisson arrivals over a 5 s window give ~7-10 % noise at
these rates; means over several samples are compared with 15-25 % bounds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import aiohttp
import pytest

from adapter.config import Config, load_config
from adapter.service import RunningService, running_service
from loadtest.harness.api_client import Served, read_metric
from loadtest.harness.loadgen import RateSegment, run_schedule
from loadtest.harness.triton_server import ModelSpec, TritonProcess
from tests.conftest import start_triton_or_fail
from tests.support.helpers import async_wait_until, model_samples, scrape

pytestmark = pytest.mark.triton
RATE_WINDOW_S = 5.0
# The API's timestamps are whole seconds (rounded down): one more second makes "served from a
# scrape at least a window after t" hold for the exact scrape time too.
TIMESTAMP_RESOLUTION_S = 1.0

Reader = Callable[[str], Awaitable[Served]]  # metric -> the API's answer in namespace prod
ReaderFor = Callable[[RunningService], Reader]


@pytest.fixture
async def reader_for() -> AsyncIterator[ReaderFor]:
    async with aiohttp.ClientSession() as session:
        yield lambda service: partial(read_metric, session, service.port, "prod")


def service_config(metrics_url: str) -> Config:
    return load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "targets": [
                {"url": metrics_url, "labels": {"namespace": "prod", "deployment": "triton"}}
            ],
            "scrape": {"interval_seconds": 0.5, "timeout_seconds": 0.4, "backoff_max_seconds": 2},
            "signals": {"rate_window_seconds": RATE_WINDOW_S},
        },
    )


async def sample(reader: Reader, metric: str, model: str, seconds: float) -> list[float]:
    """Served values of ``metric`` for ``model`` every 0.25 s for ``seconds``."""
    values: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        served = await reader(metric)
        if served.status == 200 and model in served.values:
            values.append(served.values[model])
        await asyncio.sleep(0.25)
    return values


async def wait_for_values(reader: Reader, metric: str, models: set[str]) -> None:
    async def ready() -> bool:
        served = await reader(metric)
        return served.status == 200 and models <= set(served.values)

    await async_wait_until(ready, timeout=20, message=f"{metric} served for {models}")


async def wait_for_window_after(
    reader: Reader, metrics: tuple[str, ...], models: set[str], since_unix_s: float
) -> None:
    """Poll until every ``metric`` of every model is served from a scrape at least one rate
    window after ``since_unix_s`` (wall clock): its window then holds only later readings."""
    fresh_from = since_unix_s + RATE_WINDOW_S + TIMESTAMP_RESOLUTION_S
    last: dict[str, Served] = {}

    async def fresh() -> bool:
        for metric in metrics:
            served = last[metric] = await reader(metric)
            stamps = served.timestamps
            if not all(model in stamps and stamps[model] >= fresh_from for model in models):
                return False
        return True

    await async_wait_until(
        fresh,
        timeout=30,
        interval=0.25,
        message=lambda: (
            f"{metrics} for {models} served from scrapes after {fresh_from:.0f}, "
            f"last answers {last}"
        ),
    )


async def drained(metrics_url: str) -> None:
    def empty() -> bool:
        pending = model_samples(scrape(metrics_url), "nv_inference_pending_request_count")
        return all(v == 0 for v in pending.values())

    await async_wait_until(lambda: asyncio.to_thread(empty), timeout=60, message="queues drained")


async def test_rates_agree_with_the_load_and_with_triton(
    triton: TritonProcess, reader_for: ReaderFor
) -> None:
    config = service_config(triton.metrics_url)
    async with running_service(config) as service:
        reader = reader_for(service)
        await wait_for_values(reader, "triton_queue_depth", {"resnet", "bert"})
        duration = 18.0
        load_started = time.time()
        load = asyncio.gather(
            run_schedule(triton.grpc_url, "resnet", [RateSegment(0, 40)], duration, seed=1),
            run_schedule(triton.grpc_url, "bert", [RateSegment(0, 60)], duration, seed=2),
        )
        await wait_for_window_after(
            reader, ("triton_request_rate", "triton_arrival_rate"), {"resnet", "bert"}, load_started
        )
        before = await asyncio.to_thread(scrape, triton.metrics_url)
        t0 = time.monotonic()
        measured = await asyncio.gather(
            sample(reader, "triton_request_rate", "resnet", 7),
            sample(reader, "triton_arrival_rate", "resnet", 7),
            sample(reader, "triton_request_rate", "bert", 7),
            sample(reader, "triton_arrival_rate", "bert", 7),
        )
        after = await asyncio.to_thread(scrape, triton.metrics_url)
        elapsed = time.monotonic() - t0
        resnet_load, bert_load = await load
    await drained(triton.metrics_url)

    success = "nv_inference_request_success"
    triton_rate = {
        model: (model_samples(after, success)[model] - model_samples(before, success)[model])
        / elapsed
        for model in ("resnet", "bert")
    }
    loads = {"resnet": resnet_load, "bert": bert_load}
    for index, model in enumerate(("resnet", "bert")):
        request_rate = statistics.mean(measured[2 * index])
        arrival_rate = statistics.mean(measured[2 * index + 1])
        sent = loads[model].achieved_rate_rps
        assert loads[model].failed == 0
        assert request_rate == pytest.approx(triton_rate[model], rel=0.15), model
        assert request_rate == pytest.approx(sent, rel=0.2), model
        assert arrival_rate == pytest.approx(sent, rel=0.2), model


OVERLOAD_SIGNALS = (
    "triton_arrival_rate",
    "triton_request_rate",
    "triton_queue_depth",
    "triton_queue_time_seconds",
)


async def test_overload_shows_offered_load_and_queue(
    triton: TritonProcess, reader_for: ReaderFor
) -> None:
    # resnet serves about 80 req/s (batches of 4 every 50 ms); offer 120.
    config = service_config(triton.metrics_url)
    async with running_service(config) as service:
        reader = reader_for(service)
        await wait_for_values(reader, "triton_queue_depth", {"resnet"})
        load_started = time.time()
        load = asyncio.ensure_future(
            run_schedule(triton.grpc_url, "resnet", [RateSegment(0, 120)], 14.0, seed=3)
        )
        await wait_for_window_after(reader, OVERLOAD_SIGNALS, {"resnet"}, load_started)
        arrival, request_rate, depth, queue_time = await asyncio.gather(
            *(sample(reader, metric, "resnet", 5) for metric in OVERLOAD_SIGNALS)
        )
        triton_pending = model_samples(
            await asyncio.to_thread(scrape, triton.metrics_url),
            "nv_inference_pending_request_count",
        )["resnet"]
        served_depth = (await reader("triton_queue_depth")).values["resnet"]
        offered = (await load).achieved_rate_rps
    await drained(triton.metrics_url)

    assert statistics.mean(request_rate) < 0.85 * offered  # completions cap at capacity
    assert statistics.mean(arrival) == pytest.approx(offered, rel=0.25)  # offered load does not
    assert depth[-1] > depth[0] > 20  # a real, growing queue
    assert queue_time[-1] > queue_time[0] > 0.1
    # one scrape interval apart at ~40 req/s of growth: within 40 requests
    assert served_depth == pytest.approx(triton_pending, abs=40)


RATES = ("triton_arrival_rate", "triton_request_rate")


async def test_triton_restart_gives_no_negative_spiking_or_zero_values(
    reader_for: ReaderFor,
) -> None:
    # The load goes over HTTP: a gRPC channel that lost its server reconnects with exponential
    # backoff (seconds), so Triton truly received nothing for a while after the restart and a
    # served 0 was the truth, not a restart artefact (this test once failed that way). aiohttp
    # opens a new connection per failed request, so the load reaches Triton as soon as it is up.
    process = start_triton_or_fail(TritonProcess((ModelSpec("resnet", 50.0, 4),)))
    try:
        config = service_config(process.metrics_url)
        async with running_service(config) as service:
            reader = reader_for(service)
            rate = 30.0
            load_started = time.time()
            load = asyncio.ensure_future(
                run_schedule(
                    process.http_host_port,
                    "resnet",
                    [RateSegment(0, rate)],
                    60.0,
                    seed=4,
                    protocol="http",
                    request_timeout_s=5.0,
                )
            )
            await wait_for_window_after(reader, RATES, {"resnet"}, load_started)
            seen: list[tuple[str, int, float | None]] = []
            stop_sampling = asyncio.Event()

            async def watch() -> None:
                while not stop_sampling.is_set():
                    for metric in RATES:
                        served = await reader(metric)
                        seen.append((metric, served.status, served.values.get("resnet")))
                    await asyncio.sleep(0.2)

            watcher = asyncio.ensure_future(watch())
            await asyncio.to_thread(process.stop)
            await asyncio.to_thread(process.start)
            state = next(iter(service.pipeline.targets.values()))
            await async_wait_until(
                lambda: state.history.restarts >= 1, timeout=30, message="restart detected"
            )
            # keep watching until values built only from post-restart readings are served
            await wait_for_window_after(reader, RATES, {"resnet"}, time.time())
            stop_sampling.set()
            await watcher
            # awaited, not only cancelled: a pending task left to the garbage collector logged
            # "I/O operation on closed file" after pytest had closed its capture
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
    finally:
        process.stop()

    values = [value for _metric, status, value in seen if status == 200 and value is not None]
    assert len(values) > 20
    assert min(values) > 0, "a restart must not be served as a zero rate"
    assert max(values) < 2.5 * rate, "a restart must not be served as a spike"
    assert {status for _m, status, _v in seen} <= {200, 503}
