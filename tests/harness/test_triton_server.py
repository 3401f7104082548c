"""The live harness: a real Triton under open-loop load builds real queues and honest counters."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from loadtest.harness.loadgen import LoadResult, RateSegment, WireProtocol, run_schedule
from loadtest.harness.triton_server import ModelSpec, TritonProcess
from tests.conftest import start_triton_or_fail
from tests.support.helpers import async_wait_until, model_samples, model_value, scrape, wait_until

pytestmark = pytest.mark.triton

RESNET = "resnet"  # 50 ms per batch of up to 4 -> 80 req/s when every batch is full
RESNET_CAPACITY_RPS = 4 / 0.050


@pytest.mark.parametrize(
    "metric",
    [
        "nv_inference_pending_request_count",
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_queue_summary_us_count",  # only with --metrics-config summary_latencies=true
    ],
)
def test_metrics_expose_family_for_each_model(triton: TritonProcess, metric: str) -> None:
    values = model_samples(scrape(triton.metrics_url), metric)
    assert set(values) == {"resnet", "bert"}, f"{metric} per model: {values}"


async def _scrape_async(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.text()


async def test_overload_builds_real_queue_and_counters_match_loadgen(
    triton: TritonProcess,
) -> None:
    """Twice resnet's capacity for 3 s: the pending gauge climbs, then drains to 0."""
    before = model_samples(scrape(triton.metrics_url), "nv_inference_request_success")[RESNET]
    exec_before = model_value(triton.metrics_url, "nv_inference_exec_count", RESNET)
    count_before = model_value(triton.metrics_url, "nv_inference_count", RESNET)
    pending_seen: list[float] = []
    load = asyncio.create_task(
        run_schedule(
            triton.grpc_url,
            RESNET,
            [RateSegment(0.0, 2 * RESNET_CAPACITY_RPS)],
            duration_s=3.0,
            seed=7,
            drain_timeout_s=30.0,
        )
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while not load.done():
            text = await _scrape_async(session, triton.metrics_url)
            pending_seen.append(model_samples(text, "nv_inference_pending_request_count")[RESNET])
            await asyncio.sleep(0.25)
    result: LoadResult = await load

    assert result.failed == 0 and result.unfinished == 0, result.summary()
    assert result.skipped == 0, "in-flight cap reached; the test's load is mis-sized"
    # arrivals exceed service by ~80 req/s for 3 s, so the queue passes 100 on the way
    assert max(pending_seen) >= 100, pending_seen
    first_peak = pending_seen.index(max(pending_seen))
    assert pending_seen[0] < max(pending_seen) and first_peak > 0, pending_seen

    def success_delta() -> float:
        return model_value(triton.metrics_url, "nv_inference_request_success", RESNET) - before

    wait_until(
        lambda: success_delta() == result.completed,
        timeout=10,
        message=lambda: f"success delta {success_delta()} == loadgen completed {result.completed}",
    )
    assert model_value(triton.metrics_url, "nv_inference_pending_request_count", RESNET) == 0

    # saturated: the dynamic batcher fills batches, and throughput is bounded by capacity
    executions = model_value(triton.metrics_url, "nv_inference_exec_count", RESNET) - exec_before
    inferences = model_value(triton.metrics_url, "nv_inference_count", RESNET) - count_before
    assert inferences / executions > 3.5, (inferences, executions)
    completion_times = sorted(r.done_s for r in result.records if r.done_s is not None)
    busy_s = completion_times[-1] - result.records[0].send_s
    served_rps = result.completed / busy_s
    assert 0.6 * RESNET_CAPACITY_RPS < served_rps <= 1.05 * RESNET_CAPACITY_RPS, served_rps


@pytest.mark.parametrize("protocol", ["http", "grpc"])
async def test_light_load_completes_everything(
    triton: TritonProcess, protocol: WireProtocol
) -> None:
    """bert at a quarter of its 200 req/s capacity: every request succeeds, counters agree."""
    url = triton.http_host_port if protocol == "http" else triton.grpc_url
    before = model_value(triton.metrics_url, "nv_inference_request_success", "bert")
    result = await run_schedule(
        url, "bert", [RateSegment(0.0, 50.0)], duration_s=2.0, seed=3, protocol=protocol
    )
    assert result.sent >= 60, result.summary()  # Poisson(100): below 60 is a >4-sigma miss
    assert (result.completed, result.failed, result.unfinished) == (result.sent, 0, 0)
    await async_wait_until(
        lambda: (
            model_value(triton.metrics_url, "nv_inference_request_success", "bert") - before
            == result.sent
        ),
        timeout=10,
        message="bert success delta equals requests sent",
    )


async def test_restart_on_same_ports_resets_counters() -> None:
    process = start_triton_or_fail(TritonProcess([ModelSpec("echo", service_ms=5, max_batch=2)]))
    try:
        urls = (process.http_url, process.grpc_url, process.metrics_url)
        result = await run_schedule(
            process.grpc_url, "echo", [RateSegment(0.0, 20.0)], 1.0, process="constant"
        )
        assert result.completed == 20, result.summary()
        await async_wait_until(
            lambda: model_value(process.metrics_url, "nv_inference_request_success", "echo") == 20,
            timeout=10,
            message="echo success counter reaches 20",
        )
        assert process.stop() == 0, process.log_tail()  # clean exit on SIGTERM
        start_triton_or_fail(process)
        assert (process.http_url, process.grpc_url, process.metrics_url) == urls
        assert model_value(process.metrics_url, "nv_inference_request_success", "echo") == 0
    finally:
        process.stop()
