"""The HTTP contract of the external metrics API, over a real socket (aiohttp TestServer)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from adapter.api.server import create_app
from adapter.kube.selectors import Selector
from adapter.provider import ExternalMetricValue
from adapter.snapshot import MetricInfo
from tests.support.api_support import (
    MAX_AGE_SECONDS,
    METRICS,
    FakeClock,
    make_provider,
    status_body,
)

GV = "/apis/external.metrics.k8s.io/v1beta1"
PROD = f"{GV}/namespaces/prod"
STAGING = f"{GV}/namespaces/staging"

Client = TestClient[web.Request, web.Application]


@dataclass
class Readiness:
    reason: str | None = None

    def __call__(self) -> str | None:
        return self.reason


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


async def _client(app: web.Application) -> Client:
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(clock: FakeClock, readiness: Readiness) -> AsyncIterator[Client]:
    c = await _client(create_app(make_provider(clock), readiness=readiness))
    yield c
    await c.close()


async def get_json(client: Client, path: str | URL, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(await response.read())


def deployments(body: dict[str, Any]) -> list[str]:
    return sorted(item["metricLabels"]["deployment"] for item in body["items"])


# --- values ---------------------------------------------------------------------------


async def test_value_list_is_exact_external_metric_value_list(client: Client) -> None:
    body = await get_json(client, f"{PROD}/triton_queue_depth?labelSelector=model%3Dresnet")
    assert body == {
        "kind": "ExternalMetricValueList",
        "apiVersion": "external.metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": [
            {
                "metricName": "triton_queue_depth",
                "metricLabels": {"namespace": "prod", "model": "resnet", "deployment": "resnet-a"},
                "timestamp": "2026-08-20T11:59:58Z",
                "value": "1500m",
            },
            {
                "metricName": "triton_queue_depth",
                "metricLabels": {"namespace": "prod", "model": "resnet", "deployment": "resnet-b"},
                "timestamp": "2026-08-20T11:59:58Z",
                "value": "2",
            },
        ],
    }


async def test_window_is_integer_seconds_when_known(client: Client) -> None:
    body = await get_json(client, f"{PROD}/triton_request_rate")
    (item,) = body["items"]
    assert item["window"] == 60
    assert item["value"] == "80m"


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        pytest.param("gpu_utilization", "0", id="zero-is-a-real-zero"),
        pytest.param("triton_desired_replicas", "-1500m", id="negative"),
    ],
)
async def test_finite_values_are_served_canonically(
    client: Client, metric: str, value: str
) -> None:
    body = await get_json(client, f"{PROD}/{metric}")
    assert [item["value"] for item in body["items"]] == [value]


async def test_missing_selector_means_everything_in_the_namespace(client: Client) -> None:
    body = await get_json(client, f"{PROD}/triton_queue_depth")
    assert deployments(body) == ["bert-a", "resnet-a", "resnet-b"]


@pytest.mark.parametrize(
    ("raw_query", "expected"),
    [
        pytest.param("labelSelector=", ["bert-a", "resnet-a", "resnet-b"], id="empty"),
        pytest.param("labelSelector=model%3Dbert", ["bert-a"], id="equals"),
        pytest.param("labelSelector=model%3D%3Dbert", ["bert-a"], id="double-equals"),
        pytest.param("labelSelector=model%21%3Dbert", ["resnet-a", "resnet-b"], id="not-equals"),
        pytest.param(
            "labelSelector=deployment+in+%28resnet-b%2Cbert-a%29",
            ["bert-a", "resnet-b"],
            id="in-plus-is-space",
        ),
        pytest.param(
            "labelSelector=deployment%20notin%20(resnet-b)",
            ["bert-a", "resnet-a"],
            id="notin-percent-20",
        ),
        pytest.param(
            "labelSelector=gpu%21%3Da100", ["bert-a", "resnet-a", "resnet-b"], id="ne-absent"
        ),
        pytest.param("labelSelector=%21gpu", ["bert-a", "resnet-a", "resnet-b"], id="not-exists"),
        pytest.param(
            "labelSelector=model%3Dresnet%2Cdeployment%3Dresnet-a", ["resnet-a"], id="and"
        ),
        pytest.param(
            "labelSelector=model%3Dbert&labelSelector=model%3Dresnet", ["bert-a"], id="first-wins"
        ),
    ],
)
async def test_selector_is_form_decoded_as_the_aggregator_encodes_it(
    client: Client, raw_query: str, expected: list[str]
) -> None:
    url = URL(f"{PROD}/triton_queue_depth?{raw_query}", encoded=True)
    assert deployments(await get_json(client, url)) == expected


async def test_namespace_isolation(client: Client) -> None:
    staging = await get_json(client, f"{STAGING}/triton_queue_depth")
    assert [(i["metricLabels"]["namespace"], i["value"]) for i in staging["items"]] == [
        ("staging", "7")
    ]
    prod = await get_json(client, f"{PROD}/triton_queue_depth")
    assert {i["metricLabels"]["namespace"] for i in prod["items"]} == {"prod"}
    # a selector naming another namespace cannot reach it
    body = await get_json(
        client, f"{STAGING}/triton_queue_depth?labelSelector=namespace%3Dprod", status=404
    )
    assert body["reason"] == "NotFound"
    assert await get_json(client, f"{GV}/namespaces/dev/triton_queue_depth", status=404)


# --- errors ---------------------------------------------------------------------------


async def test_unknown_metric_is_404_status_naming_it(client: Client) -> None:
    body = await get_json(client, f"{PROD}/triton_nonexistent", status=404)
    assert body == {
        **status_body(
            404,
            "NotFound",
            "the server could not find the metric triton_nonexistent for namespaces",
        ),
        "details": {
            "name": "triton_nonexistent",
            "group": "external.metrics.k8s.io",
            "kind": "namespaces",
        },
    }


async def test_no_matching_series_is_404(client: Client) -> None:
    body = await get_json(
        client, f"{PROD}/triton_queue_depth?labelSelector=model%3Dgpt", status=404
    )
    assert body["reason"] == "NotFound"
    assert "model=gpt" in body["message"]
    assert "namespace prod" in body["message"]


@pytest.mark.parametrize(
    ("raw_query", "fragment"),
    [
        pytest.param("labelSelector=model+in+%28a", "expected: ',' or ')'", id="unclosed"),
        pytest.param("labelSelector=-bad%3Dx", "invalid label key '-bad'", id="bad-key"),
        pytest.param("labelSelector=model%3D-x", "invalid value '-x'", id="bad-value"),
        pytest.param(
            "labelSelector=a%2Bb", "invalid label key 'a+b'", id="encoded-plus-stays-plus"
        ),
    ],
)
async def test_bad_selector_is_400_naming_the_problem(
    client: Client, raw_query: str, fragment: str
) -> None:
    url = URL(f"{PROD}/triton_queue_depth?{raw_query}", encoded=True)
    body = await get_json(client, url, status=400)
    assert body["reason"] == "BadRequest"
    assert body["code"] == 400
    assert fragment in body["message"]


async def test_stale_data_is_503_never_zero(client: Client, clock: FakeClock) -> None:
    # one of two matching series is past max age: hold the whole answer
    body = await get_json(client, f"{PROD}/triton_queue_time_seconds", status=503)
    assert body["reason"] == "ServiceUnavailable"
    assert "1 of 2" in body["message"]
    # the fresh one alone is served
    fresh = await get_json(
        client, f"{PROD}/triton_queue_time_seconds?labelSelector=deployment%3Dresnet-a"
    )
    assert [i["value"] for i in fresh["items"]] == ["250m"]
    # ... until the clock passes its max age too
    clock.now += MAX_AGE_SECONDS
    await get_json(
        client, f"{PROD}/triton_queue_time_seconds?labelSelector=deployment%3Dresnet-a", status=503
    )


@pytest.mark.parametrize(
    ("metric", "fragment"),
    [
        pytest.param("triton_arrival_rate_forecast", "have no value yet", id="nan"),
        pytest.param("triton_queue_depth_forecast", "has value inf", id="inf"),
    ],
)
async def test_non_finite_value_is_503_hold(client: Client, metric: str, fragment: str) -> None:
    body = await get_json(client, f"{PROD}/{metric}", status=503)
    assert body["reason"] == "ServiceUnavailable"
    assert body["code"] == 503
    assert fragment in body["message"]
    assert "holding" in body["message"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD"])
@pytest.mark.parametrize(
    "path",
    [f"{PROD}/triton_queue_depth", GV, "/apis", "/apis/external.metrics.k8s.io", "/openapi/v2"],
)
async def test_other_verbs_are_405_with_allow(client: Client, method: str, path: str) -> None:
    response = await client.request(method, path)
    assert response.status == 405
    assert response.headers["Allow"] == "GET"
    if method != "HEAD":
        body = json.loads(await response.read())
        assert body["reason"] == "MethodNotAllowed"
        assert body["code"] == 405
        assert method in body["message"]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"{GV}/namespaces/prod", id="namespace-without-metric"),
        pytest.param(f"{GV}/triton_queue_depth", id="cluster-scoped"),
        pytest.param(f"{GV}/namespaces/prod/group/metric", id="slash-in-metric"),
        pytest.param(f"{PROD}/triton%2Fqueue_depth", id="encoded-slash-in-metric"),
        pytest.param(f"{PROD}/triton%25queue", id="percent-in-metric"),
        pytest.param("/apis/external.metrics.k8s.io/v1", id="other-version"),
        pytest.param("/apis/custom.metrics.k8s.io/v1beta2", id="other-group"),
        pytest.param("/metrics-nope", id="unrelated"),
        pytest.param("/", id="root"),
    ],
)
async def test_unknown_paths_are_404_status(client: Client, path: str) -> None:
    body = await get_json(client, URL(path, encoded=True), status=404)
    assert body["kind"] == "Status"
    assert body["reason"] == "NotFound"


@pytest.mark.parametrize(
    "segment",
    [
        pytest.param("triton%2Fqueue_depth", id="encoded-slash"),
        pytest.param("triton%25queue", id="percent"),
        pytest.param("%2E%2E", id="dot-dot"),
        pytest.param("%2E", id="dot"),
    ],
)
async def test_metric_names_that_are_not_path_segments_are_404(
    client: Client, segment: str
) -> None:
    body = await get_json(client, URL(f"{PROD}/{segment}", encoded=True), status=404)
    assert "is not a valid namespace/metric path" in body["message"]


class ExplodingProvider:
    def list_all_external_metrics(self) -> Sequence[MetricInfo]:
        return METRICS

    def get_external_metric(
        self, namespace: str, metric: str, selector: Selector
    ) -> list[ExternalMetricValue]:
        raise RuntimeError("token=hunter2 leaked?")


async def test_unexpected_errors_are_500_status_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await _client(create_app(ExplodingProvider()))
    try:
        with caplog.at_level(logging.ERROR, logger="adapter.api.server"):
            body = await get_json(client, f"{PROD}/triton_queue_depth", status=500)
    finally:
        await client.close()
    assert body["reason"] == "InternalError"
    assert "hunter2" not in json.dumps(body)
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


async def test_requests_are_logged_at_debug_with_status_and_duration(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="adapter.api.server"):
        await get_json(client, f"{PROD}/triton_nonexistent", status=404)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request ")]
    assert "method=GET" in line
    assert "path=/apis/external.metrics.k8s.io/v1beta1/namespaces/prod/triton_nonexistent" in line
    assert "status=404" in line
    assert "duration_ms=" in line


# --- discovery ------------------------------------------------------------------------


def resource(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "singularName": "",
        "namespaced": True,
        "kind": "ExternalMetricValueList",
        "verbs": ["get"],
    }


async def test_api_resource_list_names_every_metric(client: Client) -> None:
    body = await get_json(client, GV)
    assert body == {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "external.metrics.k8s.io/v1beta1",
        "resources": [resource(m.name) for m in METRICS],
    }


async def test_api_resource_list_is_never_empty(clock: FakeClock) -> None:
    client = await _client(create_app(make_provider(clock, metrics=())))
    try:
        body = await get_json(client, GV)
    finally:
        await client.close()
    assert body["resources"] == [resource("externalmetrics")]


GROUP_VERSION = {"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"}
API_GROUP = {
    "name": "external.metrics.k8s.io",
    "versions": [GROUP_VERSION],
    "preferredVersion": GROUP_VERSION,
}


async def test_api_group_list(client: Client) -> None:
    body = await get_json(client, "/apis")
    assert body == {"kind": "APIGroupList", "apiVersion": "v1", "groups": [API_GROUP]}


async def test_api_group(client: Client) -> None:
    body = await get_json(client, "/apis/external.metrics.k8s.io")
    assert body == {"kind": "APIGroup", "apiVersion": "v1", **API_GROUP}


# --- OpenAPI --------------------------------------------------------------------------

METRIC_PATH = "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
LIST_SCHEMA = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValueList"
VALUE_SCHEMA = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValue"
STATUS_SCHEMA = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"


async def test_openapi_v2_describes_the_served_path(client: Client) -> None:
    doc = await get_json(client, "/openapi/v2")
    assert doc["swagger"] == "2.0"
    get = doc["paths"][METRIC_PATH]["get"]
    params = {p["name"]: p for p in get["parameters"]}
    assert params["metric"]["enum"] == [m.name for m in METRICS]
    assert params["labelSelector"]["in"] == "query"
    assert get["responses"]["200"]["schema"]["$ref"] == f"#/definitions/{LIST_SCHEMA}"
    assert {LIST_SCHEMA, VALUE_SCHEMA, STATUS_SCHEMA} <= set(doc["definitions"])


async def test_openapi_v3_discovery_points_to_a_fetchable_document(client: Client) -> None:
    discovery = await get_json(client, "/openapi/v3")
    (key,) = discovery["paths"]
    assert key == "apis/external.metrics.k8s.io/v1beta1"
    url = discovery["paths"][key]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/external.metrics.k8s.io/v1beta1?hash=")
    response = await client.get(url)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, immutable"
    doc = json.loads(await response.read())
    assert doc["openapi"].startswith("3.")
    get = doc["paths"][METRIC_PATH]["get"]
    metric_param = next(p for p in get["parameters"] if p["name"] == "metric")
    assert metric_param["schema"]["enum"] == [m.name for m in METRICS]
    assert {LIST_SCHEMA, VALUE_SCHEMA, STATUS_SCHEMA} <= set(doc["components"]["schemas"])
    ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == f"#/components/schemas/{LIST_SCHEMA}"


async def test_openapi_hash_depends_on_served_metrics(clock: FakeClock) -> None:
    urls = []
    for metrics in (METRICS, METRICS[:2]):
        c = await _client(create_app(make_provider(clock, metrics=metrics)))
        try:
            urls.append((await get_json(c, "/openapi/v3"))["paths"])
        finally:
            await c.close()
    assert urls[0] != urls[1]


async def test_openapi_v2_etag_gives_304(client: Client) -> None:
    first = await client.get("/openapi/v2")
    etag = first.headers["ETag"]
    again = await client.get("/openapi/v2", headers={"If-None-Match": etag})
    assert again.status == 304
    changed = await client.get("/openapi/v2", headers={"If-None-Match": '"other"'})
    assert changed.status == 200


# --- health ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/healthz", "/livez", "/readyz", "/healthz/ping", "/livez/ping", "/readyz/ping"]
)
async def test_health_endpoints_answer_ok(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    assert await response.text() == "ok"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_readyz_fails_with_reason_while_liveness_stays_ok(
    client: Client, readiness: Readiness
) -> None:
    readiness.reason = "no scrape has completed yet"
    ready = await client.get("/readyz")
    assert ready.status == 500
    assert await ready.text() == (
        "[+]ping ok\n[-]metrics-ready failed: no scrape has completed yet\nreadyz check failed\n"
    )
    single = await client.get("/readyz/metrics-ready")
    assert single.status == 500
    assert "no scrape has completed yet" in await single.text()
    for path in ("/healthz", "/livez"):
        assert (await client.get(path)).status == 200
    excluded = await client.get("/readyz?exclude=metrics-ready")
    assert excluded.status == 200
    readiness.reason = None
    assert (await client.get("/readyz")).status == 200


async def test_readyz_verbose_lists_checks(client: Client) -> None:
    response = await client.get("/readyz?verbose")
    assert response.status == 200
    assert await response.text() == "[+]ping ok\n[+]metrics-ready ok\nreadyz check passed\n"


async def test_readiness_check_that_raises_fails_readyz(clock: FakeClock) -> None:
    def broken() -> str | None:
        raise KeyError("boom")

    c = await _client(create_app(make_provider(clock), readiness=broken))
    try:
        response = await c.get("/readyz")
        assert response.status == 500
        assert "[-]metrics-ready failed: check raised KeyError" in await response.text()
    finally:
        await c.close()


async def test_unknown_health_check_is_404(client: Client) -> None:
    await get_json(client, "/readyz/nope", status=404)
