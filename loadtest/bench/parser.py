"""Parser throughput on the real Triton capture, as a ratio against prometheus_client's
text parser in the same run (``python -m loadtest.bench.parser``)."""

from __future__ import annotations

import argparse
import statistics
import timeit
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser

DEFAULT_FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "tests/data/fixtures/triton-2.51-cpu-two-models-under-load.metrics.txt"
)


def per_call_seconds(fn: object, repeats: int, number: int) -> float:
    """Median over ``repeats`` of the mean time per call (s)."""
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    return statistics.median(t / number for t in timer.repeat(repeats, number))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    text = args.fixture.read_text()
    ours = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
    lines = text.count("\n")

    baseline = per_call_seconds(
        lambda: list(text_string_to_metric_families(text)), args.repeats, 200
    )
    fast = per_call_seconds(lambda: ours.parse(text), args.repeats, 2000)
    print(f"fixture: {args.fixture.name} ({lines} lines)")
    print(f"prometheus_client text parser: {baseline * 1e3:.3f} ms per scrape")
    print(f"tritonscale ExpositionParser:  {fast * 1e3:.3f} ms per scrape")
    print(f"speed-up: {baseline / fast:.1f}x")


if __name__ == "__main__":
    main()
