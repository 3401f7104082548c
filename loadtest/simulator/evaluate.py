"""Goal evaluation: every development trace, D = 60 s and 180 s, every policy's frontier.

Usage::

    python -m loadtest.simulator.evaluate --traces DIR [--out DIR] [--only KEY] [--workers N]
        [extra tritonscale simulate flags]

``--traces`` (or ``$TRITONSCALE_TRACES``) is a directory holding the full public traces under
their original names (tests/data/README.md lists them and where to get them); a plain clone
ships only slices, so without it the command stops and says so. Each run is
one ``tritonscale simulate --frontier`` call (seed 1, so the whole evaluation is
deterministic), the same default configuration for every trace; lower bounds are cached in
``OUT/bounds`` and reused. Writes ``OUT/<run>.json``, ``OUT/<run>.png`` (frontiers with the
bound), ``OUT/<run>-timeline.png``, ``OUT/report.json`` and ``OUT/report.md`` (the tables that
go into BENCHMARKS.md), and prints them.

Goals (issue 8), per run, at the stated attainment A = 0.995:

* ``slo``: tritonscale at its default configuration reaches A;
* ``vs_reactive``: its replica-seconds <= 0.8 x the cheapest reactive policy's
  ``cost_at_attainment[A]`` (each reactive baseline at its best knob; met when no reactive
  baseline reaches A at all, reported as such);
* ``vs_bound``: its replica-seconds <= 1.3 x the lower bound at A.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.simulator.bound_interface import SOLVER, lower_bound
from loadtest.simulator.cli import format_table
from loadtest.simulator.cli import main as simulate_main
from loadtest.simulator.controllers import REACTIVE
from loadtest.simulator.engine import SimParams
from loadtest.simulator.frontier import (
    BoundCache,
    BoundResult,
    attainment_key,
    bound_json,
    scored_workload,
)
from loadtest.simulator.plot import plot_frontier
from loadtest.simulator.run import build_workload
from loadtest.simulator.traces import load_trace, scale_trace

TARGET = "0.995"
VS_REACTIVE = 0.8
VS_BOUND = 1.3


@dataclass(frozen=True)
class Case:
    """One trace with its capacity (req/s per replica) and SLO (s) choice."""

    key: str
    file: str
    capacity: float
    slo: float
    note: str


SLO_SERVICE_TIMES = 10.0
"""Every case's SLO is 10 mean service times (S = 10 / capacity). Behind a Kubernetes Service
each request waits in its own replica's queue; with an SLO of 1-2 service times (the cases
before issue 8, set for one shared queue) no policy reaches 99.5 % short of keeping replicas
nearly idle (measured: BENCHMARKS.md), so the SLO is stated where per-replica queueing is a
cost, not the whole story. ServeGen keeps its 2 s (already 10 service times)."""


def _case(key: str, file: str, capacity: float, note: str) -> Case:
    return Case(key, file, capacity, round(SLO_SERVICE_TIMES / capacity, 6), note)


CASES = (
    _case(
        "azure-conv",
        "AzureLLMInferenceTrace_conv_2023.csv",
        1.0,
        "mean 5.5 req/s; service time = work s (mean 1 s, SCV 0.35); SLO 10 s",
    ),
    _case(
        "mooncake-conv",
        "mooncake_conversation_trace.jsonl",
        0.5,
        "mean 3.4 req/s, bursty; mean service 2 s (SCV 1.3); SLO 20 s",
    ),
    _case(
        "servegen-m-large",
        "servegen_client_traces_m-large.tar.xz",
        5.0,
        "14 days, mean 196 req/s (peak ~580); service 0.2 s; SLO 2 s; fluid model",
    ),
    _case(
        "alibaba-lora",
        "alibaba_GenTD26_lora_request_trace.csv",
        1 / 28.67,
        "23 days, 0.8 req/min, real exec times (mean 28.7 s, SCV 0.53); SLO 287 s",
    ),
    _case(
        "mooncake-synthetic",
        "mooncake_synthetic_trace.jsonl",
        0.5,
        "Poisson control, 3.9 req/s; mean service 2 s; SLO 20 s",
    ),
)


def goal_check(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals on one run's JSON (module docstring)."""
    policies = summary["policies"]
    ts = policies.get("tritonscale")
    bound = summary.get("lower_bound", {}).get(TARGET)
    costs = summary.get("cost_at_attainment", {})
    if ts is None or ts["slo_attainment"] is None:
        return {}
    reached = {
        name: costs[name][TARGET]
        for name in REACTIVE
        if name in costs and costs[name].get(TARGET) is not None
    }
    cheapest = min(reached, key=lambda n: reached[n]) if reached else None
    cost = ts["replica_seconds"]
    vs_reactive = None if cheapest is None else cost / reached[cheapest]
    vs_bound = None if not bound else cost / bound
    return {
        "slo_attainment": ts["slo_attainment"],
        "slo_ok": ts["slo_attainment"] >= float(TARGET),
        "cheapest_reactive": cheapest,
        "vs_reactive": vs_reactive,
        "vs_reactive_ok": vs_reactive is None or vs_reactive <= VS_REACTIVE,
        "vs_bound": vs_bound,
        "vs_bound_ok": vs_bound is not None and vs_bound <= VS_BOUND,
        "tritonscale_cost_at_attainment": costs.get("tritonscale", {}).get(TARGET),
    }


def goal_row(name: str, check: dict[str, Any]) -> str:
    """One markdown row: run | attainment | x cheapest reactive | x bound."""
    if not check:
        return f"| {name} | n/a | n/a | n/a |"
    att = f"{100 * check['slo_attainment']:.2f} % " + ("met" if check["slo_ok"] else "MISSED")
    if check["vs_reactive"] is None:
        reactive = "met: no reactive baseline reaches 99.5 %"
    else:
        reactive = f"{check['vs_reactive']:.2f}x {check['cheapest_reactive']} " + (
            "met" if check["vs_reactive_ok"] else "MISSED"
        )
    if check["vs_bound"] is None:
        bound = "no bound"
    else:
        bound = f"{check['vs_bound']:.2f}x " + ("met" if check["vs_bound_ok"] else "MISSED")
    return f"| {name} | {att} | {reactive} | {bound} |"


def cost_table(summary: dict[str, Any]) -> list[str]:
    """Markdown: each policy's cost at each attainment level, in replica-hours and x bound."""
    bound = summary.get("lower_bound", {})
    levels = list(bound)
    lines = [
        "| policy | role | default: SLO met / replica-h | "
        + " | ".join(f"@{100 * float(a):g} % (x bound)" for a in levels)
        + " |",
        "|---|---|---|" + "---|" * len(levels),
    ]
    for name, entry in summary["policies"].items():
        att = entry["slo_attainment"]
        default = (
            "n/a" if att is None else f"{100 * att:.3f} % / {entry['replica_seconds'] / 3600:.1f}"
        )
        cells = []
        for level in levels:
            cost = summary.get("cost_at_attainment", {}).get(name, {}).get(level)
            if cost is None:
                cells.append("never")
            elif bound[level] is None:
                cells.append(f"{cost / 3600:.1f} (no bound)")
            else:
                cells.append(f"{cost / 3600:.1f} ({cost / bound[level]:.2f}x)")
        lines.append(f"| {name} | {entry['role']} | {default} | " + " | ".join(cells) + " |")
    lines.append(
        "| lower bound | | | "
        + " | ".join(
            "unattainable" if bound[level] is None else f"{bound[level] / 3600:.1f}"
            for level in levels
        )
        + " |"
    )
    return lines


def rebound(path: Path, cache: Path, plot: Path) -> None:
    """Recompute the lower bound of a finished run (same trace, seed and parameters) and write
    it into its JSON and frontier plot; the policies' results are kept."""
    summary = json.loads(path.read_text())
    run = summary["params"]
    fields = {f.name for f in dataclasses.fields(SimParams)}
    params = SimParams(**{k: v for k, v in run.items() if k in fields})
    trace = load_trace(summary["trace"]["path"], summary["trace"]["format"])
    rng = np.random.default_rng(run["seed"])
    trace = scale_trace(trace, time_scale=run["time_scale"], rate_scale=run["rate_scale"], rng=rng)
    workload = build_workload(trace, run["model"], rng, params.tick_seconds)
    scored = scored_workload(workload, params)
    levels = [float(level) for level in run["slo_targets"]]
    store = BoundCache(cache)
    bounds: dict[float, BoundResult] = {}
    missing = []
    for level in levels:
        hit = store.get(store.key(scored, params, level, SOLVER))
        if hit is None:
            missing.append(level)
        else:
            bounds[level] = hit
    if missing:
        for level, result in lower_bound(scored, params, missing).items():
            store.put(store.key(scored, params, level, SOLVER), result)
            bounds[level] = result
    summary["lower_bound"] = {
        attainment_key(level): bound_json(bounds[level].replica_seconds) for level in levels
    }
    summary["params"]["lower_bound_solver"] = {
        attainment_key(level): {
            "block_seconds": bounds[level].block_seconds,
            "status": bounds[level].status,
            "solve_seconds": round(bounds[level].solve_seconds, 3),
        }
        for level in levels
    }
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    title = (
        f"{summary['trace']['name']}: D={params.cold_start_seconds:g} s, "
        f"SLO={params.slo_seconds:g} s, {params.balancer}"
    )
    plot_frontier(summary, plot, title)


TRACES_ENV = "TRITONSCALE_TRACES"
"""The environment variable the tests read the full traces from, used here as the default."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.simulator.evaluate",
        description="Every development trace, two cold starts, every policy's frontier and "
        "the lower bound (BENCHMARKS.md).",
    )
    parser.add_argument(
        "--traces",
        metavar="DIR",
        default=os.environ.get(TRACES_ENV) or None,
        help=f"directory of the full public traces (default ${TRACES_ENV}); their names: "
        f"{', '.join(c.file for c in CASES)}",
    )
    parser.add_argument("--out", default="sim-results", metavar="DIR")
    parser.add_argument(
        "--only", action="append", help=f"case key(s) to run: {', '.join(c.key for c in CASES)}"
    )
    parser.add_argument("--cold-starts", default="60,180")
    parser.add_argument(
        "--rebound",
        action="store_true",
        help="keep each run's policy results (OUT/<run>.json) and compute only the lower "
        "bound again (after the bound changed); runs without a JSON are simulated",
    )
    args, extra = parser.parse_known_args(argv)
    if not args.traces:
        parser.error(
            f"--traces DIR is required: a directory holding the full public traces "
            f"(tests/data/README.md says which and where from), or set {TRACES_ENV}"
        )
    if not Path(args.traces).is_dir():
        parser.error(f"--traces {args.traces}: not a directory")
    found = [c for c in CASES if (Path(args.traces) / c.file).exists()]
    if not found:
        parser.error(
            f"--traces {args.traces} holds none of the traces: {', '.join(c.file for c in CASES)}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    goals: list[str] = [
        "| run | tritonscale attainment (goal 99.5 %) | cost vs cheapest reactive at 99.5 % "
        "(goal <= 0.8x) | cost vs lower bound at 99.5 % (goal <= 1.3x) |",
        "|---|---|---|---|",
    ]
    tables: list[str] = []
    for case in CASES:
        if args.only and case.key not in args.only:
            continue
        path = Path(args.traces) / case.file
        if not path.exists():
            print(f"skip {case.key}: {path} not found", file=sys.stderr)
            continue
        for d in (float(x) for x in args.cold_starts.split(",")):
            name = f"{case.key}-D{d:g}"
            cmd = [
                "--trace",
                str(path),
                "--capacity",
                f"{case.capacity:.6g}",
                "--slo",
                f"{case.slo:g}",
                "--cold-start",
                f"{d:g}",
                "--max-replicas",
                "200",
                "--policy",
                "all",
                "--frontier",
                "--seed",
                "1",
                "--bound-cache",
                str(out / "bounds"),
                "--json",
                str(out / f"{name}.json"),
                "--plot",
                str(out / f"{name}.png"),
                *extra,
            ]
            print(f"[{name}] running tritonscale simulate ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            if args.rebound and (out / f"{name}.json").exists():
                rebound(out / f"{name}.json", out / "bounds", out / f"{name}.png")
            else:
                code = simulate_main(cmd)
                if code != 0:
                    return code
            wall = time.perf_counter() - started
            summary = json.loads((out / f"{name}.json").read_text())
            check = goal_check(summary)
            report[name] = {
                "summary": summary,
                "goal": check,
                "wall_seconds": wall,
                "command": "tritonscale simulate " + shlex.join(cmd),
                "note": case.note,
            }
            goals.append(goal_row(name, check))
            tables += [
                f"#### {name} ({case.note}); wall {wall:.0f} s",
                "",
                *cost_table(summary),
                "",
            ]
            print(f"\n### {name} ({case.note}); wall {wall:.1f} s")
            print("```\n" + report[name]["command"] + "\n```")
            print(format_table(summary))
            print(goal_row(name, check))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = "\n".join(["### Goals", "", *goals, "", "### Cost at attainment", "", *tables])
    (out / "report.md").write_text(markdown + "\n", encoding="utf-8")
    print("\n" + markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
