"""Online one-series forecasters with O(1) (amortised) updates.

Every forecaster takes one observation per fixed step (the step length is the caller's) and
forecasts ``horizon_steps`` ahead. Inputs are usually non-negative rates, so forecasts are clamped
at 0 (point and upper). A NaN observation means "missing", never 0: models without a notion of
time skip it; models with a trend or a season advance their clock by one step without learning
(the state moves along its own one-step forecast), so the phase of the season is kept.

``Forecast.upper`` is each model's own rough bound (about a one-sided 95 % normal bound from
the recent one-step errors, widened with the horizon). It is not calibrated; the calibrated
margin comes from :class:`policies.headroom.QuantileHeadroom`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Z_ONE_SIDED_95 = 1.645  # normal quantile used for the models' own (uncalibrated) bounds
ERROR_SMOOTHING = 0.05  # weight of the newest squared one-step error in the error variance


@dataclass(frozen=True, slots=True)
class Forecast:
    """point: predicted value at the horizon; upper: the model's own bound (>= point)."""

    point: float
    upper: float


@runtime_checkable
class Forecaster(Protocol):
    def update(self, value: float) -> None: ...

    def forecast(self, horizon_steps: int) -> Forecast: ...

    @property
    def ready(self) -> bool: ...


def _check_horizon(horizon_steps: int) -> None:
    if horizon_steps < 1:
        raise ValueError(f"horizon_steps must be >= 1, got {horizon_steps}")


def _check_unit(name: str, value: float, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")


def _clamped(point: float, spread: float) -> Forecast:
    point = max(0.0, point)
    return Forecast(point=point, upper=max(point, point + max(0.0, spread)))


class _ErrorScale:
    """Exponentially weighted mean of squared one-step-ahead errors (the models' own spread)."""

    __slots__ = ("_count", "_variance")

    def __init__(self) -> None:
        self._variance = 0.0
        self._count = 0

    def add(self, error: float) -> None:
        self._count += 1
        weight = max(ERROR_SMOOTHING, 1.0 / self._count)  # plain mean while young
        self._variance += weight * (error * error - self._variance)

    def spread(self, horizon_steps: int) -> float:
        return Z_ONE_SIDED_95 * math.sqrt(self._variance * horizon_steps)


class LastValue:
    """Naive forecaster: the last observed value, at every horizon."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._errors = _ErrorScale()

    @property
    def ready(self) -> bool:
        return self._last is not None

    def update(self, value: float) -> None:
        if math.isnan(value):
            return
        if self._last is not None:
            self._errors.add(value - self._last)
        self._last = value

    def forecast(self, horizon_steps: int) -> Forecast:
        _check_horizon(horizon_steps)
        if self._last is None:
            raise ValueError("LastValue has no observations yet; check .ready first")
        return _clamped(self._last, self._errors.spread(horizon_steps))


class Ewma:
    """Exponentially weighted moving average (level only): flat forecast at every horizon."""

    def __init__(self, alpha: float) -> None:
        _check_unit("Ewma alpha", alpha)
        self.alpha = alpha
        self._level: float | None = None
        self._errors = _ErrorScale()

    @property
    def ready(self) -> bool:
        return self._level is not None

    def update(self, value: float) -> None:
        if math.isnan(value):
            return
        if self._level is None:
            self._level = value
            return
        self._errors.add(value - self._level)
        self._level += self.alpha * (value - self._level)

    def forecast(self, horizon_steps: int) -> Forecast:
        _check_horizon(horizon_steps)
        if self._level is None:
            raise ValueError("Ewma has no observations yet; check .ready first")
        return _clamped(self._level, self._errors.spread(horizon_steps))


def _damped_sum(phi: float, horizon_steps: int) -> float:
    """phi + phi^2 + ... + phi^h (the damped-trend multiplier)."""
    if phi == 1.0:
        return float(horizon_steps)
    return phi * (1.0 - phi**horizon_steps) / (1.0 - phi)


class DampedHolt:
    """Holt's linear method with a damped trend (Gardner & McKenzie): level + phi-damped slope.

    Ready after two observations (level = second value, trend = their difference).
    """

    def __init__(self, alpha: float, beta: float, phi: float = 0.98) -> None:
        _check_unit("DampedHolt alpha", alpha)
        _check_unit("DampedHolt beta", beta, allow_zero=True)
        _check_unit("DampedHolt phi", phi)
        self.alpha = alpha
        self.beta = beta
        self.phi = phi
        self._level: float | None = None
        self._trend: float | None = None
        self._errors = _ErrorScale()

    @property
    def ready(self) -> bool:
        return self._trend is not None

    def update(self, value: float) -> None:
        if self._level is None:
            if not math.isnan(value):
                self._level = value
            return
        if self._trend is None:
            if not math.isnan(value):
                self._trend = value - self._level
                self._level = value
            return
        predicted = self._level + self.phi * self._trend
        if math.isnan(value):  # missing: keep the clock, learn nothing
            self._level = predicted
            self._trend *= self.phi
            return
        self._errors.add(value - predicted)
        level = self.alpha * value + (1.0 - self.alpha) * predicted
        self._trend = self.beta * (level - self._level) + (1.0 - self.beta) * self.phi * self._trend
        self._level = level

    def forecast(self, horizon_steps: int) -> Forecast:
        _check_horizon(horizon_steps)
        if self._level is None:
            raise ValueError("DampedHolt has no observations yet; check .ready first")
        trend = self._trend or 0.0
        point = self._level + _damped_sum(self.phi, horizon_steps) * trend
        return _clamped(point, self._errors.spread(horizon_steps))


class HoltWinters:
    """Additive Holt-Winters with a damped trend; season length ``period_steps``.

    Warm-up: the first full period is buffered; then level = its mean, trend = 0 and the season
    = deviations from that mean. Until then the forecast is the last value (``ready`` is False).
    """

    def __init__(
        self, alpha: float, beta: float, gamma: float, period_steps: int, phi: float = 0.98
    ) -> None:
        _check_unit("HoltWinters alpha", alpha)
        _check_unit("HoltWinters beta", beta, allow_zero=True)
        _check_unit("HoltWinters gamma", gamma, allow_zero=True)
        _check_unit("HoltWinters phi", phi)
        if period_steps < 2:
            raise ValueError(f"HoltWinters period_steps must be >= 2, got {period_steps}")
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.phi = phi
        self.period_steps = period_steps
        self._warmup: list[float] = []
        self._season = np.zeros(period_steps, dtype=np.float64)
        self._level = 0.0
        self._trend = 0.0
        self._steps = 0  # observations (incl. missing) consumed since the season started
        self._ready = False
        self._last: float | None = None
        self._errors = _ErrorScale()

    @property
    def ready(self) -> bool:
        return self._ready

    def update(self, value: float) -> None:
        if not math.isnan(value):
            self._last = value
        if not self._ready:
            self._warm_up(value)
            return
        slot = self._steps % self.period_steps
        seasonal = float(self._season[slot])
        predicted_level = self._level + self.phi * self._trend
        self._steps += 1
        if math.isnan(value):  # keep the phase, learn nothing
            self._level = predicted_level
            self._trend *= self.phi
            return
        self._errors.add(value - (predicted_level + seasonal))
        level = self.alpha * (value - seasonal) + (1.0 - self.alpha) * predicted_level
        self._trend = self.beta * (level - self._level) + (1.0 - self.beta) * self.phi * self._trend
        self._season[slot] = self.gamma * (value - level) + (1.0 - self.gamma) * seasonal
        self._level = level

    def _warm_up(self, value: float) -> None:
        self._warmup.append(value)
        if len(self._warmup) < self.period_steps:
            return
        first = np.asarray(self._warmup, dtype=np.float64)
        finite = np.isfinite(first)
        if not finite.any():  # a whole period missing: start over
            self._warmup.clear()
            return
        self._level = float(first[finite].mean())
        self._season = np.where(finite, first - self._level, 0.0)
        self._trend = 0.0
        self._steps = 0
        self._warmup.clear()
        self._ready = True

    def forecast(self, horizon_steps: int) -> Forecast:
        _check_horizon(horizon_steps)
        if not self._ready:
            if self._last is None:
                raise ValueError("HoltWinters has no observations yet; check .ready first")
            return Forecast(max(0.0, self._last), max(0.0, self._last))
        slot = (self._steps - 1 + horizon_steps) % self.period_steps
        point = (
            self._level
            + _damped_sum(self.phi, horizon_steps) * self._trend
            + float(self._season[slot])
        )
        return _clamped(point, self._errors.spread(horizon_steps))


class LinearRegression:
    """Least-squares line over the last ``window_steps`` steps, extrapolated to the horizon.

    Running sums over a ring buffer keep updates O(1); the time axis is re-centred on "now"
    each step (x = 0 is the newest step), and the sums are rebuilt from the buffer once per
    window to stop rounding drift (amortised O(1)). Missing steps occupy their slot but are not
    fitted. ``upper`` is the regression's own one-sided 95 % prediction bound.
    """

    def __init__(self, window_steps: int) -> None:
        if window_steps < 3:
            raise ValueError(f"LinearRegression window_steps must be >= 3, got {window_steps}")
        self.window_steps = window_steps
        self._values = np.full(window_steps, np.nan, dtype=np.float64)
        self._head = 0  # slot of the next write
        self._filled = 0
        self._since_rebuild = 0
        self._n = 0
        self._sx = 0.0
        self._sxx = 0.0
        self._sy = 0.0
        self._syy = 0.0
        self._sxy = 0.0

    @property
    def ready(self) -> bool:
        return self._n >= 3

    def update(self, value: float) -> None:
        window = self.window_steps
        if self._filled == window:  # evict the oldest (x = -(window - 1)), then shift
            oldest = float(self._values[self._head])
            if not math.isnan(oldest):
                x_old = -(window - 1.0)
                self._n -= 1
                self._sx -= x_old
                self._sxx -= x_old * x_old
                self._sy -= oldest
                self._syy -= oldest * oldest
                self._sxy -= x_old * oldest
        else:
            self._filled += 1
        # Shift every stored x by -1: sums over (x - 1).
        self._sxx += -2.0 * self._sx + self._n
        self._sxy -= self._sy
        self._sx -= self._n
        self._values[self._head] = value
        self._head = (self._head + 1) % window
        if not math.isnan(value):  # new point at x = 0
            self._n += 1
            self._sy += value
            self._syy += value * value
        self._since_rebuild += 1
        if self._since_rebuild >= window:
            self._rebuild()

    def _rebuild(self) -> None:
        self._since_rebuild = 0
        count = self._filled
        order = (self._head - count + np.arange(count)) % self.window_steps
        y = self._values[order]
        x = np.arange(-(count - 1), 1, dtype=np.float64)
        mask = np.isfinite(y)
        x, y = x[mask], y[mask]
        self._n = int(mask.sum())
        self._sx = float(x.sum())
        self._sxx = float((x * x).sum())
        self._sy = float(y.sum())
        self._syy = float((y * y).sum())
        self._sxy = float((x * y).sum())

    def forecast(self, horizon_steps: int) -> Forecast:
        _check_horizon(horizon_steps)
        n = self._n
        if n == 0:
            raise ValueError("LinearRegression has no observations yet; check .ready first")
        mean_x = self._sx / n
        mean_y = self._sy / n
        sxx = self._sxx - n * mean_x * mean_x
        if n < 3 or sxx <= 1e-12:
            return _clamped(mean_y, 0.0)
        slope = (self._sxy - n * mean_x * mean_y) / sxx
        intercept = mean_y - slope * mean_x
        point = intercept + slope * horizon_steps
        syy = self._syy - n * mean_y * mean_y
        sse = max(0.0, syy - slope * slope * sxx)
        sigma = math.sqrt(sse / (n - 2))
        spread = (
            Z_ONE_SIDED_95 * sigma * math.sqrt(1.0 + 1.0 / n + (horizon_steps - mean_x) ** 2 / sxx)
        )
        return _clamped(point, spread)


def detect_period(
    values: npt.ArrayLike, candidates_steps: Sequence[int], min_strength: float = 0.3
) -> int | None:
    """The candidate lag with the highest autocorrelation, if it reaches ``min_strength``.

    NaNs are ignored pairwise. A candidate needs at least two full periods of data. Returns
    None when no candidate qualifies (no clear season: use a non-seasonal model).
    """
    series = np.asarray(values, dtype=np.float64)
    if series.ndim != 1:
        raise ValueError(f"detect_period needs a 1-D series, got shape {series.shape}")
    finite = np.isfinite(series)
    if finite.sum() < 4:
        return None
    centred = np.where(finite, series - series[finite].mean(), np.nan)
    variance = float(np.nanmean(centred * centred))
    if variance <= 0:
        return None
    best_lag: int | None = None
    best_strength = -math.inf
    for lag in candidates_steps:
        if lag < 1:
            raise ValueError(f"detect_period candidates must be >= 1 step, got {lag}")
        if 2 * lag > len(series):
            continue
        products = centred[lag:] * centred[:-lag]
        valid = np.isfinite(products)
        if valid.sum() < lag:
            continue
        strength = float(products[valid].mean()) / variance
        if strength > best_strength:
            best_strength, best_lag = strength, lag
    if best_lag is None or best_strength < min_strength:
        return None
    return best_lag


FORECASTER_NAMES = ("last", "ewma", "holt", "holt-winters", "linear")


def _steps_from(
    params: dict[str, float], name: str, step_seconds: float, default_seconds: float | None
) -> int:
    steps_key, seconds_key = f"{name}_steps", f"{name}_seconds"
    if steps_key in params and seconds_key in params:
        raise ValueError(f"give either {steps_key} or {seconds_key}, not both")
    if steps_key in params:
        return int(params.pop(steps_key))
    if seconds_key in params:
        return max(1, round(params.pop(seconds_key) / step_seconds))
    if default_seconds is None:
        raise ValueError(f"the forecaster needs {steps_key} or {seconds_key}")
    return max(1, round(default_seconds / step_seconds))


def make_forecaster(name: str, step_seconds: float, **params: float) -> Forecaster:
    """Build a forecaster by name; ``*_seconds`` parameters are converted with ``step_seconds``.

    - "last": no parameters.
    - "ewma": alpha (0.3).
    - "holt": alpha (0.5), beta (0.1), phi (0.98).
    - "holt-winters": alpha (0.3), beta (0.02), gamma (0.2), phi (0.98), and period_steps or
      period_seconds (required).
    - "linear": window_steps or window_seconds (300 s).
    """
    if not step_seconds > 0:
        raise ValueError(f"step_seconds must be > 0, got {step_seconds!r}")
    remaining = dict(params)
    forecaster: Forecaster
    if name == "last":
        forecaster = LastValue()
    elif name == "ewma":
        forecaster = Ewma(remaining.pop("alpha", 0.3))
    elif name == "holt":
        forecaster = DampedHolt(
            remaining.pop("alpha", 0.5), remaining.pop("beta", 0.1), remaining.pop("phi", 0.98)
        )
    elif name == "holt-winters":
        period = _steps_from(remaining, "period", step_seconds, None)
        forecaster = HoltWinters(
            remaining.pop("alpha", 0.3),
            remaining.pop("beta", 0.02),
            remaining.pop("gamma", 0.2),
            period,
            remaining.pop("phi", 0.98),
        )
    elif name == "linear":
        forecaster = LinearRegression(_steps_from(remaining, "window", step_seconds, 300.0))
    else:
        raise ValueError(f"unknown forecaster {name!r}; valid names: {', '.join(FORECASTER_NAMES)}")
    if remaining:
        raise ValueError(
            f"unknown parameter(s) for forecaster {name!r}: {', '.join(sorted(remaining))}"
        )
    return forecaster
