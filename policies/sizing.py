"""From load to replicas: how many replicas serve a rate and drain a backlog within the SLO.

Sizing (``replicas_for_load``) in continuous replicas, with c = ``capacity_rps`` (requests/s one
replica serves while meeting the SLO), lambda = arrival rate (requests/s), B = backlog (queued
requests) and T = drain time (s, the SLO or the decision step if that is longer)::

    replicas = lambda / (c * u) + B / (c * T)

The first term keeps up with arrivals at a planned utilisation u (< 1 when each replica has
its own queue: :class:`ReplicaQueue` finds the highest u whose queueing meets the SLO); the
second drains today's queue within T, so that a request queued now waits about T at most.
Missing backlog (NaN) drops the second term.

The predictive policy that uses this is :mod:`policies.predictive`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class SizingParams:
    """capacity_rps: requests/s per replica at the SLO; slo_seconds: target queue wait."""

    capacity_rps: float
    slo_seconds: float
    min_replicas: int
    max_replicas: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity_rps) and self.capacity_rps > 0):
            raise ValueError(f"SizingParams.capacity_rps must be > 0, got {self.capacity_rps!r}")
        if not (math.isfinite(self.slo_seconds) and self.slo_seconds > 0):
            raise ValueError(f"SizingParams.slo_seconds must be > 0, got {self.slo_seconds!r}")
        if self.min_replicas < 0:
            raise ValueError(f"SizingParams.min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"SizingParams.max_replicas ({self.max_replicas}) must be >= 1 and >= "
                f"min_replicas ({self.min_replicas})"
            )


def replicas_for_load(
    arrival_rate: float,
    backlog: float,
    params: SizingParams,
    drain_seconds: float | None = None,
    utilisation: float = 1.0,
) -> float:
    """Continuous replicas for ``arrival_rate`` (req/s) plus draining ``backlog`` (requests).

    ``arrival_rate / (capacity * utilisation) + backlog / (capacity * drain_seconds)``;
    ``drain_seconds`` defaults to the SLO (the policy passes max(SLO, step)); ``utilisation``
    (0, 1] is the planned share of each replica's capacity (:class:`ReplicaQueue`). Negative
    inputs count as 0; a NaN rate is an error (size on a known rate), a NaN backlog drops the
    backlog term.
    """
    if not 0.0 < utilisation <= 1.0:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation!r}")
    if math.isnan(arrival_rate):
        raise ValueError("replicas_for_load needs a known arrival_rate, got NaN")
    drain = params.slo_seconds if drain_seconds is None else drain_seconds
    if not drain > 0:
        raise ValueError(f"drain_seconds must be > 0, got {drain!r}")
    replicas = max(0.0, arrival_rate) / (params.capacity_rps * utilisation)
    if not math.isnan(backlog):
        replicas += max(0.0, backlog) / (params.capacity_rps * drain)
    return replicas


class ReplicaQueue:
    """How long requests wait at a replica's own queue, learned from the queue it sees.

    Behind a Kubernetes Service each request waits in the queue of the replica it was sent to
    (kube-proxy picks one at random), so a replica at utilisation rho < 1 already makes some
    requests wait. The policy models one replica's queue with Kingman's heavy-traffic law:
    mean queue ``Lq = rho^2 V / (2 (1 - rho))`` requests and, by Little's law and an
    exponential tail, ``P(wait > S) = rho * exp(-2 (1 - rho) c S / V)`` with c the capacity
    (req/s) and S the SLO. ``V`` (the variability of arrivals plus service, 2 for random
    routing and exponential service, less for smoother traffic, near 0 for one shared queue)
    is estimated from the observed queue depth in steady steps, a ratio estimator
    ``sum(2 (1 - rho) depth / replicas) / sum(rho^2)`` over the steps with rho in
    [:data:`MIN_OBSERVED_UTILISATION`, :data:`MAX_OBSERVED_UTILISATION`] whose ready count has
    not changed for :data:`STEADY_STEPS` steps (an overload's backlog, or one left on the old
    replicas after a scale-up, is not stationary queueing), each step's own estimate capped at
    :data:`MAX_STEP_VARIABILITY`, forgetting old steps with weight
    ``1 - 1/memory_steps`` and starting from ``prior_variability`` worth ``prior_steps`` steps
    at rho = 0.5.
    """

    def __init__(
        self,
        capacity_rps: float,
        slo_seconds: float,
        prior_variability: float = 2.0,
        prior_steps: float = 50.0,
        memory_steps: float = 960.0,
    ) -> None:
        if not (math.isfinite(capacity_rps) and capacity_rps > 0):
            raise ValueError(f"ReplicaQueue capacity_rps must be > 0, got {capacity_rps!r}")
        if not (math.isfinite(slo_seconds) and slo_seconds > 0):
            raise ValueError(f"ReplicaQueue slo_seconds must be > 0, got {slo_seconds!r}")
        if not prior_variability > 0:
            raise ValueError(
                f"ReplicaQueue prior_variability must be > 0, got {prior_variability!r}"
            )
        self.capacity_rps = capacity_rps
        self.slo_seconds = slo_seconds
        self._keep = 1.0 - 1.0 / max(1.0, memory_steps)
        prior_weight = prior_steps * 0.25  # rho^2 of a step at rho = 0.5
        self._numerator = prior_variability * prior_weight
        self._denominator = prior_weight
        self._ready: float | None = None
        self._steady = 0  # consecutive steps in range with the same ready count
        self._cached: tuple[tuple[float, float], float] | None = None

    @property
    def variability(self) -> float:
        """The current estimate of V (clamped to [0.01, 50])."""
        return min(50.0, max(0.01, self._numerator / self._denominator))

    def observe(self, arrival_rate: float, queue_depth: float, ready_replicas: float) -> None:
        """One step's rate (req/s), queue depth (requests, all replicas) and ready replicas."""
        if not (math.isfinite(arrival_rate) and math.isfinite(queue_depth) and ready_replicas >= 1):
            return
        rho = arrival_rate / (ready_replicas * self.capacity_rps)
        in_range = MIN_OBSERVED_UTILISATION <= rho <= MAX_OBSERVED_UTILISATION
        same = self._ready == ready_replicas
        self._ready = ready_replicas
        self._steady = self._steady + 1 if in_range and same else (1 if in_range else 0)
        if self._steady <= STEADY_STEPS:
            return
        keep = self._keep
        per_replica = max(0.0, queue_depth) / ready_replicas
        # One step's own estimate, capped: a backlog left on a few replicas (requests routed
        # before a scale-up stay where they are) would otherwise read as a huge variability.
        sample = min(2.0 * (1.0 - rho) * per_replica, MAX_STEP_VARIABILITY * rho * rho)
        self._numerator = keep * self._numerator + sample
        self._denominator = keep * self._denominator + rho * rho

    def violation(self, utilisation: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Share of requests waiting longer than the SLO at each utilisation (1 at >= 1)."""
        rho = np.asarray(utilisation, dtype=np.float64)
        decay = 2.0 * self.capacity_rps * self.slo_seconds / self.variability
        # exp of a non-positive number: no overflow; rho >= 1 gives exp(0) * 1 = 1.
        slack = np.maximum(1.0 - rho, 0.0)
        late: npt.NDArray[np.float64] = np.minimum(np.maximum(rho, 0.0), 1.0) * np.exp(
            -decay * slack
        )
        return late

    def _late(self, rho: float) -> float:
        decay = 2.0 * self.capacity_rps * self.slo_seconds / self.variability
        return 1.0 if rho >= 1.0 else max(0.0, rho) * math.exp(-decay * (1.0 - rho))

    def max_utilisation(self, violation_budget: float) -> float:
        """The highest utilisation whose waiting stays within ``violation_budget`` (capped at
        :data:`MAX_PLANNED_UTILISATION`; at least :data:`MIN_PLANNED_UTILISATION`)."""
        key = (self.variability, violation_budget)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1]
        lo, hi = MIN_PLANNED_UTILISATION, MAX_PLANNED_UTILISATION
        if self._late(hi) <= violation_budget:
            lo = hi
        else:
            for _ in range(30):
                mid = 0.5 * (lo + hi)
                if self._late(mid) <= violation_budget:
                    lo = mid
                else:
                    hi = mid
        self._cached = (key, lo)
        return lo


MIN_OBSERVED_UTILISATION = 0.1
STEADY_STEPS = 4
MAX_STEP_VARIABILITY = 8.0
MAX_OBSERVED_UTILISATION = 0.9
MAX_PLANNED_UTILISATION = 0.95
"""Never plan a replica fuller than this: the queueing law is only an approximation near 1."""
MIN_PLANNED_UTILISATION = 0.05
"""Never plan a replica emptier than this, however slow its queue looks (20x the load)."""


class PooledCapacity:
    """The queue model when nothing is known about replicas' queues (no ``capacity_rps``):
    requests are late only when the load exceeds the capacity (utilisation > 1), as with one
    shared queue and an SLO longer than the noise. Plans may fill replicas."""

    variability = 0.0

    def observe(self, arrival_rate: float, queue_depth: float, ready_replicas: float) -> None:
        return None

    def violation(self, utilisation: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        late: npt.NDArray[np.float64] = (np.asarray(utilisation) > 1.0).astype(np.float64)
        return late

    def max_utilisation(self, violation_budget: float) -> float:
        return 1.0
