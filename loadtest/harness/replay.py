"""``tritonscale replay``: open-loop replay of a trace against a Triton endpoint.

Reads a trace in any format ``tritonscale simulate`` reads (:mod:`loadtest.simulator.traces`),
optionally crops it (``--start``/``--end``, trace seconds), compresses time (``--time-scale X``:
X times faster) and scales the rate (``--rate-scale``), draws the arrivals of rate traces with
a seed, and sends each request at its time with tritonclient's asyncio client, whether or not
earlier ones finished (:func:`loadtest.harness.loadgen.run_arrivals`).

Nothing is dropped silently: a request sent more than ``--late-after`` seconds behind its
schedule is counted as late (and still sent and measured), an arrival that finds
``--max-in-flight`` requests outstanding is counted as not sent, and the report says how far
behind the schedule ran (p99 and max lag). Per-request latency and errors go to ``--json``;
progress goes to stderr (a bar on a terminal, a line every 10 s otherwise).

Example (the demo's burst slice, 20x faster, against the demo's balancer)::

    tritonscale replay --trace loadtest/harness/data/servegen_m-large_burst.tar.gz \\
        --url 127.0.0.1:8000 --model resnet --time-scale 20 --rate-scale 0.007 --json out.json

HTTP is the default protocol here, with a new connection per request, so that a balancer in
front of several replicas spreads requests as a Kubernetes Service spreads connections
(``--protocol grpc`` multiplexes everything on one connection, i.e. one replica).
Exit codes: 0 every request succeeded, 1 some failed or were not sent, 2 bad input or an
unreachable server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from loadtest.harness.loadgen import (
    DEFAULT_LATE_AFTER_S,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_REQUEST_TIMEOUT_S,
    LoadResult,
    LoadTargetError,
    RequestRecord,
    WireProtocol,
    run_arrivals,
)
from loadtest.simulator.traces import (
    FORMATS,
    RateTrace,
    TraceError,
    crop,
    load_trace,
    scale_trace,
)

PROG = "tritonscale replay"


@dataclass(frozen=True)
class ReplayPlan:
    """The arrivals to send: seconds from the start of the replay (real time, sorted)."""

    trace: str
    arrivals_s: npt.NDArray[np.float64]
    duration_s: float
    time_scale: float
    rate_scale: float
    seed: int

    @property
    def mean_rate_rps(self) -> float:
        return len(self.arrivals_s) / self.duration_s if self.duration_s > 0 else 0.0


def plan_replay(
    path: str | Path,
    fmt: str = "auto",
    *,
    time_scale: float = 1.0,
    rate_scale: float = 1.0,
    seed: int = 0,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> ReplayPlan:
    """Load, crop (trace seconds), scale and draw the arrivals of a trace; TraceError/ValueError
    naming the problem."""
    trace = load_trace(path, fmt)
    if start_s or end_s is not None:
        trace = crop(trace, start_s, trace.duration if end_s is None else end_s)
        if trace.duration <= 0:
            raise TraceError(f"{path}: nothing between --start {start_s:g} and --end {end_s}")
    rng = np.random.default_rng(seed)
    trace = scale_trace(trace, time_scale=time_scale, rate_scale=rate_scale, rng=rng)
    arrivals = trace.sample_arrivals(rng) if isinstance(trace, RateTrace) else trace
    return ReplayPlan(
        trace=trace.name,
        arrivals_s=np.asarray(arrivals.times, dtype=np.float64),
        duration_s=float(trace.duration),
        time_scale=time_scale,
        rate_scale=rate_scale,
        seed=seed,
    )


@dataclass(frozen=True)
class ReplayResult:
    plan: ReplayPlan
    load: LoadResult
    late_after_s: float

    @property
    def late(self) -> int:
        return self.load.late(self.late_after_s)

    def summary(self) -> dict[str, Any]:
        load = self.load
        lags = np.array([r.send_s - r.scheduled_s for r in load.records])
        latencies = load.latencies_s()

        def ms(values: npt.NDArray[np.float64], q: float) -> float | None:
            return round(float(np.percentile(values, q)) * 1000, 3) if len(values) else None

        return {
            "trace": self.plan.trace,
            "time_scale": self.plan.time_scale,
            "rate_scale": self.plan.rate_scale,
            "seed": self.plan.seed,
            "duration_s": round(self.plan.duration_s, 3),
            "requests_scheduled": load.offered,
            "requests_sent": load.sent,
            "requests_ok": load.completed,
            "requests_failed": load.failed,
            "requests_not_sent": load.skipped,
            "requests_unfinished": load.unfinished,
            "requests_late": self.late,
            "late_after_ms": round(self.late_after_s * 1000, 3),
            "schedule_lag_ms": {"p50": ms(lags, 50), "p99": ms(lags, 99), "max": ms(lags, 100)},
            "latency_ms": {q: ms(latencies, float(q[1:])) for q in ("p50", "p90", "p99")},
            "errors": load.summary()["errors"],
        }

    def requests(self) -> list[list[float | str | None]]:
        """Per request: scheduled s, send lag s, latency s (None unless ok), error."""
        rows: list[list[float | str | None]] = []
        for r in self.load.records:
            latency = r.done_s - r.send_s if r.ok and r.done_s is not None else None
            rows.append(
                [
                    round(r.scheduled_s, 6),
                    round(r.send_s - r.scheduled_s, 6),
                    None if latency is None else round(latency, 6),
                    r.error,
                ]
            )
        return rows


async def replay(
    plan: ReplayPlan,
    url: str,
    model: str,
    *,
    protocol: WireProtocol = "http",
    late_after_s: float = DEFAULT_LATE_AFTER_S,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    drain_timeout_s: float = 30.0,
    on_sent: Callable[[RequestRecord], None] | None = None,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> ReplayResult:
    """Send ``plan`` to ``model`` at ``url`` (``host:port``); HTTP uses one connection per
    request so a connection-balancing front spreads them."""
    load = await run_arrivals(
        url,
        model,
        plan.arrivals_s,
        plan.duration_s,
        protocol=protocol,
        max_in_flight=max_in_flight,
        request_timeout_s=request_timeout_s,
        drain_timeout_s=drain_timeout_s,
        close_connections=protocol == "http",
        on_sent=on_sent,
        on_done=on_done,
    )
    return ReplayResult(plan, load, late_after_s)


class Progress:
    """A tqdm bar of requests sent on a terminal; otherwise one line every ``every_s``."""

    def __init__(self, total: int, every_s: float = 10.0) -> None:
        self.total = total
        self.sent = 0
        self.failed = 0
        self._every = every_s
        self._next = time.monotonic() + every_s
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="req", file=sys.stderr, desc="replay")

    def sent_one(self, _record: RequestRecord) -> None:
        self.sent += 1
        if self._bar is not None:
            self._bar.update(1)
        elif time.monotonic() >= self._next:
            self._next = time.monotonic() + self._every
            print(
                f"replay: {self.sent}/{self.total} sent, {self.failed} failed",
                file=sys.stderr,
                flush=True,
            )

    def done_one(self, record: RequestRecord) -> None:
        if not record.ok:
            self.failed += 1
            if self.failed == 1:
                message = f"replay: first failure: {record.error}"
                if self._bar is not None:
                    self._bar.write(message, file=sys.stderr)
                else:
                    print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Open-loop replay of a trace against a Triton endpoint (see the module doc: "
        "late and unsent requests are counted, never dropped silently).",
    )
    p.add_argument("--trace", required=True, metavar="FILE", help="trace file (simulate's formats)")
    p.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    p.add_argument("--url", required=True, metavar="HOST:PORT", help="Triton (or a balancer)")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--protocol",
        choices=("http", "grpc"),
        default="http",
        help="http (default; one connection per request) or grpc (one multiplexed connection)",
    )
    p.add_argument("--time-scale", type=float, default=1.0, metavar="X", help="X times faster")
    p.add_argument("--rate-scale", type=float, default=1.0, metavar="R", help="rate x R")
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="trace seconds (0)")
    p.add_argument("--end", type=float, default=None, metavar="S", help="trace seconds (end)")
    p.add_argument("--seed", type=int, default=0, help="arrival draws and thinning (0)")
    p.add_argument(
        "--late-after",
        type=float,
        default=DEFAULT_LATE_AFTER_S,
        metavar="S",
        help=f"a send this far behind schedule counts as late ({DEFAULT_LATE_AFTER_S:g} s)",
    )
    p.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT, metavar="N")
    p.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, metavar="S")
    p.add_argument("--json", metavar="OUT", help="write the summary and every request as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.url.startswith(("http://", "https://")):
        parser.error(f"--url {args.url!r}: give host:port without the scheme")
    for flag, value in (("--time-scale", args.time_scale), ("--rate-scale", args.rate_scale)):
        if not value > 0:
            parser.error(f"{flag} must be > 0, got {value:g}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json {args.json}: its directory does not exist")
    try:
        plan = plan_replay(
            args.trace,
            args.format,
            time_scale=args.time_scale,
            rate_scale=args.rate_scale,
            seed=args.seed,
            start_s=args.start,
            end_s=args.end,
        )
    except (TraceError, ValueError) as err:
        parser.error(str(err))
    if len(plan.arrivals_s) == 0:
        parser.error(f"{args.trace}: no request to send after cropping and scaling")
    print(
        f"{plan.trace}: {len(plan.arrivals_s)} requests over {plan.duration_s:.1f} s "
        f"({plan.mean_rate_rps:.1f} req/s on average) to {args.model} at {args.url}",
        file=sys.stderr,
    )
    progress = Progress(len(plan.arrivals_s))
    try:
        result = asyncio.run(
            replay(
                plan,
                args.url,
                args.model,
                protocol=args.protocol,
                late_after_s=args.late_after,
                max_in_flight=args.max_in_flight,
                request_timeout_s=args.request_timeout,
                on_sent=progress.sent_one,
                on_done=progress.done_one,
            )
        )
    except LoadTargetError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    finally:
        progress.close()
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    if args.json:
        body = {**summary, "requests_columns": ["scheduled_s", "send_lag_s", "latency_s", "error"]}
        body["requests"] = result.requests()
        Path(args.json).write_text(json.dumps(body) + "\n", encoding="utf-8")
    problems = summary["requests_failed"] + summary["requests_not_sent"]
    return 0 if problems == 0 and summary["requests_unfinished"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
