"""Run several policies on one trace: workload preparation, the oracle, parallel runs, JSON.

The per-policy runs are independent, so they are spread over worker processes (fork: the
workload arrays are shared copy-on-write); a shared counter drives one tqdm bar on stderr.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from loadtest.simulator.controllers import (
    POLICY_NAMES,
    RatioPath,
    TritonscaleTuning,
    make_controller,
)
from loadtest.simulator.engine import PolicyResult, QueueModel, SimParams, Workload, simulate
from loadtest.simulator.oracle import OraclePlan, oracle_plan
from loadtest.simulator.traces import ArrivalTrace, RateTrace, Trace

REQUEST_MODEL_LIMIT = 2_000_000
"""``--model auto`` uses the per-request model up to this many requests, the fluid one above."""

PROGRESS_MIN_TICKS = 500_000
"""Show the progress bar when policies x ticks exceeds this (a run of a few seconds)."""


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
        workload.times = None
        workload.request_work = None
    return workload


@dataclass(frozen=True)
class RunOutput:
    """Everything one simulate invocation produced."""

    model: QueueModel
    workload: Workload
    plan: OraclePlan
    results: dict[str, PolicyResult]
    wall_seconds: float


# Worker state inherited through fork (not pickled per task).
_SHARED: dict[str, Any] = {}


def _run_one(name: str) -> PolicyResult:
    params: SimParams = _SHARED["params"]
    counter = _SHARED.get("counter")
    progress: Callable[[int], None] | None = None
    if counter is not None:

        def progress(ticks: int) -> None:
            with counter.get_lock():
                counter.value += ticks

    controller = make_controller(
        name,
        params,
        plan=_SHARED["plan"],
        initial_ready=_SHARED["initial"],
        tuning=_SHARED["tuning"],
        ratio_path=_SHARED["ratio_path"],
    )
    result = simulate(
        _SHARED["workload"], params, controller, _SHARED["model"], _SHARED["initial"], progress
    )
    result.waits = None  # do not ship per-request arrays back through the pipe
    return result


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
) -> RunOutput:
    """Simulate every policy in ``names`` (same workload, same initial replicas)."""
    started = time.perf_counter()
    plan = oracle_plan(
        workload.work,
        params.capacity_rps,
        params.slo_seconds,
        params.cold_start_seconds,
        workload.tick_seconds,
        params.min_replicas,
        params.max_replicas,
    )
    initial = params.initial_replicas if params.initial_replicas is not None else plan.initial
    initial = min(params.max_replicas, max(params.min_replicas, initial))
    total_ticks = workload.n_ticks * len(names)
    if show_progress is None:
        show_progress = total_ticks >= PROGRESS_MIN_TICKS
    if workers is None:
        workers = min(len(names), os.cpu_count() or 1)
    if total_ticks < 200_000:
        workers = 1
    _SHARED.clear()
    _SHARED.update(
        params=params,
        plan=plan,
        initial=initial,
        tuning=tuning or TritonscaleTuning(),
        ratio_path=ratio_path,
        workload=workload,
        model=model,
    )
    results: dict[str, PolicyResult] = {}
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
            for name in names:
                controller = make_controller(
                    name,
                    params,
                    plan=plan,
                    initial_ready=initial,
                    tuning=_SHARED["tuning"],
                    ratio_path=ratio_path,
                )
                callback = None if bar is None else _bar_callback(bar)
                results[name] = simulate(workload, params, controller, model, initial, callback)
        else:
            ctx = mp.get_context("fork")
            counter = ctx.Value("q", 0)
            _SHARED["counter"] = counter
            with ctx.Pool(workers) as pool:
                pending = pool.map_async(_run_one, list(names), chunksize=1)
                seen = 0
                while not pending.ready():
                    pending.wait(0.25)
                    if bar is not None:
                        now = counter.value
                        bar.update(now - seen)
                        seen = now
                for name, result in zip(names, pending.get(), strict=True):
                    results[name] = result
    finally:
        if bar is not None:
            bar.close()
        _SHARED.clear()
    return RunOutput(model, workload, plan, results, time.perf_counter() - started)


def _bar_callback(bar: Any) -> Callable[[int], None]:
    def progress(ticks: int) -> None:
        bar.update(ticks)

    return progress


def policy_summary(result: PolicyResult, oracle_replica_seconds: float) -> dict[str, Any]:
    """The JSON entry of one policy (numbers, NaN as null)."""
    ratio = result.replica_seconds / oracle_replica_seconds if oracle_replica_seconds > 0 else None
    return {
        "requests": result.requests,
        "slo_attainment": _finite(result.slo_attainment),
        "violating_requests": _count(result.violating_requests),
        "p99_queue_seconds": _finite(result.p99_queue_seconds),
        "replica_seconds": round(result.replica_seconds, 3),
        "oracle_replica_seconds": round(oracle_replica_seconds, 3),
        "cost_vs_oracle": None if ratio is None else round(ratio, 4),
        "scale_events": result.scale_events,
    }


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
) -> dict[str, Any]:
    oracle_rs = output.plan.replica_seconds
    return {
        "trace": {
            **trace,
            "requests": output.workload.n_requests,
            "duration_seconds": output.workload.duration,
            "mean_rate_rps": round(output.workload.n_requests / output.workload.duration, 6),
        },
        "params": {**asdict(params), **extra_params, "model": output.model},
        "policies": {
            name: policy_summary(result, oracle_rs) for name, result in output.results.items()
        },
    }


__all__ = [
    "POLICY_NAMES",
    "REQUEST_MODEL_LIMIT",
    "RunOutput",
    "build_workload",
    "choose_model",
    "policy_summary",
    "run_policies",
    "summary_json",
]
