"""A publish that keeps failing fails readiness, then liveness; it is logged once, not per pass.

Before: a failing publish logged a traceback every second while /readyz and /livez stayed 200
and every metric answered 404.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapter.config import load_config
from adapter.metrics_catalog import SERVED_METRICS
from adapter.pipeline import (
    LIVENESS_AFTER_FAILING_SECONDS,
    UNREADY_AFTER_FAILED_PUBLISHES,
    Pipeline,
)
from adapter.provider import SnapshotProvider
from adapter.selfmetrics import SelfMetrics
from adapter.service import build_app
from adapter.targets import StaticTargets


class Breakable:
    """Makes the pipeline's own signal computation raise ``error`` while it is set: a bug in a
    publish pass. (A failing *stage* does not fail a publish: its outputs are left out and the
    raw signals still published, see test_stage_failure.py.)"""

    def __init__(self, pipeline: Pipeline) -> None:
        self.error: Exception | None = None
        compute = pipeline._with_carried

        def breaking(*args: Any, **kwargs: Any) -> Any:
            if self.error is not None:
                raise self.error
            return compute(*args, **kwargs)

        pipeline._with_carried = breaking  # type: ignore[method-assign]


def make() -> tuple[Pipeline, Breakable]:
    config = load_config(None)
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([]))
    return pipeline, Breakable(pipeline)


def test_readiness_fails_after_failed_publishes_and_liveness_after_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline, stage = make()
    assert pipeline.try_publish(0.0) is not None
    stage.error = OverflowError("math range error")
    caplog.set_level(logging.INFO, logger="adapter.pipeline")
    for t in range(1, UNREADY_AFTER_FAILED_PUBLISHES):
        assert pipeline.try_publish(float(t)) is None
        assert pipeline.readiness() is None  # one or two failures: still ready
    for t in range(UNREADY_AFTER_FAILED_PUBLISHES, 40):
        assert pipeline.try_publish(float(t)) is None
    reason = pipeline.readiness()
    assert reason is not None and "OverflowError: math range error" in reason
    assert pipeline.liveness(now_mono=40.0) is None
    assert pipeline.liveness_after_seconds == LIVENESS_AFTER_FAILING_SECONDS
    dead = pipeline.liveness(now_mono=1.0 + LIVENESS_AFTER_FAILING_SECONDS)
    assert dead is not None and "publishing has failed for 60 s" in dead
    # one traceback for 39 identical failures
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    stage.error = ZeroDivisionError("division by zero")
    pipeline.try_publish(41.0)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2
    stage.error = None
    assert pipeline.try_publish(42.0) is not None
    assert pipeline.readiness() is None
    assert pipeline.liveness(now_mono=1000.0) is None
    assert caplog.records[-1].getMessage() == "publish recovered"


def test_liveness_waits_twice_max_age_when_that_is_longer() -> None:
    config = load_config(None, {"signals": {"max_age_seconds": 120}})
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([]))
    assert pipeline.liveness_after_seconds == 240


async def test_the_probes_answer_500_while_publishing_fails() -> None:
    pipeline, stage = make()
    pipeline.try_publish(time.monotonic())
    provider = SnapshotProvider(SERVED_METRICS, pipeline.snapshot, time.time, 30.0)
    app = build_app(pipeline, provider, 30.0, SelfMetrics())
    async with TestClient(TestServer(app)) as client:
        for path in ("/readyz", "/livez"):
            assert (await client.get(path)).status == 200
        stage.error = OverflowError("math range error")
        long_ago = time.monotonic() - 2 * LIVENESS_AFTER_FAILING_SECONDS
        for _ in range(UNREADY_AFTER_FAILED_PUBLISHES):
            pipeline.try_publish(long_ago)
        ready = await client.get("/readyz?verbose")
        assert ready.status == 500
        assert "[-]metrics-ready failed: the last 3 publishes failed" in await ready.text()
        live = await client.get("/livez")
        assert live.status == 500
        assert "publishing has failed for" in await live.text()
