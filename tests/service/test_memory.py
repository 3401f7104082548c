"""The service's memory housekeeping: startup objects frozen out of full collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from adapter.memory import freeze_startup_objects


class _Node:
    """A container the cyclic collector tracks (and that can refer to itself)."""

    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs with a normal collector


def _tracked(obj: object) -> bool:
    """Whether ``obj`` is in a generation a full collection walks (frozen ones are not)."""
    return any(candidate is obj for candidate in gc.get_objects())


@pytest.mark.usefixtures("unfrozen")
def test_objects_alive_at_startup_leave_the_collectors_generations() -> None:
    alive = _Node()
    assert _tracked(alive)
    frozen = freeze_startup_objects()
    assert frozen > 0 and frozen == gc.get_freeze_count()
    assert not _tracked(alive)
    made_after = _Node()
    assert _tracked(made_after)  # what the service makes later is collected as before


@pytest.mark.usefixtures("unfrozen")
def test_cyclic_garbage_is_collected_before_freezing_not_kept_for_ever() -> None:
    garbage = _Node()
    garbage.other = garbage  # a cycle: only the cyclic collector can free it
    gone = weakref.ref(garbage)
    del garbage
    freeze_startup_objects()
    assert gone() is None
