"""External metrics API latency at a fixed request rate (``python -m loadtest.bench.api``).

The real server (TLS, the real ``SnapshotProvider``) runs in this process on loopback over
snapshots of 10, 1,000 and 10,000 series per metric (namespaces x 10 deployments x 10 models;
one namespace holds at most 100 series). A separate client process drives an *open-loop*
schedule (request ``i`` is due at ``t0 + i/rate`` whatever earlier requests are doing, so a
slow server cannot slow the load down) with the selectors an HPA sends, and measures latency
from each request's due time to the end of its body. The same schedule is first run against
``/healthz`` on the same server, so each row's ratio isolates what the metric handler
(selector parse, index lookup, JSON, quantity formatting) adds over aiohttp + TLS + the Python
client; before it, a bare aiohttp hello-world app on the same TLS context gives the floor
(no connection guard, no middleware), and every row reports the server's CPU time per
request (this process's CPU over the row), which does not depend on queueing.
``--baseline`` adds a row at the largest size where the provider scans every series of the
metric (the code before the snapshot was indexed), measured the same way in the same
run. ``--max-rate`` then raises the rate at the largest size until p99 exceeds 5 ms.

``--repeats N`` runs each row N times and shows the run with the median p99 beside every
run's p99 (one pause of the machine can decide a single run's p99; the goal is 3 repeats).
``--event-loops asyncio,uvloop`` runs every row with the server on each loop in turn (the
client stays on asyncio's loop).

``--server-cpu``/``--client-cpu`` pin the server (this process) and the client to one core
each (``os.sched_setaffinity``): "one core" figures are the server on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
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
from typing import Any, cast

import aiohttp
from aiohttp import web

from adapter.api.server import create_app
from adapter.api.tls import bound_port, generate_self_signed, make_server_ssl_context, start_server
from adapter.event_loop import DEFAULT_EVENT_LOOP, run, running_loop_name
from adapter.memory import collect_cycles_less_often, freeze_startup_objects
from adapter.provider import SnapshotProvider
from adapter.snapshot import MetricInfo, SeriesPoint, Snapshot
from loadtest.bench.lean_client import drive_lean

DEPLOYMENTS_PER_NAMESPACE = 10
MODELS = 10
SERVED = ("triton_queue_depth", "triton_arrival_rate", "triton_queue_time_seconds")
SERVICE_HOST = "tritonscale.tritonscale.svc"
GV = "/apis/external.metrics.k8s.io/v1beta1"
P99_GOAL_MS = 5.0


@dataclass(frozen=True)
class Shape:
    """How many namespaces, deployments per namespace and models: series per metric is the
    product."""

    namespaces: int
    deployments: int
    models: int

    @property
    def series(self) -> int:
        return self.namespaces * self.deployments * self.models

    @classmethod
    def of(cls, series: int) -> Shape:
        """10 -> 1 x 1 x 10; 1,000 -> 10 x 10 x 10; 10,000 -> 100 x 10 x 10."""
        if series <= MODELS:
            return cls(1, 1, series)
        per_namespace = DEPLOYMENTS_PER_NAMESPACE * MODELS
        if series < per_namespace or series % per_namespace:
            raise ValueError(f"--series {series}: use <= 10 or a multiple of {per_namespace}")
        return cls(series // per_namespace, DEPLOYMENTS_PER_NAMESPACE, MODELS)


# --- server side ----------------------------------------------------------------------


def build_snapshot(now: float, shape: Shape) -> Snapshot:
    """One point per (namespace, deployment, model) for each served metric."""
    series: dict[str, tuple[SeriesPoint, ...]] = {}
    for index, metric in enumerate(SERVED):
        points = []
        for n in range(shape.namespaces):
            for d in range(shape.deployments):
                for m in range(shape.models):
                    labels = {
                        "namespace": f"team-{n}",
                        "deployment": f"triton-{n}-{d}",
                        "model": f"model-{m}",
                    }
                    value = (n * 100 + d * 10 + m) / (index + 3)
                    points.append(SeriesPoint(labels, value, now, 60))
        series[metric] = tuple(points)
    return Snapshot(built_at=now, series=MappingProxyType(series))


class ScanningSnapshot:
    """The baseline: a snapshot read by scanning every series of the metric for the
    namespace, as the provider did before the snapshot was indexed."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def points_in(self, metric: str, namespace: str) -> list[SeriesPoint]:
        return [p for p in self._snapshot.points(metric) if p.labels.get("namespace") == namespace]

    def points_of(self, metric: str, namespace: str, _label: str, _name: str) -> list[SeriesPoint]:
        return self.points_in(metric, namespace)  # the selector then picks the object


def request_paths(count: int, shape: Shape) -> list[str]:
    """A realistic mix: one series, one deployment (10 series), a set of models."""
    paths = []
    for i in range(count):
        n = i % shape.namespaces
        d = (i // shape.namespaces) % shape.deployments
        m = i % shape.models
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
    server_cpu_ms: float  # this process's CPU time per request sent, over the run
    p99_runs_ms: tuple[float, ...] = ()  # with --repeats: every run's p99, in order

    @classmethod
    def median_of(cls, runs: list[Summary]) -> Summary:
        """The run with the median p99 (the middle one of an odd count), every run's p99
        kept beside it."""
        middle = sorted(runs, key=lambda run: run.p99_ms)[(len(runs) - 1) // 2]
        return dataclasses.replace(middle, p99_runs_ms=tuple(run.p99_ms for run in runs))

    @classmethod
    def of(cls, name: str, result: dict[str, Any], server_cpu_s: float) -> Summary:
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
            server_cpu_ms=server_cpu_s / result["sent"] * 1e3,
        )

    def row(self, baseline: Summary | None = None) -> str:
        runs = " / ".join(f"{p99:.1f}" for p99 in self.p99_runs_ms) or "-"
        ratio = (
            f"{self.p50_ms / baseline.p50_ms:.2f}x | {self.p99_ms / baseline.p99_ms:.2f}x"
            if baseline is not None
            else " | "
        )
        return (
            f"| {self.name} | {self.sent} | {self.achieved_rate:.0f} | {self.errors} | "
            f"{self.p50_ms:.2f} | {self.p99_ms:.2f} | {runs} | {self.max_ms:.2f} | "
            f"{self.server_cpu_ms:.3f} | {ratio} |"
        )


class Served:
    """The snapshot in force, swapped between runs on one server."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot: Snapshot | ScanningSnapshot = snapshot

    def __call__(self) -> Snapshot:
        return cast(Snapshot, self.snapshot)


async def start_hello_world(context: ssl.SSLContext) -> web.AppRunner:
    """The floor: a bare aiohttp app answering ``ok`` over the same TLS context, no guard,
    no middleware, no access log. What aiohttp + TLS + the Python client cost by themselves."""

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    return runner


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


async def bench(args: argparse.Namespace, event_loop: str) -> None:
    pin(args.server_cpu)
    collect_cycles_less_often()  # the collector as `serve` runs it
    freeze_startup_objects()  # as `serve` does once started, before its first snapshot
    now = time.time()
    sizes: list[int] = args.series
    shapes = {size: Shape.of(size) for size in sizes}
    snapshots = {size: build_snapshot(now, shape) for size, shape in shapes.items()}
    served = Served(snapshots[sizes[0]])
    metrics = [MetricInfo(name, name, "") for name in SERVED]
    provider = SnapshotProvider(metrics, served, time.time, max_age_seconds=1e9)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        cert_pem, key_pem = generate_self_signed([SERVICE_HOST])
        cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        os.chmod(key_file, 0o600)
        context = make_server_ssl_context(str(cert_file), str(key_file), hostnames=[])
        runner = await start_server(create_app(provider), "127.0.0.1:0", context)
        hello = await start_hello_world(context)
        try:
            base = {
                "base_url": f"https://127.0.0.1:{bound_port(runner)}",
                "cafile": str(cert_file),
                "server_hostname": SERVICE_HOST,
                "duration": args.duration,
                "cpu": args.client_cpu,
                "instrument": args.instrument,
            }

            async def measure(
                name: str, rate: float, paths: list[str], **overrides: Any
            ) -> Summary:
                config = {**base, "rate": rate, "paths": paths, **overrides}
                runs = []
                for _ in range(args.repeats):
                    before = time.process_time()
                    result = await run_client(config)
                    runs.append(Summary.of(name, result, time.process_time() - before))
                    print(runs[-1].row(), file=sys.stderr, flush=True)
                return Summary.median_of(runs)

            bare = await measure(
                "bare aiohttp TLS hello world (reference)",
                args.rate,
                ["/"],
                base_url=f"https://127.0.0.1:{hello.addresses[0][1]}",
            )
            rows.append(bare.row())
            healthz = await measure("/healthz (baseline)", args.rate, ["/healthz"])
            rows.append(healthz.row())
            for size in sizes:
                served.snapshot = snapshots[size]
                paths = request_paths(3000, shapes[size])
                summary = await measure(f"metric GET, {size:,} series/metric", args.rate, paths)
                rows.append(summary.row(healthz))
            largest = sizes[-1]
            paths = request_paths(3000, shapes[largest])
            if args.baseline:
                served.snapshot = ScanningSnapshot(snapshots[largest])
                name = f"metric GET, {largest:,} series, scanning (before the index)"
                rows.append((await measure(name, args.rate, paths)).row(healthz))
            served.snapshot = snapshots[largest]
            sustained: Summary | None = None
            for rate in args.max_rate:
                summary = await measure(f"metric GET, {largest:,} series", rate, paths)
                if summary.p99_ms > P99_GOAL_MS or summary.errors:
                    break
                sustained = summary
        finally:
            await hello.cleanup()
            await runner.cleanup()
    command = " ".join(["python -m loadtest.bench.api", *sys.argv[1:]])
    print("### External metrics API latency (`loadtest/bench/api.py`)\n")
    print(f"Command: `{command}`\n")
    print(
        f"Server: aiohttp over TLS on 127.0.0.1 (CPU {args.server_cpu}, event loop "
        f"{running_loop_name()}); client: separate "
        f"process (CPU {args.client_cpu}), {args.instrument}, open loop at {args.rate:g} req/s for "
        f"{args.duration:g} s per row, latency from due time to end of body. "
        f"Host: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.\n"
    )
    print(
        "| endpoint | requests | req/s | errors | p50 ms | p99 ms | p99 ms of each run | max ms "
        "| server CPU ms/request | p50 / healthz | p99 / healthz |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(row)
    if args.max_rate:
        if sustained is None:
            print(f"\nNo rate tried held p99 <= {P99_GOAL_MS:g} ms at {largest:,} series.")
        else:
            print(
                f"\nHighest rate tried with p99 <= {P99_GOAL_MS:g} ms and no error at "
                f"{largest:,} series: {sustained.achieved_rate:.0f} req/s "
                f"(p50 {sustained.p50_ms:.2f} ms, p99 {sustained.p99_ms:.2f} ms)."
            )


# --- client side (separate process) -----------------------------------------------------


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    """Open-loop load: request ``i`` is sent at ``t0 + i/rate`` regardless of the others.

    The client is the measuring instrument, so it must not pause on its own: its cyclic
    garbage collector is off for the run (a full collection over 20,000 finished requests
    took 50+ ms, counted as server latency of every request in flight; the process is
    short-lived and its memory bounded by the request count), and it waits for the last
    answers without gathering every task at once (which held the loop as long).
    """
    gc.disable()
    cafile = config.get("cafile")  # None: do not verify (a server's self-signed certificate)
    context: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else False
    paths: list[str] = config["paths"]
    rate: float = config["rate"]
    total = int(rate * config["duration"])
    base_url: str = config["base_url"]
    host: str | None = config.get("server_hostname")
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}

    timeout = aiohttp.ClientTimeout(total=config.get("timeout_s", 30.0))
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(path: str, due: float | None) -> None:
            nonlocal errors
            try:
                async with session.get(
                    base_url + path, ssl=context, server_hostname=host
                ) as response:
                    await response.read()
                    status = str(response.status)
                    if response.status != 200:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                status = "no answer"  # refused, reset, or not within the client's timeout
            statuses[status] = statuses.get(status, 0) + 1
            if due is not None:
                latencies.append(loop.time() - due)

        # warm-up: TLS handshakes and a few requests, not measured
        await asyncio.gather(*(one(paths[i % len(paths)], None) for i in range(20)))
        start = loop.time() + 0.05
        in_flight: set[asyncio.Task[None]] = set()
        all_answered = asyncio.Event()

        def answered(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            if not in_flight and len(latencies) == total:
                all_answered.set()

        for i in range(total):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(paths[i % len(paths)], due))
            in_flight.add(task)
            task.add_done_callback(answered)
        if in_flight:
            await all_answered.wait()
        elapsed = loop.time() - start
    return {
        "sent": total,
        "errors": errors,
        "elapsed_s": elapsed,
        "latencies_s": latencies,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument(
        "--series",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[10, 1000, 10000],
        help="series per metric, comma-separated (default 10,1000,10000)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each row; the row shows the run with the median p99 and every run's p99",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also the scanning provider at the largest size"
    )
    parser.add_argument(
        "--max-rate",
        type=lambda text: [float(n) for n in text.split(",")],
        default=[],
        help="rates to try in order at the largest size, stopping when p99 > 5 ms",
    )
    parser.add_argument(
        "--event-loops",
        type=lambda text: text.split(","),
        default=[DEFAULT_EVENT_LOOP],
        help="the server's event loop; comma-separated: every row on each, one after the other",
    )
    parser.add_argument(
        "--instrument",
        choices=["lean", "aiohttp"],
        default="lean",
        help="the load client: lean (bare protocols on uvloop, loadtest/bench/lean_client.py; "
        "default) or aiohttp (the client of earlier runs, ~0.45 ms CPU per request)",
    )
    parser.add_argument("--server-cpu", type=int, help="pin the server to this CPU")
    parser.add_argument("--client-cpu", type=int, help="pin the load client to this CPU")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.client:
        config = json.load(sys.stdin)
        pin(config.get("cpu"))
        if config.get("instrument", "lean") == "lean":
            result = run(drive_lean(config), "uvloop")
        else:
            result = asyncio.run(drive(config))
        json.dump(result, sys.stdout)
        return
    if args.rate <= 0 or args.duration <= 0 or args.repeats < 1:
        parser.error("--rate, --duration and --repeats must be positive")
    for event_loop in args.event_loops:
        run(bench(args, event_loop), event_loop)


if __name__ == "__main__":
    main()
