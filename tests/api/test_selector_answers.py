"""Whatever a client puts in a selector, the API answers 200, 400 or 404: never 5xx.

``labelSelector`` of the external metrics API and of KEDA's metrics-api endpoint, and
``labelSelector`` / ``metricLabelSelector`` of the custom metrics API.

A property test (hypothesis) over a real socket; ``make fuzz`` runs it at 100,000 cases.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from types import MappingProxyType
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapter.api.server import create_app
from adapter.provider import SnapshotProvider
from adapter.snapshot import Snapshot
from tests.support.api_support import (
    MAX_AGE_SECONDS,
    METRICS,
    NOW,
    FakeClock,
    make_custom_provider,
    point,
)
from tests.support.threaded_server import served_in_thread

GV = "/apis/external.metrics.k8s.io/v1beta1"
CUSTOM = "/apis/custom.metrics.k8s.io/v1beta2"

# Fresh, finite values only: any 5xx would then be the selector's fault.
FRESH = Snapshot(
    built_at=NOW,
    series=MappingProxyType(
        {
            "triton_queue_depth": (
                point("prod", "resnet", "resnet-a", 1.5),
                point("prod", "bert", "bert-a", 3.0),
            )
        }
    ),
)


@pytest.fixture(scope="module")
def api() -> Iterator[http.client.HTTPConnection]:
    provider = SnapshotProvider(METRICS, lambda: FRESH, FakeClock(), MAX_AGE_SECONDS)
    custom = make_custom_provider(FakeClock())  # its pods' queue depths are fresh and finite
    with served_in_thread(lambda: create_app(provider, custom=custom)) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            yield connection
        finally:
            connection.close()


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read()


SELECTOR_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(
        st.sampled_from([*"=!(),<> -_./a9", "in", "notin", "model", "9" * 25]), max_size=30
    ).map("".join),
)


PATHS = {
    "external": f"{GV}/namespaces/prod/triton_queue_depth?labelSelector=",
    "keda": "/keda/v1/namespaces/prod/triton_queue_depth?labelSelector=",
    "custom-pods": f"{CUSTOM}/namespaces/prod/pods/*/triton_queue_depth?labelSelector=",
    "custom-series": f"{CUSTOM}/namespaces/prod/pods/*/triton_queue_depth?metricLabelSelector=",
}


@pytest.mark.fuzz
@given(text=SELECTOR_TEXT, api_path=st.sampled_from(sorted(PATHS)))
@example(text="replicas>" + "9" * 4301, api_path="external")
@example(text="replicas>" + "9" * 4301, api_path="keda")
@example(text="replicas>" + "9" * 4301, api_path="custom-pods")
@example(text="replicas>" + "9" * 4301, api_path="custom-series")
@example(text="model in (" + "a," * 1500 + "b)", api_path="external")
def test_any_selector_is_answered_200_400_or_404(
    api: http.client.HTTPConnection, text: str, api_path: str
) -> None:
    path = PATHS[api_path] + quote(text, safe="")
    status, body = _get(api, path)
    assert status in (200, 400, 404), (status, body[:300])
    if status == 400:
        answer = json.loads(body)
        assert answer["kind"] == "Status"
        assert answer["reason"] == "BadRequest"
        assert "selector" in answer["message"]
