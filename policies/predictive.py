"""The predictive policy as an operator configures it: one set of defaults, one builder.

The service (``adapter/predictive.py``) and the simulator (``loadtest/simulator/controllers.py``)
both build their policy with :func:`build_predictive_policy` from a :class:`PredictiveSettings`,
so the two run the same code with the same defaults and cannot drift. The horizon is derived
here, once: a replica asked for now serves only after its cold start, and the HPA acts on a
value up to one sync period after it is published, so the policy plans
``cold_start_seconds + hpa_sync_period_seconds`` ahead.

The user states the objective, not a tuning knob: ``slo_seconds`` (the queue wait a request may
have) and ``slo_attainment`` (the share of requests that must meet it, 0.995 by default). The
policy turns that into a plan by itself:

* each replica has its own queue (behind a Kubernetes Service), so even a right forecast makes
  some requests wait: :class:`policies.sizing.ReplicaQueue` learns how queues build from the
  queue depth it sees and gives the share of late requests at any utilisation;
* :class:`policies.headroom.AttainmentHeadroom` replays the recent forecast errors through that
  queue model and picks the cheapest plan, a utilisation u and a margin m over the point
  forecast, whose *request-weighted* share of late requests stays within ``1 -
  slo_attainment``: onsets, where the rate jumps and whole steps of requests wait, weigh what
  they cost; steady traffic spends the budget on fuller replicas. Before errors exist a prior
  margin (50 % of the rate, fading over the first errors) covers the blind start.

``PredictivePolicy.step`` (one call per ``step_seconds``):

1. update the arrival-rate forecaster, the queue model and the headroom with the new step;
2. forecast the rate ``horizon_seconds`` ahead (point); plan (u, m) as above; upper = point + m
   (without ``use_headroom``: the point alone, u meeting half the budget);
3. load = max(upper, current rate) (never plan below what arrives now; a step's rate above
   the last minute's mean counts only up to that mean: Poisson noise, not a trend);
4. raw = ceil(replicas_for_load(load, queue depth, sizing, utilisation=u))
   (:mod:`policies.sizing`);
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

Without a per-replica capacity (``capacity_rps`` None) the policy still forecasts (its headroom
calibrated with :class:`policies.sizing.PooledCapacity`: a request is late only when the load
exceeds the plan), but its replica counts and queue forecast mean nothing:
:attr:`PredictiveSettings.sizes_replicas` is False and callers publish the forecast only.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from policies.burst import BurstGuard
from policies.forecast import FORECASTER_NAMES, Forecast, Forecaster, make_forecaster
from policies.headroom import AttainmentHeadroom, BudgetFeedback, HeadroomState
from policies.sizing import PooledCapacity, ReplicaQueue, SizingParams, replicas_for_load
from policies.window import WindowMax

_PLACEHOLDER_CAPACITY_RPS = 1.0
"""Sizes nothing: stands in for an unknown capacity so the forecast can still run."""

QUEUE_BUILD_SECONDS = 60.0
QUEUE_BUILD_SERVICE_TIMES = 10.0
"""The headroom and the feedback judge a plan on the actual rate averaged over the time a
replica's queue takes to build: a minute, or 10 service times (10 / capacity_rps) when longer;
a 15 s burst of Poisson noise is not a stationary overload (its noise is in the queue law)."""

QUEUEING_SHARE = 0.5
"""Without headroom (the ablation), the share of the violation budget allowed for per-replica
queueing at the planned utilisation; with headroom the split is searched (AttainmentHeadroom)."""


@dataclass(frozen=True, slots=True)
class SettingRange:
    """The values a setting may take (inclusive) and why those are the limits."""

    low: float
    high: float
    why: str


SETTING_RANGES: Mapping[str, SettingRange] = MappingProxyType(
    {
        "step_seconds": SettingRange(
            0.1,
            3600.0,
            "the policy decides once per step on the mean rate over the step: a step shorter "
            "than the shortest scrape interval (0.1 s) sees no new data, and a step over an hour "
            "misses a whole peak",
        ),
        "cold_start_seconds": SettingRange(
            0.0,
            86400.0,
            "a new replica's time to Ready: the policy plans this far ahead; a day bounds it",
        ),
        "hpa_sync_period_seconds": SettingRange(
            1.0,
            3600.0,
            "kube-controller-manager's --horizontal-pod-autoscaler-sync-period (15 s by "
            "default): whole seconds, at most an hour",
        ),
        "slo_seconds": SettingRange(
            0.001,
            3600.0,
            "the target queue wait: from a millisecond (below Triton's scheduling jitter) to an "
            "hour",
        ),
        "panic_hold_seconds": SettingRange(
            0.0,
            3600.0,
            "how long a burst holds the replica count: at most an hour, as the HPA's "
            "stabilization windows",
        ),
        "scale_down_delay_seconds": SettingRange(
            0.0,
            3600.0,
            "the scale-down damping window: at most an hour, as the HPA's stabilization windows",
        ),
        "capacity_rps": SettingRange(
            0.001,
            1e7,
            "requests/s one replica serves within the SLO: a positive, finite number",
        ),
        "min_replicas": SettingRange(0, 100_000, "an HPA's replica count"),
        "max_replicas": SettingRange(1, 100_000, "an HPA's replica count"),
        "headroom_window": SettingRange(
            20, 100_000, "forecast errors kept; the headroom needs 20 before it adds a margin"
        ),
    }
)
"""Every numeric setting's limits; the service's config takes its field limits from here."""

MAX_HORIZON_STEPS = 10_000
"""The horizon (cold start + sync period) in steps may not exceed this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictiveSettings:
    """Settings of one predictive policy (seconds, requests/s; keyword-only).

    These defaults are the only ones: the service's config and the simulator take theirs
    from here; one default configuration serves every trace in BENCHMARKS.md.

    step_seconds: the policy decides once per step, on the mean arrival rate over the step.
    cold_start_seconds: a new replica's time to Ready; hpa_sync_period_seconds: the HPA's
    ``--horizontal-pod-autoscaler-sync-period``; together they make the horizon.
    slo_seconds: the queue wait a request may have; slo_attainment: the share of requests that
    must meet it (the policy calibrates its utilisation and headroom to it); capacity_rps:
    requests/s one replica serves (None: forecast only). scale_down_delay_seconds: desired may
    only fall to the max of the raw recommendations over this window (the HPA's own scaleDown
    stabilisation should then be 0, or the two holds add up). forecaster_params: extra
    parameters for :func:`policies.forecast.make_forecaster`. headroom_window: forecast errors
    kept.
    """

    step_seconds: float = 15.0
    cold_start_seconds: float = 120.0
    hpa_sync_period_seconds: float = 15.0
    forecaster: str = "holt"
    forecaster_params: Mapping[str, float] = field(default_factory=dict)
    slo_attainment: float = 0.995
    use_headroom: bool = True
    headroom_window: int = 512
    slo_seconds: float = 0.5
    capacity_rps: float | None = None
    min_replicas: int = 1
    max_replicas: int = 100
    panic_factor: float = 2.0
    panic_hold_seconds: float = 60.0
    scale_down_delay_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name, allowed in SETTING_RANGES.items():
            value = getattr(self, name)
            if name == "capacity_rps" and value is None:
                continue
            _require(
                name,
                value,
                f"a finite number in [{allowed.low:g}, {allowed.high:g}] ({allowed.why})",
                lambda v, allowed=allowed: allowed.low <= v <= allowed.high,
            )
        _require("slo_attainment", self.slo_attainment, "in (0, 1)", lambda v: 0 < v < 1)
        _require("panic_factor", self.panic_factor, "a finite number > 1", lambda v: v > 1)
        if self.forecaster not in FORECASTER_NAMES:
            raise ValueError(
                f"forecaster must be one of {', '.join(FORECASTER_NAMES)}, got {self.forecaster!r}"
            )
        for key, param in self.forecaster_params.items():
            _require(f"forecaster_params.{key}", param, "a finite number", lambda v: True)
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= 1 and >= min_replicas "
                f"({self.min_replicas})"
            )
        steps = self.horizon_seconds / self.step_seconds
        if steps > MAX_HORIZON_STEPS:
            raise ValueError(
                f"cold_start_seconds + hpa_sync_period_seconds ({self.horizon_seconds:g} s) is "
                f"{steps:.0f} steps of step_seconds ({self.step_seconds:g} s): at most "
                f"{MAX_HORIZON_STEPS} (the forecaster extrapolates that many steps ahead and the "
                "headroom keeps a forecast per step); raise step_seconds"
            )

    @property
    def horizon_seconds(self) -> float:
        """How far ahead the policy plans: cold start + HPA sync period."""
        return self.cold_start_seconds + self.hpa_sync_period_seconds

    @property
    def sizes_replicas(self) -> bool:
        """True when the capacity is known, so replica counts and queue forecasts mean
        something; False: publish the rate forecast only."""
        return self.capacity_rps is not None

    def sizing_params(self) -> SizingParams:
        return SizingParams(
            capacity_rps=self.capacity_rps or _PLACEHOLDER_CAPACITY_RPS,
            slo_seconds=self.slo_seconds,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
        )

    def steps_for(self, seconds: float, *, at_least: int = 0) -> int:
        """``seconds`` in whole steps, rounded up (a 1e-9 tolerance absorbs float noise)."""
        return max(at_least, math.ceil(seconds / self.step_seconds - 1e-9))


def _require(name: str, value: float, what: str, ok: Any) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and ok(value)):
        raise ValueError(f"{name} must be {what}, got {value!r}")


def settings_default(name: str) -> Any:
    """The default of :class:`PredictiveSettings` field ``name``, for the config and CLIs
    that present these settings (so they show the one default, not a copy of it)."""
    for settings_field in fields(PredictiveSettings):
        if settings_field.name == name:
            return settings_field.default
    raise KeyError(f"PredictiveSettings has no field {name!r}")


def build_predictive_policy(settings: PredictiveSettings) -> PredictivePolicy:
    """The one way the service and the simulator make a policy."""
    return PredictivePolicy(settings)


@dataclass(frozen=True, slots=True)
class Decision:
    """One step's output.

    desired_replicas: what to publish; arrival_forecast: the forecaster's point and own bound
    (req/s, at the horizon); arrival_upper: the rate actually planned for (after headroom);
    queue_depth_forecast: requests expected queued at the horizon if capacity stays (NaN when
    the depth is unknown); panic: burst guard state; utilisation: the planned share of each
    replica's capacity.
    """

    desired_replicas: int
    arrival_forecast: Forecast
    arrival_upper: float
    queue_depth_forecast: float
    panic: bool
    utilisation: float = 1.0

    @property
    def planned_rate(self) -> float:
        """The rate the plan is sized for at full replicas (req/s): ``arrival_upper`` over the
        planned utilisation, so ``planned_rate / capacity_rps`` is the planned replicas."""
        return self.arrival_upper / self.utilisation


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy knows now, for explanations (read-only, made on request).

    forecaster: its name; forecaster_ready: it has seen enough steps to forecast;
    forecaster_state: its parameters and state by name (:meth:`Forecaster.state`);
    headroom: the calibration of the margin over the point forecast; steps: steps taken;
    horizon_steps: how far ahead it forecasts; panic: the burst guard holds the count.
    """

    forecaster: str
    forecaster_ready: bool
    forecaster_state: tuple[tuple[str, float], ...]
    headroom: HeadroomState
    use_headroom: bool
    steps: int
    horizon_steps: int
    panic: bool


class PredictivePolicy:
    """Forecast-driven replica recommendation with calibrated headroom (see module docstring)."""

    def __init__(self, settings: PredictiveSettings) -> None:
        self.settings = settings
        self.sizing = settings.sizing_params()
        self.horizon_steps = settings.steps_for(settings.horizon_seconds, at_least=1)
        build = max(QUEUE_BUILD_SECONDS, QUEUE_BUILD_SERVICE_TIMES / self.sizing.capacity_rps)
        self._queue_build_steps = settings.steps_for(build, at_least=1)
        self.forecaster: Forecaster = make_forecaster(
            settings.forecaster, settings.step_seconds, **dict(settings.forecaster_params)
        )
        self.headroom = AttainmentHeadroom(
            settings.slo_attainment,
            self.horizon_steps,
            window=settings.headroom_window,
            smooth_steps=self._queue_build_steps,
        )
        self.queue: ReplicaQueue | PooledCapacity = (
            ReplicaQueue(self.sizing.capacity_rps, settings.slo_seconds)
            if settings.sizes_replicas
            else PooledCapacity()
        )
        self.feedback = BudgetFeedback(1.0 - settings.slo_attainment)
        self._recent_rates: deque[float] = deque(maxlen=self._queue_build_steps)
        self.queueing_budget = QUEUEING_SHARE * (1.0 - settings.slo_attainment)
        self.burst = BurstGuard(
            settings.panic_factor, settings.steps_for(settings.panic_hold_seconds)
        )
        # Window of the scale-down damping in steps, counting the current one.
        self._damping = WindowMax(settings.steps_for(settings.scale_down_delay_seconds) + 1)
        self._warm = False  # the damping window has been seeded with the running replicas
        self._previous: Decision | None = None
        # Steps fed a known arrival rate: how much history the forecaster and headroom have
        # learnt from (a warm start that replays history through step() counts it too).
        self.steps_with_rate = 0
        self._steps = 0

    def state(self) -> PolicyState:
        """A read-only summary of the forecaster and the headroom (see :class:`PolicyState`)."""
        previous = self._previous
        return PolicyState(
            forecaster=self.settings.forecaster,
            forecaster_ready=self.forecaster.ready,
            forecaster_state=tuple(self.forecaster.state().items()),
            headroom=self.headroom.state(),
            use_headroom=self.settings.use_headroom,
            steps=self._steps,
            horizon_steps=self.horizon_steps,
            panic=previous.panic if previous is not None else False,
        )

    @property
    def previous(self) -> Decision | None:
        return self._previous

    def step(
        self, arrival_rate: float, queue_depth: float, current_capacity_replicas: float
    ) -> Decision:
        """One step: rate (req/s), queue depth (requests), replicas now serving (may be frac.)."""
        settings = self.settings
        sizing = self.sizing
        self._steps += 1
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
        self.steps_with_rate += 1
        self.forecaster.update(rate)
        self.queue.observe(rate, queue_depth, current_capacity_replicas)
        self.headroom.observe_actual(rate)
        if self.forecaster.ready:
            forecast = self.forecaster.forecast(self.horizon_steps)
        else:
            forecast = Forecast(rate, rate)
        self.headroom.record_forecast(forecast.point)
        self._recent_rates.append(rate)
        if math.isfinite(current_capacity_replicas) and current_capacity_replicas > 0:
            load = sum(self._recent_rates) / len(self._recent_rates)
            ready_capacity = current_capacity_replicas * sizing.capacity_rps
            late = float(self.queue.violation(np.array([load / ready_capacity]))[0])
            if math.isfinite(queue_depth) and queue_depth > 0:
                # What the queue shows now, whatever the load says (a burst, an onset the plan
                # missed): with q requests queued per replica on average and a geometric
                # spread, a request arriving now finds c x S or more ahead of it with
                # probability (q / (1 + q))^(c S).
                per_replica = queue_depth / current_capacity_replicas
                ahead = sizing.capacity_rps * sizing.slo_seconds
                late = max(late, (per_replica / (1.0 + per_replica)) ** ahead)
            self.feedback.observe(late, rate)
        if settings.use_headroom:
            budget = self.feedback.budget
            plan = self.headroom.plan(
                rate,
                forecast.point,
                self.queue.max_utilisation(budget),
                self.queue.violation,
                budget,
            )
            utilisation = plan.utilisation
            upper = forecast.point + plan.margin
        else:
            utilisation = self.queue.max_utilisation(self.queueing_budget)
            upper = forecast.point
        recent = sum(self._recent_rates) / len(self._recent_rates)
        load = max(upper, min(rate, recent))

        capacity_now = max(0.0, current_capacity_replicas) * sizing.capacity_rps
        drain = max(sizing.slo_seconds, settings.step_seconds)
        raw = math.ceil(
            replicas_for_load(load, queue_depth, sizing, drain, utilisation=utilisation) - 1e-9
        )
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
                max(0.0, queue_depth) + (forecast.point - capacity_now) * settings.horizon_seconds,
            )
        decision = Decision(
            desired_replicas=desired,
            arrival_forecast=forecast,
            arrival_upper=upper,
            queue_depth_forecast=depth_forecast,
            panic=panic,
            utilisation=utilisation,
        )
        self._previous = decision
        return decision
