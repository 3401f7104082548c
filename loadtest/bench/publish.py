"""What one ``Pipeline.publish`` costs at N targets (``python -m loadtest.bench.publish``).

    python -m loadtest.bench.publish [--targets 2000 --rounds 20 --profile 15]

N Triton targets in Kubernetes (10 pods per Deployment, so group series and per-pod series;
the fake Triton's exposition: 2 models), the predictive stage with a capacity (every output
computed), histories filled with 10 readings each. Then, per round, a share of the targets
gets a new reading (as scrapes land between two publishes) and ``publish`` runs; the time is
the wall time of that call (it runs on the event loop, so it is how long API requests wait).

Shares: 100 % (every target scraped since the last publish: publishing once per interval),
25 % (publishing every interval / 4, the publisher's pace when scrapes keep coming) and 0 %
(nothing new). ``--profile N`` prints the N functions with the most own time at 25 %.
``--baseline`` measures the same rounds again with every group recomputed at each publish
(the pipeline before publishing was incremental), in the same run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence

from adapter.config import load_config
from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.gpus import PodGpus
from adapter.pipeline import Pipeline
from adapter.predictive import PredictiveStage
from adapter.readings import Reading, reading_from_families
from adapter.scrape import TargetState
from adapter.series_cache import GroupSeriesCache, Served
from adapter.signals import Labels, Member
from adapter.snapshot import PodKey
from adapter.targets import StaticTargets, Target
from loadtest.harness.fake_triton import exposition

PODS_PER_DEPLOYMENT = 10
RATE_RPS = 20.0
T0 = 1_700_000_000.0
SHARES = (1.0, 0.25, 0.0)


class Readings:
    """Readings as a scrape of the fake Triton gives them, parsed once per second of time."""

    def __init__(self) -> None:
        self._parser = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
        self._cache: dict[int, Reading] = {}

    def at(self, second: float) -> Reading:
        key = int(second)
        template = self._cache.get(key)
        if template is None:
            families = self._parser.parse(exposition(key, RATE_RPS, 3.0))
            template = reading_from_families(families, "triton", key, T0 + key)
            self._cache[key] = template
        return Reading(second, T0 + second, template.models)


def build(count: int) -> tuple[Pipeline, list[TargetState]]:
    config = load_config(None, {"predictive": {"defaults": {"capacity_rps": 50.0}}})
    targets = [
        Target.create(
            f"http://127.0.0.1:{10000 + index}/metrics",
            "triton",
            {"namespace": "prod", "deployment": f"triton-{index // PODS_PER_DEPLOYMENT}"},
            pod=f"triton-{index // PODS_PER_DEPLOYMENT}-{index % PODS_PER_DEPLOYMENT}",
            pod_labels={"app": "triton"},
        )
        for index in range(count)
    ]
    pipeline = Pipeline(
        config.scrape,
        config.signals,
        StaticTargets(targets),
        stages=(PredictiveStage(config.predictive, wall_clock=lambda: T0),),
    )
    states = [pipeline.track(target, now_mono=0.0) for target in targets]
    return pipeline, states


class Uncached(GroupSeriesCache):
    """The baseline: every owner recomputed at every publish."""

    def owner_series(
        self,
        owners: Iterable[tuple[Labels, Sequence[Member]]],
        window_seconds: float,
        pod_gpus: Mapping[PodKey, PodGpus],
    ) -> list[tuple[Labels, Served]]:
        self._computed = {}
        return super().owner_series(owners, window_seconds, pod_gpus)


def run(count: int, rounds: int, profile: int, uncached: bool) -> dict[float, list[float]]:
    pipeline, states = build(count)
    if uncached:
        pipeline._group_cache = Uncached()
        pipeline._pod_cache = Uncached()
    readings = Readings()
    now = 0.0
    for _ in range(10):  # a full rate window and more
        now += 1.0
        for state in states:
            state.history.add(readings.at(now))
            state.scrapes += 1
    pipeline.publish(now, T0 + now)
    results: dict[float, list[float]] = {}
    cursor = 0
    for share in SHARES:
        step = 1.0 / rounds
        per_round = round(share * count)
        timings = []
        profiler = cProfile.Profile() if profile and share == 0.25 else None
        for _ in range(rounds):
            now += step if share < 1.0 else 1.0
            for _ in range(per_round):
                state = states[cursor % count]
                cursor += 1
                state.history.add(readings.at(now))
                state.scrapes += 1
            if profiler is not None:
                profiler.enable()
            started = time.perf_counter()
            pipeline.publish(now, T0 + now)
            timings.append(time.perf_counter() - started)
            if profiler is not None:
                profiler.disable()
        results[share] = timings
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(profile)
            print(out.getvalue(), file=sys.stderr)
    return results


def collect_cycles_as_the_service_does() -> str:
    """The service's garbage collector settings, where this checkout has them (a baseline
    checkout from before them runs with CPython's defaults, as its service did)."""
    try:
        from adapter.memory import collect_cycles_less_often
    except ImportError:
        return "CPython's default garbage collector thresholds"
    collect_cycles_less_often()
    return "the service's garbage collector settings (adapter.memory)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20, help="publishes per share")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    parser.add_argument("--baseline", action="store_true", help="also without the cache")
    args = parser.parse_args(argv)
    collector = collect_cycles_as_the_service_does()
    results = run(args.targets, args.rounds, args.profile, uncached=False)
    baseline = run(args.targets, args.rounds, 0, uncached=True) if args.baseline else {}
    series = args.targets // PODS_PER_DEPLOYMENT * 2
    print(f"Command: `python -m loadtest.bench.publish {' '.join(sys.argv[1:])}`\n")
    print(
        f"{args.targets} targets, {args.targets // PODS_PER_DEPLOYMENT} Deployments, "
        f"{series} group series per metric (+ {args.targets * 2} per pod), predictive stage on, "
        f"{collector}.\n"
    )
    print("| publish | targets with a new reading | publishes | median ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, measured in (("incremental", results), ("every group (before)", baseline)):
        for share, timings in measured.items():
            print(
                f"| {name} | {share:.0%} | {len(timings)} | "
                f"{statistics.median(timings) * 1e3:.1f} | {max(timings) * 1e3:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
