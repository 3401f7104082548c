"""Trace loaders: each format on a committed slice (and the real file where cheap), errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from loadtest.simulator.traces import (
    ArrivalTrace,
    RateTrace,
    TraceError,
    crop,
    detect_format,
    load_trace,
    scale_trace,
)
from tests.support.paths import SIM_DATA, full_trace

DATA = SIM_DATA


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("azure_conv_slice.csv", "azure"),
        ("mooncake_conversation_slice.jsonl", "mooncake"),
        ("alibaba_lora_slice.csv", "alibaba"),
        ("servegen_m-large_slice.tar.gz", "servegen"),
        ("servegen_chunk_140.csv", "servegen"),
    ],
)
def test_format_is_detected_from_extension_and_header(name: str, fmt: str) -> None:
    assert detect_format(DATA / name) == fmt


def test_requests_and_rates_csv_are_detected(tmp_path: Path) -> None:
    assert detect_format(_write(tmp_path, "a.csv", "timestamp,work\n0,1\n")) == "requests"
    assert detect_format(_write(tmp_path, "b.csv", "start,rate\n0,1\n")) == "rates"


def test_azure_slice_timestamps_and_token_work() -> None:
    trace = load_trace(DATA / "azure_conv_slice.csv")
    assert isinstance(trace, ArrivalTrace)
    assert trace.n_requests == 300
    # Rows 1 and 2: 18:15:46.6805900 and 18:15:50.9951690 -> 4.314579 s apart.
    assert trace.times[0] == 0.0
    assert trace.times[1] == pytest.approx(4.314579, abs=1e-6)
    assert np.all(np.diff(trace.times) >= 0)
    assert trace.work.mean() == pytest.approx(1.0)
    # work ~ prompt + 5 * generated: row 1 (374, 44) vs row 2 (396, 109).
    assert trace.work[1] / trace.work[0] == pytest.approx((396 + 5 * 109) / (374 + 5 * 44))


def test_mooncake_slice_milliseconds() -> None:
    trace = load_trace(DATA / "mooncake_conversation_slice.jsonl")
    assert isinstance(trace, ArrivalTrace)
    assert trace.n_requests == 200
    assert trace.work.mean() == pytest.approx(1.0)
    assert trace.times[-1] < 200  # the first 200 requests span well under 200 s (ms stamps)


def test_alibaba_slice_spreads_same_second_and_uses_exec_time() -> None:
    trace = load_trace(DATA / "alibaba_lora_slice.csv")
    assert isinstance(trace, ArrivalTrace)
    assert trace.n_requests == 200
    assert np.all(np.diff(trace.times) > 0)  # ties inside a second are spread out
    raw = np.genfromtxt(
        str(DATA / "alibaba_lora_slice.csv"), delimiter=",", skip_header=1, usecols=[3]
    )
    np.testing.assert_allclose(trace.work, raw / raw.mean())


def test_servegen_archive_sums_clients_and_samples_reproducibly() -> None:
    trace = load_trace(DATA / "servegen_m-large_slice.tar.gz")
    assert isinstance(trace, RateTrace)
    assert trace.client_rates.shape == (4, 6)
    assert trace.duration == 3600.0
    # Window 0: clients 78, 140, 20 and 1 sum to 7.72333 req/s (computed with awk on the CSVs).
    assert trace.total_rates[0] == pytest.approx(7.72333, abs=1e-4)
    a = trace.sample_arrivals(np.random.default_rng(3))
    b = trace.sample_arrivals(np.random.default_rng(3))
    c = trace.sample_arrivals(np.random.default_rng(4))
    np.testing.assert_array_equal(a.times, b.times)
    assert a.times.size != c.times.size or not np.array_equal(a.times, c.times)
    assert np.all(np.diff(a.times) >= 0) and a.times[-1] < 3600


def test_servegen_rate_matches_the_window_rate_on_average() -> None:
    trace = load_trace(DATA / "servegen_m-large_slice.tar.gz")
    assert isinstance(trace, RateTrace)
    totals = [trace.sample_arrivals(np.random.default_rng(s)).n_requests for s in range(20)]
    # Renewal processes with mean IAT 1/rate: the expected count is sum(rate * 600).
    assert np.mean(totals) == pytest.approx(trace.expected_requests, rel=0.05)


def test_servegen_step_counts_equal_binned_arrivals_for_the_same_seed() -> None:
    trace = load_trace(DATA / "servegen_m-large_slice.tar.gz")
    assert isinstance(trace, RateTrace)
    arrivals = trace.sample_arrivals(np.random.default_rng(9))
    counts, work = trace.sample_step_counts(np.random.default_rng(9), 1.0, 3600)
    expected = np.bincount(arrivals.times.astype(np.int64), minlength=3600)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(work, expected.astype(float))


def test_servegen_archive_with_two_datasets_needs_a_selector(tmp_path: Path) -> None:
    archive = full_trace("servegen_client_traces_deepseek-r1_mm-image.tar.gz")
    with pytest.raises(TraceError, match=r"several ServeGen datasets.*#<dataset>"):
        load_trace(archive)
    trace = load_trace(f"{archive}#reason/deepseek-r1")
    assert isinstance(trace, RateTrace)
    assert trace.client_rates.shape[0] == 73
    assert trace.duration == 86400.0


def test_requests_csv_keeps_timestamps_and_normalises_work(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "timestamp,work\n1.0,2\n1.5,6\n3.0,4\n")
    trace = load_trace(path)
    assert isinstance(trace, ArrivalTrace)
    np.testing.assert_allclose(trace.times, [1.0, 1.5, 3.0])
    np.testing.assert_allclose(trace.work, [0.5, 1.5, 1.0])


def test_rates_csv_last_interval_repeats_previous_length(tmp_path: Path) -> None:
    path = _write(tmp_path, "q.csv", "start,rate\n0,2\n10,0\n20,4\n")
    trace = load_trace(path)
    assert isinstance(trace, RateTrace)
    assert trace.duration == 30.0
    assert trace.expected_requests == pytest.approx(2 * 10 + 4 * 10)
    arrivals = trace.sample_arrivals(np.random.default_rng(0)).times
    assert not np.any((arrivals >= 10) & (arrivals < 20))  # rate 0 in [10, 20)


def test_time_and_rate_scaling_of_arrivals() -> None:
    base = ArrivalTrace("t", np.arange(100.0), np.ones(100), 100.0)
    rng = np.random.default_rng(1)
    faster = scale_trace(base, time_scale=2.0, rate_scale=1.0, rng=rng)
    assert isinstance(faster, ArrivalTrace)
    assert faster.duration == 50.0
    np.testing.assert_allclose(faster.times, np.arange(100.0) / 2)
    doubled = scale_trace(base, time_scale=1.0, rate_scale=2.0, rng=rng)
    assert isinstance(doubled, ArrivalTrace)
    assert doubled.n_requests == 200
    assert np.all(np.diff(doubled.times) >= 0)
    thinned = scale_trace(base, time_scale=1.0, rate_scale=0.5, rng=np.random.default_rng(2))
    assert isinstance(thinned, ArrivalTrace)
    assert 30 <= thinned.n_requests <= 70


def test_rate_trace_scaling_multiplies_rates() -> None:
    trace = load_trace(DATA / "servegen_m-large_slice.tar.gz")
    scaled = scale_trace(trace, time_scale=2.0, rate_scale=3.0, rng=np.random.default_rng(0))
    assert isinstance(scaled, RateTrace)
    assert scaled.duration == 1800.0
    assert scaled.mean_rate == pytest.approx(trace.mean_rate * 6)


def test_crop_rebases_arrivals() -> None:
    base = ArrivalTrace("t", np.arange(10.0), np.ones(10), 10.0)
    part = crop(base, 3.0, 6.0)
    assert isinstance(part, ArrivalTrace)
    np.testing.assert_allclose(part.times, [0.0, 1.0, 2.0])
    assert part.duration == 3.0


@pytest.mark.parametrize(
    ("name", "text", "fmt", "message"),
    [
        ("e.csv", "timestamp\n", "requests", r"e\.csv: empty trace"),
        ("e2.csv", "", "requests", r"e2\.csv: empty trace"),
        ("m.csv", "timestamp,work\n0,1\n1\n", "requests", r"m\.csv:3: malformed row"),
        ("n.csv", "timestamp\n0\nabc\n", "requests", r"n\.csv:3: timestamp 'abc' is not a number"),
        ("u.csv", "timestamp\n0\n5\n2\n", "requests", r"u\.csv:4: .*must be sorted"),
        ("w.csv", "timestamp,work\n0,0\n", "requests", r"w\.csv:2: work 0.0 must be > 0"),
        ("c.csv", "time\n0\n", "requests", r"c\.csv:1: missing column 'timestamp'"),
        ("r.csv", "start,rate\n0,1\n0,2\n", "rates", r"r\.csv:3: start 0.0 is not after"),
        ("n2.csv", "start,rate\n0,-1\n", "rates", r"n2\.csv:2: rate -1.0 must be >= 0"),
        ("j.jsonl", '{"timestamp": 0}\n{oops\n', "mooncake", r"j\.jsonl:2: malformed JSON"),
        ("j2.jsonl", '{"timestamp": 5}\n{"timestamp": 1}\n', "mooncake", r"j2\.jsonl:2: .*sorted"),
        (
            "a.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n",
            "azure",
            r"a\.csv:2: TIMESTAMP 'yesterday' is not a datetime",
        ),
        (
            "a2.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1\n",
            "azure",
            r"a2\.csv:2: malformed row: 2 fields, header has 3",
        ),
        (
            "l.csv",
            "gmt_create,exec_time_seconds\n2025-01-01 00:00:00,1\nnoon,1\n",
            "alibaba",
            r"l\.csv:3: gmt_create 'noon' is not a datetime",
        ),
        (
            "l2.csv",
            "gmt_create,exec_time_seconds\n2025-01-01 00:00:00,1,9\n",
            "alibaba",
            r"l2\.csv:2: malformed row: 3 fields, header has 2",
        ),
        (
            "l3.csv",
            "gmt_create,exec_time_seconds\n2025-01-01 00:00:00,-1\n",
            "alibaba",
            r"l3\.csv:2: exec_time_seconds -1.0 is negative",
        ),
        ("r2.csv", "start,rate\n0\n", "rates", r"r2\.csv:2: malformed row: 1 fields"),
        ("s.csv", "0,1,1,Lognormal,1,1\n", "servegen", r"s\.csv:1: unknown inter-arrival family"),
        ("s2.csv", "0,1,1,Gamma\n", "servegen", r"s2\.csv:1: malformed row: 4 fields"),
        ("s3.csv", "0,0,0,,0,0\n", "servegen", r"s3\.csv: empty trace"),
    ],
)
def test_bad_traces_name_file_and_line(
    tmp_path: Path, name: str, text: str, fmt: str, message: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(TraceError, match=message):
        load_trace(path, fmt)


def test_unknown_header_and_unknown_format_are_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "foo,bar\n1,2\n")
    with pytest.raises(TraceError, match=r"x\.csv:1: cannot tell the trace format.*--format"):
        load_trace(path)
    with pytest.raises(TraceError, match="unknown trace format 'parquet'"):
        load_trace(path, "parquet")
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    ("name", "requests", "mean_rate"),
    [
        ("AzureLLMInferenceTrace_conv_2023.csv", 19366, 5.5),
        ("mooncake_conversation_trace.jsonl", 12031, 3.4),
        ("mooncake_synthetic_trace.jsonl", 3993, 3.9),
        ("alibaba_GenTD26_lora_request_trace.csv", 26823, 0.0135),
    ],
)
def test_real_request_traces_match_their_published_size(
    name: str, requests: int, mean_rate: float
) -> None:
    path = full_trace(name)
    trace = load_trace(path)
    assert isinstance(trace, ArrivalTrace)
    assert trace.n_requests == requests
    assert trace.mean_rate == pytest.approx(mean_rate, rel=0.03)
    assert math.isclose(float(trace.work.mean()), 1.0)


def test_real_servegen_m_large_matches_its_published_size() -> None:
    path = full_trace("servegen_client_traces_m-large.tar.xz")
    trace = load_trace(path)
    assert isinstance(trace, RateTrace)
    assert trace.client_rates.shape[0] == 162
    assert trace.duration == 14 * 86400
    assert trace.mean_rate == pytest.approx(196, rel=0.01)  # README: mean 196 req/s
