"""The replica-seconds lower bound: never above any plan, and as tight as its proof says.

* brute force over every integer plan of tiny traces (replica schedules x request
  assignments x service orders): the bound is never above the cheapest plan;
* coarse blocks never raise it; monotone in SLO, cold start, budget, initial and max replicas;
* never above the greedy oracle or any simulated policy at the attainment it reaches.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtest.simulator.bound import (
    LowerBound,
    auto_block_ticks,
    main,
    ramp_sum,
    replica_seconds_bound,
    replica_seconds_bounds,
    violation_budget,
    workload_bounds,
)
from loadtest.simulator.controllers import POLICY_NAMES
from loadtest.simulator.engine import SimParams, Workload
from loadtest.simulator.oracle import oracle_plan
from loadtest.simulator.run import build_workload, choose_model, run_policies
from loadtest.simulator.traces import crop, load_trace

DATA = Path(__file__).resolve().parent.parent / "data" / "sim"


# --------------------------------------------------------------------------- brute force


@dataclass(frozen=True)
class Tiny:
    """A tiny instance: ``n`` one-second ticks, requests (arrival, work), ``allowed`` misses."""

    n: int
    capacity: float
    slo: float
    cold_start: float
    min_replicas: int
    max_replicas: int
    initial: int
    times: tuple[float, ...]
    work: tuple[float, ...]
    allowed: int

    def bound(
        self, block_ticks: int = 1, tick_sizes: str | None = None, **changes: Any
    ) -> LowerBound:
        """The LP bound from the requests (or, with ``tick_sizes``, from per-tick sums)."""
        case = replace(self, **changes)
        workload = Workload.from_arrivals(
            np.asarray(case.times), np.asarray(case.work), float(case.n)
        )
        requests = len(case.times)
        per_request: dict[str, Any] = (
            {"times": workload.times, "request_work": workload.request_work}
            if tick_sizes is None
            else {"tick_sizes": tick_sizes}
        )
        return replica_seconds_bound(
            workload.work,
            workload.counts,
            attainment=1.0 - case.allowed / requests,
            tick_seconds=1.0,
            capacity_rps=case.capacity,
            slo_seconds=case.slo,
            cold_start_seconds=case.cold_start,
            min_replicas=case.min_replicas,
            max_replicas=case.max_replicas,
            initial_ready=case.initial,
            block_ticks=block_ticks,
            **per_request,
        )


@dataclass(frozen=True)
class _Episode:
    slot: int
    created: float  # request time (0 for an initial replica)
    ready: float
    removed: float  # the boundary where it is removed (n if it lives to the end)


def _episodes(patterns: tuple[tuple[int, ...], ...], cold_start: float) -> list[_Episode]:
    """One episode per run of 1s in a slot's per-tick pattern; a run at tick 0 is initial."""
    out: list[_Episode] = []
    for slot, pattern in enumerate(patterns):
        k = 0
        while k < len(pattern):
            if not pattern[k]:
                k += 1
                continue
            end = k
            while end < len(pattern) and pattern[end]:
                end += 1
            ready = 0.0 if k == 0 else k + cold_start
            out.append(_Episode(slot, float(k), ready, float(end)))
            k = end
    return out


def _best_finish(
    ready: float, removed: float, open_end: bool, jobs: tuple[tuple[float, float], ...], slo: float
) -> float | None:
    """Earliest time the last of ``jobs`` (arrival, service) ends on one replica, every job
    starting within ``slo`` of arrival, after ``ready`` and before ``removed`` (any order)."""
    best: float | None = None
    for order in itertools.permutations(jobs):
        clock = ready
        ok = True
        for arrival, service in order:
            start = max(clock, arrival)
            if start > arrival + slo + 1e-9 or (not open_end and start >= removed - 1e-9):
                ok = False
                break
            clock = start + service
        if ok and (best is None or clock < best):
            best = clock
    return best


def brute_force(case: Tiny) -> float:
    """Cheapest plan's replica-seconds (inf if none) over every schedule of up to
    ``max_replicas`` replica slots (each slot's per-tick on/off pattern), every assignment of
    the on-time requests to replicas and every service order; a removed busy replica drains
    (costs until its request ends, and blocks its slot)."""
    n = case.n
    patterns = list(itertools.product((0, 1), repeat=n))
    candidates: list[tuple[int, tuple[tuple[int, ...], ...]]] = []
    for combo in itertools.combinations_with_replacement(patterns, case.max_replicas):
        if sum(p[0] for p in combo) != case.initial:
            continue
        spec = [sum(p[k] for p in combo) for k in range(n)]
        if min(spec) < case.min_replicas:
            continue
        candidates.append((sum(spec), combo))
    candidates.sort(key=lambda item: item[0])
    jobs = [(a, w / case.capacity) for a, w in zip(case.times, case.work, strict=True)]
    best = math.inf
    for base, combo in candidates:
        if base >= best - 1e-9:
            break
        episodes = _episodes(combo, case.cold_start)
        best = min(best, _cheapest_schedule(case, episodes, jobs))
    return best


def _cheapest_schedule(
    case: Tiny, episodes: list[_Episode], jobs: list[tuple[float, float]]
) -> float:
    n = float(case.n)

    @functools.cache
    def finish(index: int, assigned: tuple[int, ...]) -> float | None:
        e = episodes[index]
        return _best_finish(
            e.ready, e.removed, e.removed >= n, tuple(jobs[i] for i in assigned), case.slo
        )

    best = math.inf
    # Each request goes to one episode, or misses (-1).
    for choice in itertools.product(range(-1, len(episodes)), repeat=len(jobs)):
        if sum(c == -1 for c in choice) > case.allowed:
            continue
        cost = 0.0
        ends: list[float] = []
        feasible = True
        for index, e in enumerate(episodes):
            mine = tuple(i for i, c in enumerate(choice) if c == index)
            end = e.removed
            if mine:
                done = finish(index, mine)
                if done is None:
                    feasible = False
                    break
                end = max(end, done)
            ends.append(end)
            cost += min(end, n) - e.created
        if not feasible:
            continue
        # A draining replica keeps its slot until its request ends.
        for i, e in enumerate(episodes):
            for f in episodes:
                if f.slot == e.slot and f.created > e.created and f.created < ends[i] - 1e-9:
                    feasible = False
        if feasible:
            best = min(best, cost)
    return best


def _random_tiny(rng: np.random.Generator) -> Tiny:
    """Mostly scale-from-zero cases with deadlines inside the horizon, where plans differ."""
    n = int(rng.integers(3, 5))
    max_replicas = int(rng.integers(1, 3))
    min_replicas = int(rng.random() < 0.2)
    min_replicas = min(min_replicas, max_replicas)
    requests = int(rng.integers(1, 4))
    return Tiny(
        n=n,
        capacity=float(rng.choice([1.0, 2.0])),
        slo=float(rng.choice([0.0, 0.5, 1.0])),
        cold_start=float(rng.choice([0.0, 0.5, 1.0, 2.0])),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        initial=int(rng.integers(min_replicas, max_replicas + 1)),
        times=tuple(sorted(float(t) for t in rng.integers(0, 4 * n - 6, requests) / 4.0)),
        work=tuple(float(w) for w in rng.choice([0.5, 1.0, 1.5, 2.0], requests)),
        allowed=int(rng.random() < 0.3),
    )


def test_one_request_costs_the_cold_start_plus_its_service() -> None:
    # A request at t = 3 must start at once (SLO 0): a replica requested at 1 is ready at 3,
    # serves 3-4: 2 s of cold start + 1 s of service; no plan is cheaper and the LP sees it.
    case = Tiny(6, 1.0, 0.0, 2.0, 0, 2, 0, (3.0,), (1.0,), 0)
    assert brute_force(case) == pytest.approx(3.0)
    assert case.bound().replica_seconds == pytest.approx(3.0, rel=1e-6)


def test_min_replicas_are_paid_over_the_whole_trace() -> None:
    case = Tiny(6, 1.0, 0.0, 2.0, 1, 2, 1, (3.0,), (1.0,), 0)
    result = case.bound()
    assert result.min_replica_seconds == 6.0
    assert result.replica_seconds == pytest.approx(6.0, rel=1e-6)  # the ready one serves it
    assert brute_force(case) == pytest.approx(6.0)


@functools.cache
def _solved(seed: int) -> tuple[Tiny, float, LowerBound]:
    case = _random_tiny(np.random.default_rng(seed))
    return case, brute_force(case), case.bound()


@pytest.mark.parametrize("seed", range(60))
def test_bound_never_exceeds_the_cheapest_integer_plan(seed: int) -> None:
    case, optimum, result = _solved(seed)
    if result.status == "unattainable":
        assert optimum == math.inf, "the LP claims no plan exists, but brute force found one"
    else:
        assert result.replica_seconds <= optimum + 1e-6, (case, optimum, result)
    # From per-tick sums only: the worst case over sizes is always a bound; "equal" is one
    # whenever the requests of a tick do share a size.
    assert case.bound(tick_sizes="unknown").replica_seconds <= optimum + 1e-6
    same_size = replace(case, work=(case.work[0],) * len(case.work))
    assert same_size.bound(tick_sizes="equal").replica_seconds <= brute_force(same_size) + 1e-6


def test_brute_force_cases_include_binding_ones() -> None:
    # The random cases are not trivial: in many the cheapest plan costs more than the minimum
    # replicas, and there the bound is often exact or close, so a bound that was needlessly
    # low everywhere (say, just the minimum replicas) would show here.
    informative = exact = close = 0
    for seed in range(60):
        _, optimum, result = _solved(seed)
        if math.isfinite(optimum) and optimum > result.min_replica_seconds:
            informative += 1
            exact += result.replica_seconds >= optimum - 1e-6
            close += result.replica_seconds >= 0.75 * optimum
    assert informative >= 20
    assert exact >= 3
    assert close >= 10


def test_unattainable_when_the_first_cold_start_cannot_be_bridged() -> None:
    # Three 1-s requests at t = 0, SLO 0.5 s, one ready replica, D = 3: by t = 1 the work due
    # is 1.5 (half of each request) but one replica serves 1 per second.
    case = Tiny(4, 1.0, 0.5, 3.0, 1, 2, 1, (0.0, 0.0, 0.0), (1.0,) * 3, 0)
    result = case.bound()
    assert result.status == "unattainable"
    assert result.replica_seconds == math.inf
    assert brute_force(case) == math.inf
    assert case.bound(initial=2).status == "optimal"
    # Divisible work is a relaxation: two requests shared by one replica fit in the LP
    # although any real plan misses two of the three.
    assert case.bound(allowed=1).status == "optimal"
    assert brute_force(replace(case, allowed=1)) == math.inf
    assert brute_force(replace(case, allowed=2)) == pytest.approx(4.0)


def test_several_attainments_come_back_in_order_and_unattainable_ones_stay_so() -> None:
    case = Tiny(4, 1.0, 0.5, 3.0, 1, 2, 1, (0.0, 0.0, 0.0), (1.0,) * 3, 0)
    workload = Workload.from_arrivals(np.zeros(3), np.ones(3), 4.0)
    results = replica_seconds_bounds(
        workload.work,
        workload.counts,
        attainments=(1.0, 0.0, 2 / 3, 1.0),
        tick_seconds=1.0,
        capacity_rps=case.capacity,
        slo_seconds=case.slo,
        cold_start_seconds=case.cold_start,
        min_replicas=case.min_replicas,
        max_replicas=case.max_replicas,
        initial_ready=case.initial,
        times=workload.times,
        request_work=workload.request_work,
    )
    assert [r.attainment for r in results] == [1.0, 0.0, 2 / 3, 1.0]
    assert [r.status for r in results] == ["unattainable", "optimal", "optimal", "unattainable"]
    assert [r.allowed_violations for r in results] == [0, 3, 1, 0]
    assert results[1].replica_seconds <= results[2].replica_seconds


# --------------------------------------------------------------------------- coarse blocks


def _random_workload(rng: np.random.Generator, n: int = 90) -> tuple[Workload, dict[str, Any]]:
    rate = rng.uniform(0.5, 4.0) * (1.0 + np.sin(np.arange(n) / rng.uniform(3.0, 15.0)))
    counts = rng.poisson(rate)
    times = np.sort(np.concatenate([k + rng.random(c) for k, c in enumerate(counts)]))
    work = rng.exponential(1.0, times.size) + 0.05
    workload = Workload.from_arrivals(times, work, float(n))
    settings: dict[str, Any] = {
        "tick_seconds": 1.0,
        "capacity_rps": float(rng.choice([1.0, 2.0])),
        "slo_seconds": float(rng.choice([0.5, 2.0, 5.0])),
        "cold_start_seconds": float(rng.choice([0.0, 7.0, 20.0])),
        "min_replicas": int(rng.integers(0, 2)),
        "max_replicas": 60,
        "initial_ready": 8,
    }
    return workload, settings


def _bound(workload: Workload, attainment: float = 0.97, **settings: Any) -> float:
    return replica_seconds_bound(
        workload.work,
        workload.counts,
        attainment=attainment,
        times=workload.times,
        request_work=workload.request_work,
        **settings,
    ).replica_seconds


@pytest.mark.parametrize("seed", range(6))
def test_coarser_blocks_never_raise_the_bound(seed: int) -> None:
    workload, settings = _random_workload(np.random.default_rng(100 + seed))
    fine = _bound(workload, block_ticks=1, **settings)
    by_block = {b: _bound(workload, block_ticks=b, **settings) for b in (2, 3, 6, 30)}
    tol = 1e-6 * fine
    assert by_block[2] <= fine + tol and by_block[3] <= fine + tol
    assert by_block[6] <= min(by_block[2], by_block[3]) + tol  # 6 merges blocks of 2 and of 3
    assert by_block[30] <= by_block[6] + tol
    assert by_block[30] < fine  # and coarsening does lose something on these traces


def test_block_one_is_the_tick_program_and_auto_picks_it_for_short_traces() -> None:
    workload, settings = _random_workload(np.random.default_rng(7))
    assert auto_block_ticks(workload.n_ticks) == 1
    assert auto_block_ticks(3 * 86_400) == 13  # at most MAX_AUTO_BLOCKS = 20,000 blocks
    tick_level = _bound(workload, block_ticks=1, **settings)
    assert _bound(workload, **settings) == tick_level
    # A ragged last block (90 ticks in blocks of 7) is still a valid, lower bound.
    assert _bound(workload, block_ticks=7, **settings) <= tick_level


# --------------------------------------------------------------------------- monotone


@pytest.mark.parametrize("seed", range(4))
def test_looser_settings_never_raise_the_bound(seed: int) -> None:
    workload, settings = _random_workload(np.random.default_rng(200 + seed))
    base = _bound(workload, **settings)
    tol = 1e-6 * base
    looser = [
        {"slo_seconds": settings["slo_seconds"] * 2},
        {"cold_start_seconds": settings["cold_start_seconds"] / 2},
        {"initial_ready": settings["initial_ready"] + 4},
        {"max_replicas": settings["max_replicas"] * 2},
    ]
    for change in looser:
        assert _bound(workload, **{**settings, **change}) <= base + tol, change
    assert _bound(workload, attainment=0.9, **settings) <= base + tol
    assert _bound(workload, attainment=1.0, **settings) >= base - tol


def test_more_attainment_costs_more_on_a_bursty_trace() -> None:
    workload, settings = _random_workload(np.random.default_rng(9))
    values = [
        b.replica_seconds
        for b in replica_seconds_bounds(
            workload.work,
            workload.counts,
            attainments=(0.9, 0.99, 1.0),
            times=workload.times,
            request_work=workload.request_work,
            **settings,
        )
    ]
    assert values[0] < values[1] <= values[2]


# --------------------------------------------------------------------------- pieces


def test_ramp_sum_matches_the_definition() -> None:
    rng = np.random.default_rng(3)
    starts = rng.uniform(0, 50, 200)
    slopes = rng.uniform(0.1, 5, 200)
    caps = rng.uniform(0, 3, 200)
    at = np.linspace(-5, 60, 131)
    direct = np.minimum(caps[None, :], slopes[None, :] * np.maximum(at[:, None] - starts, 0))
    np.testing.assert_allclose(ramp_sum(starts, slopes, caps, at), direct.sum(axis=1), atol=1e-9)


def test_budget_is_the_work_of_the_largest_allowed_misses() -> None:
    counts = np.array([2, 0, 3, 1])
    work = np.array([4.0, 0.0, 3.0, 5.0])  # per-request sizes 2, 2 | 1, 1, 1 | 5
    sizes = np.array([2.0, 2.0, 1.0, 1.0, 1.0, 5.0])
    # 0.5 of 6 requests may miss: 3 largest.
    assert violation_budget(work, counts, 0.5, sizes, "equal") == (3, 9.0)
    assert violation_budget(work, counts, 0.5, None, "equal") == pytest.approx((3, 9.0))
    # The fluid model's misses are fractions of requests: 0.6 of 6 = 3.6 (5 + 2 + 2 + 0.6 x 1).
    assert violation_budget(work, counts, 0.4, None, "equal") == pytest.approx((3.6, 9.6))
    assert violation_budget(work, counts, 0.4, sizes, "equal") == (3, 9.0)
    # Unknown sizes: 3 requests hold at most the 3 largest tick works.
    assert violation_budget(work, counts, 0.5, None, "unknown") == (3, 12.0)
    assert violation_budget(work, counts, 1.0, None, "unknown") == (0, 0.0)
    # floor((1 - 0.999) * 6) = 0 misses allowed.
    assert violation_budget(work, counts, 0.999, sizes, "equal")[0] == 0


def test_certificate_is_at_most_the_solver_optimum_and_close_to_it() -> None:
    workload, settings = _random_workload(np.random.default_rng(11))
    result = replica_seconds_bound(
        workload.work,
        workload.counts,
        attainment=0.95,
        times=workload.times,
        request_work=workload.request_work,
        **settings,
    )
    assert result.replica_seconds <= result.lp_replica_seconds
    assert result.replica_seconds == pytest.approx(result.lp_replica_seconds, rel=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"capacity_rps": 0.0}, "capacity_rps"),
        ({"min_replicas": 5, "max_replicas": 2}, "min_replicas"),
        ({"initial_ready": 9}, "initial_ready"),
        ({"attainment": 1.5}, "attainment"),
        ({"block_ticks": 0}, "block_ticks"),
        ({"times": np.array([0.5])}, "both times and request_work"),
    ],
)
def test_bad_input_is_named(change: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {
        "attainment": 0.99,
        "tick_seconds": 1.0,
        "capacity_rps": 1.0,
        "slo_seconds": 1.0,
        "cold_start_seconds": 5.0,
        "min_replicas": 1,
        "max_replicas": 4,
        **change,
    }
    with pytest.raises(ValueError, match=message):
        replica_seconds_bound(np.array([1.0, 0.0]), np.array([1, 0]), **kwargs)


# --------------------------------------------------------------------------- vs the simulator

_SLICES = [
    # file, capacity, SLO as in BENCHMARKS.md, crop (s) to keep the test fast, block ticks
    ("azure_conv_slice.csv", 1.0, 2.0, None, None),
    ("mooncake_conversation_slice.jsonl", 0.5, 4.0, None, None),
    ("alibaba_lora_slice.csv", 1 / 28.67, 30.0, 3 * 3600.0, 30),
    ("servegen_m-large_slice.tar.gz", 5.0, 2.0, 600.0, 5),
]


@pytest.mark.parametrize(("name", "capacity", "slo", "span", "block"), _SLICES)
@pytest.mark.parametrize("cold_start", [60.0, 180.0])
def test_no_simulated_policy_beats_the_bound(
    name: str, capacity: float, slo: float, span: float | None, block: int | None, cold_start: float
) -> None:
    trace = load_trace(DATA / name)
    if span is not None:
        trace = crop(trace, 0.0, span)
    model = choose_model(trace, "auto")
    if name.startswith("servegen"):
        model = "fluid"  # the model multi-day ServeGen runs use
    workload = build_workload(trace, model, np.random.default_rng(1), 1.0)
    params = SimParams(
        capacity_rps=capacity, slo_seconds=slo, cold_start_seconds=cold_start, max_replicas=200
    )
    output = run_policies(workload, params, POLICY_NAMES, model, workers=1, show_progress=False)
    names = list(output.results)
    bounds = workload_bounds(
        workload,
        per_request=model == "request",
        attainments=[output.results[p].slo_attainment for p in names],
        capacity_rps=capacity,
        slo_seconds=slo,
        cold_start_seconds=cold_start,
        min_replicas=params.min_replicas,
        max_replicas=params.max_replicas,
        # the simulator starts every policy from the oracle's initial count, clamped
        initial_ready=min(params.max_replicas, max(params.min_replicas, output.plan.initial)),
        block_ticks=block,
    )
    for policy, bound in zip(names, bounds, strict=True):
        result = output.results[policy]
        assert bound.status == "optimal"
        assert bound.allowed_violations == pytest.approx(result.violating_requests, rel=1e-6)
        assert bound.replica_seconds <= result.replica_seconds, (policy, bound, result)
    # The oracle's own plan (it reaches 100 % on its fluid demand) is above the bound too.
    plan = oracle_plan(
        workload.work, capacity, slo, cold_start, 1.0, params.min_replicas, params.max_replicas
    )
    assert bounds[names.index("oracle")].replica_seconds <= plan.replica_seconds


# --------------------------------------------------------------------------- command line


def test_command_line_prints_and_writes_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bound.json"
    code = main(
        [
            "--trace",
            str(DATA / "azure_conv_slice.csv"),
            "--capacity",
            "1",
            "--slo",
            "2",
            "--cold-start",
            "60",
            "--attainment",
            "0.99,0.999",
            "--initial-ready",
            "oracle",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "x bound" in printed
    report = json.loads(out.read_text())
    rows = report["bounds"]
    assert [r["attainment"] for r in rows] == [0.99, 0.999]
    assert all(r["status"] == "optimal" for r in rows)
    assert rows[0]["replica_seconds"] <= rows[1]["replica_seconds"]
    assert rows[1]["replica_seconds"] <= report["oracle"]["replica_seconds"]
    assert report["params"]["initial_ready"] == report["oracle"]["initial"]


def test_command_line_rejects_a_bad_attainment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--trace",
                str(DATA / "azure_conv_slice.csv"),
                "--capacity",
                "1",
                "--slo",
                "2",
                "--cold-start",
                "60",
                "--attainment",
                "0.99,1.2",
            ]
        )
    assert exit_info.value.code == 2
    assert "--attainment" in capsys.readouterr().err
