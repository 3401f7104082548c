"""A stage that raises on extreme input does not stop publishing: the raw signals are
still served, the stage's outputs are not, and the failure is logged once."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import pytest

from adapter.config import load_config
from adapter.pipeline import Pipeline
from adapter.readings import ModelCounters, Reading
from adapter.signals import Labels
from adapter.snapshot import SeriesPoint
from adapter.targets import StaticTargets, Target

T0 = 1_700_000_000.0


class Flaky:
    """Raises while ``failing``; otherwise serves an infinite and a negative value."""

    def __init__(self) -> None:
        self.failing = True

    def step(
        self, now_mono: float, raw: Mapping[str, list[SeriesPoint]], replicas: Mapping[Labels, int]
    ) -> dict[str, list[SeriesPoint]]:
        if self.failing:
            raise OverflowError("cannot convert float infinity to integer")
        labels = {"namespace": "prod", "model": "m"}
        return {
            "triton_arrival_rate_forecast": [SeriesPoint(labels, math.inf, T0)],
            "triton_desired_replicas": [SeriesPoint(labels, -1.0, T0)],
        }


def test_failing_stage_keeps_raw_signals_published(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="adapter.pipeline")
    target = Target.create("http://a/metrics", "triton", {"namespace": "prod"})
    stage = Flaky()
    pipeline = config = load_config(None)
    pipeline = Pipeline(config.scrape, config.signals, StaticTargets([target]), stages=(stage,))
    state = pipeline.track(target, now_mono=0.0)
    for t in range(5):
        state.history.add(Reading(t, T0 + t, {("m", ""): ModelCounters(3, 10 * t, 0, 0, 0)}))
        snapshot = pipeline.publish(float(t), T0 + t)
        assert [p.value for p in snapshot.points("triton_queue_depth")] == [3]
        assert snapshot.points("triton_arrival_rate_forecast") == ()
    failed = [r for r in caplog.records if r.getMessage().startswith("signal stage failed")]
    assert len(failed) == 1  # once, not every pass
    stage.failing = False
    snapshot = pipeline.publish(5.0, T0 + 5)
    (forecast,) = snapshot.points("triton_arrival_rate_forecast")
    (desired,) = snapshot.points("triton_desired_replicas")
    assert math.isnan(forecast.value) and math.isnan(desired.value)  # 'not known': 503
