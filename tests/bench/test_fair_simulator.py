"""The fair-simulator benchmark: ideal signal paths change what Prometheus-fed HPAs see and
nothing else, the simulator's constants are restored, and billing without the drain is the
billed cost minus `drain_seconds`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loadtest.bench import fair_simulator
from loadtest.simulator import controllers
from tests.support.paths import SIM_DATA


def test_ideal_paths_are_set_inside_and_restored_after() -> None:
    before = {name: getattr(controllers, name) for name in fair_simulator.IDEAL_PATHS}
    with fair_simulator.signal_paths("ideal"):
        assert controllers.PROMETHEUS_SCRAPE_SECONDS == 1
        assert controllers.DCGM_COLLECT_SECONDS == 1
    assert {name: getattr(controllers, name) for name in before} == before
    with fair_simulator.signal_paths("real"):
        assert before["PROMETHEUS_SCRAPE_SECONDS"] == controllers.PROMETHEUS_SCRAPE_SECONDS


def test_the_table_on_a_slice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the Azure slice under the full trace's name, as --traces expects
    shutil.copy(
        SIM_DATA / "azure_conv_slice.csv", tmp_path / "AzureLLMInferenceTrace_conv_2023.csv"
    )
    assert (
        fair_simulator.main(["--traces", str(tmp_path), "--only", "azure-conv", "--warm-up", "0"])
        == 0
    )
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and not line.startswith("| trace")
    ]
    by_policy = {row[1]: row for row in rows}
    assert set(controllers.POLICY_NAMES) <= set(by_policy)
    # policies that read the adapter's own scrape see the same in both rows
    for name in ("tritonscale", "hpa-arrival-rate"):
        assert by_policy[name][2] == by_policy[name][3], by_policy[name]
    for row in rows:
        billed = float(row[3].split("/")[1])
        assert float(row[4]) <= billed + 0.05, row


def test_without_traces_it_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITONSCALE_TRACES", raising=False)
    with pytest.raises(SystemExit):
        fair_simulator.main([])
