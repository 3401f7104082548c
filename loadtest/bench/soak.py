"""Soak: the API under sustained TLS load with scrapes running (``python -m loadtest.bench.soak``).

A real ``tritonscale serve`` (TLS, default limits) runs as a child process and scrapes
``--targets`` fake Triton endpoints served by this process every second (counters that grow
at a steady rate, so every value is computable and fresh). This process also sends
``--rate`` external-metrics requests per second (open loop, keep-alive TLS, the selectors an
HPA sends) for ``--duration`` seconds, and samples the server's RSS every 5 s.

It reports the answers by HTTP status (anything but 200 is an error: values are fresh, so
even a 503 is one), the latency, and the RSS at start, end and peak with the slope of a
least-squares line through the samples after the warm-up (the first 10 %, at most 5 minutes),
in MiB per hour: a leak shows as a steady positive slope.

``--api-process``: ``serve`` runs with ``server.api_process`` (the API in a process of its
own); the RSS and its slope are then reported for each process and for their sum.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import ssl
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from loadtest.bench.sizing import child_pids
from loadtest.bench.slowloris import Server, rss_mib
from loadtest.harness.triton_server import free_port

GV = "/apis/external.metrics.k8s.io/v1beta1"
NAMESPACES = 5
MODELS = ("resnet", "bert")
METRICS = ("triton_queue_depth", "triton_arrival_rate", "triton_queue_time_seconds")


# --- fake Triton targets --------------------------------------------------------------


def triton_exposition(index: int, elapsed: float) -> str:
    """Triton's families for two models; target ``index`` serves ``10 + index % 7`` req/s."""
    rate = 10.0 + index % 7
    lines = []
    for model in MODELS:
        done = int(rate * elapsed)
        labels = f'model="{model}",version="1"'
        lines += [
            f"nv_inference_request_success{{{labels}}} {done}",
            f'nv_inference_request_failure{{{labels},reason="BACKEND"}} 0',
            f"nv_inference_count{{{labels}}} {done}",
            f"nv_inference_exec_count{{{labels}}} {done // 2}",
            f"nv_inference_queue_duration_us{{{labels}}} {done * 1500}",
            f"nv_inference_compute_infer_duration_us{{{labels}}} {done * 9000}",
            f"nv_inference_request_duration_us{{{labels}}} {done * 11000}",
            f"nv_inference_pending_request_count{{{labels}}} {index % 4}",
        ]
    return "\n".join(lines) + "\n"


async def start_targets(count: int) -> tuple[web.AppRunner, list[str]]:
    started = time.monotonic()

    async def metrics(request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        return web.Response(text=triton_exposition(index, time.monotonic() - started))

    app = web.Application()
    app.router.add_get("/t/{index}/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, [f"http://127.0.0.1:{port}/t/{i}/metrics" for i in range(count)]


def targets_yaml(urls: list[str]) -> str:
    entries = [
        f"  - {{url: '{url}', labels: {{namespace: team-{i % NAMESPACES}, "
        f"deployment: triton-{i}}}}}"
        for i, url in enumerate(urls)
    ]
    return "targets:\n" + "\n".join(entries) + "\n"


def request_paths(targets: int) -> list[str]:
    paths = []
    for i in range(targets * len(METRICS)):
        target, metric = i % targets, METRICS[i % len(METRICS)]
        selector = f"deployment%3Dtriton-{target}"
        if i % 2:
            selector += f"%2Cmodel%3D{MODELS[i % len(MODELS)]}"
        namespace = f"team-{target % NAMESPACES}"
        paths.append(f"{GV}/namespaces/{namespace}/{metric}?labelSelector={selector}")
    return paths


# --- load and sampling ----------------------------------------------------------------


@functools.cache
def _client_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def slope_mib_per_hour(samples: list[tuple[float, float]]) -> float:
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    if len(samples) < 3:
        return float("nan")
    fit = statistics.linear_regression(times, values)
    return fit.slope * 3600.0


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    targets_runner, urls = await start_targets(args.targets)
    limits = {"api_process": True, "main_listen": "127.0.0.1:0"} if args.api_process else None
    server = Server(limits, targets_yaml(urls))
    try:
        await server.wait_ready()
        pids = {"main": server.process.pid}
        if args.api_process:
            (pids["api"],) = child_pids(server.process.pid)  # the API process, its only child
        paths = request_paths(args.targets)
        url = f"https://127.0.0.1:{server.port}"
        loop = asyncio.get_running_loop()
        statuses: Counter[str] = Counter()
        latencies: list[float] = []
        connector = aiohttp.TCPConnector(limit=50, ssl=_client_tls())
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(path: str, due: float) -> None:
                try:
                    async with session.get(url + path) as response:
                        await response.read()
                        statuses[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as error:
                    statuses[type(error).__name__] += 1
                latencies.append(loop.time() - due)

            # let every target be scraped twice so rates exist before the load starts
            await asyncio.sleep(3.0)
            samples: list[tuple[float, ...]] = []
            start = loop.time()
            next_sample = start
            tasks: set[asyncio.Task[None]] = set()
            total = int(args.rate * args.duration)
            for i in range(total):
                due = start + i / args.rate
                now = loop.time()
                if now >= next_sample:
                    samples.append((now - start, *(rss_mib(pid) for pid in pids.values())))
                    next_sample += 5.0
                if due > now:
                    await asyncio.sleep(due - now)
                task = asyncio.create_task(one(paths[i % len(paths)], due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            samples.append((loop.time() - start, *(rss_mib(pid) for pid in pids.values())))
        warmup = min(args.duration * 0.1, 300.0)
        total_rss = [(t, sum(values)) for t, *values in samples]
        steady = [(t, v) for t, v in total_rss if t >= warmup]
        per_process = {
            f"rss_slope_mib_per_hour_{name}": round(
                slope_mib_per_hour([(t, values[i]) for t, *values in samples if t >= warmup]), 2
            )
            for i, name in enumerate(pids)
            if len(pids) > 1
        }
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        errors = sum(count for status, count in statuses.items() if status != "200")
        return {
            "duration_s": args.duration,
            "rate": args.rate,
            "targets": args.targets,
            "requests": sum(statuses.values()),
            "statuses": dict(statuses),
            "errors": errors,
            "p50_ms": round(cuts[49] * 1e3, 2),
            "p99_ms": round(cuts[98] * 1e3, 2),
            "max_ms": round(max(latencies) * 1e3, 1),
            "rss_start_mib": round(total_rss[0][1], 1),
            "rss_end_mib": round(total_rss[-1][1], 1),
            "rss_peak_mib": round(max(v for _, v in total_rss), 1),
            "rss_slope_mib_per_hour": round(slope_mib_per_hour(steady), 2),
            **per_process,
            "rss_samples": len(samples),
            "rss_mib_by_second": [
                (round(t, 1), *(round(v, 2) for v in values)) for t, *values in samples
            ],
            "server_alive": server.process.poll() is None,
        }
    finally:
        server.stop()
        await targets_runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 30 min)")
    parser.add_argument("--rate", type=float, default=100.0, help="API requests per second")
    parser.add_argument("--targets", type=int, default=100, help="fake Triton targets scraped")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument(
        "--api-process", action="store_true", help="serve with server.api_process: true"
    )
    args = parser.parse_args()
    if args.duration < 10 or args.rate <= 0 or args.targets < 1:
        parser.error("--duration >= 10, --rate > 0 and --targets >= 1")
    result = asyncio.run(soak(args))
    print(json.dumps({key: value for key, value in result.items() if key != "rss_mib_by_second"}))
    if args.out:  # with every RSS sample
        args.out.write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["errors"] == 0 and result["server_alive"] else 1)


if __name__ == "__main__":
    main()
