"""Plots of a simulation (matplotlib, Agg): the SLO-cost frontiers with the lower bound, and
the load, then one row per policy (replicas | queue).

Frontiers: replica-hours against the share of late requests (log, up is better), one line per
policy in knob order, its default knob circled, the lower bound as a black star at each
attainment level. Timelines: one row per policy, not one panel for all: the reactive
queue-signal baselines swing between their min and max replicas and would squeeze every other
policy into a thin band of a shared axis. Each row has its own replica axis with the oracle's
plan as a grey reference, the queue depth on a symlog axis with the backlog that breaks the SLO
when every replica serves (replicas x capacity x SLO, dotted), and the policy's summary in its
title. One colour per policy in both; legends sit outside the axes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loadtest.simulator.controllers import POLICY_NAMES
from loadtest.simulator.run import RunOutput

MAX_POINTS = 2000
VIOLATION_FLOOR = 1e-5
"""Frontier plots show the share of late requests on a log axis; 0 is drawn at this floor."""


def _binned(values: NDArray[np.generic], bins: int, how: str) -> NDArray[np.float64]:
    n = values.size // bins * bins
    if n == 0:
        return np.asarray(values, dtype=np.float64)
    shaped = np.asarray(values[:n], dtype=np.float64).reshape(-1, bins)
    out: NDArray[np.float64] = shaped.max(axis=1) if how == "max" else shaped.mean(axis=1)
    return out


def plot_run(
    output: RunOutput,
    path: str | Path,
    title: str,
    *,
    capacity_rps: float | None = None,
    slo_seconds: float | None = None,
) -> None:
    """Write a PNG: arrival rate on top, then per policy its replicas and its queue depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    workload = output.workload
    dt = workload.tick_seconds
    bins = max(1, workload.n_ticks // MAX_POINTS)
    duration = workload.duration
    unit, scale = ("h", 3600.0) if duration > 3 * 3600 else ("min", 60.0)
    x = (np.arange(workload.n_ticks // bins or 1) + 0.5) * bins * dt / scale
    names = [n for n in output.results if n != "oracle"]
    oracle = output.results.get("oracle")
    rows = max(1, len(names))
    fig = plt.figure(figsize=(12, 2.0 + 1.45 * rows))
    grid = fig.add_gridspec(rows + 1, 2, height_ratios=[1.3] + [1.0] * rows, hspace=0.6)
    top = fig.add_subplot(grid[0, :])
    load = _binned(workload.counts, bins, "mean") / dt
    top.plot(x[: load.size], load, color="black", linewidth=0.7)
    top.set_ylabel("arrivals (req/s)")
    top.set_title(title)
    oracle_replicas = _binned(oracle.spec, bins, "mean") if oracle is not None else None
    replica_axes: list[Any] = []
    for row, name in enumerate(names, start=1):
        result = output.results[name]
        color = policy_colour(name)
        left = fig.add_subplot(grid[row, 0], sharex=top)
        right = fig.add_subplot(grid[row, 1], sharex=top)
        replica_axes.append(left)
        replicas = _binned(result.spec, bins, "mean")
        if oracle_replicas is not None:
            left.plot(x[: oracle_replicas.size], oracle_replicas, color="0.65", lw=0.8)
        left.plot(x[: replicas.size], replicas, color=color, lw=1.0)
        attainment = result.slo_attainment
        left.set_title(
            f"{name}: "
            + ("n/a" if math.isnan(attainment) else f"{100 * attainment:.2f} % within the SLO")
            + f", {result.replica_seconds / 3600:.1f} replica-h",
            fontsize=9,
            loc="left",
        )
        left.set_ylabel("replicas", fontsize=8)
        queue = _binned(result.queue_depth, bins, "max")
        right.plot(x[: queue.size], queue, color=color, lw=0.8)
        if capacity_rps is not None and slo_seconds is not None:
            ready = _binned(result.ready, bins, "mean")
            limit = ready * capacity_rps * slo_seconds
            right.plot(x[: limit.size], limit, color="red", lw=0.6, ls=":")
        right.set_yscale("symlog", linthresh=1.0)
        right.set_ylabel("queue (max)", fontsize=8)
        for axis in (left, right):
            axis.tick_params(labelsize=8)
            axis.grid(alpha=0.3)
            if row < rows:
                axis.tick_params(labelbottom=False)
    for axis in replica_axes:
        axis.set_ylim(bottom=0)  # each row its own top; the oracle's line is the common ruler
    handles = [
        Line2D([], [], color="C0", lw=1.0, label="replicas (incl. starting)"),
        Line2D([], [], color="0.65", lw=0.8, label="oracle's replicas"),
        Line2D([], [], color="red", lw=0.6, ls=":", label="queue that breaks the SLO"),
    ]
    top.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
    )
    for axis in fig.axes[-2:]:
        axis.set_xlabel(f"time ({unit})", fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def policy_colour(name: str) -> str:
    """A fixed colour per policy (tab10 order of POLICY_NAMES; the oracle is black)."""
    if name == "oracle":
        return "black"
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#e41a1c",
        "#8c564b",
        "#7f7f7f",
        "#17becf",
    ]
    index = POLICY_NAMES.index(name) if name in POLICY_NAMES else len(palette) - 1
    return "#e6007e" if name == "tritonscale" else palette[index % len(palette)]


def plot_frontier(summary: dict[str, Any], path: str | Path, title: str) -> None:
    """Write the SLO-cost frontiers: x replica-hours, y share of requests over the SLO (log),
    one line per policy in knob order (the default knob circled), the lower bound at each
    attainment level as a black star, the levels as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 6.0))
    for name, points in summary.get("frontier", {}).items():
        xs, ys = [], []
        for point in points:
            attainment = point["slo_attainment"]
            if attainment is None:
                continue
            xs.append(point["replica_seconds"] / 3600.0)
            ys.append(max(VIOLATION_FLOOR, 1.0 - attainment))
        if not xs:
            continue
        role = summary["policies"].get(name, {}).get("role", "")
        colour = policy_colour(name)
        width = 2.4 if name == "tritonscale" else 1.3
        style = ":" if role in ("strawman", "ablation") else "-"
        label = f"{name} ({role})" if role else name
        ax.plot(xs, ys, style, color=colour, linewidth=width, marker="o", markersize=4, label=label)
        default = summary["policies"].get(name)
        if default and default["slo_attainment"] is not None:
            ax.plot(
                default["replica_seconds"] / 3600.0,
                max(VIOLATION_FLOOR, 1.0 - default["slo_attainment"]),
                marker="o",
                markersize=10,
                markerfacecolor="none",
                markeredgecolor=colour,
                markeredgewidth=1.8,
            )
    bound = summary.get("lower_bound", {})
    for i, (level, value) in enumerate(sorted(bound.items(), key=lambda kv: float(kv[0]))):
        violation = 1.0 - float(level)
        ax.axhline(violation, color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(
            f"{100 * float(level):g} %",
            xy=(1.0, violation),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 2),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color="grey",
        )
        ax.plot(
            value / 3600.0,
            violation,
            marker="*",
            markersize=14,
            color="black",
            linestyle="none",
            label="lower bound" if i == 0 else None,
        )
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("replica-hours (scored, incl. draining)")
    ax.set_ylabel("requests over the SLO (share; up is better)")
    ax.set_title(title + " - circles: default knob")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
