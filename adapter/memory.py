"""Memory: handing it back to the operating system after a burst of connections (glibc
only), and a garbage collector that does not walk the whole heap every second.

Each TLS connection allocates a 256 KiB read buffer (``asyncio.sslproto``). glibc serves the
first ones with ``mmap`` and then, by its dynamic threshold, from the heap, where a burst of
slowloris connections leaves the heap fragmented: RSS stayed at its peak after the
connections closed. Fixing the mmap threshold at 128 KiB keeps such buffers out of the heap
(freed at once), and a garbage collection and ``malloc_trim`` after a burst return the rest.
Elsewhere (musl, macOS) the glibc calls are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging

__all__ = [
    "collect_cycles_less_often",
    "freeze_startup_objects",
    "keep_large_buffers_out_of_the_heap",
    "return_free_memory",
]

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic collector's thresholds (CPython's defaults: 700, 10, 10), see
:func:`collect_cycles_less_often`."""

_M_MMAP_THRESHOLD = -3  # glibc malloc.h
_MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own initial value, kept fixed


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc
    return libc


def keep_large_buffers_out_of_the_heap() -> bool:
    """Allocate blocks of 128 KiB and more with mmap, always; True if it took effect."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))


def return_free_memory() -> bool:
    """Collect cyclic garbage, then return the heap's free pages to the OS (``malloc_trim``).

    asyncio's socket transports refer to themselves (a bound method), so each closed
    connection waits for the cyclic collector; after a burst, thousands of them can sit in
    the oldest generation for minutes. A full collection costs some 10-30 ms here; the caller
    runs it after bursts only. True if pages were returned.
    """
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


def freeze_startup_objects() -> int:
    """Take every object alive now out of the cyclic collector's full collections; returns
    how many.

    Once the service has started, the modules, classes, config and app it holds (about
    100,000 tracked objects) live as long as the process. A full (generation 2) collection
    walks every tracked object: with a 10,000-series snapshot that was a 70 ms pause, which
    every request in flight waited for (API p99 100+ ms at 2,000 req/s). After one collection
    (so no garbage is frozen with them), ``gc.freeze()`` moves them to the permanent
    generation, as CPython's documentation advises for long-lived processes; the pauses then
    walk only what was made since (8-10 ms with the same snapshot). Snapshots published later
    are freed by reference counting as before.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def collect_cycles_less_often() -> tuple[int, int, int]:
    """Collect the youngest generation after 50,000 net container allocations instead of
    700 (and so the older ones less often too); returns the thresholds it replaced.

    Why: the service keeps a few hundred thousand container objects alive (each target's
    readings for the rate window, the snapshot), renewed every second. With CPython's
    defaults a publish's burst of allocations triggered a young collection every few
    milliseconds and, every few seconds, a full one walking the whole heap on the event loop:
    at 2,000 targets 0.28 s of every second, 29 % of the service's CPU (timed with
    ``gc.callbacks``: ``loadtest.bench.sizing --gc-time``, see BENCHMARKS.md).
    :func:`freeze_startup_objects` makes each full collection shorter, these thresholds make
    collections rare. The readings and snapshots hold no reference
    cycles (they are freed by reference counting whatever the thresholds:
    ``tests/pipeline/test_no_cyclic_garbage.py``); the cycles that do occur (closed
    connections) are also collected explicitly after bursts (:func:`return_free_memory`).
    """
    replaced = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    return replaced
