"""Closed-loop autoscaling simulator: a queue served by replicas that a controller scales.

Model (one tick = ``tick_seconds``, 1 s by default; every period is a whole number of ticks):

* Each replica serves one request at a time; a request of relative cost ``work`` (mean 1)
  takes ``work / capacity_rps`` seconds. Requests wait in one FIFO queue shared by all replicas
  (Triton's scheduler queue behind a load balancer, idealised as join-the-shortest-queue).
* The controller may change the replica count at the end of any tick. A replica added at time
  t costs replica-seconds from t and serves from t + ``cold_start_seconds`` (D). A replica
  removed stops costing and serving at once: Kubernetes deletes not-ready pods first, so the
  newest starting replicas go first, then the ready ones that are busy longest; a removed
  replica's in-flight request still completes (graceful termination), the queue is not lost.
* Two queue models, the same controllers:

  - ``request``: exact per-request FIFO/multi-server accounting with a heap of server free
    times (a starting replica is a server whose free time is its ready time). A request starts
    only inside the tick in which it can start, so replicas added later are used as soon as
    they are ready. Queue wait = start - arrival.
  - ``fluid``: per tick, ``served = min(backlog + arriving work, capacity)``; the queue wait of
    the work arriving at time tau is the time until cumulative departures reach cumulative
    arrivals at tau (FIFO), computed afterwards from the two cumulative curves. Used for
    multi-day traces (the 14-day ServeGen trace is about 240 M requests); validated against
    ``request`` on the short traces (``tests/simulator/test_fluid_vs_request.py``).

* What controllers see (``ClusterView``): per-tick arrivals, queue depth at each tick end (the
  adapter samples ``nv_inference_pending_request_count`` at its scrape), busy replica-seconds per
  tick (GPU utilisation), and Triton's cumulative ``queue``/``compute`` duration counters, which
  grow when a request completes (request model) or as the backlog accrues (fluid model).
  Controllers apply their own scrape, window and sync schedules
  (``loadtest.simulator.controllers``).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from policies.predictive import settings_default

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
QueueModel = Literal["request", "fluid"]

PROGRESS_EVERY_TICKS = 20_000


def check_number(
    flag: str, value: float, minimum: float, *, strict: bool, maximum: float | None = None
) -> None:
    """ValueError naming ``flag`` unless ``value`` is finite and above ``minimum`` (``strict``:
    ``>``, else ``>=``) and, if given, below ``maximum`` (strictly)."""
    low_ok = value > minimum if strict else value >= minimum
    if math.isfinite(value) and low_ok and (maximum is None or value < maximum):
        return
    if maximum is not None:
        low, high = ("(" if strict else "["), ")"
        raise ValueError(f"{flag} must be in {low}{minimum:g}, {maximum:g}{high}, got {value:g}")
    raise ValueError(f"{flag} must be {'>' if strict else '>='} {minimum:g}, got {value:g}")


@dataclass(frozen=True)
class SimParams:
    """Simulation settings (seconds, requests/s).

    capacity_rps: requests of work 1 a replica serves per second (service time work/capacity).
    slo_seconds: queue-wait objective per request. cold_start_seconds: D, request to Ready.
    sync_period_seconds: HPA ``--horizontal-pod-autoscaler-sync-period``.
    scrape_interval_seconds: the adapter's scrape interval (queue depth is sampled then).
    initial_replicas: ready replicas at t = 0 (None: the oracle's initial count, same for all).
    """

    capacity_rps: float
    slo_seconds: float
    cold_start_seconds: float
    sync_period_seconds: float = settings_default("hpa_sync_period_seconds")
    scrape_interval_seconds: float = 1.0
    min_replicas: int = settings_default("min_replicas")
    max_replicas: int = settings_default("max_replicas")
    tick_seconds: float = 1.0
    initial_replicas: int | None = None

    def __post_init__(self) -> None:
        for flag, value, minimum, strict in (
            ("--capacity", self.capacity_rps, 0, True),
            ("--slo", self.slo_seconds, 0, True),
            ("--cold-start", self.cold_start_seconds, 0, False),
            ("--sync-period", self.sync_period_seconds, 0, True),
            ("--scrape-interval", self.scrape_interval_seconds, 0, True),
            ("--min-replicas", self.min_replicas, 0, False),
            ("--max-replicas", self.max_replicas, 1, False),
            ("tick_seconds", self.tick_seconds, 0, True),
        ):
            check_number(flag, value, minimum, strict=strict)
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"--min-replicas ({self.min_replicas}) must be <= --max-replicas "
                f"({self.max_replicas})"
            )
        for flag, value in (
            ("--sync-period", self.sync_period_seconds),
            ("--scrape-interval", self.scrape_interval_seconds),
        ):
            self.ticks(value, flag)

    def ticks(self, seconds: float, flag: str = "period") -> int:
        """``seconds`` as a whole number (>= 1) of ticks; ValueError naming ``flag`` if not."""
        n = seconds / self.tick_seconds
        if abs(n - round(n)) > 1e-9 or round(n) < 1:
            raise ValueError(
                f"{flag} ({seconds} s) must be a positive multiple of the {self.tick_seconds} s "
                "simulation tick"
            )
        return round(n)


@dataclass
class Workload:
    """The load as the engine consumes it.

    ``counts``/``work`` per tick are always present (controllers see arrivals through them);
    ``times``/``request_work`` are present for the request model.
    """

    tick_seconds: float
    counts: IntArray
    work: FloatArray
    times: FloatArray | None = None
    request_work: FloatArray | None = None

    @property
    def n_ticks(self) -> int:
        return int(self.counts.size)

    @property
    def duration(self) -> float:
        return self.n_ticks * self.tick_seconds

    @property
    def n_requests(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def from_arrivals(
        cls, times: FloatArray, work: FloatArray, duration: float, tick_seconds: float = 1.0
    ) -> Workload:
        n_ticks = max(1, math.ceil(duration / tick_seconds - 1e-9))
        index = np.minimum((times // tick_seconds).astype(np.int64), n_ticks - 1)
        counts: IntArray = np.bincount(index, minlength=n_ticks).astype(np.int64)
        tick_work = np.bincount(index, weights=work, minlength=n_ticks)
        return cls(tick_seconds, counts, np.asarray(tick_work, dtype=np.float64), times, work)

    @classmethod
    def from_counts(cls, counts: IntArray, work: FloatArray, tick_seconds: float = 1.0) -> Workload:
        return cls(tick_seconds, counts.astype(np.int64), work.astype(np.float64))


@dataclass
class ClusterView:
    """What a controller may read at the end of tick ``k`` (index ``<= k`` only).

    Arrays are per tick: ``arrivals`` (requests), ``queue_depth`` (requests waiting at the tick
    end), ``busy_seconds`` (replica-seconds spent serving), ``queue_seconds_done`` and
    ``compute_seconds_done`` (Triton's queue/compute duration counters' increments, seconds).
    ``spec`` = replicas requested (``scale.spec.replicas`` = pods that exist), ``ready`` = ready.
    """

    params: SimParams
    arrivals: IntArray
    arrivals_cum: IntArray
    queue_depth: FloatArray
    busy_seconds: FloatArray
    queue_seconds_done: FloatArray
    compute_seconds_done: FloatArray
    spec: int = 0
    ready: int = 0

    def arrivals_in(self, k: int, n_ticks: int) -> int:
        """Requests that arrived in the ``n_ticks`` ticks ending with tick ``k``."""
        lo = max(0, k + 1 - n_ticks)
        return int(self.arrivals_cum[k + 1] - self.arrivals_cum[lo])


class Controller(Protocol):
    """A scaling policy as the engine drives it."""

    name: str

    def decide(self, k: int, view: ClusterView) -> int | None:
        """Called at the end of every tick ``k``; return the new replica count or None."""
        ...


@dataclass
class PolicyResult:
    """Outcome of one policy on one workload; timelines are per tick."""

    name: str
    model: QueueModel
    requests: int
    violating_requests: float
    p99_queue_seconds: float
    replica_seconds: float
    scale_events: int
    spec: IntArray = field(repr=False)
    ready: IntArray = field(repr=False)
    queue_depth: FloatArray = field(repr=False)
    waits: FloatArray | None = field(default=None, repr=False)

    @property
    def slo_attainment(self) -> float:
        """Share of requests whose queue wait is within the SLO (NaN when there are none)."""
        if self.requests == 0:
            return math.nan
        return 1.0 - self.violating_requests / self.requests


class _Replicas:
    """Replica bookkeeping shared by both queue models: ready count and starting deque."""

    def __init__(self, initial: int) -> None:
        self.ready = initial
        self.starting: deque[tuple[float, int]] = deque()  # (ready time, server id), FIFO

    @property
    def total(self) -> int:
        return self.ready + len(self.starting)


def simulate(
    workload: Workload,
    params: SimParams,
    controller: Controller,
    model: QueueModel,
    initial_replicas: int,
    progress: Callable[[int], None] | None = None,
) -> PolicyResult:
    """Run ``controller`` against ``workload`` with queue model ``model``."""
    if model == "request":
        if workload.times is None or workload.request_work is None:
            raise ValueError("the request model needs per-request arrival times")
        return _RequestEngine(workload, params, controller, initial_replicas, progress).run()
    return _FluidEngine(workload, params, controller, initial_replicas, progress).run()


class _Engine:
    def __init__(
        self,
        workload: Workload,
        params: SimParams,
        controller: Controller,
        initial_replicas: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.workload = workload
        self.params = params
        self.controller = controller
        self.progress = progress
        n = workload.n_ticks
        self.n = n
        self.dt = params.tick_seconds
        self.mu = params.capacity_rps
        arrivals_cum = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(workload.counts, out=arrivals_cum[1:])
        self.view = ClusterView(
            params=params,
            arrivals=workload.counts,
            arrivals_cum=arrivals_cum,
            queue_depth=np.zeros(n),
            busy_seconds=np.zeros(n),
            queue_seconds_done=np.zeros(n),
            compute_seconds_done=np.zeros(n),
        )
        self.replicas = _Replicas(initial_replicas)
        self.spec_timeline = np.zeros(n, dtype=np.int64)
        self.ready_timeline = np.zeros(n, dtype=np.int64)
        self.scale_events = 0
        self._next_id = initial_replicas

    # Model-specific hooks -------------------------------------------------------------------
    def advance(self, k: int) -> None:
        raise NotImplementedError

    def add_servers(self, ids_ready: list[tuple[float, int]]) -> None:
        raise NotImplementedError

    def remove_starting(self, removed: list[tuple[float, int]]) -> None:
        raise NotImplementedError

    def remove_ready(self, count: int, now: float) -> None:
        raise NotImplementedError

    def finish(self) -> PolicyResult:
        raise NotImplementedError

    # Shared loop -------------------------------------------------------------------------------
    def _promote(self, now: float) -> None:
        starting = self.replicas.starting
        while starting and starting[0][0] <= now + 1e-9:
            starting.popleft()
            self.replicas.ready += 1

    def _apply(self, desired: int, now: float) -> None:
        reps = self.replicas
        current = reps.total
        if desired == current:
            return
        self.scale_events += 1
        if desired > current:
            ready_at = now + self.params.cold_start_seconds
            added = [(ready_at, self._next_id + i) for i in range(desired - current)]
            self._next_id += len(added)
            reps.starting.extend(added)
            self.add_servers(added)
            self._promote(now)
            return
        excess = current - desired
        removed: list[tuple[float, int]] = []
        while excess and reps.starting:
            removed.append(reps.starting.pop())
            excess -= 1
        if removed:
            self.remove_starting(removed)
        if excess:
            reps.ready -= excess
            self.remove_ready(excess, now)

    def run(self) -> PolicyResult:
        view = self.view
        reps = self.replicas
        decide = self.controller.decide
        dt = self.dt
        spec_tl = self.spec_timeline
        ready_tl = self.ready_timeline
        progress = self.progress
        for k in range(self.n):
            spec_tl[k] = reps.total
            self.advance(k)
            now = (k + 1) * dt
            self._promote(now)
            ready_tl[k] = reps.ready
            view.spec = reps.total
            view.ready = reps.ready
            desired = decide(k, view)
            if desired is not None:
                self._apply(desired, now)
            if progress is not None and (k + 1) % PROGRESS_EVERY_TICKS == 0:
                progress(PROGRESS_EVERY_TICKS)
        if progress is not None:
            progress(self.n % PROGRESS_EVERY_TICKS)
        return self.finish()

    def _result(self, violating: float, p99: float, waits: FloatArray | None) -> PolicyResult:
        return PolicyResult(
            name=self.controller.name,
            model="request" if isinstance(self, _RequestEngine) else "fluid",
            requests=self.workload.n_requests,
            violating_requests=violating,
            p99_queue_seconds=p99,
            replica_seconds=float(self.spec_timeline.sum()) * self.dt,
            scale_events=self.scale_events,
            spec=self.spec_timeline,
            ready=self.ready_timeline,
            queue_depth=self.view.queue_depth,
            waits=waits,
        )


class _RequestEngine(_Engine):
    """Per-request FIFO with a heap of (free time, server id)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        assert self.workload.times is not None and self.workload.request_work is not None
        self.times = self.workload.times.tolist()
        self.service = (self.workload.request_work / self.mu).tolist()
        self.starts = np.full(len(self.times), np.nan)
        self.heap: list[tuple[float, int]] = [(0.0, i) for i in range(self.replicas.ready)]
        self.next_request = 0
        # Busy time per tick by difference: slope changes and partial-tick corrections.
        extra = 16
        self.slope = np.zeros(self.n + extra)
        self.partial = np.zeros(self.n + extra)
        self.running_slope = 0.0

    def add_servers(self, ids_ready: list[tuple[float, int]]) -> None:
        for ready_at, sid in ids_ready:
            heapq.heappush(self.heap, (ready_at, sid))

    def remove_starting(self, removed: list[tuple[float, int]]) -> None:
        gone = {sid for _, sid in removed}
        self.heap = [entry for entry in self.heap if entry[1] not in gone]
        heapq.heapify(self.heap)

    def remove_ready(self, count: int, now: float) -> None:
        # Ready servers are those not in the starting deque; drop the ones free last.
        starting = {sid for _, sid in self.replicas.starting}
        ready_entries = sorted((e for e in self.heap if e[1] not in starting), reverse=True)
        gone = {sid for _, sid in ready_entries[:count]}
        self.heap = [entry for entry in self.heap if entry[1] not in gone]
        heapq.heapify(self.heap)

    def _busy(self, t_from: float, t_to: float) -> None:
        """Add a busy interval [t_from, t_to) to the per-tick busy-seconds accounting."""
        dt = self.dt
        last = self.slope.size - 2
        j = min(int(t_from // dt), last)
        m = min(int(t_to // dt), last)
        self.slope[j + 1] += 1.0
        self.partial[j] += (j + 1) * dt - t_from
        self.slope[m + 1] -= 1.0
        self.partial[m] -= (m + 1) * dt - t_to

    def advance(self, k: int) -> None:
        t_end = (k + 1) * self.dt
        times = self.times
        service = self.service
        heap = self.heap
        starts = self.starts
        view = self.view
        dt = self.dt
        n_req = len(times)
        i = self.next_request
        last = self.n - 1
        while i < n_req and heap:
            arrival = times[i]
            if arrival >= t_end:
                break
            free_at, sid = heap[0]
            start = arrival if arrival > free_at else free_at
            if start >= t_end:
                break
            end = start + service[i]
            heapq.heapreplace(heap, (end, sid))
            starts[i] = start
            self._busy(start, end)
            done = min(int(end // dt), last)
            view.queue_seconds_done[done] += start - arrival
            view.compute_seconds_done[done] += service[i]
            i += 1
        self.next_request = i
        view.queue_depth[k] = float(view.arrivals_cum[k + 1] - i)
        self.running_slope += self.slope[k]
        view.busy_seconds[k] = self.running_slope * dt + self.partial[k]

    def finish(self) -> PolicyResult:
        # Drain what is still queued with the servers as they are (no more control changes).
        times, service, heap, starts = self.times, self.service, self.heap, self.starts
        for i in range(self.next_request, len(times)):
            if not heap:
                break
            free_at, sid = heap[0]
            start = max(times[i], free_at)
            heapq.heapreplace(heap, (start + service[i], sid))
            starts[i] = start
        assert self.workload.times is not None
        waits = starts - self.workload.times
        waits[np.isnan(waits)] = np.inf  # no server ever: the request is never served
        slo = self.params.slo_seconds
        violating = float(np.count_nonzero(waits > slo + 1e-9))
        p99 = float(np.percentile(waits, 99)) if waits.size else math.nan
        return self._result(violating, p99, waits)


class _FluidEngine(_Engine):
    """Per-tick fluid queue in work units (mean request work is 1, so work ~ requests)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.backlog = 0.0
        self.departed = np.zeros(self.n + 1)
        self.work = self.workload.work.tolist()
        arrived = np.zeros(self.n + 1)
        np.cumsum(self.workload.work, out=arrived[1:])
        self.arrived = arrived

    def add_servers(self, ids_ready: list[tuple[float, int]]) -> None:
        return None

    def remove_starting(self, removed: list[tuple[float, int]]) -> None:
        return None

    def remove_ready(self, count: int, now: float) -> None:
        return None

    def advance(self, k: int) -> None:
        dt = self.dt
        t0 = k * dt
        t1 = t0 + dt
        serving = float(self.replicas.ready) * dt
        for ready_at, _ in self.replicas.starting:
            if ready_at >= t1:
                break
            serving += t1 - max(ready_at, t0)
        capacity = serving * self.mu
        backlog = self.backlog
        offered = backlog + self.work[k]
        served = offered if offered < capacity else capacity
        new_backlog = offered - served
        view = self.view
        view.busy_seconds[k] = served / self.mu
        view.compute_seconds_done[k] = served / self.mu
        view.queue_depth[k] = new_backlog
        departed = self.departed[k] + served
        self.departed[k + 1] = departed
        if served > 0.0 and backlog > 0.0:
            # Triton adds a request's queue time when it leaves the queue: the work served in
            # this tick left at its middle and arrived when cumulative arrivals reached its level.
            level = departed - 0.5 * served
            arrived = self.arrived
            j = int(np.searchsorted(arrived, level))
            lo = arrived[j - 1]
            span = arrived[j] - lo
            arrival_time = ((j - 1) + ((level - lo) / span if span > 0 else 0.0)) * dt
            wait = (t0 + 0.5 * dt) - arrival_time
            if wait > 0.0:
                view.queue_seconds_done[k] = served * wait
        self.backlog = new_backlog

    def finish(self) -> PolicyResult:
        dt = self.dt
        arrived = np.zeros(self.n + 1)
        np.cumsum(self.workload.work, out=arrived[1:])
        departed = self.departed
        final_rate = self.replicas.total * self.mu  # servers keep running after the trace
        boundaries = np.arange(self.n + 1) * dt
        # FIFO: work arriving at the start (end) of tick k leaves when departures reach the
        # arrival level at the start (end) of the tick.
        leave_start = _inverse_cumulative(departed, arrived[:-1], dt, final_rate)
        leave_end = _inverse_cumulative(departed, arrived[1:], dt, final_rate)
        w0 = np.maximum(0.0, leave_start - boundaries[:-1])
        w1 = np.maximum(0.0, leave_end - boundaries[1:])
        slo = self.params.slo_seconds
        frac = _fraction_above(w0, w1, slo)
        counts = self.workload.counts.astype(np.float64)
        violating = float((frac * counts).sum())
        mid = 0.5 * (w0 + w1)
        p99 = _weighted_quantile(mid, counts, 0.99)
        return self._result(violating, p99, None)


def _inverse_cumulative(
    cumulative: FloatArray, levels: FloatArray, dt: float, final_rate: float
) -> FloatArray:
    """First time the piecewise-linear ``cumulative`` (values at tick boundaries) reaches each
    level; beyond the end it grows at ``final_rate`` per second (inf when that is 0)."""
    end_level = cumulative[-1]
    tol = 1e-9 * max(1.0, float(end_level))
    idx = np.searchsorted(cumulative, levels - tol, side="left")
    n = cumulative.size
    out = np.empty(levels.size)
    inside = idx < n
    j = np.clip(idx, 1, n - 1)
    lo = cumulative[j - 1]
    hi = cumulative[j]
    step = np.where(hi > lo, hi - lo, 1.0)
    frac = np.clip((levels - lo) / step, 0.0, 1.0)
    out[inside] = ((j - 1) + frac)[inside] * dt
    out[idx == 0] = 0.0
    beyond = ~inside
    if beyond.any():
        extra = levels[beyond] - end_level
        end_time = (n - 1) * dt
        if final_rate > 0:
            out[beyond] = end_time + np.maximum(0.0, extra) / final_rate
        else:
            out[beyond] = np.inf
    return out


def _fraction_above(w0: FloatArray, w1: FloatArray, limit: float) -> FloatArray:
    """Share of a tick's arrivals with wait above ``limit``, the wait linear from w0 to w1."""
    lo = np.minimum(w0, w1)
    hi = np.maximum(w0, w1)
    span = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        partial = np.where(span > 0, (hi - limit) / span, 0.0)
    frac = np.where(lo > limit, 1.0, np.where(hi <= limit, 0.0, partial))
    frac = np.where(np.isinf(hi) & ~np.isinf(lo), 1.0, frac)
    return np.clip(np.nan_to_num(frac, nan=1.0), 0.0, 1.0)


def _weighted_quantile(values: FloatArray, weights: FloatArray, q: float) -> float:
    total = weights.sum()
    if total <= 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    position = int(np.searchsorted(cum, q * total, side="left"))
    return float(values[order][min(position, values.size - 1)])
