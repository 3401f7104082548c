"""KEDA's metrics-api scaler reads the same values at /keda/v1 (one number at `value`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapter.api.server import create_app
from tests.support.api_support import NOW_RFC3339, FakeClock, make_provider

KEDA = "/keda/v1/namespaces"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(make_provider(FakeClock())))) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("path", "value", "items"),
    [
        ("/prod/triton_queue_depth", 12003.5, 3),  # summed, as the HPA would
        ("/prod/triton_queue_depth?labelSelector=model%3Dresnet", 3.5, 2),
        ("/prod/triton_queue_depth?labelSelector=deployment+in+%28resnet-b%29", 2.0, 1),
        ("/staging/triton_queue_depth", 7.0, 1),  # namespace isolation
    ],
)
async def test_value_is_the_sum_of_the_selected_series(
    client: TestClient[Any, Any], path: str, value: float, items: int
) -> None:
    response = await client.get(KEDA + path)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    body = await response.json()
    assert body["value"] == pytest.approx(value)  # KEDA: valueLocation: value
    assert len(body["items"]) == items
    assert body["timestamp"] <= NOW_RFC3339


@pytest.mark.parametrize(
    ("path", "code", "reason"),
    [
        ("/prod/no_such_metric", 404, "NotFound"),
        ("/prod/triton_queue_depth?labelSelector=model%3D%3D%3D", 400, "BadRequest"),
        ("/prod/triton_queue_time_seconds", 503, "ServiceUnavailable"),  # stale: hold
        ("/prod/triton_arrival_rate_forecast", 503, "ServiceUnavailable"),  # NaN: hold
        ("/other/triton_queue_depth", 404, "NotFound"),
    ],
)
async def test_errors_are_status_answers_never_zero(
    client: TestClient[Any, Any], path: str, code: int, reason: str
) -> None:
    response = await client.get(KEDA + path)
    body = await response.json()
    assert (response.status, body["reason"], body["code"]) == (code, reason, code)
    assert "value" not in body


def test_keda_reads_are_authorised_as_non_resource_gets() -> None:
    from adapter.kube.reviews import UserInfo, request_attributes

    user = UserInfo("system:serviceaccount:keda:keda-operator")
    path = "/keda/v1/namespaces/prod/triton_desired_replicas"
    attributes = request_attributes(user, "GET", path, {})
    assert (attributes.is_resource_request, attributes.verb, attributes.path) == (
        False,
        "get",
        path,
    )  # what the example ClusterRole grants: nonResourceURLs /keda/v1/*, verb get
