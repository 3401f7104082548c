"""``tritonscale simulate`` (loadtest.simulator.cli.main): JSON schema, reproducibility, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.simulator.cli import main
from loadtest.simulator.controllers import POLICY_NAMES
from tests.support.paths import REPO_ROOT, SIM_DATA

DATA = SIM_DATA
ROOT = REPO_ROOT
SERVEGEN = DATA / "servegen_m-large_slice.tar.gz"
AZURE = DATA / "azure_conv_slice.csv"
KEYS = {
    "requests",
    "slo_attainment",
    "violating_requests",
    "p99_queue_seconds",
    "replica_seconds",
    "oracle_replica_seconds",
    "cost_vs_oracle",
    "scale_events",
}


def _run(tmp_path: Path, *extra: str, trace: Path = SERVEGEN) -> dict:  # type: ignore[type-arg]
    out = tmp_path / "out.json"
    code = main(
        ["--trace", str(trace), "--capacity", "1", "--slo", "5", "--json", str(out), *extra]
    )
    assert code == 0
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_json_has_every_policy_with_the_documented_fields(tmp_path: Path) -> None:
    summary = _run(tmp_path, "--seed", "1")
    assert set(summary) == {"trace", "params", "policies"}
    assert list(summary["policies"]) == list(POLICY_NAMES)
    for name, entry in summary["policies"].items():
        assert set(entry) == KEYS, name
        assert 0.0 <= entry["slo_attainment"] <= 1.0
        assert entry["requests"] == summary["trace"]["requests"]
        assert entry["cost_vs_oracle"] == pytest.approx(
            entry["replica_seconds"] / entry["oracle_replica_seconds"], rel=1e-3
        )
    oracle = summary["policies"]["oracle"]
    # The plan plus what removed replicas are billed while they drain.
    assert oracle["cost_vs_oracle"] == pytest.approx(1.0, abs=0.01)
    assert summary["params"]["capacity_rps"] == 1.0
    assert summary["params"]["model"] == "request"
    assert summary["trace"]["format"] == "servegen"


def test_same_seed_same_result_different_seed_different(tmp_path: Path) -> None:
    a = _run(tmp_path, "--seed", "7", "--policy", "kpa,oracle")
    b = _run(tmp_path, "--seed", "7", "--policy", "kpa,oracle")
    c = _run(tmp_path, "--seed", "8", "--policy", "kpa,oracle")
    assert a == b
    assert a["trace"]["requests"] != c["trace"]["requests"]


def test_rate_and_time_scale_change_the_load(tmp_path: Path) -> None:
    base = _run(tmp_path, "--policy", "oracle", trace=AZURE)
    doubled = _run(tmp_path, "--policy", "oracle", "--rate-scale", "2", trace=AZURE)
    faster = _run(tmp_path, "--policy", "oracle", "--time-scale", "2", trace=AZURE)
    assert doubled["trace"]["requests"] == 2 * base["trace"]["requests"]
    assert faster["trace"]["duration_seconds"] == pytest.approx(
        base["trace"]["duration_seconds"] / 2, abs=1.0
    )


def test_table_and_plot_are_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "p.png"
    _run(tmp_path, "--policy", "tritonscale,oracle", "--plot", str(plot), trace=AZURE)
    out = capsys.readouterr().out
    assert "tritonscale" in out and "x oracle" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fluid_model_can_be_forced(tmp_path: Path) -> None:
    summary = _run(tmp_path, "--policy", "oracle", "--model", "fluid", trace=AZURE)
    assert summary["params"]["model"] == "fluid"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--capacity", "0"], "--capacity must be > 0"),
        (["--capacity", "x"], "'x' is not a number"),
        (["--slo", "-1"], "--slo must be > 0"),
        (["--min-replicas", "5", "--max-replicas", "2"], r"--min-replicas \(5\) must be <="),
        (["--max-replicas", "0"], "--max-replicas must be >= 1"),
        (["--cold-start", "-1"], "--cold-start must be >= 0, got -1"),
        (["--rate-scale", "inf"], "--rate-scale must be > 0, got inf"),
        (["--workers", "1.5"], "argument --workers: '1.5' is not an integer"),
        (["--quantile", "1"], r"--quantile must be in \(0, 1\), got 1"),
        (["--policy", "hpa,kpa"], "--policy: unknown 'hpa'"),
        (["--sync-period", "2.5"], "--sync-period"),
        (["--json", "/nonexistent-dir/x.json"], "--json /nonexistent-dir/x.json: directory"),
        (["--format", "parquet"], "invalid choice: 'parquet'"),
    ],
)
def test_bad_flags_exit_2_and_name_the_flag(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--trace": str(AZURE), "--capacity": "1", "--slo": "5"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = [x for kv in base.items() for x in kv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tritonscale simulate")
    assert re.search(message, err), err


def test_bad_trace_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp\n0\n1\nnope\n")
    with pytest.raises(SystemExit) as exc:
        main(["--trace", str(bad), "--capacity", "1", "--slo", "1"])
    assert exc.value.code == 2
    assert f"{bad}:4: timestamp 'nope' is not a number" in capsys.readouterr().err


def test_missing_trace_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--trace", "/no/such/trace.csv", "--capacity", "1", "--slo", "1"])
    assert exc.value.code == 2
    assert "/no/such/trace.csv: no such file" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest.simulator.cli",
            "--trace",
            str(AZURE),
            "--capacity",
            "1",
            "--slo",
            "5",
            "--policy",
            "oracle",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "oracle" in proc.stdout


def _entry(viol: float, rs: float, att: float = 0.999, ratio: float = 1.1) -> dict:  # type: ignore[type-arg]
    return {
        "violating_requests": viol,
        "replica_seconds": rs,
        "slo_attainment": att,
        "cost_vs_oracle": ratio,
    }


def test_goal_check_compares_with_the_reactive_baseline_with_fewest_violations() -> None:
    from loadtest.simulator.evaluate import goal_check

    policies = {
        "tritonscale": _entry(10, 100.0),
        "hpa-gpu-util": _entry(60, 150.0),
        "kpa": _entry(80, 90.0),
        "hpa-queue-depth": _entry(500, 80.0),
    }
    check = goal_check(policies)
    assert check["best_reactive"] == "hpa-gpu-util"
    assert check["violations_ratio"] == 6.0
    assert check["vs_reactive_ok"] and check["slo_ok"] and check["cost_ok"]
    policies["hpa-gpu-util"] = _entry(60, 99.0)  # as good, but cheaper than tritonscale
    assert not goal_check(policies)["vs_reactive_ok"]
    policies["hpa-gpu-util"] = _entry(0, 150.0)  # a baseline with no violations cannot be beaten
    policies["tritonscale"] = _entry(0, 100.0)
    assert goal_check(policies)["violations_ratio"] == 1.0
    assert not goal_check(policies)["vs_reactive_ok"]


@pytest.mark.parametrize(
    "name",
    ["forecaster", "quantile", "panic_factor", "panic_hold_seconds", "scale_down_delay_seconds"],
)
def test_simulator_runs_tritonscale_with_the_service_defaults(name: str) -> None:
    from adapter.config import Config
    from loadtest.simulator.controllers import TritonscaleTuning

    service = Config().predictive.for_series({})
    assert getattr(TritonscaleTuning(), name) == getattr(service, name)


def test_evaluate_without_traces_says_what_to_give(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from loadtest.simulator.evaluate import main as evaluate_main

    monkeypatch.delenv("TRITONSCALE_TRACES", raising=False)
    with pytest.raises(SystemExit) as raised:
        evaluate_main(["--out", str(tmp_path)])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "--traces DIR is required" in err and "TRITONSCALE_TRACES" in err
    with pytest.raises(SystemExit):
        evaluate_main(["--traces", str(tmp_path), "--out", str(tmp_path)])
    assert "holds none of the traces" in capsys.readouterr().err


def test_ratio_source_and_initial_replicas_change_only_what_they_name(tmp_path: Path) -> None:
    burst = ROOT / "loadtest" / "harness" / "data" / "servegen_m-large_burst.tar.gz"
    common = ("--rate-scale", "0.0075", "--seed", "1", "--scrape-interval", "4")
    common += ("--policy", "hpa-queue-compute-ratio,tritonscale", "--max-replicas", "6")
    common += ("--rate-window", "20")
    prometheus = _run(tmp_path, *common, trace=burst)
    adapter = _run(tmp_path, *common, "--ratio-source", "tritonscale", trace=burst)
    assert adapter["params"]["ratio_source"] == "tritonscale"
    assert adapter["params"]["rate_window_seconds"] == 20
    ratio = "hpa-queue-compute-ratio"
    assert adapter["policies"][ratio] != prometheus["policies"][ratio]  # a faster signal
    assert adapter["policies"]["tritonscale"] == prometheus["policies"]["tritonscale"]
    started = _run(tmp_path, *common, "--initial-replicas", "6", trace=burst)
    assert started["params"]["initial_replicas"] == 6
    assert (
        started["policies"]["tritonscale"]["replica_seconds"]
        != prometheus["policies"]["tritonscale"]["replica_seconds"]
    )
    with pytest.raises(SystemExit):
        main(
            [
                "--trace",
                str(burst),
                "--capacity",
                "1",
                "--slo",
                "5",
                "--ratio-source",
                "tritonscale",
                "--rate-window",
                "2.5",
            ]
        )


def test_tritonscale_steps_on_the_mean_of_its_windowed_rates(tmp_path: Path) -> None:
    """As the service: the rate window smooths what the policy sees, so it changes the result
    (feeding the step's exact arrivals made simulated replicas higher than measured)."""
    burst = ROOT / "loadtest" / "harness" / "data" / "servegen_m-large_burst.tar.gz"
    common = ("--rate-scale", "0.0075", "--seed", "1", "--policy", "tritonscale")
    common += ("--max-replicas", "40", "--slo", "10")
    short = _run(tmp_path, *common, "--rate-window", "1", trace=burst)
    long = _run(tmp_path, *common, "--rate-window", "30", trace=burst)
    assert short["params"]["rate_window_seconds"] == 1
    assert (
        short["policies"]["tritonscale"]["replica_seconds"]
        != long["policies"]["tritonscale"]["replica_seconds"]
    )
