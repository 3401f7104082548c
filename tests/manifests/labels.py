"""Kubernetes LabelSelector objects (matchLabels, matchExpressions) evaluated against labels,
as the API server, the scheduler and NetworkPolicy implementations do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def expression_holds(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = expression.get("values", [])
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown selector operator {operator!r}")


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """True when every matchLabels pair and every matchExpressions term holds; ``{}`` selects
    everything."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(expression_holds(e, labels) for e in selector.get("matchExpressions", []))
