"""The adapter's own /metrics: values read from the snapshot, bounded labels, no churn growth."""

from __future__ import annotations

from types import MappingProxyType

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from adapter.selfmetrics import SelfMetrics
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.targets import Target

METRIC_PATH = "/apis/external.metrics.k8s.io/v1beta1/namespaces/prod"


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
    app.router.add_get(f"{METRIC_PATH}/{{metric}}", handler)
    async with TestClient(TestServer(app)) as client:
        for name in ("a", "b", "c", "triton_queue_depth"):
            await client.get(f"{METRIC_PATH}/{name}")
    labels = {s[0]["metric"] for s in samples(metrics)["tritonscale_api_requests_total"]}
    assert labels == {"other", "triton_queue_depth"}
