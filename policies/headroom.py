"""Calibrated headroom: how far above the point forecast to plan.

:class:`AttainmentHeadroom` (what the predictive policy uses) picks the smallest margin that
would have met a *request* attainment target on the recent forecast errors.
:class:`QuantileHeadroom` is the plain conformal bound on the errors (a coverage of steps): its
margin is the empirical ``quantile`` of the forecaster's own recent errors at the horizon,
``actual - forecast made horizon_steps ago``, over the last ``window`` matched pairs (a ring
buffer). It uses the split-conformal rank ``ceil((n + 1) q)`` so that, for exchangeable errors,
``actual <= upper(point)`` holds with probability at least ``q``. Bursty traffic gives large
errors and so a large margin; smooth traffic gives a small one. Errors are absolute (same unit as
the forecast), so the margin tracks the recent scale of the series, not its relative size.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

RECENT_ERRORS = 32
"""How many of the newest errors :meth:`QuantileHeadroom.state` shows."""


@dataclass(frozen=True, slots=True)
class HeadroomState:
    """What a calibrated headroom knows, for explanations (``tritonscale explain``).

    Any headroom method fills the same fields, so readers show whatever the policy uses:
    method: how the margin is calibrated (e.g. "quantile"); target: what it is calibrated
    for, as (name, value) pairs (e.g. ``(("quantile", 0.98),)``); ready: enough errors to
    calibrate (before that the forecaster's own bound is used); samples / min_samples: errors
    held and needed; margin (the forecast's unit, req/s): added to the point forecast;
    recent_errors: the newest errors (actual - forecast made one horizon earlier), oldest
    first, at most :data:`RECENT_ERRORS`; details: anything else the method exposes.
    """

    method: str
    target: tuple[tuple[str, float], ...]
    ready: bool
    samples: int
    min_samples: int
    margin: float
    recent_errors: tuple[float, ...]
    details: tuple[tuple[str, float], ...] = ()


class QuantileHeadroom:
    """Learns the q-quantile of horizon-h forecast errors; ``upper(point)`` adds it to a point.

    Feed it once per step with :meth:`step` (or :meth:`observe_actual` then
    :meth:`record_forecast`); it keeps the last ``horizon_steps`` forecasts itself and matches
    each new actual with the forecast made ``horizon_steps`` calls ago. :meth:`observe` takes
    an already matched pair instead. NaN actuals or forecasts are dropped (missing, not 0).
    """

    def __init__(
        self, quantile: float, horizon_steps: int, window: int = 512, min_samples: int = 20
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"QuantileHeadroom quantile must be in (0, 1), got {quantile!r}")
        if horizon_steps < 1:
            raise ValueError(f"QuantileHeadroom horizon_steps must be >= 1, got {horizon_steps}")
        if window < 2:
            raise ValueError(f"QuantileHeadroom window must be >= 2, got {window}")
        if not 1 <= min_samples <= window:
            raise ValueError(
                f"QuantileHeadroom min_samples must be in [1, window={window}], got {min_samples}"
            )
        self.quantile = quantile
        self.horizon_steps = horizon_steps
        self.window = window
        self.min_samples = min_samples
        self._errors = np.zeros(window, dtype=np.float64)
        self._count = 0  # errors stored (<= window)
        self._next = 0  # ring position of the next write
        self._pending: deque[float] = deque(maxlen=horizon_steps)
        self._margin: float | None = None  # cached until the next observation

    @property
    def ready(self) -> bool:
        """True once ``min_samples`` errors have been seen; before that ``upper`` adds 0."""
        return self._count >= self.min_samples

    @property
    def samples(self) -> int:
        return self._count

    def observe(self, forecast_point: float, actual: float) -> None:
        """Record one matched pair: ``actual`` for a forecast made ``horizon_steps`` ago."""
        if math.isnan(forecast_point) or math.isnan(actual):
            return
        self._errors[self._next] = actual - forecast_point
        self._next = (self._next + 1) % self.window
        self._count = min(self._count + 1, self.window)
        self._margin = None

    def observe_actual(self, actual: float) -> None:
        """The actual for this step; matched with the forecast ``horizon_steps`` records ago."""
        if len(self._pending) == self.horizon_steps:
            self.observe(self._pending[0], actual)

    def record_forecast(self, point: float) -> None:
        """The forecast made this step for ``horizon_steps`` steps ahead (NaN if none)."""
        self._pending.append(point)

    def step(self, forecast_point_now: float, actual_now: float) -> None:
        """One step: match ``actual_now`` with the old forecast, then queue the new one."""
        self.observe_actual(actual_now)
        self.record_forecast(forecast_point_now)

    def margin(self) -> float:
        """The calibrated margin (>= 0); 0 before ``min_samples`` errors."""
        if not self.ready:
            return 0.0
        if self._margin is None:
            errors = self._errors[: self._count]
            rank = min(self._count, math.ceil((self._count + 1) * self.quantile))
            kth = float(np.partition(errors, rank - 1)[rank - 1])
            self._margin = max(0.0, kth)
        return self._margin

    def upper(self, point: float) -> float:
        """``point`` plus the calibrated margin (>= point)."""
        return point + self.margin()

    def state(self) -> HeadroomState:
        """A read-only summary (see :class:`HeadroomState`)."""
        count = self._count
        newest = [(self._next - 1 - i) % self.window for i in range(min(count, RECENT_ERRORS))]
        rank = min(count, math.ceil((count + 1) * self.quantile)) if count else 0
        return HeadroomState(
            method="quantile",
            target=(("quantile", self.quantile),),
            ready=self.ready,
            samples=count,
            min_samples=self.min_samples,
            margin=self.margin(),
            recent_errors=tuple(float(self._errors[i]) for i in reversed(newest)),
            details=(
                ("window", float(self.window)),
                ("horizon_steps", float(self.horizon_steps)),
                ("error_rank", float(rank)),
            ),
        )


ViolationModel = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
"""Share of requests over the SLO at each utilisation of the planned capacity (1 at >= 1)."""

RELATIVE_MARGINS = np.concatenate(([0.0], np.geomspace(0.01, 8.0, 23)))
"""Candidate margins as a share of the recent mean rate (0 to 8x), searched in one pass."""

UTILISATION_STEPS = np.array([1.0, 0.93, 0.86, 0.78, 0.68, 0.55])
"""Candidate utilisations as shares of the highest one the queue alone allows."""

RECALIBRATE_STEPS = 40
"""The plan is searched again every ``count / 8`` new pairs, at least every 4 and at most every
40 (10 minutes at 15 s steps), and reused between (its margin rescaled to the recent mean
rate): a young window changes fast, the errors of the last 2 hours slowly, and the feedback on
the budget acts at every step."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How to size for the next horizon: ``utilisation`` (share of each replica's capacity to
    plan) and ``margin`` (req/s over the point forecast)."""

    utilisation: float
    margin: float


class AttainmentHeadroom:
    """The cheapest (utilisation, margin) plan that meets a request attainment target.

    Feed it like :class:`QuantileHeadroom` (:meth:`observe_actual`, then
    :meth:`record_forecast`); it matches each actual rate with the forecast made
    ``horizon_steps`` steps before and keeps the last ``window`` pairs. It then replays those
    pairs counterfactually: had the policy planned capacity for ``(point + m) / u`` requests/s,
    an actual rate a would have run its replicas at ``a * u / (point + m)``, and ``violation``
    (the queue model) says which share of that step's requests would have waited longer than
    the SLO (all of them at >= 1: the backlog grows). The rate that loads the queue is the
    actual averaged over ``smooth_steps`` steps (about a minute): a queue takes that long to
    build, and the queue model's stationary law already holds the arrivals' own noise; the
    request weights are the step's own actual. A plan is within budget when the
    request-weighted share ``sum(a * v) / sum(a)`` is at most 1 - the attainment target. For
    each candidate utilisation u (up to the highest the queue alone allows) :meth:`plan` finds
    the smallest such margin m(u), and picks the u with the least capacity ``(point + m) / u``:
    steady, well-forecast traffic spends the budget on fuller replicas, bursty traffic on
    headroom. It is calibrated on requests, not on steps: a miss at an onset, when the rate
    jumps far above the forecast and every request of the step waits, weighs what it costs; a
    small miss that the SLO absorbs weighs little.

    Before ``prior_steps`` pairs exist (the first arrive one horizon after the start), the
    margin is at least ``prior_margin`` x the current rate, fading linearly as pairs arrive:
    the forecast is not trusted before its errors have been seen (no blind start).
    """

    def __init__(
        self,
        slo_attainment: float,
        horizon_steps: int,
        window: int = 512,
        prior_margin: float = 0.5,
        prior_steps: int = 40,
        smooth_steps: int = 1,
    ) -> None:
        if not 0.0 < slo_attainment < 1.0:
            raise ValueError(
                f"AttainmentHeadroom slo_attainment must be in (0, 1), got {slo_attainment!r}"
            )
        if horizon_steps < 1:
            raise ValueError(f"AttainmentHeadroom horizon_steps must be >= 1, got {horizon_steps}")
        if window < 2:
            raise ValueError(f"AttainmentHeadroom window must be >= 2, got {window}")
        if prior_margin < 0 or prior_steps < 0:
            raise ValueError("AttainmentHeadroom prior_margin and prior_steps must be >= 0")
        if smooth_steps < 1:
            raise ValueError(f"AttainmentHeadroom smooth_steps must be >= 1, got {smooth_steps}")
        self.slo_attainment = slo_attainment
        self.violation_budget = 1.0 - slo_attainment
        self.horizon_steps = horizon_steps
        self.window = window
        self.prior_margin = prior_margin
        self.prior_steps = prior_steps
        self._points = np.zeros(window)
        self._actuals = np.zeros(window)
        self._loads = np.zeros(window)  # actuals averaged over the last smooth_steps
        self._actual_sum = 0.0
        self._recent: deque[float] = deque(maxlen=smooth_steps)
        self._count = 0
        self._next = 0
        self._since_search = RECALIBRATE_STEPS  # search at the first call
        self._relative: tuple[float, float] | None = None  # (utilisation share, margin / scale)
        self._pending: deque[float] = deque(maxlen=horizon_steps)
        self._last_plan: Plan | None = None  # what plan() returned last, for state()
        self._last_budget = math.nan  # the violation budget that plan was given

    @property
    def samples(self) -> int:
        return self._count

    @property
    def ready(self) -> bool:
        """True once :attr:`min_samples` pairs are held (the forecast counts as warm)."""
        return self._count >= self.min_samples

    @property
    def min_samples(self) -> int:
        """Matched pairs after which the calibration outweighs the prior (half of
        ``prior_steps``): the forecast counts as warm from then on."""
        return (self.prior_steps + 1) // 2

    def observe(self, forecast_point: float, actual: float) -> None:
        """One matched pair: ``actual`` (req/s) for a forecast made ``horizon_steps`` ago."""
        if math.isnan(forecast_point) or math.isnan(actual):
            return
        self._points[self._next] = max(0.0, forecast_point)
        if self._count == self.window:
            self._actual_sum -= self._actuals[self._next]
        self._actuals[self._next] = max(0.0, actual)
        self._actual_sum += max(0.0, actual)
        self._recent.append(max(0.0, actual))
        self._loads[self._next] = sum(self._recent) / len(self._recent)
        self._next = (self._next + 1) % self.window
        self._count = min(self._count + 1, self.window)
        self._since_search += 1
        if self._next == 0:  # once per window: no float drift in the running sum
            self._actual_sum = float(self._actuals[: self._count].sum())

    def observe_actual(self, actual: float) -> None:
        if len(self._pending) == self.horizon_steps:
            self.observe(self._pending[0], actual)

    def record_forecast(self, point: float) -> None:
        self._pending.append(point)

    def step(self, forecast_point_now: float, actual_now: float) -> None:
        self.observe_actual(actual_now)
        self.record_forecast(forecast_point_now)

    def estimated_violation(
        self, margin: float, utilisation: float, violation: ViolationModel
    ) -> float:
        """Request-weighted share over the SLO had ``margin`` been added (NaN with no pairs)."""
        shares = self._replay(np.array([utilisation]), np.array([margin]), violation)
        return float(shares[0, 0])

    def _replay(
        self,
        utilisations: npt.NDArray[np.float64],
        margins: npt.NDArray[np.float64],
        violation: ViolationModel,
    ) -> npt.NDArray[np.float64]:
        """Late share for each (utilisation, margin) pair of the grids (rows, columns)."""
        n = self._count
        if n == 0:
            return np.full((utilisations.size, margins.size), math.nan)
        points = self._points[:n]
        actuals = self._actuals[:n]
        loads = self._loads[:n]
        total = float(actuals.sum())
        if total <= 0.0:
            return np.zeros((utilisations.size, margins.size))
        planned = points[None, :] + margins[:, None]  # (M, n) req/s before utilisation
        with np.errstate(divide="ignore", invalid="ignore"):
            load = np.where(planned > 0, loads[None, :] / planned, np.where(loads > 0, 1e9, 0.0))
        rho = utilisations[:, None, None] * load[None, :, :]  # (U, M, n)
        late = violation(rho.reshape(-1, n)).reshape(rho.shape)
        shares: npt.NDArray[np.float64] = (late * actuals).sum(axis=2) / total
        return shares

    def _prior(self, current_rate: float) -> float:
        if self._count >= self.prior_steps:
            return 0.0
        fade = 1.0 - self._count / self.prior_steps if self.prior_steps else 0.0
        return self.prior_margin * max(0.0, current_rate) * fade

    def _smallest_margin(
        self,
        shares: npt.NDArray[np.float64],
        margins: npt.NDArray[np.float64],
        budget: float | None = None,
    ) -> float:
        """The smallest margin whose share is within budget, interpolated (inf if none)."""
        budget = self.violation_budget if budget is None else budget
        within = np.flatnonzero(shares <= budget)
        if within.size == 0:
            return math.inf
        first = int(within[0])
        if first == 0:
            return 0.0
        lo_m, hi_m = float(margins[first - 1]), float(margins[first])
        lo_s, hi_s = float(shares[first - 1]), float(shares[first])
        frac = (lo_s - budget) / (lo_s - hi_s) if lo_s > hi_s else 1.0
        return lo_m + frac * (hi_m - lo_m)

    def margin(self, current_rate: float, utilisation: float, violation: ViolationModel) -> float:
        """The calibrated margin (req/s, >= 0) for a plan at a fixed ``utilisation``."""
        prior = self._prior(current_rate)
        scale = float(self._actuals[: self._count].mean()) if self._count else 0.0
        if scale <= 0.0:
            return prior
        margins = RELATIVE_MARGINS * scale
        shares = self._replay(np.array([utilisation]), margins, violation)[0]
        found = self._smallest_margin(shares, margins)
        return max(prior, float(margins[-1]) if math.isinf(found) else found)

    def plan(
        self,
        current_rate: float,
        point: float,
        max_utilisation: float,
        violation: ViolationModel,
        budget: float | None = None,
    ) -> Plan:
        """The cheapest plan within ``budget`` (default: 1 - the target) on the recent pairs
        (class docstring); searched again after a few new pairs (:data:`RECALIBRATE_STEPS`),
        rescaled to the recent mean rate between."""
        self._last_budget = self.violation_budget if budget is None else budget
        prior = self._prior(current_rate)
        scale = self._actual_sum / self._count if self._count else 0.0
        if scale <= 0.0:
            self._last_plan = Plan(max_utilisation, prior)
            return self._last_plan
        every = min(RECALIBRATE_STEPS, max(4, self._count // 8))
        if self._relative is None or self._since_search >= every:
            self._since_search = 0
            shares_of = UTILISATION_STEPS * max_utilisation
            margins = RELATIVE_MARGINS * scale
            shares = self._replay(shares_of, margins, violation)
            best: tuple[float, float, float] | None = None  # (capacity, u, m)
            reference = max(point, scale)
            for row, u in enumerate(shares_of):
                m = self._smallest_margin(shares[row], margins, budget)
                if math.isinf(m):
                    continue
                capacity = (reference + m) / u
                if best is None or capacity < best[0]:
                    best = (capacity, float(u), m)
            if best is None:  # nothing within budget: the most capacity the grids offer
                best = (math.inf, float(shares_of[-1]), float(margins[-1]))
            self._relative = (best[1] / max_utilisation, best[2] / scale)
        share, relative_margin = self._relative
        self._last_plan = Plan(share * max_utilisation, max(prior, relative_margin * scale))
        return self._last_plan

    def state(self) -> HeadroomState:
        """A read-only summary (see :class:`HeadroomState`): what the plan aims for (the
        stated ``slo_attainment``), the violation budget the last plan was given (the
        feedback moves it around ``1 - slo_attainment``) and that plan's margin (req/s) and
        utilisation (NaN before the first plan); the prior's floor on the margin as a share of
        the current rate (0 once ``prior_steps`` pairs are held)."""
        count = self._count
        newest = [(self._next - 1 - i) % self.window for i in range(min(count, RECENT_ERRORS))]
        plan = self._last_plan
        fade = 1.0 - count / self.prior_steps if count < self.prior_steps else 0.0
        return HeadroomState(
            method="attainment",
            target=(("slo_attainment", self.slo_attainment),),
            ready=self.ready,
            samples=count,
            min_samples=self.min_samples,
            margin=plan.margin if plan is not None else math.nan,
            recent_errors=tuple(
                float(self._actuals[i] - self._points[i]) for i in reversed(newest)
            ),
            details=(
                ("violation_budget", self.violation_budget),
                ("budget_now", self._last_budget),
                ("utilisation", plan.utilisation if plan is not None else math.nan),
                ("prior_margin_share", self.prior_margin * fade),
                ("window", float(self.window)),
                ("horizon_steps", float(self.horizon_steps)),
            ),
        )


class BudgetFeedback:
    """Corrects the plan's violation budget with the lateness the deployment actually had.

    The plan is judged on a model (the queue law, the replay of forecast errors); what runs
    also carries what the model leaves out (whole replicas, the scale-down delay, the HPA, a
    cold start that outlasts the horizon at an onset). Each step the policy estimates the late
    share of that step's requests from what *was* ready: ``violation(load / (ready x
    capacity))``. Like adaptive conformal inference (Gibbs and Candes, 2021), the budget the
    plan may spend is ``target x exp(theta)`` with ``theta += gain x w (target - late) /
    target`` (w: the step's rate over its recent mean, so busy steps count for their
    requests), clamped to ``[-limit, limit]``: steps with no late requests let the plan spend
    more, an onset that made requests late takes it back at once. While theta stays inside the
    clamp the request-weighted late share averages to the target, within
    ``2 limit target / (gain T)`` after T steps.
    """

    def __init__(self, target: float, gain: float = 0.02, limit: float = 3.0) -> None:
        if not 0.0 < target < 1.0:
            raise ValueError(f"BudgetFeedback target must be in (0, 1), got {target!r}")
        if not gain > 0 or not limit > 0:
            raise ValueError("BudgetFeedback gain and limit must be > 0")
        self.target = target
        self.gain = gain
        self.limit = limit
        self.theta = 0.0
        self._mean_rate = 0.0
        self._steps = 0

    @property
    def budget(self) -> float:
        """The violation budget the plan may spend now (< 1)."""
        return min(0.5, self.target * math.exp(self.theta))

    def observe(self, late_share: float, rate: float) -> None:
        """One step: the estimated share of its requests that were late, and its rate."""
        if not (math.isfinite(late_share) and math.isfinite(rate)) or rate < 0:
            return
        self._steps += 1
        self._mean_rate += (rate - self._mean_rate) / min(self._steps, 240)
        weight = rate / self._mean_rate if self._mean_rate > 0 else 0.0
        step = self.gain * weight * (self.target - late_share) / self.target
        self.theta = min(self.limit, max(-self.limit, self.theta + step))
