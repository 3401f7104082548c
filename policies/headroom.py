"""Calibrated headroom: an online, distribution-free upper bound for a point forecast.

The margin is the empirical ``quantile`` of the forecaster's own recent errors at the horizon,
``actual - forecast made horizon_steps ago``, over the last ``window`` matched pairs (a ring
buffer). It uses the split-conformal rank ``ceil((n + 1) q)`` so that, for exchangeable errors,
``actual <= upper(point)`` holds with probability at least ``q``. Bursty traffic gives large
errors and so a large margin; smooth traffic gives a small one. Errors are absolute (same unit as
the forecast), so the margin tracks the recent scale of the series, not its relative size.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

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
