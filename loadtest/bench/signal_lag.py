"""Signal lag on a live Triton: tritonscale vs NVIDIA's Prometheus reference path.

    python -m loadtest.bench.signal_lag [--baseline-rps 10 --step-rps 60 --before 45 --after 120]

One Triton (``resnet``: 50 ms per batch of up to 4), an open-loop load that steps from
``baseline-rps`` to ``step-rps``, tritonscale scraping every second (5 s rate window), and in
the same run Prometheus configured as NVIDIA's guide does (scrape every 15 s,
``rate(...[1m])``, recording rules every 6 s). Both are sampled every 0.5 s. For each signal,
``initial`` is the median over the 20 s before the step and ``final`` the median over the last
30 s; the lag is the first time after the step that the signal reaches 50 % / 90 % of the way.
The Prometheus figures exclude prometheus-adapter's relist and the HPA's sync, which add more.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence

import aiohttp

from adapter.config import load_config
from adapter.service import running_service
from loadtest.harness.loadgen import RateSegment, run_schedule
from loadtest.harness.prometheus import PrometheusProcess
from loadtest.harness.triton_server import ModelSpec, TritonProcess

PROGRESS_EVERY_S = 15.0
Series = list[tuple[float, float]]  # (seconds since the step, value)


def lags(series: Series, after_seconds: float) -> tuple[float | None, float | None, float, float]:
    before = [v for t, v in series if -20 <= t < 0]
    final = [v for t, v in series if t >= after_seconds - 30]
    if not before or not final:
        return None, None, float("nan"), float("nan")
    initial, end = statistics.median(before), statistics.median(final)

    def first(fraction: float) -> float | None:
        level = initial + fraction * (end - initial)
        rising = end >= initial
        for t, v in series:
            if t >= 0 and (v >= level if rising else v <= level):
                return t
        return None

    return first(0.5), first(0.9), initial, end


async def run(args: argparse.Namespace) -> None:
    model = "resnet"
    total = args.before + args.after
    print(f"starting Triton and Prometheus; then {total:.0f} s of load ...", file=sys.stderr)
    triton = TritonProcess((ModelSpec(model, 50.0, 4),))
    triton.start()
    prometheus = PrometheusProcess([triton.metrics_host_port])
    prometheus.start()
    config = load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "targets": [{"url": triton.metrics_url, "labels": {"namespace": "bench"}}],
        },
    )
    ours: dict[str, Series] = {"triton_queue_compute_ratio": [], "triton_queue_depth": []}
    theirs: dict[str, Series] = {"triton_queue_compute_ratio": [], "triton_queue_depth": []}
    queries = {
        "triton_queue_compute_ratio": f'triton:queue_compute:ratio{{model="{model}"}}',
        "triton_queue_depth": f'sum(nv_inference_pending_request_count{{model="{model}"}})',
    }
    try:
        async with (
            running_service(config) as service,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as prom_session,
        ):
            schedule = [RateSegment(0, args.baseline_rps), RateSegment(args.before, args.step_rps)]
            load = asyncio.ensure_future(
                run_schedule(triton.grpc_url, model, schedule, total, seed=11)
            )
            started = time.monotonic()
            step_at = started + args.before
            next_report = started
            while time.monotonic() - started < total:
                now = time.monotonic() - step_at
                if time.monotonic() >= next_report:
                    next_report += PROGRESS_EVERY_S
                    phase = "before the step" if now < 0 else "after the step"
                    print(
                        f"  {time.monotonic() - started:5.0f}/{total:.0f} s ({phase})",
                        file=sys.stderr,
                        flush=True,
                    )
                snapshot = service.pipeline.snapshot()
                for metric, series in ours.items():
                    for point in snapshot.points(metric):
                        if point.labels.get("model") == model:
                            series.append((now, point.value))
                for metric, promql in queries.items():
                    result = await prometheus.query(promql, session=prom_session)
                    if result:
                        theirs[metric].append((now, result[0].value))
                await asyncio.sleep(0.5)
            load.cancel()
    finally:
        prometheus.stop()
        triton.stop()

    print(
        f"load step {args.baseline_rps:g} -> {args.step_rps:g} req/s on {model} "
        f"(capacity ~73 req/s measured); sampled every 0.5 s\n"
    )
    print("| signal | path | initial | final | 50 % after | 90 % after |")
    print("|---|---|---:|---:|---:|---:|")
    for metric in ours:
        for name, data in (
            ("tritonscale (1 s scrape, 5 s window)", ours),
            ("Prometheus (15 s scrape, rate 1m, rules 6 s)", theirs),
        ):
            half, ninety, initial, final = lags(data[metric], args.after)
            print(
                f"| {metric} | {name} | {initial:.3g} | {final:.3g} | {_s(half)} | {_s(ninety)} |"
            )


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-rps", type=float, default=10.0)
    parser.add_argument("--step-rps", type=float, default=60.0)
    parser.add_argument("--before", type=float, default=45.0, help="seconds before the step")
    parser.add_argument("--after", type=float, default=120.0, help="seconds after the step")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
