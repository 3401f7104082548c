"""A ``HorizontalPodAutoscaler`` object (``autoscaling/v2``) as :mod:`policies.hpa` models it.

``tritonscale explain --hpa FILE`` (or ``--hpa-name`` read from the cluster) runs the HPA's own
algorithm on the values tritonscale serves. Only ``External`` metrics are evaluated (their
values come from the external metrics API); other metric types are listed as not evaluated.
Errors name the field (``spec.metrics[1].external.target.averageValue: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.kube.quantity import QuantityError, parse_quantity
from policies.hpa import Behavior, HPASpec, MetricTarget, ScalingPolicy, ScalingRules


class HPAObjectError(ValueError):
    """The object is not a usable HorizontalPodAutoscaler; the message names the field."""


@dataclass(frozen=True, slots=True)
class ExternalMetricRef:
    """One evaluated ``spec.metrics[]`` entry: the metric, its selector as label-selector
    text (empty: everything) and its target."""

    name: str
    selector: str
    target: MetricTarget


@dataclass(frozen=True, slots=True)
class HPAObject:
    """What ``explain`` needs of an HPA: its name and namespace, the spec of its External
    metrics, the replicas its status reports (None when absent) and the metrics it skipped."""

    name: str
    namespace: str
    spec: HPASpec
    metrics: tuple[ExternalMetricRef, ...]
    current_replicas: int | None
    not_evaluated: tuple[str, ...]


def find_hpa(documents: Sequence[Any]) -> Mapping[str, Any]:
    """The first HorizontalPodAutoscaler among ``documents`` (objects or ``List`` items)."""
    for document in documents:
        if not isinstance(document, Mapping):
            continue
        if document.get("kind") == "HorizontalPodAutoscaler":
            return document
        items = document.get("items")
        if isinstance(items, list):
            try:
                return find_hpa(items)
            except HPAObjectError:
                continue
    raise HPAObjectError("no HorizontalPodAutoscaler object found")


def _field(obj: Mapping[str, Any], key: str, where: str, kind: type, default: Any = None) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HPAObjectError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    return value


def _quantity(text: Any, where: str) -> float:
    try:
        return float(parse_quantity(str(text)))
    except QuantityError as exc:
        raise HPAObjectError(f"{where}: {exc}") from None


def selector_text(selector: Mapping[str, Any] | None, where: str) -> str:
    """A ``metav1.LabelSelector`` as label-selector text (as the HPA sends it)."""
    if not selector:
        return ""
    terms = [
        f"{k}={v}" for k, v in sorted(_field(selector, "matchLabels", where, dict, {}).items())
    ]
    for index, expression in enumerate(_field(selector, "matchExpressions", where, list, [])):
        at = f"{where}.matchExpressions[{index}]"
        key = _field(expression, "key", at, str, "")
        operator = _field(expression, "operator", at, str, "")
        values = ",".join(sorted(_field(expression, "values", at, list, [])))
        if operator == "In":
            terms.append(f"{key} in ({values})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise HPAObjectError(f"{at}.operator: unknown operator {operator!r}")
    return ",".join(terms)


def _rules(rules: Mapping[str, Any] | None, where: str) -> ScalingRules | None:
    if rules is None:
        return None
    policies = None
    if "policies" in rules:
        policies = tuple(
            ScalingPolicy(
                _field(p, "type", f"{where}.policies[{i}]", str, ""),
                _field(p, "value", f"{where}.policies[{i}]", int, 0),
                _field(p, "periodSeconds", f"{where}.policies[{i}]", int, 0),
            )
            for i, p in enumerate(_field(rules, "policies", where, list, []))
        )
    tolerance = rules.get("tolerance")
    return ScalingRules(
        stabilization_window_seconds=_field(rules, "stabilizationWindowSeconds", where, int),
        select_policy=_field(rules, "selectPolicy", where, str, "Max"),
        policies=policies,
        tolerance=None if tolerance is None else _quantity(tolerance, f"{where}.tolerance"),
    )


def hpa_from_object(hpa: Mapping[str, Any]) -> HPAObject:
    """Parse an ``autoscaling/v2`` HorizontalPodAutoscaler; raises :class:`HPAObjectError`."""
    metadata = _field(hpa, "metadata", "", dict, {})
    spec = _field(hpa, "spec", "", dict, None)
    if spec is None:
        raise HPAObjectError("spec: missing")
    refs: list[ExternalMetricRef] = []
    skipped: list[str] = []
    for index, metric in enumerate(_field(spec, "metrics", "spec", list, [])):
        where = f"spec.metrics[{index}]"
        kind = _field(metric, "type", where, str, "")
        if kind != "External":
            skipped.append(f"{where} ({kind or 'no type'}): only External metrics are evaluated")
            continue
        external = _field(metric, "external", where, dict, {})
        ident = _field(external, "metric", f"{where}.external", dict, {})
        name = _field(ident, "name", f"{where}.external.metric", str, "")
        if not name:
            raise HPAObjectError(f"{where}.external.metric.name: missing")
        selector = selector_text(ident.get("selector"), f"{where}.external.metric.selector")
        target = _field(external, "target", f"{where}.external", dict, {})
        target_type = _field(target, "type", f"{where}.external.target", str, "")
        if target_type == "Value":
            value = _quantity(target.get("value"), f"{where}.external.target.value")
        elif target_type == "AverageValue":
            value = _quantity(target.get("averageValue"), f"{where}.external.target.averageValue")
        else:
            raise HPAObjectError(
                f"{where}.external.target.type: must be Value or AverageValue, got {target_type!r}"
            )
        try:
            metric_target = MetricTarget(target_type, value, name=name, selector=selector)
        except ValueError as exc:
            raise HPAObjectError(f"{where}.external.target: {exc}") from None
        refs.append(ExternalMetricRef(name, selector, metric_target))
    if not refs:
        raise HPAObjectError("spec.metrics: no External metric to evaluate")
    behavior = _field(spec, "behavior", "spec", dict, None)
    try:
        hpa_spec = HPASpec(
            min_replicas=_field(spec, "minReplicas", "spec", int, 1),
            max_replicas=_field(spec, "maxReplicas", "spec", int, 0),
            metrics=tuple(r.target for r in refs),
            behavior=(
                Behavior(
                    _rules(behavior.get("scaleUp"), "spec.behavior.scaleUp"),
                    _rules(behavior.get("scaleDown"), "spec.behavior.scaleDown"),
                )
                if behavior is not None
                else None
            ),
        )
    except ValueError as exc:
        raise HPAObjectError(f"spec: {exc}") from None
    status = _field(hpa, "status", "", dict, {})
    return HPAObject(
        name=_field(metadata, "name", "metadata", str, ""),
        namespace=_field(metadata, "namespace", "metadata", str, ""),
        spec=hpa_spec,
        metrics=tuple(refs),
        current_replicas=_field(status, "currentReplicas", "status", int),
        not_evaluated=tuple(skipped),
    )
