"""``tritonscale simulate`` (loadtest.simulator.cli.main): JSON schema, reproducibility, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.simulator.cli import main
from loadtest.simulator.controllers import KNOBS, POLICY_NAMES, ROLES
from tests.support.paths import REPO_ROOT, SIM_DATA

DATA = SIM_DATA
ROOT = REPO_ROOT
SERVEGEN = DATA / "servegen_m-large_slice.tar.gz"
AZURE = DATA / "azure_conv_slice.csv"
KEYS = {
    "role",
    "knob",
    "requests",
    "slo_attainment",
    "violating_requests",
    "p99_queue_seconds",
    "replica_seconds",
    "drain_seconds",
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
    scored = {entry["requests"] for entry in summary["policies"].values()}
    assert len(scored) == 1  # every policy is scored on the same requests (after the warm-up)
    assert 0 < scored.pop() < summary["trace"]["requests"]
    for name, entry in summary["policies"].items():
        assert set(entry) == KEYS, name
        assert 0.0 <= entry["slo_attainment"] <= 1.0
        assert entry["role"] == ROLES[name]
        assert entry["drain_seconds"] <= entry["replica_seconds"]
    assert summary["policies"]["kpa"]["knob"] == {"name": "target_utilisation", "value": 0.7}
    assert summary["policies"]["tritonscale"]["knob"] == {
        "name": "slo_attainment",
        "value": 0.995,
    }
    assert summary["policies"]["oracle"]["knob"] is None
    assert summary["params"]["capacity_rps"] == 1.0
    assert summary["params"]["model"] == "request"
    assert summary["params"]["balancer"] == "random"
    assert summary["params"]["warm_up_seconds"] == 120.0 + 300.0
    assert summary["trace"]["format"] == "servegen"


def test_frontier_adds_the_bound_the_frontiers_and_the_cost_at_each_attainment(
    tmp_path: Path,
) -> None:
    policies = "hpa-arrival-rate,kpa,tritonscale,oracle"
    plain = _run(tmp_path, "--seed", "1", "--policy", policies, trace=AZURE)
    summary = _run(
        tmp_path,
        "--seed",
        "1",
        "--policy",
        policies,
        "--frontier",
        "--plot",
        str(tmp_path / "f.png"),
        trace=AZURE,
    )
    assert set(summary) - set(plain) == {"lower_bound", "frontier", "cost_at_attainment"}
    assert list(summary["lower_bound"]) == ["0.99", "0.995", "0.999"]
    solver = summary["params"]["lower_bound_solver"]  # the LP (bound.py), not a placeholder
    assert {s["status"] for s in solver.values()} <= {"optimal", "unattainable"}
    assert set(summary["frontier"]) == set(policies.split(","))
    for name, points in summary["frontier"].items():
        knob = KNOBS.get(name)
        assert [p["value"] for p in points] == (list(knob.grid) if knob else [None]), name
        for point in points:
            assert set(point) == {"knob", "value", "slo_attainment", "replica_seconds"}
        # the default run is the frontier's point at the default knob
        default = summary["policies"][name]
        assert any(
            p["replica_seconds"] == default["replica_seconds"]
            and p["slo_attainment"] == default["slo_attainment"]
            for p in points
        ), name
    for name, costs in summary["cost_at_attainment"].items():
        assert list(costs) == ["0.99", "0.995", "0.999"]
        for level, cost in costs.items():
            if cost is not None:  # no policy beats the lower bound
                assert cost >= summary["lower_bound"][level], (name, level)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "f-timeline.png").read_bytes()[:4] == b"\x89PNG"


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
    assert "tritonscale" in out and "predictive" in out
    assert (tmp_path / "p-timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot.exists()  # the frontier plot needs --frontier


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
        (["--slo-attainment", "1"], r"--slo-attainment must be in \(0, 1\), got 1"),
        (["--slo-target", "0.99,1.5"], r"--slo-target levels must be in \(0, 1\)"),
        (["--balancer", "hash"], "invalid choice: 'hash'"),
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


@pytest.mark.parametrize(
    "name",
    [
        "forecaster",
        "slo_attainment",
        "panic_factor",
        "panic_hold_seconds",
        "scale_down_delay_seconds",
    ],
)
def test_simulator_runs_tritonscale_with_the_service_defaults(name: str) -> None:
    from adapter.config import Config
    from loadtest.simulator.controllers import TritonscaleTuning

    service = Config().predictive.for_series({})
    assert getattr(TritonscaleTuning(), name) == getattr(service, name)


def test_evaluate_rebound_recomputes_only_the_bound(tmp_path: Path) -> None:
    from loadtest.simulator.evaluate import rebound

    summary = _run(tmp_path, "--policy", "kpa,oracle", "--frontier", trace=AZURE)
    path = tmp_path / "out.json"
    damaged = {**summary, "lower_bound": {level: 0.0 for level in summary["lower_bound"]}}
    path.write_text(json.dumps(damaged))
    rebound(path, tmp_path / "bounds", tmp_path / "f.png")
    again = json.loads(path.read_text())
    assert again["lower_bound"] == summary["lower_bound"]
    assert again["frontier"] == summary["frontier"]
    assert again["policies"] == summary["policies"]
    assert (tmp_path / "f.png").exists()
    assert list((tmp_path / "bounds").glob("bound-*.json"))


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
    # the default starts at the opening load (3 here); start every policy at 6 instead, and
    # score from t = 0 (the default warm-up would exclude the start from the cost)
    assert prometheus["params"]["initial_replicas"] == 3
    scored = (*common, "--warm-up", "0")
    default = _run(tmp_path, *scored, trace=burst)
    started = _run(tmp_path, *scored, "--initial-replicas", "6", trace=burst)
    assert started["params"]["initial_replicas"] == 6
    assert (
        started["policies"]["tritonscale"]["replica_seconds"]
        > default["policies"]["tritonscale"]["replica_seconds"]
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
