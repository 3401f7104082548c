"""Scrape targets and where they come from.

A :class:`TargetSource` yields the full set of targets whenever it changes; the
pipeline reconciles its scrape loops against each set. Static targets (config file,
``--target``) yield once; Kubernetes discovery plugs in behind the same protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

TargetKind = Literal["triton", "dcgm"]


@dataclass(frozen=True, slots=True)
class PodRef:
    """The Kubernetes pod behind a target: its name and its own labels.

    Custom metrics describe objects: a per-pod value names its pod (``describedObject``)
    and a ``labelSelector`` selects pods by their labels. Neither is part of the target's
    group: the pods of one Deployment still aggregate into one series.
    """

    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Target:
    """One ``/metrics`` endpoint. ``labels`` always carry ``namespace`` (``default`` if
    not given); ``scrape_interval_seconds`` overrides the configured interval (s);
    ``pod`` is the pod it scrapes, when known (a non-grouping attribute)."""

    url: str
    kind: TargetKind
    labels: tuple[tuple[str, str], ...]
    scrape_interval_seconds: float | None = None
    pod: PodRef | None = None

    @classmethod
    def create(
        cls,
        url: str,
        kind: TargetKind,
        labels: Mapping[str, str],
        scrape_interval_seconds: float | None = None,
        *,
        pod: str | None = None,
        pod_labels: Mapping[str, str] | None = None,
    ) -> Target:
        merged = {"namespace": "default", **labels}
        ref = PodRef(pod, tuple(sorted((pod_labels or {}).items()))) if pod else None
        return cls(url, kind, tuple(sorted(merged.items())), scrape_interval_seconds, ref)

    @property
    def namespace(self) -> str:
        return dict(self.labels)["namespace"]

    @property
    def group(self) -> tuple[tuple[str, str], ...]:
        """Targets with the same labels form one group; their values are aggregated."""
        return self.labels

    @property
    def pod_key(self) -> tuple[str, str] | None:
        """``(namespace, pod name)`` when the target is a known pod."""
        return None if self.pod is None else (self.namespace, self.pod.name)


class TargetSource(Protocol):
    def watch(self) -> AsyncIterator[frozenset[Target]]:
        """Yield the complete target set now and after every change."""
        ...


class StaticTargets:
    """A fixed target set from the config file and the command line."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self._targets = frozenset(targets)

    async def watch(self) -> AsyncIterator[frozenset[Target]]:
        yield self._targets
