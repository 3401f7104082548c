"""The one place the simulator calls the lower bound on replica-seconds.

Until ``loadtest.simulator.bound`` (the LP relaxation) is available this is the work floor of
:func:`loadtest.simulator.frontier.work_floor_bound`: a proven but loose bound.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtest.simulator.engine import SimParams, Workload
from loadtest.simulator.frontier import BoundResult, work_floor_bound

SOLVER = "work-floor"
"""Names the bound in its cache key, so a better solver never reuses a weaker one's values."""


def lower_bound(
    workload: Workload, params: SimParams, attainments: Sequence[float]
) -> dict[float, BoundResult]:
    """A lower bound on the replica-seconds of any policy that serves ``workload`` (the
    scored part of a trace) with at least each attainment of its requests within the SLO."""
    return {level: work_floor_bound(workload, params, level) for level in attainments}
