"""Why a metric has the value it has: the answer behind ``tritonscale explain``.

An :class:`Explainer` reads the service's state through narrow, read-only views (the
published snapshot, the pipeline's targets and their reading histories, the predictive
stage's :class:`~adapter.views.ForecastView` per series) and writes one JSON document per
question ``(namespace, metric, selector)``:

- ``served``: what the external metrics API answers right now (values, or the 404/503 and its
  message);
- per matching series (at most :data:`MAX_SERIES`): its value and age, the targets that feed
  it with their last scrape (time, outcome, error) and the readings in the rate window, and
  the predictive state (inputs, forecaster state, point forecast, calibrated upper bound with
  the headroom's calibration, desired replicas, forecast score);
- ``absent``: when nothing is served, every reason found (no target in the namespace, none
  matching the selector, never scraped, a family Triton does not export, no capacity
  configured, no forecast yet, stale since T from TARGET).

Explaining is read-only and bounded: it walks the snapshot's points of one metric, the
targets, and copies at most :data:`MAX_READINGS` readings per target; nothing is scraped and
no stage is advanced. It is not on the HPA's path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from adapter.config import SignalsConfig
from adapter.kube.selectors import Selector
from adapter.predictive import ARRIVAL_FORECAST, DESIRED_REPLICAS, QUEUE_DEPTH_FORECAST
from adapter.provider import (
    ExternalMetricsProvider,
    MetricNotFoundError,
    NoMatchingSeriesError,
    StaleMetricError,
)
from adapter.readings import Reading
from adapter.scrape import TargetState
from adapter.signals import (
    ARRIVAL_RATE,
    GPU_UTILIZATION,
    QUEUE_COMPUTE_RATIO,
    QUEUE_DEPTH,
    QUEUE_TIME,
    REQUEST_RATE,
)
from adapter.snapshot import MetricInfo, SeriesPoint, Snapshot
from adapter.targets import Target
from adapter.views import ForecastView

MAX_SERIES = 20
"""Series explained in one answer; more are counted in ``series_not_shown``."""
MAX_TARGETS = 50
"""Targets listed per series."""
MAX_READINGS = 20
"""Readings listed per target (the newest)."""

_SERIES_ONLY_LABELS = ("model", "version")
_PREDICTIVE = (ARRIVAL_FORECAST, QUEUE_DEPTH_FORECAST, DESIRED_REPLICAS)
_NEEDS_CAPACITY = (QUEUE_DEPTH_FORECAST, DESIRED_REPLICAS)
_FAMILIES = {
    QUEUE_DEPTH: ("pending", "nv_inference_pending_request_count"),
    ARRIVAL_RATE: ("pending", "nv_inference_pending_request_count"),
    QUEUE_TIME: ("queue_us", "nv_inference_queue_duration_us"),
    QUEUE_COMPUTE_RATIO: ("compute_infer_us", "nv_inference_compute_infer_duration_us"),
}
_RATES = (REQUEST_RATE, ARRIVAL_RATE, QUEUE_TIME, QUEUE_COMPUTE_RATIO)


class PipelineState(Protocol):
    """What the explainer reads of the pipeline (``adapter.pipeline.Pipeline`` has it)."""

    def snapshot(self) -> Snapshot: ...

    @property
    def targets(self) -> Mapping[Target, TargetState]: ...


class Explainer:
    """Builds explanations from read-only views (see the module docstring).

    ``clock``: Unix time (s); ``signals``: the rate window and the max age the API applies.
    """

    def __init__(
        self,
        pipeline: PipelineState,
        forecasts: Callable[[], Iterable[ForecastView]],
        provider: ExternalMetricsProvider,
        metrics: Sequence[MetricInfo],
        signals: SignalsConfig,
        clock: Callable[[], float],
    ) -> None:
        self._pipeline = pipeline
        self._forecasts = forecasts
        self._provider = provider
        self._metrics = {m.name: m for m in metrics}
        self._signals = signals
        self._clock = clock

    def explain(self, namespace: str, metric: str, selector: Selector) -> dict[str, Any]:
        """The explanation as a JSON-ready document (non-finite numbers become None)."""
        now = self._clock()
        snapshot = self._pipeline.snapshot()
        targets = dict(self._pipeline.targets)
        forecasts = {_key(v.labels): v for v in self._forecasts()}
        matched = [p for p in snapshot.points_in(metric, namespace) if selector.matches(p.labels)]
        matched.sort(key=lambda p: sorted(p.labels.items()))
        info = self._metrics.get(metric)
        document: dict[str, Any] = {
            "kind": "Explanation",
            "metric": metric,
            "namespace": namespace,
            "selector": selector.source,
            "unit": info.unit if info else None,
            "description": info.description if info else None,
            "now": now,
            "snapshot_built_at": snapshot.built_at,
            "max_age_seconds": self._signals.max_age_seconds,
            "rate_window_seconds": self._signals.rate_window_seconds,
            "served": self._served(namespace, metric, selector),
            "series": [
                self._series(p, metric, now, targets, forecasts) for p in matched[:MAX_SERIES]
            ],
            "series_not_shown": max(0, len(matched) - MAX_SERIES),
            "absent": [],
        }
        if not matched:
            document["absent"] = self._absence(namespace, metric, selector, targets, forecasts)
        safe: dict[str, Any] = _json_safe(document)
        return safe

    # -- what the API answers --------------------------------------------------------------

    def _served(self, namespace: str, metric: str, selector: Selector) -> dict[str, Any]:
        try:
            values = self._provider.get_external_metric(namespace, metric, selector)
        except MetricNotFoundError:
            return {"status": 404, "message": f"metric {metric} is not served", "values": []}
        except NoMatchingSeriesError as exc:
            return {"status": 404, "message": str(exc), "values": []}
        except StaleMetricError as exc:
            return {"status": 503, "message": str(exc), "values": []}
        items = [{"labels": dict(v.labels), "value": v.value} for v in values]
        if any(not math.isfinite(v.value) for v in values):
            return {
                "status": 503,
                "message": "a matching series has a value that is not a finite number",
                "values": items,
            }
        return {"status": 200, "message": "", "values": items}

    # -- one series ------------------------------------------------------------------------

    def _series(
        self,
        point: SeriesPoint,
        metric: str,
        now: float,
        targets: Mapping[Target, TargetState],
        forecasts: Mapping[tuple[tuple[str, str], ...], ForecastView],
    ) -> dict[str, Any]:
        age = now - point.timestamp
        feeding = _feeding(point.labels, targets)
        if age > self._signals.max_age_seconds:
            state, reason = "stale", self._stale_reason(point, age, feeding)
        elif not math.isfinite(point.value):
            state, reason = "unknown", "not enough data to compute it yet"
        else:
            state, reason = "served", ""
        model = point.labels.get("model")
        version = point.labels.get("version", "")
        forecast = forecasts.get(_key(point.labels))
        return {
            "labels": dict(point.labels),
            "value": point.value,
            "timestamp": point.timestamp,
            "age_seconds": age,
            "window_seconds": point.window_seconds,
            "state": state,
            "reason": reason,
            "targets": [self._target(s, now, model, version) for s in feeding[:MAX_TARGETS]],
            "targets_not_shown": max(0, len(feeding) - MAX_TARGETS),
            "forecast": _forecast(forecast, now, metric) if forecast is not None else None,
        }

    def _stale_reason(self, point: SeriesPoint, age: float, feeding: Sequence[TargetState]) -> str:
        since = f"stale since {point.timestamp:.3f} ({age:.1f}s ago > max age "
        since += f"{self._signals.max_age_seconds:g}s)"
        oldest = min(
            feeding,
            key=lambda s: s.history.newest.wall if s.history.newest else -math.inf,
            default=None,
        )
        if oldest is None:
            return since + "; no target feeds it any more"
        return since + " from " + _scrape_story(oldest)

    def _target(
        self, state: TargetState, now: float, model: str | None, version: str
    ) -> dict[str, Any]:
        target = state.target
        history = state.history
        readings = history.readings()
        newest = readings[-1] if readings else None
        window = history.window(self._signals.rate_window_seconds)
        base_mono = window[0].mono if window else math.inf
        shown = readings[-MAX_READINGS:]
        return {
            "url": target.url,
            "kind": target.kind,
            "labels": dict(target.labels),
            "pod": target.pod.name if target.pod else None,
            "scrapes": state.scrapes,
            "last_attempt": state.last_attempt,
            "last_success": newest.wall if newest else None,
            "outcome": _outcome(state),
            "error": state.last_error,
            "error_detail": state.last_error_detail,
            "consecutive_failures": state.consecutive_failures,
            "restarts": history.restarts,
            "window": (
                {
                    "base": window[0].wall,
                    "newest": window[1].wall,
                    "span_seconds": window[1].mono - window[0].mono,
                }
                if window
                else None
            ),
            "readings": [
                _reading(r, now, model, version, in_window=r.mono >= base_mono) for r in shown
            ],
            "readings_not_shown": len(readings) - len(shown),
        }

    # -- why nothing is served -------------------------------------------------------------

    def _absence(
        self,
        namespace: str,
        metric: str,
        selector: Selector,
        targets: Mapping[Target, TargetState],
        forecasts: Mapping[tuple[tuple[str, str], ...], ForecastView],
    ) -> list[str]:
        if metric not in self._metrics:
            return [
                f"tritonscale does not serve {metric}; it serves: "
                + ", ".join(sorted(self._metrics))
            ]
        everywhere = sorted({t.namespace for t in targets})
        here = [s for t, s in targets.items() if t.namespace == namespace]
        if not here:
            if not targets:
                return [
                    "no targets at all: no static target is configured and discovery has "
                    "found no Running and Ready pod"
                ]
            return [
                f"no targets matched: tritonscale scrapes no target in namespace {namespace} "
                f"(it scrapes {len(targets)} in: {', '.join(everywhere)})"
            ]
        candidates = [s for s in here if _could_match(selector, s)]
        if not candidates:
            sets = sorted({_labels_text(s.target.labels) for s in here})[:10]
            return [
                f"no target in namespace {namespace} has labels matching selector "
                f"{selector.source!r}; their labels: {'; '.join(sets)}"
            ]
        reasons: list[str] = []
        never = [s for s in candidates if s.history.newest is None]
        for state in never[:10]:
            reasons.append(f"{state.target.url}: {_scrape_story(state)}")
        scraped = [s for s in candidates if s.history.newest is not None]
        if not scraped:
            return reasons
        if metric == GPU_UTILIZATION:
            reasons.append(
                "no target in the matching groups reports GPU utilisation (Triton's "
                "nv_gpu_utilization, or a dcgm-exporter target in the same group)"
            )
            return reasons
        models = {
            key: s for s in scraped if (r := s.history.newest) is not None for key in r.models
        }
        matching = {
            (model, version): s
            for (model, version), s in models.items()
            if selector.matches(_series_labels(s.target, model, version))
        }
        if not matching:
            names = sorted({m for m, _ in models}) or ["(none)"]
            reasons.append(
                f"the matching targets report models {', '.join(names)}; no series of them "
                f"matches selector {selector.source!r}"
            )
            return reasons
        family = _FAMILIES.get(metric)
        for (model, version), state in sorted(matching.items())[:10]:
            newest = state.history.newest
            assert newest is not None
            counters = newest.models.get((model, version))
            if family and counters is not None and getattr(counters, family[0]) is None:
                reasons.append(
                    f"{state.target.url} does not export {family[1]} for model {model}, "
                    f"which {metric} needs"
                )
            elif metric in _RATES and len(state.history.readings()) < 2:
                reasons.append(
                    f"{state.target.url}: one reading since its last start or restart; rates "
                    "need two within the rate window"
                )
        if metric in _PREDICTIVE:
            reasons += self._predictive_absence(metric, matching, forecasts)
        if not reasons:
            reasons.append(
                "the series is not computed yet (it appears after the next publish, or was "
                "dropped after being stale for longer than the max age)"
            )
        return reasons

    def _predictive_absence(
        self,
        metric: str,
        matching: Mapping[tuple[str, str], TargetState],
        forecasts: Mapping[tuple[tuple[str, str], ...], ForecastView],
    ) -> list[str]:
        reasons: list[str] = []
        for (model, version), state in sorted(matching.items())[:10]:
            labels = _series_labels(state.target, model, version)
            view = forecasts.get(_key(labels))
            name = _labels_text(labels.items())
            if view is None:
                reasons.append(
                    f"the predictive stage has no state for {{{name}}}: it starts with the "
                    f"series' first {QUEUE_DEPTH} value"
                )
            elif metric in _NEEDS_CAPACITY and not view.sizes_replicas:
                reasons.append(
                    f"no capacity configured for {{{name}}}: {metric} needs capacity_rps "
                    "(predictive.defaults.capacity_rps, or a predictive.series override "
                    "matching these labels)"
                )
            elif view.decision is None:
                reasons.append(
                    f"no forecast yet for {{{name}}}: the first step comes one step "
                    f"({view.settings.step_seconds:g}s) after the series appears"
                )
            elif not math.isfinite(view.decision.arrival_upper):
                reasons.append(
                    f"no forecast yet for {{{name}}}: no step so far had a fresh arrival rate"
                )
        return reasons


# --- pieces ---------------------------------------------------------------------------------


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _labels_text(labels: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels))


def _series_labels(target: Target, model: str, version: str) -> dict[str, str]:
    labels = {**dict(target.labels), "model": model}
    if version:
        labels["version"] = version
    return labels


def _could_match(selector: Selector, state: TargetState) -> bool:
    """Whether the target's group labels satisfy the selector's requirements on group labels
    (those on the series-only labels, model and version, are checked against the models)."""
    labels = dict(state.target.labels)
    return all(r.matches(labels) for r in selector.requirements if r.key not in _SERIES_ONLY_LABELS)


def _feeding(labels: Mapping[str, str], targets: Mapping[Target, TargetState]) -> list[TargetState]:
    """The targets of the series' group (its labels without model and version)."""
    group = tuple(sorted((k, v) for k, v in labels.items() if k not in _SERIES_ONLY_LABELS))
    return sorted((s for t, s in targets.items() if t.group == group), key=lambda s: s.target.url)


def _outcome(state: TargetState) -> str:
    if state.last_attempt is None:
        return "not scraped yet"
    return "ok" if state.last_error is None else "failing"


def _scrape_story(state: TargetState) -> str:
    """One sentence on a target's scrapes: last success, and the failures since."""
    newest = state.history.newest
    text = (
        f"{state.target.url}: last successful scrape at {newest.wall:.3f}"
        if newest is not None
        else f"{state.target.url}: never scraped successfully"
    )
    if state.last_error is not None:
        text += (
            f"; {state.consecutive_failures} failed scrapes since "
            f"({state.last_error}: {state.last_error_detail})"
        )
    elif state.last_attempt is None:
        text += " (no scrape has ended yet)"
    return text


def _reading(
    reading: Reading, now: float, model: str | None, version: str, *, in_window: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": reading.wall,
        "age_seconds": now - reading.wall,
        "in_window": in_window,
    }
    if model is None:
        out["gpu_utilization"] = list(reading.gpu_utilization)
        return out
    counters = reading.models.get((model, version))
    if counters is None:
        out["model_absent"] = True
        return out
    out.update(
        pending=counters.pending,
        success=counters.success,
        failure=counters.failure,
        queue_us=counters.queue_us,
        compute_infer_us=counters.compute_infer_us,
    )
    return out


def _forecast(view: ForecastView, now: float, metric: str) -> dict[str, Any]:
    settings = view.settings
    decision = view.decision
    policy = view.policy
    headroom = policy.headroom
    if not policy.use_headroom:
        used = "off: the policy plans for the point forecast"
    elif headroom.ready:
        used = "calibrated: upper = point + margin"
    elif headroom.method == "attainment":
        used = (
            f"warming up ({headroom.samples} of {headroom.min_samples} errors): upper = point "
            "+ margin, the margin at least the prior share of the rate, fading as errors arrive"
        )
    else:
        used = (
            f"not calibrated yet ({headroom.samples} of {headroom.min_samples} errors): "
            "upper = the forecaster's own bound"
        )
    answer: dict[str, Any] = {
        "settings": {
            k: v for k, v in dataclasses.asdict(settings).items() if k != "forecaster_params"
        }
        | {"forecaster_params": dict(settings.forecaster_params)},
        "horizon_seconds": view.horizon_seconds,
        "horizon_steps": policy.horizon_steps,
        "steps": policy.steps,
        "sizes_replicas": view.sizes_replicas,
        "inputs": {
            "arrival_rate": view.input_rate,
            "queue_depth": view.input_depth,
            "replicas": view.input_replicas,
            "time": view.input_time if math.isfinite(view.input_time) else None,
            "age_seconds": now - view.input_time if math.isfinite(view.input_time) else None,
        },
        "forecaster": {
            "name": policy.forecaster,
            "ready": policy.forecaster_ready,
            "state": dict(policy.forecaster_state),
        },
        "point": view.point,
        "model_upper": decision.arrival_forecast.upper if decision else None,
        "upper": view.upper,
        "margin": view.upper - view.point,
        "utilisation": decision.utilisation if decision else None,
        "planned": view.planned,
        "headroom": {
            "method": headroom.method,
            "target": dict(headroom.target),
            "ready": headroom.ready,
            "samples": headroom.samples,
            "min_samples": headroom.min_samples,
            "margin": headroom.margin,
            "recent_errors": list(headroom.recent_errors),
            "details": dict(headroom.details),
            "used": used,
        },
        "desired_replicas": decision.desired_replicas if decision else None,
        "queue_depth_forecast": decision.queue_depth_forecast if decision else None,
        "panic": decision.panic if decision else False,
        "score": {
            "checks": view.checks,
            "misses": view.misses,
            "coverage": 1.0 - view.misses / view.checks if view.checks else None,
        },
    }
    if metric in _NEEDS_CAPACITY and not view.sizes_replicas:
        answer["note"] = f"no capacity configured: {metric} is not served for this series"
    return answer


def _json_safe(value: Any) -> Any:
    """The document with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
