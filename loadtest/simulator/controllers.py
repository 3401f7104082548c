"""The policies the simulator compares, as engine controllers.

Each controller only models the *signal path* (what the adapter, DCGM or Prometheus would
serve, when, and over which window); every decision is made by the service's own code in
``policies/``: :class:`policies.hpa.HPAController` (the HPA's exact algorithm),
:class:`policies.sizing.PredictivePolicy` and :class:`policies.kpa.KnativeLikePolicy`.

Policies (``POLICY_NAMES``):

``hpa-gpu-util``
    HPA, External metric with ``AverageValue`` 0.7: the summed GPU utilisation of the pods, i.e.
    busy replica-seconds over the last sync period / sync period (each ready replica's
    utilisation is min(1, served / capacity); starting replicas report 0). Default HPA (no
    ``behavior``: 5 min scale-down stabilisation, scale-up limit max(2x, 4)).
``hpa-queue-depth``
    HPA, ``AverageValue`` = capacity x SLO requests per replica (what one replica can clear
    within the SLO) on the queue depth sampled at the adapter's latest scrape. Default HPA.
``hpa-queue-compute-ratio``
    NVIDIA's Triton guidance: ``rate(queue_us[1m]) / clamp_min(rate(compute_us[1m]), 1)`` from a
    Prometheus that scrapes Triton every 15 s and evaluates the recording rule every 6 s; the HPA
    reads the newest rule value at each sync. Target 1 per pod (``Pods``/``AverageValue`` 1000m
    in the tutorial), modelled as an External ``Value`` 1 target: desired = ceil(ratio x ready
    pods), which is what the Pods path computes when every pod reports the same ratio. A rule
    with fewer than two samples in its window yields no value (the HPA then does not scale).
    With ``RatioPath("tritonscale")`` the same HPA reads the ratio tritonscale serves instead
    (``triton_queue_compute_ratio``): recomputed at every adapter scrape over its rate window,
    as the closed-loop demo runs it.
``kpa``
    :class:`policies.kpa.KnativeLikePolicy` on the requests-per-second metric (target 70 % of
    capacity per pod), ticking every 2 s with the rate over the last 2 s (Knative buckets at
    1 s and averages them over its windows); it scales the Deployment directly (no HPA).
``tritonscale`` / ``tritonscale-no-headroom``
    The service path: every ``step_seconds`` (default: the sync period) the adapter feeds
    :class:`policies.sizing.PredictivePolicy` with the mean of the arrival rates it computed
    at each scrape of the step, each over its rate window (5 s; as ``adapter/predictive.py``
    does: measured against real Triton, feeding the exact arrivals of the step instead made the
    simulated forecasts noisier, its bounds wider and its replica counts higher than the
    service's), the queue depth at its latest scrape and the ready replicas, and serves its
    desired replicas
    as ``triton_desired_replicas``; the HPA has an ``AverageValue`` 1 target on it with
    ``behavior`` as we recommend users configure it: scaleUp stabilisation 0 and tolerance 0
    (KEP-4951 per-direction tolerance, so a 5 % shortfall is not ignored), scaleDown
    stabilisation 0 (the policy itself delays scale-down by ``scale_down_delay_seconds``,
    60 s, and holds the running replicas that long after it starts: warm start) and the
    default 0.1 scale-down tolerance; default rate policies (4 pods or 100 % per 15 s up).
    The policy is built by :func:`policies.predictive.build_predictive_policy`, as in the
    service (horizon = cold start + sync period, derived there); ``TritonscaleTuning``'s values
    are :class:`~policies.predictive.PredictiveSettings`' defaults, i.e. what the service
    runs. ``-no-headroom`` plans on the point forecast.
``oracle``
    :mod:`loadtest.simulator.oracle`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from loadtest.simulator.engine import ClusterView, Controller, SimParams
from loadtest.simulator.oracle import OracleController, OraclePlan
from policies.hpa import Behavior, HPAController, HPASpec, MetricTarget, ScalingRules
from policies.kpa import KnativeLikePolicy
from policies.predictive import PredictiveSettings, build_predictive_policy, settings_default

POLICY_NAMES: tuple[str, ...] = (
    "hpa-gpu-util",
    "hpa-queue-depth",
    "hpa-queue-compute-ratio",
    "kpa",
    "tritonscale",
    "tritonscale-no-headroom",
    "oracle",
)

GPU_UTIL_TARGET = 0.7
PROMETHEUS_SCRAPE_SECONDS = 15.0
RECORDING_RULE_SECONDS = 6.0
RATE_RANGE_SECONDS = 60.0
KPA_TICK_SECONDS = 2.0


@dataclass(frozen=True)
class RatioPath:
    """Where ``hpa-queue-compute-ratio`` reads the queue/compute ratio: NVIDIA's Prometheus
    recipe (15 s scrape, rate over 1 min, rule every 6 s) or tritonscale's API (the adapter's
    scrape interval, ``rate_window_seconds``, recomputed at every scrape)."""

    source: Literal["prometheus", "tritonscale"] = "prometheus"
    rate_window_seconds: float = 5.0  # tritonscale's signals.rate_window_seconds

    def periods(self, params: SimParams) -> tuple[float, float, float]:
        """(counter sampling, rule evaluation, rate range) in seconds."""
        if self.source == "prometheus":
            return PROMETHEUS_SCRAPE_SECONDS, RECORDING_RULE_SECONDS, RATE_RANGE_SECONDS
        scrape = params.scrape_interval_seconds
        return scrape, scrape, self.rate_window_seconds


@dataclass(frozen=True)
class TritonscaleTuning:
    """PredictiveSettings values the simulator uses: the library defaults unless overridden
    (CLI flags; see module docstring), and the tritonscale HPA's behavior."""

    step_seconds: float | None = None  # None: the HPA sync period
    forecaster: str = settings_default("forecaster")
    quantile: float = settings_default("quantile")
    panic_factor: float = settings_default("panic_factor")
    panic_hold_seconds: float = settings_default("panic_hold_seconds")
    scale_down_delay_seconds: float = settings_default("scale_down_delay_seconds")
    scale_up_tolerance: float = 0.0
    hpa_scale_down_stabilization_seconds: int = 0
    rate_window_seconds: float = 5.0  # the service's signals.rate_window_seconds


class _HPADriven:
    """Shared HPA plumbing: reconcile every sync period with the metric from ``_metric``."""

    name = "hpa"

    def __init__(self, params: SimParams, spec: HPASpec) -> None:
        self.params = params
        self.hpa = HPAController(spec)
        self.sync_ticks = params.ticks(params.sync_period_seconds, "--sync-period")
        self.scrape_ticks = params.ticks(params.scrape_interval_seconds, "--scrape-interval")
        self.dt = params.tick_seconds

    def _scraped(self, k: int) -> int:
        """Index of the tick that ends at the adapter's latest scrape at or before tick k."""
        return ((k + 1) // self.scrape_ticks) * self.scrape_ticks - 1

    def _metric(self, k: int, view: ClusterView) -> list[float] | None:
        raise NotImplementedError

    def observe(self, k: int, view: ClusterView) -> None:
        """Per-tick hook for signal pipelines that run more often than the HPA."""
        return None

    def decide(self, k: int, view: ClusterView) -> int | None:
        self.observe(k, view)
        if (k + 1) % self.sync_ticks:
            return None
        now = (k + 1) * self.dt
        result = self.hpa.reconcile(now, view.spec, view.spec, view.ready, [self._metric(k, view)])
        return result.desired_replicas


def _default_hpa(params: SimParams, metric: MetricTarget) -> HPASpec:
    return HPASpec(
        min_replicas=params.min_replicas, max_replicas=params.max_replicas, metrics=(metric,)
    )


class GpuUtilHPA(_HPADriven):
    name = "hpa-gpu-util"

    def __init__(self, params: SimParams) -> None:
        metric = MetricTarget("AverageValue", GPU_UTIL_TARGET, name="gpu_utilization")
        super().__init__(params, _default_hpa(params, metric))

    def _metric(self, k: int, view: ClusterView) -> list[float] | None:
        lo = max(0, k + 1 - self.sync_ticks)
        busy = float(view.busy_seconds[lo : k + 1].sum())
        return [busy / ((k + 1 - lo) * self.dt)]


class QueueDepthHPA(_HPADriven):
    name = "hpa-queue-depth"

    def __init__(self, params: SimParams) -> None:
        target = params.capacity_rps * params.slo_seconds
        metric = MetricTarget("AverageValue", target, name="triton_queue_depth")
        super().__init__(params, _default_hpa(params, metric))

    def _metric(self, k: int, view: ClusterView) -> list[float] | None:
        j = self._scraped(k)
        return [float(view.queue_depth[j])] if j >= 0 else None


class QueueComputeRatioHPA(_HPADriven):
    """Prometheus path: 15 s scrape of the counters, 6 s recording rule over rate[1m]."""

    name = "hpa-queue-compute-ratio"

    def __init__(self, params: SimParams, path: RatioPath | None = None) -> None:
        metric = MetricTarget("Value", 1.0, name="triton:queue_compute:ratio")
        super().__init__(params, _default_hpa(params, metric))
        scrape, rule, self.range_seconds = (path or RatioPath()).periods(params)
        self.prom_scrape_ticks = params.ticks(scrape, "ratio counter sampling")
        self.rule_ticks = params.ticks(rule, "ratio rule interval")
        self.samples: deque[tuple[float, float, float]] = deque()  # (time, queue_s, compute_s)
        self.queue_total = 0.0
        self.compute_total = 0.0
        self.rule_value: float | None = None

    def observe(self, k: int, view: ClusterView) -> None:
        self.queue_total += float(view.queue_seconds_done[k])
        self.compute_total += float(view.compute_seconds_done[k])
        now = (k + 1) * self.dt
        if (k + 1) % self.prom_scrape_ticks == 0:
            self.samples.append((now, self.queue_total, self.compute_total))
        if (k + 1) % self.rule_ticks == 0:
            while self.samples and self.samples[0][0] <= now - self.range_seconds:
                self.samples.popleft()
            if len(self.samples) < 2:
                self.rule_value = None
                return
            t0, q0, c0 = self.samples[0]
            t1, q1, c1 = self.samples[-1]
            span = t1 - t0
            queue_rate = (q1 - q0) * 1e6 / span  # microseconds per second, as Triton counts
            compute_rate = (c1 - c0) * 1e6 / span
            self.rule_value = queue_rate / max(compute_rate, 1.0)

    def _metric(self, k: int, view: ClusterView) -> list[float] | None:
        return None if self.rule_value is None else [self.rule_value]


class KpaController:
    name = "kpa"

    def __init__(self, params: SimParams, initial_ready: int) -> None:
        self.step_ticks = params.ticks(KPA_TICK_SECONDS, "KPA tick")
        self.step_seconds = self.step_ticks * params.tick_seconds
        self.policy = KnativeLikePolicy(
            self.step_seconds,
            params.capacity_rps,
            min_replicas=params.min_replicas,
            max_replicas=params.max_replicas,
            initial_ready_replicas=initial_ready,
        )

    def decide(self, k: int, view: ClusterView) -> int | None:
        if (k + 1) % self.step_ticks:
            return None
        rate = view.arrivals_in(k, self.step_ticks) / self.step_seconds
        return self.policy.step(rate, view.ready)


class TritonscaleController(_HPADriven):
    """PredictivePolicy published as a metric, HPA AverageValue 1 on it."""

    def __init__(
        self, params: SimParams, tuning: TritonscaleTuning, *, use_headroom: bool, name: str
    ) -> None:
        self.name = name
        scale_up = ScalingRules(stabilization_window_seconds=0, tolerance=tuning.scale_up_tolerance)
        scale_down = ScalingRules(
            stabilization_window_seconds=tuning.hpa_scale_down_stabilization_seconds
        )
        spec = HPASpec(
            min_replicas=params.min_replicas,
            max_replicas=params.max_replicas,
            metrics=(MetricTarget("AverageValue", 1.0, name="triton_desired_replicas"),),
            behavior=Behavior(scale_up=scale_up, scale_down=scale_down),
        )
        super().__init__(params, spec)
        step = tuning.step_seconds or params.sync_period_seconds
        self.step_ticks = params.ticks(step, "--predictive-step")
        step = self.step_ticks * params.tick_seconds
        self.policy = build_predictive_policy(
            PredictiveSettings(
                step_seconds=step,
                cold_start_seconds=params.cold_start_seconds,
                hpa_sync_period_seconds=params.sync_period_seconds,
                capacity_rps=params.capacity_rps,
                slo_seconds=params.slo_seconds,
                min_replicas=params.min_replicas,
                max_replicas=params.max_replicas,
                forecaster=tuning.forecaster,
                quantile=tuning.quantile,
                use_headroom=use_headroom,
                panic_factor=tuning.panic_factor,
                panic_hold_seconds=tuning.panic_hold_seconds,
                scale_down_delay_seconds=tuning.scale_down_delay_seconds,
            )
        )
        self.window_ticks = params.ticks(tuning.rate_window_seconds, "--rate-window")
        self.window_rates: list[float] = []
        self.published: float | None = None

    def observe(self, k: int, view: ClusterView) -> None:
        if (k + 1) % self.scrape_ticks == 0:
            # the adapter's arrival rate at this scrape: arrivals over its rate window
            span = min(self.window_ticks, k + 1)
            self.window_rates.append(view.arrivals_in(k, span) / (span * self.dt))
        if (k + 1) % self.step_ticks:
            return
        if self.window_rates:  # the service steps on the mean of the step's fresh rates
            rate = sum(self.window_rates) / len(self.window_rates)
            self.window_rates.clear()
        else:
            rate = view.arrivals_in(k, self.step_ticks) / (self.step_ticks * self.dt)
        j = self._scraped(k)
        depth = float(view.queue_depth[j]) if j >= 0 else math.nan
        decision = self.policy.step(rate, depth, float(view.ready))
        self.published = float(decision.desired_replicas)

    def _metric(self, k: int, view: ClusterView) -> list[float] | None:
        return None if self.published is None else [self.published]


def make_controller(
    name: str,
    params: SimParams,
    *,
    plan: OraclePlan,
    initial_ready: int,
    tuning: TritonscaleTuning | None = None,
    ratio_path: RatioPath | None = None,
) -> Controller:
    """Build the controller called ``name`` (one of :data:`POLICY_NAMES`)."""
    tuning = tuning or TritonscaleTuning()
    if name == "hpa-gpu-util":
        return GpuUtilHPA(params)
    if name == "hpa-queue-depth":
        return QueueDepthHPA(params)
    if name == "hpa-queue-compute-ratio":
        return QueueComputeRatioHPA(params, ratio_path)
    if name == "kpa":
        return KpaController(params, initial_ready)
    if name == "tritonscale":
        return TritonscaleController(params, tuning, use_headroom=True, name=name)
    if name == "tritonscale-no-headroom":
        return TritonscaleController(params, tuning, use_headroom=False, name=name)
    if name == "oracle":
        return OracleController(plan)
    raise ValueError(f"unknown policy {name!r}; choose from: {', '.join(POLICY_NAMES)} or all")
