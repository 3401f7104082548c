"""Signals: from per-target reading histories to one value per series.

A series is one model (versions summed unless configured otherwise) in one group of
targets with the same labels. Rates come from counter deltas over a short window.
A counter that goes down means the target restarted: its history is cleared so no
window spans the restart (no negative rate, no spike); until two post-restart
readings exist the group's rate series is not recomputed, and the last published
value ages towards its max age instead of being replaced by a guess or a zero.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from adapter.readings import ModelCounters, ModelKey, Reading
from adapter.snapshot import SeriesPoint

QUEUE_DEPTH = "triton_queue_depth"
REQUEST_RATE = "triton_request_rate"
ARRIVAL_RATE = "triton_arrival_rate"
QUEUE_TIME = "triton_queue_time_seconds"
QUEUE_COMPUTE_RATIO = "triton_queue_compute_ratio"
GPU_UTILIZATION = "gpu_utilization"

Labels = tuple[tuple[str, str], ...]


class ReadingHistory:
    """Recent readings of one target, oldest first, kept for ``keep_seconds``."""

    def __init__(self, keep_seconds: float) -> None:
        self._keep = keep_seconds
        self._readings: deque[Reading] = deque()
        self._last_seen: dict[ModelKey, ModelCounters] = {}
        self.restarts = 0

    def add(self, reading: Reading) -> bool:
        """Append ``reading``; return True if it shows a counter reset (history cleared).

        Counters are compared with the last reading that had each model, so a restart is
        caught even when the first readings after it come before the models are loaded.
        """
        reset = _is_reset(self._last_seen, reading)
        if reset:
            self._readings.clear()
            self._last_seen.clear()
            self.restarts += 1
        self._last_seen.update(reading.models)
        self._readings.append(reading)
        horizon = reading.mono - self._keep
        while len(self._readings) > 2 and self._readings[1].mono <= horizon:
            self._readings.popleft()
        return reset

    @property
    def newest(self) -> Reading | None:
        return self._readings[-1] if self._readings else None

    def window(self, seconds: float) -> tuple[Reading, Reading] | None:
        """(base, newest): base is the oldest reading within ``seconds`` of the newest,
        or the one just before the newest if none is; None with fewer than two readings."""
        if len(self._readings) < 2:
            return None
        newest = self._readings[-1]
        base = self._readings[-2]
        for reading in self._readings:
            if newest.mono - reading.mono <= seconds + 1e-9:
                if reading is not newest:
                    base = reading
                break
        return base, newest


def _is_reset(last_seen: Mapping[ModelKey, ModelCounters], after: Reading) -> bool:
    for key, new in after.models.items():
        old = last_seen.get(key)
        if old is None:
            continue
        if (
            new.success < old.success
            or new.failure < old.failure
            or new.queue_us < old.queue_us
            or new.compute_infer_us < old.compute_infer_us
        ):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ModelWindow:
    """Aggregated deltas of one model over one group's members."""

    seconds: float  # mean window length of the members
    completed: float  # requests finished (success + failure)
    success: float
    queue_us: float
    compute_us: float
    pending_growth: float  # change in pending requests over the window
    pending_now: float


def model_signals(
    window: ModelWindow | None, pending_now: float, window_seconds: float
) -> dict[str, float]:
    """The served signals of one model in one group. NaN means 'cannot be known'."""
    values = {QUEUE_DEPTH: pending_now}
    if window is None or window.seconds <= 0:
        return values
    completed_rate = window.completed / window.seconds
    values[REQUEST_RATE] = completed_rate
    # Offered load: what finished plus what piled up. Not capped at capacity.
    values[ARRIVAL_RATE] = max(0.0, completed_rate + window.pending_growth / window.seconds)
    if window.success > 0:
        values[QUEUE_TIME] = window.queue_us / window.success / 1e6
    elif pending_now > 0:
        # Requests are waiting and none finished: they have waited at least the window.
        values[QUEUE_TIME] = window_seconds
    else:
        values[QUEUE_TIME] = 0.0  # nothing arrived, nothing waited
    if window.compute_us > 0:
        values[QUEUE_COMPUTE_RATIO] = window.queue_us / window.compute_us
    elif pending_now == 0 and window.queue_us == 0:
        values[QUEUE_COMPUTE_RATIO] = 0.0
    else:
        values[QUEUE_COMPUTE_RATIO] = math.nan  # queue but no compute: unknown, hold
    return values


@dataclass(frozen=True, slots=True)
class GroupMember:
    history: ReadingHistory


def group_series(
    group_labels: Labels,
    members: Sequence[ReadingHistory],
    window_seconds: float,
) -> dict[str, list[SeriesPoint]]:
    """Compute every raw signal of one group of targets.

    Values are summed over members (queue depth, rates) or derived from summed
    deltas (queue time, ratio); GPU utilisation is the mean over all GPUs seen.
    A model's timestamp is the oldest newest-reading among members, so one dead
    member makes the whole group's series age out (held), not shrink.
    """
    out: dict[str, list[SeriesPoint]] = {}
    newest = [m.newest for m in members]
    live = [r for r in newest if r is not None]
    if not live:
        return out
    base_labels = dict(group_labels)
    timestamp = min(r.wall for r in live) if len(live) == len(newest) else -math.inf
    window_int = max(1, round(window_seconds))

    model_keys: set[ModelKey] = set()
    for reading in live:
        model_keys.update(reading.models)
    for key in sorted(model_keys):
        model, version = key
        labels = {**base_labels, "model": model}
        if version:
            labels["version"] = version
        pending_now = sum(_counters(r, key).pending for r in live)
        window = _aggregate_window(members, key, window_seconds)
        for metric, value in model_signals(window, pending_now, window_seconds).items():
            window_field = None if metric == QUEUE_DEPTH else window_int
            out.setdefault(metric, []).append(SeriesPoint(labels, value, timestamp, window_field))

    gpus = [u for r in live for u in r.gpu_utilization if not math.isnan(u)]
    if gpus:
        out[GPU_UTILIZATION] = [SeriesPoint(base_labels, sum(gpus) / len(gpus), timestamp)]
    return out


_ZERO = ModelCounters(0.0, 0.0, 0.0, 0.0, 0.0)


def _counters(reading: Reading, key: ModelKey) -> ModelCounters:
    return reading.models.get(key, _ZERO)


def _aggregate_window(
    members: Iterable[ReadingHistory], key: ModelKey, seconds: float
) -> ModelWindow | None:
    total = {"completed": 0.0, "success": 0.0, "queue": 0.0, "compute": 0.0, "growth": 0.0}
    lengths: list[float] = []
    pending_now = 0.0
    for history in members:
        pair = history.window(seconds)
        if pair is None:
            return None  # a member without two readings (new or just restarted)
        base, newest = pair
        if key not in base.models and key in newest.models:
            return None  # the model just appeared (loaded or restarted): no full window yet
        old, new = _counters(base, key), _counters(newest, key)
        total["completed"] += new.completed - old.completed
        total["success"] += new.success - old.success
        total["queue"] += new.queue_us - old.queue_us
        total["compute"] += new.compute_infer_us - old.compute_infer_us
        total["growth"] += new.pending - old.pending
        pending_now += new.pending
        lengths.append(newest.mono - base.mono)
    if not lengths:
        return None
    span = sum(lengths) / len(lengths)
    return ModelWindow(
        seconds=span,
        completed=total["completed"],
        success=total["success"],
        queue_us=total["queue"],
        compute_us=total["compute"],
        pending_growth=total["growth"],
        pending_now=pending_now,
    )


def merge_points(into: dict[str, list[SeriesPoint]], more: Mapping[str, list[SeriesPoint]]) -> None:
    for metric, points in more.items():
        into.setdefault(metric, []).extend(points)
