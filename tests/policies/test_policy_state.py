"""The policy's read-only state for explanations: the forecaster's parameters and state, and the
headroom's calibration (method, target, samples, margin, newest errors), as the policy holds
them, without changing them."""

from __future__ import annotations

import math

import pytest

from policies.forecast import FORECASTER_NAMES, make_forecaster
from policies.headroom import RECENT_ERRORS, QuantileHeadroom
from policies.predictive import PredictiveSettings, build_predictive_policy


@pytest.mark.parametrize("name", FORECASTER_NAMES)
def test_every_forecaster_states_itself_without_changing(name: str) -> None:
    params = {"period_steps": 4.0} if name == "holt-winters" else {}
    forecaster = make_forecaster(name, 15.0, **params)
    before = forecaster.state()
    assert before and all(isinstance(v, float) for v in before.values())
    for value in (10.0, 12.0, math.nan, 14.0, 13.0, 15.0, 16.0, 15.0, 17.0):
        forecaster.update(value)
    after = forecaster.state()
    assert after == forecaster.state()  # reading is pure
    assert forecaster.forecast(3) == forecaster.forecast(3)


def test_holt_states_level_and_trend() -> None:
    forecaster = make_forecaster("holt", 15.0, alpha=0.5, beta=0.1)
    assert math.isnan(forecaster.state()["level"])
    for value in (10.0, 12.0, 14.0):
        forecaster.update(value)
    state = forecaster.state()
    assert state["alpha"] == 0.5 and state["beta"] == 0.1
    assert state["level"] > 12.0 and state["trend"] > 0


def test_headroom_state_shows_its_calibration() -> None:
    headroom = QuantileHeadroom(0.9, horizon_steps=1, window=64, min_samples=5)
    state = headroom.state()
    assert (state.method, state.target, state.ready, state.samples) == (
        "quantile",
        (("quantile", 0.9),),
        False,
        0,
    )
    assert state.margin == 0.0 and state.recent_errors == ()
    for i in range(50):
        headroom.step(10.0, 10.0 + (i % 5))  # errors 0..4 after the first step
    state = headroom.state()
    assert state.ready and state.samples == 49
    assert len(state.recent_errors) == RECENT_ERRORS
    assert state.recent_errors[-1] == 10.0 + (49 % 5) - 10.0  # newest last
    assert state.margin == headroom.margin() == 4.0
    assert dict(state.details)["window"] == 64.0


def test_policy_state_counts_steps_and_reports_panic() -> None:
    policy = build_predictive_policy(PredictiveSettings(capacity_rps=10.0, step_seconds=15.0))
    assert policy.state().steps == 0 and not policy.state().forecaster_ready
    policy.step(5.0, 0.0, 1.0)
    policy.step(100.0, 0.0, 1.0)  # 10x the capacity of one replica: the burst guard holds
    state = policy.state()
    assert state.steps == 2 and state.forecaster == "holt" and state.forecaster_ready
    assert state.panic and state.horizon_steps == policy.horizon_steps
    assert dict(state.forecaster_state)["level"] > 5.0
    assert state.headroom.method == "quantile" and state.use_headroom
