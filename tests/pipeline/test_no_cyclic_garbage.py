"""Scraped readings and published snapshots are freed by reference counting alone.

The service raises the cyclic collector's thresholds
(:func:`adapter.memory.collect_cycles_less_often`) because its data is renewed every second;
that is only safe while the data renewed every second forms no reference cycles. These tests
fail if a change makes a reading, a history or a publish leave cyclic garbage behind.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from adapter.config import load_config
from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.memory import GC_THRESHOLDS, collect_cycles_less_often
from adapter.pipeline import Pipeline
from adapter.predictive import PredictiveStage
from adapter.readings import reading_from_families
from adapter.targets import StaticTargets, Target
from tests.support.paths import TRITON_FIXTURE

T0 = 1_700_000_000.0


@pytest.fixture
def collector_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_scraping_and_publishing_leave_no_cyclic_garbage(collector_paused: None) -> None:
    config = load_config(None, {"predictive": {"defaults": {"capacity_rps": 50.0}}})
    targets = [
        Target.create(
            f"http://10.0.0.{index}:8002/metrics",
            "triton",
            {"namespace": "prod", "deployment": f"triton-{index // 3}"},
            pod=f"triton-{index // 3}-{index % 3}",
            pod_labels={"app": "triton"},
        )
        for index in range(9)
    ]
    pipeline = Pipeline(
        config.scrape,
        config.signals,
        StaticTargets(targets),
        stages=(PredictiveStage(config.predictive, wall_clock=lambda: T0),),
    )
    states = [pipeline.track(target, now_mono=0.0) for target in targets]
    parser = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
    text = TRITON_FIXTURE.read_text()
    for step in range(1, 80):  # past the rate window and the histories' horizon
        now = step * 0.25
        for index, state in enumerate(states):
            if (step + index) % 4 == 0:
                families = parser.parse(text.replace(" 344\n", f" {344 + step}\n"))
                state.history.add(reading_from_families(families, "triton", now, T0 + now))
        pipeline.publish(now, T0 + now)
        if step == 40:
            gc.collect()  # what the first publishes left is not counted
    assert pipeline.snapshot().points_in("triton_request_rate", "prod")
    assert gc.collect() == 0


def test_the_service_collects_cycles_less_often() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        assert collect_cycles_less_often() == (700, 10, 10)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > 700
    finally:
        gc.set_threshold(*before)
