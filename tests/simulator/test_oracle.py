"""The clairvoyant oracle: demand, lead-time provisioning (optimal per level), SLO met."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from loadtest.simulator.engine import SimParams, Workload, simulate
from loadtest.simulator.oracle import OracleController, oracle_demand, oracle_plan, provision


def test_demand_is_the_fewest_replicas_that_clear_the_backlog_within_the_slo() -> None:
    # capacity 1/s, tick 1 s, SLO 2 s: N >= (backlog + arrivals) / 3.
    work = np.array([3.0, 3.0, 7.0, 0.0, 0.0, 0.0])
    demand = oracle_demand(work, 1.0, 2.0, 1.0, 1, 10)
    # t0: 3/3 -> 1, backlog 2; t1: 5/3 -> 2, backlog 3; t2: 10/3 -> 4, backlog 6;
    # t3: 6/3 -> 2, backlog 4; t4: 4/3 -> 2, backlog 2; t5: 2/3 -> 1, backlog 1.
    assert demand.tolist() == [1, 2, 4, 2, 2, 1]


def test_demand_respects_min_and_max() -> None:
    demand = oracle_demand(np.array([0.0, 100.0]), 1.0, 1.0, 1.0, 2, 5)
    assert demand.tolist() == [2, 5]


def test_short_gaps_are_bridged_long_ones_restart_d_early() -> None:
    demand = np.array([1, 1, 2, 2, 1, 1, 1, 2, 1, 1, 1, 1], dtype=np.int64)
    bridged = provision(demand, cold_start_seconds=3.0, tick_seconds=1.0)
    # Level 2 is off for 3 ticks (4..6) <= D = 3: kept; needed from tick 2 -> requested at -1.
    assert bridged.plan.tolist() == [2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1]
    assert bridged.initial == 2
    restarted = provision(demand, cold_start_seconds=2.0, tick_seconds=1.0)
    # D = 2 < gap 3: level 2 runs 0..3 (requested at 0), then restarts at 5 for tick 7.
    assert restarted.plan.tolist() == [2, 2, 2, 2, 1, 2, 2, 2, 1, 1, 1, 1]


def _brute_force_one_level(need: list[bool], lead: int) -> int:
    """Cheapest set of existing ticks so the replica is Ready whenever needed.

    A replica existing from tick s (s > 0) is Ready from s + lead; one existing at tick 0 is
    Ready at once (initial replicas).
    """
    n = len(need)
    best = n + 1
    for mask in itertools.product((False, True), repeat=n):
        ok = True
        for t in range(n):
            if not need[t]:
                continue
            if not mask[t]:
                ok = False
                break
            start = t
            while start > 0 and mask[start - 1]:
                start -= 1
            if start > 0 and t - start < lead:
                ok = False
                break
        if ok:
            best = min(best, sum(mask))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_provisioning_is_optimal_for_one_level(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 11
    need = (rng.random(n) < 0.4).tolist()
    need[-1] = need[-1] or not any(need)
    lead = int(rng.integers(0, 4))
    plan = provision(np.array(need, dtype=np.int64), float(lead), 1.0)
    assert int(plan.plan.sum()) == _brute_force_one_level(need, lead)


def test_oracle_has_the_demand_ready_in_every_tick_and_meets_the_slo() -> None:
    rng = np.random.default_rng(2)
    duration = 3600
    rate = 6 + 5 * np.sin(np.arange(duration) / 300.0) ** 2
    counts = rng.poisson(rate)
    work = counts.astype(float)
    params = SimParams(
        capacity_rps=1.0,
        slo_seconds=3.0,
        cold_start_seconds=90.0,
        max_replicas=100,
        balancer="shared",  # the oracle plans for the pooled fluid queue
    )
    plan = oracle_plan(work, 1.0, 3.0, 90.0, 1.0, 1, 100)
    result = simulate(
        Workload.from_counts(counts, work), params, OracleController(plan), "fluid", plan.initial
    )
    assert np.all(result.ready >= plan.demand[: result.ready.size])
    # Billed: the plan, plus what removed replicas take to finish their request in service.
    assert result.replica_seconds == pytest.approx(plan.replica_seconds + result.drain_seconds)
    assert 0 < result.drain_seconds < 0.02 * plan.replica_seconds
    assert result.slo_attainment == 1.0
    # It provisions more than the zero-lead-time bound, but not absurdly more.
    no_lead = float(plan.demand.sum())
    assert no_lead <= plan.replica_seconds <= 1.5 * no_lead
