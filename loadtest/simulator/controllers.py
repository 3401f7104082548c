"""The policies the simulator compares, as engine controllers, each with its real signal path.

Each controller models the *signal path* (what DCGM, Prometheus, KEDA or the tritonscale
adapter would serve, when, and over which window); every decision is made by the service's own
code in ``policies/``: :class:`policies.hpa.HPAController` (the HPA's exact algorithm),
:class:`policies.predictive.PredictivePolicy` and :class:`policies.kpa.KnativeLikePolicy`.

Timing (all whole seconds; t = end of a 1 s tick): the HPA reconciles at t = 0 mod 15 (its sync
period). The other loops run at fixed phases that are not aligned with it, as in a cluster
where each started at its own moment: Prometheus scrapes Triton and dcgm-exporter every 15 s at
t = 4 mod 15 (NVIDIA's tutorial PodMonitor sets no interval; 15 s is the common setting),
dcgm-exporter collects every 30 s at t = 2 mod 30 (its default ``-c 30000``), recording rules
run every 6 s at t = 1 mod 6 (NVIDIA's ``PrometheusRule`` interval). prometheus-adapter's
relist (6 s in NVIDIA's values) only discovers series names; values come from an instant query
at each HPA request, so it adds no delay here. PromQL ``rate`` extrapolates like Prometheus'
``extrapolatedRate``; an instant query returns the newest sample at most 5 min old.

Policies (``POLICY_NAMES``), with the knob their frontier sweeps (:data:`KNOBS`):

``hpa-gpu-util`` (reactive; knob: AverageValue target utilisation, default 0.7)
    DCGM -> Prometheus -> prometheus-adapter -> HPA: dcgm-exporter reads each GPU's
    ``DCGM_FI_DEV_GPU_UTIL`` (NVML's busy share over its last sample period, ~1 s) every 30 s;
    Prometheus scrapes it; a rule ``sum(avg_over_time(DCGM_FI_DEV_GPU_UTIL[1m])) / 100``
    every 6 s; the HPA's External ``AverageValue`` target on it. Starting pods report 0.
``hpa-arrival-rate`` (reactive; knob: target utilisation, default 0.7)
    The same fast offered-load signal as tritonscale (the adapter's 1 s scrape, arrival rate
    over its 5 s window, served as ``triton_arrival_rate``) with an ``AverageValue`` target of
    utilisation x capacity per replica: tritonscale without the forecast, the queue model and
    the headroom, so the gap to tritonscale is what prediction adds.
``hpa-queue-rate`` (reactive; knob: target utilisation of the rate trigger, default 0.7)
    KEDA with two Prometheus triggers, as KEDA's and NVIDIA's docs pair them:
    ``sum(nv_inference_pending_request_count)`` with ``AverageValue`` capacity x SLO (the backlog
    one replica clears within the SLO) and ``sum(rate(nv_inference_request_success[1m]))`` with
    ``AverageValue`` utilisation x capacity; the HPA takes the larger. KEDA's metrics server
    queries Prometheus at each HPA request (no metric cache, KEDA's default).
``hpa-queue-compute-ratio`` (reactive; knob: target ratio, default 1 = NVIDIA's 1000m)
    NVIDIA's recipe: rule ``rate(queue_us[1m]) / clamp_min(rate(compute_us[1m]), 1)`` every 6 s
    over the 15 s scrapes; HPA ``Pods`` ``AverageValue``, modelled as External ``Value``:
    desired = ceil(ratio x ready / target), what the Pods path computes when every pod reports
    the same ratio. Fewer than two samples in the window: no value (the HPA holds).
``kpa`` (reactive; knob: target utilisation, default 0.7, Knative's default)
    :class:`policies.kpa.KnativeLikePolicy` on requests per second, Knative's own 1 s scrape,
    ticking every 2 s; it scales the Deployment directly (no HPA).
``tritonscale`` (predictive; knob: ``slo_attainment``, default 0.995)
    The service path: the adapter scrapes every 1 s and computes the arrival rate over its 5 s
    window; every 15 s (at t = 8 mod 15, so the HPA reads a value published 7 s before) the
    predictive stage feeds :class:`policies.predictive.PredictivePolicy` the mean of the rates
    scraped since its last step, the queue depth of the latest scrape and the ready replicas,
    and serves ``triton_desired_replicas``; the HPA has an ``AverageValue`` 1 target on it with
    ``behavior`` as we recommend: scaleUp stabilisation 0 and tolerance 0, scaleDown
    stabilisation 0 (the policy delays scale-down itself). Built by
    :func:`policies.predictive.build_predictive_policy` from the library defaults.
``tritonscale-no-headroom`` (ablation): the same, planning on the point forecast.
``hpa-queue-depth`` (strawman, labelled so): a lone queue-depth HPA on the adapter's fast queue
    depth, ``AverageValue`` capacity x SLO x knob. It swings between min and max, which is what
    a lone queue-depth HPA does; nobody should run it alone.
``oracle`` (reference): :mod:`loadtest.simulator.oracle`, the greedy clairvoyant plan.

Reactive HPAs run the HPA's defaults (no ``behavior``: 5 min scale-down stabilisation, scale-up
limit max(2x, +4) per sync), as operators deploy them.
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
    "hpa-arrival-rate",
    "hpa-queue-rate",
    "hpa-queue-compute-ratio",
    "kpa",
    "tritonscale",
    "tritonscale-no-headroom",
    "hpa-queue-depth",
    "oracle",
)

ROLES: dict[str, str] = {
    "hpa-gpu-util": "reactive",
    "hpa-arrival-rate": "reactive",
    "hpa-queue-rate": "reactive",
    "hpa-queue-compute-ratio": "reactive",
    "kpa": "reactive",
    "tritonscale": "predictive",
    "tritonscale-no-headroom": "ablation",
    "hpa-queue-depth": "strawman",
    "oracle": "reference",
}
REACTIVE: tuple[str, ...] = tuple(n for n in POLICY_NAMES if ROLES[n] == "reactive")


@dataclass(frozen=True)
class Knob:
    """A policy's main setting, what its SLO-cost frontier sweeps."""

    name: str
    default: float
    grid: tuple[float, ...]
    meaning: str


UTILISATION_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

KNOBS: dict[str, Knob] = {
    "hpa-gpu-util": Knob(
        "target_utilisation", 0.7, UTILISATION_GRID, "AverageValue of the summed GPU utilisation"
    ),
    "hpa-arrival-rate": Knob(
        "target_utilisation", 0.7, UTILISATION_GRID, "AverageValue = this x capacity (req/s)"
    ),
    "hpa-queue-rate": Knob(
        "target_utilisation", 0.7, UTILISATION_GRID, "rate trigger's AverageValue / capacity"
    ),
    "hpa-queue-compute-ratio": Knob(
        "target_ratio", 1.0, (0.05, 0.1, 0.25, 0.5, 1.0), "queue:compute ratio per pod"
    ),
    "kpa": Knob("target_utilisation", 0.7, UTILISATION_GRID, "RPS target / capacity"),
    "tritonscale": Knob(
        "slo_attainment", 0.995, (0.99, 0.995, 0.999, 0.9995), "the stated SLO attainment"
    ),
    "hpa-queue-depth": Knob(
        "target_slo_share", 1.0, (0.25, 0.5, 1.0), "AverageValue / (capacity x SLO)"
    ),
}

PROMETHEUS_SCRAPE_SECONDS = 15
PROMETHEUS_SCRAPE_PHASE = 4
RECORDING_RULE_SECONDS = 6
RECORDING_RULE_PHASE = 1
DCGM_COLLECT_SECONDS = 30
DCGM_COLLECT_PHASE = 2
RATE_RANGE_SECONDS = 60.0
INSTANT_QUERY_LOOKBACK_SECONDS = 300.0
ADAPTER_RATE_WINDOW_SECONDS = 5
"""The tritonscale adapter's rate window (``signals.rate_window_seconds`` default)."""
PUBLISH_LEAD_SECONDS = 7
"""tritonscale publishes 7 s before the HPA's sync (about half a period: the phases of two
independent 15 s loops are unrelated, so half a period is the expected age)."""
KPA_TICK_SECONDS = 2


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
    slo_attainment: float = settings_default("slo_attainment")
    panic_factor: float = settings_default("panic_factor")
    panic_hold_seconds: float = settings_default("panic_hold_seconds")
    scale_down_delay_seconds: float = settings_default("scale_down_delay_seconds")
    scale_up_tolerance: float = 0.0
    hpa_scale_down_stabilization_seconds: int = 0
    rate_window_seconds: float = 5.0  # the service's signals.rate_window_seconds


def _due(k: int, every: int, phase: int) -> bool:
    """True at the end of tick k when a loop running every ``every`` ticks at ``phase`` fires."""
    return (k + 1 - phase) % every == 0


class PromSeries:
    """One series as Prometheus stores it: (time, value) at each scrape, 10 minutes kept."""

    def __init__(self, keep_seconds: float = 600.0) -> None:
        self.times: deque[float] = deque()
        self.values: deque[float] = deque()
        self.keep_seconds = keep_seconds

    def add(self, now: float, value: float) -> None:
        self.times.append(now)
        self.values.append(value)
        while self.times and self.times[0] < now - self.keep_seconds:
            self.times.popleft()
            self.values.popleft()

    def _in_range(self, now: float, range_seconds: float) -> tuple[list[float], list[float]]:
        start = now - range_seconds
        times = [t for t in self.times if start < t <= now]
        values = list(self.values)[len(self.times) - len(times) :] if times else []
        return times, values

    def rate(self, now: float, range_seconds: float) -> float | None:
        """PromQL ``rate(counter[range])`` at ``now``: Prometheus' ``extrapolatedRate``."""
        times, values = self._in_range(now, range_seconds)
        if len(times) < 2:
            return None
        delta = values[-1] - values[0]
        sampled = times[-1] - times[0]
        to_start = times[0] - (now - range_seconds)
        to_end = now - times[-1]
        average_gap = sampled / (len(times) - 1)
        if delta > 0 and values[0] >= 0:
            to_zero = sampled * values[0] / delta  # a counter does not extrapolate below 0
            to_start = min(to_start, to_zero)
        threshold = 1.1 * average_gap
        interval = sampled
        interval += to_start if to_start < threshold else average_gap / 2
        interval += to_end if to_end < threshold else average_gap / 2
        return delta * interval / sampled / range_seconds

    def avg_over_time(self, now: float, range_seconds: float) -> float | None:
        _, values = self._in_range(now, range_seconds)
        return sum(values) / len(values) if values else None

    def latest(self, now: float) -> float | None:
        """An instant query: the newest sample, unless older than the 5 min lookback."""
        if not self.times or self.times[-1] < now - INSTANT_QUERY_LOOKBACK_SECONDS:
            return None
        return self.values[-1]


class _HPADriven:
    """Shared HPA plumbing: reconcile every sync period with the metrics from ``_metrics``."""

    name = "hpa"

    def __init__(self, params: SimParams, spec: HPASpec) -> None:
        self.params = params
        self.hpa = HPAController(spec)
        self.sync_ticks = params.ticks(params.sync_period_seconds, "--sync-period")
        self.scrape_ticks = params.ticks(params.scrape_interval_seconds, "--scrape-interval")
        self.dt = params.tick_seconds
        self.counters = {"queue": 0.0, "compute": 0.0, "completions": 0.0}

    def _scraped(self, k: int) -> int:
        """Index of the tick that ends at the adapter's latest scrape at or before tick k."""
        return ((k + 1) // self.scrape_ticks) * self.scrape_ticks - 1

    rate_window_seconds: float = ADAPTER_RATE_WINDOW_SECONDS

    def _adapter_rate(self, k: int, view: ClusterView) -> float | None:
        """The adapter's arrival rate at its latest scrape: arrivals over its rate window."""
        j = self._scraped(k)
        if j < 0:
            return None
        window = max(1, round(self.rate_window_seconds / self.dt))
        return view.arrivals_in(j, window) / (min(window, j + 1) * self.dt)

    def _metrics(self, k: int, view: ClusterView) -> list[list[float] | None]:
        raise NotImplementedError

    def observe(self, k: int, view: ClusterView) -> None:
        """Per-tick hook for signal pipelines that run more often than the HPA."""
        return None

    def _count(self, k: int, view: ClusterView) -> None:
        """Triton's cumulative counters (seconds, requests) as of the end of tick k."""
        counters = self.counters
        counters["queue"] += float(view.queue_seconds_done[k])
        counters["compute"] += float(view.compute_seconds_done[k])
        counters["completions"] += float(view.completions[k])

    def decide(self, k: int, view: ClusterView) -> int | None:
        self.observe(k, view)
        if (k + 1) % self.sync_ticks:
            return None
        now = (k + 1) * self.dt
        result = self.hpa.reconcile(now, view.spec, view.spec, view.ready, self._metrics(k, view))
        return result.desired_replicas


def _default_hpa(params: SimParams, *metrics: MetricTarget) -> HPASpec:
    return HPASpec(
        min_replicas=params.min_replicas, max_replicas=params.max_replicas, metrics=metrics
    )


class GpuUtilHPA(_HPADriven):
    """DCGM (30 s) -> Prometheus (15 s) -> rule avg_over_time[1m] (6 s) -> HPA."""

    name = "hpa-gpu-util"

    def __init__(self, params: SimParams, target_utilisation: float) -> None:
        metric = MetricTarget("AverageValue", target_utilisation, name="gpu_utilization")
        super().__init__(params, _default_hpa(params, metric))
        self.dcgm_value: float | None = None
        self.scraped = PromSeries()
        self.rule: float | None = None

    def observe(self, k: int, view: ClusterView) -> None:
        now = (k + 1) * self.dt
        if _due(k, DCGM_COLLECT_SECONDS, DCGM_COLLECT_PHASE):
            # NVML's utilisation: each GPU's busy share over its last ~1 s sample, summed.
            self.dcgm_value = float(view.busy_seconds[k]) / self.dt
        if (
            _due(k, PROMETHEUS_SCRAPE_SECONDS, PROMETHEUS_SCRAPE_PHASE)
            and self.dcgm_value is not None
        ):
            self.scraped.add(now, self.dcgm_value)
        if _due(k, RECORDING_RULE_SECONDS, RECORDING_RULE_PHASE):
            self.rule = self.scraped.avg_over_time(now, RATE_RANGE_SECONDS)

    def _metrics(self, k: int, view: ClusterView) -> list[list[float] | None]:
        return [None if self.rule is None else [self.rule]]


class ArrivalRateHPA(_HPADriven):
    """The adapter's fast arrival rate, AverageValue utilisation x capacity per replica."""

    name = "hpa-arrival-rate"

    def __init__(
        self,
        params: SimParams,
        target_utilisation: float,
        rate_window_seconds: float = ADAPTER_RATE_WINDOW_SECONDS,
    ) -> None:
        target = target_utilisation * params.capacity_rps
        metric = MetricTarget("AverageValue", target, name="triton_arrival_rate")
        super().__init__(params, _default_hpa(params, metric))
        self.rate_window_seconds = rate_window_seconds

    def _metrics(self, k: int, view: ClusterView) -> list[list[float] | None]:
        rate = self._adapter_rate(k, view)
        return [None if rate is None else [rate]]


class QueueRateHPA(_HPADriven):
    """KEDA: Prometheus queue depth and request rate triggers, max of the two."""

    name = "hpa-queue-rate"

    def __init__(self, params: SimParams, target_utilisation: float) -> None:
        queue = MetricTarget(
            "AverageValue",
            params.capacity_rps * params.slo_seconds,
            name="s0-prometheus-pending",
        )
        rate = MetricTarget(
            "AverageValue", target_utilisation * params.capacity_rps, name="s1-prometheus-rate"
        )
        super().__init__(params, _default_hpa(params, queue, rate))
        self.pending = PromSeries()
        self.success = PromSeries()

    def observe(self, k: int, view: ClusterView) -> None:
        self._count(k, view)
        if _due(k, PROMETHEUS_SCRAPE_SECONDS, PROMETHEUS_SCRAPE_PHASE):
            now = (k + 1) * self.dt
            self.pending.add(now, float(view.queue_depth[k]))
            self.success.add(now, self.counters["completions"])

    def _metrics(self, k: int, view: ClusterView) -> list[list[float] | None]:
        now = (k + 1) * self.dt
        pending = self.pending.latest(now)
        rate = self.success.rate(now, RATE_RANGE_SECONDS)
        return [None if pending is None else [pending], None if rate is None else [rate]]


class QueueComputeRatioHPA(_HPADriven):
    """NVIDIA's path: 15 s scrape of the counters, 6 s recording rule over rate[1m]; or, with
    ``RatioPath("tritonscale")``, the ratio tritonscale serves (every adapter scrape over its
    rate window)."""

    name = "hpa-queue-compute-ratio"

    def __init__(
        self, params: SimParams, target_ratio: float, path: RatioPath | None = None
    ) -> None:
        metric = MetricTarget("Value", target_ratio, name="triton:queue_compute:ratio")
        super().__init__(params, _default_hpa(params, metric))
        path = path or RatioPath()
        scrape, rule, self.range_seconds = path.periods(params)
        self.scrape_every = params.ticks(scrape, "ratio counter sampling")
        self.rule_every = params.ticks(rule, "ratio rule interval")
        prometheus = path.source == "prometheus"
        self.scrape_phase = PROMETHEUS_SCRAPE_PHASE if prometheus else 0
        self.rule_phase = RECORDING_RULE_PHASE if prometheus else 0
        self.queue_us = PromSeries()
        self.compute_us = PromSeries()
        self.rule_value: float | None = None

    def observe(self, k: int, view: ClusterView) -> None:
        self._count(k, view)
        now = (k + 1) * self.dt
        if _due(k, self.scrape_every, self.scrape_phase):
            self.queue_us.add(now, self.counters["queue"] * 1e6)  # Triton counts microseconds
            self.compute_us.add(now, self.counters["compute"] * 1e6)
        if _due(k, self.rule_every, self.rule_phase):
            queue_rate = self.queue_us.rate(now, self.range_seconds)
            compute_rate = self.compute_us.rate(now, self.range_seconds)
            if queue_rate is None or compute_rate is None:
                self.rule_value = None
            else:
                self.rule_value = queue_rate / max(compute_rate, 1.0)

    def _metrics(self, k: int, view: ClusterView) -> list[list[float] | None]:
        return [None if self.rule_value is None else [self.rule_value]]


class QueueDepthHPA(_HPADriven):
    """Strawman: a lone HPA on the adapter's queue depth."""

    name = "hpa-queue-depth"

    def __init__(self, params: SimParams, target_slo_share: float) -> None:
        target = target_slo_share * params.capacity_rps * params.slo_seconds
        metric = MetricTarget("AverageValue", target, name="triton_queue_depth")
        super().__init__(params, _default_hpa(params, metric))

    def _metrics(self, k: int, view: ClusterView) -> list[list[float] | None]:
        j = self._scraped(k)
        return [[float(view.queue_depth[j])] if j >= 0 else None]


class KpaController:
    name = "kpa"

    def __init__(self, params: SimParams, target_utilisation: float, initial_ready: int) -> None:
        self.step_ticks = params.ticks(KPA_TICK_SECONDS, "KPA tick")
        self.step_seconds = self.step_ticks * params.tick_seconds
        self.policy = KnativeLikePolicy(
            self.step_seconds,
            params.capacity_rps,
            target_utilization=target_utilisation,
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
    """The adapter's predictive stage publishing desired replicas; HPA AverageValue 1 on it."""

    def __init__(
        self,
        params: SimParams,
        tuning: TritonscaleTuning,
        *,
        use_headroom: bool,
        name: str,
        slo_attainment: float | None = None,
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
        lead = min(self.step_ticks - 1, round(PUBLISH_LEAD_SECONDS / self.dt))
        self.step_phase = (self.step_ticks - lead) % self.step_ticks
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
                slo_attainment=(
                    tuning.slo_attainment if slo_attainment is None else slo_attainment
                ),
                use_headroom=use_headroom,
                panic_factor=tuning.panic_factor,
                panic_hold_seconds=tuning.panic_hold_seconds,
                scale_down_delay_seconds=tuning.scale_down_delay_seconds,
            )
        )
        self.rate_window_seconds = tuning.rate_window_seconds
        params.ticks(tuning.rate_window_seconds, "--rate-window")
        self.rates: list[float] = []
        self.published: float | None = None

    def observe(self, k: int, view: ClusterView) -> None:
        if (k + 1) % self.scrape_ticks == 0:
            rate = self._adapter_rate(k, view)
            if rate is not None:
                self.rates.append(rate)
        if not _due(k, self.step_ticks, self.step_phase):
            return
        rate = sum(self.rates) / len(self.rates) if self.rates else math.nan
        self.rates.clear()
        j = self._scraped(k)
        depth = float(view.queue_depth[j]) if j >= 0 else math.nan
        decision = self.policy.step(rate, depth, float(view.ready))
        self.published = float(decision.desired_replicas)

    def _metrics(self, k: int, view: ClusterView) -> list[list[float] | None]:
        return [None if self.published is None else [self.published]]


def make_controller(
    name: str,
    params: SimParams,
    *,
    plan: OraclePlan,
    initial_ready: int,
    tuning: TritonscaleTuning | None = None,
    knob: float | None = None,
    ratio_path: RatioPath | None = None,
) -> Controller:
    """Build the controller called ``name`` (one of :data:`POLICY_NAMES`); ``knob`` sets its
    :data:`KNOBS` value (None: the default); ``ratio_path`` where the queue:compute ratio
    HPA reads its ratio."""
    tuning = tuning or TritonscaleTuning()
    value = knob if knob is not None or name not in KNOBS else KNOBS[name].default
    if name == "hpa-gpu-util":
        return GpuUtilHPA(params, _given(value))
    if name == "hpa-arrival-rate":
        return ArrivalRateHPA(params, _given(value), tuning.rate_window_seconds)
    if name == "hpa-queue-rate":
        return QueueRateHPA(params, _given(value))
    if name == "hpa-queue-compute-ratio":
        return QueueComputeRatioHPA(params, _given(value), ratio_path)
    if name == "hpa-queue-depth":
        return QueueDepthHPA(params, _given(value))
    if name == "kpa":
        return KpaController(params, _given(value), initial_ready)
    if name == "tritonscale":
        return TritonscaleController(
            params, tuning, use_headroom=True, name=name, slo_attainment=knob
        )
    if name == "tritonscale-no-headroom":
        return TritonscaleController(params, tuning, use_headroom=False, name=name)
    if name == "oracle":
        return OracleController(plan)
    raise ValueError(f"unknown policy {name!r}; choose from: {', '.join(POLICY_NAMES)} or all")


def _given(value: float | None) -> float:
    assert value is not None
    return value
