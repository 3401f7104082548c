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

Each series also keeps score of its own forecasts (:class:`ForecastCheck`): the upper bound
published one horizon ago is compared with the mean arrival rate of the step it was made
for. The adapter's /metrics exports the score, so an alert can tell when the realised
coverage falls below the configured quantile, and a dashboard can draw each forecast at the
time it forecasts.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapter.config import PredictiveConfig
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH, Labels
from adapter.snapshot import SeriesPoint
from adapter.views import ForecastView
from policies.predictive import Decision, PredictivePolicy, build_predictive_policy

ARRIVAL_FORECAST = "triton_arrival_rate_forecast"
QUEUE_DEPTH_FORECAST = "triton_queue_depth_forecast"
DESIRED_REPLICAS = "triton_desired_replicas"


@dataclass(frozen=True, slots=True)
class ForecastCheck:
    """How one series' arrival-rate forecasts have fared, as of its last step.

    ``quantile``: the coverage the upper bound is calibrated for; ``horizon_seconds``: how
    far ahead each forecast looks (whole steps). ``due_point``/``due_upper`` (req/s): the
    forecast made one horizon ago for the step that just ended (NaN when none was made);
    ``actual`` (req/s): that step's mean arrival rate (NaN when unknown). ``checks``:
    forecasts compared with a known actual so far; ``misses``: of those, how many the actual
    exceeded (the upper bound was too low).
    """

    labels: Mapping[str, str]
    quantile: float
    horizon_seconds: float
    checks: int = 0
    misses: int = 0
    due_point: float = math.nan
    due_upper: float = math.nan
    actual: float = math.nan


@dataclass(slots=True)
class _SeriesState:
    policy: PredictivePolicy
    step_seconds: float
    has_capacity: bool
    check: ForecastCheck
    next_step: float = -math.inf
    rates: list[float] = field(default_factory=list)  # fresh arrival rates since the last step
    last_rate_time: float = -math.inf
    decision: Decision | None = None
    # (point, upper) made at each of the last horizon_steps steps, oldest first
    pending: deque[tuple[float, float]] = field(default_factory=deque)
    # what the last step was fed: mean rate, depth, replicas, time of the newest rate
    inputs: tuple[float, float, float, float] = (math.nan, math.nan, math.nan, -math.inf)

    def view(self) -> ForecastView:
        settings = self.policy.settings
        rate, depth, replicas, at = self.inputs
        return ForecastView(
            labels=self.check.labels,
            settings=settings,
            horizon_seconds=self.check.horizon_seconds,
            sizes_replicas=self.has_capacity,
            input_rate=rate,
            input_depth=depth,
            input_replicas=replicas,
            input_time=at,
            decision=self.decision,
            policy=self.policy.state(),
            checks=self.check.checks,
            misses=self.check.misses,
        )

    def score(self, actual: float, decision: Decision) -> None:
        """Compare the forecast due now with ``actual``; queue this step's forecast."""
        horizon_steps = self.policy.horizon_steps
        check = self.check
        if len(self.pending) == horizon_steps:
            point, upper = self.pending.popleft()
            known = math.isfinite(actual) and math.isfinite(upper)
            check = dataclasses.replace(
                check,
                checks=check.checks + int(known),
                misses=check.misses + int(known and actual > upper),
                due_point=point,
                due_upper=upper,
                actual=actual,
            )
        else:
            check = dataclasses.replace(check, actual=actual)
        self.check = check
        # a step without a fresh rate repeats the previous decision: it forecasts nothing
        fresh = math.isfinite(actual) and math.isfinite(decision.arrival_upper)
        nan = math.nan
        self.pending.append(
            (decision.arrival_forecast.point, decision.arrival_upper) if fresh else (nan, nan)
        )


class PredictiveStage:
    """Runs one :class:`PredictivePolicy` per series, built from that series' settings."""

    def __init__(self, settings: PredictiveConfig) -> None:
        self._settings = settings
        self._series: dict[Labels, _SeriesState] = {}

    def _new_state(self, labels: Mapping[str, str]) -> _SeriesState:
        settings = self._settings.for_series(labels)
        policy = build_predictive_policy(settings)
        horizon = policy.horizon_steps * settings.step_seconds
        check = ForecastCheck(dict(labels), settings.quantile, horizon)
        return _SeriesState(policy, settings.step_seconds, settings.sizes_replicas, check)

    def forecast_checks(self) -> tuple[ForecastCheck, ...]:
        """Every live series' forecast score (immutable; read by /metrics at scrape time)."""
        return tuple(state.check for state in self._series.values())

    def forecast_views(self) -> tuple[ForecastView, ...]:
        """Every live series' predictive state (immutable copies; for the page and explain)."""
        return tuple(state.view() for state in self._series.values())

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
                state.inputs = (mean_rate, depth.value, float(replica_count), state.last_rate_time)
                state.score(mean_rate, state.decision)
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
