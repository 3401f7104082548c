"""Sizing: the adapter's CPU and memory for N targets scraped every second.

    python -m loadtest.bench.sizing [--targets 100,1000,2000 --warmup 40 --seconds 60]

For each N: N fake Triton targets (``loadtest.harness.fake_triton``: real HTTP on loopback,
one port each, a 10 KB Triton 2.51 exposition with two models, counters advancing at 20 req/s
per model) in processes of their own (500 targets each); the service as the image runs it
(``python -m adapter serve --config FILE``) in another, scraping every target every second,
10 pods per Deployment (N/10 groups, 2 models: N/5 series), the predictive stage on every
series with a capacity (so every predictive output is computed). After ``warmup`` seconds,
over ``seconds``:

- CPU: the adapter process's user + system time / wall time, in cores;
- memory: its RSS, the largest of one sample per second, and its peak (VmHWM);
- keeping up: completed scrapes per second (``tritonscale_scrape_duration_seconds_count``,
  every attempt, failed ones too) against N, the oldest series the API serves
  (``tritonscale_series_age_seconds``), and whether it served a value within 120 s.

The fake targets' own CPU is not counted. Prints a Markdown table (and ``--json FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import yaml

from loadtest.harness.fake_triton import FakeTritonProcess, raise_open_file_limit

PODS_PER_DEPLOYMENT = 10
TARGETS_PER_FAKE_PROCESS = 500
"""The fakes are spread over processes so that they are not what limits the scrape rate."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class SizingResult:
    targets: int
    cpu_cores: float
    rss_mib_max: float
    rss_mib_peak: float
    scrapes_per_second: float
    oldest_series_age_seconds: float
    served_series: int
    serving: bool  # a value was served before the measurement started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (s), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def adapter_config(urls: Sequence[str], port: int) -> dict[str, object]:
    targets = [
        {
            "url": url,
            "labels": {
                "namespace": "prod",
                "deployment": f"triton-{index // PODS_PER_DEPLOYMENT}",
            },
        }
        for index, url in enumerate(urls)
    ]
    return {
        "listen": f"127.0.0.1:{port}",
        "targets": targets,
        "scrape": {"interval_seconds": 1.0},
        "predictive": {"defaults": {"capacity_rps": 50.0}},
        "log": {"level": "error"},  # thousands of scrape warnings would cost CPU too
    }


async def self_metrics(session: aiohttp.ClientSession, port: int) -> tuple[float, float, int]:
    """(completed scrapes so far, oldest series age, served series) from /metrics."""
    async with session.get(f"https://127.0.0.1:{port}/metrics", ssl=False) as response:
        text = await response.text()
    scrapes = oldest = 0.0
    served = 0
    for line in text.splitlines():
        if line.startswith("tritonscale_scrape_duration_seconds_count{"):
            scrapes += float(line.rsplit(" ", 1)[1])
        elif line.startswith("tritonscale_series_age_seconds{"):
            oldest = max(oldest, float(line.rsplit(" ", 1)[1]))
        elif line.startswith("tritonscale_signal_value{"):
            served += 1
    return scrapes, oldest, served


async def wait_serving(session: aiohttp.ClientSession, port: int, timeout_s: float) -> bool:
    """True once the adapter serves the first Deployment's arrival rate; False if it did not
    within ``timeout_s`` (an adapter that cannot keep up: measured all the same)."""
    url = (
        f"https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/prod/"
        "triton_arrival_rate?labelSelector=deployment%3Dtriton-0"
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with session.get(url, ssl=False) as response:
                if response.status == 200:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)
    return False


async def measure(count: int, warmup_s: float, seconds: float) -> SizingResult:
    fakes = [
        FakeTritonProcess(min(TARGETS_PER_FAKE_PROCESS, count - first))
        for first in range(0, count, TARGETS_PER_FAKE_PROCESS)
    ]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as directory:
        urls = [url for fake in fakes for url in stack.enter_context(fake).urls]
        port = free_port()
        config_file = Path(directory) / "config.yaml"
        config_file.write_text(yaml.safe_dump(adapter_config(urls, port)))
        command = [sys.executable, "-m", "adapter", "serve", "--config", str(config_file)]
        adapter = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                serving = await wait_serving(session, port, timeout_s=120)
                await asyncio.sleep(max(0.0, warmup_s - (time.monotonic() - started)))
                scrapes_before, _, _ = await self_metrics(session, port)
                cpu_before, wall_before = cpu_seconds(adapter.pid), time.monotonic()
                rss: list[float] = []
                while time.monotonic() - wall_before < seconds:
                    rss.append(memory_mib(adapter.pid)[0])
                    await asyncio.sleep(1.0)
                cpu_after, wall_after = cpu_seconds(adapter.pid), time.monotonic()
                _, peak = memory_mib(adapter.pid)
                scrapes_after, oldest, served = await self_metrics(session, port)
        finally:
            adapter.terminate()
            try:
                adapter.wait(30)
            except subprocess.TimeoutExpired:
                adapter.kill()
                adapter.wait()
    elapsed = wall_after - wall_before
    return SizingResult(
        targets=count,
        cpu_cores=(cpu_after - cpu_before) / elapsed,
        rss_mib_max=max(rss),
        rss_mib_peak=peak,
        scrapes_per_second=(scrapes_after - scrapes_before) / elapsed,
        oldest_series_age_seconds=oldest,
        served_series=served,
        serving=serving,
    )


def table(results: Sequence[SizingResult]) -> str:
    lines = [
        "| targets | CPU (cores) | RSS max (MiB) | RSS peak (MiB) | scrapes/s "
        "| oldest series (s) | serving |",
        "|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.targets} | {r.cpu_cores:.2f} | {r.rss_mib_max:.0f} | {r.rss_mib_peak:.0f} "
            f"| {r.scrapes_per_second:.0f} | {r.oldest_series_age_seconds:.1f} "
            f"| {'yes' if r.serving else 'no'} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[SizingResult]:
    results = []
    for count in args.targets:
        result = await measure(count, args.warmup, args.seconds)
        print(
            f"{count} targets: {result.cpu_cores:.2f} cores, RSS {result.rss_mib_max:.0f} MiB "
            f"(peak {result.rss_mib_peak:.0f}), {result.scrapes_per_second:.0f} scrapes/s",
            flush=True,
        )
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[100, 1000, 2000],
        help="comma-separated target counts (default 100,1000,2000)",
    )
    parser.add_argument("--warmup", type=float, default=40.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--quick", action="store_true", help="100 targets, 10 s + 10 s")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.targets, args.warmup, args.seconds = [100], 10.0, 10.0
    raise_open_file_limit(2 * max(args.targets) + 1024)  # the adapter's sockets (inherited)
    results = asyncio.run(run(args))
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
