"""The adapter's own /metrics: values read from the snapshot, bounded labels, no churn growth."""

from __future__ import annotations

from types import MappingProxyType

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from adapter.selfmetrics import SelfMetrics
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.targets import Target


def samples(metrics: SelfMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client import generate_latest

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_served_values_are_read_from_the_current_snapshot() -> None:
    labels = {"namespace": "prod", "model": "resnet", "deployment": "llm"}
    current = [Snapshot()]
    metrics = SelfMetrics()
    metrics.serve_snapshots(lambda: current[0])
    assert "tritonscale_signal_value" not in samples(metrics)
    point = SeriesPoint(labels, 7.0, 0.0)
    nan = SeriesPoint({**labels, "model": "bert"}, float("nan"), 0.0)
    current[0] = Snapshot(1.0, MappingProxyType({"triton_queue_depth": (point, nan)}))
    (value,) = samples(metrics)["tritonscale_signal_value"]  # NaN is not exported
    assert value == ({"metric": "triton_queue_depth", **labels}, 7.0)


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
    app.router.add_get("/x/{metric}", handler)
    async with TestClient(TestServer(app)) as client:
        for name in ("a", "b", "c", "triton_queue_depth"):
            await client.get(f"/x/{name}")
    labels = {s[0]["metric"] for s in samples(metrics)["tritonscale_api_requests_total"]}
    assert labels == {"other", "triton_queue_depth"}


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
