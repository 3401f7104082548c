"""From load to replicas: how many replicas serve a rate and drain a backlog within the SLO.

Sizing (``replicas_for_load``) in continuous replicas, with c = ``capacity_rps`` (requests/s one
replica serves while meeting the SLO), lambda = arrival rate (requests/s), B = backlog (queued
requests) and T = drain time (s, the SLO or the decision step if that is longer)::

    replicas = lambda / c + B / (c * T)

The first term keeps up with arrivals; the second drains today's queue within T, so that a
request queued now waits about T at most. Missing backlog (NaN) drops the second term.

The predictive policy that uses this is :mod:`policies.predictive`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
) -> float:
    """Continuous replicas for ``arrival_rate`` (req/s) plus draining ``backlog`` (requests).

    ``arrival_rate / capacity + backlog / (capacity * drain_seconds)``; ``drain_seconds``
    defaults to the SLO (the policy passes max(SLO, step)). Negative inputs count as 0; a NaN
    rate is an error (size on a known rate), a NaN backlog drops the backlog term.
    """
    if math.isnan(arrival_rate):
        raise ValueError("replicas_for_load needs a known arrival_rate, got NaN")
    drain = params.slo_seconds if drain_seconds is None else drain_seconds
    if not drain > 0:
        raise ValueError(f"drain_seconds must be > 0, got {drain!r}")
    replicas = max(0.0, arrival_rate) / params.capacity_rps
    if not math.isnan(backlog):
        replicas += max(0.0, backlog) / (params.capacity_rps * drain)
    return replicas
