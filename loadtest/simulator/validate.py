"""Validate the fluid queue model against the per-request model on short traces.

Runs every policy on the same arrivals with both models and prints, per trace and policy, SLO
attainment, p99 queue wait and replica-seconds of each, and their differences. Usage::

    python -m loadtest.simulator.validate [--capacity RPS] [--slo S] [--cold-start S] TRACE...

Each TRACE is ``PATH[:capacity]``; without a capacity the ``--capacity`` default is used.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loadtest.simulator.controllers import POLICY_NAMES
from loadtest.simulator.engine import BALANCERS, DEFAULT_BALANCER, SimParams
from loadtest.simulator.run import build_workload, run_policies
from loadtest.simulator.traces import crop, load_trace


@dataclass(frozen=True)
class Agreement:
    """Fluid minus request: attainment (percentage points), p99 (s), replica-seconds ratio."""

    trace: str
    policy: str
    attainment_request: float
    attainment_fluid: float
    p99_request: float
    p99_fluid: float
    replica_seconds_request: float
    replica_seconds_fluid: float

    @property
    def attainment_gap_pp(self) -> float:
        return 100.0 * (self.attainment_fluid - self.attainment_request)

    @property
    def cost_ratio(self) -> float:
        return self.replica_seconds_fluid / self.replica_seconds_request


def compare(
    path: str,
    params: SimParams,
    policies: Sequence[str] = POLICY_NAMES,
    seed: int = 0,
    window: tuple[float, float] | None = None,
) -> list[Agreement]:
    """Both models on the same arrivals of ``path`` (cropped to ``window`` seconds)."""
    trace = load_trace(path)
    if window is not None:
        trace = crop(trace, *window)
    workload = build_workload(trace, "request", np.random.default_rng(seed), params.tick_seconds)
    exact = run_policies(workload, params, policies, "request", workers=1, show_progress=False)
    fluid = run_policies(workload, params, policies, "fluid", workers=1, show_progress=False)
    rows = []
    for name in policies:
        r, f = exact.results[name], fluid.results[name]
        rows.append(
            Agreement(
                trace.name,
                name,
                r.slo_attainment,
                f.slo_attainment,
                r.p99_queue_seconds,
                f.p99_queue_seconds,
                r.replica_seconds,
                f.replica_seconds,
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.simulator.validate")
    parser.add_argument("traces", nargs="+", metavar="PATH[:capacity]")
    parser.add_argument("--capacity", type=float, default=1.0)
    parser.add_argument("--slo", type=float, default=5.0)
    parser.add_argument("--cold-start", type=float, default=60.0)
    parser.add_argument("--max-replicas", type=int, default=200)
    parser.add_argument("--window", metavar="START:END", help="crop every trace (seconds)")
    parser.add_argument("--balancer", default=DEFAULT_BALANCER, choices=BALANCERS)
    args = parser.parse_args(argv)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"$ python -m loadtest.simulator.validate {shown}")
    header = (
        f"{'trace':32s} {'policy':24s} {'SLO% req':>9s} {'SLO% fluid':>10s} {'gap pp':>7s} "
        f"{'p99 req':>8s} {'p99 fluid':>9s} {'cost fluid/req':>14s}"
    )
    print(header)
    worst_gap = 0.0
    worst_cost = 0.0
    for spec in args.traces:
        path, _, cap = spec.rpartition(":") if spec.rpartition(":")[0] else (spec, "", "")
        capacity = float(cap) if cap else args.capacity
        params = SimParams(
            capacity_rps=capacity,
            slo_seconds=args.slo,
            cold_start_seconds=args.cold_start,
            max_replicas=args.max_replicas,
            balancer=args.balancer,
        )
        window = None
        if args.window:
            start, _, end = args.window.partition(":")
            window = (float(start), float(end))
        for row in compare(path, params, window=window):
            worst_gap = max(worst_gap, abs(row.attainment_gap_pp))
            worst_cost = max(worst_cost, abs(row.cost_ratio - 1.0))
            print(
                f"{row.trace[:32]:32s} {row.policy:24s} {100 * row.attainment_request:9.3f} "
                f"{100 * row.attainment_fluid:10.3f} {row.attainment_gap_pp:7.3f} "
                f"{row.p99_request:8.2f} {row.p99_fluid:9.2f} {row.cost_ratio:14.4f}"
            )
    print(f"max |attainment gap| = {worst_gap:.3f} pp; max |cost ratio - 1| = {worst_cost:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
