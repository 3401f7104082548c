"""Config: strict typed loading; errors name file, line and field; CLI check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapter.cli import main
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
            ":2: scrape.interval_seconds: Input should be greater than 0",
        ),
        ("scrape:\n  intervall_seconds: 1\n", ":2: scrape.intervall_seconds: unknown setting"),
        ("targets:\n  - url: ftp://x\n", ":2: targets.0.url: must be an http(s) URL"),
        ("targets:\n  - url: http://u:p@h/m\n", ":2: targets.0.url: must not carry user:password"),
        (
            "targets:\n  - url: http://h/m\n    scrape_interval_seconds: 0\n",
            ":3: targets.0.scrape_interval_seconds: Input should be greater than 0",
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


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(write(tmp_path, GOOD))]) == 0
    assert "ok (2 targets)" in capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, "scrape: {timeout_seconds: 0}\n"))]) == 1
    assert "tritonscale.yaml:1: scrape.timeout_seconds" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_python_dash_m_adapter_works(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adapter", "check-config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_serve_without_targets_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--listen", "127.0.0.1:0"]) == 2
    assert "no targets" in capsys.readouterr().err


def test_config_offers_exactly_the_policies_forecasters() -> None:
    from typing import get_args

    from adapter.config import Forecaster
    from policies.forecast import FORECASTER_NAMES

    assert set(get_args(Forecaster)) == set(FORECASTER_NAMES)
