"""SLO-cost frontiers: each policy's (attainment, replica-seconds) over its knob, and the bound.

A policy's frontier is its runs over the grid of its main knob (:data:`controllers.KNOBS`),
in knob order. ``cost_at_attainment(points, A)`` is the cheapest cost on that frontier that
reaches attainment A:

* every grid point with attainment >= A is a candidate at its own cost;
* between two neighbouring grid points (knob order) where attainment crosses A, the cost is
  interpolated linearly in attainment, but only where the segment is monotone (the point with
  the higher attainment also costs more): a segment where more attainment costs less is not a
  trade-off and interpolating along it would invent a point no knob value gives;
* None when no grid point reaches A (never extrapolated).

The lower bound (``loadtest.simulator.bound``) is computed on the scored part of the trace:
the warm-up is cut off and the bound may start with any number of ready replicas at its end
(at most ``max_replicas``, free to drop), which only relaxes it, so it stays a lower bound on
every policy's scored replica-seconds whatever state the warm-up left it in. Results are cached
on disk per (workload, parameters, attainment), keyed by a hash of all of them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.simulator.engine import SimParams, Workload


@dataclass(frozen=True)
class FrontierPoint:
    """One run of a policy at one knob value."""

    knob: str | None  # None: a policy without a knob (one point)
    value: float | None
    slo_attainment: float
    replica_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "knob": self.knob,
            "value": self.value,
            "slo_attainment": round(self.slo_attainment, 6)
            if math.isfinite(self.slo_attainment)
            else None,
            "replica_seconds": round(self.replica_seconds, 3),
        }


def cost_at_attainment(points: Sequence[FrontierPoint], target: float) -> float | None:
    """Cheapest replica-seconds reaching ``target`` on a frontier (module docstring)."""
    ordered = sorted(
        (p for p in points if math.isfinite(p.slo_attainment)),
        key=lambda p: -math.inf if p.value is None else p.value,
    )
    candidates = [p.replica_seconds for p in ordered if p.slo_attainment >= target]
    if not candidates:
        return None
    for a, b in itertools.pairwise(ordered):
        low, high = (a, b) if a.slo_attainment < b.slo_attainment else (b, a)
        crosses = low.slo_attainment < target <= high.slo_attainment
        if not crosses or high.replica_seconds < low.replica_seconds:
            continue
        share = (target - low.slo_attainment) / (high.slo_attainment - low.slo_attainment)
        candidates.append(
            low.replica_seconds + share * (high.replica_seconds - low.replica_seconds)
        )
    return min(candidates)


def attainment_key(level: float) -> str:
    """The JSON key of an attainment level: ``0.995`` -> ``"0.995"``."""
    return f"{level:g}"


def bound_json(replica_seconds: float) -> float | None:
    """A bound as JSON: rounded to the millisecond; None where no plan reaches the attainment
    (an infinite bound; JSON has no infinity, and it is not a number to divide by)."""
    return round(replica_seconds, 3) if math.isfinite(replica_seconds) else None


@dataclass(frozen=True)
class BoundResult:
    """A lower bound on replica-seconds at one attainment (what ``bound.py`` returns)."""

    replica_seconds: float
    block_seconds: float
    status: str
    solve_seconds: float


BoundFunction = Callable[[Workload, SimParams, Sequence[float]], dict[float, BoundResult]]
"""(scored workload, parameters, attainments) -> a proven lower bound on replica-seconds at
each attainment (one call: the attainments share the program and differ in one number)."""


def scored_workload(workload: Workload, params: SimParams) -> Workload:
    """The part of ``workload`` after the warm-up, times shifted to start at 0."""
    first = min(params.warm_up_ticks, workload.n_ticks - 1)
    if first <= 0:
        return workload
    offset = first * workload.tick_seconds
    times = request_work = None
    if workload.times is not None and workload.request_work is not None:
        keep = workload.times >= offset - 1e-9
        times = workload.times[keep] - offset
        request_work = workload.request_work[keep]
    return Workload(
        workload.tick_seconds,
        workload.counts[first:].copy(),
        workload.work[first:].copy(),
        times,
        request_work,
        workload.work_scv,
    )


def work_floor_bound(workload: Workload, params: SimParams, attainment: float) -> BoundResult:
    """A simple proven bound: at least ``min_replicas`` in every tick, and enough replica-seconds
    to serve all work except the largest ``(1 - A)`` share of requests (those may be late,
    but everything else must be served before the trace ends... or after: so the work that
    could be served after the end, one SLO's worth at max replicas, is subtracted too)."""
    n = workload.n_requests
    allowed = math.floor((1.0 - attainment) * n + 1e-9)
    if workload.request_work is not None and allowed > 0:
        sizes = np.sort(workload.request_work)[::-1]
        budget = float(sizes[:allowed].sum())
    else:
        budget = float(allowed)  # unit work per request
    tail = params.max_replicas * params.capacity_rps * params.slo_seconds
    work = max(0.0, float(workload.work.sum()) - budget - tail)
    floor = params.min_replicas * workload.duration
    return BoundResult(max(floor, work / params.capacity_rps), 0.0, "work-floor", 0.0)


class BoundCache:
    """Bounds on disk, one JSON file per key (a hash of workload, parameters, attainment)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @staticmethod
    def key(workload: Workload, params: SimParams, attainment: float, solver: str) -> str:
        digest = hashlib.sha256()
        for array in (workload.counts, workload.work, workload.times, workload.request_work):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        fields = asdict(params)
        fields.pop("balancer")  # the bound holds for every balancer
        fields.pop("seed")
        digest.update(json.dumps([fields, attainment, solver], sort_keys=True).encode())
        return digest.hexdigest()[:24]

    def get(self, key: str) -> BoundResult | None:
        if self.directory is None:
            return None
        path = self.directory / f"bound-{key}.json"
        if not path.exists():
            return None
        try:
            return BoundResult(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # a damaged cache entry is recomputed, not trusted

    def put(self, key: str, result: BoundResult) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"bound-{key}.json"
        path.write_text(json.dumps(asdict(result)) + "\n", encoding="utf-8")
