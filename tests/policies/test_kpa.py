"""Knative-like baseline: stable and panic windows, rate limits, missing samples."""

from __future__ import annotations

import math

from policies.kpa import KnativeLikePolicy


def kpa(**overrides: float) -> KnativeLikePolicy:
    settings: dict[str, float] = {"step_seconds": 2.0, "capacity_rps": 100.0}
    settings.update(overrides)
    return KnativeLikePolicy(**settings)  # type: ignore[arg-type]


def test_steady_rate_over_target_utilisation() -> None:
    policy = kpa()  # target per pod 70 rps
    results = [policy.step(140.0, 2) for _ in range(40)]
    assert set(results) == {2}
    assert kpa().step(141.0, 2) == 3


def test_burst_enters_panic_and_uses_the_panic_window() -> None:
    policy = kpa()  # stable 30 samples, panic 3 samples
    for _ in range(30):
        policy.step(50.0, 1)
    desired = policy.step(1000.0, 1)
    # panic mean (50 + 50 + 1000) / 3 = 366.7 -> 6 pods, 6 / 1 >= 2 -> panic
    assert policy.in_panic
    assert desired == 6


def test_no_scale_down_in_panic_until_a_stable_window_passes() -> None:
    policy = kpa()
    for _ in range(30):
        policy.step(50.0, 1)
    peak = policy.step(1000.0, 1)
    counts = [policy.step(50.0, peak) for _ in range(31)]
    # last over-threshold at t = 62 s; panic ends when 62 + 60 < now, i.e. at 124 s (step 31)
    assert counts[:30] == [peak] * 30
    assert not policy.in_panic
    assert counts[30] < peak


def test_scale_down_rate_halves_at_most() -> None:
    policy = kpa()
    assert policy.step(0.0, 10) == 5  # floor(10 / 2)


def test_scale_up_rate_limit() -> None:
    policy = kpa(max_scale_up_rate=2.0)
    assert policy.step(10_000.0, 3) == 6  # ceil(2 * 3)


def test_missing_samples_are_skipped() -> None:
    policy = kpa()
    assert policy.step(math.nan, 4) == 4  # no data: hold
    assert policy.step(140.0, 4) == 2
    assert policy.step(math.nan, 2) == 2  # mean of the known samples only


def test_scale_down_delay_keeps_the_max() -> None:
    policy = kpa(scale_down_delay_seconds=4.0, max_scale_down_rate=100.0)
    policy.step(700.0, 10)  # 10 pods
    counts = [policy.step(0.0, 10) for _ in range(3)]
    # undelayed: stable means 350, 233, 175 -> 5, 4, 3; the 4 s delay keeps the max of the
    # last three decisions (this one included)
    assert counts == [10, 10, 5]


def test_restart_starts_in_panic_holding_the_count() -> None:
    policy = kpa(initial_ready_replicas=8)
    assert policy.in_panic
    assert policy.step(0.0, 8) == 8
