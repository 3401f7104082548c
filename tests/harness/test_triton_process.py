"""The shared ``with`` protocol of the harness's server processes (no real process here)."""

from __future__ import annotations

import pytest

from loadtest.harness.process import ManagedProcess


class Recording(ManagedProcess):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> float:
        self.calls.append("start")
        return 0.0

    def stop(self) -> None:
        self.calls.append("stop")


def test_with_starts_and_returns_the_process() -> None:
    process = Recording()
    with process as entered:
        assert entered is process
        assert process.calls == ["start"]
    assert process.calls == ["start", "stop"]


def test_with_stops_when_the_body_raises_and_lets_the_error_through() -> None:
    process = Recording()
    with pytest.raises(KeyError, match="boom"), process:
        raise KeyError("boom")
    assert process.calls == ["start", "stop"]
