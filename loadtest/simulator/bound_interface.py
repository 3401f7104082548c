"""The one place the simulator calls the lower bound on replica-seconds: the LP relaxation of
:mod:`loadtest.simulator.bound` (HiGHS), matched to the queue model the policies ran with.

What is bounded is what is scored: the workload after the warm-up (``scored_workload``) and
the replica-seconds billed after it. At t = 0 of that window a policy has whatever replicas its
warm-up left it, so the bound assumes the most favourable start, ``max_replicas`` ready
(removal is free in the LP, and the bound never rises with more initial replicas: it is a bound
for any state the warm-up ends in). Requests of the warm-up still queued at its end only add
work that the bound leaves out, so they cannot make a plan cheaper than it. Without a warm-up
the window is the whole trace and every policy starts from ``params.start_replicas``.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtest.simulator.bound import workload_bounds
from loadtest.simulator.engine import SimParams, Workload
from loadtest.simulator.frontier import BoundResult

SOLVER = "lp-highs"
"""Names the bound in its cache key, so a better solver never reuses a weaker one's values."""


def initial_ready_for_bound(params: SimParams) -> int:
    """The replicas ready at the start of the scored window that the bound assumes."""
    return params.max_replicas if params.warm_up_ticks > 0 else params.start_replicas


def lower_bound(
    workload: Workload, params: SimParams, attainments: Sequence[float]
) -> dict[float, BoundResult]:
    """A lower bound on the replica-seconds of any policy that serves ``workload`` (the
    scored part of a trace) with at least each attainment of its requests within the SLO;
    ``inf`` where no plan reaches it. The per-request curves are used when the workload has
    its requests (the per-request queue model), the per-tick ones otherwise (fluid)."""
    per_request = workload.times is not None and workload.request_work is not None
    found = workload_bounds(
        workload,
        per_request=per_request,
        capacity_rps=params.capacity_rps,
        slo_seconds=params.slo_seconds,
        cold_start_seconds=params.cold_start_seconds,
        min_replicas=params.min_replicas,
        max_replicas=params.max_replicas,
        attainments=list(attainments),
        initial_ready=initial_ready_for_bound(params),
    )
    return {
        level: BoundResult(
            replica_seconds=bound.replica_seconds,
            block_seconds=bound.block_ticks * workload.tick_seconds,
            status=bound.status,
            solve_seconds=bound.solve_seconds,
        )
        for level, bound in zip(attainments, found, strict=True)
    }
