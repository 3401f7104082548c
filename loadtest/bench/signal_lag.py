"""Signal lag on a live Triton: tritonscale scraping, tritonscale reading Prometheus, and
NVIDIA's Prometheus reference path.

    python -m loadtest.bench.signal_lag [--baseline-rps 10 --step-rps 60 --before 90 --after 120]

One Triton (``resnet``: 50 ms per batch of up to 4), an open-loop load that steps from
``baseline-rps`` to ``step-rps``, and in the same run, reading the same Triton:

* tritonscale scraping it every second (5 s rate window);
* tritonscale reading it through Prometheus (its ``sources.prometheus`` path) from two
  Prometheus servers: one configured as NVIDIA's guide (scrape every 15 s; the source's
  default 60 s window, queried every 5 s), one scraping every 5 s (20 s window, queried every
  1 s);
* NVIDIA's path on the first Prometheus: ``rate(...[1m])`` recording rules every 6 s, read
  with an instant query (prometheus-adapter's relist and the HPA's sync would add more).

Every path is sampled every 0.5 s. For each signal, ``initial`` is the median over the 20 s
before the step and ``final`` the median over the last 30 s; the lag is the first time after
the step that the signal reaches 50 % / 90 % of the way. The last table gives how much later
each Prometheus-source path crosses than direct scraping.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence

import aiohttp

from adapter.config import load_config
from adapter.service import running_service
from loadtest.harness.loadgen import RateSegment, run_schedule
from loadtest.harness.prometheus import PrometheusProcess
from loadtest.harness.triton_server import ModelSpec, TritonProcess

PROGRESS_EVERY_S = 15.0
Series = list[tuple[float, float]]  # (seconds since the step, value)

SCRAPED = "tritonscale scraping (1 s scrape, 5 s window)"
VIA_15 = "tritonscale via Prometheus (15 s scrape, 60 s window, query 5 s)"
VIA_5 = "tritonscale via Prometheus (5 s scrape, 20 s window, query 1 s)"
NVIDIA = "NVIDIA's path (15 s scrape, rate 1m, rules 6 s)"
GROUPS = {SCRAPED: "scraped", VIA_15: "via-prometheus-15s", VIA_5: "via-prometheus-5s"}
METRICS = ("triton_queue_compute_ratio", "triton_queue_depth", "triton_arrival_rate")


def lags(series: Series, after_seconds: float) -> tuple[float | None, float | None, float, float]:
    before = [v for t, v in series if -20 <= t < 0]
    final = [v for t, v in series if t >= after_seconds - 30]
    if not before or not final:
        return None, None, float("nan"), float("nan")
    initial, end = statistics.median(before), statistics.median(final)

    def first(fraction: float) -> float | None:
        level = initial + fraction * (end - initial)
        rising = end >= initial
        for t, v in series:
            if t >= 0 and (v >= level if rising else v <= level):
                return t
        return None

    return first(0.5), first(0.9), initial, end


def _prometheus(triton: TritonProcess, scrape_interval_s: float) -> PrometheusProcess:
    """Scraping Triton as pod ``triton-0`` of namespace ``bench`` (a PodMonitor's labels)."""
    labels = {"namespace": "bench", "pod": "triton-0"}
    return PrometheusProcess(
        [],
        scrape_interval_s=scrape_interval_s,
        static_configs=[{"targets": [triton.metrics_host_port], "labels": labels}],
    )


async def run(args: argparse.Namespace) -> None:
    model = "resnet"
    total = args.before + args.after
    print(f"starting Triton and Prometheus; then {total:.0f} s of load ...", file=sys.stderr)
    triton = TritonProcess((ModelSpec(model, 50.0, 4),))
    triton.start()
    slow, fast = _prometheus(triton, 15.0), _prometheus(triton, 5.0)
    started_processes: list[PrometheusProcess] = []
    try:
        for process in (slow, fast):
            process.start()
            started_processes.append(process)
        await _measure(args, triton, model, slow, fast)
    finally:
        for process in started_processes:
            process.stop()
        triton.stop()


async def _measure(
    args: argparse.Namespace,
    triton: TritonProcess,
    model: str,
    slow: PrometheusProcess,
    fast: PrometheusProcess,
) -> None:
    def source(
        url: str, scrape: float, window: float, query: float, group: str
    ) -> dict[str, object]:
        return {
            "url": url,
            "scrape_interval_seconds": scrape,
            "rate_window_seconds": window,
            "query_interval_seconds": query,
            "warm_start_seconds": 0,
            "groups": [
                {
                    "labels": {"namespace": "bench", "deployment": group},
                    "matchers": 'job="triton"',
                }
            ],
        }

    config = load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "targets": [
                {
                    "url": triton.metrics_url,
                    "labels": {"namespace": "bench", "deployment": GROUPS[SCRAPED]},
                }
            ],
            # a 15 s scrape: values may be 2 x 15 + 5 s old after one missed scrape
            "signals": {"max_age_seconds": 40},
            "sources": {
                "prometheus": [
                    source(slow.url, 15, 60, 5, GROUPS[VIA_15]),
                    source(fast.url, 5, 20, 1, GROUPS[VIA_5]),
                ]
            },
        },
    )
    data: dict[str, dict[str, Series]] = {
        path: {metric: [] for metric in METRICS} for path in (*GROUPS, NVIDIA)
    }
    nvidia_queries = {
        "triton_queue_compute_ratio": f'triton:queue_compute:ratio{{model="{model}"}}',
        "triton_queue_depth": f'sum(nv_inference_pending_request_count{{model="{model}"}})',
    }
    async with (
        running_service(config) as service,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as prom_session,
    ):
        schedule = [RateSegment(0, args.baseline_rps), RateSegment(args.before, args.step_rps)]
        total = args.before + args.after
        load = asyncio.ensure_future(run_schedule(triton.grpc_url, model, schedule, total, seed=11))
        started = time.monotonic()
        step_at = started + args.before
        next_report = started
        while time.monotonic() - started < total:
            now = time.monotonic() - step_at
            if time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY_S
                phase = "before the step" if now < 0 else "after the step"
                print(
                    f"  {time.monotonic() - started:5.0f}/{total:.0f} s ({phase})",
                    file=sys.stderr,
                    flush=True,
                )
            snapshot = service.pipeline.snapshot()
            for path, group in GROUPS.items():
                for metric in METRICS:
                    for point in snapshot.points(metric):
                        labels = point.labels
                        if labels.get("model") == model and labels.get("deployment") == group:
                            data[path][metric].append((now, point.value))
            for metric, promql in nvidia_queries.items():
                result = await slow.query(promql, session=prom_session)
                if result:
                    data[NVIDIA][metric].append((now, result[0].value))
            await asyncio.sleep(0.5)
        load.cancel()
        costs = [
            (path, await _query_cost(prom_session, source.client.url, promql))
            for path, source in zip((VIA_15, VIA_5), service.prometheus, strict=True)
            for promql in source.queries().values()
        ]

    print(
        f"load step {args.baseline_rps:g} -> {args.step_rps:g} req/s on {model} "
        f"(capacity ~73 req/s measured); sampled every 0.5 s\n"
    )
    print("| signal | path | initial | final | 50 % after | 90 % after |")
    print("|---|---|---:|---:|---:|---:|")
    crossings: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for metric in METRICS:
        for path, by_metric in data.items():
            if not by_metric[metric]:
                continue  # NVIDIA's path has no arrival rate
            half, ninety, initial, final = lags(by_metric[metric], args.after)
            crossings[(metric, path)] = (half, ninety)
            print(
                f"| {metric} | {path} | {initial:.3g} | {final:.3g} | {_s(half)} | {_s(ninety)} |"
            )
    print("\nPrometheus' statistics of one group query (1 pod, 1 model), after the run:\n")
    for path, cost in costs:
        print(f"- {path}: {cost}")
    print("\nhow much later than scraping (50 % / 90 %):\n")
    print("| signal | path | 50 % later by | 90 % later by |")
    print("|---|---|---:|---:|")
    for metric in METRICS:
        base = crossings.get((metric, SCRAPED), (None, None))
        for path in (VIA_15, VIA_5):
            half, ninety = crossings.get((metric, path), (None, None))
            print(f"| {metric} | {path} | {_later(half, base[0])} | {_later(ninety, base[1])} |")


async def _query_cost(session: aiohttp.ClientSession, url: str, promql: str) -> str:
    """Prometheus' own statistics of one group query (samples read, peak, time)."""
    form = {"query": promql, "stats": "all"}
    async with session.post(f"{url}/api/v1/query", data=form) as response:
        body = await response.json(content_type=None)
    stats = body["data"]["stats"]
    samples, timings = stats["samples"], stats["timings"]
    return (
        f"{samples['totalQueryableSamples']} samples read, peak {samples['peakSamples']}, "
        f"{1000 * timings['execTotalTime']:.1f} ms, "
        f"{len(body['data']['result'])} series returned"
    )


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _later(value: float | None, base: float | None) -> str:
    return "n/a" if value is None or base is None else f"{value - base:+.1f} s"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-rps", type=float, default=10.0)
    parser.add_argument("--step-rps", type=float, default=60.0)
    parser.add_argument(
        "--before",
        type=float,
        default=90.0,
        help="seconds before the step (longer than the 60 s windows, so they are full)",
    )
    parser.add_argument("--after", type=float, default=120.0, help="seconds after the step")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
