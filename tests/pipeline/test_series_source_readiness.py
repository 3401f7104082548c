"""A series source (Prometheus) counts as an input readiness waits for: the pipeline says it
has seen every input only after a snapshot built from the source's first refresh, so the
forecasts of the source's series exist (cold or warm) before ``/readyz`` judges them."""

from __future__ import annotations

import asyncio

from adapter.config import load_config
from adapter.pipeline import Pipeline
from adapter.signals import SourcedSeries
from adapter.targets import StaticTargets
from tests.support.helpers import async_wait_until


class FakeSource:
    """A series source that has not answered yet (``refreshes`` 0) until the test says so."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.reads = 0

    def latest(self) -> SourcedSeries:
        self.reads += 1
        return SourcedSeries()


async def test_every_input_is_seen_only_after_the_sources_first_refresh() -> None:
    config = load_config(None, {"scrape": {"interval_seconds": 0.5}})
    source = FakeSource()
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([]), series_sources=(source,))
    task = asyncio.create_task(pipeline.run())
    try:
        await async_wait_until(lambda: source.reads >= 2, timeout=30, message="two publishes")
        assert not pipeline.published_after_every_target_scraped()
        source.refreshes = 1
        await async_wait_until(
            pipeline.published_after_every_target_scraped,
            timeout=30,
            message="a publish after the source's first refresh",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
