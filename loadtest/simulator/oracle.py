"""The clairvoyant oracle: the least replica plan that meets the SLO with lead time D.

How it is computed (all in the fluid model, ticks of ``dt`` seconds, capacity ``mu`` work/s per
replica, SLO ``S`` seconds of queue wait, cold start ``D``):

1. **Demand.** Walking forward with the true future arrivals ``A_k`` (work per tick) and the
   backlog ``Q`` left by the oracle's own choices, the demand in tick k is the fewest replicas
   ``N_k`` such that the backlog left at the end of the tick could be served within ``S`` by
   those replicas: ``Q + A_k - N_k*mu*dt <= N_k*mu*S``, i.e.
   ``N_k = ceil((Q + A_k) / (mu * (dt + S)))``, clamped to [min, max] replicas. The oracle may
   thus carry a backlog of up to ``S`` seconds of work, which is what lets it ride through
   one-second bursts without a replica per burst.
2. **Provisioning.** Replicas are interchangeable, so the plan decomposes into levels: replica
   number j is needed while ``N_k >= j``. For each level the oracle keeps the replica through
   any gap no longer than ``D`` (keeping it costs the gap; stopping and restarting costs the
   ``D`` seconds of cold start, paid from the request) and otherwise stops it, and it requests
   every (re)start exactly ``D`` before the replica is needed. Levels needed within the first
   ``D`` seconds are present from t = 0 (every policy starts with that many ready replicas).
   Given the demand curve this step is optimal, level by level (keep a gap iff gap <= D).

Is it a bound? Only partly. Step 2 is exactly the cheapest way to have ``N_k`` ready replicas
in every tick when each start costs ``D``. Step 1 is a greedy choice (fewest replicas now,
backlog carried forward); it is not proven to minimise the total, and the fluid model ignores
queueing inside a tick, so under the per-request model the oracle can miss the SLO for a few
requests. So ``oracle_replica_seconds`` is a heuristic near-lower bound on the cost of policies
that meet the SLO with the same cold start, not a proven optimum, and policies that miss the
SLO can be cheaper than it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class OraclePlan:
    """``demand[k]``: replicas that must be Ready in tick k; ``plan[k]``: replicas existing
    (ready or starting) in tick k; ``initial``: ready replicas at t = 0."""

    demand: IntArray
    plan: IntArray
    initial: int
    tick_seconds: float

    @property
    def replica_seconds(self) -> float:
        return float(self.plan.sum()) * self.tick_seconds


def oracle_demand(
    work: FloatArray,
    capacity_rps: float,
    slo_seconds: float,
    tick_seconds: float,
    min_replicas: int,
    max_replicas: int,
) -> IntArray:
    """Greedy per-tick demand (step 1 of the module docstring)."""
    per_replica = capacity_rps * (tick_seconds + slo_seconds)
    served_per_replica = capacity_rps * tick_seconds
    demand = np.empty(work.size, dtype=np.int64)
    backlog = 0.0
    lo, hi = min_replicas, max_replicas
    ceil = math.ceil
    for k, arriving in enumerate(work.tolist()):
        offered = backlog + arriving
        n = ceil(offered / per_replica - 1e-9)
        n = lo if n < lo else (hi if n > hi else n)
        demand[k] = n
        backlog = offered - n * served_per_replica
        if backlog < 0.0:
            backlog = 0.0
    return demand


def provision(demand: IntArray, cold_start_seconds: float, tick_seconds: float) -> OraclePlan:
    """Step 2: per level, bridge gaps <= D and start each on-interval D ticks early."""
    n = demand.size
    lead = math.ceil(cold_start_seconds / tick_seconds - 1e-9)
    top = int(demand.max()) if n else 0
    delta = np.zeros(n + 1, dtype=np.int64)
    initial = 0
    for level in range(1, top + 1):
        on = demand >= level
        # Run boundaries of the "on" mask.
        edges = np.diff(np.concatenate(([0], on.view(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        ends = np.flatnonzero(edges == -1)
        # Bridge gaps no longer than the cold start.
        gaps = starts[1:] - ends[:-1]
        keep = np.concatenate(([True], gaps > lead))
        merged_starts = starts[keep]
        merged_ends = np.concatenate((ends[:-1][keep[1:]], ends[-1:]))
        requested = merged_starts - lead
        if requested.size and requested[0] <= 0:
            initial += 1
        requested = np.maximum(requested, 0)
        np.add.at(delta, requested, 1)
        np.add.at(delta, merged_ends, -1)
    plan = np.cumsum(delta[:-1])
    return OraclePlan(demand=demand, plan=plan, initial=initial, tick_seconds=tick_seconds)


def oracle_plan(
    work: FloatArray,
    capacity_rps: float,
    slo_seconds: float,
    cold_start_seconds: float,
    tick_seconds: float,
    min_replicas: int,
    max_replicas: int,
) -> OraclePlan:
    """Demand (step 1) then provisioning with lead time (step 2)."""
    demand = oracle_demand(
        work, capacity_rps, slo_seconds, tick_seconds, min_replicas, max_replicas
    )
    return provision(demand, cold_start_seconds, tick_seconds)


class OracleController:
    """Follows an :class:`OraclePlan` tick by tick (no HPA, no sync period: it is the oracle)."""

    name = "oracle"

    def __init__(self, plan: OraclePlan) -> None:
        self.plan = plan.plan.tolist()
        self.n = len(self.plan)

    def decide(self, k: int, view: object) -> int | None:
        nxt = k + 1
        return self.plan[nxt] if nxt < self.n else None
