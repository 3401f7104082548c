"""The policy's read-only state for explanations: the forecaster's parameters and state, and the
headroom's calibration (method, target, samples, margin, newest errors), as the policy holds
them, without changing them."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from policies.forecast import FORECASTER_NAMES, make_forecaster
from policies.headroom import RECENT_ERRORS, AttainmentHeadroom, QuantileHeadroom
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
    assert state.headroom.method == "attainment" and state.use_headroom
    assert dict(state.headroom.target) == {"slo_attainment": 0.995}


def test_attainment_headroom_state_shows_what_it_aims_for() -> None:
    """The stated attainment, the budget the last plan was given and that plan's margin;
    unknown (NaN), not 0, before the first plan."""
    headroom = AttainmentHeadroom(0.99, horizon_steps=2, window=64, prior_steps=10)
    state = headroom.state()
    assert (state.method, state.target, state.ready, state.samples, state.min_samples) == (
        "attainment",
        (("slo_attainment", 0.99),),
        False,
        0,
        5,
    )
    details = dict(state.details)
    assert math.isnan(state.margin) and math.isnan(details["budget_now"])
    assert math.isnan(details["utilisation"])
    assert details["violation_budget"] == pytest.approx(0.01)
    assert details["prior_margin_share"] == 0.5 and state.recent_errors == ()

    def violation(rho: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.where(rho >= 1.0, 1.0, 0.0)

    for i in range(30):
        headroom.step(10.0, 10.0 + (i % 3))  # the actual beats the point by 0..2
        plan = headroom.plan(10.0 + (i % 3), 10.0, 0.9, violation, budget=0.02)
    state = headroom.state()
    details = dict(state.details)
    assert state.ready and state.samples == 28  # the first pair arrives a horizon in
    assert state.margin == plan.margin > 0 and details["utilisation"] == plan.utilisation
    assert details["budget_now"] == 0.02 and details["prior_margin_share"] == 0.0
    assert state.recent_errors[-1] == pytest.approx((10.0 + 29 % 3) - 10.0)  # newest last
    assert headroom.state() == state  # reading is pure
