"""``serve`` returns the process's signal handlers as it found them, on both event loops.

uvloop leaves the handlers of ``loop.add_signal_handler`` installed after the loop closes; a
caller that goes on after ``serve`` returned (a test runner, an embedding program) would then
ignore SIGTERM, and so would every process it forks (a multiprocessing pool's workers, which
``Pool.terminate`` then waits for for ever).
"""

from __future__ import annotations

import signal

import pytest

from adapter.cli import main
from adapter.event_loop import EVENT_LOOPS


@pytest.mark.parametrize("event_loop", EVENT_LOOPS)
def test_serve_that_fails_at_start_leaves_the_signal_handlers_as_they_were(
    event_loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # a listen address that cannot be bound: serve starts, installs its handlers, then stops
    code = main(
        [
            "serve",
            "--event-loop",
            event_loop,
            "--listen",
            "192.0.2.1:1",
            "--target",
            "http://127.0.0.1:9/metrics",
        ]
    )
    assert code == 2
    assert "cannot listen on 192.0.2.1:1" in capsys.readouterr().err
    after = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert after == before
