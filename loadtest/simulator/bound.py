r"""A proven lower bound on replica-seconds at a given SLO attainment.

The greedy oracle (``loadtest.simulator.oracle``) is one feasible plan, so it bounds the optimum
from above. This module computes a number that no plan can beat, however clairvoyant: the optimum of
a linear program (LP) that every real plan maps into at no greater cost. "x bound" figures use
it; a ratio of 1.0 means nothing is left to win.

What is bounded
---------------
Time ``[0, T)``, ``T = n * dt`` (``n`` ticks of ``dt`` seconds). ``mu`` = capacity_rps (work per
second one replica serves), ``S`` = slo_seconds, ``D`` = cold_start_seconds, ``m``/``M`` =
min/max replicas, ``I0`` = replicas ready at t = 0 (``m <= I0 <= M``).

A *plan* is any integer replica schedule with any balancer and any service order: the ``I0``
initial replicas are ready at 0; any other replica is requested at a tick boundary ``>= dt`` (the
first decision is at the end of tick 0), costs from its request and serves from ``D`` later.
Removal happens at tick boundaries; a removed replica that is serving finishes that request and
costs until then (Kubernetes graceful termination). At most ``M`` replicas exist at any moment
and at least ``m`` are requested. A replica serves one request at a time, a request of work
``w`` in ``w / mu`` seconds, without preemption. Request ``i`` (arrival ``a_i``, work ``w_i``)
meets the SLO iff it *starts* by ``a_i + S``. Attainment ``A`` over ``N`` requests allows at most
``k = floor((1 - A) N)`` misses. Cost = replica-seconds = ``integral over [0, T) of the number of
replicas that exist`` (``tritonscale simulate`` counts the same, see "The simulator" below).

The LP
------
Blocks ``K = 0..N_b-1`` of ``l_K`` ticks partition the ticks (times ``t_K`` at block edges).
Work is in replica-ticks (``mu * dt``). Two curves of the trace, sampled at the block edges:
``Avail(t)`` (an upper bound on the work any plan can have processed by t) and ``Due(t)`` (the
work the SLO-meeting requests must have had processed by t); ``H_K = Avail - Due`` at
``t_{K+1}`` and ``delta_K = Due(t_{K+1}) - Due(t_K)``.

Variables per block: ``Y_K`` in ``[0, M - m]`` (replicas provisioned above the minimum, block
mean), ``v_K`` in ``[0, M - m]`` (replicas started), ``Q_K`` in ``[0, H_K]`` (work served ahead
of what is due at ``t_{K+1}``), ``d_K`` in ``[0, delta_K]`` (due work given up in the block)::

    minimise   dt * (m * n + sum_K l_K Y_K) + D * sum_K v_K
    (start)    Y_K - Y_{K-1} <= v_K                      Y_{-1} = I0 - m
    (serve)    s_K <= l_K (Y_K + m)                      s_K = Q_K - Q_{K-1} + delta_K - d_K
    (ready)    s_K <= l_K r_K                            (only blocks where r_K < M)
    (budget)   sum_K d_K <= B                            Q_{-1} = 0

``s_K`` is the work served in block K; ``r_K`` is the block mean of the most replicas that can be
ready (``I0`` before ``dt + D``, ``M`` after); ``B`` is the work budget of the misses.

Why it is a lower bound: every plan maps to a feasible point with objective <= its cost
-------------------------------------------------------------------------------------------
Take a plan; let ``spec(t)`` be the replicas that exist (draining included), ``R(t)`` those that
are ready (serving, idle or draining). ``spec >= m`` always (``m`` are requested; draining ones
only add).

1. **Cost (removal is free, a start costs D).** For an integer level ``h > m`` let
   ``L_h = {t : spec(t) >= h}``. ``R`` rises only when a replica becomes ready; if ``R`` crosses
   up through ``h`` at time ``t``, every replica ready at ``t`` existed throughout
   ``[t - D, t)`` (a non-initial one was requested by ``t - D``; a replica is never re-added), so
   ``spec >= h`` there. Hence ``L_h`` contains ``{R >= h}`` and the last ``min(g, D)`` seconds of
   every gap (a maximal interval of ``R < h``, of length ``g``) that ends in an up-crossing. Let
   ``B_h`` be ``{R >= h}`` with every such gap of length ``<= D`` filled in (for
   ``h <= I0`` the level is on at 0; for ``h > I0`` the first gap is ``[0, t)`` with
   ``t >= dt + D``, never filled). Then ``|L_h| >= |B_h| + D * (runs of B_h that start after a
   gap)``. The sets ``B_h`` are nested (a gap at a higher level contains the gaps below it), so
   ``Y(t) = #{h > m : t in B_h}`` is an integer function with ``Y >= (R - m)+``,
   ``Y(0-) = I0 - m``, ``Y <= M - m`` and ``integral Y + D * TV+(Y) = sum_h (|B_h| + D * runs)``,
   where ``TV+`` is the sum of the upward jumps. Levels ``h <= m`` contribute ``T`` each. So
   ``cost = sum_h |L_h| >= m T + integral Y + D * TV+(Y)``.
2. **Blocks.** Set ``Y_K`` = the mean of ``Y`` over block K and ``v_K = (Y_K - Y_{K-1})+``.
   ``sum l_K Y_K dt = integral Y`` exactly. ``Y_K - Y_{K-1}`` is a weighted sum of the jumps of
   ``Y`` in blocks K-1 and K with weights in ``[0, 1]`` (a tent kernel: ``(t_{K+1} - tau)/l_K``
   in block K, ``(tau - t_{K-1})/l_{K-1}`` in block K-1) that add up to 1 for every jump, so
   ``sum_K v_K <= TV+(Y)``. The objective is therefore ``<=`` the plan's cost. ``D`` enters
   only as the price of a start: it is never rounded, at any block size.
3. **Queue.** Let ``C(t)`` = work of the SLO-meeting requests processed by ``t`` and
   ``u(t) = sum over missing i of min(w_i, mu (t - a_i - S)+)``. Put
   ``Q_K = C + u - Due`` at ``t_{K+1}`` and ``d_K = u(t_{K+1}) - u(t_K)``.

   - ``Q >= 0``: a meeting request started by ``a_i + S`` and runs at rate ``mu``, so its
     processed work at ``t`` is at least ``min(w_i, mu (t - a_i - S)+)`` (its share of Due);
     missing requests' shares are ``u``.
   - ``Q <= H``: no request is processed before it arrives or faster than ``mu``, so each
     request contributes at most ``min(w_i, mu (t - a_i)+)`` to ``C + u`` (it is in one of the
     two), and these sum to ``Avail``.
   - ``0 <= d_K <= delta_K``: ``u`` is a sub-sum of the non-decreasing terms of ``Due``.
   - ``sum d_K = u(T) <= total work of the misses <= B``: at most ``k`` requests miss, and
     ``B`` is at least the total work of any ``k`` requests.
   - ``s_K = C(t_{K+1}) - C(t_K)`` is at most ``mu`` times the ready
     replica-seconds in the block; ``R <= Y + m`` gives ``l_K (Y_K + m)``, and
     ``R <= I0`` before ``dt + D``, ``R <= M`` always give ``l_K r_K``.
   - ``Q_{-1} = C(0) + u(0) - Due(0) = 0``.

So the LP's optimum is at most the cost of every plan that reaches the attainment, the optimal
one included; when the LP is infeasible no plan reaches it (the bound is ``inf``).

Relaxations (each only enlarges the feasible set): fractional replicas; work divisible within a
block and served in any order by any replicas (one server per request survives only as the rate
``mu`` per request in the curves); capacity pooled over each block; missing requests need no
service; served work may shrink (``s_K >= 0`` is not imposed: it never bound in any measured
trace and costs a quarter of the solve time); a work-sized budget (the ``k`` largest requests)
instead of a count; ``M`` bounds ready
replicas only (starting ones are not counted against it); removal is free (a plan pays at least
this much, usually more).

The curves and the budget
-------------------------
* Per-request times and work known (the per-request queue model):
  ``Avail(t) = sum_i min(w_i, mu (t - a_i)+)``, ``Due(t) = Avail(t - S)``; ``B`` = the total work
  of the ``k`` largest requests.
* Per-tick counts ``N_j`` and work ``W_j`` only (rate traces, the fluid model): a request of
  tick ``j`` arrives in ``[j dt, (j+1) dt)``. ``Avail(t)`` = the work of every tick that started
  before ``t`` (arrivals counted from the start of their tick: nothing is processed earlier).
  ``Due(t) = sum_j min(W_j, N_j mu (t - (j+1) dt - S)+)`` (arrivals counted at the end of their
  tick, the latest they can be) when the requests of a tick share one size ``W_j / N_j``
  (``tick_sizes="equal"``: rate traces draw unit-size requests, and the fluid queue model treats a
  tick's work as that many equal parts); ``B`` = the ``k`` largest of those sizes. When sizes are
  unknown (``tick_sizes="unknown"``) the slope is ``mu`` (the worst case is one request holding
  the tick's work) and ``B`` = the ``k`` largest tick works (``k`` requests lie in at most ``k``
  ticks and hold at most their work); step 3 then uses ``u_j(t) = min(x, missed work of tick
  j)`` with ``x = mu (t - (j+1) dt - S)+``: if ``x`` is below the size of some on-time request
  of the tick, that request alone has ``x`` processed, else all of them are done, so
  ``C + u >= Due`` either way. Both forms also bound the fluid model: its work of tick
  ``j`` is served no earlier than the tick starts and, if on time, within ``S`` of the tick's end;
  it counts fractions of a tick's requests as missing, so with ``"equal"`` ``k = (1 - A) N`` is
  not rounded down and ``B`` takes the last size in part (fractional knapsack).

Coarser blocks, and why the coarse bound never exceeds the fine one
--------------------------------------------------------------------
The proof above holds for any partition, so a coarse bound is a bound. Merging blocks maps any
feasible point of the finer LP to a feasible point of the coarser one with the same or lower
objective (means of ``Y``, positive parts of their differences -- the tent-kernel argument of
step 2 again --, ``Q`` at the surviving edges, ``d`` summed), so the bound at ``b`` ticks per
block is at most the bound at any divisor of ``b``, at most the tick-level bound; ``b = 1`` is the
tick LP. What coarsening gives up is the timing inside a block (work can use the capacity of
the whole block); ``D`` is not rounded. ``block_ticks=None`` picks the smallest uniform block
with at most ``MAX_AUTO_BLOCKS`` blocks: tick level for traces up to 5.5 hours, 13-tick blocks
for 3 days, 61 for 14 days. How much looser the coarse bound is was measured on traces where
both solve (BENCHMARKS.md, "Lower bound"): under 1 % on ServeGen with 61-tick blocks, 2-6 % on
the Azure and Mooncake conversation traces with 13-tick blocks.

Solving, and why the answer is certified
----------------------------------------
One LP per call; the attainments differ only in ``B``, one right-hand side. They are solved
from the largest budget down, and once one is infeasible the higher attainments are reported
unattainable without solving (a smaller budget only shrinks the feasible set). HiGHS's interior
point (no crossover) goes first above ``SIMPLEX_UP_TO_BLOCKS`` blocks, its dual simplex below
(and as the fallback, and to confirm an infeasibility). Whatever the method, the reported bound
is not the solver's objective but a weak-duality bound: for any row duals ``y >= 0``,
``c.x >= min over the variable boxes of (c + A'y).x - y.b`` for every feasible ``x`` (all
variables have finite boxes). It is computed from the solver's duals and lowered by a relative
1e-9 for rounding, so solver tolerances can only make it smaller, never larger than the true
LP optimum.

The simulator
-------------
``tritonscale simulate`` charges a replica from its request until it is removed and lets a
removed busy replica finish its request without charge. The bound charges that draining (the
LP's capacity is paid capacity), as a cluster does; a policy that relies on free draining could
in principle come in under the bound by at most the draining it was not charged, which is
small when requests are short next to the time between scale-downs. The tests check that no
simulated policy comes in under the bound on the project's trace slices. The fluid model has no
draining.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import OptimizeWarning, linprog

if TYPE_CHECKING:  # only for the annotation: the bound itself works on arrays
    from loadtest.simulator.engine import Workload

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
TickSizes = Literal["equal", "unknown"]

MAX_AUTO_BLOCKS = 20_000
"""``block_ticks=None`` uses the smallest uniform block giving at most this many blocks."""

CERTIFICATE_SLACK = 1e-9
"""Relative margin taken off the dual bound for floating-point rounding in its evaluation."""

_ATTAINMENT_EPS = 1e-9


class BoundError(RuntimeError):
    """The solver did not finish (no bound is reported rather than a guess)."""


@dataclass(frozen=True)
class LowerBound:
    """The bound at one attainment.

    replica_seconds: the certified lower bound (``inf`` when no plan reaches the attainment).
    lp_replica_seconds: HiGHS's primal optimum (NaN when unattainable); the certificate is at
      most this, and equal to it up to the solver's tolerance.
    min_replica_seconds: ``min_replicas * duration``, the part every plan pays.
    allowed_violations: the misses the attainment allows (``floor((1 - attainment) *
      requests)``, not rounded for the fluid model); budget_work: the work budget ``B`` (work
      units, mean request work 1).
    block_ticks / n_blocks: the partition used; solve_seconds: HiGHS; setup_seconds: curves and
      LP assembly (shared by every attainment of one call); solve_cpu_seconds: the process's
      CPU time in HiGHS (what the solve costs on an idle machine).
    """

    attainment: float
    replica_seconds: float
    lp_replica_seconds: float
    min_replica_seconds: float
    allowed_violations: float
    budget_work: float
    block_ticks: int
    n_blocks: int
    status: Literal["optimal", "unattainable"]
    solve_seconds: float
    solve_cpu_seconds: float
    setup_seconds: float


# --------------------------------------------------------------------------- curves


def ramp_sum(
    starts: FloatArray, slopes: FloatArray, caps: FloatArray, at: FloatArray
) -> FloatArray:
    """``sum_j min(caps_j, slopes_j * (t - starts_j)+)`` for every ``t`` in ``at``.

    The sum is the integral of a piecewise-constant rate (each ramp adds ``slope`` from its
    start until it reaches its cap), accumulated over sorted breakpoints: only additions of
    non-negative terms, so no cancellation on long traces.
    """
    keep = (caps > 0) & (slopes > 0)
    starts, slopes, caps = starts[keep], slopes[keep], caps[keep]
    points = np.concatenate((starts, starts + caps / slopes))
    jumps = np.concatenate((slopes, -slopes))
    order = np.argsort(points, kind="stable")
    points = points[order]
    rate = np.maximum(np.cumsum(jumps[order]), 0.0)  # on [points[i], points[i + 1])
    level = np.zeros(points.size)
    if points.size > 1:
        np.cumsum(rate[:-1] * np.diff(points), out=level[1:])
    i = np.searchsorted(points, at, side="right") - 1
    out = np.zeros(at.size)
    hit = i >= 0
    j = i[hit]
    out[hit] = level[j] + rate[j] * (at[hit] - points[j])
    return out


def _curves(
    edges: IntArray,
    work: FloatArray,
    counts: IntArray,
    tick: float,
    mu: float,
    slo: float,
    times: FloatArray | None,
    request_work: FloatArray | None,
    tick_sizes: TickSizes,
) -> tuple[FloatArray, FloatArray]:
    """(Avail, Due) in work units at the block edges (see the module docstring)."""
    at = edges * tick
    if times is not None and request_work is not None:
        slope = np.full(times.size, mu)
        return ramp_sum(times, slope, request_work, at), ramp_sum(
            times + slo, slope, request_work, at
        )
    cumulative = np.concatenate(([0.0], np.cumsum(work)))
    avail = cumulative[edges]
    busy = np.flatnonzero(counts > 0)
    slope = counts[busy] * mu if tick_sizes == "equal" else np.full(busy.size, mu)
    due = ramp_sum((busy + 1) * tick + slo, slope.astype(np.float64), work[busy], at)
    return avail, due


def violation_budget(
    work: FloatArray,
    counts: IntArray,
    attainment: float,
    request_work: FloatArray | None,
    tick_sizes: TickSizes,
) -> tuple[float, float]:
    """(k, B): the misses ``attainment`` allows and a work budget no k misses exceed.

    Whole requests miss, so ``k = floor((1 - A) N)``; with ``tick_sizes="equal"`` k is not
    rounded down, because the fluid model counts fractions of a tick's requests as missing (its
    missed work is then at most the k largest sizes, the last one taken in part).
    """
    n_requests = int(counts.sum())
    allowed = (1.0 - attainment) * n_requests
    if request_work is not None or tick_sizes == "unknown":
        allowed = float(math.floor(allowed + _ATTAINMENT_EPS))
    else:
        allowed = allowed * (1.0 + _ATTAINMENT_EPS)
    if allowed <= 0:
        return 0.0, 0.0
    if request_work is not None:
        whole = int(allowed)
        if whole >= request_work.size:
            return allowed, float(request_work.sum())
        cut = request_work.size - whole
        return allowed, float(np.partition(request_work, cut)[cut:].sum())
    busy = np.flatnonzero(counts > 0)
    if tick_sizes == "unknown":
        largest = np.sort(work[busy])[::-1][: int(allowed)]
        return allowed, float(largest.sum())
    size = work[busy] / counts[busy]
    order = np.argsort(-size, kind="stable")
    size, number = size[order], counts[busy][order].astype(np.float64)
    taken = np.minimum(number, np.maximum(0.0, allowed - (np.cumsum(number) - number)))
    return allowed, float((size * taken).sum())


# --------------------------------------------------------------------------- the LP


@dataclass(frozen=True)
class _Program:
    """``min c.x  s.t.  A x <= b,  lower <= x <= upper``; ``budget_row`` holds ``B``."""

    c: FloatArray
    a: sp.csr_matrix
    b: FloatArray
    lower: FloatArray
    upper: FloatArray
    budget_row: int


def _program(
    edges: IntArray,
    avail: FloatArray,
    due: FloatArray,
    tick: float,
    cold_start: float,
    m: int,
    big_m: int,
    initial: int,
) -> _Program:
    n_blocks = edges.size - 1
    length = np.diff(edges).astype(np.float64)
    due = np.minimum(due, avail)
    due[0] = 0.0
    delta = np.diff(due)
    headroom = np.maximum(avail[1:] - due[1:], 0.0)
    # Mean of the most replicas that can be ready in each block: I0 before dt + D, M after.
    start = edges[:-1] * tick
    early = np.clip(np.minimum(edges[1:] * tick, tick + cold_start) - start, 0.0, None) / tick
    ready_cap = (initial * early + big_m * (length - early)) / length

    k = np.arange(n_blocks)
    col_y, col_v, col_q, col_d = k, n_blocks + k, 2 * n_blocks + k, 3 * n_blocks + k
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[FloatArray] = []
    rhs: list[FloatArray] = []
    ones = np.ones(n_blocks)

    def add(row: IntArray, col: IntArray, val: FloatArray) -> None:
        rows.append(row)
        cols.append(col)
        vals.append(val)

    def served(first: int, blocks: IntArray) -> None:
        """``Q_K - Q_{K-1} - d_K`` (= s_K - delta_K) in row ``first + i`` for the i-th block."""
        row = first + np.arange(blocks.size)
        inner = blocks >= 1
        add(row, col_q[blocks], np.ones(blocks.size))
        add(row[inner], col_q[blocks[inner] - 1], -np.ones(int(inner.sum())))
        add(row, col_d[blocks], -np.ones(blocks.size))

    # (start) Y_K - Y_{K-1} - v_K <= 0; Y_0 - v_0 <= I0 - m.
    add(k, col_y, ones)
    add(k[1:], col_y[:-1], -ones[1:])
    add(k, col_v, -ones)
    first_rhs = np.zeros(n_blocks)
    first_rhs[0] = initial - m
    rhs.append(first_rhs)
    # (serve) Q_K - Q_{K-1} - d_K - l_K Y_K <= l_K m - delta_K.
    served(n_blocks, k)
    add(n_blocks + k, col_y, -length)
    rhs.append(length * m - delta)
    # s_K >= 0 (served work never shrinks) is left out: a relaxation that never bound in any
    # measured trace and costs a quarter of the solve time.
    next_row = 2 * n_blocks
    # (ready) Q_K - Q_{K-1} - d_K <= l_K r_K - delta_K where fewer than M can be ready.
    capped = np.flatnonzero(ready_cap < big_m - 1e-12)
    if capped.size:
        served(next_row, capped)
        rhs.append(length[capped] * ready_cap[capped] - delta[capped])
        next_row += capped.size
    # (budget) sum d_K <= B (set per attainment).
    add(np.full(n_blocks, next_row), col_d, ones)
    rhs.append(np.zeros(1))
    a = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(next_row + 1, 4 * n_blocks),
    )
    top = float(big_m - m)
    return _Program(
        c=np.concatenate((length, np.full(n_blocks, cold_start / tick), np.zeros(2 * n_blocks))),
        a=a,
        b=np.concatenate(rhs),
        lower=np.zeros(4 * n_blocks),
        upper=np.concatenate((np.full(2 * n_blocks, top), headroom, delta)),
        budget_row=next_row,
    )


SIMPLEX_UP_TO_BLOCKS = 2_000
"""Below this many blocks the dual simplex goes first (fast and exact on small LPs); above
it the interior point does (its iteration count hardly grows with the size)."""

_INTERIOR: tuple[str, dict[str, str]] = ("highs-ipm", {"run_crossover": "off"})
_SIMPLEX: tuple[str, dict[str, str]] = ("highs-ds", {})


def _solve(program: _Program, b: FloatArray) -> Any:
    """HiGHS on the LP; the other method when the first one ends neither optimal nor
    infeasible, and the dual simplex confirms an infeasibility the interior point reports."""
    n_blocks = program.c.size // 4
    order = [_SIMPLEX, _INTERIOR] if n_blocks < SIMPLEX_UP_TO_BLOCKS else [_INTERIOR, _SIMPLEX]
    result: Any = None
    for method, options in order:
        with warnings.catch_warnings():
            # run_crossover is a HiGHS option scipy passes through verbatim (and warns about):
            # the certificate needs duals, not a vertex, so the interior point stops there.
            warnings.simplefilter("ignore", OptimizeWarning)
            result = linprog(
                program.c,
                A_ub=program.a,
                b_ub=b,
                bounds=np.column_stack((program.lower, program.upper)),
                method=method,
                options=options,
            )
        if result.status == 0 or (result.status == 2 and method == "highs-ds"):
            break
    return result


def _certified(program: _Program, duals: FloatArray) -> float:
    """Weak-duality bound on ``min c.x`` from row duals ``duals`` (any sign is clipped)."""
    y = np.maximum(duals, 0.0)
    reduced = program.c + program.a.T @ y
    terms = np.concatenate(
        (np.where(reduced >= 0, reduced * program.lower, reduced * program.upper), -y * program.b)
    )
    return float(terms.sum() - CERTIFICATE_SLACK * np.abs(terms).sum())


# --------------------------------------------------------------------------- entry points


def auto_block_ticks(n_ticks: int) -> int:
    """The smallest uniform block (ticks) with at most MAX_AUTO_BLOCKS blocks."""
    return max(1, math.ceil(n_ticks / MAX_AUTO_BLOCKS))


def _check(
    work: FloatArray,
    counts: IntArray,
    tick: float,
    capacity: float,
    slo: float,
    cold_start: float,
    m: int,
    big_m: int,
    initial: int,
    attainments: Sequence[float],
    times: FloatArray | None,
    request_work: FloatArray | None,
    block_ticks: int | None,
) -> None:
    for name, value, strict in (
        ("tick_seconds", tick, True),
        ("capacity_rps", capacity, True),
        ("slo_seconds", slo, False),
        ("cold_start_seconds", cold_start, False),
    ):
        if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
            raise ValueError(f"{name} must be {'>' if strict else '>='} 0, got {value!r}")
    if not 0 <= m <= big_m or big_m < 1:
        raise ValueError(f"need 0 <= min_replicas ({m}) <= max_replicas ({big_m}), max >= 1")
    if not m <= initial <= big_m:
        raise ValueError(f"initial_ready ({initial}) must be within [{m}, {big_m}]")
    for a in attainments:
        if not (math.isfinite(a) and 0.0 <= a <= 1.0):
            raise ValueError(f"attainment must be in [0, 1], got {a!r}")
    if work.shape != counts.shape or work.ndim != 1 or work.size == 0:
        raise ValueError("work and counts must be non-empty 1-d arrays of the same length")
    if (work < 0).any() or (counts < 0).any() or not np.isfinite(work).all():
        raise ValueError("work and counts must be finite and >= 0")
    if (times is None) != (request_work is None):
        raise ValueError("pass both times and request_work, or neither")
    if times is not None and request_work is not None:
        if times.shape != request_work.shape or times.size != int(counts.sum()):
            raise ValueError("times and request_work must hold one entry per request")
        if (request_work < 0).any() or not np.isfinite(times).all():
            raise ValueError("request times must be finite and request work >= 0")
    if block_ticks is not None and block_ticks < 1:
        raise ValueError(f"block_ticks must be >= 1, got {block_ticks}")


def replica_seconds_bounds(
    work: FloatArray,
    counts: IntArray,
    *,
    tick_seconds: float,
    capacity_rps: float,
    slo_seconds: float,
    cold_start_seconds: float,
    min_replicas: int,
    max_replicas: int,
    attainments: Sequence[float],
    initial_ready: int | None = None,
    times: FloatArray | None = None,
    request_work: FloatArray | None = None,
    tick_sizes: TickSizes = "unknown",
    block_ticks: int | None = None,
) -> tuple[LowerBound, ...]:
    """The lower bound at each of ``attainments`` (one LP, re-solved per budget).

    ``work``/``counts`` per tick; ``times``/``request_work`` per request when known (they must
    be the requests the per-request queue model serves). Without them the per-tick curves are
    used, with ``tick_sizes`` telling whether a tick's requests share one size (rate traces,
    fluid-model runs) or not. ``initial_ready`` defaults to ``min_replicas``.
    """
    started = time.perf_counter()
    work = np.asarray(work, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    initial = min_replicas if initial_ready is None else initial_ready
    _check(
        work,
        counts,
        tick_seconds,
        capacity_rps,
        slo_seconds,
        cold_start_seconds,
        min_replicas,
        max_replicas,
        initial,
        attainments,
        times,
        request_work,
        block_ticks,
    )
    n = work.size
    block = auto_block_ticks(n) if block_ticks is None else block_ticks
    n_blocks = math.ceil(n / block)
    edges = np.minimum(np.arange(n_blocks + 1, dtype=np.int64) * block, n)
    avail, due = _curves(
        edges,
        work,
        counts,
        tick_seconds,
        capacity_rps,
        slo_seconds,
        times,
        request_work,
        tick_sizes,
    )
    unit = capacity_rps * tick_seconds  # work one replica serves in a tick
    program = _program(
        edges,
        avail / unit,
        due / unit,
        tick_seconds,
        cold_start_seconds,
        min_replicas,
        max_replicas,
        initial,
    )
    floor_ticks = float(min_replicas * n)
    setup = time.perf_counter() - started
    out: dict[int, LowerBound] = {}
    infeasible_budget = -math.inf  # the largest budget found infeasible so far
    # Largest budget first: once one is infeasible, every smaller one is (a subset of it).
    for index in sorted(range(len(attainments)), key=lambda i: attainments[i]):
        attainment = attainments[index]
        allowed, budget = violation_budget(work, counts, attainment, request_work, tick_sizes)
        b = program.b.copy()
        b[program.budget_row] = budget / unit
        solve_started, cpu_started = time.perf_counter(), time.process_time()
        result = None if budget <= infeasible_budget else _solve(program, b)
        solve = time.perf_counter() - solve_started
        solve_cpu = time.process_time() - cpu_started
        if result is None or result.status == 2:  # infeasible: no plan reaches it
            status: Literal["optimal", "unattainable"] = "unattainable"
            bound, primal = math.inf, math.nan
            infeasible_budget = max(infeasible_budget, budget)
        elif result.status == 0:
            status = "optimal"
            certified = _certified(
                _Program(program.c, program.a, b, program.lower, program.upper, 0),
                -np.asarray(result.ineqlin.marginals),
            )
            bound = (floor_ticks + max(certified, 0.0)) * tick_seconds
            primal = (floor_ticks + float(result.fun)) * tick_seconds
        else:
            raise BoundError(f"HiGHS did not solve the bound LP: {result.message}")
        out[index] = LowerBound(
            attainment=attainment,
            replica_seconds=bound,
            lp_replica_seconds=primal,
            min_replica_seconds=floor_ticks * tick_seconds,
            allowed_violations=allowed,
            budget_work=budget,
            block_ticks=block,
            n_blocks=n_blocks,
            status=status,
            solve_seconds=solve,
            solve_cpu_seconds=solve_cpu,
            setup_seconds=setup,
        )
    return tuple(out[i] for i in range(len(attainments)))


def replica_seconds_bound(
    work: FloatArray, counts: IntArray, *, attainment: float, **kwargs: Any
) -> LowerBound:
    """:func:`replica_seconds_bounds` at one attainment."""
    return replica_seconds_bounds(work, counts, attainments=(attainment,), **kwargs)[0]


def workload_bounds(
    workload: Workload,
    *,
    per_request: bool,
    capacity_rps: float,
    slo_seconds: float,
    cold_start_seconds: float,
    min_replicas: int,
    max_replicas: int,
    attainments: Sequence[float],
    initial_ready: int | None = None,
    block_ticks: int | None = None,
) -> tuple[LowerBound, ...]:
    """The bounds for a simulator ``Workload``, matched to the queue model its policies ran
    with: ``per_request=True`` (the per-request model) uses the requests' own times and work;
    ``False`` (the fluid model) the per-tick curves with equal sizes per tick, which is how the
    fluid model counts misses and what rate traces draw (unit-size requests)."""
    use_requests = per_request and workload.times is not None
    if per_request and not use_requests:
        raise ValueError("per_request=True needs a workload with per-request times")
    return replica_seconds_bounds(
        workload.work,
        workload.counts,
        tick_seconds=workload.tick_seconds,
        capacity_rps=capacity_rps,
        slo_seconds=slo_seconds,
        cold_start_seconds=cold_start_seconds,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        attainments=attainments,
        initial_ready=initial_ready,
        times=workload.times if use_requests else None,
        request_work=workload.request_work if use_requests else None,
        tick_sizes="equal",
        block_ticks=block_ticks,
    )


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.simulator.bound",
        description=(
            "Lower bound on replica-seconds for a trace at SLO attainment targets, next to the "
            "greedy oracle's plan. The workload is built as `tritonscale simulate` builds it "
            "(same --seed, --model, scaling), so the numbers compare with its runs."
        ),
    )
    p.add_argument("--trace", required=True, metavar="FILE", help="trace file (or directory)")
    p.add_argument("--format", default="auto", help="trace format (auto)")
    p.add_argument("--capacity", required=True, type=float, metavar="RPS")
    p.add_argument("--slo", required=True, type=float, metavar="S", help="queue-wait SLO, s")
    p.add_argument("--cold-start", required=True, type=float, metavar="S")
    p.add_argument(
        "--attainment",
        default="0.99,0.995,0.999",
        metavar="A[,A...]",
        help="SLO attainment targets (0.99,0.995,0.999)",
    )
    p.add_argument("--min-replicas", type=int, default=1, metavar="N", help="(1)")
    p.add_argument("--max-replicas", type=int, default=100, metavar="N", help="(100)")
    p.add_argument(
        "--initial-ready",
        default=None,
        metavar="N|oracle",
        help="ready replicas at t = 0: a number, or `oracle` for the oracle plan's initial "
        "count (what simulate currently starts every policy from); default --min-replicas",
    )
    p.add_argument(
        "--block-ticks",
        type=int,
        default=None,
        metavar="N",
        help=f"ticks per LP block (default: the smallest giving <= {MAX_AUTO_BLOCKS} blocks)",
    )
    p.add_argument(
        "--window",
        metavar="START:END",
        help="crop the trace to [START, END) seconds of its own time first (for slices)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="(0)")
    p.add_argument("--model", default="auto", choices=("auto", "request", "fluid"))
    p.add_argument("--time-scale", type=float, default=1.0, metavar="X")
    p.add_argument("--rate-scale", type=float, default=1.0, metavar="X")
    p.add_argument("--json", metavar="OUT", help="write the bounds as JSON")
    return p


def _attainments(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--attainment {text!r}: expected numbers like 0.99,0.999") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--attainment {text!r}: every value must be in [0, 1]")
    return values


def _window(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    try:
        low, high = float(start), float(end)
    except ValueError:
        raise ValueError(f"--window {text!r}: expected START:END in seconds") from None
    if not sep or not 0 <= low < high:
        raise ValueError(f"--window {text!r}: expected 0 <= START < END")
    return low, high


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def main(argv: Sequence[str] | None = None) -> int:
    # The engine-side pieces (trace loading, workload building, the oracle) are imported here
    # only: the bound itself takes arrays, so it cannot drift into the engine's internals.
    from loadtest.simulator.oracle import oracle_plan
    from loadtest.simulator.run import build_workload, choose_model
    from loadtest.simulator.traces import TraceError, crop, load_trace, scale_trace

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        attainments = _attainments(args.attainment)
        trace = load_trace(args.trace, args.format)
        if args.window:
            trace = crop(trace, *_window(args.window))
        rng = np.random.default_rng(args.seed)
        trace = scale_trace(trace, time_scale=args.time_scale, rate_scale=args.rate_scale, rng=rng)
        model = choose_model(trace, args.model)
        workload = build_workload(trace, model, rng, 1.0)
    except (TraceError, ValueError) as err:
        parser.error(str(err))
    if workload.n_requests == 0:
        parser.error(f"{args.trace}: empty trace (no requests)")
    started = time.perf_counter()
    plan = oracle_plan(
        workload.work,
        args.capacity,
        args.slo,
        args.cold_start,
        workload.tick_seconds,
        args.min_replicas,
        args.max_replicas,
    )
    oracle_seconds = time.perf_counter() - started
    oracle_initial = min(args.max_replicas, max(args.min_replicas, plan.initial))
    if args.initial_ready is None:
        initial = args.min_replicas
    elif args.initial_ready == "oracle":
        initial = oracle_initial
    else:
        try:
            initial = int(args.initial_ready)
        except ValueError:
            parser.error(f"--initial-ready {args.initial_ready!r}: a number or `oracle`")
    per_request = model == "request"
    try:
        bounds = workload_bounds(
            workload,
            per_request=per_request,
            capacity_rps=args.capacity,
            slo_seconds=args.slo,
            cold_start_seconds=args.cold_start,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            attainments=attainments,
            initial_ready=initial,
            block_ticks=args.block_ticks,
        )
    except ValueError as err:
        parser.error(str(err))
    first = bounds[0]
    curves = "per-request curves" if per_request else "per-tick curves"
    print(
        f"{trace.name}: {workload.n_requests} requests over {workload.duration / 3600:.2f} h "
        f"({model} model, {curves}); D = {args.cold_start:g} s, SLO {args.slo:g} s, "
        f"initial ready {initial}; {first.n_blocks} blocks of {first.block_ticks} tick(s); "
        f"setup {first.setup_seconds:.1f} s"
    )
    print(
        f"oracle: {plan.replica_seconds / 3600:.2f} replica-h (initial {oracle_initial}, "
        f"{oracle_seconds:.1f} s)"
    )
    header = ("attainment", "misses", "bound replica-h", "oracle x bound", "solve s", "cpu s")
    rows = [header]
    for b in bounds:
        ratio = plan.replica_seconds / b.replica_seconds if b.replica_seconds > 0 else math.nan
        rows.append(
            (
                f"{b.attainment:g}",
                f"{b.allowed_violations:.0f}",
                "unattainable" if b.status == "unattainable" else f"{b.replica_seconds / 3600:.2f}",
                "-" if b.status == "unattainable" else f"{ratio:.3f}",
                f"{b.solve_seconds:.1f}",
                f"{b.solve_cpu_seconds:.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    if args.json:
        report = {
            "trace": {
                "path": str(args.trace),
                "name": trace.name,
                "requests": workload.n_requests,
                "duration_seconds": workload.duration,
                "model": model,
            },
            "params": {
                "capacity_rps": args.capacity,
                "slo_seconds": args.slo,
                "cold_start_seconds": args.cold_start,
                "min_replicas": args.min_replicas,
                "max_replicas": args.max_replicas,
                "initial_ready": initial,
                "seed": args.seed,
                "time_scale": args.time_scale,
                "rate_scale": args.rate_scale,
                "window": args.window,
            },
            "oracle": {"replica_seconds": plan.replica_seconds, "initial": oracle_initial},
            "bounds": [
                {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(b).items()}
                for b in bounds
            ],
        }
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(report, indent=2) + "\n")
        except OSError as err:
            print(f"{parser.prog}: error: cannot write {args.json}: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
