"""The predictive stage: runs the pure policies on each series once per step.

For every (namespace, group, model) series it feeds the arrival rate and queue depth
into a :class:`policies.sizing.PredictivePolicy` whose horizon is the configured cold
start plus the HPA sync period, and serves ``triton_arrival_rate_forecast`` (calibrated
upper bound), ``triton_queue_depth_forecast`` and ``triton_desired_replicas``. The last
two need a per-replica capacity (``capacity_rps``) for the series; without one only the
forecast is served. Outputs carry their inputs' timestamps, so they age out together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from adapter.config import Config
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH, Labels
from adapter.snapshot import SeriesPoint
from policies.sizing import PredictiveConfig, PredictivePolicy, SizingParams

ARRIVAL_FORECAST = "triton_arrival_rate_forecast"
QUEUE_DEPTH_FORECAST = "triton_queue_depth_forecast"
DESIRED_REPLICAS = "triton_desired_replicas"

# Without a configured capacity the policy still forecasts; sizing outputs are not served.
_PLACEHOLDER_CAPACITY = 1.0


@dataclass(slots=True)
class _SeriesState:
    policy: PredictivePolicy
    has_capacity: bool
    last: dict[str, SeriesPoint]


class PredictiveStage:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._step_seconds = config.scrape.interval_seconds
        self._max_age = config.signals.max_age_seconds
        self._next_step = -math.inf
        self._series: dict[Labels, _SeriesState] = {}

    def _new_state(self, labels: Mapping[str, str]) -> _SeriesState:
        settings = self._config.predictive.for_series(labels)
        capacity = settings.capacity_rps
        sizing = SizingParams(
            capacity_rps=capacity or _PLACEHOLDER_CAPACITY,
            slo_seconds=settings.slo_seconds,
            min_replicas=settings.min_replicas,
            max_replicas=settings.max_replicas,
        )
        policy = PredictivePolicy(
            PredictiveConfig(
                step_seconds=self._step_seconds,
                horizon_seconds=settings.cold_start_seconds + settings.hpa_sync_period_seconds,
                forecaster=settings.forecaster,
                quantile=settings.quantile,
                sizing=sizing,
            )
        )
        return _SeriesState(policy, capacity is not None, {})

    def step(
        self,
        now_mono: float,
        raw: Mapping[str, list[SeriesPoint]],
        replicas: Mapping[Labels, int],
    ) -> dict[str, list[SeriesPoint]]:
        """Advance every series one step if a step is due; return the latest outputs."""
        due = now_mono >= self._next_step
        if due:
            self._next_step = max(self._next_step + self._step_seconds, now_mono)
            if self._next_step < now_mono:
                self._next_step = now_mono + self._step_seconds
        arrivals = {_key(p.labels): p for p in raw.get(ARRIVAL_RATE, ())}
        depths = {_key(p.labels): p for p in raw.get(QUEUE_DEPTH, ())}
        for gone in set(self._series) - set(depths):
            del self._series[gone]
        out: dict[str, list[SeriesPoint]] = {}
        for key, depth in depths.items():
            state = self._series.get(key)
            if state is None:
                state = self._series[key] = self._new_state(depth.labels)
            if due:
                arrival = arrivals.get(key)
                self._advance(state, arrival, depth, replicas.get(_group(depth.labels), 1))
            for metric, point in state.last.items():
                out.setdefault(metric, []).append(point)
        return out

    def _advance(
        self,
        state: _SeriesState,
        arrival: SeriesPoint | None,
        depth: SeriesPoint,
        replicas: int,
    ) -> None:
        newest = max(depth.timestamp, arrival.timestamp if arrival else -math.inf)
        fresh_arrival = arrival is not None and newest - arrival.timestamp <= self._max_age
        rate = arrival.value if fresh_arrival and arrival is not None else math.nan
        decision = state.policy.step(rate, depth.value, float(replicas))
        if arrival is None or not math.isfinite(decision.arrival_upper):
            return  # no forecast yet: serve nothing rather than a guess
        timestamp = min(arrival.timestamp, depth.timestamp)
        labels = depth.labels
        state.last[ARRIVAL_FORECAST] = SeriesPoint(labels, decision.arrival_upper, timestamp)
        if state.has_capacity:
            state.last[QUEUE_DEPTH_FORECAST] = SeriesPoint(
                labels, decision.queue_depth_forecast, timestamp
            )
            state.last[DESIRED_REPLICAS] = SeriesPoint(
                labels, float(decision.desired_replicas), timestamp
            )


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _group(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("model", "version")))
