"""Load generator and server flags without a server: arrivals, schedules, flag errors."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.harness import loadgen, triton_server
from loadtest.harness.loadgen import RateSegment, arrival_times, parse_schedule, validate_schedule
from loadtest.harness.triton_server import ModelSpec


def test_constant_arrivals_are_evenly_spaced_per_segment() -> None:
    times = arrival_times([RateSegment(0, 4), RateSegment(1, 2)], 2.0, "constant")
    np.testing.assert_allclose(times, [0, 0.25, 0.5, 0.75, 1.0, 1.5])


def test_poisson_arrivals_follow_each_segment_rate() -> None:
    schedule = [RateSegment(0, 100), RateSegment(50, 400), RateSegment(100, 0)]
    times = arrival_times(schedule, 150.0, "poisson", np.random.default_rng(1))
    assert np.all(np.diff(times) >= 0)
    first = np.count_nonzero(times < 50)
    second = np.count_nonzero((times >= 50) & (times < 100))
    # Poisson counts: mean 5000 / 20000, sd ~71 / ~141; 5 sd bounds
    assert abs(first - 5000) < 5 * 71
    assert abs(second - 20000) < 5 * 141
    assert np.count_nonzero(times >= 100) == 0
    gaps = np.diff(times[times < 50])
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1


def test_poisson_arrivals_are_reproducible_from_seed() -> None:
    schedule = [RateSegment(0, 30)]
    first = arrival_times(schedule, 5, rng=np.random.default_rng(42))
    second = arrival_times(schedule, 5, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(first, second)


def test_schedule_longer_than_duration_is_cut() -> None:
    times = arrival_times([RateSegment(0, 10), RateSegment(5, 10)], 1.0, "constant")
    assert len(times) == 10 and times.max() < 1.0


def test_parse_schedule() -> None:
    assert parse_schedule("0:40, 10:120") == [RateSegment(0, 40), RateSegment(10, 120)]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("0:40,10", "item 2 '10': expected start_s:rate_rps"),
        ("0:forty", "item 1 '0:forty': start_s and rate_rps must be numbers"),
        ("5:40", "segment 1 starts at 5.0 s; must be 0"),
        ("0:40,0:50", "segment 2: start_s 0.0 must be greater"),
        ("0:-1", "segment 1: rate_rps -1.0 must be >= 0"),
    ],
)
def test_bad_schedule_names_the_item(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(")):
        parse_schedule(text)


def test_empty_schedule_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        validate_schedule([])


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--model", "m", "--rate", "10", "--duration", "0", "--url", "h:1"], "--duration 0.0"),
        (["--model", "m", "--rate", "10", "--duration", "1", "--url", "http://h:1"], "--url"),
        (["--model", "m", "--schedule", "1:10", "--duration", "1", "--url", "h:1"], "--rate/"),
    ],
)
def test_loadgen_cli_rejects_bad_flags(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        loadgen.main(argv)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "spec", "capacity_rps"),
    [
        ("resnet:50:4", ModelSpec("resnet", 50.0, 4), 80.0),
        ("bert:20:4", ModelSpec("bert", 20.0, 4), 200.0),
        ("tiny:2.5:1", ModelSpec("tiny", 2.5, 1), 400.0),
    ],
)
def test_model_flag_parses(text: str, spec: ModelSpec, capacity_rps: float) -> None:
    parsed = ModelSpec.parse(text)
    assert parsed == spec
    assert parsed.capacity_rps == pytest.approx(capacity_rps)
    assert ModelSpec.parse(parsed.flag()) == parsed


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("resnet:50", "expected name:service_ms:max_batch"),
        (":50:4", "expected name:service_ms:max_batch"),
        ("resnet:fast:4", "service_ms 'fast' is not a number"),
        ("resnet:50:four", "max_batch 'four' is not an integer"),
        ("resnet:0:4", "service_ms must be > 0"),
        ("resnet:50:0", "max_batch must be >= 1"),
    ],
)
def test_bad_model_flag_is_rejected_by_the_cli(
    text: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        triton_server.main(["--model", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--model {text!r}" in err and complaint in err


def test_duplicate_model_names_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        triton_server.main(["--model", "a:1:1", "--model", "a:2:2"])
    assert "duplicate model names" in capsys.readouterr().err


def test_help_names_grpc_as_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        loadgen.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "gRPC endpoint (the default protocol" in text
    assert loadgen._build_parser().get_default("protocol") == "grpc"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unreachable_server_is_one_clear_error_before_any_request(
    protocol: loadgen.WireProtocol, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"127.0.0.1:{triton_server.free_port()}"  # nothing listens there
    argv = ["--url", url, "--model", "m", "--rate", "50", "--duration", "60"]
    assert loadgen.main([*argv, "--protocol", protocol]) == 2  # returns at once, not in 60 s
    err = capsys.readouterr().err
    assert f"cannot reach Triton at {url} over {protocol}" in err
    assert "--protocol" in err


def test_late_requests_are_counted_by_how_far_behind_they_were_sent() -> None:
    records = [
        loadgen.RequestRecord(scheduled_s=1.0, send_s=1.001),
        loadgen.RequestRecord(scheduled_s=2.0, send_s=2.3),
    ]
    result = loadgen.LoadResult(
        "m", "http", 3.0, 2, 2, 2, 0, 0, 0, 2.3, 3.0, 0.3, 0.0, records, [], 0.0
    )
    assert result.late(0.05) == 1 and result.late(0.5) == 0
    assert result.summary()["late"] == 1
