"""The predictive stage: runs the pure policies on each series once per step.

For every (namespace, group, model) series it feeds the mean arrival rate over the last
step (default 15 s, as in the simulator) and the current queue depth into a
:class:`policies.predictive.PredictivePolicy` built by the same builder the simulator uses
(horizon = cold start + HPA sync period), and serves ``triton_arrival_rate_forecast`` (the
rate the plan is sized to serve one horizon ahead: the calibrated upper bound over the planned
utilisation, so that ``forecast / capacity_rps`` is the planned replicas),
``triton_queue_depth_forecast`` and ``triton_desired_replicas``.
The last two need a per-replica capacity (``capacity_rps``) for the series; without one only
the forecast is served. Outputs carry their newest inputs' timestamps, so they age out
together: when the inputs go stale the outputs do too, and the API holds instead of serving a
guess.

**Replicas agree.** With ``wall_clock`` given (the service gives it), every series steps at
the multiples of its step in Unix time, so two replicas scraping the same targets average
the arrival rate over the same windows and feed their policies the same steps.

**Warm.** There is one notion of warm, used by readiness and by the warm start alike
(:meth:`PredictiveStage.is_warm`, :meth:`PredictiveStage.cold_series`): a series' forecast
is *warm* once its policy has been fed ``warm_steps`` steps with a known arrival rate (by
default its horizon in steps plus the forecast errors after which its calibrated headroom
outweighs its prior margin, 9 + 20 = 29 steps, 7.25 min, at the defaults: from then on its
plan is the calibrated one, as on a replica that has run for hours). Steps come from live data
or, at start, from a **warm start** (:meth:`PredictiveStage.warm_start`): recent history read
back from Prometheus (:mod:`adapter.promsource`) is replayed step by step into a fresh policy,
and every replayed step with a known rate counts, so a restarted or newly added replica serves
a warm forecast at once. :class:`WarmReadiness` holds ``/readyz`` until every series is warm
(bounded), so a restarted replica does not serve a cold forecast beside a warm one.

Each series also keeps score of its own forecasts (:class:`ForecastCheck`): the rate
published one horizon ago is compared with the mean arrival rate of the step it was made
for; a step above it overloaded the plan. The adapter's /metrics exports the score, so an
alert can tell when such steps are far more frequent than the stated ``slo_attainment``
allows, and a dashboard can draw each forecast at the time it forecasts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from adapter.config import PredictiveConfig
from adapter.signals import ARRIVAL_RATE, QUEUE_DEPTH, Labels, WarmSample
from adapter.snapshot import SeriesPoint
from adapter.views import ForecastView
from policies.predictive import Decision, PredictivePolicy, build_predictive_policy

log = logging.getLogger(__name__)

ARRIVAL_FORECAST = "triton_arrival_rate_forecast"
QUEUE_DEPTH_FORECAST = "triton_queue_depth_forecast"
DESIRED_REPLICAS = "triton_desired_replicas"


@dataclass(frozen=True, slots=True)
class ForecastCheck:
    """How one series' arrival-rate forecasts have fared, as of its last step.

    ``quantile``: the stated ``slo_attainment`` (misses should stay well below ``1 -`` it);
    ``horizon_seconds``: how
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
    live: bool = False  # seen in the raw signals (False: made by policy_for, waiting)
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
            state_of_policy=self.policy.state,
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
            (decision.arrival_forecast.point, published_rate(decision)) if fresh else (nan, nan)
        )


@dataclass(frozen=True, slots=True)
class ColdSeries:
    """A series whose forecast is not warm yet: steps fed a known rate, of ``needed``."""

    labels: Mapping[str, str]
    steps: int
    needed: int


class PredictiveStage:
    """Runs one :class:`PredictivePolicy` per series, built from that series' settings.

    ``wall_clock`` (Unix s): align each series' steps to the multiples of its step in wall
    time (replicas then agree); None: a series' first step is one step after it appears.
    """

    def __init__(
        self, settings: PredictiveConfig, *, wall_clock: Callable[[], float] | None = None
    ) -> None:
        self._settings = settings
        self._series: dict[Labels, _SeriesState] = {}
        self._wall_clock = wall_clock

    def _first_step(self, now_mono: float, step_seconds: float) -> float:
        """When a new series takes its first step (monotonic s)."""
        if self._wall_clock is None:
            return now_mono + step_seconds
        return now_mono + step_seconds - self._wall_clock() % step_seconds

    def warm_steps(self, policy: PredictivePolicy) -> int:
        """Steps with a known rate after which ``policy``'s forecast is warm."""
        if self._settings.warm_steps is not None:
            return self._settings.warm_steps
        return policy.horizon_steps + policy.headroom.min_samples

    def _warm(self, state: _SeriesState) -> bool:
        return state.policy.steps_with_rate >= self.warm_steps(state.policy)

    def is_warm(self, labels: Mapping[str, str]) -> bool | None:
        """Whether the series ``labels`` (group labels plus ``model``) serves a warm forecast;
        None while it is not live (unknown, or warm-started and waiting for its data)."""
        state = self._series.get(_key(labels))
        return None if state is None or not state.live else self._warm(state)

    def cold_series(self) -> tuple[ColdSeries, ...]:
        """The live series whose forecast is not warm yet."""
        return tuple(
            ColdSeries(
                state.check.labels, state.policy.steps_with_rate, self.warm_steps(state.policy)
            )
            for state in self._series.values()
            if state.live and not self._warm(state)
        )

    def series_count(self) -> int:
        """Series seen in the raw signals."""
        return sum(1 for state in self._series.values() if state.live)

    def policy_for(self, labels: Mapping[str, str]) -> PredictivePolicy:
        """The policy of the series with ``labels`` (a namespace, deployment and model
        series), made now if the series has not appeared yet: a warm start replays the
        series' history through its ``step`` before live data arrives, and every replayed
        step with a known rate counts towards warm. A series whose queue depth does not
        appear is kept, waiting, and not counted by readiness."""
        key = _key(labels)
        state = self._series.get(key)
        if state is None:
            state = self._series[key] = self._new_state(labels)
        return state.policy

    def _new_state(self, labels: Mapping[str, str]) -> _SeriesState:
        settings = self._settings.for_series(labels)
        policy = build_predictive_policy(settings)
        horizon = policy.horizon_steps * settings.step_seconds
        check = ForecastCheck(dict(labels), settings.slo_attainment, horizon)
        return _SeriesState(policy, settings.step_seconds, settings.sizes_replicas, check)

    def warm_start(
        self, history: Mapping[Labels, Sequence[WarmSample]], now_mono: float, now_wall: float
    ) -> int:
        """Replay recent history into fresh policies, one per series; returns how many warmed.

        Each series' samples (Unix s ``wall``, oldest first or not) are cut into its own steps
        ending at ``now_wall``: the mean of a step's known arrival rates (NaN when none, which
        advances the policy's clocks without teaching it), its last queue depth and replica
        count, then one policy step and forecast check per step, as live; each step with a
        known rate counts towards warm (:meth:`is_warm`). The state replaces a live series
        that is not warm yet (keeping the rates it has collected and its step times) or
        waits, not live, for the series to appear (as :meth:`policy_for`'s); a warm live
        series is left as it is.
        """
        warmed = 0
        for key, samples in history.items():
            known = sorted((s for s in samples if s.wall <= now_wall), key=lambda s: s.wall)
            existing = self._series.get(key)
            if not known or (existing is not None and existing.live and self._warm(existing)):
                continue
            state = self._new_state(dict(key))
            step = state.step_seconds
            steps = math.ceil((now_wall - known[0].wall) / step - 1e-9)
            index = 0
            replicas = float(known[0].replicas)
            for ending in range(steps - 1, -1, -1):
                end = now_wall - ending * step
                rates: list[float] = []
                depth = math.nan
                while index < len(known) and known[index].wall <= end:
                    sample = known[index]
                    if math.isfinite(sample.arrival_rate):
                        rates.append(sample.arrival_rate)
                    if math.isfinite(sample.queue_depth):
                        depth = sample.queue_depth
                    replicas = float(sample.replicas)
                    index += 1
                mean_rate = sum(rates) / len(rates) if rates else math.nan
                state.decision = state.policy.step(mean_rate, depth, replicas)
                state.inputs = (mean_rate, depth, replicas, end)
                state.score(mean_rate, state.decision)
            state.last_rate_time = known[-1].wall
            if existing is not None and existing.live:
                state.live = True
                state.rates = existing.rates
                state.last_rate_time = max(state.last_rate_time, existing.last_rate_time)
                state.next_step = existing.next_step
            self._series[key] = state
            warmed += 1
        return warmed

    def forecast_checks(self) -> tuple[ForecastCheck, ...]:
        """Every live series' forecast score (immutable; read by /metrics at scrape time)."""
        return tuple(state.check for state in self._series.values() if state.live)

    def forecast_views(self) -> tuple[ForecastView, ...]:
        """Every live series' predictive state (immutable copies; for the page and explain)."""
        return tuple(state.view() for state in self._series.values() if state.live)

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
            if self._series[gone].live:
                del self._series[gone]
        out: dict[str, list[SeriesPoint]] = {}
        for key, depth in depths.items():
            state = self._series.get(key)
            if state is None:
                state = self._series[key] = self._new_state(depth.labels)
            if not state.live:  # new, or made by policy_for (a warm start)
                state.live = True
                state.next_step = self._first_step(now_mono, state.step_seconds)
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
        older = arrival if arrival.timestamp <= depth.timestamp else depth
        timestamp, source = older.timestamp, older.source
        labels = depth.labels
        values = {ARRIVAL_FORECAST: published_rate(decision)}
        if state.has_capacity:
            values[QUEUE_DEPTH_FORECAST] = decision.queue_depth_forecast
            values[DESIRED_REPLICAS] = float(decision.desired_replicas)
        for metric, value in values.items():
            out.setdefault(metric, []).append(SeriesPoint(labels, value, timestamp, source=source))


def published_rate(decision: Decision) -> float:
    """The rate the plan is sized for at full replicas: upper bound / planned utilisation."""
    return decision.planned_rate


def _key(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _group(labels: Mapping[str, str]) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("model", "version")))


class WarmReadiness:
    """``/readyz``'s predictive check: not ready while a series' forecast is cold.

    Ready once the pipeline has scraped every target (and queried every Prometheus source)
    at least once (``inputs_seen``; a target that is down counts once its first attempt
    failed: it has no series to wait for), the warm start from Prometheus, if any, has
    finished (``warm_start_done``; its replayed steps count towards warm), and every series
    is warm (:meth:`PredictiveStage.is_warm`); or, whatever the series, ``max_wait_seconds``
    after this check was made (a pod must become Ready even when a series never warms up,
    e.g. its rate is never known). Once ready it stays ready: a series that appears later (a
    new Deployment) is equally cold on every replica, and a pod that left the Service for it
    would take the APIService down for every HPA. One log line when it becomes ready.
    """

    def __init__(
        self,
        stage: PredictiveStage,
        inputs_seen: Callable[[], bool],
        max_wait_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        warm_start_done: Callable[[], bool] | None = None,
    ) -> None:
        self._stage = stage
        self._inputs_seen = inputs_seen
        self._warm_start_done = warm_start_done
        self._clock = clock
        self._deadline = clock() + max_wait_seconds
        self._max_wait = max_wait_seconds
        self._ready = False

    def __call__(self) -> str | None:
        if self._ready:
            return None
        waited_out = self._clock() >= self._deadline
        inputs_seen = self._inputs_seen()
        warm_started = self._warm_start_done is None or self._warm_start_done()
        cold = self._stage.cold_series() if inputs_seen else ()
        if not waited_out:
            if not inputs_seen:
                return "waiting for the first scrape of every target"
            if not warm_started:
                return "waiting for the warm start of the forecasts from Prometheus"
            if cold:
                first = cold[0]
                labels = "/".join(
                    first.labels.get(key, "") for key in ("namespace", "deployment", "model")
                )
                left = max(0.0, self._deadline - self._clock())
                return (
                    f"{len(cold)} of {self._stage.series_count()} forecasts not warm yet "
                    f"({labels}: {first.steps} of {first.needed} steps); ready in at most "
                    f"{left:.0f} s"
                )
        self._ready = True
        if inputs_seen and warm_started and not cold:
            log.info("ready: every forecast is warm", extra={"series": self._stage.series_count()})
        else:
            log.warning(
                "ready after the longest wait allowed, with forecasts not warm",
                extra={
                    "waited_seconds": self._max_wait,
                    "every_target_scraped": inputs_seen,
                    "warm_start_done": warm_started,
                    "cold_series": [dict(c.labels) for c in cold],
                },
            )
        return None
