"""Run the adapter's command line with its garbage collections timed (for the benchmarks).

    python loadtest/bench/gc_accounting.py STATS.json serve --config FILE

Run as a file, not with ``-m``, so that the adapter imported is the one first on the path
from the working directory (a baseline checkout when the benchmark runs one from there).
Every second STATS.json is replaced by ``{"seconds": [s0, s1, s2], "collections": [n0, n1,
n2]}``: the time spent in collections of each generation so far and how many there were
(measured with ``gc.callbacks``, in the process itself; CPU spent while the event loop
waits on the collector).
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path


class GcClock:
    """Sums the wall time of each collection by generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = info["generation"]
        self.seconds[generation] += time.perf_counter() - self._started
        self.collections[generation] += 1

    def write(self, path: Path) -> None:
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"seconds": self.seconds, "collections": self.collections}))
        partial.replace(path)  # readers never see half a file


def main() -> None:
    stats = Path(sys.argv[1])
    clock = GcClock()
    gc.callbacks.append(clock)

    def report() -> None:
        while True:
            clock.write(stats)
            time.sleep(1.0)

    threading.Thread(target=report, name="gc-accounting", daemon=True).start()
    sys.path[0] = os.getcwd()  # as ``python -m adapter`` would have it
    sys.argv = ["adapter", *sys.argv[2:]]
    runpy.run_module("adapter", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
