"""The service and the simulator build the same predictive policy from the same defaults."""

from __future__ import annotations

from adapter.config import Config
from adapter.predictive import PredictiveStage
from loadtest.simulator.controllers import TritonscaleController, TritonscaleTuning
from loadtest.simulator.engine import SimParams
from policies.predictive import PredictivePolicy, PredictiveSettings


def test_service_config_and_simulator_build_equal_settings_and_policies() -> None:
    # What an operator writes: capacity, SLO, cold start and bounds; the rest are defaults.
    config = Config.model_validate(
        {
            "predictive": {
                "defaults": {
                    "capacity_rps": 5.0,
                    "slo_seconds": 2.0,
                    "cold_start_seconds": 180.0,
                    "min_replicas": 1,
                    "max_replicas": 200,
                }
            }
        }
    )
    service = config.predictive.for_series({"model": "m"})
    simulated = TritonscaleController(
        SimParams(
            capacity_rps=5.0,
            slo_seconds=2.0,
            cold_start_seconds=180.0,
            min_replicas=1,
            max_replicas=200,
        ),
        TritonscaleTuning(),
        use_headroom=True,
        name="tritonscale",
    ).policy
    assert simulated.settings == service
    assert service.slo_attainment == PredictiveSettings().slo_attainment == 0.995
    # Same code: the stage's policy for the series is the simulator's class with the same
    # settings, and both decide alike on the same inputs.
    stage_policy = PredictiveStage(config.predictive)._new_state({"model": "m"}).policy
    assert type(stage_policy) is type(simulated) is PredictivePolicy
    for step in range(60):
        rate = 100.0 + 10.0 * (step % 7)
        a = stage_policy.step(rate, 3.0, 30.0)
        b = simulated.step(rate, 3.0, 30.0)
        assert a == b
