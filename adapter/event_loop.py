"""Which event loop runs the service: uvloop (libuv, compiled) by default, asyncio's own on
request (``serve --event-loop asyncio``) or where uvloop is not installed.

uvloop does the same work for less CPU: in BENCHMARKS.md ("uvloop") the API's server CPU
per request and the CPU per scrape are measured on both loops in the same run. Everything
the service does on the loop is tested on asyncio's loop, and the listener (whose TLS
wrapping depends on when a loop starts reading) on both.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"

T = TypeVar("T")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop function for ``name`` (one of :data:`EVENT_LOOPS`); uvloop falls back to
    asyncio's loop when it is not installed (an install without it still runs)."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop {name!r}: choose one of {', '.join(EVENT_LOOPS)}")
    if name == "uvloop" and uvloop_installed():
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], event_loop: str = DEFAULT_EVENT_LOOP) -> T:
    """``asyncio.run(main)`` on the named loop."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(main)


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith("uvloop")


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is (for the start-up log line)."""
    return "uvloop" if is_uvloop(asyncio.get_running_loop()) else "asyncio"
