"""Parser throughput on the real Triton capture, as a ratio against prometheus_client's
text parser in the same run (``python -m loadtest.bench.parser``).

``--baseline-source DIR`` also times the ``ExpositionParser`` of another checkout (e.g.
``git archive main | tar -x -C DIR``), loaded from ``DIR/adapter/exposition.py`` into this
process, on the same text: a before/after ratio from one run. Each parser parses the capture
repeatedly (as the service parses every target's scrape with one parser), so a parser that
remembers what it parsed before is measured in its steady state.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import timeit
from pathlib import Path
from types import ModuleType

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


def load_exposition(source: Path) -> ModuleType:
    """``adapter/exposition.py`` of another checkout, as a module of its own."""
    spec = importlib.util.spec_from_file_location(
        "baseline_exposition", source / "adapter" / "exposition.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"{source}: no adapter/exposition.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-source", type=Path, help="also time this checkout's parser")
    args = parser.parse_args()
    text = args.fixture.read_text()
    ours = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
    lines = text.count("\n")

    baseline = per_call_seconds(
        lambda: list(text_string_to_metric_families(text)), args.repeats, 200
    )
    print(f"fixture: {args.fixture.name} ({lines} lines)")
    print(f"prometheus_client text parser: {baseline * 1e3:.3f} ms per scrape")
    if args.baseline_source is not None:
        old = load_exposition(args.baseline_source)
        before = old.ExpositionParser(old.TRITON_FAMILIES + old.DCGM_FAMILIES)
        fast = per_call_seconds(lambda: ours.parse(text), args.repeats, 2000)
        slow = per_call_seconds(lambda: before.parse(text), args.repeats, 2000)
        print(f"ExpositionParser of {args.baseline_source}: {slow * 1e6:.1f} us per scrape")
        print(f"ExpositionParser of this checkout: {fast * 1e6:.1f} us per scrape")
        print(f"this checkout against {args.baseline_source}: {slow / fast:.2f}x faster")
    fast = per_call_seconds(lambda: ours.parse(text), args.repeats, 2000)
    print(f"tritonscale ExpositionParser:  {fast * 1e3:.3f} ms per scrape")
    print(f"speed-up: {baseline / fast:.1f}x")


if __name__ == "__main__":
    main()
