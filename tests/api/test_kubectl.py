"""A real Kubernetes client (kubectl, i.e. client-go) reads the API over TLS.

kubectl runs as an asyncio subprocess so the server, in the same event loop, can answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapter.api.server import create_app
from adapter.api.tls import bound_port, make_server_ssl_context, start_server
from tests.support.api_support import METRICS, FakeClock, make_custom_provider, make_provider

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

GV = "/apis/external.metrics.k8s.io/v1beta1"
KUBECTL_TIMEOUT_S = 60.0


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    context = make_server_ssl_context(None, None, hostnames=["tritonscale.tritonscale.svc"])
    clock = FakeClock()
    app = create_app(make_provider(clock), custom=make_custom_provider(clock))
    runner = await start_server(app, "127.0.0.1:0", context)
    try:
        yield f"https://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


async def kubectl_get_raw(server: str, path: str, home: Path) -> tuple[int, str, str]:
    """``kubectl get --raw`` with no kubeconfig; a dummy token stops it prompting for a login."""
    empty_config = home / "kubeconfig"
    empty_config.touch()
    assert KUBECTL is not None
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        f"--server={server}",
        "--insecure-skip-tls-verify",
        "--token=unused",
        f"--kubeconfig={empty_config}",
        "get",
        "--raw",
        path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/bin"), "HOME": str(home)},
    )
    out, err = await asyncio.wait_for(process.communicate(), KUBECTL_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def get_json(server: str, path: str, home: Path) -> Any:
    code, out, err = await kubectl_get_raw(server, path, home)
    assert code == 0, err
    return json.loads(out)


async def test_kubectl_reads_metric_values(server_url: str, tmp_path: Path) -> None:
    body = await get_json(
        server_url,
        f"{GV}/namespaces/prod/triton_queue_depth?labelSelector=model%3Dresnet",
        tmp_path,
    )
    assert body["kind"] == "ExternalMetricValueList"
    assert [(i["metricLabels"]["deployment"], i["value"]) for i in body["items"]] == [
        ("resnet-a", "1500m"),
        ("resnet-b", "2"),
    ]


async def test_kubectl_reads_discovery(server_url: str, tmp_path: Path) -> None:
    body = await get_json(server_url, GV, tmp_path)
    assert body["kind"] == "APIResourceList"
    assert [r["name"] for r in body["resources"]] == [m.name for m in METRICS]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            f"{GV}/namespaces/prod/triton_nonexistent",
            "Error from server (NotFound): the server could not find the metric "
            "triton_nonexistent for namespaces",
            id="unknown-metric",
        ),
        pytest.param(
            f"{GV}/namespaces/prod/triton_queue_time_seconds",
            "Error from server (ServiceUnavailable): stale: last data 35 s ago from "
            "http://resnet-b.prod:8002/metrics",
            id="stale",
        ),
        pytest.param(
            f"{GV}/namespaces/prod/triton_queue_depth?labelSelector=model+in+%28a",
            "Error from server (BadRequest): invalid label selector 'model in (a'",
            id="bad-selector",
        ),
    ],
)
async def test_kubectl_shows_the_status_message(
    server_url: str, tmp_path: Path, path: str, expected: str
) -> None:
    code, _, err = await kubectl_get_raw(server_url, path, tmp_path)
    assert code != 0
    assert expected in err


# --- custom.metrics.k8s.io ---------------------------------------------------------------------

CUSTOM = "/apis/custom.metrics.k8s.io"


async def test_kubectl_reads_custom_metrics_discovery(server_url: str, tmp_path: Path) -> None:
    body = await get_json(server_url, f"{CUSTOM}/v1beta2", tmp_path)
    names = {r["name"] for r in body["resources"]}
    assert {"pods/triton:queue_compute:ratio", "deployments.apps/triton_desired_replicas"} <= names


async def test_kubectl_reads_pods_metrics_as_nvidia_readme_asks(
    server_url: str, tmp_path: Path
) -> None:
    """The check in NVIDIA's tutorial README: v1beta1, singular ``pod``, ``*``."""
    body = await get_json(
        server_url,
        f"{CUSTOM}/v1beta1/namespaces/prod/pod/*/triton:queue_compute:ratio"
        "?labelSelector=app%3Dllm&metricLabelSelector=model%3Dresnet",
        tmp_path,
    )
    assert body["kind"] == "MetricValueList"
    assert [(i["describedObject"]["name"], i["value"]) for i in body["items"]] == [
        ("llm-a", "1250m"),
        ("llm-b", "800m"),
    ]


async def test_kubectl_reads_a_deployment_object_metric(server_url: str, tmp_path: Path) -> None:
    body = await get_json(
        server_url,
        f"{CUSTOM}/v1beta2/namespaces/prod/deployments.apps/resnet-b/triton_queue_depth",
        tmp_path,
    )
    (item,) = body["items"]
    assert item["describedObject"]["kind"] == "Deployment" and item["value"] == "2"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            f"{CUSTOM}/v1beta2/namespaces/prod/pods/*/triton_nonexistent",
            "Error from server (NotFound): the server could not find the metric "
            "triton_nonexistent for pods",
            id="unknown-metric",
        ),
        pytest.param(
            f"{CUSTOM}/v1beta2/namespaces/prod/pods/*/triton_queue_time_seconds",
            "Error from server (ServiceUnavailable): metric triton_queue_time_seconds",
            id="stale",
        ),
        pytest.param(
            f"{CUSTOM}/v1beta2/namespaces/prod/pods/*/triton_queue_compute_ratio",
            "Error from server (BadRequest): pods llm-a in namespace prod has 2 series",
            id="ambiguous",
        ),
    ],
)
async def test_kubectl_shows_the_custom_metrics_status_message(
    server_url: str, tmp_path: Path, path: str, expected: str
) -> None:
    code, _, err = await kubectl_get_raw(server_url, path, tmp_path)
    assert code != 0
    assert expected in err
