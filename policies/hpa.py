"""Model of the Kubernetes HPA controller for External metrics, ported from the Go source.

Sources (kubernetes/kubernetes, the HPA controller):

- ``pkg/controller/podautoscaler/horizontal.go``: ``reconcileAutoscaler`` (preamble),
  ``computeReplicasForMetrics`` (max over metrics, failure handling),
  ``stabilizeRecommendation`` and ``convertDesiredReplicasWithRules`` (no ``behavior``),
  ``stabilizeRecommendationWithBehaviors``, ``convertDesiredReplicasWithBehaviorRate`` and
  ``storeScaleEvent`` (with ``behavior``).
- ``pkg/controller/podautoscaler/replica_calculator.go``: ``GetExternalMetricReplicas`` (Value
  target, ready pods), ``GetExternalPerPodMetricReplicas`` (AverageValue target, status replicas),
  ``Tolerances.isWithin`` (KEP-4951 per-direction tolerance).
- ``pkg/apis/autoscaling/v2/defaults.go``: the ``behavior`` defaults.

Time is passed in (``now``, seconds on any monotonic scale); the controller keeps its own
recommendation log and scale-event log per direction, exactly like the Go controller keeps them
per HPA key. Comparisons keep Go's strictness (``Before`` is ``<``, ``After`` is ``>``). All
quantities are converted to int64 milli-units rounded up, as ``Quantity.MilliValue()`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

MetricKind = Literal["Value", "AverageValue"]
PolicyType = Literal["Pods", "Percent"]
SelectPolicy = Literal["Max", "Min", "Disabled"]

MAX_INT32 = 2**31 - 1
MIN_INT32 = -(2**31)
MAX_INT64 = 2**63 - 1

SCALE_UP_LIMIT_FACTOR = 2.0  # horizontal.go scaleUpLimitFactor
SCALE_UP_LIMIT_MINIMUM = 4.0  # horizontal.go scaleUpLimitMinimum
MAX_POLICY_PERIOD_SECONDS = 1800  # validation.go: periodSeconds must be in (0, 1800]


def milli_value(value: float) -> int:
    """``Quantity.MilliValue()``: ceil(value * 1000) as an int, computed exactly in decimal.

    The float goes through its shortest repr, so ``0.1`` is 100 milli (as ``"0.1"`` parses in
    Go), not 101 as ``math.ceil(0.1 * 1000)`` would give. Capped at the int64 range.
    """
    if not math.isfinite(value):
        raise ValueError(f"quantity must be finite, got {value!r}")
    milli = math.ceil(Decimal(repr(float(value))) * 1000)
    return max(-MAX_INT64 - 1, min(MAX_INT64, int(milli)))


@dataclass(frozen=True, slots=True)
class MetricTarget:
    """One ``spec.metrics[]`` entry of type External.

    kind: "Value" (the summed items are compared with ``target``, times the ready pods) or
    "AverageValue" (the sum is divided by ``target`` directly). ``target`` is in the metric's own
    unit and must be positive (``validateMetricTarget``). ``name``/``selector`` only feed the
    human-readable description used in reasons.
    """

    kind: MetricKind
    target: float
    name: str = "metric"
    selector: str = "<nil>"

    def __post_init__(self) -> None:
        if self.kind not in ("Value", "AverageValue"):
            raise ValueError(
                f"MetricTarget.kind must be 'Value' or 'AverageValue', got {self.kind!r}"
            )
        if not math.isfinite(self.target) or milli_value(self.target) <= 0:
            raise ValueError(
                f"MetricTarget.target for {self.name!r} must be positive, got {self.target!r}"
            )

    @property
    def target_milli(self) -> int:
        return milli_value(self.target)

    @property
    def description(self) -> str:
        """``fmt.Sprintf("external metric %s(%+v)", name, selector)`` (selector as given)."""
        return f"external metric {self.name}({self.selector})"


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """``HPAScalingPolicy``: at most ``value`` pods (or percent) per ``period_seconds``."""

    type: PolicyType
    value: int
    period_seconds: int

    def __post_init__(self) -> None:
        if self.type not in ("Pods", "Percent"):
            raise ValueError(f"ScalingPolicy.type must be 'Pods' or 'Percent', got {self.type!r}")
        if self.value <= 0:
            raise ValueError(f"ScalingPolicy.value must be greater than zero, got {self.value}")
        if not 0 < self.period_seconds <= MAX_POLICY_PERIOD_SECONDS:
            raise ValueError(
                f"ScalingPolicy.period_seconds must be in (0, 1800], got {self.period_seconds}"
            )


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """``HPAScalingRules`` for one direction. ``None`` fields take the API defaults.

    tolerance: KEP-4951 per-direction tolerance; ``None`` falls back to ``HPASpec.tolerance``.
    """

    stabilization_window_seconds: int | None = None
    select_policy: SelectPolicy = "Max"
    policies: tuple[ScalingPolicy, ...] | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.select_policy not in ("Max", "Min", "Disabled"):
            raise ValueError(
                "ScalingRules.select_policy must be 'Max', 'Min' or 'Disabled', got "
                f"{self.select_policy!r}"
            )
        window = self.stabilization_window_seconds
        if window is not None and not 0 <= window <= 3600:
            raise ValueError(
                f"ScalingRules.stabilization_window_seconds must be in [0, 3600], got {window}"
            )
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ValueError(f"ScalingRules.tolerance must be >= 0, got {self.tolerance}")


@dataclass(frozen=True, slots=True)
class Behavior:
    """``spec.behavior``; a missing direction gets the API defaults."""

    scale_up: ScalingRules | None = None
    scale_down: ScalingRules | None = None


DEFAULT_SCALE_UP_POLICIES = (
    ScalingPolicy("Pods", 4, 15),
    ScalingPolicy("Percent", 100, 15),
)
DEFAULT_SCALE_DOWN_POLICIES = (ScalingPolicy("Percent", 100, 15),)


@dataclass(frozen=True, slots=True)
class ResolvedRules:
    """Scaling rules with every default filled in (what the controller actually reads)."""

    stabilization_window_seconds: int
    select_policy: SelectPolicy
    policies: tuple[ScalingPolicy, ...]
    tolerance: float


def resolve_scale_up_rules(rules: ScalingRules | None, global_tolerance: float) -> ResolvedRules:
    """``GenerateHPAScaleUpRules``: window 0, Max of [4 Pods/15 s, 100 %/15 s]."""
    rules = rules or ScalingRules()
    return ResolvedRules(
        stabilization_window_seconds=(
            0 if rules.stabilization_window_seconds is None else rules.stabilization_window_seconds
        ),
        select_policy=rules.select_policy,
        policies=DEFAULT_SCALE_UP_POLICIES if rules.policies is None else rules.policies,
        tolerance=global_tolerance if rules.tolerance is None else rules.tolerance,
    )


def resolve_scale_down_rules(
    rules: ScalingRules | None, global_tolerance: float, downscale_stabilization_seconds: float
) -> ResolvedRules:
    """``GenerateHPAScaleDownRules`` + ``maybeInitScaleDownStabilizationWindow``.

    Window nil -> the controller flag (default 300 s, truncated to whole seconds as Go's
    ``int32(d.Seconds())`` does); Max of [100 %/15 s].
    """
    rules = rules or ScalingRules()
    window = rules.stabilization_window_seconds
    return ResolvedRules(
        stabilization_window_seconds=(
            int(downscale_stabilization_seconds) if window is None else window
        ),
        select_policy=rules.select_policy,
        policies=DEFAULT_SCALE_DOWN_POLICIES if rules.policies is None else rules.policies,
        tolerance=global_tolerance if rules.tolerance is None else rules.tolerance,
    )


@dataclass(frozen=True, slots=True)
class HPASpec:
    """The parts of a ``HorizontalPodAutoscaler`` spec (and controller flags) the model needs.

    tolerance: ``--horizontal-pod-autoscaler-tolerance`` (0.1).
    downscale_stabilization_seconds: ``--horizontal-pod-autoscaler-downscale-stabilization``
    (300 s); used without ``behavior`` and for a ``behavior`` whose scaleDown window is unset.
    """

    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    behavior: Behavior | None = None
    tolerance: float = 0.1
    downscale_stabilization_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"HPASpec.min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < 1:
            raise ValueError(f"HPASpec.max_replicas must be >= 1, got {self.max_replicas}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"HPASpec.min_replicas ({self.min_replicas}) must be <= max_replicas "
                f"({self.max_replicas})"
            )
        if not self.metrics:
            raise ValueError("HPASpec.metrics must name at least one MetricTarget")
        if not self.tolerance >= 0:
            raise ValueError(f"HPASpec.tolerance must be >= 0, got {self.tolerance}")
        if not self.downscale_stabilization_seconds >= 0:
            raise ValueError(
                "HPASpec.downscale_stabilization_seconds must be >= 0, got "
                f"{self.downscale_stabilization_seconds}"
            )


@dataclass(frozen=True, slots=True)
class Tolerances:
    """``replica_calculator.go Tolerances``; ``is_within`` is ``isWithin``."""

    scale_down: float
    scale_up: float

    def is_within(self, usage_ratio: float) -> bool:
        # NaN compares false both ways, so a NaN ratio (0/0) is never "within", as in Go.
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


@dataclass(slots=True)
class Recommendation:
    """``timestampedRecommendation``."""

    recommendation: int
    timestamp: float


@dataclass(slots=True)
class ScaleEvent:
    """``timestampedScaleEvent``: absolute replica change, time, and the reuse flag."""

    replica_change: int
    timestamp: float
    outdated: bool = False


@dataclass(frozen=True, slots=True)
class Condition:
    """One HPA status condition (``type``, ``status`` True/False, ``reason``, ``message``)."""

    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class MetricProposal:
    """What one metric proposed. ``replicas``/``current_milli`` are None when it failed.

    current_milli: ``status.currentMetrics[i].external.current`` in milli-units: the sum for a
    Value target, ceil(sum / statusReplicas) for an AverageValue target.
    """

    metric: MetricTarget
    replicas: int | None
    current_milli: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class HPAResult:
    """Outcome of one reconcile.

    desired_replicas: the replica count the controller leaves on ``scale.spec.replicas`` (equal to
    the input ``spec_replicas`` when it did not rescale). metric_replicas: the proposal before
    normalisation (None when the metrics could not be used). conditions: the three condition
    types as they stand after this reconcile (conditions persist across reconciles, as on the
    object).
    """

    desired_replicas: int
    rescale: bool
    reason: str
    metric_replicas: int | None
    able_to_scale: Condition | None
    scaling_active: Condition | None
    scaling_limited: Condition | None
    proposals: tuple[MetricProposal, ...]
    error: str | None


class MetricError(Exception):
    """A metric could not produce a replica proposal (the Go ``err`` path)."""


def external_metric_replicas(
    target: MetricTarget,
    items: Sequence[float] | None,
    spec_replicas: int,
    status_replicas: int,
    ready_pods: int,
    pod_count: int,
    tolerances: Tolerances,
) -> tuple[int, int]:
    """Replica proposal and current value (milli) for one External metric; raises MetricError.

    Value: ``GetExternalMetricReplicas`` + ``getUsageRatioReplicaCount`` (spec replicas, ready
    pods). AverageValue: ``GetExternalPerPodMetricReplicas`` (status replicas, no pod readiness).
    """
    where = f"unable to get external metric {target.name}/{target.selector}"
    if items is None:
        raise MetricError(f"{where}: the external metrics API request failed")
    if len(items) == 0:
        raise MetricError(f"{where}: no metrics returned from external metrics API")
    try:
        values = [milli_value(item) for item in items]
    except ValueError as exc:
        raise MetricError(f"{where}: {exc}") from exc
    target_milli = target.target_milli
    if target.kind == "Value":
        usage = 0
        for val in values:
            if val > 0 and usage > MAX_INT64 - val:
                usage = MAX_INT64
                break
            usage += val
        usage_ratio = usage / target_milli
        if spec_replicas != 0:
            if tolerances.is_within(usage_ratio):
                return spec_replicas, usage
            if pod_count == 0:
                raise MetricError(
                    "unable to calculate ready pods: no pods returned by selector while "
                    "calculating replica count"
                )
            replica_float = usage_ratio * ready_pods
            replicas = MAX_INT32 if replica_float > MAX_INT32 else math.ceil(replica_float)
        else:
            # Scale from zero (minReplicas 0, HPAScaleToZero): no tolerance, no pods.
            replicas = math.ceil(usage_ratio)
        return replicas, usage

    usage = 0
    for val in values:
        usage += val
        if usage < 0 or usage > MAX_INT64:  # Go: int64 overflow wraps negative -> MaxInt64
            usage = MAX_INT64
            break
    replicas = status_replicas
    denominator = float(target_milli) * float(status_replicas)
    if denominator == 0:
        usage_ratio = math.nan if usage == 0 else math.inf
    else:
        usage_ratio = usage / denominator
    if not tolerances.is_within(usage_ratio):
        result = math.ceil(usage / target_milli)
        replicas = MAX_INT32 if result > MAX_INT32 else result
    if float(usage) >= float(MAX_INT64):
        current = MAX_INT64
    elif status_replicas == 0:
        current = MAX_INT64  # Go divides by zero here (+Inf); report the saturated value
    else:
        current = math.ceil(usage / status_replicas)
    return replicas, current


def stabilize_recommendation(
    recommendations: list[Recommendation], now: float, window_seconds: float, desired: int
) -> int:
    """``stabilizeRecommendation`` (no behavior): max over the window, then log ``desired``.

    Mutates ``recommendations`` exactly like Go: the last entry older than the window is
    overwritten, otherwise the new entry is appended.
    """
    max_recommendation = desired
    cutoff = now - window_seconds
    old_index: int | None = None
    for i, rec in enumerate(recommendations):
        if rec.timestamp < cutoff:
            old_index = i
        elif rec.recommendation > max_recommendation:
            max_recommendation = rec.recommendation
    if old_index is not None:
        recommendations[old_index] = Recommendation(desired, now)
    else:
        recommendations.append(Recommendation(desired, now))
    return max_recommendation


def stabilize_recommendation_with_behaviors(
    recommendations: list[Recommendation],
    now: float,
    up_window_seconds: float,
    down_window_seconds: float,
    current: int,
    desired: int,
) -> tuple[int, str, str]:
    """``stabilizeRecommendationWithBehaviors``: clamp ``current`` into [min up, max down]."""
    up_recommendation = desired
    up_cutoff = now - up_window_seconds
    down_recommendation = desired
    down_cutoff = now - down_window_seconds
    old_index: int | None = None
    for i, rec in enumerate(recommendations):
        if rec.timestamp > up_cutoff:
            up_recommendation = min(rec.recommendation, up_recommendation)
        if rec.timestamp > down_cutoff:
            down_recommendation = max(rec.recommendation, down_recommendation)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = i
    recommendation = current
    if recommendation < up_recommendation:
        recommendation = up_recommendation
    if recommendation > down_recommendation:
        recommendation = down_recommendation
    if old_index is not None:
        recommendations[old_index] = Recommendation(desired, now)
    else:
        recommendations.append(Recommendation(desired, now))
    if desired >= current:
        return (
            recommendation,
            "ScaleUpStabilized",
            "recent recommendations were lower than current one, applying the lowest recent "
            "recommendation",
        )
    return (
        recommendation,
        "ScaleDownStabilized",
        "recent recommendations were higher than current one, applying the highest recent "
        "recommendation",
    )


def replicas_change_per_period(
    period_seconds: float, events: Sequence[ScaleEvent], now: float
) -> int:
    """``getReplicasChangePerPeriod``: sum of changes strictly inside the last period."""
    cutoff = now - period_seconds
    return sum(event.replica_change for event in events if event.timestamp > cutoff)


def calculate_scale_up_limit_with_scaling_rules(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ResolvedRules,
    now: float,
) -> int:
    """``calculateScaleUpLimitWithScalingRules``."""
    if rules.select_policy == "Disabled":
        return current
    use_min = rules.select_policy == "Min"
    result = MAX_INT32 if use_min else MIN_INT32
    for policy in rules.policies:
        added = replicas_change_per_period(policy.period_seconds, up_events, now)
        deleted = replicas_change_per_period(policy.period_seconds, down_events, now)
        period_start = current - added + deleted
        if policy.type == "Pods":
            proposed = period_start + policy.value
        else:
            proposed = math.ceil(float(period_start) * (1 + float(policy.value) / 100))
        result = min(result, proposed) if use_min else max(result, proposed)
    return result


def calculate_scale_down_limit_with_behaviors(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ResolvedRules,
    now: float,
) -> int:
    """``calculateScaleDownLimitWithBehaviors`` (Percent truncates toward zero, as int32())."""
    if rules.select_policy == "Disabled":
        return current
    use_min_change = rules.select_policy == "Min"
    result = MIN_INT32 if use_min_change else MAX_INT32
    for policy in rules.policies:
        added = replicas_change_per_period(policy.period_seconds, up_events, now)
        deleted = replicas_change_per_period(policy.period_seconds, down_events, now)
        period_start = current - added + deleted
        if policy.type == "Pods":
            proposed = period_start - policy.value
        else:
            proposed = int(float(period_start) * (1 - float(policy.value) / 100))
        result = max(result, proposed) if use_min_change else min(result, proposed)
    return result


def convert_desired_replicas_with_behavior_rate(
    *,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    up_rules: ResolvedRules,
    down_rules: ResolvedRules,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    now: float,
) -> tuple[int, str, str]:
    """``convertDesiredReplicasWithBehaviorRate``: rate-limit and clamp; (replicas, reason, msg)."""
    if desired > current:
        limit = calculate_scale_up_limit_with_scaling_rules(
            current, up_events, down_events, up_rules, now
        )
        limit = max(limit, current)
        if max_replicas > limit:
            maximum = limit
            reason = "ScaleUpLimit"
            message = "the desired replica count is increasing faster than the maximum scale rate"
        else:
            maximum = max_replicas
            reason = "TooManyReplicas"
            message = "the desired replica count is more than the maximum replica count"
        if desired > maximum:
            return maximum, reason, message
    elif desired < current:
        limit = calculate_scale_down_limit_with_behaviors(
            current, up_events, down_events, down_rules, now
        )
        limit = min(limit, current)
        if min_replicas < limit:
            minimum = limit
            reason = "ScaleDownLimit"
            message = "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            minimum = min_replicas
            reason = "TooFewReplicas"
            message = "the desired replica count is less than the minimum replica count"
        if desired < minimum:
            return minimum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def calculate_scale_up_limit(current: int) -> int:
    """``calculateScaleUpLimit``: int32(max(2 * current, 4)) (used without behavior)."""
    return int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))


def convert_desired_replicas_with_rules(
    current: int, desired: int, min_replicas: int, max_replicas: int
) -> tuple[int, str, str]:
    """``convertDesiredReplicasWithRules`` (no behavior); returns (replicas, reason, message)."""
    scale_up_limit = calculate_scale_up_limit(current)
    if max_replicas > scale_up_limit:
        maximum = scale_up_limit
        reason = "ScaleUpLimit"
        message = "the desired replica count is increasing faster than the maximum scale rate"
    else:
        maximum = max_replicas
        reason = "TooManyReplicas"
        message = "the desired replica count is more than the maximum replica count"
    if desired < min_replicas:
        return (
            min_replicas,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    if desired > maximum:
        return maximum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def store_scale_event(
    events: list[ScaleEvent], longest_period_seconds: float, replica_change: int, now: float
) -> None:
    """``markScaleEventsOutdated`` + ``storeScaleEvent`` for one direction's log."""
    cutoff = now - longest_period_seconds
    old_index: int | None = None
    for i, event in enumerate(events):
        if event.timestamp < cutoff:
            event.outdated = True
        if event.outdated:
            old_index = i
    new_event = ScaleEvent(replica_change, now, False)
    if old_index is not None:
        events[old_index] = new_event
    else:
        events.append(new_event)


@dataclass(slots=True)
class _Conditions:
    by_type: dict[str, Condition] = field(default_factory=dict)

    def set(self, type_: str, status: bool, reason: str, message: str) -> None:
        self.by_type[type_] = Condition(type_, status, reason, message)

    def get(self, type_: str) -> Condition | None:
        return self.by_type.get(type_)


class HPAController:
    """One HPA object as the controller sees it, reconciled by the caller every sync period.

    The caller drives time: call ``reconcile`` every 15 s (``--horizontal-pod-autoscaler-sync-
    period``) with the scale subresource's spec/status replicas, the ready pod count and, per
    metric in ``spec.metrics`` order, the list of item values the external metrics API returned
    (None when the request failed). The controller keeps the recommendation log and the scale
    events, so one instance models one HPA across time.
    """

    def __init__(self, spec: HPASpec) -> None:
        self.spec = spec
        self._recommendations: list[Recommendation] | None = None
        self._scale_up_events: list[ScaleEvent] = []
        self._scale_down_events: list[ScaleEvent] = []
        self._conditions = _Conditions()
        self.last_scale_time: float | None = None
        behavior = spec.behavior
        self._up_rules: ResolvedRules | None = None
        self._down_rules: ResolvedRules | None = None
        if behavior is not None:
            self._up_rules = resolve_scale_up_rules(behavior.scale_up, spec.tolerance)
            self._down_rules = resolve_scale_down_rules(
                behavior.scale_down, spec.tolerance, spec.downscale_stabilization_seconds
            )

    @property
    def tolerances(self) -> Tolerances:
        """``tolerancesForHpa``: per-direction KEP-4951 values, else the global tolerance."""
        if self._up_rules is None or self._down_rules is None:
            return Tolerances(self.spec.tolerance, self.spec.tolerance)
        return Tolerances(scale_down=self._down_rules.tolerance, scale_up=self._up_rules.tolerance)

    @property
    def recommendations(self) -> tuple[Recommendation, ...]:
        return tuple(self._recommendations or ())

    def seed_history(
        self,
        *,
        recommendations: Sequence[Recommendation] = (),
        scale_up_events: Sequence[ScaleEvent] = (),
        scale_down_events: Sequence[ScaleEvent] = (),
    ) -> None:
        """Pre-load the controller's logs (tests port Go cases that start with a history)."""
        if recommendations:
            self._recommendations = [
                Recommendation(r.recommendation, r.timestamp) for r in recommendations
            ]
        self._scale_up_events = [
            ScaleEvent(e.replica_change, e.timestamp, e.outdated) for e in scale_up_events
        ]
        self._scale_down_events = [
            ScaleEvent(e.replica_change, e.timestamp, e.outdated) for e in scale_down_events
        ]

    def reconcile(
        self,
        now: float,
        spec_replicas: int,
        status_replicas: int,
        ready_pods: int,
        metric_values: Sequence[Sequence[float] | None],
        pod_count: int | None = None,
    ) -> HPAResult:
        """One ``reconcileAutoscaler`` pass; returns what the controller decided.

        pod_count: pods matched by the scale selector (any phase); defaults to ``status_replicas``.
        Only its being zero matters (Value targets then fail with "no pods returned by selector").
        """
        spec = self.spec
        if len(metric_values) != len(spec.metrics):
            raise ValueError(
                f"metric_values has {len(metric_values)} entries but HPASpec.metrics has "
                f"{len(spec.metrics)}; pass one list (or None) per metric, in order"
            )
        if spec_replicas < 0 or status_replicas < 0 or ready_pods < 0:
            raise ValueError("spec_replicas, status_replicas and ready_pods must be >= 0")
        conditions = self._conditions
        conditions.set(
            "AbleToScale",
            True,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        )
        current = spec_replicas
        if self._recommendations is None:  # recordInitialRecommendation
            self._recommendations = [Recommendation(current, now)]
        min_replicas = spec.min_replicas
        rescale = True
        rescale_reason = ""
        metric_replicas: int | None = None
        proposals: tuple[MetricProposal, ...] = ()
        error: str | None = None

        if current == 0 and min_replicas != 0:
            desired = 0
            rescale = False
            conditions.set(
                "ScalingActive",
                False,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            )
        elif current > spec.max_replicas:
            rescale_reason = "Current number of replicas above Spec.MaxReplicas"
            desired = spec.max_replicas
        elif current < min_replicas:
            rescale_reason = "Current number of replicas below Spec.MinReplicas"
            desired = min_replicas
        else:
            proposals, combined, metric_name, error = self._compute_replicas_for_metrics(
                spec_replicas,
                status_replicas,
                ready_pods,
                status_replicas if pod_count is None else pod_count,
                metric_values,
            )
            if combined == -1:
                return HPAResult(
                    desired_replicas=current,
                    rescale=False,
                    reason="",
                    metric_replicas=None,
                    able_to_scale=conditions.get("AbleToScale"),
                    scaling_active=conditions.get("ScalingActive"),
                    scaling_limited=conditions.get("ScalingLimited"),
                    proposals=proposals,
                    error=error,
                )
            metric_replicas = combined
            desired = 0
            rescale_metric = ""
            if combined > desired:
                desired = combined
                rescale_metric = metric_name
            if desired > current:
                rescale_reason = f"{rescale_metric} above target"
            if desired < current:
                rescale_reason = "All metrics below target"
            if spec.behavior is None:
                desired = self._normalize(now, current, desired, min_replicas)
            else:
                desired = self._normalize_with_behaviors(now, current, desired, min_replicas)
            rescale = desired != current

        if rescale:
            conditions.set(
                "AbleToScale",
                True,
                "SucceededRescale",
                f"the HPA controller was able to update the target scale to {desired}",
            )
            self._store_scale_event(current, desired, now)
            self.last_scale_time = now
        else:
            desired = current
        return HPAResult(
            desired_replicas=desired,
            rescale=rescale,
            reason=rescale_reason,
            metric_replicas=metric_replicas,
            able_to_scale=conditions.get("AbleToScale"),
            scaling_active=conditions.get("ScalingActive"),
            scaling_limited=conditions.get("ScalingLimited"),
            proposals=proposals,
            error=error,
        )

    def _compute_replicas_for_metrics(
        self,
        spec_replicas: int,
        status_replicas: int,
        ready_pods: int,
        pod_count: int,
        metric_values: Sequence[Sequence[float] | None],
    ) -> tuple[tuple[MetricProposal, ...], int, str, str | None]:
        """``computeReplicasForMetrics``: max over valid metrics; -1 when nothing may change."""
        tolerances = self.tolerances
        replicas = 0
        metric = ""
        invalid_count = 0
        first_error: str | None = None
        first_cause = ""
        proposals: list[MetricProposal] = []
        for target, items in zip(self.spec.metrics, metric_values, strict=True):
            try:
                proposal, current_milli = external_metric_replicas(
                    target,
                    items,
                    spec_replicas,
                    status_replicas,
                    ready_pods,
                    pod_count,
                    tolerances,
                )
            except MetricError as exc:
                if target.kind == "AverageValue":
                    message = f"failed to get {target.name} external metric: {exc}"
                else:
                    message = f"failed to get external metric {target.name}: {exc}"
                proposals.append(MetricProposal(target, None, None, message))
                if invalid_count <= 0:
                    first_error = message
                    first_cause = str(exc)
                invalid_count += 1
                continue
            proposals.append(MetricProposal(target, proposal, current_milli, None))
            if replicas == 0 or proposal > replicas:
                replicas = proposal
                metric = target.description
        error: str | None = None
        if first_error is not None:
            error = (
                f"invalid metrics ({invalid_count} invalid out of {len(self.spec.metrics)}), "
                f"first error is: {first_error}"
            )
        if invalid_count >= len(self.spec.metrics) or (
            invalid_count > 0 and replicas < spec_replicas
        ):
            self._conditions.set(
                "ScalingActive",
                False,
                "FailedGetExternalMetric",
                f"the HPA was unable to compute the replica count: {first_cause}",
            )
            return tuple(proposals), -1, "", error
        self._conditions.set(
            "ScalingActive",
            True,
            "ValidMetricFound",
            f"the HPA was able to successfully calculate a replica count from {metric}",
        )
        return tuple(proposals), replicas, metric, error

    def _normalize(self, now: float, current: int, desired: int, min_replicas: int) -> int:
        """``normalizeDesiredReplicas`` (no behavior)."""
        assert self._recommendations is not None
        stabilized = stabilize_recommendation(
            self._recommendations, now, self.spec.downscale_stabilization_seconds, desired
        )
        if stabilized != desired:
            self._conditions.set(
                "AbleToScale",
                True,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest "
                "recent recommendation",
            )
        else:
            self._conditions.set(
                "AbleToScale", True, "ReadyForNewScale", "recommended size matches current size"
            )
        result, reason, message = convert_desired_replicas_with_rules(
            current, stabilized, min_replicas, self.spec.max_replicas
        )
        self._conditions.set("ScalingLimited", result != stabilized, reason, message)
        return result

    def _normalize_with_behaviors(
        self, now: float, current: int, desired: int, min_replicas: int
    ) -> int:
        """``normalizeDesiredReplicasWithBehaviors``."""
        assert self._recommendations is not None
        assert self._up_rules is not None and self._down_rules is not None
        stabilized, reason, message = stabilize_recommendation_with_behaviors(
            self._recommendations,
            now,
            self._up_rules.stabilization_window_seconds,
            self._down_rules.stabilization_window_seconds,
            current,
            desired,
        )
        if stabilized != desired:
            self._conditions.set("AbleToScale", True, reason, message)
        else:
            self._conditions.set(
                "AbleToScale", True, "ReadyForNewScale", "recommended size matches current size"
            )
        result, reason, message = convert_desired_replicas_with_behavior_rate(
            current=current,
            desired=stabilized,
            min_replicas=min_replicas,
            max_replicas=self.spec.max_replicas,
            up_rules=self._up_rules,
            down_rules=self._down_rules,
            up_events=self._scale_up_events,
            down_events=self._scale_down_events,
            now=now,
        )
        self._conditions.set("ScalingLimited", result != stabilized, reason, message)
        return result

    def _store_scale_event(self, previous: int, new: int, now: float) -> None:
        """``storeScaleEvent``: only with ``behavior``; events kept per direction."""
        if self._up_rules is None or self._down_rules is None:
            return
        if new > previous:
            longest = max((p.period_seconds for p in self._up_rules.policies), default=0)
            store_scale_event(self._scale_up_events, longest, new - previous, now)
        else:
            longest = max((p.period_seconds for p in self._down_rules.policies), default=0)
            store_scale_event(self._scale_down_events, longest, previous - new, now)
