"""Signals from reading histories: rates, offered load, queue time, restarts, groups."""

from __future__ import annotations

import math

import pytest

from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.readings import ModelCounters, Reading, reading_from_families
from adapter.signals import (
    ARRIVAL_RATE,
    GPU_UTILIZATION,
    QUEUE_COMPUTE_RATIO,
    QUEUE_DEPTH,
    QUEUE_TIME,
    REQUEST_RATE,
    Member,
    ReadingHistory,
    group_series,
)

GROUP = (("deployment", "llm"), ("namespace", "prod"))
WINDOW = 5.0


def reading(
    t: float,
    success: float,
    pending: float = 0.0,
    queue_us: float = 0.0,
    compute_us: float = 0.0,
    failure: float = 0.0,
    model: str = "resnet",
    gpu: tuple[float, ...] = (),
) -> Reading:
    counters = ModelCounters(pending, success, failure, queue_us, compute_us)
    return Reading(
        mono=t, wall=1_000_000.0 + t, models={(model, ""): counters}, gpu_utilization=gpu
    )


def members(*histories: ReadingHistory) -> list[Member]:
    return [Member("triton", h) for h in histories]


def values(histories: list[ReadingHistory], window: float = WINDOW) -> dict[str, float]:
    out = {}
    for metric, points in group_series(GROUP, members(*histories), window).items():
        (point,) = points
        out[metric] = point.value
    return out


def history(*readings: Reading) -> ReadingHistory:
    h = ReadingHistory(keep_seconds=60)
    for r in readings:
        h.add(r)
    return h


def test_steady_load_rates_and_queue_time() -> None:
    h = history(
        reading(0, success=100, pending=4, queue_us=1_000_000, compute_us=2_000_000),
        reading(5, success=150, pending=4, queue_us=1_500_000, compute_us=3_000_000),
    )
    v = values([h])
    assert v[REQUEST_RATE] == pytest.approx(10.0)  # 50 requests / 5 s
    assert v[ARRIVAL_RATE] == pytest.approx(10.0)  # backlog flat: offered == served
    assert v[QUEUE_TIME] == pytest.approx(0.01)  # 0.5 s queued / 50 requests
    assert v[QUEUE_COMPUTE_RATIO] == pytest.approx(0.5)
    assert v[QUEUE_DEPTH] == 4


def test_arrival_rate_is_not_capped_at_capacity_when_saturated() -> None:
    # Served 80/s while the queue grew by 100 in 5 s: 100 req/s were offered.
    h = history(reading(0, success=0, pending=10), reading(5, success=400, pending=110))
    v = values([h])
    assert v[REQUEST_RATE] == pytest.approx(80.0)
    assert v[ARRIVAL_RATE] == pytest.approx(100.0)


def test_window_uses_oldest_reading_inside_it() -> None:
    h = history(*(reading(t, success=10 * t) for t in range(0, 21)))
    v = values([h], window=5.0)
    assert v[REQUEST_RATE] == pytest.approx(10.0)
    base, newest = h.window(5.0)  # type: ignore[misc]
    assert newest.mono - base.mono == pytest.approx(5.0)


def test_single_reading_gives_queue_depth_only() -> None:
    v = values([history(reading(0, success=5, pending=3))])
    assert v == {QUEUE_DEPTH: 3}


@pytest.mark.parametrize(
    ("pending", "expected_queue_time", "expected_ratio"),
    [
        (0.0, 0.0, 0.0),  # idle: nothing waited
        (7.0, WINDOW, math.nan),  # stuck: waiting at least the window, ratio unknown
    ],
)
def test_no_completions(pending: float, expected_queue_time: float, expected_ratio: float) -> None:
    h = history(reading(0, success=10, pending=pending), reading(5, success=10, pending=pending))
    v = values([h])
    assert v[REQUEST_RATE] == 0.0
    assert v[QUEUE_TIME] == expected_queue_time
    assert (math.isnan(v[QUEUE_COMPUTE_RATIO]) and math.isnan(expected_ratio)) or (
        v[QUEUE_COMPUTE_RATIO] == expected_ratio
    )


def test_counter_reset_clears_history_and_never_goes_negative() -> None:
    h = history(
        reading(0, success=1000, pending=40, queue_us=9e9),
        reading(1, success=1100, pending=45, queue_us=9.5e9),
    )
    restarted = h.add(reading(10, success=3, pending=0, queue_us=1000))
    assert restarted and h.restarts == 1
    assert values([h]) == {QUEUE_DEPTH: 0}  # no window across the restart
    h.add(reading(11, success=13, pending=0, queue_us=2000))
    v = values([h])
    assert v[REQUEST_RATE] == pytest.approx(10.0)
    assert v[ARRIVAL_RATE] == pytest.approx(10.0)
    assert all(x >= 0 for x in v.values() if not math.isnan(x))


def test_group_sums_members_and_ages_with_the_oldest() -> None:
    a = history(reading(0, success=0, pending=1), reading(5, success=50, pending=1))
    b = history(reading(0.5, success=0, pending=2), reading(4.0, success=70, pending=2))
    series = group_series(GROUP, members(a, b), WINDOW)
    assert series[QUEUE_DEPTH][0].value == 3
    # each member's rate over its own window, summed: 50/5 s + 70/3.5 s
    assert series[REQUEST_RATE][0].value == pytest.approx(10 + 20)
    assert series[QUEUE_DEPTH][0].timestamp == 1_000_000.0 + 4.0


def test_member_without_readings_makes_group_stale_not_smaller() -> None:
    a = history(reading(0, success=0, pending=1), reading(5, success=50, pending=1))
    silent = ReadingHistory(60)
    series = group_series(GROUP, members(a, silent), WINDOW)
    assert series[QUEUE_DEPTH][0].timestamp == -math.inf
    assert REQUEST_RATE not in series  # no window for the silent member


def test_new_member_without_window_blocks_rates_only() -> None:
    a = history(reading(0, success=0), reading(5, success=50))
    new = history(reading(5, success=0))
    series = group_series(GROUP, members(a, new), WINDOW)
    assert QUEUE_DEPTH in series and REQUEST_RATE not in series


PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (
            "triton",
            'nv_gpu_utilization{gpu_uuid="a"} 0.2\nnv_gpu_utilization{gpu_uuid="b"} 0.6\n',
            0.4,
        ),
        ("dcgm", 'DCGM_FI_DEV_GPU_UTIL{gpu="0"} 50\nDCGM_FI_DEV_GPU_UTIL{gpu="1"} 100\n', 0.75),
        (
            "dcgm",
            'DCGM_FI_DEV_GPU_UTIL{gpu="0"} 90\nDCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0"} 0.3\n',
            0.3,  # engine-active preferred: it is right under MIG
        ),
    ],
)
def test_gpu_utilization_is_a_0_to_1_mean(kind: str, text: str, expected: float) -> None:
    r = reading_from_families(PARSER.parse(text), kind, 0.0, 1.0)  # type: ignore[arg-type]
    v = values([history(r)])
    assert v[GPU_UTILIZATION] == pytest.approx(expected)


def test_no_gpu_families_means_no_gpu_series() -> None:
    r = reading(0, success=1)
    assert GPU_UTILIZATION not in values([history(r)])


def test_versions_summed_or_split() -> None:
    text = (
        'nv_inference_request_success{model="m",version="1"} 10\n'
        'nv_inference_request_success{model="m",version="2"} 5\n'
        'nv_inference_pending_request_count{model="m",version="1"} 1\n'
        'nv_inference_pending_request_count{model="m",version="2"} 2\n'
    )
    families = PARSER.parse(text)
    summed = reading_from_families(families, "triton", 0.0, 0.0, sum_versions=True)
    split = reading_from_families(families, "triton", 0.0, 0.0, sum_versions=False)
    assert summed.models[("m", "")].success == 15 and summed.models[("m", "")].pending == 3
    assert split.models[("m", "2")].success == 5
    labels = {
        p.labels.get("version")
        for p in group_series(GROUP, members(history(split)), 5)[QUEUE_DEPTH]
    }
    assert labels == {"1", "2"}


def test_restart_seen_through_readings_without_models() -> None:
    h = history(reading(0, success=500), reading(1, success=530))
    assert not h.add(Reading(mono=5, wall=5, models={}))  # Triton up, models not loaded yet
    assert h.add(reading(6, success=3))  # lower than the last value seen: a restart
    assert values([h]) == {QUEUE_DEPTH: 0}


def test_model_appearing_mid_window_is_not_a_spike() -> None:
    h = history(Reading(mono=0, wall=0, models={}), reading(1, success=40))
    v = values([h])
    assert REQUEST_RATE not in v  # not 40 requests "in one second"


def test_model_vanishing_on_one_member_holds_instead_of_going_negative() -> None:
    steady = history(reading(0, success=0), reading(5, success=50))
    # The second pod restarted and has not loaded its models yet.
    reloading = history(reading(0, success=500), Reading(mono=5, wall=1_000_005.0, models={}))
    series = group_series(GROUP, members(steady, reloading), WINDOW)
    assert REQUEST_RATE not in series and ARRIVAL_RATE not in series


def test_member_without_the_model_does_not_dilute_the_rate() -> None:
    serves = history(reading(0, success=0), reading(5, success=50))
    other = history(reading(0, success=0, model="bert"), reading(5, success=5, model="bert"))
    series = group_series(GROUP, members(serves, other), WINDOW)
    by_model = {p.labels["model"]: p.value for p in series[REQUEST_RATE]}
    assert by_model == pytest.approx({"resnet": 10.0, "bert": 1.0})


def test_dcgm_member_feeds_gpu_only() -> None:
    triton = history(reading(0, success=0), reading(5, success=50))
    dcgm = history(
        Reading(mono=0, wall=1_000_000.0, gpu_utilization=(0.4,)),
        Reading(mono=1, wall=1_000_001.0, gpu_utilization=(0.6,)),
    )
    series = group_series(GROUP, [Member("triton", triton), Member("dcgm", dcgm)], WINDOW)
    assert series[REQUEST_RATE][0].value == pytest.approx(10.0)
    assert series[REQUEST_RATE][0].timestamp == 1_000_005.0  # not aged by the exporter
    assert series[GPU_UTILIZATION][0].value == pytest.approx(0.6)
    assert series[GPU_UTILIZATION][0].timestamp == 1_000_001.0


@pytest.mark.parametrize(
    ("absent", "missing"),
    [
        ("nv_inference_queue_duration_us", {QUEUE_TIME, QUEUE_COMPUTE_RATIO}),
        ("nv_inference_compute_infer_duration_us", {QUEUE_COMPUTE_RATIO}),
        ("nv_inference_pending_request_count", {QUEUE_DEPTH, ARRIVAL_RATE}),
    ],
)
def test_absent_families_are_not_served_as_zero(absent: str, missing: set[str]) -> None:
    def text(success: int) -> str:
        lines = {
            "nv_inference_request_success": success,
            "nv_inference_pending_request_count": 3,
            "nv_inference_queue_duration_us": 1000 * success,
            "nv_inference_compute_infer_duration_us": 2000 * success,
        }
        return "".join(
            f'{k}{{model="m",version="1"}} {v}\n' for k, v in lines.items() if k != absent
        )

    readings = [
        reading_from_families(PARSER.parse(text(n)), "triton", float(t), float(t))
        for t, n in ((0, 10), (5, 60))
    ]
    served = set(values([history(*readings)]))
    assert not served & missing
    assert REQUEST_RATE in served


def test_restarted_model_that_loads_before_serving_reads_no_false_zero() -> None:
    # Triton exports a restarted model's counters at 0 while it loads and rejects requests.
    h = ReadingHistory(keep_seconds=60, settle_seconds=WINDOW)
    for t in range(3):
        h.add(reading(t, success=1000 + 10 * t, pending=0))
    assert h.add(reading(10, success=0, pending=0))
    for t in (11, 12):  # loading: counters flat at 0
        h.add(reading(t, success=0, pending=0))
        assert REQUEST_RATE not in values([h]), "a loading model must not read as 0 req/s"
    h.add(reading(13, success=10, pending=0))  # serving began between t=12 and t=13
    v = values([h])
    assert v[REQUEST_RATE] == pytest.approx(10.0)  # not 10/3 (a ramp from a loading base)
    assert v[ARRIVAL_RATE] == pytest.approx(10.0)


def test_restarted_model_that_stays_idle_reads_zero_after_the_window() -> None:
    h = ReadingHistory(keep_seconds=60, settle_seconds=WINDOW)
    h.add(reading(0, success=1000, pending=0))
    h.add(reading(1, success=1010, pending=0))
    h.add(reading(10, success=0, pending=0))
    h.add(reading(12, success=0, pending=0))
    assert REQUEST_RATE not in values([h])
    h.add(reading(15, success=0, pending=0))  # a full window with no request: truly idle
    assert values([h])[REQUEST_RATE] == 0.0
