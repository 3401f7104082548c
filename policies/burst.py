"""Burst guard: a panic mode in the spirit of Knative's KPA.

Knative enters panic when the panic-window (6 s) demand is at least 200 % of what the ready pods
serve, and then never scales down until a stable window passes without a new trigger. Here the
caller passes a short-window arrival rate and the capacity of the current replicas; the guard
says whether to act on the short rate now and to hold off scale-down.
"""

from __future__ import annotations

import math


class BurstGuard:
    """True while in panic: entered when ``rate > panic_factor * capacity``, held ``hold_steps``.

    The hold counts calls to :meth:`update` after the last trigger, so with ``hold_steps`` = 4
    the guard stays True for the trigger step and the 4 steps after it. A NaN rate never
    triggers (missing is not a burst) but the hold keeps counting down.
    """

    def __init__(self, panic_factor: float = 2.0, hold_steps: int = 4) -> None:
        if not panic_factor > 0:
            raise ValueError(f"BurstGuard panic_factor must be > 0, got {panic_factor!r}")
        if hold_steps < 0:
            raise ValueError(f"BurstGuard hold_steps must be >= 0, got {hold_steps}")
        self.panic_factor = panic_factor
        self.hold_steps = hold_steps
        self._steps_since_trigger: int | None = None

    @property
    def in_panic(self) -> bool:
        since = self._steps_since_trigger
        return since is not None and since <= self.hold_steps

    def update(self, short_window_rate: float, capacity_rps_total: float) -> bool:
        """Advance one step; return whether the guard is in panic after this observation."""
        if self._steps_since_trigger is not None:
            self._steps_since_trigger += 1
        if not math.isnan(short_window_rate) and short_window_rate > self.panic_factor * max(
            0.0, capacity_rps_total
        ):
            self._steps_since_trigger = 0
        return self.in_panic
