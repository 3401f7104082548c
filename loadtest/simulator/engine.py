"""Closed-loop autoscaling simulator: replicas behind a load balancer, scaled by a controller.

Model (one tick = ``tick_seconds``, 1 s by default; every period is a whole number of ticks):

* Each replica serves one request at a time; a request of relative cost ``work`` (mean 1)
  takes ``work / capacity_rps`` seconds.
* **Where a request waits** (``SimParams.balancer``):

  - ``random`` (the default: what a Kubernetes Service gives). kube-proxy in iptables mode, its
    default, picks a ready endpoint uniformly at random for each new *connection* (the
    ``statistic --mode random`` rules); IPVS mode picks round-robin per connection. HTTP/1.1
    keep-alive and gRPC clients reuse connections, so what matters is how requests spread over
    connections: we model many clients with short-lived or many connections, i.e. every
    request lands on a uniformly random ready replica and waits in *that* replica's FIFO
    (Triton's per-model scheduler queue). Long-lived connections, which pin a client to one
    pod and starve new pods until clients reconnect, are worse than this and not modelled.
  - ``round-robin``: IPVS ``rr`` with one connection per request.
  - ``least-outstanding``: an L7 proxy (Envoy ``LEAST_REQUEST``, Istio, the KServe/Knative
    activator): power of two choices, i.e. two distinct random ready replicas, the one with
    fewer requests queued or in service wins (Envoy's default ``choice_count`` 2; exact
    least-outstanding when two replicas are ready).
  - ``shared``: one FIFO shared by all replicas, a request starts on the first free replica
    (perfect balancing; the pre-issue-8 model, kept as an option and as an optimistic limit).

  A request is routed when it arrives, only to replicas that are Ready then, and stays on that
  replica. With no ready replica it is held (a retrying client) and routed when one is Ready.
* The controller may change the replica count at the end of any tick. A replica added at time
  t costs replica-seconds from t and serves from t + ``cold_start_seconds`` (D). Removal
  follows the ReplicaSet's deletion order: starting (not ready) pods first, newest first, then
  the ready pod that has been ready the shortest time. A removed ready replica leaves the
  endpoints at once, finishes what was routed to it (graceful termination; with ``shared`` the
  request in service) and **stays billed until its last request completes**.
* Every policy starts from the same state: ``initial_replicas`` ready replicas, an empty
  queue; requests arriving before ``warm_up_seconds`` and the replica-seconds billed before it
  are excluded from the score of every policy alike. ``tritonscale simulate`` starts at
  :func:`initial_replicas_for` the trace, not at ``min_replicas``: with one queue per replica,
  a full load arriving at one replica while the others start leaves minutes of work stuck on
  it, which a warm-up cannot wash out of a short trace.
* Two queue models, the same controllers:

  - ``request``: exact per-request accounting (per-replica FIFOs, or a heap of server free
    times for ``shared``; a starting replica's free time is its ready time). Queue wait =
    start - arrival.
  - ``fluid``: per tick, ``served = min(backlog + arriving work, capacity)``; the wait of the
    work arriving at time tau is the time until cumulative departures reach cumulative
    arrivals at tau (FIFO). With per-replica balancers a stochastic per-replica wait is added
    on top (:mod:`loadtest.simulator.queueing`). Used for multi-day traces (the 14-day ServeGen
    trace is about 240 M requests); validated against ``request``
    (``tests/simulator/test_fluid_vs_request.py``, ``python -m loadtest.simulator.validate``).

* What controllers see (``ClusterView``): per-tick arrivals and completions, queue depth at each
  tick end (Triton's ``nv_inference_pending_request_count`` summed over pods), busy
  replica-seconds per tick (GPU utilisation), and Triton's cumulative ``queue``/``compute``
  duration counters, which grow when a request completes (request model) or as the backlog
  accrues (fluid model). Controllers apply their own scrape, window and sync schedules
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

from loadtest.simulator.queueing import (
    drain_seconds_per_replica,
    relaxation_seconds,
    stochastic_queue_length,
    stochastic_violation_fraction,
)
from policies.predictive import settings_default

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
QueueModel = Literal["request", "fluid"]

BALANCERS: tuple[str, ...] = ("random", "round-robin", "least-outstanding", "shared")
DEFAULT_BALANCER = "random"
"""What a Kubernetes Service gives: kube-proxy's iptables mode, one random endpoint per
connection (see the module docstring)."""

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
    initial_replicas: ready replicas at t = 0 for every policy (None: ``min_replicas``).
    balancer: where requests wait (:data:`BALANCERS`); seed: the balancer's random draws.
    warm_up_seconds: requests arriving before it, and replica-seconds billed before it, are
    left out of every policy's score.
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
    balancer: str = DEFAULT_BALANCER
    seed: int = 0
    warm_up_seconds: float = 0.0

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
            ("--warm-up", self.warm_up_seconds, 0, False),
        ):
            check_number(flag, value, minimum, strict=strict)
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"--min-replicas ({self.min_replicas}) must be <= --max-replicas "
                f"({self.max_replicas})"
            )
        if self.balancer not in BALANCERS:
            raise ValueError(
                f"--balancer must be one of {', '.join(BALANCERS)}, got {self.balancer!r}"
            )
        for flag, value in (
            ("--sync-period", self.sync_period_seconds),
            ("--scrape-interval", self.scrape_interval_seconds),
        ):
            self.ticks(value, flag)

    @property
    def start_replicas(self) -> int:
        """Ready replicas every policy starts with."""
        initial = self.min_replicas if self.initial_replicas is None else self.initial_replicas
        return min(self.max_replicas, max(self.min_replicas, initial))

    @property
    def warm_up_ticks(self) -> int:
        return math.ceil(self.warm_up_seconds / self.tick_seconds - 1e-9)

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
    ``times``/``request_work`` are present for the request model. ``work_scv``: squared
    coefficient of variation of the per-request work (the fluid model's per-replica queueing
    needs it; 0 for unit work).
    """

    tick_seconds: float
    counts: IntArray
    work: FloatArray
    times: FloatArray | None = None
    request_work: FloatArray | None = None
    work_scv: float = 0.0

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
        mean = float(work.mean()) if work.size else 0.0
        scv = float(work.var()) / mean**2 if mean > 0 else 0.0
        return cls(tick_seconds, counts, np.asarray(tick_work, dtype=np.float64), times, work, scv)

    @classmethod
    def from_counts(
        cls, counts: IntArray, work: FloatArray, tick_seconds: float = 1.0, work_scv: float = 0.0
    ) -> Workload:
        return cls(
            tick_seconds, counts.astype(np.int64), work.astype(np.float64), work_scv=work_scv
        )


@dataclass
class ClusterView:
    """What a controller may read at the end of tick ``k`` (index ``<= k`` only).

    Arrays are per tick: ``arrivals`` and ``completions`` (requests), ``queue_depth`` (requests
    waiting at the tick end), ``busy_seconds`` (replica-seconds spent serving),
    ``queue_seconds_done`` and ``compute_seconds_done`` (Triton's queue/compute duration
    counters' increments, seconds). ``spec`` = replicas requested (``scale.spec.replicas`` =
    pods that exist, terminating ones excluded), ``ready`` = ready.
    """

    params: SimParams
    arrivals: IntArray
    arrivals_cum: IntArray
    queue_depth: FloatArray
    busy_seconds: FloatArray
    queue_seconds_done: FloatArray
    compute_seconds_done: FloatArray
    completions: FloatArray
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
    """Outcome of one policy on one workload; timelines are per tick.

    ``requests``, ``violating_requests``, ``p99_queue_seconds`` and ``replica_seconds`` are
    scored after the warm-up; ``replica_seconds`` includes ``drain_seconds``, what removed
    replicas were billed while finishing their requests.
    """

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
    drain_seconds: float = 0.0

    @property
    def slo_attainment(self) -> float:
        """Share of requests whose queue wait is within the SLO (NaN when there are none)."""
        if self.requests == 0:
            return math.nan
        return 1.0 - self.violating_requests / self.requests


class _Replicas:
    """Replica bookkeeping shared by every model: ready ids (in order of becoming ready) and
    the starting deque (ready time, id), FIFO since every start takes the same D."""

    def __init__(self, initial: int) -> None:
        self.ready_ids: list[int] = list(range(initial))
        self.starting: deque[tuple[float, int]] = deque()

    @property
    def ready(self) -> int:
        return len(self.ready_ids)

    @property
    def total(self) -> int:
        return len(self.ready_ids) + len(self.starting)


INITIAL_UTILISATION = 0.5
INITIAL_WINDOW_SECONDS = 600.0


def initial_replicas_for(workload: Workload, params: SimParams) -> int:
    """The ready replicas every policy starts with: the first 10 minutes' mean work at 50 %
    utilisation (a deployment already serving the trace's opening load, loosely sized; no
    policy's own choice), clamped to [min, max] replicas."""
    ticks = max(1, min(workload.n_ticks, round(INITIAL_WINDOW_SECONDS / workload.tick_seconds)))
    rate = float(workload.work[:ticks].sum()) / (ticks * workload.tick_seconds)
    needed = math.ceil(rate / (params.capacity_rps * INITIAL_UTILISATION) - 1e-9)
    return min(params.max_replicas, max(params.min_replicas, needed))


def simulate(
    workload: Workload,
    params: SimParams,
    controller: Controller,
    model: QueueModel,
    initial_replicas: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PolicyResult:
    """Run ``controller`` against ``workload`` with queue model ``model``.

    ``initial_replicas``: ready replicas at t = 0 (default ``params.start_replicas``).
    """
    initial = params.start_replicas if initial_replicas is None else initial_replicas
    if model == "request":
        if workload.times is None or workload.request_work is None:
            raise ValueError("the request model needs per-request arrival times")
        engine: _Engine
        if params.balancer == "shared":
            engine = _SharedQueueEngine(workload, params, controller, initial, progress)
        else:
            engine = _PerReplicaEngine(workload, params, controller, initial, progress)
        return engine.run()
    return _FluidEngine(workload, params, controller, initial, progress).run()


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
            completions=np.zeros(n),
        )
        self.replicas = _Replicas(initial_replicas)
        self.spec_timeline = np.zeros(n, dtype=np.int64)
        self.ready_timeline = np.zeros(n, dtype=np.int64)
        self.drain_by_tick = np.zeros(n)
        self.scale_events = 0
        self._next_id = initial_replicas
        self._tick = 0

    # Model-specific hooks -------------------------------------------------------------------
    def advance(self, k: int) -> None:
        raise NotImplementedError

    def add_servers(self, ids_ready: list[tuple[float, int]]) -> None:
        """Replicas requested now, Ready at the given times."""

    def on_ready(self, sid: int, ready_at: float) -> None:
        """Replica ``sid`` became Ready at ``ready_at``."""

    def remove_starting(self, removed: list[tuple[float, int]]) -> None:
        """Starting replicas deleted (no billing after now)."""

    def remove_ready(self, ids: list[int], now: float) -> float:
        """Ready replicas deleted at ``now``; return the seconds they stay billed, draining."""
        raise NotImplementedError

    def finish(self) -> PolicyResult:
        raise NotImplementedError

    # Shared loop -------------------------------------------------------------------------------
    def _promote(self, now: float) -> None:
        starting = self.replicas.starting
        while starting and starting[0][0] <= now + 1e-9:
            ready_at, sid = starting.popleft()
            self.replicas.ready_ids.append(sid)
            self.on_ready(sid, ready_at)

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
            gone = reps.ready_ids[-excess:]
            del reps.ready_ids[-excess:]
            self.drain_by_tick[self._tick] += self.remove_ready(gone, now)

    def run(self) -> PolicyResult:
        view = self.view
        reps = self.replicas
        decide = self.controller.decide
        dt = self.dt
        spec_tl = self.spec_timeline
        ready_tl = self.ready_timeline
        progress = self.progress
        for k in range(self.n):
            self._tick = k
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

    def _result(
        self, requests: int, violating: float, p99: float, waits: FloatArray | None
    ) -> PolicyResult:
        first = min(self.params.warm_up_ticks, self.n)
        drain = float(self.drain_by_tick[first:].sum())
        return PolicyResult(
            name=self.controller.name,
            model="fluid" if isinstance(self, _FluidEngine) else "request",
            requests=requests,
            violating_requests=violating,
            p99_queue_seconds=p99,
            replica_seconds=float(self.spec_timeline[first:].sum()) * self.dt + drain,
            scale_events=self.scale_events,
            spec=self.spec_timeline,
            ready=self.ready_timeline,
            queue_depth=self.view.queue_depth,
            waits=waits,
            drain_seconds=drain,
        )

    def _score_waits(self, starts: FloatArray) -> PolicyResult:
        """Violations and p99 over the requests that arrive after the warm-up."""
        times = self.workload.times
        assert times is not None
        waits = starts - times
        waits[np.isnan(waits)] = np.inf  # no server ever: the request is never served
        scored = waits[times >= self.params.warm_up_seconds - 1e-9]
        slo = self.params.slo_seconds
        violating = float(np.count_nonzero(scored > slo + 1e-9))
        p99 = float(np.percentile(scored, 99)) if scored.size else math.nan
        return self._result(int(scored.size), violating, p99, waits)


class _BusyAccounting:
    """Busy replica-seconds per tick by difference: slope changes and partial-tick corrections
    (O(1) per request)."""

    def __init__(self, n: int, dt: float) -> None:
        extra = 16
        self.dt = dt
        self.slope = np.zeros(n + extra)
        self.partial = np.zeros(n + extra)
        self.running_slope = 0.0

    def add(self, t_from: float, t_to: float) -> None:
        """Add a busy interval [t_from, t_to)."""
        dt = self.dt
        last = self.slope.size - 2
        j = min(int(t_from // dt), last)
        m = min(int(t_to // dt), last)
        self.slope[j + 1] += 1.0
        self.partial[j] += (j + 1) * dt - t_from
        self.slope[m + 1] -= 1.0
        self.partial[m] -= (m + 1) * dt - t_to

    def tick(self, k: int) -> float:
        """Busy seconds of tick ``k`` (call once per tick, in order)."""
        self.running_slope += self.slope[k]
        return float(self.running_slope * self.dt + self.partial[k])


class _SharedQueueEngine(_Engine):
    """One FIFO for all replicas, with a heap of (free time, server id)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        assert self.workload.times is not None and self.workload.request_work is not None
        self.times = self.workload.times.tolist()
        self.service = (self.workload.request_work / self.mu).tolist()
        self.starts = np.full(len(self.times), np.nan)
        self.heap: list[tuple[float, int]] = [(0.0, i) for i in range(self.replicas.ready)]
        self.next_request = 0
        self.busy = _BusyAccounting(self.n, self.dt)

    def add_servers(self, ids_ready: list[tuple[float, int]]) -> None:
        for ready_at, sid in ids_ready:
            heapq.heappush(self.heap, (ready_at, sid))

    def remove_starting(self, removed: list[tuple[float, int]]) -> None:
        gone = {sid for _, sid in removed}
        self.heap = [entry for entry in self.heap if entry[1] not in gone]
        heapq.heapify(self.heap)

    def remove_ready(self, ids: list[int], now: float) -> float:
        gone = set(ids)
        drain = sum(max(0.0, free_at - now) for free_at, sid in self.heap if sid in gone)
        self.heap = [entry for entry in self.heap if entry[1] not in gone]
        heapq.heapify(self.heap)
        return drain

    def advance(self, k: int) -> None:
        t_end = (k + 1) * self.dt
        times = self.times
        service = self.service
        heap = self.heap
        starts = self.starts
        view = self.view
        dt = self.dt
        busy = self.busy
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
            busy.add(start, end)
            done = min(int(end // dt), last)
            view.queue_seconds_done[done] += start - arrival
            view.compute_seconds_done[done] += service[i]
            view.completions[done] += 1.0
            i += 1
        self.next_request = i
        view.queue_depth[k] = float(view.arrivals_cum[k + 1] - i)
        view.busy_seconds[k] = busy.tick(k)

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
        return self._score_waits(starts)


class _PerReplicaEngine(_Engine):
    """One FIFO per replica; each request is routed on arrival by the balancer."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        assert self.workload.times is not None and self.workload.request_work is not None
        self.times = self.workload.times.tolist()
        self.service = (self.workload.request_work / self.mu).tolist()
        n_req = len(self.times)
        self.starts = np.full(n_req, np.nan)
        rng = np.random.default_rng(self.params.seed)
        self.draw_a = rng.random(n_req).tolist()
        self.draw_b = rng.random(n_req).tolist()
        self.balancer = self.params.balancer
        self.free_at: dict[int, float] = dict.fromkeys(self.replicas.ready_ids, 0.0)
        self.ends: dict[int, deque[float]] = {sid: deque() for sid in self.replicas.ready_ids}
        self.rr_next = 0
        self.held: deque[int] = deque()  # requests that found no ready replica
        self.pending: list[float] = []  # start times of routed requests not yet started
        self.next_request = 0
        self.busy = _BusyAccounting(self.n, self.dt)

    def on_ready(self, sid: int, ready_at: float) -> None:
        self.free_at[sid] = ready_at
        self.ends[sid] = deque()
        while self.held:
            self._route(self.held.popleft(), ready_at)

    def remove_ready(self, ids: list[int], now: float) -> float:
        drain = 0.0
        for sid in ids:
            drain += max(0.0, self.free_at.pop(sid) - now)
            del self.ends[sid]
        return drain

    def _outstanding(self, sid: int, now: float) -> int:
        ends = self.ends[sid]
        while ends and ends[0] <= now:
            ends.popleft()
        return len(ends)

    def _route(self, i: int, now: float) -> None:
        """Send request ``i`` (arrived, or released at ``now``) to a ready replica."""
        ready = self.replicas.ready_ids
        n = len(ready)
        balancer = self.balancer
        if balancer == "random":
            sid = ready[int(self.draw_a[i] * n)]
        elif balancer == "round-robin":
            sid = ready[self.rr_next % n]
            self.rr_next += 1
        else:  # least-outstanding, power of two choices
            first = int(self.draw_a[i] * n)
            sid = ready[first]
            if n > 1:
                second = int(self.draw_b[i] * (n - 1))
                if second >= first:
                    second += 1
                other = ready[second]
                if self._outstanding(other, now) < self._outstanding(sid, now):
                    sid = other
        free_at = self.free_at[sid]
        start = now if now > free_at else free_at
        end = start + self.service[i]
        self.free_at[sid] = end
        self.ends[sid].append(end)
        self.starts[i] = start
        self.busy.add(start, end)
        view = self.view
        done = min(int(end // self.dt), self.n - 1)
        view.queue_seconds_done[done] += start - self.times[i]
        view.compute_seconds_done[done] += self.service[i]
        view.completions[done] += 1.0
        if start > now:
            heapq.heappush(self.pending, start)

    def advance(self, k: int) -> None:
        t_end = (k + 1) * self.dt
        times = self.times
        starting = self.replicas.starting
        ready = self.replicas.ready_ids
        n_req = len(times)
        i = self.next_request
        while i < n_req:
            arrival = times[i]
            if arrival >= t_end:
                break
            if starting and starting[0][0] <= arrival:
                self._promote(arrival)
            if ready:
                self._route(i, arrival)
            else:
                self.held.append(i)
            i += 1
        self.next_request = i
        self._promote(t_end)
        pending = self.pending
        while pending and pending[0] <= t_end:
            heapq.heappop(pending)
        self.view.queue_depth[k] = float(len(pending) + len(self.held))
        self.view.busy_seconds[k] = self.busy.tick(k)

    def finish(self) -> PolicyResult:
        # Held requests go to the replicas still starting, when they are Ready.
        self._promote(math.inf)
        return self._score_waits(self.starts)


class _FluidEngine(_Engine):
    """Per-tick fluid queue in work units (mean request work is 1, so work ~ requests).

    With a per-replica balancer each tick also gets the stochastic per-replica queue of
    :mod:`loadtest.simulator.queueing` (mean queue length in the view; wait tail in the score).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.backlog = 0.0
        self.departed = np.zeros(self.n + 1)
        self.work = self.workload.work.tolist()
        arrived = np.zeros(self.n + 1)
        np.cumsum(self.workload.work, out=arrived[1:])
        self.arrived = arrived
        self.per_replica = self.params.balancer != "shared"
        self.utilisation = np.zeros(self.n)  # offered load / ready capacity, per tick
        self.serving = np.zeros(self.n)  # replicas serving (ready-equivalent), per tick
        self.load_average = 0.0

    def remove_ready(self, ids: list[int], now: float) -> float:
        k = self._tick
        per_replica = drain_seconds_per_replica(
            self.params.balancer,
            self.utilisation[k],
            max(1.0, self.serving[k]),
            self.workload.work_scv,
            self.mu,
        )
        return len(ids) * per_replica

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
        view.completions[k] = served
        self.serving[k] = serving / dt
        load = self.work[k] / capacity if capacity > 0 else (1.0 if self.work[k] > 0 else 0.0)
        relax = max(
            LOAD_AVERAGE_MIN_SECONDS,
            relaxation_seconds(self.load_average, self.workload.work_scv, self.mu),
        )
        self.load_average += (load - self.load_average) * min(1.0, dt / relax)
        rho = min(1.0, self.load_average)
        self.utilisation[k] = rho
        extra_queue = 0.0
        if self.per_replica and serving > 0:
            extra_queue = stochastic_queue_length(
                self.params.balancer, rho, serving / dt, self.workload.work_scv
            )
        view.queue_depth[k] = new_backlog + extra_queue
        departed = self.departed[k] + served
        self.departed[k + 1] = departed
        queue_seconds = extra_queue * dt
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
                queue_seconds += served * wait
        view.queue_seconds_done[k] = queue_seconds
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
        if self.per_replica:
            # The rest of the tick's arrivals also wait in their replica's own queue: the
            # deterministic wait uses up part of the SLO, the stochastic wait must fit the rest.
            slack = np.maximum(0.0, slo - 0.5 * (w0 + w1))
            tail = stochastic_violation_fraction(
                self.params.balancer,
                self.utilisation,
                np.maximum(1.0, self.serving),
                self.workload.work_scv,
                self.mu,
                slack,
            )
            frac = frac + (1.0 - frac) * tail
        counts = self.workload.counts.astype(np.float64)
        first = min(self.params.warm_up_ticks, self.n)
        violating = float((frac[first:] * counts[first:]).sum())
        mid = 0.5 * (w0 + w1)
        p99 = _weighted_quantile(mid[first:], counts[first:], 0.99)
        return self._result(int(counts[first:].sum()), violating, p99, None)


LOAD_AVERAGE_MIN_SECONDS = 60.0
"""Shortest time constant of the fluid model's load average (s). The per-tick counts carry
Poisson noise that the stationary per-replica wait already accounts for; averaging over at
least a minute keeps that noise from being counted twice (fitted on the synthetic day curve and
the stationary cases of the validation, then fixed for every trace)."""


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
