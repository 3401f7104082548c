"""The light fake Triton targets: one port each, an exposition the adapter parses, counters
that are exact functions of time."""

from __future__ import annotations

import time

import aiohttp

from adapter.exposition import TRITON_FAMILIES, ExpositionParser
from adapter.readings import reading_from_families
from loadtest.harness.fake_triton import MODELS, exposition, start_fake_targets


def test_the_exposition_reads_as_triton_with_exact_counters() -> None:
    families = ExpositionParser(TRITON_FAMILIES).parse(exposition(12.5, 20.0, 3.0))
    reading = reading_from_families(families, "triton", 0.0, 0.0)
    assert sorted(model for model, _ in reading.models) == sorted(MODELS)
    for counters in reading.models.values():
        assert counters.success == 250 and counters.failure == 0
        assert counters.pending == 3.0
        assert counters.queue_us == 250 * 1000 and counters.compute_infer_us == 250 * 2000


async def test_each_target_has_its_own_port_and_counts_from_its_start() -> None:
    runner, ports, targets = await start_fake_targets(3, rate_rps=100.0)
    try:
        assert len(set(ports)) == 3
        parser = ExpositionParser(TRITON_FAMILIES)
        async with aiohttp.ClientSession() as session:
            for port in ports:
                before = time.monotonic() - targets.started
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                after = time.monotonic() - targets.started
                reading = reading_from_families(parser.parse(text), "triton", 0.0, 0.0)
                success = reading.models[("resnet", "")].success
                assert int(100 * before) <= success <= int(100 * after)
        assert targets.scrapes == 3
    finally:
        await runner.cleanup()
