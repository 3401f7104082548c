"""Hostile targets: what one misbehaving target costs a healthy one, mode by mode.

    python -m loadtest.bench.hostile [--seconds 45] [--modes nan,flood] [--json out.json]

For each mode of the fake Triton (loadtest/harness/hostile_triton.py), and first for a
``healthy`` baseline measured the same way, a fresh ``tritonscale serve`` process (the
shipped defaults: 1 s interval, 0.8 s timeout, 5 s rate window, 30 s max age, default
caps) scrapes three groups:

- ``control``: one healthy fake alone (its own namespace);
- ``mixed``: one healthy fake and one fake in the mode, as two pods of one deployment;
- ``hostile``: the fake in the mode alone.

Every fake's model ``m`` completes 10 req/s with 5 waiting. The API is read as the HPA
reads it every 0.5 s for ``--seconds``; the adapter's RSS (VmRSS) and CPU time are read
from /proc. Reported per mode: the control's staleness (now minus the time of the newest
scrape behind its served rate, from the adapter's ``tritonscale_series_age_seconds``),
the control's served rate and queue depth, what the mixed group served after the member
drop time, and what the hostile group alone served ("-": only errors, 404 or 503).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import yaml

from loadtest.harness.api_client import Served, read_metric
from loadtest.harness.hostile_triton import MODES, HostileTritonProcess
from loadtest.harness.triton_server import LOOPBACK, free_port

RATE = 10.0
PENDING = 5.0
POLL_S = 0.5
RATE_METRIC = "triton_request_rate"
ARRIVAL_METRIC = "triton_arrival_rate"
DEPTH_METRIC = "triton_queue_depth"


@dataclass
class ModeResult:
    """One mode's figures; a value list holds only 200 answers (errors are counted)."""

    mode: str
    control_staleness_s: list[float] = field(default_factory=list)
    control_rate: list[float] = field(default_factory=list)
    control_depth: list[float] = field(default_factory=list)
    control_errors: int = 0
    mixed_rate: list[float] = field(default_factory=list)  # after the member drop time
    mixed_arrival: list[float] = field(default_factory=list)
    mixed_depth: list[float] = field(default_factory=list)
    mixed_errors: int = 0
    hostile_rate: list[float] = field(default_factory=list)  # the hostile group alone
    hostile_arrival: list[float] = field(default_factory=list)
    hostile_depth: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    polls: int = 0


def adapter_config(
    fake: HostileTritonProcess, mode: str, port: int, drop_s: float | None
) -> dict[str, object]:
    def target(name: str, namespace: str, deployment: str) -> dict[str, object]:
        labels = {"namespace": namespace, "deployment": deployment}
        return {"url": fake.url(name), "labels": labels}

    return {
        "listen": f"{LOOPBACK}:{port}",
        "log": {"level": "warning"},
        "signals": {} if drop_s is None else {"member_failure_drop_seconds": drop_s},
        "targets": [
            target(f"{mode}-control", "control", "control"),
            target(f"{mode}-a", "bench", "mixed"),
            target(f"{mode}-b", "bench", "mixed"),
            target(f"{mode}-solo", "bench", "hostile"),
        ],
    }


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def wait_ready(
    session: aiohttp.ClientSession, port: int, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonscale exited with {process.returncode}")
        try:
            async with session.get(f"https://{LOOPBACK}:{port}/readyz", ssl=False) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("tritonscale was not ready within 30 s")


async def control_age(session: aiohttp.ClientSession, port: int) -> float | None:
    """``tritonscale_series_age_seconds{metric=triton_request_rate, namespace=control}``."""
    async with session.get(f"https://{LOOPBACK}:{port}/metrics", ssl=False) as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("tritonscale_series_age_seconds{") and (
            f'metric="{RATE_METRIC}"' in line and 'namespace="control"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


async def measure(mode: str, fake: HostileTritonProcess, args: argparse.Namespace) -> ModeResult:
    result = ModeResult(mode)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tritonscale-bench-hostile-"))
    config_path = workdir / "config.yaml"
    drop = None if args.adapter_root else args.drop_seconds
    config_path.write_text(yaml.safe_dump(adapter_config(fake, mode, port, drop)))
    command = [sys.executable, "-m", "adapter", "serve", "--config", str(config_path)]
    with (workdir / "adapter.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=log, cwd=args.adapter_root or Path.cwd()
        )
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_ready(session, port, process)
            started = time.monotonic()
            cpu_before = proc_cpu_s(process.pid)
            while (elapsed := time.monotonic() - started) < args.seconds:
                tick = time.monotonic()
                await poll_once(session, port, elapsed, args, result)
                result.rss_mib.append(proc_rss_mib(process.pid))
                await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
            result.cpu_s = proc_cpu_s(process.pid) - cpu_before
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return result


async def poll_once(
    session: aiohttp.ClientSession,
    port: int,
    elapsed: float,
    args: argparse.Namespace,
    result: ModeResult,
) -> None:
    def read(namespace: str, metric: str, deployment: str) -> Awaitable[Served]:
        selector = f"deployment={deployment},model=m"
        return read_metric(session, port, namespace, metric, selector)

    answers, age = await asyncio.gather(
        asyncio.gather(
            read("control", RATE_METRIC, "control"),
            read("control", DEPTH_METRIC, "control"),
            read("bench", RATE_METRIC, "mixed"),
            read("bench", ARRIVAL_METRIC, "mixed"),
            read("bench", DEPTH_METRIC, "mixed"),
            read("bench", RATE_METRIC, "hostile"),
            read("bench", ARRIVAL_METRIC, "hostile"),
            read("bench", DEPTH_METRIC, "hostile"),
        ),
        control_age(session, port),
    )
    c_rate, c_depth, m_rate, m_arrival, m_depth, h_rate, h_arrival, h_depth = answers
    result.polls += 1
    warm = elapsed > args.warm_seconds
    if warm:
        for served, values in ((c_rate, result.control_rate), (c_depth, result.control_depth)):
            if served.status == 200:
                values.append(served.values["m"])
            else:
                result.control_errors += 1
        if age is not None:
            result.control_staleness_s.append(age)
    if elapsed > args.drop_seconds + args.warm_seconds:
        mixed = (
            (m_rate, result.mixed_rate),
            (m_arrival, result.mixed_arrival),
            (m_depth, result.mixed_depth),
        )
        for served, values in mixed:
            if served.status == 200:
                values.append(served.values["m"])
            else:
                result.mixed_errors += 1
    hostile = (
        (h_rate, result.hostile_rate),
        (h_arrival, result.hostile_arrival),
        (h_depth, result.hostile_depth),
    )
    for served, values in hostile:
        if served.status == 200:
            values.append(served.values["m"])


def span(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}-{high:.{digits}f}"


def table(results: Sequence[ModeResult], seconds: float) -> str:
    rows = [
        "| mode | control staleness p50 / max (s) | control rate / depth "
        "| mixed, after the drop: rate / arrival / depth | hostile alone: rate / arrival / depth "
        "| errors: control / mixed | RSS max (MiB) | CPU (% of a core) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stale = r.control_staleness_s
        staleness = f"{statistics.median(stale):.2f} / {max(stale):.2f}" if stale else "-"
        rows.append(
            f"| {r.mode} | {staleness} | {span(r.control_rate)} / {span(r.control_depth, 0)} "
            f"| {span(r.mixed_rate)} / {span(r.mixed_arrival)} / {span(r.mixed_depth, 0)} "
            f"| {span(r.hostile_rate)} / {span(r.hostile_arrival)} / {span(r.hostile_depth, 0)} "
            f"| {r.control_errors} / {r.mixed_errors} | {max(r.rss_mib):.0f} "
            f"| {100 * r.cpu_s / seconds:.0f} |"
        )
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> list[ModeResult]:
    modes = ["healthy", *[m for m in args.modes if m != "healthy"]]
    names: dict[str, str] = {}
    for mode in modes:
        names.update({f"{mode}-control": "healthy", f"{mode}-a": "healthy", f"{mode}-b": mode})
        names[f"{mode}-solo"] = mode
    results = []
    with HostileTritonProcess(names, rate_rps=RATE, pending=PENDING) as fake:
        for mode in modes:
            result = await measure(mode, fake, args)
            print(table([result], args.seconds).splitlines()[-1], flush=True)
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench.hostile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=45.0, help="measured time per mode")
    parser.add_argument(
        "--drop-seconds",
        type=float,
        default=15.0,
        help="signals.member_failure_drop_seconds (shorter than the default 60 s to fit)",
    )
    parser.add_argument("--warm-seconds", type=float, default=8.0, help="ignored at the start")
    parser.add_argument(
        "--modes",
        type=lambda text: text.split(","),
        default=[m for m in MODES if m != "healthy"],
        help="comma-separated; the healthy baseline always runs first",
    )
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument(
        "--adapter-root",
        type=Path,
        help="run the adapter from this checkout instead (e.g. an older commit, for a "
        "before/after comparison; its config gets no member_failure_drop_seconds)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {MODES}")
    print(table([], args.seconds), flush=True)
    results = asyncio.run(run(args))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
