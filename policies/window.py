"""Sliding-window helpers shared by the policies (O(1) amortised per push)."""

from __future__ import annotations

import math
from collections import deque


class WindowMax:
    """Max over the last ``size`` pushed values, with a monotonic deque (O(1) amortised)."""

    __slots__ = ("_items", "_size", "_t")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"WindowMax size must be >= 1, got {size}")
        self._size = size
        self._items: deque[tuple[int, int]] = deque()  # (index, value), values decreasing
        self._t = 0

    def push(self, value: int) -> int:
        """Add ``value`` and return the max of the last ``size`` values (this one included)."""
        while self._items and self._items[-1][1] <= value:
            self._items.pop()
        self._items.append((self._t, value))
        while self._items[0][0] <= self._t - self._size:
            self._items.popleft()
        self._t += 1
        return self._items[0][1]


class WindowMean:
    """Mean of the non-NaN values among the last ``size`` pushes (NaN = missing, not 0).

    Running sums over a ring buffer; the sum is rebuilt once per ``size`` pushes to stop float
    drift (amortised O(1)).
    """

    __slots__ = ("_count", "_head", "_pushes", "_size", "_sum", "_values")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"WindowMean size must be >= 1, got {size}")
        self._size = size
        self._values = [math.nan] * size
        self._head = 0
        self._sum = 0.0
        self._count = 0
        self._pushes = 0

    def push(self, value: float) -> None:
        old = self._values[self._head]
        if not math.isnan(old):
            self._sum -= old
            self._count -= 1
        self._values[self._head] = value
        self._head = (self._head + 1) % self._size
        if not math.isnan(value):
            self._sum += value
            self._count += 1
        self._pushes += 1
        if self._pushes % self._size == 0:
            finite = [v for v in self._values if not math.isnan(v)]
            self._sum = math.fsum(finite)
            self._count = len(finite)

    @property
    def count(self) -> int:
        return self._count

    def mean(self) -> float:
        """The mean of the known values in the window; NaN when there are none."""
        return self._sum / self._count if self._count else math.nan
