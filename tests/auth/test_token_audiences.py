"""Bearer tokens and their audiences, end to end against the fake API server (which checks
audiences as kube-apiserver does).

KEDA's metrics-api trigger (manifests/examples/keda/scaledobject.yaml) authenticates with a
bound service account token that KEDA mints with a TokenRequest naming no audience, so the
token is for the API server's own audiences (``--api-audiences``). With
``auth.token_audiences`` empty (the default) the adapter's TokenReview names none either, the
API server checks the token against its own audiences, and KEDA's request is served. A token
minted for another audience (a projected token with ``audience: tritonscale``) passes only
when ``auth.token_audiences`` names it, and the answer must name one of the audiences asked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapter.api.auth import DelegatedAuth
from adapter.api.server import create_app
from adapter.api.tls import bound_port
from adapter.config import DEFAULT_ALWAYS_ALLOW_PATHS, ConfigError, load_config
from adapter.kube.reviews import connect
from tests.manifests.test_validate import MANIFESTS, load_yaml_file, one_of
from tests.support.api_support import FakeClock, make_provider
from tests.support.auth_support import (
    API_AUDIENCE,
    PKI,
    SAR_PATH,
    TOKEN_REVIEW_PATH,
    FakeKubeAPI,
    client_context,
    front_proxy_config,
    serve_app,
)

KEDA_EXAMPLE = MANIFESTS / "examples" / "keda" / "scaledobject.yaml"
READER = "system:serviceaccount:prod:tritonscale-reader"  # the example's ServiceAccount
KEDA_TOKEN = "minted-by-keda"  # TokenRequest without audiences: the API server's own
PROJECTED_TOKEN = "projected-for-tritonscale"  # a projected token with audience: tritonscale
KEDA_PATH = "/keda/v1/namespaces/prod/triton_queue_depth?labelSelector=model%3Dresnet"


@pytest.fixture
def reader_tokens(kube_api: FakeKubeAPI) -> FakeKubeAPI:
    user = {"username": READER, "uid": "5e1f", "groups": ["system:serviceaccounts"]}
    kube_api.tokens[KEDA_TOKEN] = user
    kube_api.tokens[PROJECTED_TOKEN] = user
    kube_api.token_audiences[PROJECTED_TOKEN] = ("tritonscale",)
    return kube_api


@asynccontextmanager
async def adapter(
    kube_api: FakeKubeAPI, pki: PKI, tmp_path: Path, token_audiences: Sequence[str]
) -> AsyncIterator[str]:
    """The API with delegated auth through the real review client; yields its URL."""
    reviews = await connect(
        str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")),
        timeout_seconds=10,
        token_audiences=token_audiences,
    )
    auth = DelegatedAuth(
        reviews,
        front_proxy_config(pki),
        cache_seconds=0,
        always_allow_paths=DEFAULT_ALWAYS_ALLOW_PATHS,
    )
    runner = await serve_app(create_app(make_provider(FakeClock()), auth=auth), pki, None)
    try:
        yield f"https://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
        await reviews.close()


async def get(url: str, pki: PKI, token: str) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(ssl=client_context(pki, None))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url + KEDA_PATH, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, json.loads(await response.text())


def test_the_keda_example_authenticates_with_a_bound_token_of_the_reader() -> None:
    objects = load_yaml_file(KEDA_EXAMPLE)
    trigger = one_of(objects, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["metadata"]["authMode"] == "bearer"
    assert trigger["metadata"]["url"].split("tritonscale.svc", 1)[1].startswith("/keda/v1/")
    auth = one_of(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (bound,) = auth["spec"]["boundServiceAccountToken"]
    # KEDA's boundServiceAccountToken has no audience setting: the token is minted for the API
    # server's own audiences, which the default (empty) auth.token_audiences reviews against
    assert set(bound) == {"parameter", "serviceAccountName"}
    account = one_of(objects, "ServiceAccount", bound["serviceAccountName"])
    metadata = account["metadata"]
    assert f"system:serviceaccount:{metadata['namespace']}:{metadata['name']}" == READER
    assert load_config(None).auth.token_audiences == ()


async def test_kedas_token_is_served_with_the_default_audiences(
    reader_tokens: FakeKubeAPI, pki: PKI, tmp_path: Path
) -> None:
    async with adapter(reader_tokens, pki, tmp_path, ()) as url:
        status, body = await get(url, pki, KEDA_TOKEN)
    assert status == 200, body
    assert body["value"] == pytest.approx(3.5)
    (review,) = reader_tokens.bodies(TOKEN_REVIEW_PATH)
    assert review["spec"] == {"token": KEDA_TOKEN}  # no audiences: the API server's own
    (access,) = reader_tokens.bodies(SAR_PATH)
    assert access["spec"]["user"] == READER
    assert access["spec"]["nonResourceAttributes"]["path"].startswith("/keda/v1/")


async def test_a_token_for_another_audience_is_refused_by_default(
    reader_tokens: FakeKubeAPI, pki: PKI, tmp_path: Path
) -> None:
    async with adapter(reader_tokens, pki, tmp_path, ()) as url:
        status, body = await get(url, pki, PROJECTED_TOKEN)
    assert status == 401, body
    assert reader_tokens.bodies(SAR_PATH) == []  # never authorised


@pytest.mark.parametrize(
    ("audiences", "served"),
    [
        (("tritonscale",), {PROJECTED_TOKEN}),
        (("tritonscale", API_AUDIENCE), {PROJECTED_TOKEN, KEDA_TOKEN}),
        ((API_AUDIENCE,), {KEDA_TOKEN}),
    ],
)
async def test_token_audiences_are_sent_and_decide_which_tokens_pass(
    reader_tokens: FakeKubeAPI,
    pki: PKI,
    tmp_path: Path,
    audiences: tuple[str, ...],
    served: set[str],
) -> None:
    async with adapter(reader_tokens, pki, tmp_path, audiences) as url:
        statuses = {
            token: (await get(url, pki, token))[0] for token in (KEDA_TOKEN, PROJECTED_TOKEN)
        }
    assert {token for token, status in statuses.items() if status == 200} == served
    assert {token for token, status in statuses.items() if status == 401} == (
        {KEDA_TOKEN, PROJECTED_TOKEN} - served
    )
    reviews = reader_tokens.bodies(TOKEN_REVIEW_PATH)
    assert [review["spec"].get("audiences") for review in reviews] == [list(audiences)] * 2


async def test_an_answer_naming_none_of_the_audiences_asked_is_refused(
    reader_tokens: FakeKubeAPI, tmp_path: Path
) -> None:
    # an API server (or webhook) that ignored spec.audiences and answered for its own
    reader_tokens.status_audiences_override = [API_AUDIENCE]
    client = await connect(
        str(reader_tokens.write_kubeconfig(tmp_path / "kubeconfig")),
        timeout_seconds=10,
        token_audiences=("tritonscale",),
    )
    try:
        result = await client.review_token(PROJECTED_TOKEN)
    finally:
        await client.close()
    assert result.user is None
    assert "auth.token_audiences" in result.error and API_AUDIENCE in result.error


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ({"mode": "none", "token_audiences": ["tritonscale"]}, "token_audiences"),
        ({"mode": "delegated", "token_audiences": [" "]}, "token_audiences"),
    ],
)
def test_bad_token_audiences_are_config_errors_naming_the_field(
    auth: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(None, {"auth": auth})
