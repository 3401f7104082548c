"""Replica manager: real Triton processes as the replicas of one Deployment.

It plays the Deployment controller, ReplicaSet and kubelet for the closed-loop demo. ``scale(n)``
sets ``spec.replicas``; the manager then

- **adds** a replica by launching a Triton process (:class:`TritonProcess`, a sleep model with
  dynamic batching) and publishing its pod, Pending then Running but not Ready, to the local
  Kubernetes API (:mod:`loadtest.harness.kube_api`). The replica becomes Ready
  ``start_delay_s`` after it was asked for (the stand-in for pulling and loading a model), or
  when its process is up if that takes longer; only then does its pod turn Ready, so the
  adapter's discovery scrapes it and the balancer sends it traffic;
- **removes** replicas as a ReplicaSet does (not-ready pods first, newest first; then the
  ready ones ready for the shortest time): the pod gets a ``deletionTimestamp`` (discovery drops
  it) and the balancer stops sending it new connections; once its open requests finished
  (``drain_timeout_s`` at most) the process is stopped and the pod deleted.

``replica_seconds()`` bills each replica from the moment it was asked for until its process
stopped (draining included), as a node would be billed. Every process is stopped by
:meth:`ReplicaManager.close` (and, if the interpreter dies first, by
:mod:`loadtest.harness.triton_server`'s exit hook).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from loadtest.harness.balancer import Backend, Balancer
from loadtest.harness.kube_api import FakePodAPI, make_pod
from loadtest.harness.triton_server import (
    LOOPBACK,
    ModelSpec,
    TritonProcess,
    TritonStartError,
)

log = logging.getLogger(__name__)

TEMPLATE_HASH = "7d9f8b6c5d"
"""The pods' ``pod-template-hash`` (and their ReplicaSet's name suffix), as Kubernetes sets it."""

_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
MAX_FAILED_STARTS = 3

ReplicaState = Literal["starting", "ready", "draining", "stopped"]


@dataclass(eq=False)
class Replica:
    """One pod: its Triton process and its life times (monotonic seconds)."""

    name: str
    process: TritonProcess
    requested_at: float
    state: ReplicaState = "starting"
    ready_at: float | None = None
    removed_at: float | None = None
    stopped_at: float | None = None
    removed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def backend(self) -> Backend:
        return (LOOPBACK, self.process.http_port)


@dataclass(frozen=True, slots=True)
class ReplicaEvent:
    """The Deployment's counts after a change: ``t`` monotonic seconds."""

    t: float
    desired: int
    existing: int  # pods not being deleted (status.replicas): starting + ready
    ready: int


class ReplicaManager:
    """Keeps ``desired`` Triton replicas of ``model`` behind ``balancer`` (see module doc)."""

    def __init__(
        self,
        model: ModelSpec,
        *,
        start_delay_s: float,
        balancer: Balancer,
        pods: FakePodAPI | None = None,
        namespace: str = "prod",
        deployment: str = "triton-llm",
        pod_labels: Mapping[str, str] | None = None,
        max_replicas: int = 6,
        drain_timeout_s: float = 30.0,
        metrics_interval_ms: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if max_replicas < 1:
            raise ValueError(f"max_replicas must be >= 1, got {max_replicas}")
        self.model = model
        self.start_delay_s = start_delay_s
        self.balancer = balancer
        self.pods = pods
        self.namespace = namespace
        self.deployment = deployment
        self.pod_labels = dict(pod_labels or {"app.kubernetes.io/name": deployment})
        self.max_replicas = max_replicas
        self.drain_timeout_s = drain_timeout_s
        self.metrics_interval_ms = metrics_interval_ms
        self.clock = clock
        self._rng = random.Random(seed)
        self.desired = 0
        self.replicas: list[Replica] = []  # every replica ever asked for, in order
        self.events: list[ReplicaEvent] = []
        self.processes_started = 0
        self.failed_starts = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closing = False
        self.error: str | None = None  # set when replicas cannot be started at all

    # -- what the HPA reads -------------------------------------------------------------------
    @property
    def existing(self) -> int:
        """Pods that exist and are not being deleted (``status.replicas``)."""
        return sum(1 for r in self.replicas if r.state in ("starting", "ready"))

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas if r.state == "ready")

    def replica_seconds(self, now: float | None = None) -> float:
        """Seconds each replica existed (asked for until stopped), summed."""
        now = self.clock() if now is None else now
        return sum(
            (r.stopped_at if r.stopped_at is not None else now) - r.requested_at
            for r in self.replicas
        )

    def cold_starts(self) -> list[float]:
        """Seconds from asked-for to Ready of every replica that became Ready."""
        return [r.ready_at - r.requested_at for r in self.replicas if r.ready_at is not None]

    # -- scaling ------------------------------------------------------------------------------
    def scale(self, desired: int) -> None:
        """Set ``spec.replicas`` (clamped to [0, max_replicas]) and start acting on it."""
        if self._closing:
            return
        desired = max(0, min(self.max_replicas, desired))
        if desired != self.desired:
            log.info("scale", extra={"from": self.desired, "to": desired})
        self.desired = desired
        self._reconcile()

    async def wait_ready(self, count: int, timeout_s: float) -> None:
        """Wait until ``count`` replicas are Ready (TimeoutError naming what is missing)."""
        deadline = self.clock() + timeout_s
        while self.ready < count:
            if self.error is not None:
                raise RuntimeError(self.error)
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.ready} of {count} replicas ready after {timeout_s:.0f} s"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    def _reconcile(self) -> None:
        live = [r for r in self.replicas if r.state in ("starting", "ready")]
        for _ in range(self.desired - len(live)):
            replica = self._new_replica()
            self._publish(replica, "Pending", ready=False)  # the pod exists at once
            self._spawn(self._start(replica))
        if len(live) > self.desired:
            # ReplicaSet order: not ready before ready; among those, the newest first.
            ranked = sorted(
                live,
                key=lambda r: (r.state == "ready", -(r.ready_at or r.requested_at)),
            )
            for replica in ranked[: len(live) - self.desired]:
                if self._remove(replica) == "ready":
                    self._spawn(self._drain_and_stop(replica))
        self._record()

    def _record(self) -> None:
        self.events.append(ReplicaEvent(self.clock(), self.desired, self.existing, self.ready))
        self._changed.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_replica(self) -> Replica:
        suffix = "".join(self._rng.choice(_SUFFIX_CHARS) for _ in range(5))
        process = TritonProcess((self.model,), metrics_interval_ms=self.metrics_interval_ms)
        replica = Replica(f"{self.deployment}-{TEMPLATE_HASH}-{suffix}", process, self.clock())
        self.replicas.append(replica)
        return replica

    def _publish(
        self, replica: Replica, phase: str, *, ready: bool, deleting: bool = False
    ) -> None:
        if self.pods is None:
            return
        process = replica.process
        self.pods.put(
            make_pod(
                replica.name,
                namespace=self.namespace,
                ip=LOOPBACK if phase == "Running" else None,
                ready=ready,
                phase=phase,
                labels=self.pod_labels,
                owner=("ReplicaSet", f"{self.deployment}-{TEMPLATE_HASH}"),
                template_hash=TEMPLATE_HASH,
                ports=(
                    ("http", process.http_port),
                    ("grpc", process.grpc_port),
                    ("metrics", process.metrics_port),
                ),
                deleting=deleting,
            )
        )

    async def _start(self, replica: Replica) -> None:
        """Boot, wait out the start delay, turn Ready. A replica removed meanwhile is stopped
        here, once its process is up: this task owns the process until start() returned."""
        self.processes_started += 1
        try:
            await asyncio.to_thread(replica.process.start)
        except TritonStartError as err:
            self._failed(replica, str(err))
            return
        if replica.state == "starting":
            self._publish(replica, "Running", ready=False)  # up; the model still "loading"
            remaining = replica.requested_at + self.start_delay_s - self.clock()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(replica.removed.wait(), remaining)
        if replica.state != "starting":
            await self._stop(replica)
            return
        replica.state = "ready"
        replica.ready_at = self.clock()
        self.failed_starts = 0
        self._publish(replica, "Running", ready=True)
        self.balancer.add(replica.backend)
        log.info(
            "replica ready",
            extra={
                "pod": replica.name,
                "cold_start_s": round(replica.ready_at - replica.requested_at, 2),
            },
        )
        self._record()

    def _failed(self, replica: Replica, why: str) -> None:
        log.error("replica failed to start", extra={"pod": replica.name, "error": why[-2000:]})
        replica.state = "stopped"
        replica.stopped_at = self.clock()
        if self.pods is not None:
            with contextlib.suppress(KeyError):
                self.pods.delete(self.namespace, replica.name)
        self.failed_starts += 1
        if self.failed_starts >= MAX_FAILED_STARTS or self._closing:
            self.error = f"{self.failed_starts} Triton replicas in a row failed to start: {why}"
            self._record()
            return
        self._reconcile()  # as a ReplicaSet does: a failed pod is replaced

    def _remove(self, replica: Replica) -> ReplicaState:
        """Delete the pod: out of the balancer and discovery at once. Returns its state before;
        a starting one is stopped by its own start task once its process is up."""
        was = replica.state
        replica.state = "draining"
        replica.removed_at = self.clock()
        replica.removed.set()
        self.balancer.remove(replica.backend)
        phase = "Running" if was == "ready" else "Pending"
        self._publish(replica, phase, ready=was == "ready", deleting=True)
        return was

    async def _drain_and_stop(self, replica: Replica) -> None:
        deadline = self.clock() + self.drain_timeout_s
        while (
            self.balancer.active(replica.backend) > 0
            and self.clock() < deadline
            and not self._closing
        ):
            await asyncio.sleep(0.05)  # product code: polling the drain, not a test wait
        await self._stop(replica)

    async def _stop(self, replica: Replica) -> None:
        await asyncio.to_thread(replica.process.stop)
        replica.state = "stopped"
        replica.stopped_at = self.clock()
        if self.pods is not None:
            with contextlib.suppress(KeyError):
                self.pods.delete(self.namespace, replica.name)
        self._record()

    async def close(self) -> None:
        """Stop every replica now (no drain) and wait until every process has exited."""
        self._closing = True
        self.desired = 0
        idle = []
        for replica in self.replicas:
            if replica.state in ("starting", "draining"):
                replica.state = "draining"
                replica.removed.set()  # its task stops it
            elif replica.state == "ready":
                replica.state = "draining"
                idle.append(replica)
            self.balancer.remove(replica.backend)
        await asyncio.gather(*(self._stop(r) for r in idle), return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
