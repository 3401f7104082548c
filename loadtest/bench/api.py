"""External metrics API latency at a fixed request rate (``python -m loadtest.bench.api``).

The real server (TLS, the real ``SnapshotProvider``) runs in this process on loopback over a
snapshot of 1,000 series per metric (10 namespaces x 10 deployments x 10 models). A separate
client process drives an *open-loop* schedule (request ``i`` is due at ``t0 + i/rate``
whatever earlier requests are doing, so a slow server cannot slow the load down) with the
selectors an HPA sends, and measures latency from each request's due time to the end of its
body. The same schedule is then run against ``/healthz`` on the same server and connection
pool, so the ratio isolates what the metric handler (selector parse, provider scan, JSON,
quantity formatting) adds over aiohttp + TLS + the Python client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp

from adapter.api.server import create_app
from adapter.api.tls import bound_port, generate_self_signed, make_server_ssl_context, start_server
from adapter.provider import SnapshotProvider
from adapter.snapshot import MetricInfo, SeriesPoint, Snapshot

NAMESPACES = 10
DEPLOYMENTS_PER_NAMESPACE = 10
MODELS = 10
SERVED = ("triton_queue_depth", "triton_arrival_rate", "triton_queue_time_seconds")
SERVICE_HOST = "tritonscale.tritonscale.svc"
GV = "/apis/external.metrics.k8s.io/v1beta1"


# --- server side ----------------------------------------------------------------------


def build_snapshot(now: float) -> Snapshot:
    """One point per (namespace, deployment, model) for each served metric."""
    series: dict[str, tuple[SeriesPoint, ...]] = {}
    for index, metric in enumerate(SERVED):
        points = []
        for n in range(NAMESPACES):
            for d in range(DEPLOYMENTS_PER_NAMESPACE):
                for m in range(MODELS):
                    labels = {
                        "namespace": f"team-{n}",
                        "deployment": f"triton-{n}-{d}",
                        "model": f"model-{m}",
                    }
                    value = (n * 100 + d * 10 + m) / (index + 3)
                    points.append(SeriesPoint(labels, value, now, 60))
        series[metric] = tuple(points)
    return Snapshot(built_at=now, series=MappingProxyType(series))


def request_paths(count: int) -> list[str]:
    """A realistic mix: one series, one deployment (10 series), a set of models."""
    paths = []
    for i in range(count):
        n, d, m = i % NAMESPACES, (i // NAMESPACES) % DEPLOYMENTS_PER_NAMESPACE, i % MODELS
        metric = SERVED[i % len(SERVED)]
        base = f"{GV}/namespaces/team-{n}/{metric}"
        match i % 3:
            case 0:  # matchLabels {deployment, model}, as url.Values encodes it
                query = f"labelSelector=deployment%3Dtriton-{n}-{d}%2Cmodel%3Dmodel-{m}"
            case 1:
                query = f"labelSelector=deployment%3Dtriton-{n}-{d}"
            case _:  # matchExpressions In
                query = (
                    f"labelSelector=deployment%3Dtriton-{n}-{d}%2Cmodel+in+%28model-1%2Cmodel-2%29"
                )
        paths.append(f"{base}?{query}")
    return paths


async def run_client(config: dict[str, Any]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.bench.api",
        "--client",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate(json.dumps(config).encode())
    if process.returncode != 0:
        raise RuntimeError(f"load client exited with {process.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


@dataclass(frozen=True)
class Summary:
    name: str
    sent: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    achieved_rate: float

    @classmethod
    def of(cls, name: str, result: dict[str, Any]) -> Summary:
        latencies = sorted(result["latencies_s"])
        if len(latencies) < 100:
            raise RuntimeError(f"{name}: only {len(latencies)} requests completed")
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        return cls(
            name=name,
            sent=result["sent"],
            errors=result["errors"],
            p50_ms=cuts[49] * 1e3,
            p99_ms=cuts[98] * 1e3,
            max_ms=latencies[-1] * 1e3,
            achieved_rate=result["sent"] / result["elapsed_s"],
        )

    def row(self) -> str:
        return (
            f"| {self.name} | {self.sent} | {self.achieved_rate:.0f} | {self.errors} | "
            f"{self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.max_ms:.2f} |"
        )


async def bench(rate: float, duration: float) -> None:
    now = time.time()
    snapshot = build_snapshot(now)
    metrics = [MetricInfo(name, name, "") for name in SERVED]
    provider = SnapshotProvider(metrics, lambda: snapshot, time.time, max_age_seconds=1e9)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        cert_pem, key_pem = generate_self_signed([SERVICE_HOST])
        cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        os.chmod(key_file, 0o600)
        context = make_server_ssl_context(str(cert_file), str(key_file), hostnames=[])
        runner = await start_server(create_app(provider), "127.0.0.1:0", context)
        try:
            base = {
                "base_url": f"https://127.0.0.1:{bound_port(runner)}",
                "cafile": str(cert_file),
                "server_hostname": SERVICE_HOST,
                "rate": rate,
                "duration": duration,
            }
            healthz = Summary.of(
                "/healthz (baseline)", await run_client({**base, "paths": ["/healthz"]})
            )
            metric = Summary.of(
                "metric GET, 1,000 series/metric",
                await run_client({**base, "paths": request_paths(3000)}),
            )
        finally:
            await runner.cleanup()
    series = NAMESPACES * DEPLOYMENTS_PER_NAMESPACE * MODELS
    print("### External metrics API latency (`loadtest/bench/api.py`)\n")
    print(f"Command: `python -m loadtest.bench.api --rate {rate:g} --duration {duration:g}`\n")
    print(
        f"Server: aiohttp over TLS on 127.0.0.1, {series} series x {len(SERVED)} metrics; "
        f"client: separate process, aiohttp, open loop at {rate:g} req/s for {duration:g} s, "
        "latency from due time to end of body. "
        f"Host: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.\n"
    )
    print("| endpoint | requests | req/s | errors | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(healthz.row())
    print(metric.row())
    print(
        f"| ratio metric / healthz | | | | {metric.p50_ms / healthz.p50_ms:.2f}x | "
        f"{metric.p99_ms / healthz.p99_ms:.2f}x | |"
    )


# --- client side (separate process) -----------------------------------------------------


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    """Open-loop load: request ``i`` is sent at ``t0 + i/rate`` regardless of the others."""
    context = ssl.create_default_context(cafile=config["cafile"])
    paths: list[str] = config["paths"]
    rate: float = config["rate"]
    total = int(rate * config["duration"])
    base_url: str = config["base_url"]
    host: str = config["server_hostname"]
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def one(path: str, due: float | None) -> None:
            nonlocal errors
            try:
                async with session.get(
                    base_url + path, ssl=context, server_hostname=host
                ) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            if due is not None:
                latencies.append(loop.time() - due)

        # warm-up: TLS handshakes and a few requests, not measured
        await asyncio.gather(*(one(paths[i % len(paths)], None) for i in range(20)))
        start = loop.time() + 0.05
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(paths[i % len(paths)], due)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    return {"sent": total, "errors": errors, "elapsed_s": elapsed, "latencies_s": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.client:
        config = json.load(sys.stdin)
        json.dump(asyncio.run(drive(config)), sys.stdout)
        return
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    asyncio.run(bench(args.rate, args.duration))


if __name__ == "__main__":
    main()
