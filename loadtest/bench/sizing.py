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

Options for the speed work of issue 9 (each adds columns or rows, same measurement):

- ``--api-rate R``: during the measured seconds a separate client process (the one of
  ``loadtest.bench.api``) sends R external-metrics requests per second (open loop, TLS,
  ``deployment=triton-K``): latency p50/p99/max and the share answered 200 and 503;
- ``--hog N --adapter-cpu C``: N busy-loop processes pinned with the adapter on CPU C (the
  adapter gets about 1/(N+1) of a core): graceful overload;
- ``--baseline-source DIR``: each N is also measured with the adapter run from DIR (another
  checkout, e.g. ``git archive main | tar -x -C DIR``) just before this one: "before" rows;
- ``--profile K``: one more run at the largest N with the adapter under cProfile, printing
  the K functions with the most own time (the CPU of that run is the profiler's, not used);
- ``--event-loops asyncio,uvloop``: each N is measured once per event loop of ``serve``
  (``--event-loop``), one after the other: the loops' rows side by side;
- ``--api-process on|both``: ``serve`` with ``server.api_process`` (the API in a process of
  its own, fed every snapshot), or each N both ways, one after the other. CPU and RSS are
  then both processes' (the API process's CPU in its own column); the scraping's
  self-metrics are read from the main process's ``main_listen``;
- ``--fakes-nice N``: the fake targets run at niceness N. In a cluster the targets are pods
  on other machines; on a 2-core machine they take 0.4 core from the adapter and the client
  (measured: about 0.1 core per 500 targets), so a latency row measures the machine's
  oversubscription as much as the adapter. Rows say which niceness they ran at;
- ``--gc-time``: the adapter runs under ``loadtest/bench/gc_accounting.py``, which times its
  garbage collections: the share of the measured seconds spent collecting (``GC s/s``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import math
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import yaml

from loadtest.bench.api import run_client
from loadtest.harness.fake_triton import FakeTritonProcess, raise_open_file_limit

PODS_PER_DEPLOYMENT = 10
TARGETS_PER_FAKE_PROCESS = 500
"""The fakes are spread over processes so that they are not what limits the scrape rate."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class SizingResult:
    adapter: str  # "this checkout" or the baseline's directory
    targets: int
    cpu_cores: float
    rss_mib_max: float
    rss_mib_peak: float
    scrapes_per_second: float
    oldest_series_age_seconds: float
    served_series: int
    serving: bool  # a value was served before the measurement started
    stretch: float = math.nan  # tritonscale_scrape_interval_stretch (nan: not exported)
    skipped_per_second: float = math.nan
    gc_seconds_per_second: float = math.nan  # time in garbage collections (--gc-time)
    api_p50_ms: float = math.nan
    api_p99_ms: float = math.nan
    api_max_ms: float = math.nan
    api_ok_share: float = math.nan
    api_503_share: float = math.nan
    api_process_cpu_cores: float = math.nan  # the API process's share of cpu_cores


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (s), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (the API process of ``serve --api-process``)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def renice(pid: int, niceness: int) -> None:
    """Every thread of ``pid`` at ``niceness`` (Linux niceness is per thread)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def gc_seconds(stats: Path) -> float:
    """Seconds the adapter spent in garbage collections so far (NaN without ``--gc-time``;
    written every second by ``gc_accounting.py``)."""
    try:
        return float(sum(json.loads(stats.read_text())["seconds"]))
    except (OSError, ValueError, KeyError):
        return math.nan


def adapter_config(
    urls: Sequence[str], port: int, main_port: int | None = None
) -> dict[str, object]:
    """``main_port``: run with ``server.api_process`` (the main process's app there)."""
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
    server = (
        {} if main_port is None else {"api_process": True, "main_listen": f"127.0.0.1:{main_port}"}
    )
    return {
        "listen": f"127.0.0.1:{port}",
        "server": server,
        "targets": targets,
        "scrape": {"interval_seconds": 1.0},
        "predictive": {"defaults": {"capacity_rps": 50.0}},
        "log": {"level": "error"},  # thousands of scrape warnings would cost CPU too
    }


@dataclass
class SelfMetricsSample:
    scrapes: float  # completed scrapes so far
    oldest: float  # oldest series age (s)
    served: int  # served series
    stretch: float = math.nan
    skipped: float = math.nan


async def self_metrics(session: aiohttp.ClientSession, port: int) -> SelfMetricsSample:
    """What the adapter's /metrics says about keeping up (NaN and 0 when an overloaded adapter
    does not answer within 3 tries of 20 s: it is measured all the same)."""
    text = ""
    for _ in range(3):
        try:
            async with session.get(
                f"https://127.0.0.1:{port}/metrics",
                ssl=False,
                timeout=aiohttp.ClientTimeout(total=20),
            ) as response:
                text = await response.text()
            break
        except (aiohttp.ClientError, TimeoutError):
            continue
    if not text:
        return SelfMetricsSample(math.nan, math.nan, 0)
    sample = SelfMetricsSample(0.0, 0.0, 0)
    for line in text.splitlines():
        value = line.rsplit(" ", 1)[-1]
        if line.startswith("tritonscale_scrape_duration_seconds_count{"):
            sample.scrapes += float(value)
        elif line.startswith("tritonscale_series_age_seconds{"):
            sample.oldest = max(sample.oldest, float(value))
        elif line.startswith("tritonscale_signal_value{"):
            sample.served += 1
        elif line.startswith("tritonscale_scrape_interval_stretch "):
            sample.stretch = float(value)
        elif line.startswith("tritonscale_scrape_cycles_skipped_total "):
            sample.skipped = float(value)
    return sample


def api_paths(count: int) -> list[str]:
    """The arrival rate of each Deployment in turn, as an HPA asks for it."""
    deployments = max(1, count // PODS_PER_DEPLOYMENT)
    return [
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/prod/triton_arrival_rate"
        f"?labelSelector=deployment%3Dtriton-{d}"
        for d in range(deployments)
    ]


def start_hogs(count: int, cpu: int | None) -> list[subprocess.Popen[bytes]]:
    """``count`` busy-loop processes (pinned to ``cpu`` when given): a CPU shortage."""
    hogs = []
    for _ in range(count):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        if cpu is not None:
            os.sched_setaffinity(hog.pid, {cpu})
        hogs.append(hog)
    return hogs


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def print_profile(path: Path, top: int) -> None:
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue(), flush=True)


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


@dataclass
class Options:
    warmup_s: float
    seconds: float
    api_rate: float = 0.0
    hogs: int = 0
    adapter_cpu: int | None = None
    source: Path | None = None  # run the adapter from this checkout (the baseline)
    profile_to: Path | None = None
    gc_time: bool = False
    event_loop: str | None = None  # `serve --event-loop`; None: serve's default
    api_process: bool = False  # `server.api_process`: the API in a process of its own
    fakes_nice: int = 0  # the fake targets' niceness (they stand for pods on other machines)


async def measure(count: int, options: Options) -> SizingResult:
    warmup_s, seconds = options.warmup_s, options.seconds
    fakes = [
        FakeTritonProcess(min(TARGETS_PER_FAKE_PROCESS, count - first))
        for first in range(0, count, TARGETS_PER_FAKE_PROCESS)
    ]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as directory:
        urls = [url for fake in fakes for url in stack.enter_context(fake).urls]
        for fake in fakes:
            assert fake.pid is not None
            renice(fake.pid, options.fakes_nice)
        port = free_port()
        # the scraping's self-metrics are the main process's: on main_listen with an API process
        metrics_port = free_port() if options.api_process else port
        config_file = Path(directory) / "config.yaml"
        config = adapter_config(urls, port, metrics_port if options.api_process else None)
        config_file.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "adapter", "serve", "--config", str(config_file)]
        if options.event_loop is not None:
            command += ["--event-loop", options.event_loop]
        if options.profile_to is not None:
            command[1:1] = ["-m", "cProfile", "-o", str(options.profile_to)]
        gc_stats = Path(directory) / "gc.json"
        if options.gc_time:
            command[1:3] = [str(Path(__file__).with_name("gc_accounting.py")), str(gc_stats)]
        environment = dict(os.environ)
        if options.source is not None:  # ``-m`` puts the working directory first on sys.path
            environment["PYTHONPATH"] = str(options.source)
        adapter = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, cwd=options.source, env=environment
        )
        if options.adapter_cpu is not None:
            os.sched_setaffinity(adapter.pid, {options.adapter_cpu})
        hogs = start_hogs(options.hogs, options.adapter_cpu)
        api: dict[str, object] | None = None
        try:
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                serving = await wait_serving(session, port, timeout_s=120)
                await asyncio.sleep(max(0.0, warmup_s - (time.monotonic() - started)))
                before = await self_metrics(session, metrics_port)
                processes = [adapter.pid, *child_pids(adapter.pid)]
                cpu_before = [cpu_seconds(pid) for pid in processes]
                wall_before = time.monotonic()
                gc_before = gc_seconds(gc_stats)
                client = None
                if options.api_rate > 0:
                    load = {
                        "base_url": f"https://127.0.0.1:{port}",
                        "rate": options.api_rate,
                        "duration": seconds,
                        "paths": api_paths(count),
                    }
                    client = asyncio.create_task(run_client(load))
                rss: list[float] = []
                while time.monotonic() - wall_before < seconds:
                    rss.append(sum(memory_mib(pid)[0] for pid in processes))
                    await asyncio.sleep(1.0)
                cpu_after = [cpu_seconds(pid) for pid in processes]
                wall_after = time.monotonic()
                gc_after = gc_seconds(gc_stats)
                peak = sum(memory_mib(pid)[1] for pid in processes)
                after = await self_metrics(session, metrics_port)
                if client is not None:
                    api = await client
        finally:
            for hog in hogs:
                stop(hog)
            stop(adapter)
    elapsed = wall_after - wall_before
    cores = [
        (after_s - before_s) / elapsed
        for before_s, after_s in zip(cpu_before, cpu_after, strict=True)
    ]
    result = SizingResult(
        adapter=_adapter_name(options),
        targets=count,
        cpu_cores=sum(cores),
        rss_mib_max=max(rss),
        rss_mib_peak=peak,
        scrapes_per_second=(after.scrapes - before.scrapes) / elapsed,
        oldest_series_age_seconds=after.oldest,
        served_series=after.served,
        serving=serving,
        stretch=after.stretch,
        skipped_per_second=(after.skipped - before.skipped) / elapsed,
        gc_seconds_per_second=(gc_after - gc_before) / elapsed,
        api_process_cpu_cores=sum(cores[1:]) if options.api_process else math.nan,
    )
    if api is not None:
        add_api(result, api)
    return result


def add_api(result: SizingResult, api: dict[str, object]) -> None:
    """The API client's answers: latency percentiles and the shares by status."""
    latencies = sorted(float(x) for x in api["latencies_s"])  # type: ignore[attr-defined]
    statuses: dict[str, int] = api["statuses"]  # type: ignore[assignment]
    total = sum(statuses.values())
    if len(latencies) >= 2 and total:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        result.api_p50_ms, result.api_p99_ms = cuts[49] * 1e3, cuts[98] * 1e3
        result.api_max_ms = latencies[-1] * 1e3
        result.api_ok_share = statuses.get("200", 0) / total
        result.api_503_share = statuses.get("503", 0) / total


def table(results: Sequence[SizingResult]) -> str:
    lines = [
        "| adapter | targets | CPU (cores) | RSS max (MiB) | RSS peak (MiB) | scrapes/s "
        "| oldest series (s) | serving | stretch | skipped/s | GC s/s | API p50 / p99 / max (ms) "
        "| API 200 | API 503 | of which API process (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        api = (
            f"{r.api_p50_ms:.1f} / {r.api_p99_ms:.1f} / {r.api_max_ms:.0f}"
            if math.isfinite(r.api_p50_ms)
            else "-"
        )
        lines.append(
            f"| {r.adapter} | {r.targets} | {r.cpu_cores:.2f} | {r.rss_mib_max:.0f} "
            f"| {r.rss_mib_peak:.0f} | {r.scrapes_per_second:.0f} "
            f"| {r.oldest_series_age_seconds:.1f} | {'yes' if r.serving else 'no'} "
            f"| {_number(r.stretch, 2)} | {_number(r.skipped_per_second, 0)} "
            f"| {_number(r.gc_seconds_per_second, 2)} | {api} "
            f"| {_share(r.api_ok_share)} | {_share(r.api_503_share)} "
            f"| {_number(r.api_process_cpu_cores, 2)} |"
        )
    return "\n".join(lines)


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _share(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else "-"


def _adapter_name(options: Options) -> str:
    if options.source is not None:
        return f"before ({options.source.name})"
    name = "after" if options.event_loop is None else f"after, {options.event_loop}"
    return f"{name}, API process" if options.api_process else name


async def run(args: argparse.Namespace) -> list[SizingResult]:
    base = Options(
        args.warmup,
        args.seconds,
        args.api_rate,
        args.hog,
        args.adapter_cpu,
        gc_time=args.gc_time,
        fakes_nice=args.fakes_nice,
    )
    variants = [
        dataclasses.replace(base, event_loop=loop, api_process=split)
        for loop in args.event_loops
        for split in {"off": [False], "on": [True], "both": [False, True]}[args.api_process]
    ]
    if args.baseline_source is not None:
        variants.insert(0, dataclasses.replace(base, source=args.baseline_source.resolve()))
    results = []
    for count in args.targets:
        for variant in variants:
            result = await measure(count, variant)
            print(
                f"{result.adapter}, {count} targets: {result.cpu_cores:.2f} cores, RSS "
                f"{result.rss_mib_max:.0f} MiB (peak {result.rss_mib_peak:.0f}), "
                f"{result.scrapes_per_second:.0f} scrapes/s, oldest "
                f"{result.oldest_series_age_seconds:.1f} s",
                flush=True,
            )
            results.append(result)
    if args.profile:
        with tempfile.TemporaryDirectory() as directory:
            profile = Path(directory) / "adapter.prof"
            await measure(max(args.targets), dataclasses.replace(base, profile_to=profile))
            print(f"Profile of the adapter at {max(args.targets)} targets (own time):")
            print_profile(profile, args.profile)
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
    parser.add_argument("--api-rate", type=float, default=0.0, help="API requests/s meanwhile")
    parser.add_argument("--hog", type=int, default=0, help="busy-loop processes beside it")
    parser.add_argument("--adapter-cpu", type=int, help="pin the adapter (and hogs) to this CPU")
    parser.add_argument("--baseline-source", type=Path, help="also run the adapter from here")
    parser.add_argument("--profile", type=int, default=0, help="profile: top K functions")
    parser.add_argument("--gc-time", action="store_true", help="time the garbage collections")
    parser.add_argument(
        "--api-process",
        choices=["off", "on", "both"],
        default="off",
        help="serve with server.api_process (on), without (off), or each in turn (both)",
    )
    parser.add_argument(
        "--fakes-nice",
        type=int,
        default=0,
        help="niceness of the fake targets' processes (e.g. 10: they stand for Triton pods on "
        "other machines, and on a small machine their CPU is otherwise the adapter's)",
    )
    parser.add_argument(
        "--event-loops",
        type=lambda text: text.split(","),
        default=[None],
        help="comma-separated `serve --event-loop` values, each measured (default: serve's)",
    )
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
