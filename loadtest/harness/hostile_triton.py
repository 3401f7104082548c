"""A fake Triton ``/metrics`` that misbehaves on purpose: the hostile-target test bed.

One HTTP server hosts many fake targets, each at ``/<name>/metrics`` with its own *mode*:

============  ==========================================================================
mode          what the target answers
============  ==========================================================================
healthy       a valid Triton exposition: model ``m`` completes ``rate_rps`` requests/s
              (1 ms queued and 2 ms computing each), ``pending`` requests wait
nan           as healthy, but ``nv_inference_request_success`` is ``NaN``
inf           as healthy, but ``nv_inference_request_success`` is ``+Inf``
negative      as healthy, but ``nv_inference_pending_request_count`` is ``-pending``
duplicate     as healthy, every sample line twice
html          HTTP 200 with an HTML page (``text/html``)
foreign       HTTP 200 ``text/plain`` exposition of some other exporter (no ``nv_``)
binary        HTTP 200 ``text/plain`` with random bytes (not UTF-8)
drip          a valid body sent a few bytes at a time, far slower than any timeout
hang          accepts the request and never answers
huge          a chunked body of 8 MiB (no Content-Length)
flood         as healthy, plus 10,000 other models with new names at every scrape
churn         as healthy, plus 200 other models with new names at every scrape
              (both counts can be set: ``extra_models``, ``--flood-models``...)
flapping      healthy and nan in turn, one scrape each
backwards     valid values, but the counters go down at every scrape
============  ==========================================================================

The healthy values are exact functions of time (counters = rate x seconds since the
target was created), so a reader can tell a true value from a fabricated one. Serve it
in the caller's event loop (:func:`start`, for unit tests) or as a process
(:class:`HostileTritonProcess`, or ``python -m loadtest.harness.hostile_triton --target
NAME=MODE ...``) so that its own work does not slow the service under test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from loadtest.harness.process import ManagedProcess

LOOPBACK = "127.0.0.1"
MODEL = "m"
MODES = (
    "healthy",
    "nan",
    "inf",
    "negative",
    "duplicate",
    "html",
    "foreign",
    "binary",
    "drip",
    "hang",
    "huge",
    "flood",
    "churn",
    "flapping",
    "backwards",
)
QUEUE_US_PER_REQUEST = 1000.0
COMPUTE_US_PER_REQUEST = 2000.0
FLOOD_MODELS = 10_000
CHURN_MODELS = 200
HUGE_BYTES = 8 * 1024 * 1024
DRIP_INTERVAL_S = 0.2

_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    b"<body><h1>Please sign in</h1><form method=post></form></body></html>\n"
)
_FOREIGN = (
    "# HELP go_goroutines Number of goroutines that currently exist.\n"
    "# TYPE go_goroutines gauge\ngo_goroutines 12\n"
    "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.25\n"
)


@dataclass
class FakeTarget:
    """One fake Triton. Counters grow at ``rate_rps`` from ``created`` (monotonic s)."""

    mode: str = "healthy"
    rate_rps: float = 10.0
    pending: float = 5.0
    extra_models: int | None = None  # flood/churn models; None: FLOOD_MODELS/CHURN_MODELS
    created: float = field(default_factory=time.monotonic)
    scrapes: int = 0

    def exposition(self, now: float, mode: str) -> str:
        """The Triton text for ``mode`` among the modes that answer with an exposition."""
        elapsed = max(0.0, now - self.created)
        done = float(int(self.rate_rps * elapsed))
        if mode == "backwards":
            done = max(0.0, 1e9 - 1000.0 * self.scrapes)
        success = {"nan": "NaN", "inf": "+Inf"}.get(mode, f"{done:.0f}")
        pending = -self.pending if mode == "negative" else self.pending
        labels = f'model="{MODEL}",version="1"'
        lines = [
            "# HELP nv_inference_request_success Number of successful inference requests",
            "# TYPE nv_inference_request_success counter",
            f"nv_inference_request_success{{{labels}}} {success}",
            "# TYPE nv_inference_request_failure counter",
            f'nv_inference_request_failure{{{labels},reason="BACKEND"}} 0',
            "# TYPE nv_inference_pending_request_count gauge",
            f"nv_inference_pending_request_count{{{labels}}} {pending:g}",
            "# TYPE nv_inference_queue_duration_us counter",
            f"nv_inference_queue_duration_us{{{labels}}} {done * QUEUE_US_PER_REQUEST:.0f}",
            "# TYPE nv_inference_compute_infer_duration_us counter",
            f"nv_inference_compute_infer_duration_us{{{labels}}} "
            f"{done * COMPUTE_US_PER_REQUEST:.0f}",
            "# TYPE nv_pinned_memory_pool_total_bytes gauge",
            "nv_pinned_memory_pool_total_bytes 268435456",
        ]
        extra = {"flood": FLOOD_MODELS, "churn": CHURN_MODELS}.get(mode, 0)
        if extra and self.extra_models is not None:
            extra = self.extra_models
        for index in range(extra):
            name = f'model="{mode}-{self.scrapes}-{index}",version="1"'
            lines.append(f"nv_inference_request_success{{{name}}} {self.scrapes}")
            lines.append(f"nv_inference_pending_request_count{{{name}}} 1")
        if mode == "duplicate":
            lines = [line for line in lines for _ in range(1 if line.startswith("#") else 2)]
        return "\n".join(lines) + "\n"

    def current_mode(self) -> str:
        if self.mode == "flapping":
            return "healthy" if self.scrapes % 2 == 0 else "nan"
        return self.mode


class HostileApp:
    """The aiohttp application serving every fake target at ``/<name>/metrics``."""

    def __init__(self, targets: dict[str, FakeTarget] | None = None) -> None:
        self.targets: dict[str, FakeTarget] = dict(targets or {})
        self.closing = asyncio.Event()
        self._rng = random.Random(1)

    def build(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}/metrics", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = self.targets.get(request.match_info["name"])
        if target is None:
            raise web.HTTPNotFound()
        mode = target.current_mode()
        try:
            return await self._answer(request, target, mode)
        finally:
            target.scrapes += 1

    async def _answer(
        self, request: web.Request, target: FakeTarget, mode: str
    ) -> web.StreamResponse:
        plain = "text/plain; version=0.0.4; charset=utf-8"
        if mode == "html":
            return web.Response(body=_HTML, headers={"Content-Type": "text/html; charset=utf-8"})
        if mode == "foreign":
            return web.Response(body=_FOREIGN.encode(), headers={"Content-Type": plain})
        if mode == "binary":
            junk = bytes([0xFF, 0xFE]) + self._rng.randbytes(4096)
            return web.Response(body=junk, headers={"Content-Type": plain})
        if mode == "hang":
            await self.closing.wait()
            raise web.HTTPServiceUnavailable()
        if mode in ("drip", "huge"):
            response = web.StreamResponse(headers={"Content-Type": plain})
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):  # the scraper gave up: as intended
                await self._stream(response, target, mode)
            return response
        text = target.exposition(time.monotonic(), mode)
        return web.Response(body=text.encode(), headers={"Content-Type": plain})

    async def _stream(self, response: web.StreamResponse, target: FakeTarget, mode: str) -> None:
        if mode == "huge":
            padding = b"# padding " + b"x" * 1013 + b"\n"  # 1 KiB lines
            for _ in range(HUGE_BYTES // len(padding) // 64):
                await response.write(padding * 64)
        else:
            body = target.exposition(time.monotonic(), "healthy").encode()
            for start in range(0, len(body), 16):
                await response.write(body[start : start + 16])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), DRIP_INTERVAL_S)
                if self.closing.is_set():
                    return
        await response.write_eof()


class HostileTritonProcess(ManagedProcess):
    """The fake server as a subprocess, so the service under test shares neither its
    event loop nor its interpreter lock. ``with HostileTritonProcess({name: mode}) as fake:
    fake.url(name)``; every target counts ``rate_rps`` requests/s with ``pending`` waiting."""

    def __init__(
        self,
        modes: Mapping[str, str],
        *,
        rate_rps: float = 10.0,
        pending: float = 5.0,
        flood_models: int = FLOOD_MODELS,
        churn_models: int = CHURN_MODELS,
        python: str = sys.executable,
    ) -> None:
        for name, mode in modes.items():
            parse_target(f"{name}={mode}")
        self.modes = dict(modes)
        self.rate_rps = rate_rps
        self.pending = pending
        self.flood_models = flood_models
        self.churn_models = churn_models
        self.python = python
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def url(self, name: str) -> str:
        """Each target listens on its own port, as each pod has its own address."""
        return f"http://{LOOPBACK}:{self.ports[name]}/{name}/metrics"

    def command(self, ports_file: Path) -> list[str]:
        argv = [self.python, "-m", "loadtest.harness.hostile_triton"]
        argv += ["--ports-file", str(ports_file)]
        argv += ["--rate", repr(self.rate_rps), "--pending", repr(self.pending)]
        argv += ["--flood-models", str(self.flood_models)]
        argv += ["--churn-models", str(self.churn_models)]
        for name, mode in self.modes.items():
            argv += ["--target", f"{name}={mode}"]
        return argv

    def start(self, timeout_s: float = 30.0) -> float:
        """Launch and wait until every target listens; returns the seconds it took."""
        started = time.monotonic()
        self._workdir = tempfile.TemporaryDirectory(prefix="hostile-triton-")
        workdir = Path(self._workdir.name)
        ports_file = workdir / "ports.json"
        with (workdir / "stderr.log").open("wb") as log:
            self._process = subprocess.Popen(
                self.command(ports_file), stdout=subprocess.DEVNULL, stderr=log
            )
        while time.monotonic() - started < timeout_s:
            if ports_file.exists():
                self.ports = json.loads(ports_file.read_text())
                return time.monotonic() - started
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        tail = (workdir / "stderr.log").read_bytes()[-2000:].decode(errors="replace")
        self.stop()
        raise RuntimeError(f"the hostile fake Triton did not start within {timeout_s} s: {tail}")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        process, self._process = self._process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout_s)
            code = process.returncode
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return code


async def start(app: HostileApp, count: int = 1) -> tuple[web.AppRunner, list[int]]:
    """Serve ``app`` on ``count`` free ports of 127.0.0.1; returns the runner and ports."""
    runner = web.AppRunner(app.build(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        for _ in range(count):
            await web.TCPSite(runner, LOOPBACK, 0).start()
    except BaseException:
        await runner.cleanup()
        raise
    ports = [int(a[1]) for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2]
    return runner, ports


def parse_target(text: str) -> tuple[str, str]:
    """``NAME=MODE`` (the ``--target`` flag); errors name the flag."""
    name, sep, mode = text.partition("=")
    if not sep or not name or mode not in MODES:
        raise ValueError(f"--target {text!r}: expected NAME=MODE with MODE one of {MODES}")
    return name, mode


async def _main_async(targets: dict[str, FakeTarget], ports_file: Path) -> None:
    app = HostileApp(targets)
    runner, ports = await start(app, len(targets))
    written = ports_file.with_suffix(".tmp")
    written.write_text(json.dumps(dict(zip(targets, ports, strict=True))))
    written.rename(ports_file)  # the parent never reads a half-written file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        app.closing.set()
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.harness.hostile_triton",
        description="Fake Triton /metrics endpoints that misbehave on purpose.",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=MODE",
        help=f"repeatable; served at http://127.0.0.1:PORT/NAME/metrics; MODE in {MODES}",
    )
    parser.add_argument(
        "--ports-file", type=Path, required=True, help="written as JSON {NAME: PORT} once up"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s of model m")
    parser.add_argument("--pending", type=float, default=5.0, help="requests waiting")
    parser.add_argument("--flood-models", type=int, default=FLOOD_MODELS, help="flood mode")
    parser.add_argument("--churn-models", type=int, default=CHURN_MODELS, help="churn mode")
    args = parser.parse_args(argv)
    try:
        pairs = [parse_target(text) for text in args.target]
    except ValueError as err:
        parser.error(str(err))
    extra = {"flood": args.flood_models, "churn": args.churn_models}
    targets = {
        name: FakeTarget(mode, args.rate, args.pending, extra.get(mode)) for name, mode in pairs
    }
    asyncio.run(_main_async(targets, args.ports_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
