"""The closed loop on real Triton, as a cluster runs it.

::

    replay (tritonclient, open loop) --> balancer (one backend per connection, like a Service)
        --> Triton replicas (real processes, sleep model, dynamic batching)
    replica manager --> local Kubernetes pods API (list + watch) --> tritonscale serve
        (its own pod discovery, scrapes every replica, serves the external metrics API over HTTPS)
    HPA emulator (policies/hpa.py, the HPA object from manifests/examples/hpa) --GET--> adapter
        --> sets the replica count on the replica manager

Time compression. Every duration is written in the cluster's time (:class:`ClusterTime`:
the trace's own seconds) and run ``time_scale`` (X) times faster: the trace's arrivals, the
model's batch service time, the replicas' start delay (cold start), the HPA sync period and the
HPA object's windows (on the emulator's controller clock), the adapter's scrape interval, rate
window, max age and forget time, and the predictive policy's step, cold start, sync period,
scale-down delay and burst hold. Rates follow: the replay sends X times the (rate-scaled)
trace rate, and each replica serves X times as many requests per real second as per cluster
second. So the run is the cluster's hour in 1/X of the time, the same system seen faster; the
one thing that does not compress is Triton's own per-batch overhead (about 3.5 ms), which is
counted in the replicas' capacity. Reported times and rates are in cluster time, so they
compare directly with ``tritonscale simulate`` on the same trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from loadtest.harness.api_client import ExternalAnswer, read_external
from loadtest.harness.balancer import BalancePolicy, Balancer
from loadtest.harness.hpa_emulator import HPAEmulator, SyncRecord
from loadtest.harness.hpa_manifest import HPAObject
from loadtest.harness.kube_api import FakePodAPI
from loadtest.harness.loadgen import RequestRecord
from loadtest.harness.replay import ReplayPlan, ReplayResult, replay
from loadtest.harness.replicas import ReplicaEvent, ReplicaManager
from loadtest.harness.triton_server import ModelSpec, free_port

BATCH_OVERHEAD_S = 0.0035
"""Real seconds each Triton batch costs above its sleep (BENCHMARKS.md, live harness)."""

MODEL_NAME = "resnet"
"""The model the example HPA objects select (``model: resnet``)."""

SERVED = (
    "triton_arrival_rate",
    "triton_arrival_rate_forecast",
    "triton_queue_depth",
    "triton_queue_time_seconds",
    "triton_desired_replicas",
)
RATES = ("triton_arrival_rate", "triton_arrival_rate_forecast")
"""Served in requests per real second: divided by X to be read in cluster time."""


@dataclass(frozen=True)
class ClusterTime:
    """The loop's settings in cluster (trace) seconds, and the time compression X.

    batch_service_s and max_batch: the model sleeps batch_service_s per batch of up to
    max_batch (default one request at a time: the one-server replica the simulator models;
    batches change Triton's queue/compute ratio, see BENCHMARKS.md). slo_s: the queue-wait
    objective. cold_start_s: from scale-up to Ready. The adapter's scrape and rate window are
    twice the service defaults (1 s, 5 s) in cluster time, so compressed 20x they stay
    above 0.1 s of real time.
    """

    time_scale: float = 20.0
    batch_service_s: float = 1.0
    max_batch: int = 1
    cold_start_s: float = 240.0
    hpa_sync_s: float = 15.0
    scrape_s: float = 2.0
    rate_window_s: float = 10.0
    max_age_s: float = 30.0
    forget_after_s: float = 300.0
    predictive_step_s: float = 15.0
    scale_down_delay_s: float = 60.0
    panic_hold_s: float = 60.0
    slo_s: float = 10.0
    drain_timeout_s: float = 600.0

    def real(self, cluster_seconds: float) -> float:
        return cluster_seconds / self.time_scale

    @property
    def model(self) -> ModelSpec:
        return ModelSpec(MODEL_NAME, self.real(self.batch_service_s) * 1000.0, self.max_batch)

    @property
    def capacity_rps_real(self) -> float:
        """Requests per real second one replica serves with full batches."""
        return self.max_batch / (self.real(self.batch_service_s) + BATCH_OVERHEAD_S)

    @property
    def capacity_rps(self) -> float:
        """The same in cluster time (what ``tritonscale simulate --capacity`` takes)."""
        return self.capacity_rps_real / self.time_scale

    def table(self) -> list[tuple[str, float, float]]:
        """(setting, cluster s, real s) for the banner."""
        rows = [
            ("batch service time", self.batch_service_s),
            ("cold start (start delay)", self.cold_start_s),
            ("HPA sync period", self.hpa_sync_s),
            ("adapter scrape interval", self.scrape_s),
            ("adapter rate window", self.rate_window_s),
            ("predictive step", self.predictive_step_s),
            ("scale-down delay", self.scale_down_delay_s),
            ("queue-wait SLO", self.slo_s),
        ]
        return [(name, value, self.real(value)) for name, value in rows]


@dataclass(frozen=True)
class LoopRun:
    """One run: a policy's HPA object against the replayed plan."""

    policy: str  # named as in ``tritonscale simulate``
    hpa: HPAObject
    clock: ClusterTime
    plan: ReplayPlan  # arrivals in real seconds (already compressed by clock.time_scale)
    initial_replicas: int = 1
    balancer: BalancePolicy = "random"
    seed: int = 0
    late_after_s: float = 0.05  # real


@dataclass
class Sample:
    """What the live view and the plot show at one moment (``t``: cluster seconds)."""

    t: float
    offered_rps: float  # cluster requests/s scheduled in the last interval
    served: dict[str, float | None]  # adapter values in cluster units (None: not served)
    desired: int
    existing: int
    ready: int
    ok: int  # requests finished in the interval
    failed: int
    wait_p99_s: float | None  # cluster seconds, of the requests finished in the interval


@dataclass
class LoopResult:
    run: LoopRun
    replay: ReplayResult
    samples: list[Sample]
    hpa: list[SyncRecord]
    events: list[ReplicaEvent]
    cold_starts_s: list[float]  # cluster seconds
    summary: dict[str, Any]
    adapter_log: Path
    scale_up_at_s: float | None  # cluster seconds after the start: the HPA's first scale-up
    slo_breach_at_s: float | None  # scheduled time of the first request over the SLO
    removals_s: list[float] = field(default_factory=list)  # cluster s: replicas scaled down
    served_zero: list[tuple[float, str]] = field(default_factory=list)


def adapter_config(run: LoopRun, port: int, kubeconfig: Path) -> str:
    """``tritonscale serve`` config: every duration in real seconds (cluster / X).

    The service takes an HPA sync period of at least 1 s (the HPA's flag is whole seconds);
    the policy only uses it in its horizon (cold start + sync), so a compressed sync below 1 s
    is written as 1 s with the difference taken off the cold start: the same horizon."""
    c = run.clock
    real = c.real
    spec = run.hpa.spec
    sync = real(c.hpa_sync_s)
    cold_start = real(c.cold_start_s)
    if sync < 1.0:
        cold_start, sync = max(0.0, cold_start + sync - 1.0), 1.0
    return f"""\
# written by loadtest.harness.closed_loop: cluster seconds / {c.time_scale:g}
listen: "127.0.0.1:{port}"
scrape:
  interval_seconds: {real(c.scrape_s):.10g}
  timeout_seconds: {min(0.8, 10 * real(c.scrape_s)):.10g}
  backoff_max_seconds: {max(real(c.scrape_s), real(5.0)):.10g}
signals:
  rate_window_seconds: {real(c.rate_window_s):.10g}
  max_age_seconds: {real(c.max_age_s):.10g}
  forget_after_seconds: {real(c.forget_after_s):.10g}
discovery:
  kubeconfig: {kubeconfig}
  kubernetes:
    - namespaces: [{run.hpa.namespace}]
      label_selector: app.kubernetes.io/name={run.hpa.scale_target.split("/", 1)[1]}
      port: metrics
      backoff_initial_seconds: 0.1
      backoff_max_seconds: 2
predictive:
  defaults:
    step_seconds: {real(c.predictive_step_s):.10g}
    cold_start_seconds: {cold_start:.10g}
    hpa_sync_period_seconds: {sync:.10g}
    slo_seconds: {real(c.slo_s):.10g}
    capacity_rps: {c.capacity_rps_real:.10g}
    min_replicas: {spec.min_replicas}
    max_replicas: {spec.max_replicas}
    scale_down_delay_seconds: {real(c.scale_down_delay_s):.10g}
    panic_hold_seconds: {real(c.panic_hold_s):.10g}
log: {{level: info, format: text}}
"""


class Adapter:
    """``tritonscale serve`` in its own process (as in a cluster), stopped on exit."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "adapter", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def exited(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class _Counts:
    """Replay callbacks: requests finished since the last sample."""

    def __init__(self, service_real_s: float) -> None:
        self.service = service_real_s
        self.ok = 0
        self.failed = 0
        self.waits: list[float] = []  # real seconds

    def done(self, record: RequestRecord) -> None:
        if record.ok and record.done_s is not None:
            self.ok += 1
            self.waits.append(max(0.0, record.done_s - record.send_s - self.service))
        else:
            self.failed += 1

    def take(self) -> tuple[int, int, list[float]]:
        taken = (self.ok, self.failed, self.waits)
        self.ok, self.failed, self.waits = 0, 0, []
        return taken


async def _wait_for_adapter(
    session: aiohttp.ClientSession, adapter: Adapter, port: int, run: LoopRun, timeout_s: float
) -> None:
    """Until the adapter serves the queue depth of the initial replicas (found by discovery)."""
    query = run.hpa.metrics[0]
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if adapter.exited() is not None:
            raise RuntimeError(f"tritonscale serve exited:\n{adapter.log_tail()}")
        try:
            answer = await read_external(
                session, port, run.hpa.namespace, "triton_queue_depth", query.selector
            )
            if answer.status == 200:
                return
            last = f"HTTP {answer.status}: {answer.message}"
        except (aiohttp.ClientError, OSError, ValueError) as err:
            last = f"{type(err).__name__}: {err}"
        await asyncio.sleep(0.2)  # product code: polling a starting server
    raise TimeoutError(
        f"tritonscale serve did not serve the replicas within {timeout_s:.0f} s ({last}); "
        f"log {adapter.log_path}:\n{adapter.log_tail()}"
    )


async def run_loop(
    run: LoopRun,
    workdir: Path,
    view: Callable[[Sample], None] | None = None,
    sample_every_s: float = 0.25,
) -> LoopResult:
    """Run one closed loop; every process it starts is stopped before it returns (or raises,
    or is cancelled by Ctrl-C)."""
    clock = run.clock
    x = clock.time_scale
    workdir.mkdir(parents=True, exist_ok=True)
    pods = FakePodAPI()
    await pods.start()
    kubeconfig = pods.write_kubeconfig(workdir / "kubeconfig")
    balancer = Balancer(run.balancer, seed=run.seed)
    balancer_port = await balancer.start()
    deployment = run.hpa.scale_target.split("/", 1)[1]
    manager = ReplicaManager(
        clock.model,
        start_delay_s=clock.real(clock.cold_start_s),
        balancer=balancer,
        pods=pods,
        namespace=run.hpa.namespace,
        deployment=deployment,
        max_replicas=run.hpa.spec.max_replicas,
        drain_timeout_s=clock.real(clock.drain_timeout_s),
        seed=run.seed,
    )
    adapter_port = free_port()
    config = workdir / f"tritonscale-{run.policy}.yaml"
    config.write_text(adapter_config(run, adapter_port, kubeconfig))
    adapter = Adapter(config, workdir / f"tritonscale-{run.policy}.log")
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    samples: list[Sample] = []
    counts = _Counts(clock.real(clock.batch_service_s))
    emulator = HPAEmulator(
        run.hpa, adapter_port, manager, sync_period_s=clock.hpa_sync_s, time_scale=x
    )
    try:
        manager.scale(run.initial_replicas)
        await manager.wait_ready(run.initial_replicas, timeout_s=300)
        adapter.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            await _wait_for_adapter(session, adapter, adapter_port, run, timeout_s=120)
            started = time.monotonic()
            arrivals = run.plan.arrivals_s

            async def sample_forever() -> None:
                next_at = started
                while not stop.is_set():
                    next_at += sample_every_s
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
                    now = time.monotonic() - started
                    lo, hi = np.searchsorted(arrivals, [now - sample_every_s, now])
                    served = await _read_served(session, adapter_port, run)
                    ok, failed, waits = counts.take()
                    sample = Sample(
                        t=now * x,
                        offered_rps=float(hi - lo) / sample_every_s / x,
                        served=served,
                        desired=manager.desired,
                        existing=manager.existing,
                        ready=manager.ready,
                        ok=ok,
                        failed=failed,
                        wait_p99_s=float(np.percentile(waits, 99)) * x if waits else None,
                    )
                    samples.append(sample)
                    if view is not None:
                        view(sample)

            tasks.append(asyncio.create_task(emulator.run(stop), name="hpa"))
            tasks.append(asyncio.create_task(sample_forever(), name="sampler"))
            result = await replay(
                run.plan,
                f"127.0.0.1:{balancer_port}",
                MODEL_NAME,
                late_after_s=run.late_after_s,
                request_timeout_s=60.0,
                on_done=counts.done,
            )
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        if manager.error is not None:
            raise RuntimeError(manager.error)
        return _result(run, result, samples, emulator, manager, adapter, started)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(adapter.stop)
        await manager.close()
        await balancer.stop()
        await pods.stop()


async def _read_served(
    session: aiohttp.ClientSession, port: int, run: LoopRun
) -> dict[str, float | None]:
    selector = run.hpa.metrics[0].selector
    answers: list[ExternalAnswer | BaseException] = await asyncio.gather(
        *(read_external(session, port, run.hpa.namespace, m, selector) for m in SERVED),
        return_exceptions=True,
    )
    served: dict[str, float | None] = {}
    for metric, answer in zip(SERVED, answers, strict=True):
        if isinstance(answer, ExternalAnswer) and answer.status == 200 and answer.values:
            value = sum(answer.values)
            if metric in RATES:
                value /= run.clock.time_scale
            elif metric == "triton_queue_time_seconds":
                value *= run.clock.time_scale
            served[metric] = value
        else:
            served[metric] = None
    return served


def _overlap(start: float, end: float, lo: float, hi: float) -> float:
    return max(0.0, min(end, hi) - max(start, lo))


def _result(
    run: LoopRun,
    result: ReplayResult,
    samples: list[Sample],
    emulator: HPAEmulator,
    manager: ReplicaManager,
    adapter: Adapter,
    started: float,
) -> LoopResult:
    clock = run.clock
    x = clock.time_scale
    slo_real = clock.real(clock.slo_s)
    service_real = clock.real(clock.batch_service_s)
    load = result.load
    met = 0
    breach: float | None = None
    for record in load.records:
        ok = bool(record.ok)
        done = record.done_s
        wait = done - record.send_s - service_real if ok and done is not None else math.inf
        if wait <= slo_real:
            met += 1
        elif breach is None:
            breach = record.scheduled_s * x
    if load.skipped and breach is None:
        breach = 0.0
    window_end = started + run.plan.duration_s
    now = time.monotonic()
    replica_seconds = sum(
        _overlap(
            r.requested_at,
            r.stopped_at if r.stopped_at is not None else now,
            started,
            window_end,
        )
        for r in manager.replicas
    )
    in_window = [e for e in manager.events if started <= e.t <= window_end]
    before = [e for e in manager.events if e.t < started]
    if before:
        in_window.insert(0, before[-1])
    replicas_max = max((e.existing for e in in_window), default=manager.existing)
    scale_up = next((r.t for r in emulator.records if r.desired > r.spec_replicas), None)
    # The served arrival rate sums, over the replicas, the requests that entered each replica
    # in its own window (each ends at that replica's newest scrape). A request surely entered
    # between its send and the start of its service (done - service). A value served at t
    # ends at most max age before t (older data is not served). So a served 0 is wrong when
    # every window it may be computed on saw arrivals, and there were so many that a replica
    # without one in its window is implausible (at least 5 per replica and window: e^-5 per
    # replica). A 0 at a lower rate (a Poisson gap, a client that could not send) is the
    # truth. The replica count is never rightly 0.
    window = clock.real(clock.rate_window_s)
    max_age = clock.real(clock.max_age_s)
    spans = sorted(
        (r.send_s, r.done_s - service_real) for r in load.records if r.ok and r.done_s is not None
    )
    entered = np.array([first for first, _last in spans])
    started_service = np.array([last for _first, last in spans])

    def sent_within_window(t_cluster: float, replicas: int) -> bool:
        t = t_cluster / x
        lo, hi = np.searchsorted(entered, [t - max_age - window, t])
        windows = (max_age + window) / window
        if hi - lo < 5 * max(1, replicas) * windows:
            return False
        for ts in np.arange(t - max_age, t + 1e-9, 0.05):
            lo, hi = np.searchsorted(entered, [ts - window, ts])
            if hi <= lo or started_service[lo:hi].min() > ts:
                return False  # some window it may be computed on saw no arrival
        return True

    zero = [
        (s.t, metric)
        for s in samples
        for metric in ("triton_arrival_rate", "triton_desired_replicas")
        if s.served.get(metric) == 0.0
        and (metric == "triton_desired_replicas" or sent_within_window(s.t, s.ready))
    ]
    rates = ("triton_arrival_rate", "triton_arrival_rate_forecast")
    zero += [
        (r.t, f"the HPA read {query.name} = 0")
        for r in emulator.records
        for query, values in zip(run.hpa.metrics, r.values, strict=True)
        if values
        and 0.0 in values
        and (
            query.name == "triton_desired_replicas"
            or (query.name in rates and sent_within_window(r.t, r.ready))
        )
    ]
    summary = {
        "policy": run.policy,
        "slo_attainment": round(met / load.offered, 6) if load.offered else None,
        "replica_seconds": round(replica_seconds * x, 1),
        "replicas_max": replicas_max,
        "requests_sent": load.sent,
        "requests_ok": load.completed,
        "requests_late": result.late,
        "triton_processes_started": manager.processes_started,
    }
    return LoopResult(
        run=run,
        replay=result,
        samples=samples,
        hpa=list(emulator.records),
        events=list(manager.events),
        cold_starts_s=[c * x for c in manager.cold_starts()],
        summary=summary,
        adapter_log=adapter.log_path,
        scale_up_at_s=scale_up,
        slo_breach_at_s=breach,
        removals_s=[
            (r.removed_at - started) * x
            for r in manager.replicas
            if r.removed_at is not None and r.removed_at >= started
        ],
        served_zero=zero,
    )


def stop_on_signals() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` blocks stop every process."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if os.name == "posix":
        signal.signal(signal.SIGTERM, interrupt)
