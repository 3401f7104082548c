"""Per-replica queueing in the fluid model: the waits a balancer adds on top of the fluid queue.

The fluid model (:class:`loadtest.simulator.engine._FluidEngine`) treats the replicas as one
pooled server: work waits only when a tick's offered work exceeds the ready capacity. With one
FIFO per replica (every balancer but ``shared``) a request also waits when *its* replica is busy
although others are idle. The fluid model adds that wait as the stationary wait of one replica
at the recent utilisation rho, capped at :data:`MAX_UTILISATION`: the offered load over the
ready capacity, averaged over the queue's relaxation time ``(1 + cs2) / (2 mu (1 - rho)^2)``
(:func:`relaxation_seconds`), the time a queue takes to forget its past, so that one busy tick
does not count as a full stationary queue and a sustained load does:

* ``random`` (Kubernetes Service): a random split of the arrivals is, for many replicas, close
  to Poisson at rate rho * mu per replica, so each replica is an M/G/1 queue, service times
  Gamma-distributed with the trace's squared coefficient of variation cs2 (deterministic for
  cs2 = 0). Its wait tail is the Cramer-Lundberg asymptote ``P(W > x) = C exp(-theta x)``:
  theta solves ``lambda (E[exp(theta S)] - 1) = theta`` and
  ``C = (1 - rho) / (lambda E[S exp(theta S)] - 1)`` (exact for M/M/1: C = rho,
  theta = mu - lambda); mean queue ``rho^2 (1 + cs2) / (2 (1 - rho))`` (Pollaczek-Khinchine).
* ``round-robin``: every N-th arrival of a Poisson stream goes to a replica, an Erlang-N renewal
  stream with ca2 = 1/N; Kingman's GI/G/1 approximation with ``ca2 + cs2`` in place of
  ``1 + cs2``.
* ``least-outstanding`` (power of two choices): the supermarket model's fixed point for many
  replicas (Mitzenmacher 2001): a replica holds at least i requests with probability
  ``s_i = rho^(2^i - 1)``; an arrival samples two replicas, so it finds j requests with
  probability ``s_j^2 - s_(j+1)^2`` and waits for the one in service and j - 1 more: Erlang(j,
  mu) for exponential service, ``j - 1 + U`` service times for deterministic service, mixed
  by cs2 (capped at 1) in between; the mean queue ``sum_(i>=2) s_i`` is scaled by
  ``(1 + cs2) / 2`` as Pollaczek-Khinchine scales M/M/1's.

What is not modelled: the transient of a replica's queue beyond the load average, correlation
between consecutive ticks' queues, and arrival burstiness inside a tick beyond Poisson (the
per-tick counts carry the trace's burstiness across ticks). The approximation is validated
against the per-request model, which routes every request (``tests/simulator/
test_fluid_vs_request.py``; ``python -m loadtest.simulator.validate --balancer ...``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

MAX_UTILISATION = 0.95
"""Cap on rho: a stationary queue at rho -> 1 grows without bound, far beyond what a replica
builds in the seconds of a real overload; the fluid backlog carries sustained overload."""

_SUPERMARKET_TERMS = 16


def _capped(rho: FloatArray | float) -> FloatArray:
    return np.clip(np.asarray(rho, dtype=np.float64), 0.0, MAX_UTILISATION)


def _variability(balancer: str, n_replicas: FloatArray | float, scv: float) -> FloatArray:
    """``ca2 + cs2`` of one replica's GI/G/1 queue (Kingman)."""
    n = np.maximum(1.0, np.asarray(n_replicas, dtype=np.float64))
    if balancer == "round-robin":
        return 1.0 / n + scv
    return np.ones_like(n) + scv


def _supermarket_tail(rho: FloatArray) -> FloatArray:
    """``s_i = rho^(2^i - 1)`` for i = 0..terms (rows), per rho (columns)."""
    exponents = (2.0 ** np.arange(_SUPERMARKET_TERMS + 1) - 1.0)[:, None]
    with np.errstate(divide="ignore"):
        return np.where(rho[None, :] > 0, rho[None, :] ** exponents, (exponents == 0) * 1.0)


def stochastic_queue_length(balancer: str, rho: float, n_replicas: float, scv: float) -> float:
    """Mean requests waiting (not in service) over ``n_replicas`` per-replica queues."""
    if balancer == "shared" or n_replicas <= 0:
        return 0.0
    r = min(max(float(rho), 0.0), MAX_UTILISATION)
    if r <= 0.0:
        return 0.0
    if balancer == "least-outstanding" and n_replicas >= 2:
        # sum over i >= 2 of s_i = rho^(2^i - 1) (exponential service; doubly exponential, a
        # few terms suffice), scaled by (1 + cs2) / 2 as Pollaczek-Khinchine scales M/M/1.
        waiting = math.fsum(r ** (2.0**i - 1.0) for i in range(2, _SUPERMARKET_TERMS + 1))
        return n_replicas * waiting * (1.0 + min(scv, 1.0)) / 2.0
    arrivals = 1.0 / max(1.0, n_replicas) if balancer == "round-robin" else 1.0
    return n_replicas * r * r * (arrivals + scv) / (2.0 * (1.0 - r))


def stochastic_violation_fraction(
    balancer: str,
    rho: FloatArray,
    n_replicas: FloatArray,
    scv: float,
    capacity_rps: float,
    slack_seconds: FloatArray,
) -> FloatArray:
    """P(a request's wait in its replica's queue > slack), per tick (vectorised)."""
    r = _capped(rho)
    x = np.maximum(0.0, np.asarray(slack_seconds, dtype=np.float64))
    if balancer == "shared":
        return np.zeros_like(r)
    if balancer == "least-outstanding":
        s = _supermarket_tail(r)
        find = s[:-1] ** 2 - s[1:] ** 2  # P(find j requests), j = 0..terms-1
        mx = capacity_rps * x
        mix = min(1.0, max(0.0, scv))
        # Exponential service: P(Erlang(j, mu) > x) = sum_{m<j} e^-mx (mx)^m / m!, built up
        # term by term; deterministic: P(j - 1 + U > mx) = clip(j - mx, 0, 1).
        term = np.exp(-mx)
        survival = np.zeros_like(r)
        tail = np.zeros_like(r)
        for j in range(1, _SUPERMARKET_TERMS):
            survival = survival + term
            term = term * mx / j
            deterministic = np.clip(j - mx, 0.0, 1.0)
            tail = tail + find[j] * (mix * survival + (1.0 - mix) * deterministic)
        pooled = np.asarray(n_replicas) < 2  # one replica: no choice, M/G/1
        if pooled.any():
            single = _kingman_tail(r, np.ones_like(r) + scv, capacity_rps, x)
            tail = np.where(pooled, single, tail)
        clipped: FloatArray = np.clip(tail, 0.0, 1.0)
        return clipped
    if balancer == "random":
        return _lundberg_tail(r, scv, capacity_rps, x)
    return _kingman_tail(r, _variability(balancer, n_replicas, scv), capacity_rps, x)


def relaxation_seconds(rho: float, scv: float, capacity_rps: float) -> float:
    """Relaxation time of one replica's queue at utilisation rho (s): the time scale on which
    its queue length forgets the past, ``(1 + cs2) / (2 mu (1 - rho)^2)`` (heavy traffic)."""
    r = min(float(rho), MAX_UTILISATION)
    return (1.0 + scv) / (2.0 * capacity_rps * (1.0 - r) ** 2)


_GRID = np.linspace(0.0, MAX_UTILISATION, 951)


@lru_cache(maxsize=16)
def _lundberg_table(scv: float) -> tuple[FloatArray, FloatArray]:
    """theta/mu and C of the M/G/1 wait tail on :data:`_GRID` (Gamma service with SCV scv)."""
    rho = _GRID[1:]
    c = max(scv, 0.0)

    def mgf(a: FloatArray) -> FloatArray:
        out: FloatArray = np.exp(a) if c < 1e-9 else (1.0 - c * a) ** (-1.0 / c)
        return out

    lo = np.zeros_like(rho)
    hi = np.full_like(rho, 50.0 if c < 1e-9 else (1.0 - 1e-12) / c)
    for _ in range(200):  # bisection on rho (M(a) - 1) - a, negative below the root
        mid = 0.5 * (lo + hi)
        below = rho * (mgf(mid) - 1.0) - mid < 0
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    a = 0.5 * (lo + hi)
    slope = np.exp(a) if c < 1e-9 else (1.0 - c * a) ** (-1.0 / c - 1.0)
    prefactor = np.clip((1.0 - rho) / np.maximum(rho * slope - 1.0, 1e-12), 0.0, 1.0)
    return np.concatenate(([a[0]], a)), np.concatenate(([0.0], prefactor))


def _lundberg_tail(rho: FloatArray, scv: float, capacity_rps: float, x: FloatArray) -> FloatArray:
    decay_table, prefactor_table = _lundberg_table(round(float(scv), 6))
    decay = np.interp(rho, _GRID, decay_table)
    prefactor = np.interp(rho, _GRID, prefactor_table)
    tail: FloatArray = np.clip(prefactor * np.exp(-decay * capacity_rps * x), 0.0, 1.0)
    return tail


def _kingman_tail(
    rho: FloatArray, variability: FloatArray, capacity_rps: float, x: FloatArray
) -> FloatArray:
    with np.errstate(divide="ignore", over="ignore"):
        decay = 2.0 * (1.0 - rho) * capacity_rps * x / np.maximum(variability, 1e-12)
    tail: FloatArray = np.clip(rho * np.exp(-decay), 0.0, 1.0)
    return tail


def drain_seconds_per_replica(
    balancer: str, rho: float, n_replicas: float, scv: float, capacity_rps: float
) -> float:
    """Mean seconds a removed replica stays busy finishing what it holds: the residual of the
    request in service (``rho (1 + cs2) / (2 mu)``) plus, per-replica, its queue."""
    r = float(_capped(rho))
    residual = r * (1.0 + scv) / (2.0 * capacity_rps)
    if balancer == "shared" or not math.isfinite(r):
        return residual
    queued = stochastic_queue_length(balancer, r, max(1.0, n_replicas), scv) / max(1.0, n_replicas)
    return residual + queued / capacity_rps
