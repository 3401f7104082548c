"""``make demo``: predictive vs reactive autoscaling of real Triton replicas, side by side.

One hour of a real trace with a clear burst (ServeGen m-large, ``loadtest/harness/data``) is
replayed time-compressed against real Triton replicas, twice, one run after the other so they
do not share the CPU:

1. ``tritonscale``: the HPA in ``manifests/examples/hpa/desired-replicas.yaml`` on the
   predictive ``triton_desired_replicas``;
2. ``hpa-queue-compute-ratio``: the HPA in ``queue-compute-ratio.yaml``, NVIDIA's reactive
   recipe on ``triton_queue_compute_ratio``.

In each run the replicas are Triton processes started and stopped by the replica manager,
``tritonscale serve`` finds them through its own pod discovery (a local Kubernetes pods API),
scrapes them and serves the external metrics API over HTTPS, and an HPA emulator running the
HPA object's spec (``policies/hpa.py``) reads that API and sets the replica count
(:mod:`loadtest.harness.closed_loop`). A live view shows the load, the forecast, the replicas,
the queue and the waits; at the end a side-by-side report, a PNG per run and, with
``--json``, the results. The same hour is then simulated with ``tritonscale simulate`` with the
same settings (printed, to rerun), so real and simulated stand side by side.

Examples::

    make demo
    make demo DEMO_ARGS="--duration 120 --json out.json"
    python -m loadtest.harness.demo --policies tritonscale --duration 90
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.harness.closed_loop import (
    ClusterTime,
    LoopResult,
    LoopRun,
    Sample,
    run_loop,
    stop_on_signals,
)
from loadtest.harness.hpa_manifest import HPAManifestError, load_hpa
from loadtest.harness.replay import plan_replay

REPO = Path(__file__).resolve().parents[2]
TRACE = Path(__file__).resolve().parent / "data" / "servegen_m-large_burst.tar.gz"
TRACE_PEAK_RPS = 523.3
"""The slice's busiest 600 s window, requests/s summed over its clients (data/README.md)."""
HPA_FILES = {
    "tritonscale": "desired-replicas.yaml",
    "hpa-queue-compute-ratio": "queue-compute-ratio.yaml",
}
DEFAULT_DURATION_S = 180.0
VIEW_EVERY_S = 40.0  # cluster seconds between two lines of the live view


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.harness.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    speed = p.add_mutually_exclusive_group()
    speed.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="real seconds per run; the hour is compressed to fit "
        f"(default {DEFAULT_DURATION_S:g})",
    )
    speed.add_argument("--time-scale", type=float, metavar="X", help="run X times faster")
    p.add_argument(
        "--policies",
        default=",".join(HPA_FILES),
        help=f"runs, in order, named as in tritonscale simulate ({', '.join(HPA_FILES)})",
    )
    p.add_argument(
        "--hpa",
        action="append",
        default=[],
        metavar="POLICY=FILE",
        help="run POLICY with another HorizontalPodAutoscaler YAML file",
    )
    p.add_argument(
        "--max-replicas",
        type=int,
        default=6,
        metavar="N",
        help="cap on the HPA objects' maxReplicas: Triton processes on this machine (6)",
    )
    p.add_argument(
        "--peak-replicas",
        type=float,
        default=4.0,
        metavar="N",
        help="scale the trace so its busiest window needs N replicas at full capacity (4)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=1,
        metavar="N",
        help="Triton's dynamic batching: batches of up to N, each taking N trace seconds, so a "
        "replica's capacity stays about 1 request per trace second (1: one at a time)",
    )
    p.add_argument(
        "--initial-replicas",
        type=int,
        default=2,
        metavar="N",
        help="ready replicas when the hour starts, for every policy (2: what its first "
        "minutes need)",
    )
    p.add_argument(
        "--balancer",
        choices=("random", "round-robin"),
        default="random",
        help="how the Service spreads connections (random: kube-proxy iptables)",
    )
    p.add_argument("--seed", type=int, default=1, help="arrival draws (1)")
    p.add_argument("--json", metavar="OUT", help="write the runs and the simulation as JSON")
    p.add_argument("--out", default="out/demo", metavar="DIR", help="PNGs and logs (out/demo)")
    p.add_argument(
        "--no-simulate", action="store_true", help="skip the tritonscale simulate comparison"
    )
    return p


def _policies(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Path]:
    files = {name: REPO / "manifests" / "examples" / "hpa" / f for name, f in HPA_FILES.items()}
    for entry in args.hpa:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            parser.error(f"--hpa {entry!r}: expected POLICY=FILE")
        files[name] = Path(path)
    chosen = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in files]
    if not chosen or unknown:
        parser.error(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; known: "
            f"{', '.join(files)} (or give --hpa POLICY=FILE)"
        )
    return {name: files[name] for name in chosen}


# --- live view --------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


class LiveView:
    """One line every ``every_s`` cluster seconds: load, forecast, replicas, queue, waits."""

    HEADER = (
        f"{'trace':>6} {'offered':>8} {'arrival':>8} {'forecast':>8} {'HPA':>4} {'ready':>5} "
        f"{'queue':>6} {'q-wait':>7} {'p99 wait':>9} {'fail':>5}"
    )
    UNITS = (
        f"{'min':>6} {'req/s':>8} {'req/s':>8} {'req/s':>8} {'want':>4} {'':>5} "
        f"{'req':>6} {'s':>7} {'s':>9} {'':>5}"
    )

    def __init__(self, every_s: float = VIEW_EVERY_S) -> None:
        self.every_s = every_s
        self._next = 0.0
        self._lines = 0
        self._failed = 0
        self._waits: list[float] = []

    def __call__(self, sample: Sample) -> None:
        self._failed += sample.failed
        if sample.wait_p99_s is not None:
            self._waits.append(sample.wait_p99_s)
        if sample.t < self._next:
            return
        self._next = sample.t + self.every_s
        if self._lines % 20 == 0:
            print(self.HEADER)
            print(self.UNITS)
        self._lines += 1
        served = sample.served
        wait = max(self._waits) if self._waits else None
        print(
            f"{sample.t / 60:6.1f} {sample.offered_rps:8.2f} "
            f"{_fmt(served['triton_arrival_rate']):>8} "
            f"{_fmt(served['triton_arrival_rate_forecast']):>8} {sample.desired:4d} "
            f"{sample.ready:5d} {_fmt(served['triton_queue_depth'], 0):>6} "
            f"{_fmt(served['triton_queue_time_seconds'], 1):>7} {_fmt(wait, 1):>9} "
            f"{self._failed:5d}",
            flush=True,
        )
        self._failed = 0
        self._waits = []


# --- report, simulation, plots -----------------------------------------------------------------


def simulate_command(
    clock: ClusterTime,
    rate_scale: float,
    seed: int,
    policies: Sequence[str],
    max_replicas: int,
    balancer: str,
    initial_replicas: int,
) -> list[str]:
    """``tritonscale simulate`` arguments for the same hour, settings and arrivals: each
    request queues at the replica ``balancer`` sends it to (per-replica queues, as the real
    loop's balancer does), and every request counts (no warm-up: the real runs score the whole
    hour from the same initial replicas)."""
    argv = [
        "--trace",
        str(TRACE.relative_to(REPO)) if TRACE.is_relative_to(REPO) else str(TRACE),
        "--capacity",
        f"{clock.capacity_rps:.6g}",
        "--slo",
        f"{clock.slo_s:g}",
        "--cold-start",
        f"{clock.cold_start_s:g}",
        "--sync-period",
        f"{clock.hpa_sync_s:g}",
        "--scrape-interval",
        f"{clock.scrape_s:g}",
        "--min-replicas",
        "1",
        "--max-replicas",
        str(max_replicas),
        "--initial-replicas",
        str(initial_replicas),
        "--rate-scale",
        f"{rate_scale:.6g}",
        "--seed",
        str(seed),
        "--model",
        "request",
        "--predictive-step",
        f"{clock.predictive_step_s:g}",
        "--scale-down-delay",
        f"{clock.scale_down_delay_s:g}",
        "--ratio-source",
        "tritonscale",
        "--rate-window",
        f"{clock.rate_window_s:g}",
        "--balancer",
        balancer,
        "--warm-up",
        "0",
        "--policy",
        ",".join(policies),
    ]
    return argv


def run_simulation(argv: list[str], workdir: Path) -> dict[str, Any] | None:
    """Run ``tritonscale simulate`` in this process; its JSON, or None if it failed."""
    from loadtest.simulator.cli import main as simulate_main

    out = workdir / "simulated.json"
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        code = simulate_main([*argv, "--json", str(out), "--workers", "1"])
    if code != 0:
        print(f"tritonscale simulate failed ({code}):\n{quiet.getvalue()}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def report(results: list[LoopResult], simulated: dict[str, Any] | None) -> str:
    """The side-by-side table: each run, and what the simulator predicted for it."""
    rows: list[tuple[str, ...]] = [("", *(r.summary["policy"] for r in results))]

    def row(label: str, cells: list[str]) -> None:
        rows.append((label, *cells))

    slo = results[0].run.clock.slo_s
    row(
        f"SLO attainment (wait <= {slo:g} s)",
        [_pct(r.summary["slo_attainment"]) for r in results],
    )
    row("replica-seconds", [f"{r.summary['replica_seconds']:,.0f}" for r in results])
    row("replicas max", [str(r.summary["replicas_max"]) for r in results])
    row(
        "requests sent / ok / late",
        [
            f"{r.summary['requests_sent']} / {r.summary['requests_ok']} / "
            f"{r.summary['requests_late']}"
            for r in results
        ],
    )
    row("Triton processes started", [str(r.summary["triton_processes_started"]) for r in results])
    row(
        "cold starts (s, min-max)",
        [
            f"{min(r.cold_starts_s):.0f}-{max(r.cold_starts_s):.0f}" if r.cold_starts_s else "-"
            for r in results
        ],
    )
    row("p99 wait (s)", [_p99_wait(r) for r in results])
    if simulated is not None:
        policies = simulated["policies"]
        row(
            "simulated: SLO attainment",
            [_pct(policies.get(r.run.policy, {}).get("slo_attainment")) for r in results],
        )
        row(
            "simulated: replica-seconds",
            [
                f"{policies[r.run.policy]['replica_seconds']:,.0f}"
                if r.run.policy in policies
                else "-"
                for r in results
            ],
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for index, cells in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _p99_wait(result: LoopResult) -> str:
    clock = result.run.clock
    service = clock.real(clock.batch_service_s)
    waits = [
        (r.done_s - r.send_s - service) * clock.time_scale
        for r in result.replay.load.records
        if r.ok and r.done_s is not None
    ]
    if not waits:
        return "-"
    waits.sort()
    return f"{waits[min(len(waits) - 1, int(0.99 * len(waits)))]:.1f}"


def plot(result: LoopResult, path: Path) -> None:
    """Load and forecast band, ready and desired replicas, queue wait against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result.samples
    clock = result.run.clock
    t = [s.t / 60 for s in samples]

    def series(metric: str) -> list[float]:
        return [math.nan if s.served[metric] is None else s.served[metric] for s in samples]  # type: ignore[misc]

    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    load, replicas, waits = axes
    arrival = series("triton_arrival_rate")
    forecast = series("triton_arrival_rate_forecast")
    load.plot(t, [s.offered_rps for s in samples], color="0.6", lw=0.8, label="offered (replay)")
    load.plot(t, arrival, color="C0", lw=1.2, label="arrival rate (served)")
    load.fill_between(
        t, arrival, forecast, color="C1", alpha=0.25, label="forecast band (to the upper bound)"
    )
    load.plot(t, forecast, color="C1", lw=0.8)
    load.set_ylabel("requests/s (trace time)")
    load.set_title(
        f"{result.run.policy}: {result.summary['slo_attainment'] * 100:.2f} % within the SLO, "
        f"{result.summary['replica_seconds']:,.0f} replica-s "
        f"(real run {clock.time_scale:g}x faster)"
    )
    replicas.step(t, [s.desired for s in samples], where="post", color="C3", label="desired (HPA)")
    replicas.step(
        t,
        [s.existing for s in samples],
        where="post",
        color="C2",
        lw=0.8,
        label="existing (incl. starting)",
    )
    replicas.step(t, [s.ready for s in samples], where="post", color="C0", label="ready")
    replicas.set_ylabel("replicas")
    waits.plot(
        t,
        series("triton_queue_time_seconds"),
        color="C4",
        lw=1.0,
        label="queue time (served, mean over the window)",
    )
    waits.plot(
        t,
        [math.nan if s.wait_p99_s is None else s.wait_p99_s for s in samples],
        color="C5",
        lw=0.8,
        label="request wait p99 (replay)",
    )
    waits.axhline(clock.slo_s, color="red", ls="--", lw=1, label=f"SLO {clock.slo_s:g} s")
    waits.set_yscale("symlog", linthresh=clock.slo_s)
    waits.set_ylabel("seconds (trace time)")
    waits.set_xlabel("trace time (min)")
    for axis in axes:
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _timeline(result: LoopResult) -> dict[str, Any]:
    """What happened when (trace seconds), for a closer look than the plot gives."""
    return {
        "policy": result.run.policy,
        "summary": result.summary,
        "cold_starts_s": [round(c, 1) for c in result.cold_starts_s],
        "samples": [
            {
                "t": round(s.t, 1),
                "offered_rps": round(s.offered_rps, 3),
                "desired": s.desired,
                "existing": s.existing,
                "ready": s.ready,
                "wait_p99_s": s.wait_p99_s,
                **s.served,
            }
            for s in result.samples
        ],
        "hpa": [
            {
                "t": round(r.t, 1),
                "values": r.values,
                "spec_replicas": r.spec_replicas,
                "desired": r.desired,
                "error": r.error,
            }
            for r in result.hpa
        ],
    }


# --- main ----------------------------------------------------------------------------------------


async def run_all(runs: list[LoopRun], workdir: Path) -> list[LoopResult]:
    results = []
    for index, run in enumerate(runs, start=1):
        print(
            f"\n=== run {index}/{len(runs)}: {run.policy} (HPA {Path(run.hpa.source).name}: "
            f"{run.hpa.metrics[0].name} {run.hpa.metrics[0].target.kind} "
            f"{run.hpa.metrics[0].target.target:g}) ===",
            flush=True,
        )
        started = time.monotonic()
        result = await run_loop(run, workdir, LiveView())
        print(
            f"run {run.policy} done in {time.monotonic() - started:.0f} s: "
            f"{json.dumps(result.summary)}",
            flush=True,
        )
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    files = _policies(args, parser)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json {args.json}: its directory does not exist")
    hpas = {}
    for name, path in files.items():
        try:
            hpas[name] = load_hpa(path).with_max_replicas(args.max_replicas)
        except HPAManifestError as err:
            parser.error(str(err))
    slice_s = 3600.0
    if args.time_scale is not None:
        time_scale = args.time_scale
    else:
        time_scale = slice_s / (args.duration or DEFAULT_DURATION_S)
    if not time_scale > 0:
        parser.error("--duration and --time-scale must be > 0")
    if args.max_batch < 1 or args.initial_replicas < 1:
        parser.error("--max-batch and --initial-replicas must be >= 1")
    clock = ClusterTime(
        time_scale=time_scale,
        max_batch=args.max_batch,
        batch_service_s=float(args.max_batch),
        # the adapter scrapes at most 10 times a second: above 20x the scrape interval grows
        # (in whole trace seconds, which the simulator's 1 s tick needs)
        scrape_s=max(ClusterTime.scrape_s, float(math.ceil(0.1 * time_scale - 1e-9))),
    )
    rate_scale = args.peak_replicas * clock.capacity_rps / TRACE_PEAK_RPS
    plan = plan_replay(TRACE, time_scale=time_scale, rate_scale=rate_scale, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tritonscale-demo-"))
    print(
        f"tritonscale closed-loop demo: one hour of {plan.trace} (ServeGen, a burst of 3.2x), "
        f"{len(plan.arrivals_s)} requests replayed {time_scale:g}x faster "
        f"({plan.duration_s:.0f} s per run), each policy on real Triton replicas "
        f"(model {clock.model.flag()}: {clock.capacity_rps_real:.1f} req/s per replica; "
        f"at most {args.max_replicas})."
    )
    print(f"time compression ({time_scale:g}x): setting, cluster s -> real s")
    for name, cluster, real in clock.table():
        print(f"  {name:28} {cluster:8.4g} -> {real:.4g}")
    print(f"logs, configs: {workdir}   plots: {out}/")
    runs = [
        LoopRun(
            name,
            hpa,
            clock,
            plan,
            initial_replicas=min(args.initial_replicas, hpa.spec.max_replicas),
            balancer=args.balancer,
            seed=args.seed,
        )
        for name, hpa in hpas.items()
    ]
    stop_on_signals()
    try:
        results = asyncio.run(run_all(runs, workdir))
    except KeyboardInterrupt:
        print("\ninterrupted: every Triton process and the adapter were stopped", file=sys.stderr)
        return 130
    simulated = None
    sim_argv = simulate_command(
        clock,
        rate_scale,
        args.seed,
        list(hpas),
        args.max_replicas,
        args.balancer,
        args.initial_replicas,
    )
    if not args.no_simulate:
        simulated = run_simulation(sim_argv, workdir)
    print("\n" + report(results, simulated))
    print(f"\nsimulated with: tritonscale simulate {shlex.join(sim_argv)}")
    for result in results:
        png = out / f"demo-{result.run.policy}.png"
        plot(result, png)
        timeline = out / f"demo-{result.run.policy}-timeline.json"
        timeline.write_text(json.dumps(_timeline(result)) + "\n", encoding="utf-8")
        print(f"plot: {png}  timeline: {timeline}")
    if args.json:
        body = {
            "runs": [r.summary for r in results],
            "simulated": None
            if simulated is None
            else [{"policy": name, **values} for name, values in simulated["policies"].items()],
            "simulate_command": "tritonscale simulate " + shlex.join(sim_argv),
            "settings": {
                "trace": str(TRACE.name),
                "time_scale": time_scale,
                "rate_scale": rate_scale,
                "seed": args.seed,
                "capacity_rps": clock.capacity_rps,
                "slo_seconds": clock.slo_s,
                "cold_start_seconds": clock.cold_start_s,
                "hpa_sync_period_seconds": clock.hpa_sync_s,
                "max_replicas": args.max_replicas,
                "initial_replicas": args.initial_replicas,
                "max_batch": args.max_batch,
                "balancer": args.balancer,
                "times_in": "cluster (trace) seconds",
            },
        }
        Path(args.json).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        print(f"json: {args.json}")
    problems = [(r.run.policy, r.served_zero[:3]) for r in results if r.served_zero]
    if problems:
        print(f"a 0 was served while load was offered: {problems}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
