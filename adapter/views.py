"""Read-only views of the service's state, for the live page and ``explain``.

The pipeline and the predictive stage hand out these immutable copies; the recorder and the
explainer read them and never reach into the stages' own objects, so the flow stays one-way
(pipeline -> snapshot and views -> recorder / explainer -> API handlers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from policies.predictive import Decision, PolicyState, PredictiveSettings


@dataclass(frozen=True, slots=True)
class ForecastView:
    """One series' predictive state after its last step.

    labels: the series (namespace, group labels, model); settings: the policy's settings for
    it; horizon_seconds: how far ahead its forecasts look (whole steps); sizes_replicas: a
    per-replica capacity is configured, so desired replicas and the queue forecast are served.
    input_rate (req/s, mean of the fresh arrival rates of the step; NaN: none was fresh),
    input_depth (requests) and input_replicas (Triton pods scraped): what the last step was fed;
    input_time: Unix time (s) of the newest arrival rate fed (-inf: none yet). decision: the
    last step's output (None before the first step); policy: the forecaster's and the headroom's
    state, summarised when read (``state_of_policy``: the page's recorder takes a view of every
    series at every step but reads the policy only when a page is drawn); checks / misses:
    forecasts compared with what then arrived, and how many of those the arrival rate exceeded.
    """

    labels: Mapping[str, str]
    settings: PredictiveSettings
    horizon_seconds: float
    sizes_replicas: bool
    input_rate: float
    input_depth: float
    input_replicas: float
    input_time: float
    decision: Decision | None
    state_of_policy: Callable[[], PolicyState]
    checks: int
    misses: int

    @property
    def point(self) -> float:
        """The point forecast of the arrival rate at the horizon (req/s; NaN: none yet)."""
        decision = self.decision
        return decision.arrival_forecast.point if decision is not None else math.nan

    @property
    def policy(self) -> PolicyState:
        """The policy's state after its last step (computed at each read)."""
        return self.state_of_policy()

    @property
    def upper(self) -> float:
        """The calibrated upper bound the policy plans for (req/s; NaN: none yet)."""
        return self.decision.arrival_upper if self.decision is not None else math.nan

    @property
    def planned(self) -> float:
        """The rate the plan is sized for, served as ``triton_arrival_rate_forecast``: the
        upper bound over the planned utilisation (req/s; NaN: none yet)."""
        return self.decision.planned_rate if self.decision is not None else math.nan
