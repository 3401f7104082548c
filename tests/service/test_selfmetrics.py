"""The adapter's own /metrics: values read from the snapshot, bounded labels, no churn growth,
requests labelled by handler (probes and scrapes apart from metric reads), the standard
process_*/python_* collectors, and what the alerts need: the max age, the serving
certificate's expiry and each series' forecast score (``PredictiveStage.forecast_checks``)."""

from __future__ import annotations

import math
import ssl
import time
from types import MappingProxyType

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapter.api.server import create_app
from adapter.api.tls import make_server_ssl_context
from adapter.config import load_config
from adapter.predictive import ForecastCheck, PredictiveStage
from adapter.selfmetrics import HANDLERS, SelfMetrics, handler_of, merged_exposition
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.targets import Target
from tests.support.api_support import FakeClock, make_provider

METRIC_PATH = "/apis/external.metrics.k8s.io/v1beta1/namespaces/prod"
LABELS = {"namespace": "prod", "model": "resnet", "deployment": "llm"}


def samples(metrics: SelfMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def exposed_samples() -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every sample a busy adapter exposes: every family has data."""
    metrics = SelfMetrics(max_age_seconds=30.0)
    metrics.serve_snapshots(
        lambda: Snapshot(
            1.0, MappingProxyType({"triton_queue_depth": (SeriesPoint(LABELS, 1, 0),)})
        )
    )
    metrics.serve_forecast_checks(lambda: [ForecastCheck(LABELS, 0.98, 135, 4, 1, 1.0, 2.0, 1.5)])
    metrics.observe_serving_certificate(make_server_ssl_context(None, None, hostnames=[]))
    metrics.observe_scrape(
        Target.create("http://10.0.0.5:8002/metrics", "triton", {}), 0.1, "timeout"
    )
    metrics.api_requests.labels("200", "metric", "triton_queue_depth").inc()
    metrics.api_duration.labels("metric").observe(0.001)
    return [(name, labels) for name, series in samples(metrics).items() for labels, _ in series]


def test_served_values_are_read_from_the_current_snapshot() -> None:
    current = [Snapshot()]
    metrics = SelfMetrics()
    metrics.serve_snapshots(lambda: current[0])
    assert "tritonscale_signal_value" not in samples(metrics)
    point = SeriesPoint(LABELS, 7.0, 0.0)
    nan = SeriesPoint({**LABELS, "model": "bert"}, float("nan"), 0.0)
    current[0] = Snapshot(1.0, MappingProxyType({"triton_queue_depth": (point, nan)}))
    (value,) = samples(metrics)["tritonscale_signal_value"]  # NaN is not exported
    assert value == ({"metric": "triton_queue_depth", **LABELS}, 7.0)


def test_removed_targets_leave_the_registry() -> None:
    metrics = SelfMetrics()
    target = Target.create("http://10.0.0.5:8002/metrics", "triton", {})
    metrics.observe_scrape(target, 0.01, None)
    metrics.observe_scrape(target, 0.5, "timeout")
    assert any(
        s[0].get("target") == target.url
        for s in samples(metrics)["tritonscale_scrape_errors_total"]
    )
    metrics.forget_target(target)
    remaining = samples(metrics)
    assert all(
        labels.get("target") != target.url for series in remaining.values() for labels, _ in series
    )


async def test_unknown_metric_paths_share_one_label_value() -> None:
    metrics = SelfMetrics()

    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application(middlewares=[metrics.middleware])
    app.router.add_get(f"{METRIC_PATH}/{{metric}}", handler)
    async with TestClient(TestServer(app)) as client:
        for name in ("a", "b", "c", "triton_queue_depth"):
            await client.get(f"{METRIC_PATH}/{name}")
    labels = {s[0]["metric"] for s in samples(metrics)["tritonscale_api_requests_total"]}
    assert labels == {"other", "triton_queue_depth"}


# --- requests by handler ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "handler"),
    [
        (f"{METRIC_PATH}/triton_queue_depth", "metric"),
        ("/keda/v1/namespaces/prod/triton_queue_depth", "keda"),
        ("/apis", "discovery"),
        ("/apis/external.metrics.k8s.io/v1beta1", "discovery"),
        ("/openapi/v2", "openapi"),
        ("/healthz", "probe"),
        ("/livez/ping", "probe"),
        ("/readyz", "probe"),
        ("/metrics", "metrics"),
        ("/metricsz", "other"),
        ("/readyzz", "other"),
        ("/", "other"),
        ("/../../etc/passwd", "other"),
    ],
)
def test_every_path_maps_to_one_bounded_handler(path: str, handler: str) -> None:
    assert handler_of(path) == handler
    assert handler in HANDLERS


async def test_probes_and_scrapes_are_counted_apart_from_metric_reads() -> None:
    metrics = SelfMetrics()
    app = create_app(make_provider(FakeClock()), observers=(metrics.middleware,))
    app.router.add_get("/metrics", metrics.handle_metrics)
    async with TestClient(TestServer(app)) as client:
        for path in ("/healthz", "/readyz", "/livez", "/metrics", "/no/such/path",
                     f"{METRIC_PATH}/triton_queue_depth", f"{METRIC_PATH}/nope"):  # fmt: skip
            await client.get(path)
    counted = {
        (labels["handler"], labels["code"], labels["metric"]): value
        for labels, value in samples(metrics)["tritonscale_api_requests_total"]
    }
    assert counted == {
        ("probe", "200", ""): 3.0,
        ("metrics", "200", ""): 1.0,
        ("other", "404", ""): 1.0,  # raised by the router, still counted
        ("metric", "200", "triton_queue_depth"): 1.0,
        ("metric", "404", "other"): 1.0,
    }
    timed = {
        labels["handler"]
        for labels, _ in samples(metrics)["tritonscale_api_request_duration_seconds_count"]
    }
    assert timed == {"probe", "metrics", "other", "metric"}


async def test_a_handler_that_raises_is_counted_as_500() -> None:
    metrics = SelfMetrics()

    async def broken(_: web.Request) -> web.Response:
        raise RuntimeError("bug")

    app = web.Application(middlewares=[metrics.middleware])
    app.router.add_get("/apis", broken)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/apis")).status == 500
    ((labels, value),) = samples(metrics)["tritonscale_api_requests_total"]
    assert (labels["handler"], labels["code"], value) == ("discovery", "500", 1.0)


# --- process, build, limits, certificate ------------------------------------------------------


def test_process_and_python_metrics_are_exported() -> None:
    exported = samples(SelfMetrics())
    standard = (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
    )
    for name in standard:
        assert name in exported, name
    ((labels, value),) = exported["tritonscale_build_info"]
    assert value == 1.0 and labels["version"]


def test_max_age_is_exported_only_when_known() -> None:
    assert "tritonscale_signal_max_age_seconds" not in samples(SelfMetrics())
    ((_, value),) = samples(SelfMetrics(max_age_seconds=30.0))["tritonscale_signal_max_age_seconds"]
    assert value == 30.0


def test_series_age_is_the_oldest_series_per_metric_and_namespace() -> None:
    now = time.time()
    points = (
        SeriesPoint(LABELS, 1.0, now - 5),
        SeriesPoint({**LABELS, "model": "b"}, 1.0, now - 50),
    )
    metrics = SelfMetrics()
    metrics.serve_snapshots(lambda: Snapshot(now, MappingProxyType({"triton_queue_depth": points})))
    ((labels, age),) = samples(metrics)["tritonscale_series_age_seconds"]
    assert labels == {"metric": "triton_queue_depth", "namespace": "prod"}
    assert 50 <= age < 60


def test_the_serving_certificate_expiry_is_exported() -> None:
    metrics = SelfMetrics()
    metrics.observe_serving_certificate(make_server_ssl_context(None, None, hostnames=[]))
    ((_, expiry),) = samples(metrics)["tritonscale_serving_certificate_expiry_timestamp_seconds"]
    days_left = (expiry - time.time()) / 86400
    assert 364 < days_left <= 365  # the self-signed certificate is valid one year


def test_an_unknown_certificate_expiry_is_not_exported_as_zero() -> None:
    metrics = SelfMetrics()
    metrics.observe_serving_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert "tritonscale_serving_certificate_expiry_timestamp_seconds" not in samples(metrics)


# --- forecast scores --------------------------------------------------------------------------


def test_forecast_scores_are_exported_and_unknown_values_left_out() -> None:
    checks = [
        ForecastCheck(LABELS, 0.98, 135.0, checks=40, misses=3, due_point=10.0, due_upper=12.0,
                      actual=13.0),
        ForecastCheck({**LABELS, "model": "bert"}, 0.9, 60.0),  # nothing compared yet
    ]  # fmt: skip
    metrics = SelfMetrics()
    metrics.serve_forecast_checks(lambda: checks)
    got = samples(metrics)

    def by_model(name: str) -> dict[str, float]:
        return {labels["model"]: value for labels, value in got.get(name, [])}

    assert by_model("tritonscale_forecast_checks_total") == {"resnet": 40, "bert": 0}
    assert by_model("tritonscale_forecast_misses_total") == {"resnet": 3, "bert": 0}
    assert by_model("tritonscale_forecast_quantile") == {"resnet": 0.98, "bert": 0.9}
    assert by_model("tritonscale_forecast_horizon_seconds") == {"resnet": 135, "bert": 60}
    assert by_model("tritonscale_forecast_actual_arrival_rate") == {"resnet": 13.0}
    due = {
        (labels["model"], labels["bound"]): value
        for labels, value in got["tritonscale_forecast_due_arrival_rate"]
    }
    assert due == {("resnet", "point"): 10.0, ("resnet", "upper"): 12.0}


def _stage(horizon_steps: int) -> PredictiveStage:
    # step 1 s; horizon = cold start + sync = horizon_steps s; the "last" forecaster predicts
    # the last rate with its own small bound, so a jump above it is a miss
    config = load_config(
        None,
        {"predictive": {"defaults": {"step_seconds": 1, "cold_start_seconds": horizon_steps - 1,
                                     "hpa_sync_period_seconds": 1, "forecaster": "last"}}},
    )  # fmt: skip
    return PredictiveStage(config.predictive)


def test_each_forecast_is_scored_against_the_step_it_was_made_for() -> None:
    stage = _stage(horizon_steps=3)
    group = (("namespace", "prod"),)
    rates = [10.0] * 8 + [100.0] + [10.0] * 3
    made: list[float] = []  # upper bound published after each step
    for step, rate in enumerate(rates):
        raw = {
            "triton_arrival_rate": [SeriesPoint(LABELS, rate, 1000.0 + step)],
            "triton_queue_depth": [SeriesPoint(LABELS, 0.0, 1000.0 + step)],
        }
        out = stage.step(float(step), raw, {group: 1})
        if step >= 1:  # the first call only starts the series; a step is due each second
            (forecast,) = out["triton_arrival_rate_forecast"]
            made.append(forecast.value)
    (check,) = stage.forecast_checks()
    # steps 1..11 decided; the first 3 have no forecast due yet
    assert check.checks == len(made) - 3
    assert check.misses == 1  # only the jump to 100 beat the bound made 3 steps before
    assert check.due_upper == made[-4]  # the forecast due now was made 3 steps ago
    assert check.actual == 10.0
    assert check.quantile == pytest.approx(0.995)  # the stated slo_attainment (default)
    assert check.horizon_seconds == 3.0
    assert math.isfinite(check.due_point) and check.due_point <= check.due_upper


def test_a_step_without_a_fresh_rate_is_not_scored() -> None:
    stage = _stage(horizon_steps=1)
    group = (("namespace", "prod"),)
    for step in range(4):
        stamp = 1000.0 + min(step, 1)  # the rate stops being fresh after step 1
        raw = {
            "triton_arrival_rate": [SeriesPoint(LABELS, 10.0, stamp)],
            "triton_queue_depth": [SeriesPoint(LABELS, 0.0, 1000.0 + step)],
        }
        stage.step(float(step), raw, {group: 1})
    (check,) = stage.forecast_checks()
    assert check.checks == 0  # never a known actual against a forecast made on fresh data
    assert math.isnan(check.actual)


def test_connection_counters_are_exported_as_they_are_at_scrape_time() -> None:
    from adapter.api.connections import ConnectionStats

    stats = ConnectionStats()
    metrics = SelfMetrics()
    metrics.serve_connection_stats(stats)
    stats.open, stats.accepted = 3, 10
    stats.count_close("header_timeout")
    stats.count_close("header_timeout")
    stats.bad_requests["BadStatusLine"] = 4
    exported = samples(metrics)
    assert exported["tritonscale_api_connections_open"] == [({}, 3.0)]
    assert exported["tritonscale_api_connections_accepted_total"] == [({}, 10.0)]
    assert exported["tritonscale_api_connections_closed_total"] == [
        ({"reason": "header_timeout"}, 2.0)
    ]
    assert exported["tritonscale_api_bad_requests_total"] == [({"error": "BadStatusLine"}, 4.0)]


def test_rejected_samples_and_target_sizes_are_counted_then_forgotten() -> None:
    from adapter.readings import ModelCounters, Reading, Rejection

    metrics = SelfMetrics()
    target = Target.create("http://10.0.0.5:8002/metrics", "triton", {})
    rejected = Rejection("nv_inference_request_success", "nan", 2, "model 'm'")
    reading = Reading(
        0.0,
        0.0,
        {("ok", ""): ModelCounters(0, 1, 0, 0, 0)},
        rejected_models=frozenset({("m", "")}),
        rejections=(rejected,),
        series=7,
    )
    metrics.observe_scrape(target, 0.01, None, reading)
    metrics.observe_scrape(target, 0.01, None, reading)
    metrics.observe_scrape(target, 0.01, "too_many_models", None)
    got = samples(metrics)
    (count,) = got["tritonscale_rejected_samples_total"]
    assert count == (
        {"target": target.url, "family": "nv_inference_request_success", "reason": "nan"},
        4.0,
    )
    assert got["tritonscale_target_series"] == [({"target": target.url}, 7.0)]
    assert got["tritonscale_target_models"] == [({"target": target.url}, 2.0)]
    errors = {s[0]["reason"]: s[1] for s in got["tritonscale_scrape_errors_total"]}
    assert errors == {"too_many_models": 1.0}
    metrics.forget_target(target)
    assert all(
        labels.get("target") != target.url
        for series in samples(metrics).values()
        for labels, _ in series
    )


MERGE_CASES = [
    # (api exposition, main exposition, expected merged lines)
    pytest.param(
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1.0\n",
        '# HELP b B.\n# TYPE b gauge\nb{x="1"} 2.0\n',
        [
            "# HELP a_total A.",
            "# TYPE a_total counter",
            'a_total{process="api"} 1.0',
            "# HELP b B.",
            "# TYPE b gauge",
            'b{process="main",x="1"} 2.0',
        ],
        id="families of one process each: labelled, kept in order",
    ),
    pytest.param(
        "# HELP p P.\n# TYPE p gauge\np 1.0\n",
        "# HELP p P.\n# TYPE p gauge\np 2.0\n",
        ["# HELP p P.", "# TYPE p gauge", 'p{process="api"} 1.0', 'p{process="main"} 2.0'],
        id="a family both export: one header, both samples together",
    ),
    pytest.param(
        "# HELP h H.\n# TYPE h histogram\n",
        '# HELP h H.\n# TYPE h histogram\nh_bucket{le="+Inf"} 3.0\nh_count 3.0\nh_sum 1.5\n',
        [
            "# HELP h H.",
            "# TYPE h histogram",
            'h_bucket{process="main",le="+Inf"} 3.0',
            'h_count{process="main"} 3.0',
            'h_sum{process="main"} 1.5',
        ],
        id="an empty family in one process takes the other's samples",
    ),
]


@pytest.mark.parametrize(("api", "main", "expected"), MERGE_CASES)
def test_merged_exposition(api: str, main: str, expected: list[str]) -> None:
    merged = merged_exposition([("api", api.encode()), ("main", main.encode())]).decode()
    assert merged.splitlines() == expected
    assert list(text_string_to_metric_families(merged))  # still a valid exposition
