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
    group: the pods of one Deployment still aggregate into one series. ``container`` is the
    container serving the scraped port, when known (it picks that container's GPUs from
    dcgm-exporter's pod mapping).
    """

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    container: str | None = None


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
        container: str | None = None,
    ) -> Target:
        merged = {"namespace": "default", **labels}
        ref = PodRef(pod, tuple(sorted((pod_labels or {}).items())), container) if pod else None
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

    @property
    def node_scoped(self) -> bool:
        """A dcgm-exporter pod (one per node, a DaemonSet's): it reports the GPUs of every pod
        on its node, so it belongs to no group; its devices join the Triton pods by the pod
        labels it puts on them. A dcgm target without a pod (static, configured with the
        labels of the group its node serves) still feeds that group the GPUs no pod holds."""
        return self.kind == "dcgm" and self.pod is not None


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
