"""Measure the live harness on this machine: Triton start-up, model capacity, loadgen rate.

    python -m loadtest.bench.loadgen [--quick]

Each figure is printed next to its baseline from the same run: model throughput against the
nominal capacity ``max_batch / service_time``; the load generator's achieved send rate against the
offered rate (with the send lag and client CPU). Triton and the load generator share the CPUs,
as in the tests. Takes about 2 minutes (``--quick``: about 40 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from loadtest.harness.loadgen import LoadResult, RateSegment, WireProtocol, run_schedule
from loadtest.harness.triton_server import DEMO_MODELS, ModelSpec, TritonProcess

# A model whose nominal capacity (64 per 1 ms) is far above what the host can serve, so the
# load generator, not the model, is the bottleneck being measured.
ECHO = ModelSpec("echo", service_ms=1.0, max_batch=64)


def _served_rps(result: LoadResult) -> float:
    """Completions per second from the first send to the last completion."""
    done = [r.done_s for r in result.records if r.ok and r.done_s is not None]
    if not done or not result.records:
        return float("nan")
    return len(done) / (max(done) - result.records[0].send_s)


async def _bench(process: TritonProcess, quick: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"triton_startup_s": round(process.startup_s or float("nan"), 2)}
    capacity: dict[str, Any] = {}
    for spec in DEMO_MODELS:
        _progress(f"capacity of {spec.name} at twice its nominal rate")
        result = await run_schedule(
            process.grpc_url,
            spec.name,
            [RateSegment(0.0, 2 * spec.capacity_rps)],
            duration_s=2.0 if quick else 4.0,
            seed=1,
            max_in_flight=100_000,
        )
        served = _served_rps(result)
        capacity[spec.name] = {
            "nominal_rps": spec.capacity_rps,
            "served_rps": round(served, 1),
            "served_over_nominal": round(served / spec.capacity_rps, 3),
            "failed": result.failed,
        }
    report["capacity_at_2x_overload"] = capacity

    rates = [150, 1000, 3000] if quick else [150, 1000, 2000, 3000, 4000, 6000]
    protocols: list[WireProtocol] = ["grpc", "http"]
    sender: list[dict[str, Any]] = []
    for protocol in protocols:
        url = process.grpc_url if protocol == "grpc" else process.http_host_port
        for rate in rates:
            _progress(f"sender over {protocol} at {rate} req/s")
            result = await run_schedule(
                url,
                ECHO.name,
                [RateSegment(0.0, float(rate))],
                duration_s=3.0 if quick else 5.0,
                seed=2,
                protocol=protocol,
                max_in_flight=100_000,
                drain_timeout_s=60.0,
            )
            summary = result.summary()
            sender.append(
                {
                    "protocol": protocol,
                    "offered_rps": rate,
                    # against this run's own Poisson draw, so only sender lag moves it below 1
                    "achieved_over_offered": round(
                        result.achieved_rate_rps * result.duration_s / max(result.offered, 1), 3
                    ),
                    "served_rps": round(_served_rps(result), 1),
                    "p99_send_lag_ms": summary["p99_send_lag_ms"],
                    "client_cpu_fraction": summary["cpu_fraction"],
                    "failed": result.failed,
                    "unfinished": result.unfinished,
                    "p50_ms": summary["p50_ms"] and round(summary["p50_ms"], 1),
                }
            )
    report["loadgen_open_loop_echo_model"] = sender
    return report


def _progress(what: str) -> None:
    print(f"  {what} ...", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.loadgen")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rates")
    args = parser.parse_args(argv)
    started = time.monotonic()
    _progress("starting Triton")
    with TritonProcess([*DEMO_MODELS, ECHO]) as process:
        report = asyncio.run(_bench(process, args.quick))
    report["command"] = " ".join(["python -m loadtest.bench.loadgen", *(argv or sys.argv[1:])])
    report["bench_wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
