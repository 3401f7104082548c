"""Open-loop load generator for Triton (KServe v2 inference over HTTP or gRPC, asyncio).

Open loop: request *i* is sent at its arrival time whether or not earlier requests finished, so a
slow server builds a queue instead of slowing the client down. Arrival times come from a rate
schedule (piecewise-constant ``(start_s, rate_rps)`` segments) as a Poisson process or at
constant spacing. A cap on in-flight requests bounds client memory; arrivals that find the cap
full are counted as ``skipped`` (never silently dropped from the report).

gRPC is the default: on this 2-core host it needs about 20-30 % less client CPU than HTTP at the
same rate (``python -m loadtest.bench.loadgen``). Before the first request the server and the
model must answer ready (a wrong port or protocol is one clear error, not minutes of failures),
and the CLI reports failures as they happen. CLI (prints a JSON summary)::

    python -m loadtest.harness.loadgen --url 127.0.0.1:8001 --model resnet --rate 60 --duration 20
    python -m loadtest.harness.loadgen --url 127.0.0.1:8000 --protocol http --model resnet \
        --schedule 0:40,10:120 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

WireProtocol = Literal["http", "grpc"]
ArrivalProcess = Literal["poisson", "constant"]

DEFAULT_MAX_IN_FLIGHT = 512
# HTTP/1.1 needs one connection per outstanding request; beyond this many, aiohttp queues requests
# in the client (not in Triton), and thousands of sockets exhaust the server's file descriptors.
# gRPC multiplexes everything on one HTTP/2 connection and has no such limit.
HTTP_MAX_CONNECTIONS = 1000
DEFAULT_REQUEST_TIMEOUT_S = 60.0
DEFAULT_DRAIN_TIMEOUT_S = 30.0
IN_FLIGHT_SAMPLE_INTERVAL_S = 0.1
DEFAULT_LATE_AFTER_S = 0.05
"""A request sent more than this after its scheduled time counts as late (the sender fell
behind its schedule, e.g. for lack of CPU); it is still sent and measured."""
READY_CHECK_TIMEOUT_S = 10.0


class LoadTargetError(RuntimeError):
    """The server or model is not reachable or not ready; the message says which and how."""


@dataclasses.dataclass(frozen=True)
class RateSegment:
    """From ``start_s`` (seconds after the run starts) send at ``rate_rps`` requests/second."""

    start_s: float
    rate_rps: float


def parse_schedule(text: str) -> list[RateSegment]:
    """Parse ``start_s:rate_rps,start_s:rate_rps,...`` (the ``--schedule`` flag)."""
    segments: list[RateSegment] = []
    for index, item in enumerate(text.split(",")):
        parts = item.strip().split(":")
        if len(parts) != 2:
            raise ValueError(
                f"--schedule item {index + 1} {item!r}: expected start_s:rate_rps, e.g. 0:60"
            )
        try:
            segments.append(RateSegment(float(parts[0]), float(parts[1])))
        except ValueError:
            raise ValueError(
                f"--schedule item {index + 1} {item!r}: start_s and rate_rps must be numbers"
            ) from None
    validate_schedule(segments)
    return segments


def validate_schedule(schedule: Sequence[RateSegment]) -> None:
    """Raise ValueError naming the bad segment: first at 0, starts increasing, rates >= 0."""
    if not schedule:
        raise ValueError("rate schedule is empty; give at least one (start_s, rate_rps) segment")
    if schedule[0].start_s != 0:
        raise ValueError(f"rate schedule segment 1 starts at {schedule[0].start_s} s; must be 0")
    for index, segment in enumerate(schedule):
        if not math.isfinite(segment.rate_rps) or segment.rate_rps < 0:
            raise ValueError(
                f"rate schedule segment {index + 1}: rate_rps {segment.rate_rps} must be >= 0"
            )
        if index and segment.start_s <= schedule[index - 1].start_s:
            raise ValueError(
                f"rate schedule segment {index + 1}: start_s {segment.start_s} must be greater "
                f"than the previous segment's {schedule[index - 1].start_s}"
            )


def arrival_times(
    schedule: Sequence[RateSegment],
    duration_s: float,
    process: ArrivalProcess = "poisson",
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.float64]:
    """Arrival offsets in seconds from the run start, sorted, all in ``[0, duration_s)``.

    Poisson arrivals restart at each segment boundary, which is exact because exponential gaps are
    memoryless. Constant arrivals are evenly spaced at ``1/rate`` within each segment.
    """
    validate_schedule(schedule)
    if process not in ("poisson", "constant"):
        raise ValueError(f"arrival process {process!r}: expected 'poisson' or 'constant'")
    generator = rng if rng is not None else np.random.default_rng()
    chunks: list[npt.NDArray[np.float64]] = []
    for index, segment in enumerate(schedule):
        end_s = schedule[index + 1].start_s if index + 1 < len(schedule) else duration_s
        end_s = min(end_s, duration_s)
        length_s = end_s - segment.start_s
        if length_s <= 0 or segment.rate_rps == 0:
            continue
        if process == "constant":
            count = math.ceil(length_s * segment.rate_rps - 1e-9)
            offsets = np.arange(count, dtype=float) / segment.rate_rps
        else:
            expected = length_s * segment.rate_rps
            # draw enough gaps in one go (mean + 6 sigma + slack), extend if ever short
            gaps = generator.exponential(
                1.0 / segment.rate_rps, int(expected + 6 * math.sqrt(expected) + 16)
            )
            offsets = np.cumsum(gaps)
            while offsets[-1] < length_s:
                more = generator.exponential(1.0 / segment.rate_rps, len(gaps))
                offsets = np.concatenate([offsets, offsets[-1] + np.cumsum(more)])
            offsets = offsets[offsets < length_s]
        chunks.append(segment.start_s + offsets)
    if not chunks:
        return np.empty(0, dtype=float)
    return np.concatenate(chunks)


@dataclasses.dataclass
class RequestRecord:
    """One request. Times are seconds from the run start (monotonic clock).

    ``done_s`` is None while unfinished (still in flight when the drain timed out).
    """

    scheduled_s: float
    send_s: float
    done_s: float | None = None
    ok: bool | None = None
    error: str | None = None


@dataclasses.dataclass
class LoadResult:
    """What one run did; ``records`` has one entry per request actually sent."""

    model: str
    protocol: WireProtocol
    duration_s: float
    offered: int  # arrivals in the schedule
    sent: int
    completed: int  # finished successfully
    failed: int  # finished with an error
    skipped: int  # arrivals not sent because max_in_flight requests were outstanding
    unfinished: int  # still in flight when the drain deadline passed
    send_elapsed_s: float  # seconds from the run start to the last send
    wall_s: float  # seconds from the run start until drained (or the drain deadline)
    max_send_lag_s: float  # worst (send_s - scheduled_s): how far the sender fell behind
    cpu_s: float  # user+system CPU of this process during the run
    records: list[RequestRecord]
    in_flight: list[tuple[float, int]]  # (seconds from start, requests outstanding)
    wall_start: float  # time.time() at the run start, to align with scraped metrics

    @property
    def achieved_rate_rps(self) -> float:
        """Requests sent per second; a sender that fell behind stretches its send window."""
        window_s = max(self.duration_s, self.send_elapsed_s)
        return self.sent / window_s if window_s > 0 else float("nan")

    def late(self, after_s: float = DEFAULT_LATE_AFTER_S) -> int:
        """Requests sent more than ``after_s`` after their scheduled time."""
        return sum(1 for r in self.records if r.send_s - r.scheduled_s > after_s)

    def latencies_s(self) -> npt.NDArray[np.float64]:
        """Send-to-completion seconds of successful requests."""
        return np.array(
            [r.done_s - r.send_s for r in self.records if r.ok and r.done_s is not None]
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly counts and latency percentiles (no per-request records)."""
        latencies = self.latencies_s()
        lags = np.array([r.send_s - r.scheduled_s for r in self.records])
        percentiles: dict[str, float | None] = {
            f"p{q}_ms": (float(np.percentile(latencies, q)) * 1000 if len(latencies) else None)
            for q in (50, 90, 99)
        }
        return {
            "model": self.model,
            "protocol": self.protocol,
            "duration_s": self.duration_s,
            "offered": self.offered,
            "sent": self.sent,
            "completed": self.completed,
            "failed": self.failed,
            "skipped": self.skipped,
            "late": self.late(),
            "late_after_ms": DEFAULT_LATE_AFTER_S * 1000,
            "unfinished": self.unfinished,
            "achieved_rate_rps": round(self.achieved_rate_rps, 3),
            "max_send_lag_ms": round(self.max_send_lag_s * 1000, 3),
            "p99_send_lag_ms": (
                round(float(np.percentile(lags, 99)) * 1000, 3) if len(lags) else None
            ),
            "cpu_s": round(self.cpu_s, 3),
            "wall_s": round(self.wall_s, 3),
            "cpu_fraction": round(self.cpu_s / self.wall_s, 3) if self.wall_s > 0 else None,
            "max_in_flight_seen": max((n for _, n in self.in_flight), default=0),
            **percentiles,
            "errors": dict(Counter(r.error for r in self.records if r.error).most_common(3)),
        }


class _Client:
    """Thin wrapper over tritonclient's asyncio HTTP or gRPC client sending a 1-float request."""

    def __init__(
        self,
        url: str,
        model: str,
        protocol: WireProtocol,
        max_in_flight: int,
        timeout_s: float,
        close_connections: bool = False,
    ) -> None:
        self.model = model
        self.protocol = protocol
        self.url = url
        self._timeout_s = timeout_s
        # one connection per request: a balancer that picks a backend per connection (as a
        # Kubernetes Service does) then spreads every request
        self._headers = {"Connection": "close"} if close_connections else None
        payload = np.ones((1, 1), dtype=np.float32)
        if protocol == "http":
            import tritonclient.http as http
            import tritonclient.http.aio as http_aio

            self._client: Any = http_aio.InferenceServerClient(
                url=url, conn_limit=min(max_in_flight, HTTP_MAX_CONNECTIONS), conn_timeout=timeout_s
            )
            infer_input: Any = http.InferInput("INPUT", [1, 1], "FP32")
            infer_input.set_data_from_numpy(payload, binary_data=True)
        elif protocol == "grpc":
            import tritonclient.grpc as grpc
            import tritonclient.grpc.aio as grpc_aio

            self._client = grpc_aio.InferenceServerClient(url=url)
            infer_input = grpc.InferInput("INPUT", [1, 1], "FP32")
            infer_input.set_data_from_numpy(payload)
        else:
            raise ValueError(f"protocol {protocol!r}: expected 'http' or 'grpc'")
        self._inputs = [infer_input]

    async def infer(self) -> None:
        if self.protocol == "grpc":
            await self._client.infer(self.model, self._inputs, client_timeout=self._timeout_s)
        else:
            await self._client.infer(self.model, self._inputs, headers=self._headers)

    async def check_ready(self, timeout_s: float = READY_CHECK_TIMEOUT_S) -> None:
        """Raise LoadTargetError unless the server is live and the model ready."""
        other = "http" if self.protocol == "grpc" else "grpc"
        where = f"Triton at {self.url} over {self.protocol}"
        try:
            if self.protocol == "grpc":
                live = await self._client.is_server_live(client_timeout=timeout_s)
                ready = live and await self._client.is_model_ready(
                    self.model, client_timeout=timeout_s
                )
            else:
                live = await asyncio.wait_for(self._client.is_server_live(), timeout_s)
                ready = live and await asyncio.wait_for(
                    self._client.is_model_ready(self.model), timeout_s
                )
        except Exception as error:
            raise LoadTargetError(
                f"cannot reach {where}: {type(error).__name__}: {str(error)[:200]} (is it "
                f"Triton's {self.protocol} port? --protocol {other} for the other one)"
            ) from None
        if not live:
            raise LoadTargetError(f"{where} is not live")
        if not ready:
            raise LoadTargetError(f"{where}: model {self.model!r} is not ready (or not loaded)")

    async def close(self) -> None:
        await self._client.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_arrivals(
    url: str,
    model: str,
    arrivals_s: npt.NDArray[np.float64],
    duration_s: float,
    *,
    protocol: WireProtocol = "grpc",
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    check_ready: bool = True,
    close_connections: bool = False,
    on_sent: Callable[[RequestRecord], None] | None = None,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> LoadResult:
    """Send one request to ``model`` at each offset in ``arrivals_s`` (seconds, sorted).

    ``url`` is ``host:port`` of Triton's HTTP (protocol "http") or gRPC (protocol "grpc")
    endpoint. With ``check_ready`` the server and model must answer ready first (else
    LoadTargetError). ``close_connections`` (HTTP): one connection per request. ``on_sent`` /
    ``on_done`` see each request as it is sent / finishes (live views, progress). After the last
    arrival, waits up to ``drain_timeout_s`` for outstanding requests.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight {max_in_flight} must be >= 1")
    client = _Client(url, model, protocol, max_in_flight, request_timeout_s, close_connections)
    if check_ready:
        try:
            await client.check_ready()
        except BaseException:
            await client.close()
            raise
    records: list[RequestRecord] = []
    in_flight_samples: list[tuple[float, int]] = []
    pending: set[asyncio.Task[None]] = set()
    skipped = 0
    loop = asyncio.get_running_loop()
    cpu_start = _cpu_seconds()
    wall_start = time.time()
    start = loop.time()

    async def one(record: RequestRecord) -> None:
        try:
            await client.infer()
        except Exception as error:  # any failure is data: count it, keep the reason
            record.ok = False
            record.error = f"{type(error).__name__}: {error}"[:300]
        else:
            record.ok = True
        record.done_s = loop.time() - start
        if on_done is not None:
            on_done(record)

    async def sample_in_flight() -> None:
        while True:
            in_flight_samples.append((loop.time() - start, len(pending)))
            await asyncio.sleep(IN_FLIGHT_SAMPLE_INTERVAL_S)

    sampler = asyncio.create_task(sample_in_flight())
    max_lag = 0.0
    last_send = 0.0
    try:
        for scheduled in arrivals_s.tolist():
            delay = scheduled - (loop.time() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time() - start
            if len(pending) >= max_in_flight:
                skipped += 1
                continue
            max_lag = max(max_lag, now - scheduled)
            last_send = now
            record = RequestRecord(scheduled_s=scheduled, send_s=now)
            records.append(record)
            if on_sent is not None:
                on_sent(record)
            task = asyncio.create_task(one(record))
            pending.add(task)
            task.add_done_callback(pending.discard)
        remaining = duration_s - (loop.time() - start)
        if remaining > 0:
            await asyncio.sleep(remaining)
        if pending:
            await asyncio.wait(set(pending), timeout=drain_timeout_s)
    finally:
        sampler.cancel()
        for task in list(pending):
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await client.close()
    cpu_s = _cpu_seconds() - cpu_start
    wall_s = loop.time() - start
    in_flight_samples.append((wall_s, len(pending)))
    completed = sum(1 for r in records if r.ok)
    failed = sum(1 for r in records if r.ok is False and r.done_s is not None)
    # a cancelled task (drain timeout) leaves done_s None
    unfinished = sum(1 for r in records if r.done_s is None)
    return LoadResult(
        model=model,
        protocol=protocol,
        duration_s=duration_s,
        offered=len(arrivals_s),
        sent=len(records),
        completed=completed,
        failed=failed,
        skipped=skipped,
        unfinished=unfinished,
        send_elapsed_s=last_send,
        wall_s=wall_s,
        max_send_lag_s=max_lag,
        cpu_s=cpu_s,
        records=records,
        in_flight=in_flight_samples,
        wall_start=wall_start,
    )


async def run_schedule(
    url: str,
    model: str,
    schedule: Sequence[RateSegment],
    duration_s: float,
    *,
    process: ArrivalProcess = "poisson",
    seed: int | None = None,
    protocol: WireProtocol = "grpc",
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    check_ready: bool = True,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> LoadResult:
    """Open-loop run of ``schedule`` for ``duration_s`` seconds (see ``run_arrivals``)."""
    arrivals = arrival_times(schedule, duration_s, process, np.random.default_rng(seed))
    return await run_arrivals(
        url,
        model,
        arrivals,
        duration_s,
        protocol=protocol,
        max_in_flight=max_in_flight,
        request_timeout_s=request_timeout_s,
        drain_timeout_s=drain_timeout_s,
        check_ready=check_ready,
        on_done=on_done,
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.harness.loadgen",
        description="Open-loop load against a Triton model.",
    )
    parser.add_argument(
        "--url",
        required=True,
        help="host:port of Triton's gRPC endpoint (the default protocol, port 8001 by default), "
        "or of its HTTP endpoint with --protocol http (port 8000)",
    )
    parser.add_argument("--model", required=True)
    rate = parser.add_mutually_exclusive_group(required=True)
    rate.add_argument("--rate", type=float, help="constant rate in requests/second")
    rate.add_argument("--schedule", help="start_s:rate_rps,... piecewise-constant rates")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument(
        "--protocol",
        choices=["http", "grpc"],
        default="grpc",
        help="gRPC (default: less client CPU) or HTTP",
    )
    parser.add_argument("--arrivals", choices=["poisson", "constant"], default="poisson")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT)
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S)
    parser.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT_S)
    return parser


class _FailureReporter:
    """Prints the first failure at once and a count of requests every 5 s (stderr)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.ok = 0
        self.failed = 0
        self._next = every_s

    def __call__(self, record: RequestRecord) -> None:
        if record.ok:
            self.ok += 1
        else:
            self.failed += 1
            if self.failed == 1:
                print(f"first failure: {record.error}", file=sys.stderr, flush=True)
        if record.done_s is not None and record.done_s >= self._next:
            self._next = record.done_s + self.every_s
            print(
                f"{record.done_s:6.0f} s: {self.ok} ok, {self.failed} failed",
                file=sys.stderr,
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.url.startswith(("http://", "https://")):
        parser.error(f"--url {args.url!r}: give host:port without the scheme")
    if args.duration <= 0:
        parser.error(f"--duration {args.duration}: must be > 0 seconds")
    try:
        schedule = (
            [RateSegment(0.0, args.rate)]
            if args.rate is not None
            else parse_schedule(args.schedule)
        )
        validate_schedule(schedule)
    except ValueError as error:
        parser.error(str(error).replace("rate schedule", "--rate/--schedule", 1))
    progress = _FailureReporter()
    try:
        result = asyncio.run(
            run_schedule(
                args.url,
                args.model,
                schedule,
                args.duration,
                process=args.arrivals,
                seed=args.seed,
                protocol=args.protocol,
                max_in_flight=args.max_in_flight,
                request_timeout_s=args.request_timeout,
                drain_timeout_s=args.drain_timeout,
                on_done=progress,
            )
        )
    except LoadTargetError as error:
        print(f"python -m loadtest.harness.loadgen: error: {error}", file=sys.stderr)
        return 2
    summary = result.summary()
    summary["command"] = " ".join(["python -m loadtest.harness.loadgen", *(argv or sys.argv[1:])])
    print(json.dumps(summary, indent=2))
    return 0 if result.failed == 0 and result.unfinished == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
