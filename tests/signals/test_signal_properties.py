"""Property-based tests of readings and signals (``make fuzz``: 100,000 cases each).

Whatever targets report (NaN, infinities, negatives, huge numbers, restarts, models
coming and going, scrapes failing) every value computed and every value served through
the pipeline and the API's provider is finite and >= 0, or absent with an error. With
valid counters the served rates are the true ones: never doubled, never zeroed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.config import load_config
from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.kube.selectors import Selector
from adapter.metrics_catalog import SERVED_METRICS
from adapter.pipeline import Pipeline
from adapter.predictive import PredictiveStage
from adapter.provider import SnapshotProvider
from adapter.readings import PENDING, SUCCESS, reading_from_families
from adapter.signals import QUEUE_DEPTH, REQUEST_RATE, Member, ReadingHistory, group_series
from adapter.targets import StaticTargets, Target

pytestmark = pytest.mark.fuzz

PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
GROUP = (("deployment", "d"), ("namespace", "prod"))
T0 = 1_700_000_000.0
FAMILIES = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_pending_request_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
)
hostile_values = st.sampled_from(
    ("NaN", "+Inf", "-Inf", "-1", "-0.5", "1e308", "1.8e19", "18446744073709551616", "0", "4e-320")
)


@dataclass(frozen=True)
class Scrape:
    """One scrape of one member: ``None`` is a failed scrape (nothing read)."""

    gap: float  # seconds since the member's previous scrape
    text: str | None


@st.composite
def member_scrapes(draw: st.DrawFn) -> list[Scrape]:
    """A member's scrapes: honest counters growing at a rate, with hostile surprises."""
    rate = draw(st.floats(min_value=0, max_value=1e4))
    done = draw(st.floats(min_value=0, max_value=1e6))
    scrapes = []
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        gap = draw(st.floats(min_value=0.01, max_value=20))
        done += rate * gap
        event = draw(st.sampled_from(("ok", "ok", "ok", "fail", "restart", "hostile", "gone")))
        if event == "fail":
            scrapes.append(Scrape(gap, None))
            continue
        if event == "restart":
            done = draw(st.floats(min_value=0, max_value=10))
        values = {
            "nv_inference_request_success": repr(done),
            "nv_inference_request_failure": "0",
            "nv_inference_pending_request_count": repr(draw(st.integers(0, 1000)) * 1.0),
            "nv_inference_queue_duration_us": repr(done * 1000),
            "nv_inference_compute_infer_duration_us": repr(done * 2000),
        }
        if event == "hostile":
            values[draw(st.sampled_from(FAMILIES))] = draw(hostile_values)
        models = ("m",) if event != "gone" else ()
        models += tuple(draw(st.lists(st.sampled_from(("x", "y")), max_size=2, unique=True)))
        lines = [
            f'{family}{{model="{model}",version="1"}} {value}'
            for model in models
            for family, value in values.items()
        ]
        gpu = draw(st.none() | st.sampled_from(("0.5", "NaN", "1.5", "-0.1", "1")))
        if gpu is not None:
            lines.append(f'nv_gpu_utilization{{gpu_uuid="g"}} {gpu}')
        scrapes.append(Scrape(gap, "\n".join(lines) + "\n"))
    return scrapes


def valid(value: float) -> bool:
    """Finite and >= 0, or NaN (a value that is never served: 'not known yet')."""
    return value != value or (0.0 <= value < math.inf)


def feed(history: ReadingHistory, scrape: Scrape, mono: float) -> None:
    if scrape.text is not None:
        families = PARSER.parse(scrape.text)
        history.add(reading_from_families(families, "triton", mono, T0 + mono))


@given(st.lists(member_scrapes(), min_size=1, max_size=3), st.sampled_from((1.0, 5.0, 30.0)))
def test_signals_are_finite_and_non_negative_whatever_the_input(
    members: list[list[Scrape]], window: float
) -> None:
    histories = [ReadingHistory(window + 3) for _ in members]
    clocks = [0.0 for _ in members]
    steps = max(len(scrapes) for scrapes in members)
    for step in range(steps):
        for index, scrapes in enumerate(members):
            if step < len(scrapes):
                clocks[index] += scrapes[step].gap
                feed(histories[index], scrapes[step], clocks[index])
        group = [Member("triton", h) for h in histories]
        for metric, points in group_series(GROUP, group, window).items():
            for point in points:
                assert valid(point.value), (metric, point)
        held = {key for h in histories if h.newest for key in h.newest.rejected_models}
        served_models = {
            p.labels["model"]
            for points in group_series(GROUP, group, window).values()
            for p in points
            if "model" in p.labels
        }
        assert not served_models & {model for model, _ in held}  # held, never computed


@given(
    rates=st.lists(st.floats(min_value=0, max_value=1e5), min_size=1, max_size=3),
    starts=st.lists(st.floats(min_value=0, max_value=1e9), min_size=3, max_size=3),
    gaps=st.lists(st.floats(min_value=0.05, max_value=10), min_size=2, max_size=10),
    pending=st.lists(st.integers(min_value=0, max_value=10_000), min_size=3, max_size=3),
)
def test_valid_counters_give_the_true_rate_never_doubled_or_zeroed(
    rates: list[float], starts: list[float], gaps: list[float], pending: list[int]
) -> None:
    histories = [ReadingHistory(60) for _ in rates]
    mono = 0.0
    for gap in gaps:
        mono += gap
        for index, (history, rate) in enumerate(zip(histories, rates, strict=False)):
            done = starts[index] + rate * mono
            text = f'{SUCCESS}{{model="m"}} {done!r}\n{PENDING}{{model="m"}} {pending[index]}\n'
            feed(history, Scrape(gap, text), mono)
    series = group_series(GROUP, [Member("triton", h) for h in histories], 5.0)
    (depth,) = series[QUEUE_DEPTH]
    assert depth.value == sum(pending[: len(rates)])
    (rate,) = series[REQUEST_RATE]
    assert rate.value == pytest.approx(sum(rates), rel=1e-6, abs=1e-3)


@given(groups=st.lists(st.lists(member_scrapes(), min_size=1, max_size=2), min_size=1, max_size=2))
def test_pipeline_and_api_never_serve_a_fabricated_value(groups: list[list[list[Scrape]]]) -> None:
    config = load_config(
        None,
        {
            "signals": {"max_age_seconds": 30, "member_failure_drop_seconds": 40},
            "predictive": {"defaults": {"step_seconds": 1, "capacity_rps": 10}},
        },
    )
    targets = {
        Target.create(f"http://g{g}m{m}/metrics", "triton", {"namespace": "prod", "g": str(g)}): (
            scrapes
        )
        for g, members in enumerate(groups)
        for m, scrapes in enumerate(members)
    }
    pipeline = Pipeline(
        config.scrape,
        config.signals,
        StaticTargets(targets),
        stages=(PredictiveStage(config.predictive),),
    )
    states = {target: pipeline.track(target, now_mono=0.0) for target in targets}
    clocks = dict.fromkeys(targets, 0.0)
    now = 0.0
    for step in range(max(len(scrapes) for scrapes in targets.values())):
        for target, scrapes in targets.items():
            if step < len(scrapes):
                clocks[target] += scrapes[step].gap
                feed(states[target].history, scrapes[step], clocks[target])
        now = max(now, *clocks.values())
        pipeline.publish(now, T0 + now)
        provider = SnapshotProvider(
            SERVED_METRICS, pipeline.snapshot, lambda now=now: T0 + now, 30.0
        )
        for info in SERVED_METRICS:
            for group in range(len(groups)):
                try:
                    served = provider.get_external_metric(
                        "prod", info.name, Selector.parse(f"g={group}")
                    )
                except LookupError:
                    continue  # 404: nothing to serve
                except RuntimeError:
                    continue  # 503: stale or not known, the HPA holds
                for value in served:
                    assert math.isfinite(value.value) and value.value >= 0, (info.name, value)
