"""Per-replica queues behind a balancer, draining replicas' billing, equal initial states."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.simulator.engine import BALANCERS, ClusterView, SimParams, Workload, simulate


class Schedule:
    """Sets ``replicas[k]`` at the end of tick k (None = leave as is)."""

    name = "schedule"

    def __init__(self, replicas: dict[int, int] | None = None) -> None:
        self.replicas = replicas or {}

    def decide(self, k: int, view: ClusterView) -> int | None:
        return self.replicas.get(k)


def _params(balancer: str, **kw: float) -> SimParams:
    base: dict[str, float] = {"capacity_rps": 1.0, "slo_seconds": 2.0, "cold_start_seconds": 10.0}
    base.update(kw)
    return SimParams(balancer=balancer, **base)  # type: ignore[arg-type]


def _arrivals(times: list[float], work: list[float], duration: float = 40.0) -> Workload:
    return Workload.from_arrivals(np.asarray(times), np.asarray(work), duration)


# A long request A, then short ones; B's replica is free again before C arrives.
KNOWN = _arrivals([0.1, 0.2, 1.5, 2.6], [10.0, 1.0, 1.0, 1.0])


def test_round_robin_sends_every_other_request_behind_the_long_one() -> None:
    result = simulate(KNOWN, _params("round-robin"), Schedule(), "request", 2)
    assert result.waits is not None
    # r0: A, C (C waits for A until 10.1); r1: B, D.
    np.testing.assert_allclose(result.waits, [0.0, 0.0, 10.1 - 1.5, 0.0])
    assert result.violating_requests == 1


def test_least_outstanding_avoids_the_busy_replica() -> None:
    for seed in range(5):  # whichever replica A lands on, C and D go to the idle one
        result = simulate(KNOWN, _params("least-outstanding", seed=seed), Schedule(), "request", 2)
        assert result.waits is not None
        np.testing.assert_allclose(result.waits, [0.0, 0.0, 0.0, 0.0])


def test_shared_fifo_starts_a_request_on_the_first_free_replica() -> None:
    result = simulate(KNOWN, _params("shared"), Schedule(), "request", 2)
    assert result.waits is not None
    np.testing.assert_allclose(result.waits, [0.0, 0.0, 0.0, 0.0])


def _poisson(rate: float, duration: float, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration * 1.2)))
    times = times[times < duration]
    return Workload.from_arrivals(times, np.ones_like(times), duration)


def test_random_balancer_makes_each_replica_an_md1_queue() -> None:
    # 4 replicas, Poisson 2/s, 1 s deterministic service: each replica sees Poisson 0.5/s, so
    # the mean wait is Pollaczek-Khinchine's rho / (2 mu (1 - rho)) = 0.5 s; the shared queue
    # (M/D/4 at the same load) waits far less.
    workload = _poisson(2.0, 40_000.0, seed=3)
    params = _params("random", slo_seconds=100.0, min_replicas=4, max_replicas=4)
    random = simulate(workload, params, Schedule(), "request", 4)
    shared = simulate(
        workload, _params("shared", slo_seconds=100.0, min_replicas=4), Schedule(), "request", 4
    )
    assert random.waits is not None and shared.waits is not None
    assert random.waits.mean() == pytest.approx(0.5, rel=0.08)
    assert shared.waits.mean() < 0.25 * random.waits.mean()


def test_a_removed_replica_is_billed_until_its_requests_finish() -> None:
    # Round-robin puts A (20 s) on r0 and B (20 s) on r1. Scaling to 1 at t = 2 removes r1, the
    # newest ready replica: it leaves the endpoints but finishes B at 20.6, billed until then.
    workload = _arrivals([0.5, 0.6, 5.0], [20.0, 20.0, 1.0], duration=40.0)
    result = simulate(workload, _params("round-robin"), Schedule({1: 1}), "request", 2)
    assert result.drain_seconds == pytest.approx(20.6 - 2.0)
    assert result.replica_seconds == pytest.approx(2 * 2 + 38 * 1 + (20.6 - 2.0))
    assert result.waits is not None
    assert result.waits[2] == pytest.approx(20.5 - 5.0)  # C goes to r0, behind A


def test_a_removed_idle_replica_stops_costing_at_once() -> None:
    workload = _arrivals([0.5], [1.0], duration=20.0)
    result = simulate(workload, _params("random"), Schedule({4: 1}), "request", 3)
    assert result.drain_seconds == 0.0
    assert result.replica_seconds == pytest.approx(5 * 3 + 15 * 1)


def test_shared_queue_bills_only_the_request_in_service() -> None:
    workload = _arrivals([0.5, 0.6, 0.7], [5.0, 5.0, 5.0], duration=30.0)
    result = simulate(workload, _params("shared"), Schedule({1: 1}), "request", 2)
    # At t = 2 both replicas serve (A until 5.5, B until 5.6); the newest ready (B's) goes.
    assert result.drain_seconds == pytest.approx(5.6 - 2.0)


@pytest.mark.parametrize("balancer", [b for b in BALANCERS if b != "shared"])
def test_requests_with_no_ready_replica_wait_for_the_next_one(balancer: str) -> None:
    workload = _arrivals([5.0, 6.0], [1.0, 1.0], duration=30.0)
    result = simulate(
        workload, _params(balancer, min_replicas=0), Schedule({0: 0, 9: 1}), "request", 1
    )
    assert result.waits is not None
    # Replica requested at t = 10, Ready at t = 20: both wait for it, in arrival order.
    np.testing.assert_allclose(result.waits, [15.0, 15.0])


def test_new_replicas_take_only_requests_that_arrive_after_they_are_ready() -> None:
    # A (30 s) holds r0; a second replica is Ready at t = 11. B arrived at 2: with per-replica
    # queues it stays behind A; the shared queue moves it to the new replica.
    workload = _arrivals([0.5, 2.0, 12.0], [30.0, 1.0, 1.0], duration=60.0)
    per_replica = simulate(workload, _params("random"), Schedule({0: 2}), "request", 1)
    shared = simulate(workload, _params("shared"), Schedule({0: 2}), "request", 1)
    assert per_replica.waits is not None and shared.waits is not None
    assert per_replica.waits[1] == pytest.approx(30.5 - 2.0)
    assert shared.waits[1] == pytest.approx(11.0 - 2.0)


def test_warm_up_is_left_out_of_the_score() -> None:
    workload = _arrivals([0.5, 0.6, 0.7, 30.0], [10.0, 10.0, 10.0, 1.0], duration=40.0)
    params = _params("shared", warm_up_seconds=20.0)
    result = simulate(workload, params, Schedule({24: 2}), "request", 1)
    # Only the request at t = 30 counts (it waits 0); billing counts ticks 20..39.
    assert result.requests == 1
    assert result.violating_requests == 0
    assert result.replica_seconds == pytest.approx(5 * 1 + 15 * 2)


def test_bad_balancer_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--balancer must be one of random, round-robin"):
        _params("hash")
