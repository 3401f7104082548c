"""Queue and replica accounting of the simulator against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.simulator.engine import ClusterView, SimParams, Workload, simulate


class Schedule:
    """A controller that sets ``replicas[k]`` at the end of tick k (None = leave as is)."""

    name = "schedule"

    def __init__(self, replicas: dict[int, int] | None = None) -> None:
        self.replicas = replicas or {}
        self.views: list[tuple[int, int, float, float]] = []

    def decide(self, k: int, view: ClusterView) -> int | None:
        self.views.append(
            (view.spec, view.ready, float(view.queue_depth[k]), float(view.busy_seconds[k]))
        )
        return self.replicas.get(k)


def _params(**kw: float | str) -> SimParams:
    """Shared FIFO unless told: these cases pin the queue accounting, not the balancer."""
    base: dict[str, float | str] = {
        "capacity_rps": 1.0,
        "slo_seconds": 2.0,
        "cold_start_seconds": 10.0,
        "balancer": "shared",
    }
    base.update(kw)
    return SimParams(**base)  # type: ignore[arg-type]


def _arrivals(
    times: list[float], work: list[float] | None = None, duration: float = 50.0
) -> Workload:
    t = np.asarray(times, dtype=float)
    w = np.ones_like(t) if work is None else np.asarray(work, dtype=float)
    return Workload.from_arrivals(t, w, duration)


def test_load_below_capacity_never_waits() -> None:
    # One request per second, each needs 0.5 s, one replica: every request finds it free.
    workload = _arrivals([k + 0.25 for k in range(40)])
    result = simulate(workload, _params(capacity_rps=2.0), Schedule(), "request", 1)
    assert result.waits is not None
    assert np.all(result.waits == 0.0)
    assert result.slo_attainment == 1.0
    assert result.p99_queue_seconds == 0.0


def test_simultaneous_arrivals_wait_one_service_time_each() -> None:
    # Three requests at t = 0.5, one replica, 1 s each: waits 0, 1, 2; SLO 1.5 s -> one late.
    workload = _arrivals([0.5, 0.5, 0.5])
    result = simulate(workload, _params(slo_seconds=1.5), Schedule(), "request", 1)
    assert result.waits is not None
    np.testing.assert_allclose(result.waits, [0.0, 1.0, 2.0])
    assert result.violating_requests == 1
    assert result.slo_attainment == pytest.approx(2 / 3)


def test_work_sets_service_time() -> None:
    # work 3 at capacity 2 req/s -> 1.5 s; the next request waits the rest of it.
    workload = _arrivals([0.0, 0.5], work=[3.0, 1.0])  # normalised work would be the same ratio
    result = simulate(workload, _params(capacity_rps=2.0), Schedule(), "request", 1)
    assert result.waits is not None
    np.testing.assert_allclose(result.waits, [0.0, 1.0])


def test_queue_depth_is_sampled_at_tick_end() -> None:
    workload = _arrivals([0.5, 0.5, 0.5])
    controller = Schedule()
    simulate(workload, _params(), controller, "request", 1)
    depths = [v[2] for v in controller.views[:4]]
    # t=1: 1 in service, 2 waiting; t=2: 1 waiting; t=3: none (third started at 2.5).
    assert depths == [2.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("cold_start", [0.0, 5.0, 10.0, 30.0])
def test_cold_start_delays_new_capacity_by_exactly_d(cold_start: float) -> None:
    # Request A (work 100 -> 100 s) holds the only replica; a second replica is requested at
    # t = 1 (end of tick 0); request B arrives at t = 2 and starts when it is Ready, 1 + D.
    workload = _arrivals([0.5, 2.0], work=[100.0, 1.0], duration=200.0)
    params = _params(cold_start_seconds=cold_start)
    result = simulate(workload, params, Schedule({0: 2}), "request", 1)
    assert result.waits is not None
    expected_start = max(2.0, 1.0 + cold_start)
    # work is used as given (not renormalised) by the engine
    assert result.waits[1] == pytest.approx(expected_start - 2.0)


def test_starting_replica_counts_as_spec_but_not_ready() -> None:
    workload = _arrivals([0.5], duration=20.0)
    controller = Schedule({0: 3})
    result = simulate(workload, _params(cold_start_seconds=5.0), controller, "request", 1)
    # After tick 0 (t=1) three replicas exist; they become Ready at t=6 (end of tick 5).
    assert list(result.spec[:8]) == [1, 3, 3, 3, 3, 3, 3, 3]
    assert list(result.ready[:8]) == [1, 1, 1, 1, 1, 3, 3, 3]


def test_replica_seconds_count_starting_replicas_and_stop_at_removal() -> None:
    # 1 replica for ticks 0..9, 3 for ticks 10..14 (two of them still starting), then 1.
    workload = _arrivals([0.5], duration=30.0)
    result = simulate(workload, _params(), Schedule({9: 3, 14: 1}), "request", 1)
    assert result.replica_seconds == pytest.approx(10 * 1 + 5 * 3 + 15 * 1)
    assert result.scale_events == 2


def test_scale_down_removes_starting_replicas_first() -> None:
    # Replica 1 busy with a 100 s request; 2 more requested at t=1 (ready at 11), then scale
    # to 2 at t=3: one starting replica is dropped, the other still serves B at t=11.
    workload = _arrivals([0.5, 2.0], work=[100.0, 1.0], duration=50.0)
    result = simulate(workload, _params(), Schedule({0: 3, 2: 2}), "request", 1)
    assert result.waits is not None
    assert result.waits[1] == pytest.approx(9.0)
    assert list(result.ready[9:12]) == [1, 2, 2]  # Ready at t = 11, the end of tick 10


def test_scale_down_to_zero_ready_leaves_the_queue_waiting() -> None:
    workload = _arrivals([5.0], duration=30.0)
    result = simulate(workload, _params(min_replicas=0), Schedule({0: 0, 9: 1}), "request", 1)
    assert result.waits is not None
    # Replica requested at t=10, Ready at t=20: the request at t=5 waits 15 s.
    assert result.waits[0] == pytest.approx(15.0)


def test_busy_seconds_split_across_ticks() -> None:
    workload = _arrivals([0.5], work=[2.0], duration=5.0)  # busy 0.5..2.5
    controller = Schedule()
    simulate(workload, _params(), controller, "request", 1)
    busy = [v[3] for v in controller.views[:4]]
    np.testing.assert_allclose(busy, [0.5, 1.0, 0.5, 0.0])


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    # Poisson arrivals at 0.5/s, deterministic 1 s service, one server: W = rho / (2 mu (1-rho))
    # = 0.5 s.
    rng = np.random.default_rng(11)
    times = np.cumsum(rng.exponential(2.0, 60_000))
    workload = Workload.from_arrivals(times, np.ones_like(times), float(times[-1]) + 1.0)
    result = simulate(workload, _params(slo_seconds=100.0), Schedule(), "request", 1)
    assert result.waits is not None
    assert result.waits.mean() == pytest.approx(0.5, rel=0.06)


def test_fluid_backlog_grows_by_excess_work() -> None:
    # 2 work units per 1 s tick, one replica serving 1/s: backlog k+1 at the end of tick k;
    # the work arriving at time t leaves at 2t, so it waits t: requests after 2 s violate.
    counts = np.full(10, 2, dtype=np.int64)
    workload = Workload.from_counts(counts, counts.astype(float))
    controller = Schedule()
    result = simulate(workload, _params(slo_seconds=2.0), controller, "fluid", 1)
    np.testing.assert_allclose(result.queue_depth, np.arange(1, 11))
    # Arrivals at t in [0, 2] wait <= 2 s: 4 of the 20 requests; the rest violate.
    assert result.violating_requests == pytest.approx(16.0)
    assert [v[3] for v in controller.views] == [1.0] * 10


def test_fluid_cold_start_adds_capacity_after_d() -> None:
    counts = np.full(20, 2, dtype=np.int64)
    workload = Workload.from_counts(counts, counts.astype(float))
    result = simulate(workload, _params(cold_start_seconds=5.0), Schedule({0: 2}), "fluid", 1)
    # Second replica requested at t=1, ready at t=6: backlog grows by 1/tick until tick 5.
    np.testing.assert_allclose(result.queue_depth[:8], [1, 2, 3, 4, 5, 6, 6, 6])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity_rps": 0.0}, "--capacity must be > 0"),
        ({"slo_seconds": -1.0}, "--slo must be > 0"),
        ({"cold_start_seconds": -5.0}, "--cold-start must be >= 0"),
        ({"scrape_interval_seconds": float("nan")}, "--scrape-interval must be > 0, got nan"),
        ({"max_replicas": 0}, "--max-replicas must be >= 1, got 0"),
        ({"min_replicas": 5, "max_replicas": 2}, r"--min-replicas \(5\) must be <= --max-replicas"),
        ({"sync_period_seconds": 2.5}, r"--sync-period \(2.5 s\) must be a positive multiple"),
    ],
)
def test_bad_parameters_name_the_flag(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _params(**kwargs)
