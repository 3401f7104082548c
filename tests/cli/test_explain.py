"""``tritonscale explain`` against a running adapter: what is served and why, the predictive
state behind the forecast, an HPA object run through the HPA's algorithm on the served values,
and why a series is absent (no targets, no capacity, stale, an unknown metric)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from adapter import explain_cli
from adapter.cli import plugin_commands
from adapter.config import load_config
from adapter.service import RunningService, running_service
from tests.support.fake_triton import FakeTriton, serving
from tests.support.helpers import async_wait_until


async def run_explain(*argv: str) -> tuple[int, str, str]:
    """The command in a thread (it blocks on HTTP while the service runs in this loop)."""

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = explain_cli.main(list(argv))
        return code, out.getvalue(), err.getvalue()

    return await asyncio.to_thread(run)


async def served(service: RunningService, namespace: str, metric: str) -> tuple[int, Any]:
    url = f"https://127.0.0.1:{service.port}/keda/v1/namespaces/{namespace}/{metric}"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session,
        session.get(url) as response,
    ):
        return response.status, await response.json()


@pytest.fixture
async def service() -> AsyncIterator[tuple[RunningService, FakeTriton, FakeTriton]]:
    async with serving(FakeTriton(20.0, depth=2.0), FakeTriton(5.0, model="bert")) as fakes:
        prod, dev = fakes
        config = load_config(
            None,
            {
                "listen": "127.0.0.1:0",
                "targets": [
                    {"url": prod.url, "labels": {"namespace": "prod", "deployment": "llm"}},
                    {"url": dev.url, "labels": {"namespace": "dev", "deployment": "bert"}},
                ],
                "scrape": {"interval_seconds": 0.2, "timeout_seconds": 1.0},
                "signals": {"rate_window_seconds": 1.0, "max_age_seconds": 3.0},
                "predictive": {
                    "defaults": {
                        "step_seconds": 0.5,
                        "cold_start_seconds": 0.5,
                        "hpa_sync_period_seconds": 1,
                    },
                    "series": [{"match": {"namespace": "prod"}, "capacity_rps": 10}],
                },
            },
        )
        async with running_service(config) as running:

            async def ready() -> bool:
                code, _ = await served(running, "prod", "triton_desired_replicas")
                code_dev, _ = await served(running, "dev", "triton_arrival_rate_forecast")
                return code == 200 and code_dev == 200

            await async_wait_until(ready, timeout=60, interval=0.2, message="forecasts served")
            yield running, prod, dev


def server_args(service: RunningService) -> list[str]:
    return ["--server", f"https://127.0.0.1:{service.port}", "--insecure-skip-tls-verify"]


def test_explain_is_a_tritonscale_command() -> None:
    assert "explain" in plugin_commands()


async def test_a_served_series_with_its_targets_and_forecast(
    service: tuple[RunningService, FakeTriton, FakeTriton],
) -> None:
    running, prod, _ = service
    code, out, err = await run_explain(
        "triton_arrival_rate_forecast",
        "-n",
        "prod",
        "-l",
        "model=resnet",
        "--json",
        *server_args(running),
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["served"]["status"] == 200
    (series,) = doc["series"]
    assert series["labels"] == {"namespace": "prod", "deployment": "llm", "model": "resnet"}
    assert series["state"] == "served"
    (target,) = series["targets"]
    assert target["url"] == prod.url and target["outcome"] == "ok" and target["error"] is None
    assert target["last_attempt"] >= target["last_success"] > doc["now"] - 3
    in_window = [r for r in target["readings"] if r["in_window"]]
    assert len(in_window) >= 2 and all(r["pending"] == 2.0 for r in in_window)
    forecast = series["forecast"]
    assert forecast["horizon_seconds"] == 1.5  # cold start 0.5 + sync 1, whole steps
    assert forecast["forecaster"]["name"] == "holt"
    assert set(forecast["forecaster"]["state"]) >= {"level", "trend", "alpha"}
    headroom = forecast["headroom"]
    assert headroom["method"] == "attainment"
    assert headroom["target"] == {"slo_attainment": 0.995}  # the stated default
    details = headroom["details"]
    assert details["violation_budget"] == pytest.approx(0.005)
    assert 0 < details["budget_now"] < 1  # what the feedback lets the last plan spend
    assert 0 < details["utilisation"] <= 1 and details["utilisation"] == forecast["utilisation"]
    assert headroom["margin"] == pytest.approx(forecast["margin"])  # the last plan's margin
    # the served forecast is the rate the plan is sized for: upper over the planned utilisation
    assert forecast["planned"] == series["value"]
    assert forecast["planned"] == pytest.approx(forecast["upper"] / forecast["utilisation"])
    assert forecast["upper"] >= forecast["point"]
    assert forecast["inputs"]["replicas"] == 1
    # the same value the API serves at the same moment (nothing changes between: it is held)
    api_code, body = await served(running, "prod", "triton_arrival_rate_forecast")
    assert api_code == 200 and doc["served"]["values"][0]["labels"] == body["items"][0]["labels"]

    code, text, err = await run_explain(
        "triton_arrival_rate_forecast", "-n", "prod", *server_args(running)
    )
    assert code == 0, err
    for expected in (
        "The API serves 1 series now",
        f"target {prod.url} (triton): ok",
        "forecast: holt, one step every 0.5s, horizon 1.5s",
        "headroom (attainment, slo_attainment=0.995)",
        "violation_budget=0.005, budget_now=",
        "planned for (triton_arrival_rate_forecast)",
        "= upper / planned utilisation",
        "desired replicas",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"


async def test_an_hpa_object_is_evaluated_on_the_served_values(
    service: tuple[RunningService, FakeTriton, FakeTriton], tmp_path: Path
) -> None:
    running, _, _ = service
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "llm", "namespace": "prod"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"},
            "minReplicas": 1,
            "maxReplicas": 20,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": "triton_desired_replicas",
                            "selector": {"matchLabels": {"deployment": "llm"}},
                        },
                        "target": {"type": "AverageValue", "averageValue": "1"},
                    },
                },
                {"type": "Resource", "resource": {"name": "cpu"}},
            ],
        },
        "status": {"currentReplicas": 1},
    }
    path = tmp_path / "hpa.yaml"
    path.write_text(yaml.safe_dump(hpa))
    code, out, err = await run_explain(
        "triton_desired_replicas",
        "-n",
        "prod",
        "--hpa",
        str(path),
        "--json",
        *server_args(running),
    )
    assert code == 0, err
    report = json.loads(out)["hpa"]
    (metric,) = report["metrics"]
    assert metric["status"] == 200 and metric["selector"] == "deployment=llm"
    desired = metric["values"][0]
    # AverageValue 1 on the desired replicas: the HPA proposes exactly that count
    assert report["metric_replicas"] == max(1, int(desired))
    assert report["current_replicas"] == 1
    assert report["not_evaluated"] == [
        "spec.metrics[1] (Resource): only External metrics are evaluated"
    ]
    assert report["desired_replicas"] == min(report["metric_replicas"], 4)  # +4 pods per 15 s

    code, text, _ = await run_explain(
        "triton_desired_replicas",
        "-n",
        "prod",
        "--hpa",
        str(path),
        "--replicas",
        "3",
        *server_args(running),
    )
    assert code == 0
    assert "HPA prod/llm (1..20 replicas), from 3 current replicas:" in text
    assert "triton_desired_replicas{deployment=llm} target AverageValue 1" in text


async def test_why_a_series_is_absent(
    service: tuple[RunningService, FakeTriton, FakeTriton],
) -> None:
    running, prod, _ = service

    async def absent(*argv: str) -> list[str]:
        code, out, err = await run_explain(*argv, "--json", *server_args(running))
        assert code == 0, err
        doc = json.loads(out)
        assert doc["series"] == [] and doc["served"]["status"] == 404
        reasons: list[str] = doc["absent"]
        return reasons

    (reason,) = await absent("triton_queue_depth", "-n", "nowhere")
    assert reason.startswith("no targets matched: tritonscale scrapes no target in namespace")
    assert "dev, prod" in reason
    (reason,) = await absent("triton_queue_depth", "-n", "prod", "-l", "deployment=other")
    assert "no target in namespace prod has labels matching selector 'deployment=other'" in reason
    (reason,) = await absent("triton_queue_depth", "-n", "prod", "-l", "model=bert")
    assert "report models resnet; no series of them matches" in reason
    (reason,) = await absent("triton_desired_replicas", "-n", "dev")
    assert reason.startswith(
        "no capacity configured for {deployment=bert,model=bert,namespace=dev}"
    )
    (reason,) = await absent("triton_no_such_metric", "-n", "prod")
    assert reason.startswith("tritonscale does not serve triton_no_such_metric; it serves:")

    # a target that stops answering: stale since its last successful scrape, with the error
    prod.failing = True

    async def stale() -> dict[str, Any] | None:
        _, out, _ = await run_explain(
            "triton_queue_depth", "-n", "prod", "--json", *server_args(running)
        )
        doc = json.loads(out)
        return doc if doc["series"] and doc["series"][0]["state"] == "stale" else None

    doc = await async_wait_until(stale, timeout=30, interval=0.5, message="a stale series")
    assert doc["served"]["status"] == 503
    (series,) = doc["series"]
    assert series["reason"].startswith("stale since ")
    assert f"from {prod.url}: last successful scrape at" in series["reason"]
    assert "(http_503: HTTP 503 from" in series["reason"]
    (target,) = series["targets"]
    assert target["outcome"] == "failing" and target["consecutive_failures"] >= 1


async def test_connection_problems_are_one_clear_line(
    service: tuple[RunningService, FakeTriton, FakeTriton], tmp_path: Path
) -> None:
    running, _, _ = service
    code, _, err = await run_explain("triton_queue_depth", "-n", "prod")
    assert code == 1 and "give --server https://HOST:PORT" in err
    # the adapter's certificate is self-signed: verification fails without the flag
    code, _, err = await run_explain(
        "triton_queue_depth", "--server", f"https://127.0.0.1:{running.port}"
    )
    assert code == 1 and "cannot reach" in err and "CERTIFICATE_VERIFY_FAILED" in err
    bad = tmp_path / "hpa.yaml"
    bad.write_text("kind: HorizontalPodAutoscaler\nspec:\n  maxReplicas: 3\n  metrics: []\n")
    code, _, err = await run_explain(
        "triton_queue_depth", "-n", "prod", "--hpa", str(bad), *server_args(running)
    )
    assert code == 1
    assert err.strip().endswith("spec.metrics: no External metric to evaluate")
