"""HPA emulator: the HPA controller model reading the adapter's real HTTPS API.

Every sync period it does what ``kube-controller-manager``'s HPA controller does for one
HorizontalPodAutoscaler with External metrics: for each metric, GET
``/apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC?labelSelector=...`` over HTTPS,
parse every item's Kubernetes quantity, and hand the values (or the failure, for a non-200:
the HPA then holds, ``FailedGetExternalMetric``) to :class:`policies.hpa.HPAController`, the
port of the Go controller, with the Deployment's ``spec.replicas``, ``status.replicas`` and
ready pods; then it sets the new replica count on the scale target (the replica manager).
The HPA object itself comes from a YAML file (:mod:`loadtest.harness.hpa_manifest`), so the
behavior, targets and selectors are the ones a user applies.

Time: the controller's windows (stabilisation, scaling-policy periods) count in the
controller's clock. With ``time_scale`` X the emulator syncs every ``sync_period_s / X`` real
seconds and gives the controller ``X x`` the real elapsed time, so a compressed run keeps every
window of the HPA object as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from loadtest.harness.api_client import read_external
from loadtest.harness.hpa_manifest import HPAObject
from policies.hpa import HPAController

log = logging.getLogger(__name__)

HPA_SYNC_PERIOD_S = 15.0
"""``--horizontal-pod-autoscaler-sync-period`` default."""


class ScaleTarget(Protocol):
    """The ``/scale`` subresource of the Deployment, as the HPA sees it."""

    @property
    def desired(self) -> int: ...  # spec.replicas

    @property
    def existing(self) -> int: ...  # status.replicas

    @property
    def ready(self) -> int: ...

    def scale(self, desired: int) -> None: ...


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """One reconcile: ``t`` controller seconds since the start; ``values`` per metric (None:
    the request failed, with ``error`` the API's message); replicas before and after."""

    t: float
    values: tuple[tuple[float, ...] | None, ...]
    spec_replicas: int
    ready: int
    desired: int
    reason: str
    error: str | None


class HPAEmulator:
    """One HPA object driving one scale target through the adapter's API on ``port``."""

    def __init__(
        self,
        hpa: HPAObject,
        port: int,
        target: ScaleTarget,
        *,
        sync_period_s: float = HPA_SYNC_PERIOD_S,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not time_scale > 0 or not sync_period_s > 0:
            raise ValueError("sync_period_s and time_scale must be > 0")
        self.hpa = hpa
        self.port = port
        self.target = target
        self.sync_period_s = sync_period_s
        self.time_scale = time_scale
        self.clock = clock
        self.controller = HPAController(hpa.spec)
        self.records: list[SyncRecord] = []
        self._started: float | None = None

    def controller_time(self) -> float:
        """Seconds since the emulator started, on the controller's (uncompressed) clock."""
        if self._started is None:
            self._started = self.clock()
        return (self.clock() - self._started) * self.time_scale

    async def sync_once(self, session: aiohttp.ClientSession) -> SyncRecord:
        values: list[tuple[float, ...] | None] = []
        messages: list[str] = []
        for query in self.hpa.metrics:
            try:
                answer = await read_external(
                    session, self.port, self.hpa.namespace, query.name, query.selector
                )
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                values.append(None)
                messages.append(f"{query.name}: {type(err).__name__}: {err}")
                continue
            if answer.status == 200:
                values.append(tuple(answer.values))
            else:
                values.append(None)
                messages.append(f"{query.name}: HTTP {answer.status}: {answer.message}")
        target = self.target
        now = self.controller_time()
        result = self.controller.reconcile(
            now, target.desired, target.existing, target.ready, values
        )
        before = target.desired
        if result.desired_replicas != before:
            target.scale(result.desired_replicas)
            log.info(
                "hpa rescale",
                extra={"from": before, "to": result.desired_replicas, "reason": result.reason},
            )
        record = SyncRecord(
            t=now,
            values=tuple(values),
            spec_replicas=before,
            ready=target.ready,
            desired=result.desired_replicas,
            reason=result.reason,
            error="; ".join(messages) or result.error,
        )
        self.records.append(record)
        return record

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every ``sync_period_s / time_scale`` real seconds until ``stop``."""
        period = self.sync_period_s / self.time_scale
        self.controller_time()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            next_sync = self.clock()
            while not stop.is_set():
                await self.sync_once(session)
                next_sync += period
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_sync - self.clock()))
