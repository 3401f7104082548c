"""LogLimiter: a burst, then one line per period, and the next line says how many were dropped."""

from __future__ import annotations

from adapter.logging_setup import LogLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_line_per_period_with_the_dropped_count() -> None:
    clock = Clock()
    limiter = LogLimiter(burst=3, per_seconds=10.0, clock=clock)
    assert [limiter.allow() for _ in range(3)] == [0, 0, 0]
    assert [limiter.allow() for _ in range(1000)] == [None] * 1000  # a flood: no lines
    clock.now = 9.9
    assert limiter.allow() is None
    clock.now = 10.0
    assert limiter.allow() == 1001  # the next line reports everything dropped since
    assert limiter.allow() is None
    clock.now = 100.0  # quiet for long: the burst is back, never more than the burst
    assert [limiter.allow() for _ in range(4)] == [1, 0, 0, None]
