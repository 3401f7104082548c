"""Calibrated headroom: empirical coverage, adaptivity, and horizon matching."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from policies.headroom import AttainmentHeadroom, BudgetFeedback, QuantileHeadroom

SEED = 7


def online_coverage(
    headroom: QuantileHeadroom, forecast: float, actuals: npt.NDArray[np.float64]
) -> float:
    """Fraction of actuals below the bound computed BEFORE each actual was seen."""
    hits = 0
    trials = 0
    for actual in actuals:
        if headroom.ready:
            trials += 1
            hits += actual <= headroom.upper(forecast)
        headroom.step(forecast, float(actual))
    return hits / trials


@pytest.mark.parametrize(
    ("quantile", "noise"),
    [
        (0.9, "normal"),
        (0.95, "normal"),
        (0.95, "exponential"),  # skewed: a symmetric rule would miss
        (0.8, "lognormal"),
    ],
)
def test_coverage_is_close_to_the_quantile(quantile: float, noise: str) -> None:
    rng = np.random.default_rng(SEED)
    size = 20_000
    draws = {
        "normal": rng.normal(0.0, 5.0, size),
        "exponential": rng.exponential(5.0, size),
        "lognormal": rng.lognormal(1.0, 1.0, size),
    }[noise]
    headroom = QuantileHeadroom(quantile, horizon_steps=1, window=512)
    coverage = online_coverage(headroom, 100.0, 100.0 + draws)
    assert coverage == pytest.approx(quantile, abs=0.015)


def test_headroom_is_larger_on_bursty_than_on_smooth_traffic() -> None:
    rng = np.random.default_rng(SEED)
    smooth = QuantileHeadroom(0.95, horizon_steps=2)
    bursty = QuantileHeadroom(0.95, horizon_steps=2)
    for _ in range(1000):
        smooth.step(100.0, 100.0 + rng.normal(0.0, 2.0))
        burst = rng.exponential(150.0) if rng.random() < 0.1 else 0.0
        bursty.step(100.0, 100.0 + rng.normal(0.0, 2.0) + burst)
    assert smooth.margin() < 6.0
    assert bursty.margin() > 5 * smooth.margin()


def test_headroom_shrinks_when_traffic_calms_down() -> None:
    rng = np.random.default_rng(SEED)
    headroom = QuantileHeadroom(0.95, horizon_steps=1, window=200)
    for _ in range(400):
        headroom.step(100.0, 100.0 + rng.normal(0.0, 30.0))
    noisy = headroom.margin()
    for _ in range(400):
        headroom.step(100.0, 100.0 + rng.normal(0.0, 1.0))
    assert headroom.margin() < noisy / 10


def test_actual_is_matched_with_the_forecast_made_horizon_steps_ago() -> None:
    # The forecast made at t for t + 3 is exactly right: -(t + 3). Matching any other lag
    # would see errors of 1 or 2 and give a positive margin.
    headroom = QuantileHeadroom(0.9, horizon_steps=3, min_samples=5)
    for t in range(50):
        headroom.step(-(t + 3.0), -float(t))
    assert headroom.samples == 47
    assert headroom.margin() == 0.0
    lagged = QuantileHeadroom(0.9, horizon_steps=1, min_samples=5)
    for t in range(50):
        lagged.step(-(t + 3.0), -float(t))
    assert lagged.margin() == pytest.approx(2.0)


def test_missing_actuals_and_forecasts_are_not_errors_of_zero() -> None:
    headroom = QuantileHeadroom(0.9, horizon_steps=1, min_samples=3)
    for _ in range(10):
        headroom.step(10.0, math.nan)
    assert headroom.samples == 0
    assert not headroom.ready
    assert headroom.upper(10.0) == 10.0  # no margin before min_samples
    for _ in range(5):
        headroom.step(math.nan, 20.0)
    # Only the first actual meets a real forecast (10.0, queued by the last loop).
    assert headroom.samples == 1


def test_observe_takes_matched_pairs() -> None:
    headroom = QuantileHeadroom(0.5, horizon_steps=4, min_samples=3)
    for error in (1.0, 2.0, 3.0, 4.0, 5.0):
        headroom.observe(10.0, 10.0 + error)
    # conformal rank ceil(6 * 0.5) = 3 -> the 3rd smallest error
    assert headroom.upper(10.0) == pytest.approx(13.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quantile": 1.0, "horizon_steps": 1}, "quantile"),
        ({"quantile": 0.9, "horizon_steps": 0}, "horizon_steps"),
        ({"quantile": 0.9, "horizon_steps": 1, "window": 10, "min_samples": 20}, "min_samples"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        QuantileHeadroom(**kwargs)  # type: ignore[arg-type]


def _hard_capacity(utilisation: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Every request of a step is late when the step's load exceeds the planned capacity."""
    return (np.asarray(utilisation) > 1.0).astype(np.float64)


def _realised_share(
    target: float, noise: npt.NDArray[np.float64], violation: object, utilisation: float = 1.0
) -> float:
    """Online: plan each step with the margin learnt before it (searched again every 10 steps,
    as the policy does every 20); the request-weighted share of late requests."""
    headroom = AttainmentHeadroom(target, horizon_steps=1, window=512, prior_steps=0)
    late = total = margin = 0.0
    for i, extra in enumerate(noise):
        actual = max(0.0, 100.0 + float(extra))
        if i >= 600:  # score once the window is full
            if i % 10 == 0:
                margin = headroom.margin(100.0, utilisation, violation)  # type: ignore[arg-type]
            planned = (100.0 + margin) / utilisation
            late += actual * float(violation(np.array([actual / planned]))[0])  # type: ignore[operator]
            total += actual
        headroom.step(100.0, actual)
    return late / total


@pytest.mark.parametrize(
    ("target", "noise"),
    [(0.99, "normal"), (0.995, "normal"), (0.99, "exponential"), (0.98, "bursts")],
)
def test_attainment_headroom_reaches_its_target_on_requests(target: float, noise: str) -> None:
    rng = np.random.default_rng(SEED)
    size = 40_000
    draws = {
        "normal": rng.normal(0.0, 10.0, size),
        "exponential": rng.exponential(10.0, size) - 10.0,
        # rare large onsets on a calm series: where the late requests are
        "bursts": rng.normal(0.0, 2.0, size)
        + (rng.random(size) < 0.05) * rng.exponential(80.0, size),
    }[noise]
    share = _realised_share(target, draws, _hard_capacity)
    budget = 1.0 - target
    assert share <= 1.25 * budget  # meets the target (sampling noise aside)...
    assert share >= 0.5 * budget  # ...without planning far more than it needs


def test_attainment_headroom_weighs_requests_not_steps() -> None:
    # Same share of under-forecast steps, but in one series the misses come at high load:
    # those steps hold more requests, so the margin must be larger there.
    rng = np.random.default_rng(SEED)
    calm, busy = (
        AttainmentHeadroom(0.99, 1, prior_steps=0),
        AttainmentHeadroom(0.99, 1, prior_steps=0),
    )
    for _ in range(500):
        miss = rng.random() < 0.02
        calm.observe(100.0, 20.0 if miss else 100.0 + rng.normal(0.0, 1.0))
        busy.observe(100.0, 300.0 if miss else 100.0 + rng.normal(0.0, 1.0))
    assert busy.margin(100.0, 1.0, _hard_capacity) > 150.0
    assert calm.margin(100.0, 1.0, _hard_capacity) < 5.0


def test_attainment_headroom_has_a_prior_before_its_first_errors() -> None:
    headroom = AttainmentHeadroom(0.995, horizon_steps=4, prior_margin=0.5, prior_steps=40)
    assert headroom.margin(200.0, 1.0, _hard_capacity) == pytest.approx(100.0)  # no errors yet
    for _ in range(4 + 20):  # 20 matched pairs of perfect forecasts: the prior has half faded
        headroom.step(200.0, 200.0)
    assert headroom.samples == 20
    assert headroom.margin(200.0, 1.0, _hard_capacity) == pytest.approx(50.0)
    for _ in range(40):
        headroom.step(200.0, 200.0)
    assert headroom.margin(200.0, 1.0, _hard_capacity) == 0.0


def test_attainment_headroom_counts_the_queueing_of_a_fuller_plan() -> None:
    # With a smooth queueing law (late share grows with utilisation) a perfect forecast still
    # needs no margin when the planned utilisation is within budget, and one when it is not.
    def queueing(rho: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        rho = np.asarray(rho)
        return np.where(rho >= 1.0, 1.0, np.clip(rho, 0, 1) * np.exp(-20.0 * (1.0 - rho)))

    headroom = AttainmentHeadroom(0.995, 1, prior_steps=0)
    for _ in range(100):
        headroom.observe(100.0, 100.0)
    assert headroom.margin(100.0, 0.6, queueing) == 0.0  # 0.6 e^-8 = 0.0002 <= 0.005
    fuller = headroom.margin(100.0, 0.9, queueing)  # 0.9 e^-2 = 0.12: needs capacity
    assert fuller > 0.0
    assert headroom.estimated_violation(fuller, 0.9, queueing) == pytest.approx(0.005, rel=0.05)


@pytest.mark.parametrize("model_bias", [0.4, 1.0, 2.5])
def test_budget_feedback_brings_the_late_share_to_the_target(model_bias: float) -> None:
    # The plan spends the budget it is given, but what runs is late model_bias times as often
    # as the model said (model_bias < 1: the model is pessimistic). The feedback learns the
    # bias: the late share averages to the target, not to target x bias.
    rng = np.random.default_rng(SEED)
    feedback = BudgetFeedback(0.005)
    late_total = rate_total = 0.0
    for step in range(20_000):
        rate = 100.0 * (1.0 + 0.3 * math.sin(step / 50.0))
        expected = model_bias * feedback.budget
        late = float(rng.random() < 20 * expected) / 20  # lumpy: whole steps late, rarely
        feedback.observe(late, rate)
        if step >= 5_000:
            late_total += late * rate
            rate_total += rate
    assert late_total / rate_total == pytest.approx(0.005, rel=0.25)
    assert feedback.budget == pytest.approx(0.005 / model_bias, rel=0.6)


def test_budget_feedback_takes_the_budget_back_after_an_onset() -> None:
    feedback = BudgetFeedback(0.005)
    for _ in range(300):
        feedback.observe(0.0, 100.0)  # calm: the plan may spend more
    calm = feedback.budget
    assert calm > 0.005
    feedback.observe(0.5, 200.0)  # an onset: half of a busy step's requests were late
    assert feedback.budget < 0.3 * calm
