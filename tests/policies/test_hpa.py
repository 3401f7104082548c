"""Table tests for the HPA controller model (policies/hpa.py).

Expected values come from the HPA controller's Go source and from Kubernetes' own tests in
kubernetes/kubernetes
``pkg/controller/podautoscaler/horizontal_test.go`` (TestConvertDesiredReplicasWithRules,
TestNormalizeDesiredReplicas, TestScalingWithRules, TestStoreScaleEvents,
TestNormalizeDesiredReplicasWithBehavior, TestScaleUpCMExternal); each ported case keeps its Go
name. Go builds event times as ``time.Now() - age``; here ``NOW - age`` in seconds.
"""

from __future__ import annotations

import pytest

from policies.hpa import (
    Behavior,
    HPAController,
    HPASpec,
    MetricTarget,
    Recommendation,
    ResolvedRules,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    milli_value,
    replicas_change_per_period,
    resolve_scale_down_rules,
    resolve_scale_up_rules,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)

NOW = 10_000.0


def average(target: float) -> MetricTarget:
    return MetricTarget("AverageValue", target, name="queue")


def value(target: float) -> MetricTarget:
    return MetricTarget("Value", target, name="rate")


# --- milli-unit conversion (Quantity.MilliValue, reference §1.3) -------------------------------


@pytest.mark.parametrize(
    ("quantity", "milli"),
    [(0.0001, 1), (1.5, 1500), (2, 2000), (12000, 12_000_000), (0.1, 100), (0.08, 80), (0, 0)],
)
def test_milli_value_rounds_up_like_quantity(quantity: float, milli: int) -> None:
    assert milli_value(quantity) == milli


# --- per-metric formulas: reference worked examples and Kubernetes cases -----------------------


@pytest.mark.parametrize(
    ("name", "target", "items", "spec", "status", "ready", "want", "current_milli"),
    [
        # reference §3.3 worked examples
        ("AverageValue 42+43 avg 30", average(30), [42, 43], 2, 2, 2, 3, 42500),
        ("Value 100/50 with 3 ready", value(50), [100], 3, 3, 3, 6, 100_000),
        ("Value 105/100 within tolerance", value(100), [105], 4, 4, 4, 4, 105_000),
        # horizontal_test.go TestScaleUpCMExternal: target 6666m, level 8600m, 3 replicas
        ("TestScaleUpCMExternal", value(6.666), [8.6], 3, 3, 3, 4, 8600),
        # Value multiplies by READY pods, not spec replicas (reference §3.5)
        ("Value uses ready pods", value(50), [150], 4, 4, 2, 6, 150_000),
        # AverageValue ignores readiness and uses status.replicas for the tolerance check
        (
            "AverageValue within tolerance keeps status replicas",
            average(30),
            [42, 43],
            5,
            3,
            1,
            3,
            28334,
        ),
        # each item is rounded up to milli before summing: 1m + 1m = 2m vs target 1m
        ("milli rounding per item", value(0.001), [0.0004, 0.0004], 2, 2, 2, 4, 2),
    ],
)
def test_metric_proposal(
    name: str,
    target: MetricTarget,
    items: list[float],
    spec: int,
    status: int,
    ready: int,
    want: int,
    current_milli: int,
) -> None:
    controller = HPAController(HPASpec(1, 100, (target,)))
    result = controller.reconcile(NOW, spec, status, ready, [items])
    (proposal,) = result.proposals
    assert proposal.replicas == want, name
    assert proposal.current_milli == current_milli, name
    assert result.metric_replicas == want


def test_value_target_scales_from_zero_without_tolerance() -> None:
    # getUsageRatioReplicaCount with currentReplicas == 0 (HPAScaleToZero): ceil(ratio).
    controller = HPAController(HPASpec(0, 10, (value(10),)))
    result = controller.reconcile(NOW, 0, 0, 0, [[10.5]])
    assert result.proposals[0].replicas == 2
    assert result.desired_replicas == 2


# --- tolerance: global and KEP-4951 per direction ----------------------------------------------


@pytest.mark.parametrize(
    ("behavior", "items", "want"),
    [
        (None, [108], 4),  # 1.08 within the global 0.1
        (Behavior(scale_up=ScalingRules(tolerance=0.05)), [108], 5),  # ceil(1.08 * 4)
        (None, [85], 4),  # 0.85 below 0.9: the proposal is ceil(0.85 * 4) = 4 anyway
        (None, [70], 3),  # ceil(0.7 * 4) = 3
        (Behavior(scale_down=ScalingRules(tolerance=0.35)), [70], 4),  # 0.7 within [0.65, ..]
    ],
)
def test_tolerances(behavior: Behavior | None, items: list[float], want: int) -> None:
    controller = HPAController(HPASpec(1, 10, (value(100),), behavior=behavior))
    result = controller.reconcile(NOW, 4, 4, 4, [items])
    assert result.proposals[0].replicas == want


# --- preamble (reference §3.2) -----------------------------------------------------------------


def test_zero_replicas_with_nonzero_min_disables_scaling() -> None:
    controller = HPAController(HPASpec(1, 10, (value(1),)))
    result = controller.reconcile(NOW, 0, 0, 0, [[100]])
    assert (result.desired_replicas, result.rescale) == (0, False)
    assert result.scaling_active is not None
    assert result.scaling_active.reason == "ScalingDisabled"
    assert not result.scaling_active.status


@pytest.mark.parametrize(
    ("current", "want", "reason"),
    [
        (12, 10, "Current number of replicas above Spec.MaxReplicas"),
        (1, 2, "Current number of replicas below Spec.MinReplicas"),
    ],
)
def test_out_of_range_replicas_are_clamped_without_metrics(
    current: int, want: int, reason: str
) -> None:
    controller = HPAController(HPASpec(2, 10, (value(1),)))
    result = controller.reconcile(NOW, current, current, current, [None])  # metric not consulted
    assert (result.desired_replicas, result.rescale, result.reason) == (want, True, reason)
    assert result.proposals == ()


# --- several metrics and failure handling (reference §3.6) --------------------------------------


def test_several_metrics_take_the_max() -> None:
    controller = HPAController(HPASpec(1, 20, (value(50), average(10))))
    result = controller.reconcile(NOW, 2, 2, 2, [[100], [75]])
    assert [p.replicas for p in result.proposals] == [4, 8]
    assert result.metric_replicas == 8
    assert result.desired_replicas == 4  # then limited to max(2 * 2, 4) without behavior
    assert result.reason == "external metric queue(<nil>) above target"


@pytest.mark.parametrize(
    ("values", "desired", "rescale", "has_error"),
    [
        ([None, None], 5, False, True),  # all invalid: no change
        ([[], [10]], 5, False, True),  # empty list is an error; valid one would scale down
        ([None, [100]], 10, True, True),  # one invalid, valid one scales up: proceed
        ([[2], [10]], 1, True, False),  # all valid: scale down to max(1, 1)
    ],
)
def test_invalid_metrics_block_scale_down_only(
    values: list[list[float] | None], desired: int, rescale: bool, has_error: bool
) -> None:
    spec = HPASpec(1, 20, (value(10), average(10)), downscale_stabilization_seconds=0)
    controller = HPAController(spec)
    controller.seed_history(recommendations=[Recommendation(5, NOW - 1000)])
    result = controller.reconcile(NOW, 5, 5, 5, values)
    assert (result.desired_replicas, result.rescale) == (desired, rescale)
    assert (result.error is not None) == has_error
    assert result.scaling_active is not None
    if not rescale and has_error:
        assert result.scaling_active.reason == "FailedGetExternalMetric"
        assert not result.scaling_active.status
    else:
        assert result.scaling_active.reason == "ValidMetricFound"


def test_error_message_counts_invalid_metrics() -> None:
    controller = HPAController(HPASpec(1, 20, (value(10), average(10))))
    result = controller.reconcile(NOW, 5, 5, 5, [None, []])
    assert result.error is not None
    assert result.error.startswith("invalid metrics (2 invalid out of 2), first error is:")


# --- normalisation without behavior (reference §3.7) -------------------------------------------


# horizontal_test.go TestConvertDesiredReplicasWithRules
@pytest.mark.parametrize(
    ("current", "desired", "min_r", "max_r", "want", "condition"),
    [
        (5, 7, 3, 8, 7, "DesiredWithinRange"),
        (3, 1, 2, 8, 2, "TooFewReplicas"),
        (1, 0, 0, 10, 0, "DesiredWithinRange"),
        (20, 1000, 1, 10, 10, "TooManyReplicas"),
        (3, 1000, 1, 2000, 6, "ScaleUpLimit"),  # calculateScaleUpLimit(3) = max(6, 4)
        (1, 1000, 1, 2000, 4, "ScaleUpLimit"),  # scaleUpLimitMinimum = 4
    ],
)
def test_convert_desired_replicas_with_rules(
    current: int, desired: int, min_r: int, max_r: int, want: int, condition: str
) -> None:
    assert convert_desired_replicas_with_rules(current, desired, min_r, max_r)[:2] == (
        want,
        condition,
    )


# horizontal_test.go TestNormalizeDesiredReplicas (stabilizeRecommendation, 5 min window)
@pytest.mark.parametrize(
    ("name", "recs", "desired", "want", "log_length"),
    [
        ("empty log", [], 5, 5, 1),
        ("stabilize", [(4, 120), (5, 60)], 3, 5, 3),
        ("no stabilize", [(1, 120), (2, 60)], 3, 3, 3),
        ("no stabilize - old recommendations", [(10, 600), (9, 540)], 3, 3, 2),
        ("stabilize - old recommendations", [(10, 600), (4, 60), (5, 120), (9, 540)], 3, 5, 4),
    ],
)
def test_stabilize_recommendation(
    name: str, recs: list[tuple[int, float]], desired: int, want: int, log_length: int
) -> None:
    log = [Recommendation(r, NOW - age) for r, age in recs]
    assert stabilize_recommendation(log, NOW, 300.0, desired) == want, name
    assert len(log) == log_length, name


def test_downscale_stabilisation_over_time_includes_the_window_edge() -> None:
    controller = HPAController(HPASpec(1, 20, (value(100),)))
    first = controller.reconcile(0.0, 10, 10, 10, [[50]])  # wants 5; initial rec 10 @ 0
    assert (first.desired_replicas, first.rescale) == (10, False)
    assert first.able_to_scale is not None
    assert first.able_to_scale.reason == "ScaleDownStabilized"
    at_edge = controller.reconcile(300.0, 10, 10, 10, [[50]])  # rec @ 0 is not Before(cutoff)
    assert at_edge.desired_replicas == 10
    after = controller.reconcile(300.5, 10, 10, 10, [[50]])
    assert (after.desired_replicas, after.rescale) == (5, True)
    assert after.reason == "All metrics below target"
    assert after.able_to_scale is not None
    assert after.able_to_scale.reason == "SucceededRescale"


def test_scale_up_limit_without_behavior() -> None:
    controller = HPAController(HPASpec(1, 100, (value(10),)))
    result = controller.reconcile(NOW, 1, 1, 1, [[100]])
    assert result.metric_replicas == 10
    assert result.desired_replicas == 4
    assert result.scaling_limited is not None
    assert (result.scaling_limited.status, result.scaling_limited.reason) == (True, "ScaleUpLimit")


# --- normalisation with behavior ----------------------------------------------------------------


def rules(
    pods: int, pods_period: int, percent: int, percent_period: int, window: int
) -> ScalingRules:
    """horizontal_test.go generateScalingRules (selectPolicy Max; zero value -> no policy)."""
    policies: list[ScalingPolicy] = []
    if pods:
        policies.append(ScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(stabilization_window_seconds=window, policies=tuple(policies))


def uniform_events(changes: list[int], period: int) -> list[ScaleEvent]:
    """horizontal_test.go generateEventsUniformDistribution: centred in equal segments."""
    segment = period / len(changes)
    return [
        ScaleEvent(change, NOW - int(period - segment * (i + 1) + segment / 2))
        for i, change in enumerate(changes)
    ]


UP = "up"
DOWN = "down"

# horizontal_test.go TestScalingWithRules (convertDesiredReplicasWithBehaviorRate)
SCALING_WITH_RULES = [
    (
        "prenormalized desired replicas within range",
        None,
        None,
        None,
        3,
        8,
        5,
        7,
        7,
        "DesiredWithinRange",
    ),
    (
        "prenormalized desired replicas < minReplicas",
        None,
        None,
        None,
        2,
        8,
        3,
        1,
        2,
        "TooFewReplicas",
    ),
    ("within range when minReplicas is 0", None, None, None, 0, 10, 1, 0, 0, "DesiredWithinRange"),
    (
        "maxReplicas is the limit because maxReplicas < scaleUpLimit",
        None,
        None,
        None,
        1,
        10,
        20,
        1000,
        10,
        "TooManyReplicas",
    ),
    (
        "desired replica count is more than the maximum replica count",
        None,
        None,
        None,
        100,
        150,
        100,
        1000,
        150,
        "TooManyReplicas",
    ),
    (
        "scaleUpLimit < maxReplicas with user policies",
        rules(0, 0, 1, 60, 0),
        None,
        None,
        1,
        2000,
        3,
        1000,
        4,
        "ScaleUpLimit",
    ),
    (
        "scaleDownLimit > minReplicas with user defined policies",
        None,
        rules(20, 60, 0, 0, 0),
        None,
        3,
        2000,
        1000,
        3,
        980,
        "ScaleDownLimit",
    ),
    ("scaleUp with default behavior", None, None, None, 1, 1000, 10, 50, 20, "ScaleUpLimit"),
    (
        "scaleUp with pods policy larger than percent policy",
        rules(100, 60, 100, 60, 0),
        None,
        None,
        1,
        1000,
        10,
        500,
        110,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy larger than pods policy",
        rules(2, 60, 100, 60, 0),
        None,
        None,
        1,
        1000,
        10,
        500,
        20,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large pod policy",
        rules(100, 60, 0, 0, 0),
        None,
        None,
        1,
        1000,
        10,
        50,
        50,
        "DesiredWithinRange",
    ),
    (
        "scaleUp with pod policy limitation",
        rules(30, 60, 0, 0, 0),
        None,
        None,
        1,
        1000,
        10,
        50,
        40,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy limitation",
        rules(0, 0, 200, 60, 0),
        None,
        None,
        1,
        1000,
        10,
        50,
        30,
        "ScaleUpLimit",
    ),
    (
        "scaleDown with percent policy larger than pod policy",
        None,
        rules(20, 60, 1, 60, 300),
        None,
        1,
        1000,
        100,
        2,
        80,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with pod policy larger than percent policy",
        None,
        rules(2, 60, 1, 60, 300),
        None,
        1,
        1000,
        100,
        2,
        98,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large pod policy",
        None,
        rules(100, 60, 0, 0, 300),
        None,
        1,
        1000,
        10,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large percent policy",
        None,
        rules(0, 0, 100, 60, 300),
        None,
        5,
        1000,
        10,
        2,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown with pod policy limitation",
        None,
        rules(5, 60, 0, 0, 300),
        None,
        1,
        1000,
        10,
        2,
        5,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy limitation",
        None,
        rules(0, 0, 50, 60, 300),
        None,
        1,
        1000,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleUp with MaxReplicas limitation with large pod policy and events",
        rules(300, 60, 0, 0, 0),
        None,
        (UP, [1, 5, 9]),
        1,
        200,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "scaleUp with MaxReplicas limitation with large percent policy and events",
        rules(0, 0, 10000, 60, 0),
        None,
        (UP, [1, 5, 9]),
        1,
        200,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "scaleUp with currentReplicas limitation with a lot of recent scale up events",
        rules(5, 120, 0, 0, 0),
        None,
        (UP, [1, 5, 9]),
        1,
        1000,
        100,
        500,
        100,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with pod policy and previous scale up events",
        rules(150, 120, 0, 0, 0),
        None,
        (UP, [1, 5, 9]),
        1,
        1000,
        100,
        500,
        235,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy and previous scale up events",
        rules(0, 0, 200, 120, 0),
        None,
        (UP, [1, 5, 9]),
        1,
        1000,
        100,
        500,
        255,
        "ScaleUpLimit",
    ),
    (
        "scaleDown with default policy and previous events",
        None,
        None,
        (DOWN, [1, 5, 9]),
        1,
        1000,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleDown with MinReplicas=nil limitation with large pod policy and previous events",
        None,
        rules(115, 120, 0, 0, 300),
        (DOWN, [1, 5, 9]),
        1,
        1000,
        100,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "scaleDown with MinReplicas limitation with large pod policy and previous events",
        None,
        rules(130, 120, 0, 0, 300),
        (DOWN, [1, 5, 9]),
        5,
        1000,
        100,
        0,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown with MinReplicas limitation with large percent policy and previous events",
        None,
        rules(0, 0, 100, 120, 300),
        (DOWN, [1, 5, 9]),
        5,
        1000,
        100,
        2,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown with pod policy limitation and previous events",
        None,
        rules(5, 120, 0, 0, 300),
        (DOWN, [1, 5, 9]),
        1,
        1000,
        100,
        2,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy limitation and previous events",
        None,
        rules(0, 0, 50, 120, 300),
        (DOWN, [2, 4, 6]),
        1,
        1000,
        100,
        0,
        56,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with previous events preventing further scale down",
        None,
        rules(0, 0, 10, 120, 300),
        (DOWN, [10, 10, 10]),
        1,
        1000,
        100,
        0,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with with previous events still allowing more scale down",
        None,
        rules(0, 0, 1000, 120, 300),
        (DOWN, [10, 10, 10]),
        1,
        1000,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "check 'outdated' flag for events for one behavior for up",
        rules(1000, 60, 0, 0, 0),
        None,
        (UP, [8, 12, 9, 11]),
        1,
        1000,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "events not marked 'outdated' for two different policies for up",
        rules(1000, 120, 100, 60, 0),
        None,
        (UP, [8, 12, 9, 11]),
        1,
        1000,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
    (
        "check 'outdated' flag for events for one behavior for down",
        None,
        rules(1000, 60, 0, 0, 300),
        (DOWN, [8, 12, 9, 11]),
        1,
        1000,
        100,
        5,
        5,
        "DesiredWithinRange",
    ),
]


@pytest.mark.parametrize(
    ("name", "up", "down", "events", "min_r", "max_r", "current", "desired", "want", "condition"),
    SCALING_WITH_RULES,
    ids=[case[0] for case in SCALING_WITH_RULES],
)
def test_scaling_with_rules(
    name: str,
    up: ScalingRules | None,
    down: ScalingRules | None,
    events: tuple[str, list[int]] | None,
    min_r: int,
    max_r: int,
    current: int,
    desired: int,
    want: int,
    condition: str,
) -> None:
    up_events: list[ScaleEvent] = []
    down_events: list[ScaleEvent] = []
    if events is not None:
        direction, changes = events
        (up_events if direction == UP else down_events).extend(uniform_events(changes, 120))
    replicas, reason, _ = convert_desired_replicas_with_behavior_rate(
        current=current,
        desired=desired,
        min_replicas=min_r,
        max_replicas=max_r,
        up_rules=resolve_scale_up_rules(up, 0.1),
        down_rules=resolve_scale_down_rules(down, 0.1, 300.0),
        up_events=up_events,
        down_events=down_events,
        now=NOW,
    )
    assert (replicas, reason) == (want, condition)


def test_select_policy_min_and_disabled() -> None:
    # horizontal_test.go TestCalculateScaleUpLimitWithScalingRules / ...DownLimitWithBehaviors:
    # Min of [2 Pods, 50 %] from 1 replica -> 2 (up); from 5 -> 3 (down, max of 3 and 2).
    policies = (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60))
    min_rules = ResolvedRules(300, "Min", policies, 0.1)
    up = convert_desired_replicas_with_behavior_rate(
        current=1,
        desired=100,
        min_replicas=1,
        max_replicas=1000,
        up_rules=min_rules,
        down_rules=min_rules,
        up_events=[],
        down_events=[],
        now=NOW,
    )
    down = convert_desired_replicas_with_behavior_rate(
        current=5,
        desired=1,
        min_replicas=1,
        max_replicas=1000,
        up_rules=min_rules,
        down_rules=min_rules,
        up_events=[],
        down_events=[],
        now=NOW,
    )
    assert up[:2] == (2, "ScaleUpLimit")
    assert down[:2] == (3, "ScaleDownLimit")
    disabled = ResolvedRules(0, "Disabled", policies, 0.1)
    held = convert_desired_replicas_with_behavior_rate(
        current=5,
        desired=1,
        min_replicas=1,
        max_replicas=1000,
        up_rules=min_rules,
        down_rules=disabled,
        up_events=[],
        down_events=[],
        now=NOW,
    )
    assert held[:2] == (5, "ScaleDownLimit")


# horizontal_test.go TestStoreScaleEvents (events older than the longest period are reused)
@pytest.mark.parametrize(
    ("name", "scaling", "previous", "change_in_60s", "expected"),
    [
        (
            "one outdated entry to be replaced with behavior",
            rules(10, 60, 100, 60, 0),
            [(7, 61)],
            0,
            [(5, False)],
        ),
        (
            "one actual entry to be not touched with behavior",
            rules(10, 60, 100, 60, 0),
            [(7, 58)],
            7,
            [(7, False), (5, False)],
        ),
        (
            "two entries, one of them to be replaced",
            rules(10, 60, 0, 0, 0),
            [(7, 61), (6, 59)],
            6,
            [(5, False), (6, False)],
        ),
        (
            "replace one entry, use policies with different periods",
            rules(10, 60, 100, 30, 0),
            [(8, 29), (6, 59), (7, 61), (9, 61)],
            14,
            [(8, False), (6, False), (7, True), (5, False)],
        ),
        (
            "two entries, both actual",
            rules(10, 120, 100, 30, 0),
            [(7, 58), (6, 59)],
            13,
            [(7, False), (6, False), (5, False)],
        ),
    ],
)
def test_store_scale_events(
    name: str,
    scaling: ScalingRules,
    previous: list[tuple[int, float]],
    change_in_60s: int,
    expected: list[tuple[int, bool]],
) -> None:
    events = [ScaleEvent(change, NOW - age) for change, age in previous]
    assert replicas_change_per_period(60, events, NOW) == change_in_60s
    resolved = resolve_scale_up_rules(scaling, 0.1)
    longest = max(p.period_seconds for p in resolved.policies)
    store_scale_event(events, longest, 5, NOW)
    assert [(e.replica_change, e.outdated) for e in events] == expected, name


# horizontal_test.go TestNormalizeDesiredReplicasWithBehavior (stabilizeRecommendationWith...)
# Windows not set in a Go case are the struct's zero value, 0.
@pytest.mark.parametrize(
    ("name", "recs", "current", "desired", "want", "log", "up_window", "down_window"),
    [
        ("empty recommendations for scaling down", [], 100, 5, 5, [5], 0, 0),
        ("simple scale down stabilization", [(4, 120), (5, 60)], 100, 3, 5, [4, 5, 3], 0, 180),
        ("simple scale up stabilization", [(4, 120), (5, 60)], 1, 7, 4, [4, 5, 7], 300, 0),
        ("no scale down stabilization", [(1, 120), (2, 60)], 100, 3, 3, [1, 2, 3], 300, 0),
        ("no scale up stabilization", [(4, 120), (5, 60)], 1, 3, 3, [4, 5, 3], 0, 300),
        (
            "no scale down stabilization, reuse recommendation element",
            [(10, 600), (9, 540)],
            100,
            3,
            3,
            [10, 3],
            0,
            0,
        ),
        (
            "no scale up stabilization, reuse recommendation element",
            [(10, 600), (9, 540)],
            1,
            100,
            100,
            [10, 100],
            0,
            0,
        ),
        (
            "scale down stabilization, reuse one of obsolete recommendation element",
            [(10, 600), (4, 60), (5, 120), (9, 540)],
            100,
            3,
            5,
            [10, 4, 5, 3],
            0,
            180,
        ),
        (
            "scale up stabilization, reuse one of obsolete recommendation element",
            [(10, 6000), (6, 60), (5, 120), (9, 180)],
            1,
            100,
            5,
            [100, 6, 5, 9],
            300,
            0,
        ),
    ],
)
def test_stabilize_recommendation_with_behaviors(
    name: str,
    recs: list[tuple[int, float]],
    current: int,
    desired: int,
    want: int,
    log: list[int],
    up_window: int,
    down_window: int,
) -> None:
    recommendations = [Recommendation(r, NOW - age) for r, age in recs]
    got, _, _ = stabilize_recommendation_with_behaviors(
        recommendations, NOW, up_window, down_window, current, desired
    )
    assert got == want, name
    assert [r.recommendation for r in recommendations] == log, name


def test_default_behavior_rate_limits_scale_up_across_reconciles() -> None:
    # Default scaleUp: Max of [4 Pods / 15 s, 100 % / 15 s]; events stored per rescale.
    controller = HPAController(HPASpec(1, 1000, (value(1),), behavior=Behavior()))
    first = controller.reconcile(NOW, 10, 10, 10, [[100]])
    assert first.desired_replicas == 20
    assert first.scaling_limited is not None
    assert first.scaling_limited.reason == "ScaleUpLimit"
    # 5 s later the +10 event is inside the 15 s period: the period started at 10 -> limit 20.
    held = controller.reconcile(NOW + 5, 20, 20, 20, [[100]])
    assert (held.desired_replicas, held.rescale) == (20, False)
    # 16 s after the first event the period starts at 20 -> limit 40.
    later = controller.reconcile(NOW + 16, 20, 20, 20, [[100]])
    assert later.desired_replicas == 40


def test_behavior_scale_down_uses_flag_window_when_unset() -> None:
    behavior = Behavior(scale_down=ScalingRules(policies=(ScalingPolicy("Pods", 1, 60),)))
    controller = HPAController(
        HPASpec(1, 10, (value(100),), behavior=behavior, downscale_stabilization_seconds=30)
    )
    first = controller.reconcile(0.0, 5, 5, 5, [[100]])  # within tolerance: recommends 5
    assert first.desired_replicas == 5
    stabilised = controller.reconcile(15.0, 5, 5, 5, [[100]])
    assert stabilised.desired_replicas == 5
    # 31 s after the last 5-recommendation the window (30 s) no longer holds; -1 pod per 60 s.
    down = controller.reconcile(46.0, 5, 5, 5, [[10]])
    assert down.desired_replicas == 4
    assert down.scaling_limited is not None
    assert down.scaling_limited.reason == "ScaleDownLimit"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, "min_replicas"),
        ({"min_replicas": 1, "max_replicas": 0}, "max_replicas"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HPASpec(metrics=(value(1),), **kwargs)  # type: ignore[arg-type]


def test_target_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        MetricTarget("Value", 0)


def test_metric_values_must_match_spec() -> None:
    controller = HPAController(HPASpec(1, 10, (value(1),)))
    with pytest.raises(ValueError, match="metric_values"):
        controller.reconcile(NOW, 1, 1, 1, [])
