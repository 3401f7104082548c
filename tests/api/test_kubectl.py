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
from tests.support.api_support import METRICS, FakeClock, make_provider

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

GV = "/apis/external.metrics.k8s.io/v1beta1"
KUBECTL_TIMEOUT_S = 60.0


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    context = make_server_ssl_context(None, None, hostnames=["tritonscale.tritonscale.svc"])
    runner = await start_server(create_app(make_provider(FakeClock())), "127.0.0.1:0", context)
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
            "Error from server (ServiceUnavailable): metric triton_queue_time_seconds",
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
