"""Each baseline sees its signal through its real path: Prometheus' lag and windows, the
adapter's fast scrape, tritonscale's publish phase; and every policy starts alike."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.simulator.controllers import (
    KNOBS,
    POLICY_NAMES,
    ArrivalRateHPA,
    GpuUtilHPA,
    PromSeries,
    QueueComputeRatioHPA,
    QueueRateHPA,
    TritonscaleController,
    TritonscaleTuning,
)
from loadtest.simulator.engine import ClusterView, SimParams, Workload, initial_replicas_for
from loadtest.simulator.run import run_policies

PARAMS = SimParams(capacity_rps=10.0, slo_seconds=1.0, cold_start_seconds=60.0, max_replicas=50)
N = 400
STEP_AT = 200  # the load steps up at t = 200 s


def _view(level_before: float, level_after: float) -> ClusterView:
    """A view whose per-tick arrivals, completions and busy seconds step at STEP_AT."""
    level = np.where(np.arange(N) < STEP_AT, level_before, level_after)
    arrivals = level.astype(np.int64)
    cumulative = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(arrivals, out=cumulative[1:])
    return ClusterView(
        params=PARAMS,
        arrivals=arrivals,
        arrivals_cum=cumulative,
        queue_depth=level / 2.0,
        busy_seconds=level / PARAMS.capacity_rps,
        queue_seconds_done=level * 0.01,
        compute_seconds_done=level * 0.1,
        completions=level.astype(float),
        spec=5,
        ready=5,
    )


def _seen(controller: object, view: ClusterView, index: int = 0) -> list[tuple[float, float]]:
    """(time, metric value) the HPA would read at each sync (15 s)."""
    out = []
    for k in range(N):
        controller.observe(k, view)  # type: ignore[attr-defined]
        if (k + 1) % 15 == 0:
            metric = controller._metrics(k, view)[index]  # type: ignore[attr-defined]
            if metric is not None:
                out.append(((k + 1) * 1.0, metric[0]))
    return out


def _half_way(seen: list[tuple[float, float]], before: float, after: float) -> float:
    """Seconds after the step until the served value is half way from before to after."""
    middle = 0.5 * (before + after)
    for t, value in seen:
        if t > STEP_AT and value >= middle:
            return t - STEP_AT
    return float("inf")


def test_prometheus_rate_of_a_steady_counter_is_exact() -> None:
    series = PromSeries()
    for t in range(15, 300, 15):
        series.add(float(t), 7.0 * t)  # 7 per second
    assert series.rate(290.0, 60.0) == pytest.approx(7.0)
    assert series.rate(20.0, 60.0) is None  # one sample in the window: no rate
    assert series.avg_over_time(290.0, 60.0) == pytest.approx(7.0 * (285 + 270 + 255 + 240) / 4)
    assert series.latest(290.0) == 7.0 * 285
    assert series.latest(285.0 + 301.0) is None  # older than the 5 min lookback


def test_prometheus_rate_does_not_extrapolate_a_young_counter_below_zero() -> None:
    series = PromSeries()
    series.add(15.0, 5.0)
    series.add(30.0, 20.0)
    # Window (0, 60], 1 per second between the samples. Extrapolating 15 s back to the window
    # start would take the counter below 0: Prometheus stops at 5 s back (where it is 0), and
    # adds half a sample interval after the last sample (30 s to the end is too far).
    assert series.rate(60.0, 60.0) == pytest.approx(15.0 * (15.0 + 5.0 + 7.5) / 15.0 / 60.0)


def test_gpu_utilisation_through_prometheus_lags_the_fast_adapter_signal() -> None:
    view = _view(10.0, 40.0)  # 1 -> 4 busy replicas; 10 -> 40 req/s
    gpu = _half_way(_seen(GpuUtilHPA(PARAMS, 0.7), view), 1.0, 4.0)
    rate = _half_way(_seen(ArrivalRateHPA(PARAMS, 0.7), view), 10.0, 40.0)
    # DCGM collects every 30 s, Prometheus scrapes every 15 s, the rule averages 1 min: the
    # HPA sees half the step 30 s or more after it; the adapter's 5 s rate by the next sync.
    assert gpu >= 30.0
    assert rate <= 15.0
    assert gpu > rate


def test_keda_rate_trigger_lags_and_queue_trigger_uses_the_latest_scrape() -> None:
    view = _view(10.0, 40.0)
    keda = QueueRateHPA(PARAMS, 0.7)
    queue = _half_way(_seen(keda, view, index=0), 5.0, 20.0)
    rate = _half_way(_seen(QueueRateHPA(PARAMS, 0.7), view, index=1), 10.0, 40.0)
    assert queue <= 15.0 + 15.0  # the next scrape, read at the next sync
    assert rate > queue  # rate[1m] over 15 s scrapes needs several scrapes


def test_queue_compute_ratio_needs_two_scrapes_in_its_window() -> None:
    view = _view(10.0, 10.0)
    controller = QueueComputeRatioHPA(PARAMS, 1.0)
    seen = _seen(controller, view)
    assert seen[0][0] >= 15.0 + 15.0  # the rule has a value once two scrapes exist
    assert seen[-1][1] == pytest.approx(0.1)  # queue 0.01 s / compute 0.1 s per request


def test_tritonscale_publishes_seven_seconds_before_the_hpa_sync() -> None:
    controller = TritonscaleController(
        PARAMS, TritonscaleTuning(), use_headroom=True, name="tritonscale"
    )
    view = _view(10.0, 10.0)
    published_at = []
    last = None
    for k in range(60):
        controller.observe(k, view)
        if controller.published is not last:
            published_at.append(k + 1)
            last = controller.published
    assert published_at[:3] == [8, 23, 38]  # the HPA syncs at 15, 30, 45


def test_every_policy_starts_from_the_same_state_and_is_scored_after_the_same_warm_up() -> None:
    rng = np.random.default_rng(4)
    times = np.sort(rng.uniform(0.0, 900.0, 4000))
    workload = Workload.from_arrivals(times, np.ones_like(times), 900.0)
    params = SimParams(
        capacity_rps=2.0,
        slo_seconds=2.0,
        cold_start_seconds=30.0,
        min_replicas=2,
        max_replicas=40,
        warm_up_seconds=120.0,
    )
    output = run_policies(workload, params, POLICY_NAMES, "request", workers=1, show_progress=False)
    scored = int((times >= 120.0).sum())
    # 4.4 req/s over the first 10 minutes at 50 % of 2 req/s per replica: 5 ready replicas.
    assert initial_replicas_for(workload, params) == 5
    for name, result in output.results.items():
        assert result.spec[0] == 5 and result.ready[0] == 5, name
        assert result.requests == scored, name
    assert set(output.results) == set(POLICY_NAMES)
    assert set(KNOBS) <= set(POLICY_NAMES)
