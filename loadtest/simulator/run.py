"""Run several policies on one trace: workload, the oracle, frontiers, the bound, JSON.

Each (policy, knob value) run and each bound is independent, so they are spread over worker
processes (fork: the workload arrays are shared copy-on-write); a shared counter drives one
tqdm bar on stderr. Every policy starts from the same state (``SimParams.initial_replicas``,
by default :func:`engine.initial_replicas_for` the trace, an empty queue) and is scored after
the same warm-up.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from loadtest.simulator.controllers import (
    KNOBS,
    POLICY_NAMES,
    ROLES,
    RatioPath,
    TritonscaleTuning,
    make_controller,
)
from loadtest.simulator.engine import (
    PolicyResult,
    QueueModel,
    SimParams,
    Workload,
    initial_replicas_for,
    simulate,
)
from loadtest.simulator.frontier import (
    BoundCache,
    BoundFunction,
    BoundResult,
    FrontierPoint,
    attainment_key,
    bound_json,
    cost_at_attainment,
    scored_workload,
)
from loadtest.simulator.oracle import OraclePlan, oracle_plan
from loadtest.simulator.traces import ArrivalTrace, RateTrace, Trace

REQUEST_MODEL_LIMIT = 2_000_000
"""``--model auto`` uses the per-request model up to this many requests, the fluid one above."""

PROGRESS_MIN_TICKS = 500_000
"""Show the progress bar when runs x ticks exceeds this (a run of a few seconds)."""

DEFAULT_SLO_TARGETS = (0.99, 0.995, 0.999)


def choose_model(trace: Trace, requested: str) -> QueueModel:
    """``auto``: per-request when the trace has at most REQUEST_MODEL_LIMIT requests."""
    if requested in ("request", "fluid"):
        return "request" if requested == "request" else "fluid"
    if requested != "auto":
        raise ValueError(f"--model must be auto, request or fluid, got {requested!r}")
    size = trace.n_requests if isinstance(trace, ArrivalTrace) else trace.expected_requests
    return "request" if size <= REQUEST_MODEL_LIMIT else "fluid"


def build_workload(
    trace: Trace, model: QueueModel, rng: np.random.Generator, tick_seconds: float
) -> Workload:
    """Arrivals (request model) or per-tick counts (fluid) for ``trace``; draws use ``rng``."""
    if isinstance(trace, RateTrace):
        if model == "request":
            trace = trace.sample_arrivals(rng)
        else:
            n_ticks = max(1, math.ceil(trace.duration / tick_seconds - 1e-9))
            counts, work = trace.sample_step_counts(rng, tick_seconds, n_ticks)
            return Workload.from_counts(counts, work, tick_seconds)
    workload = Workload.from_arrivals(trace.times, trace.work, trace.duration, tick_seconds)
    if model == "fluid":
        workload.times = None  # work_scv, from the requests, stays for the per-replica queues
        workload.request_work = None
    return workload


Job = tuple[str, float | None]
"""(policy, knob value); None: the policy's default (or a policy without a knob)."""


@dataclass(frozen=True)
class RunOutput:
    """Everything one simulate invocation produced.

    ``results``: each policy at its default knob; ``frontier``: each swept policy's runs in
    grid order (empty without ``--frontier``); ``bounds``: attainment -> bound.
    """

    model: QueueModel
    workload: Workload
    plan: OraclePlan
    results: dict[str, PolicyResult]
    wall_seconds: float
    frontier: dict[str, list[tuple[float, PolicyResult]]] = field(default_factory=dict)
    bounds: dict[float, BoundResult] = field(default_factory=dict)
    params: SimParams | None = None  # as run (initial replicas filled in)


def plan_jobs(names: Sequence[str], frontier: bool) -> list[Job]:
    """Every run: each policy at its default, and with ``frontier`` over its whole grid."""
    jobs: list[Job] = []
    for name in names:
        knob = KNOBS.get(name)
        if knob is None:
            jobs.append((name, None))
        elif frontier:
            values = knob.grid if knob.default in knob.grid else (*knob.grid, knob.default)
            jobs.extend((name, v) for v in values)
        else:
            jobs.append((name, knob.default))
    return jobs


# Worker state inherited through fork (not pickled per task).
_SHARED: dict[str, Any] = {}


def _progress_callback() -> Callable[[int], None] | None:
    counter = _SHARED.get("counter")
    if counter is None:
        return None

    def progress(ticks: int) -> None:
        with counter.get_lock():
            counter.value += ticks

    return progress


def _run_job(job: Job) -> PolicyResult:
    name, knob = job
    params: SimParams = _SHARED["params"]
    controller = make_controller(
        name,
        params,
        plan=_SHARED["plan"],
        initial_ready=params.start_replicas,
        tuning=_SHARED["tuning"],
        knob=knob,
        ratio_path=_SHARED["ratio_path"],
    )
    result = simulate(
        _SHARED["workload"], params, controller, _SHARED["model"], None, _progress_callback()
    )
    result.waits = None  # do not ship per-request arrays back through the pipe
    return result


def _solve_bounds(attainments: tuple[float, ...]) -> dict[float, BoundResult]:
    bound: BoundFunction = _SHARED["bound"]
    return bound(_SHARED["scored"], _SHARED["params"], attainments)


def _task(item: tuple[str, Any]) -> tuple[str, Any, Any]:
    kind, payload = item
    if kind == "bound":
        return kind, payload, _solve_bounds(payload)
    return kind, payload, _run_job(payload)


def run_policies(
    workload: Workload,
    params: SimParams,
    names: Sequence[str],
    model: QueueModel,
    *,
    tuning: TritonscaleTuning | None = None,
    ratio_path: RatioPath | None = None,
    workers: int | None = None,
    show_progress: bool | None = None,
    frontier: bool = False,
    slo_targets: Sequence[float] = (),
    bound: BoundFunction | None = None,
    bound_cache: BoundCache | None = None,
    bound_name: str = "bound",
) -> RunOutput:
    """Simulate every policy in ``names`` (same workload, same initial state); with
    ``frontier`` sweep each policy's knob; with ``bound`` compute it at each of
    ``slo_targets`` (cached in ``bound_cache``)."""
    started = time.perf_counter()
    if params.initial_replicas is None:
        params = replace(params, initial_replicas=initial_replicas_for(workload, params))
    plan = oracle_plan(
        workload.work,
        params.capacity_rps,
        params.slo_seconds,
        params.cold_start_seconds,
        workload.tick_seconds,
        params.min_replicas,
        params.max_replicas,
    )
    jobs = plan_jobs(names, frontier)
    scored = scored_workload(workload, params)
    bounds: dict[float, BoundResult] = {}
    pending_bounds: list[float] = []
    keys: dict[float, str] = {}
    if bound is not None:
        cache = bound_cache or BoundCache(None)
        for level in slo_targets:
            keys[level] = cache.key(scored, params, level, bound_name)
            hit = cache.get(keys[level])
            if hit is None:
                pending_bounds.append(level)
            else:
                bounds[level] = hit
    tasks: list[tuple[str, Any]] = [("bound", tuple(pending_bounds))] if pending_bounds else []
    tasks += [("job", job) for job in jobs]
    total_ticks = workload.n_ticks * len(jobs)
    if show_progress is None:
        show_progress = total_ticks >= PROGRESS_MIN_TICKS
    if workers is None:
        workers = min(len(tasks), os.cpu_count() or 1)
    if total_ticks < 200_000 and not pending_bounds:
        workers = 1
    _SHARED.clear()
    _SHARED.update(
        params=params,
        plan=plan,
        tuning=tuning or TritonscaleTuning(),
        ratio_path=ratio_path,
        workload=workload,
        scored=scored,
        model=model,
        bound=bound,
    )
    outcomes: list[tuple[str, Any, Any]] = []
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total_ticks,
            unit="tick",
            unit_scale=True,
            file=sys.stderr,
            desc="simulating",
            leave=False,
        )
    try:
        if workers <= 1:
            for task in tasks:
                outcomes.append(_task(task))
                if bar is not None and task[0] == "job":
                    bar.update(workload.n_ticks)
        else:
            ctx = mp.get_context("fork")
            counter = ctx.Value("q", 0)
            _SHARED["counter"] = counter
            with ctx.Pool(workers) as pool:
                pending = pool.map_async(_task, tasks, chunksize=1)
                seen = 0
                while not pending.ready():
                    pending.wait(0.25)
                    if bar is not None:
                        now = counter.value
                        bar.update(now - seen)
                        seen = now
                outcomes = pending.get()
    finally:
        if bar is not None:
            bar.close()
        _SHARED.clear()
    results: dict[str, PolicyResult] = {}
    sweeps: dict[str, list[tuple[float, PolicyResult]]] = {}
    for kind, payload, value in outcomes:
        if kind == "bound":
            for level, result in value.items():
                bounds[level] = result
                if bound_cache is not None:
                    bound_cache.put(keys[level], result)
            continue
        name, knob = payload
        knob_spec = KNOBS.get(name)
        if knob_spec is None or knob == knob_spec.default:
            results[name] = value
        if frontier and knob_spec is not None and knob is not None:
            sweeps.setdefault(name, []).append((knob, value))
    ordered = {name: results[name] for name in names if name in results}
    return RunOutput(
        model,
        workload,
        plan,
        ordered,
        time.perf_counter() - started,
        frontier={name: sorted(runs, key=lambda r: r[0]) for name, runs in sweeps.items()},
        bounds=dict(sorted(bounds.items())),
        params=params,
    )


def policy_summary(result: PolicyResult, name: str) -> dict[str, Any]:
    """The JSON entry of one policy at its default knob (numbers, NaN as null)."""
    knob = KNOBS.get(name)
    return {
        "role": ROLES[name],
        "knob": None if knob is None else {"name": knob.name, "value": knob.default},
        "requests": result.requests,
        "slo_attainment": _finite(result.slo_attainment),
        "violating_requests": _count(result.violating_requests),
        "p99_queue_seconds": _finite(result.p99_queue_seconds),
        "replica_seconds": round(result.replica_seconds, 3),
        "drain_seconds": round(result.drain_seconds, 3),
        "scale_events": result.scale_events,
    }


def frontier_points(output: RunOutput) -> dict[str, list[FrontierPoint]]:
    """Each policy's frontier, in knob order; a policy without a knob is its one point."""
    points: dict[str, list[FrontierPoint]] = {}
    for name, result in output.results.items():
        runs = output.frontier.get(name)
        if runs is None:
            points[name] = [
                FrontierPoint(None, None, result.slo_attainment, result.replica_seconds)
            ]
        else:
            points[name] = [
                FrontierPoint(KNOBS[name].name, value, r.slo_attainment, r.replica_seconds)
                for value, r in runs
            ]
    return points


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _count(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 2)


def summary_json(
    output: RunOutput,
    *,
    trace: dict[str, Any],
    params: SimParams,
    extra_params: dict[str, Any],
    slo_targets: Sequence[float] = DEFAULT_SLO_TARGETS,
) -> dict[str, Any]:
    """The run as JSON: trace, params, each policy at its default; with a frontier also
    ``lower_bound``, ``frontier`` and ``cost_at_attainment``."""
    summary: dict[str, Any] = {
        "trace": {
            **trace,
            "requests": output.workload.n_requests,
            "duration_seconds": output.workload.duration,
            "mean_rate_rps": round(output.workload.n_requests / output.workload.duration, 6),
        },
        "params": {
            **asdict(output.params or params),
            **extra_params,
            "model": output.model,
            "oracle_replica_seconds": round(output.plan.replica_seconds, 3),
        },
        "policies": {name: policy_summary(r, name) for name, r in output.results.items()},
    }
    if output.bounds:
        summary["params"]["lower_bound_solver"] = {
            attainment_key(level): {
                "block_seconds": b.block_seconds,
                "status": b.status,
                "solve_seconds": round(b.solve_seconds, 3),
            }
            for level, b in output.bounds.items()
        }
        summary["lower_bound"] = {
            attainment_key(level): bound_json(b.replica_seconds)
            for level, b in output.bounds.items()
        }
    if output.frontier:
        points = frontier_points(output)
        summary["frontier"] = {name: [p.as_json() for p in runs] for name, runs in points.items()}
        summary["cost_at_attainment"] = {}
        for name, runs in points.items():
            entry: dict[str, float | None] = {}
            for level in slo_targets:
                cost = cost_at_attainment(runs, level)
                entry[attainment_key(level)] = None if cost is None else round(cost, 3)
            summary["cost_at_attainment"][name] = entry
    return summary


__all__ = [
    "DEFAULT_SLO_TARGETS",
    "POLICY_NAMES",
    "REQUEST_MODEL_LIMIT",
    "RunOutput",
    "build_workload",
    "choose_model",
    "frontier_points",
    "plan_jobs",
    "policy_summary",
    "run_policies",
    "summary_json",
]
