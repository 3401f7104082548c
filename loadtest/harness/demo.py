"""``make demo``: a real Triton, a real load, and ``tritonscale serve`` reading it.

Starts Triton (``resnet`` 50 ms and ``bert`` 20 ms per batch of up to 4) on loopback,
starts ``tritonscale serve`` against it in a subprocess, offers open-loop load that steps up
past resnet's capacity and back down, and prints what the external metrics API serves every
two seconds. While it runs, the same values can be read with curl or kubectl (printed below).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from loadtest.harness.api_client import API_PREFIX, ApiResponseError, read_metric
from loadtest.harness.loadgen import RateSegment, run_schedule
from loadtest.harness.triton_server import DEMO_MODELS, TritonProcess, free_port

METRICS = (
    "triton_queue_depth",
    "triton_arrival_rate",
    "triton_request_rate",
    "triton_queue_time_seconds",
    "triton_queue_compute_ratio",
    "triton_arrival_rate_forecast",
    "triton_desired_replicas",
)
SHORT = ("queue", "arrival/s", "served/s", "queue s", "q/compute", "forecast/s", "replicas")

CONFIG = """\
listen: "127.0.0.1:{port}"
scrape: {{interval_seconds: 1.0}}
signals: {{rate_window_seconds: 5}}
targets:
  - url: {metrics_url}
    labels: {{namespace: demo, deployment: triton}}
predictive:
  defaults: {{cold_start_seconds: 60, hpa_sync_period_seconds: 15, slo_seconds: 0.5}}
  series:
    - match: {{model: resnet}}
      capacity_rps: 70
    - match: {{model: bert}}
      capacity_rps: 160
log: {{level: info, format: text}}
"""


async def read_all(session: aiohttp.ClientSession, port: int) -> dict[str, dict[str, str]]:
    """``{model: {metric: formatted value}}``; metrics the API does not serve yet are left out."""
    table: dict[str, dict[str, str]] = {}
    for metric in METRICS:
        try:
            served = await read_metric(session, port, "demo", metric)
        except (aiohttp.ClientError, ApiResponseError):
            continue
        for model, value in served.values.items():
            table.setdefault(model, {})[metric] = f"{value:.3g}"
    return table


async def run(args: argparse.Namespace) -> int:
    triton = TritonProcess(DEMO_MODELS)
    print("starting Triton 2.51 (nvidia-pytriton) on loopback ...", flush=True)
    print(f"  ready in {triton.start():.1f} s; metrics at {triton.metrics_url}")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tritonscale-demo-"))
    config = workdir / "tritonscale.yaml"
    config.write_text(CONFIG.format(port=port, metrics_url=triton.metrics_url))
    log_path = workdir / "tritonscale.log"
    command = [sys.executable, "-m", "adapter", "serve", "--config", str(config)]
    print(f"starting: tritonscale serve --config {config}  (log: {log_path})")
    with open(log_path, "wb") as log:
        service = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}{API_PREFIX}/demo"
    print("\nread it yourself while the demo runs:")
    print(f"  curl -sk '{base}/triton_queue_depth?labelSelector=model%3Dresnet'")
    print(
        f"  kubectl --server https://127.0.0.1:{port} --insecure-skip-tls-verify --token=x "
        f"get --raw {API_PREFIX}/demo/triton_arrival_rate\n"
    )
    third = args.duration / 3
    schedule = {
        "resnet": [RateSegment(0, 30), RateSegment(third, 100), RateSegment(2 * third, 30)],
        "bert": [RateSegment(0, 60)],
    }
    print(
        f"load: resnet 30 -> 100 -> 30 req/s (capacity ~73), bert 60 req/s; {args.duration:.0f} s\n"
    )
    loads = [
        asyncio.ensure_future(
            run_schedule(
                triton.grpc_url,
                model,
                segments,
                args.duration,
                seed=7,
                request_timeout_s=30.0,
                drain_timeout_s=5.0,
            )
        )
        for model, segments in schedule.items()
    ]
    header = f"{'t':>5} {'model':7} " + " ".join(f"{name:>10}" for name in SHORT)
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            shown = 0
            while time.monotonic() - started < args.duration:
                await asyncio.sleep(2.0)
                if service.poll() is not None:
                    print(f"tritonscale exited; see {log_path}", file=sys.stderr)
                    return 1
                table = await read_all(session, port)
                if shown % 10 == 0:
                    print(header)
                shown += 1
                for model, values in sorted(table.items()):
                    cells = " ".join(f"{values.get(m, '-'):>10}" for m in METRICS)
                    print(f"{time.monotonic() - started:5.0f} {model:7} {cells}", flush=True)
        await asyncio.gather(*loads, return_exceptions=True)
    finally:
        for task in loads:
            task.cancel()
        service.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(timeout=10)
        triton.stop()
    print(f"\ndone. tritonscale's log: {log_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("DEMO_SECONDS", "90")),
        help="seconds of load (default 90, or $DEMO_SECONDS)",
    )
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
