"""The whole service with Kubernetes pod discovery: pods come and go, series follow."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from adapter.config import load_config
from adapter.service import running_service
from loadtest.harness.kube_api import FakePodAPI, make_pod
from tests.pipeline.test_targets import counter_server
from tests.support.helpers import async_wait_until

API = "/apis/external.metrics.k8s.io/v1beta1/namespaces/prod/triton_request_rate"


async def test_discovered_pods_are_scraped_and_served(tmp_path: Path) -> None:
    fake = FakePodAPI()
    await fake.start()
    runner, url = await counter_server(40)
    metrics_port = int(url.split(":")[2].split("/")[0])
    config = load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "scrape": {"interval_seconds": 0.2},
            "signals": {
                "rate_window_seconds": 1,
                "max_age_seconds": 2,
                "forget_after_seconds": 4,
            },
            "discovery": {
                "kubeconfig": str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
                "kubernetes": [
                    {"namespaces": ["prod"], "label_selector": "app=triton", "port": metrics_port}
                ],
            },
        },
    )
    fake.put(make_pod("triton-7d9f8b6c5d-a", ip="127.0.0.1"))
    fake.put(make_pod("other-1", ip="127.0.0.1", labels={"app": "other"}))  # not selected
    try:
        async with running_service(config) as service, aiohttp.ClientSession() as session:
            base = f"https://127.0.0.1:{service.port}{API}"

            messages: list[str] = []

            async def served() -> tuple[int, list[dict[str, object]]]:
                async with session.get(base, ssl=False) as response:
                    body = await response.json()
                    messages.append(body.get("message", ""))
                    return response.status, body.get("items", [])

            async def rate_served() -> bool:
                status, items = await served()
                return status == 200 and bool(items)

            await async_wait_until(rate_served, timeout=15, message="rate of discovered pod")
            _status, items = await served()
            (item,) = items
            assert item["metricLabels"] == {
                "namespace": "prod",
                "deployment": "triton",
                "model": "m",
            }
            assert len(service.pipeline.targets) == 1  # the unselected pod is not a target

            fake.delete("prod", "triton-7d9f8b6c5d-a")

            async def status_is(code: int) -> bool:
                status, _items = await served()
                return status == code

            # held while younger than max age, then a 503 naming where data stopped, then 404
            await async_wait_until(lambda: status_is(503), timeout=15, message="stale 503")
            assert re.match(rf"stale: last data \d+ s ago from {re.escape(url)}", messages[-1])
            await async_wait_until(lambda: status_is(404), timeout=15, message="series forgotten")
            assert not service.pipeline.targets
    finally:
        await runner.cleanup()
        await fake.stop()


PODS_API = (
    "/apis/custom.metrics.k8s.io/v1beta2/namespaces/prod/pods/*/triton_request_rate"
    "?labelSelector=app%3Dtriton"
)


async def test_discovered_pods_are_served_as_pods_metrics(tmp_path: Path) -> None:
    """What the HPA's Pods metric reads: one value per discovered pod, named after it."""
    fake = FakePodAPI()
    await fake.start()
    runner, url = await counter_server(40)
    metrics_port = int(url.split(":")[2].split("/")[0])
    config = load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "scrape": {"interval_seconds": 0.2},
            "signals": {"rate_window_seconds": 1},
            "discovery": {
                "kubeconfig": str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
                "kubernetes": [{"namespaces": ["prod"], "port": metrics_port}],
            },
        },
    )
    # two pods of one Deployment scraping the same fake server (one IP on loopback)
    fake.put(make_pod("triton-7d9f8b6c5d-a", ip="127.0.0.1"))
    fake.put(make_pod("triton-7d9f8b6c5d-b", ip="127.0.0.1"))
    fake.put(make_pod("other-1", ip="127.0.0.1", labels={"app": "other"}))
    try:
        async with running_service(config) as service, aiohttp.ClientSession() as session:
            base = f"https://127.0.0.1:{service.port}{PODS_API}"

            async def pods_served() -> dict[str, object] | None:
                async with session.get(base, ssl=False) as response:
                    body = await response.json()
                    if response.status != 200 or len(body["items"]) < 2:
                        return None
                    return {i["describedObject"]["name"]: i["value"] for i in body["items"]}

            served = await async_wait_until(pods_served, timeout=15, message="both pods' rates")
            assert set(served) == {"triton-7d9f8b6c5d-a", "triton-7d9f8b6c5d-b"}
    finally:
        await runner.cleanup()
        await fake.stop()
