"""The context-manager protocol shared by the load-test server fixtures (Triton, Prometheus)."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class ManagedProcess(abc.ABC):
    """A server subprocess with sync ``start()`` and ``stop()``; ``with process:`` starts it and
    always stops it. Subclasses may add optional arguments (timeouts) to both."""

    @abc.abstractmethod
    def start(self) -> float:
        """Launch and wait until ready; returns the seconds it took."""

    @abc.abstractmethod
    def stop(self) -> object:
        """Terminate (forcefully after a timeout) and clean up."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
