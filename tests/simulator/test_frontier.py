"""SLO-cost frontiers: cost at an attainment (interpolated only where monotone), the bound's
scored workload and cache, and the run plan."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from loadtest.simulator.bound_interface import initial_ready_for_bound, lower_bound
from loadtest.simulator.controllers import KNOBS, POLICY_NAMES
from loadtest.simulator.engine import SimParams, Workload
from loadtest.simulator.frontier import (
    BoundCache,
    BoundResult,
    FrontierPoint,
    bound_json,
    cost_at_attainment,
    scored_workload,
    work_floor_bound,
)
from loadtest.simulator.run import plan_jobs, run_policies


def _frontier(*rows: tuple[float, float, float]) -> list[FrontierPoint]:
    """(knob value, attainment, replica-seconds) rows."""
    return [FrontierPoint("k", value, att, cost) for value, att, cost in rows]


MONOTONE = _frontier((0.3, 0.999, 300.0), (0.5, 0.995, 200.0), (0.7, 0.98, 100.0))


@pytest.mark.parametrize(
    ("points", "target", "expected"),
    [
        # a grid point exactly at the target: its own cost
        (MONOTONE, 0.995, 200.0),
        # between 0.98 @ 100 and 0.995 @ 200: linear in attainment, 2/3 of the way
        (MONOTONE, 0.99, 100.0 + (0.99 - 0.98) / (0.995 - 0.98) * 100.0),
        # between 0.995 @ 200 and 0.999 @ 300
        (MONOTONE, 0.997, 250.0),
        # below every point: the cheapest point, no extrapolation downwards
        (MONOTONE, 0.9, 100.0),
        # above every point: never reached
        (MONOTONE, 0.9999, None),
        # non-monotone: the higher-attainment neighbour is cheaper; no interpolation, it wins
        (_frontier((0.3, 0.999, 150.0), (0.5, 0.98, 200.0)), 0.99, 150.0),
        # non-monotone and never reaching the target: None, not an interpolated point
        (_frontier((0.3, 0.985, 150.0), (0.5, 0.98, 200.0), (0.7, 0.97, 90.0)), 0.99, None),
        # attainment not monotone in the knob: interpolate per neighbouring pair only
        (
            _frontier((0.3, 0.999, 300.0), (0.5, 0.97, 100.0), (0.7, 0.995, 250.0)),
            0.99,
            min(100.0 + (0.02 / 0.029) * 200.0, 100.0 + (0.02 / 0.025) * 150.0),
        ),
        # one point (a policy without a knob)
        ([FrontierPoint(None, None, 0.996, 80.0)], 0.995, 80.0),
        ([FrontierPoint(None, None, 0.994, 80.0)], 0.995, None),
        # NaN attainment (no requests) is ignored
        (_frontier((0.3, float("nan"), 10.0), (0.5, 0.999, 50.0)), 0.995, 50.0),
        ([], 0.99, None),
    ],
)
def test_cost_at_attainment(
    points: list[FrontierPoint], target: float, expected: float | None
) -> None:
    cost = cost_at_attainment(points, target)
    if expected is None:
        assert cost is None
    else:
        assert cost == pytest.approx(expected)


def test_every_knob_grid_holds_its_default_and_the_plan_runs_each_point_once() -> None:
    for name, knob in KNOBS.items():
        assert knob.default in knob.grid, name
        assert list(knob.grid) == sorted(knob.grid), name
    jobs = plan_jobs(POLICY_NAMES, frontier=True)
    assert len(jobs) == len(set(jobs))
    assert ("oracle", None) in jobs
    assert [v for n, v in jobs if n == "kpa"] == list(KNOBS["kpa"].grid)
    assert plan_jobs(["kpa", "oracle"], frontier=False) == [("kpa", 0.7), ("oracle", None)]


def _workload() -> Workload:
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0.0, 600.0, 1200))
    return Workload.from_arrivals(times, rng.exponential(1.0, times.size), 600.0)


def test_scored_workload_drops_the_warm_up() -> None:
    workload = _workload()
    params = SimParams(
        capacity_rps=1.0, slo_seconds=2.0, cold_start_seconds=10.0, warm_up_seconds=100.0
    )
    scored = scored_workload(workload, params)
    assert scored.n_ticks == 500
    assert scored.times is not None and workload.times is not None
    assert scored.n_requests == int((workload.times >= 100.0).sum()) == scored.times.size
    assert scored.times.min() >= 0.0
    np.testing.assert_array_equal(scored.counts, workload.counts[100:])


def test_work_floor_is_a_lower_bound_and_tightens_with_attainment() -> None:
    workload = _workload()
    params = SimParams(capacity_rps=1.0, slo_seconds=2.0, cold_start_seconds=10.0, max_replicas=10)
    loose = work_floor_bound(workload, params, 0.9)
    tight = work_floor_bound(workload, params, 0.999)
    assert loose.replica_seconds <= tight.replica_seconds
    # serving all the work takes work / capacity replica-seconds at least
    assert tight.replica_seconds <= float(workload.work.sum()) / params.capacity_rps


def test_the_bound_is_below_every_policy_that_reaches_its_attainment() -> None:
    workload = _workload()
    params = SimParams(
        capacity_rps=1.0,
        slo_seconds=5.0,
        cold_start_seconds=20.0,
        max_replicas=20,
        warm_up_seconds=60.0,
    )
    output = run_policies(
        workload,
        params,
        ["hpa-arrival-rate", "kpa", "oracle"],
        "request",
        workers=1,
        show_progress=False,
        slo_targets=(0.99,),
        bound=lambda w, p, levels: {a: work_floor_bound(w, p, a) for a in levels},
    )
    bound = output.bounds[0.99].replica_seconds
    for name, result in output.results.items():
        if result.slo_attainment >= 0.99:
            assert result.replica_seconds >= bound, name


def test_bound_cache_round_trip_and_key(tmp_path: Path) -> None:
    workload = _workload()
    params = SimParams(capacity_rps=1.0, slo_seconds=2.0, cold_start_seconds=10.0)
    cache = BoundCache(tmp_path / "cache")
    key = cache.key(workload, params, 0.99, "lp")
    assert cache.get(key) is None
    cache.put(key, BoundResult(123.0, 30.0, "optimal", 1.5))
    assert cache.get(key) == BoundResult(123.0, 30.0, "optimal", 1.5)
    # the bound does not depend on the balancer; it does on the attainment and the SLO
    random = SimParams(
        capacity_rps=1.0, slo_seconds=2.0, cold_start_seconds=10.0, balancer="shared"
    )
    assert cache.key(workload, random, 0.99, "lp") == key
    assert cache.key(workload, params, 0.995, "lp") != key
    slower = SimParams(capacity_rps=1.0, slo_seconds=3.0, cold_start_seconds=10.0)
    assert cache.key(workload, slower, 0.99, "lp") != key
    (tmp_path / "cache" / f"bound-{key}.json").write_text("{broken")
    assert cache.get(key) is None  # recomputed, never trusted


def test_the_lp_bound_is_unattainable_cold_and_assumes_the_best_start_after_a_warm_up() -> None:
    """The simulator's bound is the LP (bound.py): from one ready replica, 5x its capacity
    for the first cold start cannot be met (null in the JSON, not a number); scored after a
    warm-up, any start is possible, so the bound assumes max replicas ready and is finite."""
    counts = np.full(240, 5, dtype=np.int64)  # 5 req/s of unit work; capacity 1 req/s
    workload = Workload.from_counts(counts, counts.astype(np.float64))
    cold = SimParams(
        capacity_rps=1.0, slo_seconds=2.0, cold_start_seconds=60.0, max_replicas=10,
        initial_replicas=1,
    )  # fmt: skip
    assert initial_ready_for_bound(cold) == 1
    (unattainable,) = lower_bound(workload, cold, [0.99]).values()
    assert (
        unattainable.status == "unattainable" and bound_json(unattainable.replica_seconds) is None
    )
    warm = replace(cold, warm_up_seconds=30.0)
    assert initial_ready_for_bound(warm) == 10
    scored = scored_workload(workload, warm)
    bounds = lower_bound(scored, warm, [0.99, 0.999])
    assert [b.status for b in bounds.values()] == ["optimal", "optimal"]
    # steady load: the bound is the work due within the window (arrivals up to one tick + S
    # before its end) less the misses' budget, served at capacity 1; 5 replicas all along
    # would cost more than that, never less
    for level, bound in bounds.items():
        due = float(scored.work.sum()) - 5 * (2.0 + 1.0) - (1 - level) * scored.n_requests
        assert bound.replica_seconds == pytest.approx(due, abs=1e-3), level
        assert bound.replica_seconds <= 5 * scored.duration
    assert bounds[0.99].replica_seconds <= bounds[0.999].replica_seconds
