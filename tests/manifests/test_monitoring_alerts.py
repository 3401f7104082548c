"""The alert rules of manifests/monitoring/prometheusrule.yaml, checked with Debian's promtool:
``promtool check rules`` on the PrometheusRule's spec, and ``promtool test rules`` with the
cases in ``alerts.promtool-test.yaml``, where every alert fires in one case and stays quiet in
another. Breaking a rule makes the cases fail."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtest.harness.prometheus import PROMTOOL_BINARY, check_rules
from tests.manifests.test_validate import one_of, render

pytestmark = pytest.mark.prometheus

MONITORING = "manifests/monitoring"
CASES = Path(__file__).with_name("alerts.promtool-test.yaml")


def rules_spec() -> dict[str, Any]:
    spec: dict[str, Any] = one_of(render(MONITORING), "PrometheusRule")["spec"]
    return spec


def write_rule_file(directory: Path, spec: dict[str, Any] | None = None) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file (what the Operator mounts)."""
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rules_spec() if spec is None else spec, sort_keys=False))
    return path


def run_cases(
    directory: Path, spec: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    write_rule_file(directory, spec)
    shutil.copy(CASES, directory / CASES.name)
    return subprocess.run(
        [PROMTOOL_BINARY, "test", "rules", CASES.name],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def alert_names() -> set[str]:
    return {rule["alert"] for group in rules_spec()["groups"] for rule in group["rules"]}


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    checked = check_rules(write_rule_file(tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = sum(len(group["rules"]) for group in rules_spec()["groups"])
    assert f"SUCCESS: {count} rules found" in checked.stdout


def test_every_alert_passes_its_promtool_cases(tmp_path: Path) -> None:
    done = run_cases(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    assert cases["rule_files"] == ["rules.yaml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == alert_names()
    assert quiet == alert_names()


def _replace_expr(alert: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(spec: dict[str, Any]) -> None:
        edited = 0
        for group in spec["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert and old in rule["expr"]:
                    rule["expr"] = rule["expr"].replace(old, new)
                    edited += 1
        assert edited, f"{alert}: no expression contains {old!r}"

    return edit


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("API errors count failing probes", _replace_expr(
            "TritonscaleAPIErrors", 'handler=~"metric|keda", ', "")),
        ("stale threshold ignores the max age", _replace_expr(
            "TritonscaleSignalsStale", "> on (job, instance)", "< on (job, instance)")),
        ("calibration ignores too few checks", _replace_expr(
            "TritonscaleForecastBelowCalibration", ">= 60", ">= 0")),
        ("scrape failures fire on any error", _replace_expr(
            "TritonscaleTargetScrapesFailing", "> 0.5", "> 0.05")),
        ("adapter down only when up is 0", _replace_expr(
            "TritonscaleDown", 'absent(up{job="tritonscale"} == 1)', 'up{job="tritonscale"} == 0')),
        ("certificate expiry a day late", _replace_expr(
            "TritonscaleCertificateExpiry", "< 7 * 86400", "< 2 * 86400")),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)  # fmt: skip
def test_a_broken_rule_fails_its_cases(
    tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    spec = rules_spec()
    edit(spec)
    done = run_cases(tmp_path, spec)
    assert done.returncode != 0, f"{name}: the promtool cases did not notice"
