"""The closed-loop demo's simulated side: the same hour through ``tritonscale simulate`` with
the balancer the real loop uses (per-replica queues) and every request scored, as the real
runs are. The demo itself runs real Triton processes (``make demo``); this runs only the
simulation it compares with."""

from __future__ import annotations

from pathlib import Path

from loadtest.harness.closed_loop import ClusterTime
from loadtest.harness.demo import TRACE_PEAK_RPS, build_parser, run_simulation, simulate_command
from loadtest.simulator.cli import build_parser as simulate_parser


def _argv(balancer: str) -> list[str]:
    clock = ClusterTime()
    rate_scale = 4 * clock.capacity_rps / TRACE_PEAK_RPS  # the demo's default: a peak of 4
    return simulate_command(clock, rate_scale, 1, ["tritonscale"], 6, balancer, 2)


def test_the_demo_simulates_per_replica_queues_behind_its_balancer() -> None:
    assert build_parser().parse_args([]).balancer == "random"  # kube-proxy's spreading
    for balancer in ("random", "round-robin"):
        args = simulate_parser().parse_args(_argv(balancer))
        assert args.balancer == balancer  # not the simulator's shared FIFO
        assert args.warm_up == 0  # the real runs score the whole hour
        assert args.initial_replicas == 2 and args.max_replicas == 6


def test_the_demo_simulation_runs_with_random_spreading(tmp_path: Path) -> None:
    summary = run_simulation(_argv("random"), tmp_path)
    assert summary is not None
    assert summary["params"]["balancer"] == "random"
    assert summary["params"]["warm_up_seconds"] == 0
    result = summary["policies"]["tritonscale"]
    assert 0 < result["slo_attainment"] <= 1 and result["replica_seconds"] > 0
    shared = run_simulation([*_argv("random"), "--balancer", "shared"], tmp_path)
    assert shared is not None and shared["params"]["balancer"] == "shared"
    # one shared queue balances perfectly: per-replica queues are a different (fairer) model
    other = shared["policies"]["tritonscale"]
    assert (other["violating_requests"], other["replica_seconds"]) != (
        result["violating_requests"],
        result["replica_seconds"],
    )
