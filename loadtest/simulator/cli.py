"""``tritonscale simulate``: replay a trace against the autoscaling policies in closed loop.

Example::

    tritonscale simulate --trace AzureLLMInferenceTrace_conv_2023.csv --capacity 1 --slo 5 \\
        --cold-start 120 --policy all --frontier --json out.json --plot out.png

Exit codes: 0 success, 2 bad input (flag, trace file, output path).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from loadtest.simulator.bound_interface import SOLVER, lower_bound
from loadtest.simulator.controllers import POLICY_NAMES, RatioPath, TritonscaleTuning
from loadtest.simulator.engine import BALANCERS, DEFAULT_BALANCER, SimParams, check_number
from loadtest.simulator.frontier import BoundCache
from loadtest.simulator.run import (
    DEFAULT_SLO_TARGETS,
    build_workload,
    choose_model,
    run_policies,
    summary_json,
)
from loadtest.simulator.traces import FORMATS, TraceError, detect_format, load_trace, scale_trace
from policies.forecast import FORECASTER_NAMES
from policies.predictive import settings_default

PROG = "tritonscale simulate"

WARM_UP_MARGIN = 300.0
"""Default warm-up beyond one cold start (s): every policy starts from the same replicas, and
any of them needs a cold start plus a few sync periods to reach its own level; 5 minutes covers
the HPA's default scale-up limits (x2 or +4 per 15 s) from 1 to 200 replicas with margin."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(
    flag: str,
    kind: type[int] | type[float],
    minimum: float,
    *,
    strict: bool,
    maximum: float | None = None,
) -> Callable[[str], float]:
    """An argparse ``type``: parse ``kind`` and check the bounds; errors name ``flag``."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        try:
            check_number(flag, value, minimum, strict=strict, maximum=maximum)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description=(
            "Closed-loop simulation of autoscaling policies on a request trace: replicas with a "
            "per-replica capacity, a FIFO queue, cold start, the adapter's scrape, the HPA's "
            "exact algorithm and sync period. Prints a table; writes JSON and a plot on request."
        ),
    )
    p.add_argument("--trace", required=True, metavar="FILE", help="trace file (or directory)")
    p.add_argument(
        "--format", default="auto", choices=("auto", *FORMATS), help="trace format (auto)"
    )
    p.add_argument(
        "--policy",
        default="all",
        metavar="NAME[,NAME...]|all",
        help=f"policies to compare: {', '.join(POLICY_NAMES)} (default all)",
    )
    p.add_argument(
        "--capacity",
        required=True,
        type=_number("--capacity", float, 0, strict=True),
        metavar="RPS",
        help="requests/s one replica serves (work 1)",
    )
    p.add_argument(
        "--slo",
        default=settings_default("slo_seconds"),
        type=_number("--slo", float, 0, strict=True),
        metavar="S",
        help="queue-wait objective per request, seconds (default: the service's slo_seconds, "
        "%(default)g)",
    )
    p.add_argument(
        "--cold-start",
        default=settings_default("cold_start_seconds"),
        type=_number("--cold-start", float, 0, strict=False),
        metavar="S",
        help="scale-up to Ready, seconds (default: the service's cold_start_seconds, 120)",
    )
    p.add_argument(
        "--sync-period",
        default=settings_default("hpa_sync_period_seconds"),
        type=_number("--sync-period", float, 0, strict=True),
        metavar="S",
        help="HPA sync period, seconds (%(default)g)",
    )
    p.add_argument(
        "--scrape-interval",
        default=1.0,
        type=_number("--scrape-interval", float, 0, strict=True),
        metavar="S",
        help="adapter scrape interval, seconds (1)",
    )
    p.add_argument(
        "--min-replicas",
        default=settings_default("min_replicas"),
        type=_number("--min-replicas", int, 0, strict=False),
        metavar="N",
        help="(%(default)d)",
    )
    p.add_argument(
        "--max-replicas",
        default=settings_default("max_replicas"),
        type=_number("--max-replicas", int, 0, strict=False),
        metavar="N",
        help="(%(default)d)",
    )
    p.add_argument(
        "--ratio-source",
        choices=("prometheus", "tritonscale"),
        default="prometheus",
        help="where hpa-queue-compute-ratio reads the ratio: NVIDIA's Prometheus recipe "
        "(default) or tritonscale's API (every --scrape-interval over --rate-window)",
    )
    p.add_argument(
        "--rate-window",
        type=_number("--rate-window", float, 0, strict=True),
        default=5.0,
        metavar="S",
        help="tritonscale's rate window, seconds (5): the arrival rates the predictive "
        "policy steps on are means over it, and so is the ratio of --ratio-source tritonscale",
    )
    p.add_argument(
        "--time-scale",
        default=1.0,
        type=_number("--time-scale", float, 0, strict=True),
        metavar="X",
        help="replay X times faster (1)",
    )
    p.add_argument(
        "--rate-scale",
        default=1.0,
        type=_number("--rate-scale", float, 0, strict=True),
        metavar="X",
        help="multiply the arrival rate by X (1)",
    )
    p.add_argument(
        "--balancer",
        default=DEFAULT_BALANCER,
        choices=BALANCERS,
        help="where requests wait: random (a Kubernetes Service: kube-proxy iptables, one random "
        "ready pod per request), round-robin (IPVS rr), least-outstanding (an L7 proxy, power "
        "of two choices), shared (one FIFO for all replicas, perfect balancing) (%(default)s)",
    )
    p.add_argument(
        "--initial-replicas",
        type=_number("--initial-replicas", int, 0, strict=False),
        metavar="N",
        help="ready replicas every policy starts with (default: the first 10 minutes' load at "
        "50 %% utilisation, loadtest.simulator.engine.initial_replicas_for)",
    )
    p.add_argument(
        "--warm-up",
        type=_number("--warm-up", float, 0, strict=False),
        metavar="S",
        help="requests arriving and replica-seconds billed in the first S seconds are not "
        f"scored, for every policy alike (default: cold start + {WARM_UP_MARGIN:g})",
    )
    p.add_argument("--seed", default=0, type=int, metavar="N", help="seed of every random draw (0)")
    p.add_argument(
        "--model",
        default="auto",
        choices=("auto", "request", "fluid"),
        help="queue model: per-request, fluid, or auto by trace size (auto)",
    )
    p.add_argument(
        "--frontier",
        action="store_true",
        help="sweep each policy's main knob (grids in loadtest/simulator/controllers.py KNOBS) "
        "and compute the lower bound: the JSON gains lower_bound, frontier, cost_at_attainment",
    )
    p.add_argument(
        "--slo-target",
        default=",".join(f"{a:g}" for a in DEFAULT_SLO_TARGETS),
        metavar="A[,A...]",
        help="attainment levels of the lower bound and of cost_at_attainment (%(default)s)",
    )
    p.add_argument(
        "--bound-cache",
        metavar="DIR",
        help="keep lower bounds in DIR, reused when trace and parameters are the same",
    )
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="with --frontier: the SLO-cost frontiers and the bound; also (or else) "
        "OUT-timeline.png: load, replicas and queue over time",
    )
    p.add_argument(
        "--workers",
        type=_number("--workers", int, 0, strict=False),
        metavar="N",
        help="processes for the policies (default: CPU count)",
    )
    tuning = p.add_argument_group("tritonscale tuning (policies.predictive.PredictiveSettings)")
    defaults = TritonscaleTuning()
    tuning.add_argument(
        "--slo-attainment",
        type=_number("--slo-attainment", float, 0, strict=True, maximum=1),
        default=defaults.slo_attainment,
        metavar="A",
        help="the share of requests that must meet --slo, stated to tritonscale, which "
        f"calibrates its utilisation and headroom to it ({defaults.slo_attainment:g})",
    )
    tuning.add_argument(
        "--forecaster",
        default=defaults.forecaster,
        choices=FORECASTER_NAMES,
        help=f"({defaults.forecaster})",
    )
    tuning.add_argument(
        "--predictive-step",
        type=_number("--predictive-step", float, 0, strict=True),
        metavar="S",
        help="policy step, seconds (default: --sync-period)",
    )
    tuning.add_argument(
        "--scale-down-delay",
        type=_number("--scale-down-delay", float, 0, strict=False),
        default=defaults.scale_down_delay_seconds,
        metavar="S",
        help=f"scale_down_delay_seconds ({defaults.scale_down_delay_seconds:g})",
    )
    tuning.add_argument(
        "--hpa-scale-down-stabilization",
        type=_number("--hpa-scale-down-stabilization", int, 0, strict=False),
        default=defaults.hpa_scale_down_stabilization_seconds,
        metavar="S",
        help="the tritonscale HPA's behavior.scaleDown.stabilizationWindowSeconds"
        f" ({defaults.hpa_scale_down_stabilization_seconds})",
    )
    return p


def _policies(text: str) -> list[str]:
    if text.strip() == "all":
        return list(POLICY_NAMES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--policy needs at least one name")
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown:
        raise ValueError(
            f"--policy: unknown {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(POLICY_NAMES)} or all"
        )
    return list(dict.fromkeys(names))


def _slo_targets(text: str) -> list[float]:
    try:
        levels = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--slo-target: {text!r} is not a list of numbers") from None
    if not levels or not all(0.0 < a < 1.0 for a in levels):
        raise ValueError(f"--slo-target levels must be in (0, 1), got {text!r}")
    return levels


def _check_output(flag: str, path: str | None) -> None:
    if path is None:
        return
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: directory {parent} does not exist")


def format_table(summary: dict[str, Any]) -> str:
    """Each policy at its default knob; with a frontier, its cost at each attainment level as a
    multiple of the lower bound ("-" where its frontier never reaches the level)."""
    bound = summary.get("lower_bound", {})
    costs = summary.get("cost_at_attainment", {})
    levels = list(bound)
    header = ["policy", "role", "SLO met", "violating", "p99 wait s", "replica-h", "events"]
    header += [f"@{100 * float(a):g}% x bound" for a in levels]
    rows: list[tuple[str, ...]] = [tuple(header)]
    for name, r in summary["policies"].items():
        att = r["slo_attainment"]
        p99 = r["p99_queue_seconds"]
        row: list[str] = [
            name,
            r["role"],
            "n/a" if att is None else f"{100 * att:.3f}%",
            f"{r['violating_requests']:.0f}",
            "inf" if p99 is None else f"{p99:.2f}",
            f"{r['replica_seconds'] / 3600:.1f}",
            str(r["scale_events"]),
        ]
        for level in levels:
            cost = costs.get(name, {}).get(level)
            row.append("-" if cost is None or not bound[level] else f"{cost / bound[level]:.2f}")
        rows.append(tuple(row))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, cells_in in enumerate(rows):
        row = list(cells_in)
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])] + [
            c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if bound:
        lines.append(
            "lower bound (replica-h): "
            + ", ".join(
                f"{100 * float(a):g}%: " + ("unattainable" if v is None else f"{v / 3600:.2f}")
                for a, v in bound.items()
            )
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        names = _policies(args.policy)
        params = SimParams(
            capacity_rps=args.capacity,
            slo_seconds=args.slo,
            cold_start_seconds=args.cold_start,
            sync_period_seconds=args.sync_period,
            scrape_interval_seconds=args.scrape_interval,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            balancer=args.balancer,
            seed=args.seed,
            initial_replicas=args.initial_replicas,
            warm_up_seconds=(
                args.cold_start + WARM_UP_MARGIN if args.warm_up is None else args.warm_up
            ),
        )
        ratio_path = RatioPath(args.ratio_source, args.rate_window)
        params.ticks(args.rate_window, "--rate-window")
        tuning = TritonscaleTuning(
            step_seconds=args.predictive_step,
            forecaster=args.forecaster,
            slo_attainment=args.slo_attainment,
            scale_down_delay_seconds=args.scale_down_delay,
            hpa_scale_down_stabilization_seconds=args.hpa_scale_down_stabilization,
            rate_window_seconds=args.rate_window,
        )
        slo_targets = _slo_targets(args.slo_target)
        if args.predictive_step is not None:
            params.ticks(args.predictive_step, "--predictive-step")
        _check_output("--json", args.json)
        _check_output("--plot", args.plot)
    except ValueError as err:
        parser.error(str(err))
    try:
        fmt = detect_format(args.trace) if args.format == "auto" else args.format
        trace = load_trace(args.trace, fmt)
    except TraceError as err:
        parser.error(str(err))
    rng = np.random.default_rng(args.seed)
    trace = scale_trace(trace, time_scale=args.time_scale, rate_scale=args.rate_scale, rng=rng)
    model = choose_model(trace, args.model)
    workload = build_workload(trace, model, rng, params.tick_seconds)
    if workload.n_requests == 0:
        parser.error(f"{args.trace}: empty trace after scaling (no requests)")
    output = run_policies(
        workload,
        params,
        names,
        model,
        tuning=tuning,
        ratio_path=ratio_path,
        workers=args.workers,
        frontier=args.frontier,
        slo_targets=slo_targets,
        bound=lower_bound if args.frontier else None,
        bound_cache=BoundCache(Path(args.bound_cache) if args.bound_cache else None),
        bound_name=SOLVER,
    )
    summary = summary_json(
        output,
        trace={"path": str(args.trace), "format": fmt, "name": trace.name},
        params=params,
        extra_params={
            "policies": names,
            "seed": args.seed,
            "time_scale": args.time_scale,
            "rate_scale": args.rate_scale,
            "slo_targets": slo_targets,
            "ratio_source": args.ratio_source,
            "rate_window_seconds": args.rate_window,
            "tritonscale": {
                "step_seconds": args.predictive_step or args.sync_period,
                "forecaster": args.forecaster,
                "slo_attainment": args.slo_attainment,
                "scale_down_delay_seconds": args.scale_down_delay,
                "hpa_scale_down_stabilization_seconds": args.hpa_scale_down_stabilization,
                "hpa_scale_up_tolerance": tuning.scale_up_tolerance,
            },
        },
        slo_targets=slo_targets,
    )
    print(
        f"{trace.name}: {workload.n_requests} requests over {workload.duration / 3600:.2f} h "
        f"({model} model, {output.wall_seconds:.1f} s)"
    )
    print(format_table(summary))
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if args.plot:
            from loadtest.simulator.plot import plot_frontier, plot_run

            title = f"{trace.name}: D={args.cold_start:g} s, SLO={args.slo:g} s, {args.balancer}"
            plot = Path(args.plot)
            plot_run(output, plot.with_name(f"{plot.stem}-timeline{plot.suffix}"), title)
            if args.frontier:
                plot_frontier(summary, plot, title)
    except OSError as err:
        print(f"{PROG}: error: cannot write output: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
