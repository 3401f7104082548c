"""The fair simulator's changes, before and after (issue 8), on the evaluation's short traces.

Usage::

    python -m loadtest.bench.fair_simulator --traces DIR [--only KEY] [--cold-start 60]

Each row is one ``tritonscale simulate`` run of every policy at its default knob (seed 1,
per-replica queues behind a random balancer, the evaluation's capacity and SLO). Two changes
are measured here (the balancer has its own table in BENCHMARKS.md):

* **signal paths**: ``ideal`` runs the same simulation with every Prometheus-side interval set
  to the simulator's tick (DCGM collects, Prometheus scrapes and the recording rule evaluates
  every second, rates over 2 s: GPU utilisation and NVIDIA's ratio seen within a tick,
  as before issue 8); ``real`` is the simulator as shipped (DCGM 30 s, scrape 15 s, rule 6 s,
  ``rate``/``avg_over_time`` over 1 m).
* **billing of draining replicas**: billing does not feed back into any decision, so the
  "before" cost of the same run is exactly ``replica_seconds - drain_seconds``; shown beside.

The interval constants are module attributes of ``loadtest.simulator.controllers``; this
benchmark sets them in its own process (``--workers 1``) and restores them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from loadtest.simulator import controllers
from loadtest.simulator.cli import main as simulate_main
from loadtest.simulator.evaluate import CASES, TRACES_ENV

IDEAL_PATHS: dict[str, float | int] = {
    "DCGM_COLLECT_SECONDS": 1,
    "DCGM_COLLECT_PHASE": 0,
    "PROMETHEUS_SCRAPE_SECONDS": 1,
    "PROMETHEUS_SCRAPE_PHASE": 0,
    "RECORDING_RULE_SECONDS": 1,
    "RECORDING_RULE_PHASE": 0,
    "RATE_RANGE_SECONDS": 2.0,
}
SHORT = ("azure-conv", "mooncake-conv", "mooncake-synthetic")


@contextlib.contextmanager
def signal_paths(mode: str) -> Iterator[None]:
    """``real``: as shipped; ``ideal``: every Prometheus-side interval one tick (no lag)."""
    saved = {name: getattr(controllers, name) for name in IDEAL_PATHS}
    try:
        if mode == "ideal":
            for name, value in IDEAL_PATHS.items():
                setattr(controllers, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(controllers, name, value)


def simulate(
    trace: Path, capacity: float, slo: float, cold_start: float, extra: Sequence[str] = ()
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run.json"
        code = simulate_main(
            [*extra,
                "--trace", str(trace), "--capacity", str(capacity), "--slo", str(slo),
                "--cold-start", str(cold_start), "--max-replicas", "200", "--policy", "all",
                "--seed", "1", "--workers", "1", "--json", str(out),
            ]
        )  # fmt: skip
        if code != 0:
            raise SystemExit(f"simulate failed on {trace} (exit {code})")
        result: dict[str, Any] = json.loads(out.read_text())
    return result


def _percent(share: float | None) -> str:
    """An attainment as a percentage; '-' when no request was scored (never 0)."""
    return "-" if share is None else f"{share * 100:.2f} %"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.fair_simulator")
    parser.add_argument("--traces", default=os.environ.get(TRACES_ENV) or None, metavar="DIR")
    parser.add_argument("--only", action="append", help=f"case key(s): {', '.join(SHORT)}")
    parser.add_argument("--cold-start", type=float, default=60.0)
    parser.add_argument(
        "--warm-up", metavar="SECONDS", help="passed to simulate (default: simulate's own)"
    )
    args = parser.parse_args(argv)
    if not args.traces or not Path(args.traces).is_dir():
        parser.error(f"--traces DIR (or ${TRACES_ENV}): the directory of the full public traces")
    rows = [
        "| trace | policy | ideal paths: SLO met / replica-h | real paths: SLO met / replica-h "
        "| real, draining not billed: replica-h | drain share |",
        "|---|---|---|---|---|---|",
    ]
    for case in CASES:
        if case.key not in (args.only or SHORT):
            continue
        trace = Path(args.traces) / case.file
        if not trace.exists():
            parser.error(f"{trace}: not found (tests/data/README.md says where it comes from)")
        runs = {}
        for mode in ("ideal", "real"):
            with signal_paths(mode):
                runs[mode] = simulate(
                    trace,
                    case.capacity,
                    case.slo,
                    args.cold_start,
                    ("--warm-up", args.warm_up) if args.warm_up is not None else (),
                )["policies"]
        for index, (name, real) in enumerate(runs["real"].items()):
            ideal = runs["ideal"][name]
            billed = real["replica_seconds"]
            drain = real.get("drain_seconds", 0.0)
            rows.append(
                f"| {case.key if index == 0 else ''} | {name} "
                f"| {_percent(ideal['slo_attainment'])} / {ideal['replica_seconds'] / 3600:.1f} "
                f"| {_percent(real['slo_attainment'])} / {billed / 3600:.1f} "
                f"| {(billed - drain) / 3600:.1f} | {drain / billed * 100 if billed else 0:.2f} % |"
            )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
