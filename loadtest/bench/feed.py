"""The snapshot feed's cost: what one publish costs each process with ``server.api_process``.

    python -m loadtest.bench.feed [--targets 2000 --repeats 5]

A snapshot shaped as the sizing benchmark's (10 pods per Deployment, 2 models, every served
metric per group and per pod, the pods' labels) goes through the feed's own code in one
process: the main process's encoding (``snapshot_frames``), then the API process's decoding
and assembly (``read_frame``'s unpickling, ``FeedReader.apply``), with the garbage
collector's thresholds ``serve`` sets. Reported, median of the repeats: milliseconds per
publish on each side, the bytes and frames, and the longest single step the API process
takes between two requests (a frame, or the swap at the end, which builds the snapshot's
index). Also: building the points as the feed does, against building them as frozen slotted
dataclasses (what ``SeriesPoint`` was), the baseline; and the first per-pod read (a custom
metrics Pods request) of the received snapshot, whose per-pod index was built frame by
frame, against the same read of a snapshot made in one piece, which builds it then.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from adapter.memory import collect_cycles_less_often
from adapter.metrics_catalog import SERVED_METRIC_NAMES
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.snapshot_feed import FeedReader, Health, snapshot_frames

PODS_PER_DEPLOYMENT = 10
MODELS = ("resnet", "bert")


def fleet_snapshot(targets: int, now: float) -> Snapshot:
    """Every served metric for each (Deployment, model) and each (pod, model)."""
    series: dict[str, list[SeriesPoint]] = {}
    pod_series: dict[str, list[SeriesPoint]] = {}
    pods: dict[tuple[str, str], Mapping[str, str]] = {}
    source = "http://10.0.0.1:8002/metrics"
    for deployment in range(max(1, targets // PODS_PER_DEPLOYMENT)):
        name = f"triton-{deployment}"
        for model in MODELS:
            labels = {"namespace": "prod", "deployment": name, "model": model}
            per_pod = [{**labels, "pod": f"{name}-{p}"} for p in range(PODS_PER_DEPLOYMENT)]
            for metric in SERVED_METRIC_NAMES:
                series.setdefault(metric, []).append(SeriesPoint(labels, 1.5, now, 5, source))
                pod_series.setdefault(metric, []).extend(
                    SeriesPoint(pod_labels, 0.15, now, 5, source) for pod_labels in per_pod
                )
        for p in range(PODS_PER_DEPLOYMENT):
            pods[("prod", f"{name}-{p}")] = MappingProxyType({"app": "triton", "pod": str(p)})
    return Snapshot(
        built_at=now,
        series=MappingProxyType({m: tuple(p) for m, p in series.items()}),
        pod_series=MappingProxyType({m: tuple(p) for m, p in pod_series.items()}),
        pods=MappingProxyType(pods),
    )


@dataclass(frozen=True, slots=True)
class DataclassPoint:
    """The baseline: ``SeriesPoint`` as it was (a frozen, slotted dataclass)."""

    labels: Mapping[str, str]
    value: float
    timestamp: float
    window_seconds: int | None = None
    source: str = ""


@dataclass
class FeedCost:
    points: int
    frames: int
    megabytes: float
    encode_ms: float  # the main process, per publish
    decode_ms: float  # the API process, per publish: unpickling + assembly + swap
    longest_step_ms: float  # the API process's longest step between two requests
    build_tuple_ms: float  # building the points as the feed does
    build_dataclass_ms: float  # ... as frozen slotted dataclasses (the baseline)
    first_pod_read_ms: float  # the first per-pod read of the received snapshot
    first_pod_read_lazy_ms: float  # ... of one built in one piece (the index built then)


def measure(targets: int) -> FeedCost:
    snapshot = fleet_snapshot(targets, time.time())
    gc.collect()
    started = time.perf_counter()
    frames = list(snapshot_frames(snapshot, Health(None, None)))
    encode = time.perf_counter() - started
    reader = FeedReader(silence_seconds=10.0)
    steps = []
    for frame in frames:
        step = time.perf_counter()
        reader.apply(pickle.loads(frame[4:]))
        steps.append(time.perf_counter() - step)
    assert reader.received == 1
    metric = SERVED_METRIC_NAMES[0]
    started = time.perf_counter()
    reader.snapshot().pod_points_in(metric, "prod")
    first_pod_read = time.perf_counter() - started
    started = time.perf_counter()
    snapshot.pod_points_in(metric, "prod")  # its per-pod index is built by this first read
    first_pod_read_lazy = time.perf_counter() - started
    plain = [p for points in snapshot.pod_series.values() for p in points]
    started = time.perf_counter()
    [tuple.__new__(SeriesPoint, p) for p in plain]
    as_tuples = time.perf_counter() - started
    started = time.perf_counter()
    [DataclassPoint(*p) for p in plain]
    as_dataclasses = time.perf_counter() - started
    points = sum(map(len, snapshot.series.values())) + sum(map(len, snapshot.pod_series.values()))
    return FeedCost(
        points=points,
        frames=len(frames),
        megabytes=sum(map(len, frames)) / 1e6,
        encode_ms=encode * 1e3,
        decode_ms=sum(steps) * 1e3,
        longest_step_ms=max(steps) * 1e3,
        build_tuple_ms=as_tuples * 1e3,
        build_dataclass_ms=as_dataclasses * 1e3,
        first_pod_read_ms=first_pod_read * 1e3,
        first_pod_read_lazy_ms=first_pod_read_lazy * 1e3,
    )


def median_cost(runs: Sequence[FeedCost]) -> FeedCost:
    first = runs[0]
    return FeedCost(
        first.points,
        first.frames,
        first.megabytes,
        *(
            statistics.median(getattr(run, name) for run in runs)
            for name in (
                "encode_ms",
                "decode_ms",
                "longest_step_ms",
                "build_tuple_ms",
                "build_dataclass_ms",
                "first_pod_read_ms",
                "first_pod_read_lazy_ms",
            )
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=2000, help="pods scraped (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the median is shown")
    args = parser.parse_args(argv)
    collect_cycles_less_often()  # as `serve` and the API process run
    cost = median_cost([measure(args.targets) for _ in range(args.repeats)])
    print(
        f"| targets | points | frames | MB | main: encode (ms) | API process: decode + swap "
        f"(ms) | longest step (ms) | build points: dataclass / feed (ms) "
        f"| first per-pod read: index built then / as it came (ms) |\n"
        f"|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {args.targets} | {cost.points:,} | {cost.frames} | {cost.megabytes:.1f} "
        f"| {cost.encode_ms:.1f} | {cost.decode_ms:.1f} | {cost.longest_step_ms:.2f} "
        f"| {cost.build_dataclass_ms:.1f} / {cost.build_tuple_ms:.1f} "
        f"({cost.build_dataclass_ms / cost.build_tuple_ms:.1f}x) "
        f"| {cost.first_pod_read_lazy_ms:.1f} / {cost.first_pod_read_ms:.3f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
