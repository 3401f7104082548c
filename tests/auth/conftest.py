"""Fixtures of the auth tests: a test PKI, the API with delegated auth over TLS, and a fake
Kubernetes API for the review client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapter.api.auth import DelegatedAuth
from adapter.api.server import create_app
from adapter.api.tls import bound_port
from adapter.config import DEFAULT_ALWAYS_ALLOW_PATHS
from tests.support.api_support import FakeClock, make_provider
from tests.support.auth_support import (
    CACHE_SECONDS,
    PKI,
    TOKEN_USER,
    FakeKubeAPI,
    FakeReviews,
    Served,
    config_map_data,
    echo_identity,
    front_proxy_config,
    make_pki,
    serve_app,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def served(pki: PKI) -> AsyncIterator[Served]:
    reviews = FakeReviews(users={"good-token": TOKEN_USER})
    cache_clock = FakeClock(now=1000.0)
    auth = DelegatedAuth(
        reviews,
        front_proxy_config(pki),
        cache_seconds=CACHE_SECONDS,
        always_allow_paths=DEFAULT_ALWAYS_ALLOW_PATHS,
        clock=cache_clock,
    )
    app = create_app(make_provider(FakeClock()), auth=auth)
    app.router.add_get("/echo-identity", echo_identity)
    runner = await serve_app(app, pki, pki.front_proxy_ca_pem)
    try:
        yield Served(pki, f"https://127.0.0.1:{bound_port(runner)}", reviews, cache_clock)
    finally:
        await runner.cleanup()


@pytest.fixture
async def kube_api(pki: PKI) -> AsyncIterator[FakeKubeAPI]:
    api = FakeKubeAPI(config_map_data=config_map_data(pki))
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
