"""Light fake Triton ``/metrics`` endpoints: many per process, one port each.

Each target answers what Triton 2.51 answers for two models with summary latencies on (the
families the adapter reads, and the summaries, memory and CPU families it skips: about 140
lines and 10 KB, like ``tests/data/fixtures/triton-2.51-cpu-two-models-under-load``), with
counters that are exact functions of time: ``rate_rps`` completions per second per model
since the target started, 1 ms queued and 2 ms computing each, ``pending`` requests waiting.
A reader can therefore tell a true value from a fabricated one, and two readers agree.

Every target has its own port, as every Triton pod has its own IP: the adapter's connection
pool keeps one keep-alive connection per target, as in a cluster. Serve them in the caller's
event loop (:func:`start_fake_targets`, for tests) or in a process of their own
(:class:`FakeTritonProcess`, or ``python -m loadtest.harness.fake_triton --count N``), so that
their work is not counted as the adapter's (the sizing benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from loadtest.harness.process import ManagedProcess

LOOPBACK = "127.0.0.1"
MODELS = ("resnet", "bert")
QUEUE_US_PER_REQUEST = 1000.0
COMPUTE_US_PER_REQUEST = 2000.0
_QUANTILES = ("0.5", "0.9", "0.95", "0.99", "0.999")
_SUMMARIES = (
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
)


def completed(elapsed_seconds: float, rate_rps: float) -> int:
    """Requests per model a target has completed ``elapsed_seconds`` after it started."""
    return int(rate_rps * max(0.0, elapsed_seconds))


def exposition(elapsed_seconds: float, rate_rps: float, pending: float) -> str:
    """The ``/metrics`` text of a target that has served ``rate_rps`` per model for
    ``elapsed_seconds``."""
    return exposition_after(completed(elapsed_seconds, rate_rps), pending)


def exposition_after(requests: int, pending: float) -> str:
    """The ``/metrics`` text once each model has completed ``requests``."""
    done = float(requests)
    lines: list[str] = []

    def family(name: str, kind: str, samples: list[tuple[str, str]]) -> None:
        lines.append(f"# HELP {name} {name.replace('_', ' ')}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {value}" for labels, value in samples)

    def per_model(value: str, extra: str = "") -> list[tuple[str, str]]:
        return [(f'model="{model}",version="1"{extra}', value) for model in MODELS]

    family("nv_inference_request_success", "counter", per_model(f"{done:.0f}"))
    family(
        "nv_inference_request_failure",
        "counter",
        [
            (f'model="{model}",reason="{reason}",version="1"', "0")
            for model in MODELS
            for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER")
        ],
    )
    family("nv_inference_count", "counter", per_model(f"{done:.0f}"))
    family("nv_inference_exec_count", "counter", per_model(f"{done / 2:.0f}"))
    family("nv_inference_pending_request_count", "gauge", per_model(f"{pending:g}"))
    family(
        "nv_inference_request_duration_us",
        "counter",
        per_model(f"{done * (QUEUE_US_PER_REQUEST + COMPUTE_US_PER_REQUEST):.0f}"),
    )
    family(
        "nv_inference_queue_duration_us",
        "counter",
        per_model(f"{done * QUEUE_US_PER_REQUEST:.0f}"),
    )
    family("nv_inference_compute_input_duration_us", "counter", per_model(f"{done * 10:.0f}"))
    family(
        "nv_inference_compute_infer_duration_us",
        "counter",
        per_model(f"{done * COMPUTE_US_PER_REQUEST:.0f}"),
    )
    family("nv_inference_compute_output_duration_us", "counter", per_model(f"{done * 10:.0f}"))
    for name in _SUMMARIES:
        samples = [
            (f'model="{model}",version="1",quantile="{quantile}"', "2041")
            for model in MODELS
            for quantile in _QUANTILES
        ]
        family(name, "summary", samples)
        lines.extend(f'{name}_sum{{model="{m}",version="1"}} {done * 2041:.0f}' for m in MODELS)
        lines.extend(f'{name}_count{{model="{m}",version="1"}} {done:.0f}' for m in MODELS)
    lines += [
        "# HELP nv_pinned_memory_pool_total_bytes Pinned memory pool total memory size, in bytes",
        "# TYPE nv_pinned_memory_pool_total_bytes gauge",
        "nv_pinned_memory_pool_total_bytes 268435456",
        "# HELP nv_pinned_memory_pool_used_bytes Pinned memory pool used memory size, in bytes",
        "# TYPE nv_pinned_memory_pool_used_bytes gauge",
        "nv_pinned_memory_pool_used_bytes 0",
        "# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]",
        "# TYPE nv_cpu_utilization gauge",
        "nv_cpu_utilization 0.25",
        "# HELP nv_cpu_memory_total_bytes CPU total memory (RAM), in bytes",
        "# TYPE nv_cpu_memory_total_bytes gauge",
        "nv_cpu_memory_total_bytes 25276510208",
        "# HELP nv_cpu_memory_used_bytes CPU used memory (RAM), in bytes",
        "# TYPE nv_cpu_memory_used_bytes gauge",
        "nv_cpu_memory_used_bytes 673714176",
    ]
    return "\n".join(lines) + "\n"


class FakeTargets:
    """The targets' shared state: when they started, their rate and queue. They all started
    together, so they all say the same at one moment: the body is rendered once per change
    of the counters, not once per request (the fake must cost far less than the adapter)."""

    def __init__(self, rate_rps: float, pending: float) -> None:
        self.rate_rps = rate_rps
        self.pending = pending
        self.started = time.monotonic()
        self.scrapes = 0
        self._body: tuple[int, bytes] = (-1, b"")

    async def handle(self, _request: web.Request) -> web.Response:
        self.scrapes += 1
        done = completed(time.monotonic() - self.started, self.rate_rps)
        if self._body[0] != done:
            self._body = (done, exposition_after(done, self.pending).encode())
        return web.Response(body=self._body[1], content_type="text/plain", charset="utf-8")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        return app


async def start_fake_targets(
    count: int, *, rate_rps: float = 20.0, pending: float = 3.0
) -> tuple[web.AppRunner, list[int], FakeTargets]:
    """Serve ``count`` targets on 127.0.0.1, one port each; ``runner.cleanup()`` stops them."""
    targets = FakeTargets(rate_rps, pending)
    runner = web.AppRunner(targets.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    ports: list[int] = []
    try:
        for _ in range(count):
            site = web.TCPSite(runner, LOOPBACK, 0, backlog=64)
            await site.start()
            server = site._server  # the bound socket's port: TCPSite has no public accessor
            assert isinstance(server, asyncio.base_events.Server)
            ports.append(int(server.sockets[0].getsockname()[1]))
    except BaseException:
        await runner.cleanup()
        raise
    return runner, ports, targets


def raise_open_file_limit(wanted: int) -> int:
    """Raise this process's open-file soft limit towards ``wanted`` (the hard limit caps it);
    returns the new soft limit. Children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class FakeTritonProcess(ManagedProcess):
    """``count`` fake targets in a process of their own; :attr:`urls` once started."""

    def __init__(self, count: int, *, rate_rps: float = 20.0, pending: float = 3.0) -> None:
        self.count = count
        self.rate_rps = rate_rps
        self.pending = pending
        self.urls: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._directory = Path(tempfile.mkdtemp(prefix="fake-triton-"))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float = 120.0) -> float:
        started = time.monotonic()
        ports_file = self._directory / "ports.json"
        raise_open_file_limit(self.count + 256)
        command = [sys.executable, "-m", "loadtest.harness.fake_triton"]
        command += ["--count", str(self.count), "--rate", str(self.rate_rps)]
        command += ["--pending", str(self.pending), "--ports-file", str(ports_file)]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        deadline = started + timeout_s
        while not ports_file.exists():
            if self._process.poll() is not None:
                raise RuntimeError(f"fake targets exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.count} fake targets not up within {timeout_s} s")
            time.sleep(0.05)
        ports = json.loads(ports_file.read_text())
        self.urls = [f"http://{LOOPBACK}:{port}/metrics" for port in ports]
        return time.monotonic() - started

    def stop(self, timeout_s: float = 10.0) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


async def _serve(args: argparse.Namespace) -> None:
    raise_open_file_limit(args.count + 256)
    runner, ports, _targets = await start_fake_targets(
        args.count, rate_rps=args.rate, pending=args.pending
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    staged = Path(str(args.ports_file) + ".tmp")
    staged.write_text(json.dumps(ports))
    staged.replace(args.ports_file)  # appears complete or not at all
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True, help="number of targets")
    parser.add_argument("--rate", type=float, default=20.0, help="req/s per model per target")
    parser.add_argument("--pending", type=float, default=3.0, help="queued requests per model")
    parser.add_argument("--ports-file", type=Path, required=True, help="where to write ports")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
