"""Cancelling the pipeline ends it: the publisher must not lose a cancellation that lands
while new readings keep arriving (with asyncio.wait_for on Python 3.11 it did, and the
service's shutdown then waited for ever)."""

from __future__ import annotations

import asyncio
import random

from adapter.config import load_config
from adapter.pipeline import Pipeline
from adapter.targets import StaticTargets


async def test_publisher_ends_when_cancelled_while_readings_arrive() -> None:
    config = load_config(None, {"scrape": {"interval_seconds": 0.1, "timeout_seconds": 0.1}})
    rng = random.Random(1)
    survived = 0
    for _ in range(150):
        pipeline = Pipeline(config.scrape, config.signals, StaticTargets([]))
        publisher = asyncio.create_task(pipeline._publish_forever())

        async def readings_arrive(pipeline: Pipeline = pipeline) -> None:
            while True:
                pipeline._dirty.set()  # what every scrape loop does after a reading
                await asyncio.sleep(0)

        feeder = asyncio.create_task(readings_arrive())
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        publisher.cancel()
        done, _ = await asyncio.wait([publisher], timeout=2.0)
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        if not done:
            survived += 1
            publisher.cancel()
            await asyncio.wait([publisher], timeout=2.0)
    assert survived == 0, f"{survived} of 150 publishers survived their cancellation"
