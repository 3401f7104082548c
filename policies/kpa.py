"""A Knative-KPA-like baseline: stable/panic windows on the arrival rate.

Port of ``Scale()`` in knative/serving ``pkg/autoscaler/scaling/autoscaler.go`` for the RPS
metric, with the defaults of ``config/core/configmaps/autoscaler.yaml``: stable window 60 s,
panic window 10 % of it (6 s), panic threshold 200 %, target utilisation 70 %, max scale-up rate
1000, max scale-down rate 2, scale-down delay 0 s. Per step:

- stable/panic value = mean rate over the window (missing samples are skipped, not 0);
- target per pod = capacity_rps x target_utilisation;
- desired stable/panic = ceil(value / target), each clamped to
  [floor(ready / max_scale_down_rate), ceil(max_scale_up_rate x ready)] with ready >= 1;
- panic starts (or is extended) when ceil(panic value / target) / ready >= panic threshold and
  ends when it is not and the last panic time is more than a stable window ago;
- in panic: desired = max(stable, panic), and never below the highest count of this panic;
- optional scale-down delay: max of the desired counts over that window;
- clamped to [min_replicas, max_replicas] (Knative's min/max-scale annotations).

Knative restarts in panic with the current count when it has more than one pod, because the
window history is lost; pass ``initial_ready_replicas`` to model that.
"""

from __future__ import annotations

import math

from policies.window import WindowMax, WindowMean


class KnativeLikePolicy:
    """Knative-style reactive policy; call :meth:`step` once per ``step_seconds``."""

    def __init__(
        self,
        step_seconds: float,
        capacity_rps: float,
        *,
        target_utilization: float = 0.7,
        stable_window_seconds: float = 60.0,
        panic_window_percentage: float = 10.0,
        panic_threshold: float = 2.0,
        max_scale_up_rate: float = 1000.0,
        max_scale_down_rate: float = 2.0,
        scale_down_delay_seconds: float = 0.0,
        min_replicas: int = 1,
        max_replicas: int = 1000,
        initial_ready_replicas: int = 0,
    ) -> None:
        if not step_seconds > 0:
            raise ValueError(f"KnativeLikePolicy step_seconds must be > 0, got {step_seconds}")
        if not capacity_rps > 0:
            raise ValueError(f"KnativeLikePolicy capacity_rps must be > 0, got {capacity_rps}")
        if not 0 < target_utilization <= 1:
            raise ValueError(
                f"KnativeLikePolicy target_utilization must be in (0, 1], got {target_utilization}"
            )
        if not stable_window_seconds >= step_seconds:
            raise ValueError(
                "KnativeLikePolicy stable_window_seconds must be >= step_seconds, got "
                f"{stable_window_seconds}"
            )
        if not 0 < panic_window_percentage <= 100:
            raise ValueError(
                "KnativeLikePolicy panic_window_percentage must be in (0, 100], got "
                f"{panic_window_percentage}"
            )
        if not max_scale_up_rate > 1 or not max_scale_down_rate > 1:
            raise ValueError(
                "KnativeLikePolicy max_scale_up_rate and max_scale_down_rate must be > 1"
            )
        if not 0 <= min_replicas <= max_replicas:
            raise ValueError(
                f"KnativeLikePolicy needs 0 <= min_replicas ({min_replicas}) <= max_replicas "
                f"({max_replicas})"
            )
        self.step_seconds = step_seconds
        self.target_per_pod = capacity_rps * target_utilization
        self.stable_window_seconds = stable_window_seconds
        self.panic_threshold = panic_threshold
        self.max_scale_up_rate = max_scale_up_rate
        self.max_scale_down_rate = max_scale_down_rate
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        stable_steps = max(1, round(stable_window_seconds / step_seconds))
        panic_seconds = stable_window_seconds * panic_window_percentage / 100.0
        self._stable = WindowMean(stable_steps)
        self._panic = WindowMean(max(1, round(panic_seconds / step_seconds)))
        delay_steps = math.ceil(scale_down_delay_seconds / step_seconds - 1e-9)
        self._delay = WindowMax(delay_steps + 1) if scale_down_delay_seconds > 0 else None
        self._now = 0.0
        self._panic_time: float | None = None
        self._max_panic_pods = 0
        self._last: int | None = None
        if initial_ready_replicas > 1:  # NewAutoscaler: start in panic to hold the count
            self._panic_time = 0.0
            self._max_panic_pods = initial_ready_replicas

    @property
    def in_panic(self) -> bool:
        return self._panic_time is not None

    def step(self, arrival_rate_sample: float, ready_replicas: int) -> int:
        """Record one rate sample (req/s; NaN = missing) and return the desired replicas."""
        self._now += self.step_seconds
        now = self._now
        self._stable.push(arrival_rate_sample)
        self._panic.push(arrival_rate_sample)
        stable_value = self._stable.mean()
        panic_value = self._panic.mean()
        if math.isnan(stable_value) or math.isnan(panic_value):  # ErrNoData: no change
            held = self._last if self._last is not None else ready_replicas
            return min(self.max_replicas, max(self.min_replicas, held))
        ready = max(1.0, float(ready_replicas))
        max_scale_up = math.ceil(self.max_scale_up_rate * ready)
        max_scale_down = math.floor(ready / self.max_scale_down_rate)
        dspc = math.ceil(stable_value / self.target_per_pod)
        dppc = math.ceil(panic_value / self.target_per_pod)
        desired_stable = int(min(max(dspc, max_scale_down), max_scale_up))
        desired_panic = int(min(max(dppc, max_scale_down), max_scale_up))
        over_threshold = dppc / ready >= self.panic_threshold
        if over_threshold:
            self._panic_time = now  # begin, or extend, the panic
        elif self._panic_time is not None and self._panic_time + self.stable_window_seconds < now:
            self._panic_time = None
            self._max_panic_pods = 0
        desired = desired_stable
        if self._panic_time is not None:
            desired = max(desired, desired_panic)
            self._max_panic_pods = max(self._max_panic_pods, desired)
            desired = self._max_panic_pods
        if self._delay is not None:
            desired = self._delay.push(desired)
        desired = min(self.max_replicas, max(self.min_replicas, desired))
        self._last = desired
        return desired
