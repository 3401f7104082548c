"""The one place the simulator calls the lower bound on replica-seconds.

Until ``loadtest.simulator.bound`` (the LP relaxation) is available this is the work floor of
:func:`loadtest.simulator.frontier.work_floor_bound`: a proven but loose bound.
"""

from __future__ import annotations

from loadtest.simulator.engine import SimParams, Workload
from loadtest.simulator.frontier import BoundResult, work_floor_bound


def lower_bound(workload: Workload, params: SimParams, attainment: float) -> BoundResult:
    """A lower bound on the replica-seconds of any policy that serves ``workload`` (the
    scored part of a trace) with at least ``attainment`` of its requests within the SLO."""
    return work_floor_bound(workload, params, attainment)
