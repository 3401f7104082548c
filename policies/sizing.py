"""From load to replicas, and the predictive policy that the service runs every publish step.

Sizing (``replicas_for_load``) in continuous replicas, with c = ``capacity_rps`` (requests/s one
replica serves while meeting the SLO), lambda = arrival rate (requests/s), B = backlog (queued
requests) and T = drain time (s, the SLO or the decision step if that is longer)::

    replicas = lambda / c + B / (c * T)

The first term keeps up with arrivals; the second drains today's queue within T, so that a
request queued now waits about T at most. Missing backlog (NaN) drops the second term.

``PredictivePolicy.step`` (one call per ``step_seconds``):

1. update the arrival-rate forecaster and the calibrated headroom with the new rate;
2. forecast the rate ``horizon_seconds`` ahead (cold start + HPA sync): point, and upper =
   point + calibrated margin (the model's own bound until the headroom has enough samples; the
   point alone when ``use_headroom`` is False);
3. load = max(upper, current rate) (never plan below what arrives now);
4. raw = ceil(replicas_for_load(load, queue depth, sizing));
5. burst guard (panic when the current rate > ``panic_factor`` x current capacity): while in
   panic the desired count may not fall below the previous decision;
6. scale-down damping: desired = max of raw over the last ``scale_down_delay_seconds``
   (monotonic deque, O(1) amortised), so decreases are delayed and increases are immediate.
   Warm start: on the first step the window is seeded with the replicas running now (like
   Knative starting in panic), so a restarted policy holds the deployment for the delay
   instead of cutting it on one step of data;
7. clamp to [min_replicas, max_replicas].

``queue_depth_forecast = max(0, depth + (forecast rate - capacity of the current replicas) *
horizon_seconds)``: the backlog expected at the horizon if nothing changes. It is reported, not
used for sizing (the current depth is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from policies.burst import BurstGuard
from policies.forecast import Forecast, Forecaster, make_forecaster
from policies.headroom import QuantileHeadroom
from policies.window import WindowMax


@dataclass(frozen=True, slots=True)
class SizingParams:
    """capacity_rps: requests/s per replica at the SLO; slo_seconds: target queue wait."""

    capacity_rps: float
    slo_seconds: float
    min_replicas: int = 1
    max_replicas: int = 1000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity_rps) and self.capacity_rps > 0):
            raise ValueError(f"SizingParams.capacity_rps must be > 0, got {self.capacity_rps!r}")
        if not (math.isfinite(self.slo_seconds) and self.slo_seconds > 0):
            raise ValueError(f"SizingParams.slo_seconds must be > 0, got {self.slo_seconds!r}")
        if self.min_replicas < 0:
            raise ValueError(f"SizingParams.min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"SizingParams.max_replicas ({self.max_replicas}) must be >= 1 and >= "
                f"min_replicas ({self.min_replicas})"
            )


def replicas_for_load(
    arrival_rate: float,
    backlog: float,
    params: SizingParams,
    drain_seconds: float | None = None,
) -> float:
    """Continuous replicas for ``arrival_rate`` (req/s) plus draining ``backlog`` (requests).

    ``arrival_rate / capacity + backlog / (capacity * drain_seconds)``; ``drain_seconds``
    defaults to the SLO (the policy passes max(SLO, step)). Negative inputs count as 0; a NaN
    rate is an error (size on a known rate), a NaN backlog drops the backlog term.
    """
    if math.isnan(arrival_rate):
        raise ValueError("replicas_for_load needs a known arrival_rate, got NaN")
    drain = params.slo_seconds if drain_seconds is None else drain_seconds
    if not drain > 0:
        raise ValueError(f"drain_seconds must be > 0, got {drain!r}")
    replicas = max(0.0, arrival_rate) / params.capacity_rps
    if not math.isnan(backlog):
        replicas += max(0.0, backlog) / (params.capacity_rps * drain)
    return replicas


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictiveConfig:
    """Settings of :class:`PredictivePolicy` (seconds throughout; keyword-only).

    horizon_seconds: how far ahead to plan, normally replica cold start + HPA sync period.
    quantile: coverage of the calibrated upper bound. scale_down_delay_seconds: desired may
    only fall to the max of the raw recommendations over this window (the HPA's own scaleDown
    stabilisation should then be 0, or the two holds add up). The defaults (holt, quantile
    0.98, delay 60 s) are the best single setting of the closed-loop evaluation over every dev
    trace at D = 60 and 180 s (notes/sim_results.md). forecaster_params: extra
    parameters for :func:`policies.forecast.make_forecaster`. headroom_window: residuals kept.
    """

    step_seconds: float
    horizon_seconds: float
    sizing: SizingParams
    forecaster: str = "holt"
    forecaster_params: Mapping[str, float] = field(default_factory=dict)
    quantile: float = 0.98
    use_headroom: bool = True
    headroom_window: int = 512
    panic_factor: float = 2.0
    panic_hold_seconds: float = 60.0
    scale_down_delay_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_seconds) and self.step_seconds > 0):
            raise ValueError(f"PredictiveConfig.step_seconds must be > 0, got {self.step_seconds}")
        if not (math.isfinite(self.horizon_seconds) and self.horizon_seconds >= 0):
            raise ValueError(
                f"PredictiveConfig.horizon_seconds must be >= 0, got {self.horizon_seconds}"
            )
        if not self.panic_hold_seconds >= 0:
            raise ValueError(
                f"PredictiveConfig.panic_hold_seconds must be >= 0, got {self.panic_hold_seconds}"
            )
        if not self.scale_down_delay_seconds >= 0:
            raise ValueError(
                "PredictiveConfig.scale_down_delay_seconds must be >= 0, got "
                f"{self.scale_down_delay_seconds}"
            )

    @property
    def horizon_steps(self) -> int:
        """Horizon in whole steps, at least 1."""
        return max(1, math.ceil(self.horizon_seconds / self.step_seconds - 1e-9))

    def steps_for(self, seconds: float) -> int:
        return max(0, math.ceil(seconds / self.step_seconds - 1e-9))


def predictive_default(name: str) -> Any:
    """The default of :class:`PredictiveConfig` field ``name``: the one place the service's
    config and the simulator take their defaults from, so both run the evaluated policy."""
    for config_field in fields(PredictiveConfig):
        if config_field.name == name:
            return config_field.default
    raise KeyError(f"PredictiveConfig has no field {name!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """One step's output.

    desired_replicas: what to publish; arrival_forecast: the forecaster's point and own bound
    (req/s, at the horizon); arrival_upper: the rate actually planned for (after headroom);
    queue_depth_forecast: requests expected queued at the horizon if capacity stays (NaN when
    the depth is unknown); panic: burst guard state.
    """

    desired_replicas: int
    arrival_forecast: Forecast
    arrival_upper: float
    queue_depth_forecast: float
    panic: bool


class PredictivePolicy:
    """Forecast-driven replica recommendation with calibrated headroom (see module docstring)."""

    def __init__(self, config: PredictiveConfig) -> None:
        self.config = config
        self.forecaster: Forecaster = make_forecaster(
            config.forecaster, config.step_seconds, **dict(config.forecaster_params)
        )
        self.headroom = QuantileHeadroom(
            config.quantile, config.horizon_steps, window=config.headroom_window
        )
        self.burst = BurstGuard(config.panic_factor, config.steps_for(config.panic_hold_seconds))
        # Window of the scale-down damping in steps, counting the current one.
        self._damping = WindowMax(config.steps_for(config.scale_down_delay_seconds) + 1)
        self._warm = False  # the damping window has been seeded with the running replicas
        self._previous: Decision | None = None

    @property
    def previous(self) -> Decision | None:
        return self._previous

    def step(
        self, arrival_rate: float, queue_depth: float, current_capacity_replicas: float
    ) -> Decision:
        """One step: rate (req/s), queue depth (requests), replicas now serving (may be frac.)."""
        config = self.config
        sizing = config.sizing
        if math.isnan(arrival_rate):
            # A missing step still advances the clocks (forecaster phase, headroom matching):
            # a seasonal model would otherwise shift its season by one step per gap.
            self.forecaster.update(math.nan)
            self.headroom.step(math.nan, math.nan)
            if self._previous is not None:
                return self._previous
            hold = current_capacity_replicas if math.isfinite(current_capacity_replicas) else 0
            desired = min(sizing.max_replicas, max(sizing.min_replicas, math.ceil(hold)))
            nan = math.nan
            return Decision(desired, Forecast(nan, nan), nan, nan, False)
        rate = max(0.0, arrival_rate)
        self.forecaster.update(rate)
        self.headroom.observe_actual(rate)
        if self.forecaster.ready:
            forecast = self.forecaster.forecast(config.horizon_steps)
        else:
            forecast = Forecast(rate, rate)
        self.headroom.record_forecast(forecast.point)
        if not config.use_headroom:
            upper = forecast.point
        elif self.headroom.ready:
            upper = self.headroom.upper(forecast.point)
        else:
            upper = forecast.upper
        load = max(upper, rate)

        capacity_now = max(0.0, current_capacity_replicas) * sizing.capacity_rps
        drain = max(sizing.slo_seconds, config.step_seconds)
        raw = math.ceil(replicas_for_load(load, queue_depth, sizing, drain) - 1e-9)
        if not self._warm:
            self._warm = True
            if math.isfinite(current_capacity_replicas):
                # Warm start: what runs now counts as a recommendation made just before this
                # step, so a fresh policy (adapter restart) cannot cut a running deployment
                # before it has seen scale_down_delay_seconds of data.
                self._damping.push(math.ceil(max(0.0, current_capacity_replicas) - 1e-9))
        damped = self._damping.push(raw)
        panic = self.burst.update(rate, capacity_now)
        if panic and self._previous is not None:  # after damping: a hold does not compound
            damped = max(damped, self._previous.desired_replicas)
        desired = min(sizing.max_replicas, max(sizing.min_replicas, damped))

        if math.isnan(queue_depth):
            depth_forecast = math.nan
        else:
            depth_forecast = max(
                0.0,
                max(0.0, queue_depth) + (forecast.point - capacity_now) * config.horizon_seconds,
            )
        decision = Decision(
            desired_replicas=desired,
            arrival_forecast=forecast,
            arrival_upper=upper,
            queue_depth_forecast=depth_forecast,
            panic=panic,
        )
        self._previous = decision
        return decision
