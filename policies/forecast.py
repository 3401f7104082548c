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

    def state(self) -> dict[str, float]:
        """The model's parameters and current state by name (NaN: not known yet), for
        explanations; read-only."""
        ...


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

    @property
    def rms(self) -> float:
        """Root mean square of the one-step errors (NaN before the first)."""
        return math.sqrt(self._variance) if self._count else math.nan


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

    def state(self) -> dict[str, float]:
        last = math.nan if self._last is None else self._last
        return {"last": last, "one_step_error_rms": self._errors.rms}


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

    def state(self) -> dict[str, float]:
        level = math.nan if self._level is None else self._level
        return {"alpha": self.alpha, "level": level, "one_step_error_rms": self._errors.rms}


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

    def shift_level(self, delta: float) -> None:
        """Add ``delta`` to the level (a caller re-basing the series it feeds)."""
        if self._level is not None:
            self._level += delta

    def forecast(self, horizon_steps: int) -> Forecast:
        _check_horizon(horizon_steps)
        if self._level is None:
            raise ValueError("DampedHolt has no observations yet; check .ready first")
        trend = self._trend or 0.0
        point = self._level + _damped_sum(self.phi, horizon_steps) * trend
        return _clamped(point, self._errors.spread(horizon_steps))

    def state(self) -> dict[str, float]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "phi": self.phi,
            "level": math.nan if self._level is None else self._level,
            "trend": math.nan if self._trend is None else self._trend,
            "one_step_error_rms": self._errors.rms,
        }


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

    def state(self) -> dict[str, float]:
        nan = math.nan
        season_now = float(self._season[(self._steps - 1) % self.period_steps])
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "phi": self.phi,
            "period_steps": float(self.period_steps),
            "level": self._level if self._ready else nan,
            "trend": self._trend if self._ready else nan,
            "season_now": season_now if self._ready else nan,
            "one_step_error_rms": self._errors.rms,
        }


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

    def state(self) -> dict[str, float]:
        n = self._n
        slope = math.nan
        if n >= 3:
            mean_x = self._sx / n
            sxx = self._sxx - n * mean_x * mean_x
            if sxx > 1e-12:
                slope = (self._sxy - n * mean_x * self._sy / n) / sxx
        return {
            "window_steps": float(self.window_steps),
            "points": float(n),
            "mean": self._sy / n if n else math.nan,
            "slope_per_step": slope,
        }


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


SECONDS_PER_DAY = 86_400.0
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY


class AutoSeasonal:
    """Damped Holt on the series minus a daily (or weekly) profile that it detects itself.

    Until a season is found this *is* :class:`DampedHolt` (profile 0). It keeps a bounded
    history of bin means (``bin_seconds`` each, 5 min by default) and, every
    ``detect_every_seconds`` (1 h), runs :func:`detect_period` on it with the candidate periods
    (1 day, 1 week). A candidate needs two full periods of history, so a series shorter than two
    days never leaves Holt. When one is found, the seasonal profile is the mean, per phase bin,
    of the last ``profile_periods`` periods' deviations from their own mean; between bin
    centres it is interpolated linearly. The Holt part then tracks ``value - profile(t)`` (level
    and trend: what the profile does not explain), and the forecast is
    ``holt_forecast(h) + profile(t + h)``: the profile anticipates the daily ramps within the
    horizon, the level corrects for today being higher or lower than the average day.

    Cost: update is O(1) amortised. Every step is O(1); every ``detect_every_seconds`` one
    detection + profile rebuild costs O(history bins) (at most 2 x the longest candidate +
    a day: 4,320 bins for a week at 5 min), i.e. O(history / steps per detection) per step,
    bounded by a constant. Memory: the bin history (float64) plus one profile of at most
    period/bin floats; about 40 KB per series with the weekly candidate, 8 KB for days only.

    Steps are counted by calls (a NaN = a missing step advances the clock), which keeps the
    phase of the profile; callers must call once per step, NaN when a step is missing.
    """

    def __init__(
        self,
        step_seconds: float,
        alpha: float = 0.5,
        beta: float = 0.1,
        phi: float = 0.98,
        *,
        candidates_seconds: Sequence[float] = (SECONDS_PER_DAY, SECONDS_PER_WEEK),
        bin_seconds: float = 300.0,
        detect_every_seconds: float = 3600.0,
        profile_periods: int = 3,
        min_strength: float = 0.3,
    ) -> None:
        if not (math.isfinite(step_seconds) and step_seconds > 0):
            raise ValueError(f"AutoSeasonal step_seconds must be > 0, got {step_seconds!r}")
        if profile_periods < 1:
            raise ValueError(f"AutoSeasonal profile_periods must be >= 1, got {profile_periods}")
        self.holt = DampedHolt(alpha, beta, phi)
        self.step_seconds = step_seconds
        self.bin_steps = max(1, round(bin_seconds / step_seconds))
        bin_length = self.bin_steps * step_seconds
        candidates = sorted({max(2, round(c / bin_length)) for c in candidates_seconds})
        if not candidates:
            raise ValueError("AutoSeasonal needs at least one candidate period")
        self.candidate_bins = tuple(candidates)
        self.detect_every_bins = max(1, round(detect_every_seconds / bin_length))
        self.profile_periods = profile_periods
        self.min_strength = min_strength
        # History: two periods of the longest candidate (needed to detect it) plus one of slack.
        self.history_bins = 2 * candidates[-1] + candidates[0]
        self._bins = np.full(self.history_bins, np.nan, dtype=np.float64)
        self._bins_stored = 0  # completed bins ever written (ring position = count % size)
        self._bin_sum = 0.0
        self._bin_count = 0  # finite values in the open bin
        self._bin_fill = 0  # steps (incl. missing) in the open bin
        self._steps = 0  # steps consumed (incl. missing); the last one has index steps - 1
        self._profile: npt.NDArray[np.float64] | None = None  # one value per phase bin
        self._period_bins = 0

    @property
    def ready(self) -> bool:
        return self.holt.ready

    @property
    def period_steps(self) -> int | None:
        """The detected season in steps, None while none is in use."""
        return self._period_bins * self.bin_steps if self._profile is not None else None

    def seasonal(self, step_index: int) -> float:
        """The profile at step ``step_index`` (0 = first step), 0 without a season."""
        profile = self._profile
        if profile is None:
            return 0.0
        # Bin b covers steps [b * bin_steps, (b + 1) * bin_steps); its centre is at
        # b * bin_steps + (bin_steps - 1) / 2.
        position = (step_index - (self.bin_steps - 1) / 2.0) / self.bin_steps
        lower = math.floor(position)
        fraction = position - lower
        size = self._period_bins
        below = float(profile[lower % size])
        above = float(profile[(lower + 1) % size])
        return below + fraction * (above - below)

    def update(self, value: float) -> None:
        index = self._steps
        self._steps += 1
        self.holt.update(value - self.seasonal(index) if not math.isnan(value) else math.nan)
        if not math.isnan(value):
            self._bin_sum += value
            self._bin_count += 1
        self._bin_fill += 1
        if self._bin_fill == self.bin_steps:
            self._close_bin()

    def _close_bin(self) -> None:
        mean = self._bin_sum / self._bin_count if self._bin_count else math.nan
        self._bins[self._bins_stored % self.history_bins] = mean
        self._bins_stored += 1
        self._bin_sum, self._bin_count, self._bin_fill = 0.0, 0, 0
        if self._bins_stored % self.detect_every_bins == 0:
            self._refresh_season()

    def _history(self) -> npt.NDArray[np.float64]:
        """Stored bins, oldest first; bin i of the result is absolute bin (stored - n + i)."""
        n = min(self._bins_stored, self.history_bins)
        order = (self._bins_stored - n + np.arange(n)) % self.history_bins
        history: npt.NDArray[np.float64] = self._bins[order]
        return history

    def _refresh_season(self) -> None:
        history = self._history()
        period = detect_period(history, self.candidate_bins, self.min_strength)
        now = self._steps - 1
        before = self.seasonal(now)
        if period is None:
            self._profile, self._period_bins = None, 0
        else:
            self._profile = self._build_profile(history, period)
            self._period_bins = period
        # Keep Holt's raw level where it was: its level is value - profile(now).
        self.holt.shift_level(before - self.seasonal(now))

    def _build_profile(
        self, history: npt.NDArray[np.float64], period: int
    ) -> npt.NDArray[np.float64]:
        periods = min(self.profile_periods, len(history) // period)
        recent = history[len(history) - periods * period :].reshape(periods, period)
        finite = np.isfinite(recent)
        values = np.where(finite, recent, 0.0)
        per_row = finite.sum(axis=1, keepdims=True)
        row_means = values.sum(axis=1, keepdims=True) / np.maximum(per_row, 1)
        deviations = np.where(finite, values - row_means, 0.0)
        counts = finite.sum(axis=0)
        # A phase bin never seen in these periods gets 0 (no seasonal shift), not a guess.
        profile = deviations.sum(axis=0) / np.maximum(counts, 1)
        # Align: absolute bin a sits at phase a % period.
        first_absolute = self._bins_stored - periods * period
        phase_of_row = (first_absolute + np.arange(period)) % period
        aligned = np.empty(period, dtype=np.float64)
        aligned[phase_of_row] = profile
        return aligned

    def forecast(self, horizon_steps: int) -> Forecast:
        _check_horizon(horizon_steps)
        if not self.holt.ready and self._steps == 0:
            raise ValueError("AutoSeasonal has no observations yet; check .ready first")
        base = self.holt.forecast(horizon_steps)
        shift = self.seasonal(self._steps - 1 + horizon_steps)
        return _clamped(base.point + shift, base.upper - base.point)

    def state(self) -> dict[str, float]:
        period = self.period_steps
        return {
            **self.holt.state(),
            "period_steps": math.nan if period is None else float(period),
            "seasonal_now": self.seasonal(self._steps - 1) if self._steps else math.nan,
        }


FORECASTER_NAMES = ("last", "ewma", "holt", "holt-winters", "linear", "auto")


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
    - "auto": Holt's alpha (0.5), beta (0.1), phi (0.98), min_strength (0.3) of the season
      detection; a daily or weekly profile once one is detected (:class:`AutoSeasonal`).
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
    elif name == "auto":
        forecaster = AutoSeasonal(
            step_seconds,
            remaining.pop("alpha", 0.5),
            remaining.pop("beta", 0.1),
            remaining.pop("phi", 0.98),
            min_strength=remaining.pop("min_strength", 0.3),
        )
    else:
        raise ValueError(f"unknown forecaster {name!r}; valid names: {', '.join(FORECASTER_NAMES)}")
    if remaining:
        raise ValueError(
            f"unknown parameter(s) for forecaster {name!r}: {', '.join(sorted(remaining))}"
        )
    return forecaster
