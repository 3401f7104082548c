"""Under CPU shortage scraping stretches its interval instead of piling up: at most
``max_concurrent`` scrapes in flight, overrun cycles skip the start times already past, and the
shortfall is counted for the self-metrics."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.readings import ModelCounters, Reading
from adapter.scrape import ScrapeLoop, TargetState
from adapter.scrape_pacing import ScrapePacing, next_start
from adapter.signals import ReadingHistory
from adapter.targets import Target
from tests.support.helpers import async_wait_until

PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)


def test_a_cycle_on_time_starts_the_next_one_interval_later() -> None:
    assert next_start(10.0, 10.3, 1.0) == (11.0, 0)
    assert next_start(10.0, 11.0, 1.0) == (11.0, 0)  # ended exactly at the next start


def test_an_overrun_skips_the_starts_already_past() -> None:
    assert next_start(10.0, 11.2, 1.0) == (12.0, 1)
    assert next_start(10.0, 13.6, 0.5) == (14.0, 7)


def test_a_slow_target_is_scraped_every_other_start_never_back_to_back() -> None:
    """A fake clock: every cycle takes 1.5 intervals (CPU shortage)."""
    pacing = ScrapePacing(max_concurrent=4)
    interval, scheduled, starts = 1.0, 0.0, []
    for _ in range(400):
        starts.append(scheduled)
        ended = scheduled + 1.5 * interval
        scheduled, skipped = next_start(scheduled, ended, interval)
        pacing.record(skipped)
    gaps = {b - a for a, b in itertools.pairwise(starts)}
    assert gaps == {2.0}  # stretched to 2 intervals; no start sooner than one interval
    assert pacing.cycles == 400 and pacing.skipped_cycles == 400
    assert pacing.stretch == pytest.approx(2.0, abs=0.05)


def test_targets_on_time_report_no_stretch() -> None:
    pacing = ScrapePacing(max_concurrent=4)
    scheduled = 0.0
    for _ in range(100):
        scheduled, skipped = next_start(scheduled, scheduled + 0.4, 1.0)
        pacing.record(skipped)
    assert pacing.skipped_cycles == 0 and pacing.stretch == 1.0


def test_max_concurrent_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ScrapePacing(0)


class FakeScrapeLoop(ScrapeLoop):
    """A scrape loop whose scrape is a fake: it waits on ``gate`` or takes ``seconds``."""

    def __init__(
        self,
        pacing: ScrapePacing,
        *,
        interval: float,
        gate: asyncio.Event | None = None,
        seconds: float = 0.0,
    ) -> None:
        state = TargetState(
            Target.create("http://fake/metrics", "triton", {"namespace": "t"}), ReadingHistory(60)
        )
        super().__init__(
            state,
            PARSER,
            interval_seconds=interval,
            timeout_seconds=1.0,
            max_bytes=1 << 20,
            backoff_max_seconds=1.0,
            sum_versions=True,
            on_reading=lambda: None,
            pacing=pacing,
        )
        self._gate = gate
        self._seconds = seconds
        self.started = 0
        self.most_in_flight = 0

    async def scrape_once(self) -> Reading:
        self.started += 1
        pacing = self._pacing
        assert pacing is not None
        self.most_in_flight = max(self.most_in_flight, pacing.in_flight)
        if self._gate is not None:
            await self._gate.wait()
        if self._seconds:
            await asyncio.sleep(self._seconds)  # the fake target's own slowness
        counters = {("m", ""): ModelCounters(0.0, float(self.started), 0.0, 0.0, 0.0)}
        return Reading(time.monotonic(), time.time(), counters)


async def test_no_more_than_max_concurrent_scrapes_are_in_flight() -> None:
    pacing = ScrapePacing(max_concurrent=2)
    gate = asyncio.Event()
    loops = [FakeScrapeLoop(pacing, interval=0.05, gate=gate) for _ in range(6)]
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        await async_wait_until(
            lambda: pacing.in_flight == 2 and pacing.waiting == 4,
            timeout=30,
            message=lambda: f"in flight {pacing.in_flight}, waiting {pacing.waiting}",
        )
        assert sum(loop.started for loop in loops) == 2  # the others wait for a slot
        gate.set()
        await async_wait_until(
            lambda: all(loop.state.scrapes >= 2 for loop in loops),
            timeout=30,
            message="every target scraped twice once the slots free up",
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert max(loop.most_in_flight for loop in loops) <= 2
    assert pacing.in_flight == 0 and pacing.waiting == 0


async def test_a_scrape_slower_than_its_interval_stretches_it() -> None:
    """A fake slow target (each scrape takes at least 3 intervals) on the real loop."""
    pacing = ScrapePacing(max_concurrent=10)
    loop = FakeScrapeLoop(pacing, interval=0.01, seconds=0.03)
    task = asyncio.create_task(loop.run())
    try:
        await async_wait_until(lambda: pacing.cycles >= 5, timeout=30, message="5 cycles")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert pacing.skipped_cycles >= 2 * pacing.cycles  # never a late start back to back
    assert pacing.stretch > 1.0
    assert loop.started <= pacing.cycles + 1
