"""The HTTP contract of the custom metrics API (custom.metrics.k8s.io v1beta2 and v1beta1),
over a real socket, served from a fixed snapshot by the real provider."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapter.api.server import create_app
from adapter.metrics_catalog import DEPLOYMENT_METRIC_NAMES, POD_METRIC_NAMES
from tests.support.api_support import (
    NOW_RFC3339,
    FakeClock,
    make_custom_provider,
    make_provider,
    status_body,
)

GROUP = "custom.metrics.k8s.io"
V2 = f"/apis/{GROUP}/v1beta2"
V1 = f"/apis/{GROUP}/v1beta1"
PROD2 = f"{V2}/namespaces/prod"

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[Client]:
    app = create_app(make_provider(clock), custom=make_custom_provider(clock))
    c: Client = TestClient(TestServer(app))
    await c.start_server()
    yield c
    await c.close()


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(await response.read())


def values(body: dict[str, Any]) -> dict[str, str]:
    return {item["describedObject"]["name"]: item["value"] for item in body["items"]}


def pod(name: str, namespace: str = "prod") -> dict[str, str]:
    return {"kind": "Pod", "namespace": namespace, "name": name, "apiVersion": "v1"}


# --- discovery ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1beta2", "v1beta1"])
async def test_resource_list_names_each_metric_under_its_resource(
    client: Client, version: str
) -> None:
    body = await get_json(client, f"/apis/{GROUP}/{version}")
    assert body["kind"] == "APIResourceList" and body["groupVersion"] == f"{GROUP}/{version}"
    names = [r["name"] for r in body["resources"]]
    assert names == [
        *(f"pods/{m}" for m in POD_METRIC_NAMES),
        "pods/triton:queue_compute:ratio",
        *(f"deployments.apps/{m}" for m in DEPLOYMENT_METRIC_NAMES),
    ]
    assert {
        (r["namespaced"], r["kind"], tuple(r["verbs"]), r["singularName"])
        for r in body["resources"]
    } == {(True, "MetricValueList", ("get",), "")}


async def test_both_groups_are_listed_and_v1beta2_is_preferred(client: Client) -> None:
    groups = (await get_json(client, "/apis"))["groups"]
    assert [g["name"] for g in groups] == ["external.metrics.k8s.io", GROUP]
    group = await get_json(client, f"/apis/{GROUP}")
    assert group["kind"] == "APIGroup"
    assert [v["version"] for v in group["versions"]] == ["v1beta2", "v1beta1"]
    assert group["preferredVersion"] == {"groupVersion": f"{GROUP}/v1beta2", "version": "v1beta2"}


async def test_without_a_custom_provider_the_group_is_not_served(clock: FakeClock) -> None:
    c: Client = TestClient(TestServer(create_app(make_provider(clock))))
    await c.start_server()
    try:
        groups = (await get_json(c, "/apis"))["groups"]
        assert [g["name"] for g in groups] == ["external.metrics.k8s.io"]
        await get_json(c, V2, status=404)
    finally:
        await c.close()


# --- Pods metrics: what the HPA asks for ------------------------------------------------------


async def test_pods_selector_answer_is_an_exact_v1beta2_metric_value_list(client: Client) -> None:
    body = await get_json(
        client,
        f"{PROD2}/pods/*/triton_queue_compute_ratio"
        "?labelSelector=app%3Dllm&metricLabelSelector=model%3Dresnet",
    )
    selector = {"matchLabels": {"model": "resnet"}}
    assert body == {
        "kind": "MetricValueList",
        "apiVersion": f"{GROUP}/v1beta2",
        "metadata": {},
        "items": [
            {
                "describedObject": pod("llm-a"),
                "metric": {"name": "triton_queue_compute_ratio", "selector": selector},
                "timestamp": "2026-08-20T11:59:58Z",
                "windowSeconds": 5,
                "value": "1250m",
            },
            {
                "describedObject": pod("llm-b"),
                "metric": {"name": "triton_queue_compute_ratio", "selector": selector},
                "timestamp": "2026-08-20T11:59:58Z",
                "windowSeconds": 5,
                "value": "800m",
            },
        ],
    }


async def test_v1beta1_has_the_older_shape(client: Client) -> None:
    body = await get_json(
        client,
        f"{V1}/namespaces/prod/pods/*/triton_queue_compute_ratio"
        "?labelSelector=app%3Dllm&metricLabelSelector=model%3Dresnet",
    )
    assert body["apiVersion"] == f"{GROUP}/v1beta1"
    assert body["items"][0] == {
        "describedObject": pod("llm-a"),
        "metricName": "triton_queue_compute_ratio",
        "timestamp": "2026-08-20T11:59:58Z",
        "window": 5,
        "value": "1250m",
        "selector": {"matchLabels": {"model": "resnet"}},
    }


async def test_nvidia_metric_name_reads_the_same_signal(client: Client) -> None:
    """NVIDIA's HPA asks for triton:queue_compute:ratio; the answer names what was asked."""
    path = "pods/%2A/triton:queue_compute:ratio?labelSelector=app%3Dllm"
    body = await get_json(client, f"{PROD2}/{path}&metricLabelSelector=model%3Dresnet")
    assert values(body) == {"llm-a": "1250m", "llm-b": "800m"}
    assert {item["metric"]["name"] for item in body["items"]} == {"triton:queue_compute:ratio"}


async def test_counts_of_several_models_in_one_pod_add_up(client: Client) -> None:
    body = await get_json(client, f"{PROD2}/pods/*/triton_queue_depth?labelSelector=app%3Dllm")
    # llm-a: resnet 2 + bert 1; llm-c has no series yet: left out, the HPA counts it missing
    assert values(body) == {"llm-a": "3", "llm-b": "4"}
    assert body["items"][0]["metric"]["selector"] is None
    assert "windowSeconds" not in body["items"][0]


async def test_a_ratio_of_several_models_in_one_pod_must_be_selected(client: Client) -> None:
    body = await get_json(
        client, f"{PROD2}/pods/*/triton_queue_compute_ratio?labelSelector=app%3Dllm", status=400
    )
    assert body["reason"] == "BadRequest"
    assert "pods llm-a in namespace prod has 2 series" in body["message"]
    assert "{model=resnet}, {model=bert}" in body["message"]
    assert "matchLabels on model" in body["message"]


async def test_label_selector_selects_pods_by_their_own_labels(client: Client) -> None:
    other = await get_json(client, f"{PROD2}/pods/*/triton_queue_depth?labelSelector=app%3Dother")
    assert values(other) == {"other-a": "7"}
    gpu = await get_json(client, f"{PROD2}/pods/*/gpu_utilization?labelSelector=tier%3Dgpu")
    assert values(gpu) == {"llm-a": "500m"}
    everything = await get_json(client, f"{PROD2}/pods/*/triton_queue_depth")
    assert values(everything) == {"llm-a": "3", "llm-b": "4", "other-a": "7"}
    staging = await get_json(client, f"{V2}/namespaces/staging/pods/*/triton_queue_depth")
    assert values(staging) == {"llm-a": "9"}
    assert staging["items"][0]["describedObject"] == pod("llm-a", "staging")


async def test_no_pod_matching_the_selector_is_404(client: Client) -> None:
    body = await get_json(
        client, f"{PROD2}/pods/*/triton_queue_depth?labelSelector=app%3Dnone", status=404
    )
    assert body["message"] == (
        "no pod in namespace prod matches labelSelector 'app=none' "
        "(tritonscale knows the 4 Triton pods it scrapes there)"
    )


async def test_a_stale_pod_is_left_out_of_a_selector_answer(client: Client) -> None:
    body = await get_json(client, f"{PROD2}/pods/*/triton_arrival_rate?labelSelector=app%3Dllm")
    assert values(body) == {"llm-a": "10"}


async def test_no_pod_with_a_known_value_is_503_never_zero(client: Client) -> None:
    body = await get_json(
        client, f"{PROD2}/pods/*/triton_queue_time_seconds?labelSelector=app%3Dllm", status=503
    )
    assert body["reason"] == "ServiceUnavailable"
    assert "llm-a: no value yet" in body["message"]
    assert "llm-b: no data younger than 30s" in body["message"]


async def test_pods_matching_without_series_of_the_metric_is_404(client: Client) -> None:
    body = await get_json(
        client,
        f"{PROD2}/pods/*/gpu_utilization?labelSelector=app%3Dother",
        status=404,
    )
    assert body["message"] == (
        "the server could not find the metric gpu_utilization for pods matching "
        "labelSelector 'app=other' in namespace prod"
    )


# --- one named object -------------------------------------------------------------------------


async def test_one_named_pod(client: Client) -> None:
    body = await get_json(
        client,
        f"{PROD2}/pods/llm-a/triton_queue_depth?metricLabelSelector=model%3Dbert"
        "&labelSelector=app%3Dnone",  # ignored for a named object, as in the Go framework
    )
    assert values(body) == {"llm-a": "1"}
    singular = await get_json(client, f"{PROD2}/pod/llm-b/triton_queue_depth")
    assert values(singular) == {"llm-b": "4"}


async def test_a_named_pod_without_the_metric_is_404(client: Client) -> None:
    body = await get_json(client, f"{PROD2}/pods/llm-c/triton_queue_depth", status=404)
    assert body == status_body(
        404,
        "NotFound",
        "the server could not find the metric triton_queue_depth for pods llm-c in namespace prod",
        details={"name": "llm-c", "group": GROUP},
    )


async def test_a_named_stale_pod_is_503(client: Client) -> None:
    body = await get_json(client, f"{PROD2}/pods/llm-b/triton_arrival_rate", status=503)
    assert body["message"].startswith("metric triton_arrival_rate for pods llm-b in namespace")


async def test_deployment_object_metrics_are_the_group_series(client: Client) -> None:
    body = await get_json(
        client, f"{PROD2}/deployments.apps/resnet-a/triton_queue_depth?metricLabelSelector=model"
    )
    (item,) = body["items"]
    assert item["describedObject"] == {
        "kind": "Deployment",
        "namespace": "prod",
        "name": "resnet-a",
        "apiVersion": "apps/v1",
    }
    assert item["value"] == "1500m" and item["timestamp"] == "2026-08-20T11:59:58Z"
    assert item["metric"]["selector"] == {
        "matchExpressions": [{"key": "model", "operator": "Exists"}]
    }
    assert item["timestamp"] < NOW_RFC3339
    every = await get_json(client, f"{PROD2}/deployments/*/triton_queue_depth")
    assert values(every) == {"bert-a": "12k", "resnet-a": "1500m", "resnet-b": "2"}


async def test_deployment_values_that_are_not_known_are_503(client: Client) -> None:
    nan = await get_json(
        client, f"{PROD2}/deployments.apps/resnet-a/triton_arrival_rate_forecast", status=503
    )
    assert "no value yet" in nan["message"]
    stale = await get_json(
        client, f"{PROD2}/deployments.apps/resnet-b/triton_queue_time_seconds", status=503
    )
    assert "no data younger than 30s" in stale["message"]


async def test_deployments_cannot_be_selected_by_labels(client: Client) -> None:
    body = await get_json(
        client, f"{PROD2}/deployments.apps/*/triton_queue_depth?labelSelector=a%3Db", status=400
    )
    assert "labelSelector over deployments.apps is not supported" in body["message"]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            f"{PROD2}/pods/*/triton_nonexistent",
            "the server could not find the metric triton_nonexistent for pods",
        ),
        (
            f"{PROD2}/pods/*/triton_desired_replicas",  # a Deployment metric, not a pod's
            "the server could not find the metric triton_desired_replicas for pods",
        ),
        (
            f"{PROD2}/services/*/triton_queue_depth",
            "the server could not find the metric triton_queue_depth for services",
        ),
        (
            f"{V2}/pods/*/triton_queue_depth",  # root-scoped: pods are namespaced
            "the server could not find the metric triton_queue_depth for pods",
        ),
        (
            f"{PROD2}/metrics/triton_queue_depth",  # the namespace object itself
            "the server could not find the metric triton_queue_depth for namespaces",
        ),
    ],
)
async def test_unserved_metrics_are_404_in_the_go_framework_wording(
    client: Client, path: str, message: str
) -> None:
    body = await get_json(client, path, status=404)
    assert body["reason"] == "NotFound" and body["message"] == message


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("labelSelector=app+in+%28a", "labelSelector: invalid label selector 'app in (a'"),
        ("metricLabelSelector=model+in+%28", "metricLabelSelector: invalid label selector"),
    ],
)
async def test_bad_selectors_are_400_naming_the_parameter(
    client: Client, query: str, fragment: str
) -> None:
    body = await get_json(client, f"{PROD2}/pods/*/triton_queue_depth?{query}", status=400)
    assert body["reason"] == "BadRequest" and body["message"].startswith(fragment)


async def test_other_verbs_are_405(client: Client) -> None:
    response = await client.post(f"{PROD2}/pods/*/triton_queue_depth")
    assert response.status == 405 and response.headers["Allow"] == "GET"


async def test_openapi_v3_lists_and_serves_both_custom_versions(client: Client) -> None:
    discovery = await get_json(client, "/openapi/v3")
    assert set(discovery["paths"]) == {
        "apis/external.metrics.k8s.io/v1beta1",
        f"apis/{GROUP}/v1beta2",
        f"apis/{GROUP}/v1beta1",
    }
    for version in ("v1beta2", "v1beta1"):
        url = discovery["paths"][f"apis/{GROUP}/{version}"]["serverRelativeURL"]
        doc = await get_json(client, url)
        (path,) = doc["paths"]
        params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
        assert "triton:queue_compute:ratio" in params["metric"]["schema"]["enum"]
        assert params["resource"]["schema"]["enum"] == ["deployments.apps", "pods"]
    v2 = await get_json(client, "/openapi/v2")
    assert (
        f"/apis/{GROUP}/v1beta2/namespaces/{{namespace}}/{{resource}}/{{name}}/{{metric}}"
        in (v2["paths"])
    )
