"""The predictive stage: runs the pure policies on each series once per step.

For every (namespace, group, model) series it feeds the mean arrival rate over the last
step (default 15 s, as in the simulator) and the current queue depth into a
:class:`policies.predictive.PredictivePolicy` built by the same builder the simulator uses
(horizon = cold start + HPA sync period), and serves ``triton_arrival_rate_forecast``
(calibrated upper bound), ``triton_queue_depth_forecast`` and ``triton_desired_replicas``.
The last two need a per-replica capacity (``capacity_rps``) for the series; without one only
the forecast is served. Outputs carry their newest inputs' timestamps, so they age out
together: when the inputs go stale the outputs do too, and the API holds instead of serving a
guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapter.config import PredictiveConfig
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH, Labels
from adapter.snapshot import SeriesPoint
from policies.predictive import Decision, PredictivePolicy, build_predictive_policy

ARRIVAL_FORECAST = "triton_arrival_rate_forecast"
QUEUE_DEPTH_FORECAST = "triton_queue_depth_forecast"
DESIRED_REPLICAS = "triton_desired_replicas"


@dataclass(slots=True)
class _SeriesState:
    policy: PredictivePolicy
    step_seconds: float
    has_capacity: bool
    next_step: float = -math.inf
    rates: list[float] = field(default_factory=list)  # fresh arrival rates since the last step
    last_rate_time: float = -math.inf
    decision: Decision | None = None


class PredictiveStage:
    """Runs one :class:`PredictivePolicy` per series, built from that series' settings."""

    def __init__(self, settings: PredictiveConfig) -> None:
        self._settings = settings
        self._series: dict[Labels, _SeriesState] = {}

    def _new_state(self, labels: Mapping[str, str]) -> _SeriesState:
        settings = self._settings.for_series(labels)
        return _SeriesState(
            build_predictive_policy(settings), settings.step_seconds, settings.sizes_replicas
        )

    def step(
        self,
        now_mono: float,
        raw: Mapping[str, list[SeriesPoint]],
        replicas: Mapping[Labels, int],
    ) -> dict[str, list[SeriesPoint]]:
        """Collect this pass's inputs; advance each series whose step is due."""
        arrivals = {_key(p.labels): p for p in raw.get(ARRIVAL_RATE, ())}
        depths = {_key(p.labels): p for p in raw.get(QUEUE_DEPTH, ())}
        for gone in set(self._series) - set(depths):
            del self._series[gone]
        out: dict[str, list[SeriesPoint]] = {}
        for key, depth in depths.items():
            state = self._series.get(key)
            if state is None:
                state = self._series[key] = self._new_state(depth.labels)
                state.next_step = now_mono + state.step_seconds
            arrival = arrivals.get(key)
            if (
                arrival is not None
                and arrival.timestamp > state.last_rate_time
                and math.isfinite(arrival.value)
            ):
                state.rates.append(arrival.value)  # each fresh reading once, never a held one
                state.last_rate_time = arrival.timestamp
            if now_mono >= state.next_step:
                state.next_step = max(state.next_step + state.step_seconds, now_mono)
                mean_rate = sum(state.rates) / len(state.rates) if state.rates else math.nan
                state.rates.clear()
                replica_count = replicas.get(_group(depth.labels), 1)
                state.decision = state.policy.step(mean_rate, depth.value, float(replica_count))
            if arrival is not None:
                self._emit(state, arrival, depth, out)
        return out

    def _emit(
        self,
        state: _SeriesState,
        arrival: SeriesPoint,
        depth: SeriesPoint,
        out: dict[str, list[SeriesPoint]],
    ) -> None:
        decision = state.decision
        if decision is None or not math.isfinite(decision.arrival_upper):
            return  # no forecast yet: serve nothing rather than a guess
        timestamp = min(arrival.timestamp, depth.timestamp)
        labels = depth.labels
        values = {ARRIVAL_FORECAST: decision.arrival_upper}
        if state.has_capacity:
            values[QUEUE_DEPTH_FORECAST] = decision.queue_depth_forecast
            values[DESIRED_REPLICAS] = float(decision.desired_replicas)
        for metric, value in values.items():
            out.setdefault(metric, []).append(SeriesPoint(labels, value, timestamp))


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _group(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("model", "version")))
