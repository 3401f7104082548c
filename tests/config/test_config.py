"""Config: strict typed loading; errors name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.config import ConfigError, load_config, parse_target_flag
from adapter.targets import Target

GOOD = """\
listen: "127.0.0.1:6443"
scrape:
  interval_seconds: 0.5
targets:
  - url: http://10.0.0.5:8002/metrics
    labels: {namespace: prod, deployment: triton-llm}
  - url: http://10.0.0.9:9400/metrics
    kind: dcgm
predictive:
  defaults: {cold_start_seconds: 90}
  series:
    - match: {model: resnet}
      capacity_rps: 40
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tritonscale.yaml"
    path.write_text(text)
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.scrape.interval_seconds == 0.5
    assert config.scrape.timeout_seconds == 0.8  # default
    targets = [Target.create(t.url, t.kind, t.labels) for t in config.targets]
    assert targets[0].namespace == "prod"
    assert targets[1].namespace == "default"  # no namespace label: default
    assert config.targets[1].kind == "dcgm"
    resnet = config.predictive.for_series({"model": "resnet", "namespace": "prod"})
    bert = config.predictive.for_series({"model": "bert"})
    assert (resnet.capacity_rps, resnet.cold_start_seconds) == (40, 90)
    assert bert.capacity_rps is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scrape:\n  interval_seconds: -1\n",
            ":2: scrape.interval_seconds: Input should be greater than or equal to 0.1: how often",
        ),
        ("scrape:\n  intervall_seconds: 1\n", ":2: scrape.intervall_seconds: unknown setting"),
        ("targets:\n  - url: ftp://x\n", ":2: targets.0.url: must be an http(s) URL"),
        ("targets:\n  - url: http://u:p@h/m\n", ":2: targets.0.url: must not carry user:password"),
        (
            "targets:\n  - url: http://h/m\n    scrape_interval_seconds: 0\n",
            ":3: targets.0.scrape_interval_seconds: Input should be greater than or equal to 0.1",
        ),
        (
            "targets:\n  - url: http://a/m\n    kind: tensorflow\n",
            ":3: targets.0.kind: Input should be 'triton' or 'dcgm'",
        ),
        ("listen: nonsense\n", ":1: listen: listen address 'nonsense' must be HOST:PORT"),
        (
            "tls:\n  cert_file: /x\n",
            ":1: tls: cert_file and private_key_file must be given together",
        ),
        (
            "signals:\n  rate_window_seconds: fast\n",
            ":2: signals.rate_window_seconds: Input should be a valid number",
        ),
        ("targets: [\n", "not valid YAML"),
        ("- a\n- b\n", ":1: the top level must be a mapping"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "scrape:\n  interval_seconds: 0\n  bogus: 1\nlog:\n  level: loud\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 3


@pytest.mark.parametrize(
    ("flag", "labels", "kind"),
    [
        (
            "http://10.0.0.5:8002/metrics,namespace=prod,deployment=triton-llm",
            {"namespace": "prod", "deployment": "triton-llm"},
            "triton",
        ),
        ("http://h:9400/metrics,kind=dcgm", {}, "dcgm"),
        ("http://h:8002/metrics", {}, "triton"),
        ("http://h:8002/metrics,interval=2.5,deployment=a", {"deployment": "a"}, "triton"),
    ],
)
def test_target_flag(flag: str, labels: dict[str, str], kind: str) -> None:
    parsed = parse_target_flag(flag)
    assert parsed["labels"] == labels and parsed["kind"] == kind
    config = load_config(None, {"targets": [parsed]})
    expected_interval = 2.5 if "interval=" in flag else None
    assert config.targets[0].scrape_interval_seconds == expected_interval


def test_target_flag_rejects_bare_words() -> None:
    with pytest.raises(ValueError, match="not label=value"):
        parse_target_flag("http://h/m,prod")


def test_config_accepts_every_forecaster_of_the_policies_and_names_them_on_error(
    tmp_path: Path,
) -> None:
    from policies.forecast import FORECASTER_NAMES

    for name in FORECASTER_NAMES:
        config = load_config(None, {"predictive": {"defaults": {"forecaster": name}}})
        assert config.predictive.for_series({}).forecaster == name
    path = tmp_path / "config.yaml"
    path.write_text("predictive:\n  defaults:\n    forecaster: arima\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}:3: predictive.defaults.forecaster: unknown forecaster")
    assert all(name in problem for name in FORECASTER_NAMES)


def test_a_static_target_may_name_its_pod_and_pod_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "targets:\n"
        "  - url: http://10.0.0.5:8002/metrics\n"
        "    labels: {namespace: prod, deployment: llm}\n"
        "    pod: llm-7d9f8b6c5d-x2x4q\n"
        "    pod_labels: {app: llm}\n",
        encoding="utf-8",
    )
    (target,) = load_config(path).targets
    assert (target.pod, target.pod_labels) == ("llm-7d9f8b6c5d-x2x4q", {"app": "llm"})
    assert parse_target_flag("http://a:8002/metrics,pod=llm-1,deployment=llm")["pod"] == "llm-1"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("{url: 'http://a/m', pod: Llm_1}", "targets.0.pod: 'Llm_1' is not a pod name"),
        ("{url: 'http://a/m', pod_labels: {app: x}}", "targets.0: pod_labels: only used with pod"),
        ("{url: 'http://a/m', pod: a, pod_labels: {'-x': y}}", "targets.0.pod_labels: '-x'"),
    ],
)
def test_bad_pod_settings_name_the_field(tmp_path: Path, target: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"targets:\n  - {target}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}:2: {expected}" in str(error.value)


def test_every_time_setting_of_the_policy_is_configurable() -> None:
    """Seconds the policy counts in can be set, so a time-compressed run (the closed-loop demo)
    compresses every one of them, and each default is the policy's own."""
    from policies.predictive import settings_default

    config = load_config(
        None,
        {
            "predictive": {
                "defaults": {"scale_down_delay_seconds": 3, "panic_hold_seconds": 2},
                "series": [{"match": {"model": "m"}, "scale_down_delay_seconds": 9}],
            }
        },
    )
    assert config.predictive.for_series({"model": "x"}).scale_down_delay_seconds == 3
    assert config.predictive.for_series({"model": "m"}).scale_down_delay_seconds == 9
    assert config.predictive.for_series({"model": "m"}).panic_hold_seconds == 2
    default = load_config(None).predictive.for_series({})
    assert default.scale_down_delay_seconds == settings_default("scale_down_delay_seconds")
