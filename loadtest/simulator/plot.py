"""Plot a simulation: load, replicas and queue depth per policy over time (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from loadtest.simulator.run import RunOutput

MAX_POINTS = 2000


def _binned(values: NDArray[np.generic], bins: int, how: str) -> NDArray[np.float64]:
    n = values.size // bins * bins
    if n == 0:
        return np.asarray(values, dtype=np.float64)
    shaped = np.asarray(values[:n], dtype=np.float64).reshape(-1, bins)
    out: NDArray[np.float64] = shaped.max(axis=1) if how == "max" else shaped.mean(axis=1)
    return out


def plot_run(output: RunOutput, path: str | Path, title: str) -> None:
    """Write a three-panel PNG: arrival rate, replicas (existing, incl. starting), queue depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workload = output.workload
    dt = workload.tick_seconds
    bins = max(1, workload.n_ticks // MAX_POINTS)
    duration = workload.duration
    unit, scale = ("h", 3600.0) if duration > 3 * 3600 else ("min", 60.0)
    x = (np.arange(workload.n_ticks // bins or 1) + 0.5) * bins * dt / scale

    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    load = _binned(workload.counts, bins, "mean") / dt
    axes[0].plot(x[: load.size], load, color="black", linewidth=0.8)
    axes[0].set_ylabel("arrivals (req/s)")
    axes[0].set_title(title)
    for name, result in output.results.items():
        is_oracle = name == "oracle"
        color = "black" if is_oracle else None
        width = 1.4 if is_oracle else 0.9
        replicas = _binned(result.spec, bins, "mean")
        axes[1].plot(x[: replicas.size], replicas, label=name, color=color, linewidth=width)
        queue = _binned(result.queue_depth, bins, "max")
        axes[2].plot(
            x[: queue.size],
            queue,
            label=name,
            color=color,
            linewidth=width,
            zorder=1 if is_oracle else 2,
        )
    axes[1].set_ylabel("replicas (incl. starting)")
    axes[2].set_ylabel("queue depth (max per bin)")
    axes[2].set_yscale("symlog", linthresh=1.0)
    axes[2].set_xlabel(f"time ({unit})")
    axes[1].legend(loc="upper left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
