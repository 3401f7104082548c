"""Who sees what: the page and /explain are checked by path like every request, and their data
per namespace with the attributes of a metric read (list <metric> in external.metrics.k8s.io):
a user sees only the namespaces whose metrics the API would give them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapter.api.auth import DelegatedAuth
from adapter.api.explain import add_explain_routes
from adapter.api.server import create_app
from adapter.api.ui import UI_METRICS, add_ui_routes
from adapter.config import SignalsConfig
from adapter.explain import Explainer
from adapter.kube.reviews import AccessDecision, RequestAttributes, UserInfo
from adapter.metrics_catalog import SERVED_METRICS
from adapter.recorder import SeriesRecorder
from adapter.snapshot import SeriesPoint, Snapshot
from tests.support.api_support import NOW, FakeClock, make_provider
from tests.support.auth_support import FakeReviews

ALICE = UserInfo.create("alice", groups=["team-prod"])


def prod_only(attributes: RequestAttributes) -> AccessDecision:
    if attributes.user.name == "system:anonymous":
        return AccessDecision(False, "no rule")
    if not attributes.is_resource_request:  # /ui, /ui/*, /explain/*
        allowed = attributes.path.startswith(("/ui", "/explain/"))
        return AccessDecision(allowed, "" if allowed else "no rule")
    allowed = attributes.namespace == "prod" and attributes.verb == "list"
    return AccessDecision(allowed, "" if allowed else "RBAC: not in this namespace")


class NoTargets:
    def snapshot(self) -> Snapshot:
        return Snapshot(NOW)

    @property
    def targets(self) -> dict[object, object]:
        return {}


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, FakeReviews]]:
    reviews = FakeReviews(decide=prod_only, users={"alice-token": ALICE})
    auth = DelegatedAuth(reviews, None, cache_seconds=10, always_allow_paths=("/healthz",))
    clock = FakeClock()
    provider = make_provider(clock)
    app = create_app(provider, auth=auth)
    recorder = SeriesRecorder(step_seconds=1.0, max_age_seconds=30.0)
    points = tuple(
        SeriesPoint({"namespace": namespace, "deployment": "llm", "model": "resnet"}, 4.0, NOW)
        for namespace in ("prod", "staging")
    )
    recorder.record(Snapshot(NOW, MappingProxyType({"triton_arrival_rate": points})))
    explainer = Explainer(
        NoTargets(),
        tuple,
        provider,
        SERVED_METRICS,
        SignalsConfig(),
        clock,  # type: ignore[arg-type]
    )

    def get(path: str, handler: object) -> None:
        app.router.add_get(path, handler, allow_head=False)  # type: ignore[arg-type]

    add_ui_routes(app, recorder, auth, get)
    add_explain_routes(app, explainer, auth, get)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, reviews


AS_ALICE = {"Authorization": "Bearer alice-token"}


async def test_a_user_sees_only_namespaces_whose_metrics_they_may_read(
    client: tuple[TestClient, FakeReviews],
) -> None:
    http, reviews = client
    response = await http.get("/ui/api/v1/namespaces", headers=AS_ALICE)
    assert response.status == 200
    assert (await response.json()) == {"namespaces": ["prod"]}
    checked = {(a.namespace, a.resource) for a in reviews.access_calls if a.is_resource_request}
    assert checked == {(ns, m) for ns in ("prod", "staging") for m in UI_METRICS}

    response = await http.get("/ui/api/v1/namespaces/prod/series", headers=AS_ALICE)
    body = await response.json()
    assert response.status == 200 and [s["labels"]["namespace"] for s in body["series"]] == ["prod"]
    assert body["series"][0]["latest"]["arrival"] == 4.0
    assert body["series"][0]["latest"]["upper"] is None  # unknown is null, never 0
    assert body["series"][0]["aim"] == {
        "slo_attainment": None,  # no policy state for this series: unknown, never 0
        "budget": None,
        "margin": None,
        "utilisation": None,
    }

    response = await http.get("/ui/api/v1/namespaces/staging/series", headers=AS_ALICE)
    assert response.status == 403
    message = (await response.json())["message"]
    assert 'User "alice" cannot list resource "triton_arrival_rate"' in message
    assert 'in the namespace "staging"' in message


async def test_the_page_itself_is_authorised_by_path(
    client: tuple[TestClient, FakeReviews],
) -> None:
    http, reviews = client
    response = await http.get("/ui/", headers=AS_ALICE)
    assert response.status == 200 and "tritonscale" in await response.text()
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert (
        reviews.access_calls[-1].path == "/ui/" and not reviews.access_calls[-1].is_resource_request
    )
    script = await http.get("/ui/static/app.js", headers=AS_ALICE)
    assert script.status == 200 and script.content_type == "text/javascript"
    assert (await http.get("/ui/static/nothing.js", headers=AS_ALICE)).status == 404
    anonymous = await http.get("/ui/")
    assert anonymous.status == 403  # system:anonymous has no rule for /ui


async def test_explain_needs_the_metric_read_in_the_namespace(
    client: tuple[TestClient, FakeReviews],
) -> None:
    http, _ = client
    response = await http.get("/explain/v1/namespaces/prod/triton_queue_depth", headers=AS_ALICE)
    assert response.status == 200
    body = await response.json()
    assert body["kind"] == "Explanation" and body["served"]["status"] == 200
    denied = await http.get("/explain/v1/namespaces/staging/triton_queue_depth", headers=AS_ALICE)
    assert denied.status == 403
    bad = await http.get(
        "/explain/v1/namespaces/prod/triton_queue_depth?labelSelector=a%3D%3D%3D", headers=AS_ALICE
    )
    assert bad.status == 400


async def test_since_must_be_a_time(client: tuple[TestClient, FakeReviews]) -> None:
    http, _ = client
    response = await http.get("/ui/api/v1/namespaces/prod/series?since=soon", headers=AS_ALICE)
    assert response.status == 400
    assert "since must be a Unix time in seconds" in (await response.json())["message"]
