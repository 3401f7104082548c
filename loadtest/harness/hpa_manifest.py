"""HorizontalPodAutoscaler objects (``autoscaling/v2``) as the HPA model runs them.

``load_hpa(path)`` reads a YAML file holding one HPA (the files in ``manifests/examples/hpa/``)
and returns an :class:`HPAObject`: the :class:`policies.hpa.HPASpec` the controller model
needs, plus what the controller reads the metrics with (each External metric's name and label
selector, as the HPA sends them to the external metrics API) and the scale target. Only
External metrics are supported (the adapter serves nothing else); every other field the
HPA controller reads is mapped, and a value the API server would reject is an error that names
the file and the field.

Quantities (``averageValue: 700m``) are parsed with the adapter's own parser
(:mod:`adapter.kube.quantity`), as the API server parses them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import yaml

from adapter.kube.quantity import QuantityError, parse_quantity
from policies.hpa import (
    Behavior,
    HPASpec,
    MetricTarget,
    ScalingPolicy,
    ScalingRules,
)


class HPAManifestError(ValueError):
    """The file does not hold a usable HPA; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class ExternalMetricQuery:
    """One External metric: what to GET from the external metrics API and its target."""

    name: str
    selector: str  # label selector text, as the HPA puts it in ``?labelSelector=``
    target: MetricTarget


@dataclass(frozen=True, slots=True)
class HPAObject:
    """One HorizontalPodAutoscaler: ``spec`` for :class:`policies.hpa.HPAController` and the
    ``metrics`` in the same order as ``spec.metrics``."""

    name: str
    namespace: str
    scale_target: str  # "Deployment/triton-llm"
    spec: HPASpec
    metrics: tuple[ExternalMetricQuery, ...]
    source: str

    def with_max_replicas(self, max_replicas: int) -> HPAObject:
        """This HPA with ``maxReplicas`` lowered to ``max_replicas`` (a demo's process cap)."""
        if max_replicas >= self.spec.max_replicas:
            return self
        spec = HPASpec(
            min_replicas=min(self.spec.min_replicas, max_replicas),
            max_replicas=max_replicas,
            metrics=self.spec.metrics,
            behavior=self.spec.behavior,
            tolerance=self.spec.tolerance,
            downscale_stabilization_seconds=self.spec.downscale_stabilization_seconds,
        )
        return HPAObject(
            self.name, self.namespace, self.scale_target, spec, self.metrics, self.source
        )


def load_hpa(path: str | Path) -> HPAObject:
    """The one HorizontalPodAutoscaler in the YAML file ``path``."""
    source = str(path)
    try:
        documents = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    except OSError as err:
        raise HPAManifestError(f"{source}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise HPAManifestError(f"{source}: not valid YAML: {err}") from None
    hpas = [
        d
        for d in documents
        if isinstance(d, Mapping) and d.get("kind") == "HorizontalPodAutoscaler"
    ]
    if len(hpas) != 1:
        raise HPAManifestError(f"{source}: expected one HorizontalPodAutoscaler, found {len(hpas)}")
    return hpa_from_object(hpas[0], source)


def hpa_from_object(obj: Mapping[str, Any], source: str = "<object>") -> HPAObject:
    """An ``autoscaling/v2`` HorizontalPodAutoscaler (parsed YAML/JSON) as an :class:`HPAObject`."""
    reader = _Reader(source)
    if obj.get("apiVersion") != "autoscaling/v2":
        reader.fail("apiVersion", f"must be autoscaling/v2, got {obj.get('apiVersion')!r}")
    metadata = reader.mapping(obj, "metadata")
    spec = reader.mapping(obj, "spec")
    target = reader.mapping(spec, "scaleTargetRef", "spec.scaleTargetRef")
    min_replicas = reader.integer(spec.get("minReplicas", 1), "spec.minReplicas", minimum=1)
    max_replicas = reader.integer(spec.get("maxReplicas"), "spec.maxReplicas", minimum=1)
    if min_replicas > max_replicas:
        reader.fail("spec.minReplicas", f"{min_replicas} is above maxReplicas {max_replicas}")
    raw_metrics = spec.get("metrics")
    if not isinstance(raw_metrics, list) or not raw_metrics:
        reader.fail("spec.metrics", "must list at least one metric")
    queries = tuple(
        _external_metric(reader, entry, f"spec.metrics[{index}]")
        for index, entry in enumerate(raw_metrics)
    )
    behavior = _behavior(reader, spec.get("behavior"))
    try:
        hpa_spec = HPASpec(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            metrics=tuple(q.target for q in queries),
            behavior=behavior,
        )
    except ValueError as err:
        reader.fail("spec", str(err))
    return HPAObject(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "default")),
        scale_target=f"{target.get('kind')}/{target.get('name')}",
        spec=hpa_spec,
        metrics=queries,
        source=source,
    )


class _Reader:
    """Field access with errors that name the file and the field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field: str, message: str) -> NoReturn:
        raise HPAManifestError(f"{self.source}: {field}: {message}")

    def mapping(self, parent: Mapping[str, Any], key: str, field: str = "") -> Mapping[str, Any]:
        value = parent.get(key)
        if not isinstance(value, Mapping):
            self.fail(field or key, "missing or not a mapping")
        return cast(Mapping[str, Any], value)

    def integer(self, value: object, field: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(field, f"must be an integer >= {minimum}, got {value!r}")
        assert isinstance(value, int)
        return value

    def quantity(self, value: object, field: str) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(field, f"must be a quantity such as 1, 500m or 2k, got {value!r}")
        try:
            parsed = parse_quantity(str(value))
        except QuantityError as err:
            self.fail(field, str(err))
        number = float(parsed)
        if not math.isfinite(number) or number <= 0:
            self.fail(field, f"must be positive, got {value!r}")
        return number


def _external_metric(reader: _Reader, entry: object, field: str) -> ExternalMetricQuery:
    if not isinstance(entry, Mapping):
        reader.fail(field, "must be a mapping")
    assert isinstance(entry, Mapping)
    if entry.get("type") != "External":
        reader.fail(
            f"{field}.type",
            f"only External metrics are emulated (tritonscale serves the external metrics "
            f"API), got {entry.get('type')!r}",
        )
    external = reader.mapping(entry, "external", f"{field}.external")
    metric = reader.mapping(external, "metric", f"{field}.external.metric")
    name = metric.get("name")
    if not isinstance(name, str) or not name:
        reader.fail(f"{field}.external.metric.name", "missing")
    selector = _selector_text(reader, metric.get("selector"), f"{field}.external.metric.selector")
    target = reader.mapping(external, "target", f"{field}.external.target")
    kind = target.get("type")
    if kind == "Value":
        value = reader.quantity(target.get("value"), f"{field}.external.target.value")
    elif kind == "AverageValue":
        value = reader.quantity(target.get("averageValue"), f"{field}.external.target.averageValue")
    else:
        reader.fail(
            f"{field}.external.target.type",
            f"External metrics take Value or AverageValue, got {kind!r}",
        )
    return ExternalMetricQuery(
        name=str(name),
        selector=selector,
        target=MetricTarget(cast(Any, kind), value, name=str(name), selector=selector or "<nil>"),
    )


def _selector_text(reader: _Reader, selector: object, field: str) -> str:
    """A ``metav1.LabelSelector`` as the query-string text the HPA sends."""
    if selector is None:
        return ""
    if not isinstance(selector, Mapping):
        reader.fail(field, "must be a mapping with matchLabels / matchExpressions")
    assert isinstance(selector, Mapping)
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for index, expression in enumerate(selector.get("matchExpressions") or []):
        where = f"{field}.matchExpressions[{index}]"
        if not isinstance(expression, Mapping):
            reader.fail(where, "must be a mapping")
        key, operator = expression.get("key"), expression.get("operator")
        values = sorted(str(v) for v in expression.get("values") or [])
        if operator in ("In", "NotIn"):
            if not values:
                reader.fail(f"{where}.values", f"{operator} needs at least one value")
            parts.append(f"{key} {operator.lower()} ({','.join(values)})")
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                reader.fail(f"{where}.values", f"{operator} takes no values")
            parts.append(str(key) if operator == "Exists" else f"!{key}")
        else:
            reader.fail(f"{where}.operator", f"unknown operator {operator!r}")
    return ",".join(parts)


def _behavior(reader: _Reader, raw: object) -> Behavior | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        reader.fail("spec.behavior", "must be a mapping")
    assert isinstance(raw, Mapping)
    return Behavior(
        scale_up=_rules(reader, raw.get("scaleUp"), "spec.behavior.scaleUp"),
        scale_down=_rules(reader, raw.get("scaleDown"), "spec.behavior.scaleDown"),
    )


def _rules(reader: _Reader, raw: object, field: str) -> ScalingRules | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        reader.fail(field, "must be a mapping")
    assert isinstance(raw, Mapping)
    policies: tuple[ScalingPolicy, ...] | None = None
    if "policies" in raw:
        entries: Sequence[object] = raw.get("policies") or []
        parsed = []
        for index, entry in enumerate(entries):
            where = f"{field}.policies[{index}]"
            if not isinstance(entry, Mapping):
                reader.fail(where, "must be a mapping")
            assert isinstance(entry, Mapping)
            try:
                parsed.append(
                    ScalingPolicy(
                        cast(Any, entry.get("type")),
                        reader.integer(entry.get("value"), f"{where}.value", minimum=1),
                        reader.integer(
                            entry.get("periodSeconds"), f"{where}.periodSeconds", minimum=1
                        ),
                    )
                )
            except ValueError as err:
                if isinstance(err, HPAManifestError):
                    raise
                reader.fail(where, str(err))
        policies = tuple(parsed)
    window = raw.get("stabilizationWindowSeconds")
    tolerance = raw.get("tolerance")
    try:
        return ScalingRules(
            stabilization_window_seconds=(
                None
                if window is None
                else reader.integer(window, f"{field}.stabilizationWindowSeconds", minimum=0)
            ),
            select_policy=raw.get("selectPolicy", "Max"),
            policies=policies,
            tolerance=(
                None
                if tolerance is None
                else reader.quantity(tolerance, f"{field}.tolerance")
                if tolerance not in (0, "0")
                else 0.0
            ),
        )
    except ValueError as err:
        if isinstance(err, HPAManifestError):
            raise
        reader.fail(field, str(err))
