"""The predictive policy: its settings, the one builder, and its step rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.predictive import PredictivePolicy, PredictiveSettings, build_predictive_policy
from policies.sizing import SizingParams


class FullReplicas:
    """A queue model where a replica may be planned full: the step-rule tests below pin the
    sizing arithmetic, damping and panic, not the utilisation (tested on its own)."""

    variability = 0.0

    def observe(self, *args: float) -> None:
        return None

    def violation(self, utilisation: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        return (np.asarray(utilisation) > 1.0).astype(float)

    def max_utilisation(self, violation_budget: float) -> float:
        return 1.0


def full(settings: PredictiveSettings) -> PredictivePolicy:
    policy = PredictivePolicy(settings)
    policy.queue = FullReplicas()  # type: ignore[assignment]
    return policy


def config(**overrides: object) -> PredictiveSettings:
    """Capacity 10 req/s, SLO 1 s, 1-50 replicas, steps of 15 s; horizon 60 s (45 + 15)."""
    settings: dict[str, object] = {
        "step_seconds": 15.0,
        "cold_start_seconds": 45.0,
        "hpa_sync_period_seconds": 15.0,
        "capacity_rps": 10.0,
        "slo_seconds": 1.0,
        "min_replicas": 1,
        "max_replicas": 50,
        "forecaster": "last",
        "use_headroom": False,
        "scale_down_delay_seconds": 60.0,
    }
    settings.update(overrides)
    return PredictiveSettings(**settings)  # type: ignore[arg-type]


def test_constant_rate_gives_rate_over_capacity() -> None:
    policy = full(config())
    decisions = [policy.step(95.0, 0.0, 10.0) for _ in range(10)]
    assert {d.desired_replicas for d in decisions} == {10}  # ceil(9.5)


def test_backlog_adds_replicas_drained_within_max_of_slo_and_step() -> None:
    policy = full(config())
    decision = policy.step(50.0, 300.0, 1.0)  # 1 running: the warm start holds 1 only
    assert decision.desired_replicas == 7  # 5 + 300 / (10 * max(1, 15)) = 7


def test_scale_up_is_immediate_and_scale_down_waits_the_delay() -> None:
    policy = full(config())  # delay 60 s = 4 steps of 15 s
    assert policy.step(10.0, 0.0, 1.0).desired_replicas == 1
    assert policy.step(100.0, 0.0, 10.0).desired_replicas == 10  # same step (no panic)
    after_drop = [policy.step(10.0, 0.0, 10.0).desired_replicas for _ in range(6)]
    assert after_drop == [10, 10, 10, 10, 1, 1]  # falls exactly 60 s after the drop


def test_missing_rate_returns_the_previous_decision() -> None:
    policy = full(config())
    decision = policy.step(40.0, 0.0, 4.0)
    assert policy.step(math.nan, 0.0, 4.0) is decision


def test_missing_rate_keeps_the_seasonal_phase() -> None:
    # Season of 4 steps (10, 10, 90, 90); horizon 60 s = 4 steps = same phase as now + 4.
    settings = {"forecaster": "holt-winters", "forecaster_params": {"period_steps": 4}}
    with_gap, without = full(config(**settings)), full(config(**settings))
    pattern = [10.0, 10.0, 90.0, 90.0]
    for i in range(40):
        without.step(pattern[i % 4], 0.0, 5.0)
        if 30 <= i < 33:  # three steps missing: the clock must still advance
            with_gap.step(math.nan, 0.0, 5.0)
        else:
            with_gap.step(pattern[i % 4], 0.0, 5.0)
    # Last step i = 39 (phase 3); the forecast 4 steps ahead is phase 3 again: 90 req/s.
    assert with_gap.forecaster.forecast(1).point == pytest.approx(10.0, abs=1.0)
    assert with_gap.forecaster.forecast(4).point == pytest.approx(
        without.forecaster.forecast(4).point, abs=1.0
    )


def test_missing_rate_before_any_decision_holds_current_capacity() -> None:
    policy = full(config())
    decision = policy.step(math.nan, 0.0, 3.2)
    assert decision.desired_replicas == 4
    assert math.isnan(decision.arrival_upper)


def test_queue_depth_forecast() -> None:
    policy = full(config())
    over = policy.step(50.0, 100.0, 3.0)  # 100 + (50 - 30) * 60
    assert over.queue_depth_forecast == pytest.approx(1300.0)
    under = policy.step(50.0, 100.0, 10.0)  # capacity 100 > 50: drains to 0
    assert under.queue_depth_forecast == 0.0
    unknown = policy.step(50.0, math.nan, 10.0)
    assert math.isnan(unknown.queue_depth_forecast)


def test_panic_blocks_scale_down_even_without_damping() -> None:
    policy = full(config(scale_down_delay_seconds=0.0, panic_hold_seconds=30.0))  # hold 2 steps
    first = policy.step(100.0, 0.0, 1.0)  # 100 > 2 * 10: panic
    assert first.panic
    assert first.desired_replicas == 10
    held = [policy.step(5.0, 0.0, 1.0) for _ in range(3)]
    assert [d.panic for d in held] == [True, True, False]
    assert [d.desired_replicas for d in held] == [10, 10, 1]


def test_desired_is_clamped_to_min_and_max() -> None:
    policy = full(config(scale_down_delay_seconds=0.0, panic_factor=1e6))
    assert policy.step(10_000.0, 0.0, 50.0).desired_replicas == 50
    assert policy.step(0.0, 0.0, 50.0).desired_replicas == 1


def test_headroom_lifts_the_plan_only_when_enabled() -> None:
    rng = np.random.default_rng(3)
    rates = 100.0 + rng.normal(0.0, 10.0, 200)
    with_headroom = full(config(forecaster="ewma", use_headroom=True))
    without = full(config(forecaster="ewma", use_headroom=False))
    for rate in rates:
        a = with_headroom.step(float(rate), 0.0, 10.0)
        b = without.step(float(rate), 0.0, 10.0)
    assert b.arrival_upper == b.arrival_forecast.point
    assert with_headroom.headroom.samples > 100
    assert a.arrival_upper > a.arrival_forecast.point + 5.0  # ~ half a sd of the noise


def test_forecast_leads_a_ramp() -> None:
    policy = full(config(forecaster="holt", cold_start_seconds=105.0))
    decision = None
    for t in range(100):
        decision = policy.step(10.0 + 2.0 * t, 0.0, 20.0)
    assert decision is not None
    reactive = math.ceil((10.0 + 2.0 * 99) / 10.0)
    assert decision.desired_replicas >= reactive + 2  # 8 steps ahead: +16 req/s


def test_horizon_is_cold_start_plus_sync_in_whole_steps() -> None:
    assert config(cold_start_seconds=45.0).horizon_seconds == 60.0
    assert full(config(cold_start_seconds=45.0)).horizon_steps == 4
    assert full(config(cold_start_seconds=46.0)).horizon_steps == 5
    assert full(config(cold_start_seconds=0.0, hpa_sync_period_seconds=1.0)).horizon_steps == 1


def test_the_builder_is_the_policy_of_the_settings() -> None:
    settings = config(forecaster="holt")
    policy = build_predictive_policy(settings)
    assert policy.settings is settings
    assert policy.sizing == SizingParams(
        capacity_rps=10.0, slo_seconds=1.0, min_replicas=1, max_replicas=50
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"step_seconds": 0.0}, "step_seconds"),
        ({"step_seconds": math.inf}, "step_seconds"),
        ({"cold_start_seconds": math.nan}, "cold_start_seconds"),
        ({"slo_attainment": 1.0}, "slo_attainment"),
        ({"forecaster": "arima"}, "forecaster"),
        ({"capacity_rps": math.inf}, "capacity_rps"),
        ({"min_replicas": 5, "max_replicas": 2}, "max_replicas"),
        ({"panic_factor": 0.5}, "panic_factor"),
    ],
)
def test_settings_validation_names_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        config(**overrides)


def test_without_capacity_the_policy_forecasts_but_sizes_nothing() -> None:
    settings = config(capacity_rps=None)
    assert not settings.sizes_replicas
    decision = build_predictive_policy(settings).step(40.0, 0.0, 1.0)
    assert decision.arrival_upper == pytest.approx(40.0)


@pytest.mark.parametrize(("delay_seconds", "held_steps"), [(60.0, 4), (30.0, 2), (0.0, 0)])
def test_warm_start_holds_the_running_replicas_for_the_delay(
    delay_seconds: float, held_steps: int
) -> None:
    # A fresh policy (adapter restart) finds 7 replicas running while the load needs 2: it
    # must not cut them before it has seen scale_down_delay_seconds of data.
    policy = full(config(scale_down_delay_seconds=delay_seconds, panic_factor=1e6))
    desired = [policy.step(15.0, 0.0, 7.0).desired_replicas for _ in range(held_steps + 2)]
    assert desired == [7] * held_steps + [2, 2]


def test_warm_start_never_blocks_scale_up() -> None:
    policy = full(config(panic_factor=1e6))
    assert policy.step(150.0, 0.0, 7.0).desired_replicas == 15


def test_utilisation_follows_the_queue_it_sees() -> None:
    # Same load; one deployment's queues stay short (a shared queue, smooth service), the
    # other's are long (random routing, variable service): the policy plans fuller replicas
    # where queues are short, and both stay within the stated attainment by their own model.
    short, long = PredictivePolicy(config()), PredictivePolicy(config())
    for _ in range(400):
        d_short = short.step(100.0, 0.5, 20.0)  # rho 0.5, 0.5 queued over 20 replicas
        d_long = long.step(100.0, 40.0, 20.0)  # 2 queued per replica
    assert short.queue.variability < 0.5 < 2.0 < long.queue.variability
    assert d_short.utilisation > 0.9 > 0.5 > d_long.utilisation
    assert d_short.desired_replicas < d_long.desired_replicas


def test_a_stated_attainment_is_a_setting_and_a_higher_one_costs_more() -> None:
    rng = np.random.default_rng(5)
    rates = 100.0 + rng.normal(0.0, 10.0, 300)
    loose = PredictivePolicy(config(slo_attainment=0.99, use_headroom=True, forecaster="ewma"))
    strict = PredictivePolicy(config(slo_attainment=0.999, use_headroom=True, forecaster="ewma"))
    for rate in rates:
        a = loose.step(float(rate), 2.0, 20.0)
        b = strict.step(float(rate), 2.0, 20.0)
    assert b.desired_replicas > a.desired_replicas
    assert b.arrival_upper / b.utilisation > a.arrival_upper / a.utilisation


def test_first_steps_have_a_prior_margin() -> None:
    # No forecast error has been seen yet: the plan is not the bare point forecast.
    policy = PredictivePolicy(config(use_headroom=True, forecaster="holt"))
    first = policy.step(100.0, 0.0, 20.0)
    assert first.arrival_upper >= 1.4 * first.arrival_forecast.point
