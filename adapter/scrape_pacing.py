"""Pacing the scrapes of many targets so that CPU shortage stretches them, never breaks them.

With 2,000 targets every second and too little CPU, starting every scrape at once makes each
one wait behind the others inside the HTTP client; their timeouts then fire on answers that
had arrived, the finished work is thrown away, and every series goes stale together (the API
answers 503 for everything). Instead:

- at most ``max_concurrent`` scrapes are in flight (:class:`ScrapePacing`); the others wait
  for a slot, and a scrape's timeout counts from the start of its own fetch, so waiting for
  CPU is never mistaken for a silent target;
- each target keeps its own grid of start times (``first + k x interval``), first starts
  spread over the interval; a cycle that overruns skips the start times already past
  (:func:`next_start`) instead of starting late ones back to back, so the effective interval
  stretches to what the CPU can carry and values age by about one stretched interval;
- the shortfall is counted: cycles run and skipped, and the recent stretch (effective
  interval / configured interval), for the self-metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

STRETCH_SMOOTHING = 0.01
"""Weight of each finished cycle in the stretch average (about the last 100 cycles)."""


def next_start(scheduled: float, now: float, interval: float) -> tuple[float, int]:
    """The next start on a target's grid and how many starts were skipped.

    ``scheduled`` is when the cycle that just ended was due (s, any clock), ``now`` when it
    ended, ``interval`` the configured interval (s). The next start is the first
    ``scheduled + k x interval`` (k >= 1) not before ``now``; ``k - 1`` starts were missed.
    """
    cycles = max(1, math.ceil((now - scheduled) / interval - 1e-9))
    return scheduled + cycles * interval, cycles - 1


class ScrapePacing:
    """Shared by every scrape loop of a pipeline: the slots, and what the cycles achieved.

    ``cycles``/``skipped_cycles`` count finished cycles and start times skipped because a
    cycle overran; ``stretch`` is the recent mean of (effective interval / interval): 1.0
    when every target is scraped on time, 2.0 when every other start is skipped.
    """

    def __init__(self, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
        self.max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent)
        self.in_flight = 0
        self.waiting = 0
        self.cycles = 0
        self.skipped_cycles = 0
        self.stretch = 1.0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_concurrent`` slots for one scrape."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()

    def record(self, skipped: int) -> None:
        """One cycle ended; ``skipped`` start times were passed over (0 when on time)."""
        self.cycles += 1
        self.skipped_cycles += skipped
        self.stretch += STRETCH_SMOOTHING * ((skipped + 1) - self.stretch)
