"""``tritonscale replay``: a trace replayed open loop, nothing dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adapter.cli import main as tritonscale
from loadtest.harness.replay import plan_replay
from loadtest.harness.triton_server import TritonProcess, free_port
from loadtest.simulator.traces import TraceError
from tests.support.paths import REPO_ROOT, SIM_DATA

BURST = REPO_ROOT / "loadtest" / "harness" / "data" / "servegen_m-large_burst.tar.gz"


def test_plan_compresses_time_and_scales_rate() -> None:
    full = plan_replay(SIM_DATA / "azure_conv_slice.csv")
    fast = plan_replay(SIM_DATA / "azure_conv_slice.csv", time_scale=10)
    assert len(fast.arrivals_s) == len(full.arrivals_s) == 300
    np.testing.assert_allclose(fast.arrivals_s * 10, full.arrivals_s)
    assert fast.duration_s == pytest.approx(full.duration_s / 10)
    doubled = plan_replay(SIM_DATA / "azure_conv_slice.csv", rate_scale=2, seed=1)
    assert len(doubled.arrivals_s) == 600 and np.all(np.diff(doubled.arrivals_s) >= 0)


def test_plan_of_the_burst_slice_follows_its_windows() -> None:
    plan = plan_replay(BURST, time_scale=20, rate_scale=0.007, seed=3)
    assert plan.duration_s == pytest.approx(3600 / 20)
    per_window = np.histogram(plan.arrivals_s, bins=6, range=(0, 180))[0] / 30.0
    expected = np.array([166.3, 156.0, 504.4, 523.3, 474.0, 245.3]) * 0.007 * 20
    # each window's arrivals are renewal draws of ~60 bursty clients: +-30 %, the total +-10 %
    np.testing.assert_allclose(per_window, expected, rtol=0.3)
    assert per_window.sum() == pytest.approx(expected.sum(), rel=0.1)
    assert min(per_window[2:5]) > 2 * max(per_window[:2])  # the burst
    cropped = plan_replay(BURST, start_s=1200, end_s=2400, time_scale=20)
    assert cropped.duration_s == pytest.approx(60)


def test_plan_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        plan_replay(tmp_path / "missing.csv", "requests")


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = str(SIM_DATA / "azure_conv_slice.csv")
    args = ["replay", "--trace", trace, "--model", "resnet", "--time-scale", "50"]
    url = f"127.0.0.1:{free_port()}"
    assert tritonscale([*args, "--url", url]) == 2
    assert f"cannot reach Triton at {url} over http" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        tritonscale([*args, "--url", "http://x:1"])
    assert raised.value.code == 2
    assert "without the scheme" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tritonscale([*args, "--url", url, "--rate-scale", "0"])
    assert "--rate-scale must be > 0" in capsys.readouterr().err


@pytest.mark.triton
def test_replay_against_triton_reports_every_request(
    triton: TritonProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "replay.json"
    code = tritonscale(
        [
            "replay",
            "--trace",
            str(SIM_DATA / "azure_conv_slice.csv"),
            "--url",
            triton.http_host_port,
            "--model",
            "bert",
            "--time-scale",
            "8",
            "--json",
            str(out),
        ]
    )
    body = json.loads(out.read_text())
    assert code == 0, body["errors"]
    assert body["requests_scheduled"] == body["requests_sent"] == body["requests_ok"] == 300
    assert body["requests_not_sent"] == 0 and body["requests_failed"] == 0
    assert body["requests_late"] <= body["requests_sent"]  # counted, whatever the CPU allows
    assert body["schedule_lag_ms"]["max"] >= 0
    assert len(body["requests"]) == 300
    latencies = [row[2] for row in body["requests"]]
    assert all(latency is not None and latency > 0.015 for latency in latencies)  # 20 ms model
    assert '"requests_ok": 300' in capsys.readouterr().out
