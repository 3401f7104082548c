"""Settings that passed check-config and then broke the service are now refused by it.

Every number has a range and the relations between settings are checked; the error says
which line, which setting and why its limits are what they are.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.cli import main
from adapter.config import ConfigError, load_config
from policies.predictive import SETTING_RANGES, PredictiveSettings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "predictive:\n  defaults:\n    capacity_rps: .inf\n",
            ":3: predictive.defaults.capacity_rps: Input should be a finite number",
            id="capacity-inf",
        ),
        pytest.param(
            "predictive:\n  defaults:\n    cold_start_seconds: .inf\n",
            ":3: predictive.defaults.cold_start_seconds: Input should be a finite number",
            id="cold-start-inf",
        ),
        pytest.param(
            "predictive:\n  defaults: {min_replicas: 5, max_replicas: 2}\n",
            ":2: predictive.defaults: max_replicas (2) must be >= 1 and >= min_replicas (5)",
            id="min-above-max",
        ),
        pytest.param(
            "predictive:\n  series:\n    - match: {model: a}\n      min_replicas: 200\n",
            "predictive: series.0 (match {'model': 'a'}): max_replicas (100) must be >= 1",
            id="override-min-above-default-max",
        ),
        pytest.param(
            "predictive:\n  defaults:\n    step_seconds: 1e-9\n",
            ":3: predictive.defaults.step_seconds: Input should be greater than or equal to 0.1: "
            "the policy decides once per step",
            id="step-1e-9",
        ),
        pytest.param(
            "predictive:\n  defaults: {step_seconds: 0.1, cold_start_seconds: 3600}\n",
            "is 36150 steps of step_seconds (0.1 s): at most 10000",
            id="horizon-in-steps",
        ),
        pytest.param(
            "predictive:\n  defaults:\n    slo_seconds: .nan\n",
            ":3: predictive.defaults.slo_seconds: Input should be a finite number",
            id="slo-nan",
        ),
        pytest.param(
            "scrape:\n  interval_seconds: 1e-9\n",
            ":2: scrape.interval_seconds: Input should be greater than or equal to 0.1",
            id="scrape-interval-1e-9",
        ),
        pytest.param(
            "scrape:\n  max_response_bytes: 1000000000000\n",
            ":2: scrape.max_response_bytes: Input should be less than or equal to 268435456",
            id="response-1TB",
        ),
        pytest.param(
            "signals:\n  max_age_seconds: .inf\n",
            ":2: signals.max_age_seconds: Input should be a finite number",
            id="max-age-inf",
        ),
        pytest.param(
            "scrape: {interval_seconds: 20}\nsignals: {max_age_seconds: 30}\n",
            "signals.max_age_seconds (30) must be at least twice scrape.interval_seconds (20 s)",
            id="max-age-below-two-intervals",
        ),
        pytest.param(
            "targets:\n  - url: http://h/m\n    scrape_interval_seconds: 60\n",
            "twice targets.0.scrape_interval_seconds (60 s)",
            id="max-age-below-a-target-interval",
        ),
        pytest.param(
            "tls:\n  hostnames: ['tritonscale svc']\n",
            ":2: tls.hostnames: 'tritonscale svc' is neither a DNS name",
            id="tls-hostname",
        ),
    ],
)
def test_check_config_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "tritonscale.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(str(path))
    assert expected in err, err


def test_every_range_is_the_policys_own() -> None:
    """The config's field limits come from the policy's table, so the two cannot drift."""
    from adapter.config import PredictiveSeriesConfig

    for name, allowed in SETTING_RANGES.items():
        field = PredictiveSeriesConfig.model_fields.get(name)
        if field is None:
            continue  # not offered in the config
        limits = {type(m).__name__: m for m in field.metadata}
        assert limits["Ge"].ge == allowed.low, name
        assert limits["Le"].le == allowed.high, name
        assert field.description == allowed.why


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"step_seconds": 1e-9}, "step_seconds"),
        ({"step_seconds": 7200.0}, "step_seconds"),
        ({"hpa_sync_period_seconds": 0.01}, "hpa_sync_period_seconds"),
        ({"scale_down_delay_seconds": 86400.0}, "scale_down_delay_seconds"),
        ({"headroom_window": 5}, "headroom_window"),
        ({"forecaster_params": {"alpha": float("nan")}}, "forecaster_params.alpha"),
        ({"step_seconds": 0.1, "cold_start_seconds": 86400.0}, "raise step_seconds"),
    ],
)
def test_policy_settings_refuse_absurd_values(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PredictiveSettings(**settings)  # type: ignore[arg-type]


def test_the_limits_themselves_are_accepted() -> None:
    low = {name: allowed.low for name, allowed in SETTING_RANGES.items()}
    low["max_replicas"] = max(low["max_replicas"], low["min_replicas"])
    low["step_seconds"] = 15.0  # the horizon relation needs coarse steps at a long cold start
    PredictiveSettings(**low)  # type: ignore[arg-type]
    config = load_config(None, {"predictive": {"defaults": {"step_seconds": 3600}}})
    assert config.predictive.defaults.step_seconds == 3600
    with pytest.raises(ConfigError):
        load_config(None, {"predictive": {"defaults": {"step_seconds": 3600.001}}})
