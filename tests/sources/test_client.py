"""The Prometheus source over HTTP, against an in-process fake of the query API: what it
sends (POST form, bearer token, tenant, Thanos' partial_response), TLS with a CA, errors, and
what the source keeps when a query fails (the last values, ageing: never 0, never dropped)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapter.api.tls import generate_self_signed
from adapter.cli import main
from adapter.config import load_config
from adapter.promsource import (
    SIGNAL_LABEL,
    PrometheusError,
    PrometheusSource,
    PrometheusSourceError,
)
from adapter.service import check_files
from adapter.signals import QUEUE_DEPTH, REQUEST_RATE
from loadtest.harness.triton_server import LOOPBACK

GROUP = {"namespace": "prod", "deployment": "llm"}
T0 = 1_700_000_000.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def vector(*rows: tuple[str, dict[str, str], float]) -> dict[str, Any]:
    result = [
        {"metric": {**labels, SIGNAL_LABEL: part}, "value": [T0, str(value)]}
        for part, labels, value in rows
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


HEALTHY = vector(
    ("up", {"pod": "p-0"}, 1.0),
    ("seen", {"pod": "p-0"}, T0 - 1),
    ("present", {"pod": "p-0", "model": "m"}, 1.0),
    ("pending", {"pod": "p-0", "model": "m"}, 3.0),
    ("completed", {"pod": "p-0", "model": "m"}, 12.5),
    ("pending_delta", {"pod": "p-0", "model": "m"}, 0.0),
    ("success", {"pod": "p-0", "model": "m"}, 750.0),
)


class FakePrometheus:
    """Answers every query with ``answer`` (JSON) or ``handler``; records each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.answer: dict[str, Any] = HEALTHY
        self.status = 200
        self.handler: Handler | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((request.path, dict(request.headers), form))
        if self.handler is not None:
            return await self.handler(request)
        return web.Response(
            status=self.status, text=json.dumps(self.answer), content_type="application/json"
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/prefix/api/v1/query", self.handle)
        app.router.add_post("/prefix/api/v1/query_range", self.handle)
        return app


async def serve(fake: FakePrometheus, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0, ssl_context=ssl_context)
    await site.start()
    return runner


def port_of(runner: web.AppRunner) -> int:
    server = runner.addresses[0]
    return int(server[1])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_source(url: str, clock: Clock, **settings: Any) -> PrometheusSource:
    config = load_config(
        None,
        {
            "signals": {"max_age_seconds": 40},
            "sources": {
                "prometheus": [
                    {
                        "url": url,
                        "rate_window_seconds": 60,
                        "groups": [
                            {"labels": GROUP, "matchers": 'job="t"', "pod_labels": {"app": "x"}}
                        ],
                        **settings,
                    }
                ]
            },
        },
    )
    return PrometheusSource(config.sources.prometheus[0], config.signals, clock=clock)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakePrometheus, str]]:
    prometheus = FakePrometheus()
    runner = await serve(prometheus)
    try:
        yield prometheus, f"http://{LOOPBACK}:{port_of(runner)}/prefix"
    finally:
        await runner.cleanup()


async def test_one_post_per_group_with_token_tenant_and_partial_response(
    fake: tuple[FakePrometheus, str], tmp_path: Path
) -> None:
    prometheus, url = fake
    token = tmp_path / "token"
    token.write_text("first\n")
    source = make_source(url, Clock(), tenant="team-a", bearer_token_file=str(token))
    try:
        await source.refresh()
        token.write_text("rotated")  # projected tokens rotate: read before every query
        await source.refresh()
    finally:
        await source.close()
    assert [path for path, _, _ in prometheus.requests] == ["/prefix/api/v1/query"] * 2
    (_, first, form), (_, second, _) = prometheus.requests
    assert first["Authorization"] == "Bearer first" and second["Authorization"] == "Bearer rotated"
    assert first["X-Scope-OrgID"] == "team-a"
    assert form["partial_response"] == "false" and form["time"] == f"{T0:.3f}"
    assert 'up{job="t"}' in form["query"]
    latest = source.latest()
    (depth,) = latest.series[QUEUE_DEPTH]
    assert (depth.value, depth.timestamp, dict(depth.labels)) == (
        3.0,
        T0 - 1,
        {**GROUP, "model": "m"},
    )
    assert latest.pods == {("prod", "p-0"): {"app": "x"}}
    assert latest.replicas == {tuple(sorted(GROUP.items())): 1}


async def test_failures_keep_the_last_values_ageing_never_zero_never_dropped(
    fake: tuple[FakePrometheus, str], caplog: pytest.LogCaptureFixture
) -> None:
    prometheus, url = fake
    caplog.set_level(logging.INFO, logger="adapter.promsource")
    clock = Clock()
    source = make_source(url, clock)
    try:
        await source.refresh()
        before = source.latest()
        for status, answer in (
            (503, {"status": "error", "errorType": "unavailable", "error": "overloaded"}),
            (200, {"status": "success", "data": {"resultType": "vector", "result": []}}),
        ):
            prometheus.status, prometheus.answer = status, answer
            clock.now += 120  # far past max age: still kept, so the API answers 503, not 404
            await source.refresh()
            assert source.latest().series == before.series
            assert source.latest().pod_series == before.pod_series
        prometheus.status, prometheus.answer = 200, HEALTHY
        clock.now += 1
        await source.refresh()
    finally:
        await source.close()
    problems = [getattr(r, "problem", None) for r in caplog.records if hasattr(r, "problem")]
    assert problems == [
        "http_503: " + f"{url}/api/v1/query: HTTP 503: unavailable: overloaded",
        "no target of the group in Prometheus",
    ]
    assert [r.getMessage() for r in caplog.records][-1] == "prometheus group read"
    assert source.latest().series[REQUEST_RATE][0].value == pytest.approx(12.5)


async def test_a_series_that_is_no_longer_computed_ages_out_after_max_age(
    fake: tuple[FakePrometheus, str],
) -> None:
    """Prometheus answers, but a model is gone: kept for max age (as the scrape path), then
    dropped, so an unloaded model stops blocking wider selectors."""
    prometheus, url = fake
    clock = Clock()
    source = make_source(url, clock)
    try:
        await source.refresh()
        prometheus.answer = vector(("up", {"pod": "p-0"}, 1.0), ("seen", {"pod": "p-0"}, T0 + 9))
        clock.now = T0 + 10
        await source.refresh()
        assert QUEUE_DEPTH in source.latest().series
        clock.now = T0 + 50
        await source.refresh()
        assert QUEUE_DEPTH not in source.latest().series
    finally:
        await source.close()


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, '{"status":"error","errorType":"bad_data","error":"parse error"}', "query"),
        (502, "<html>bad gateway</html>", "http_502"),
        (200, '{"status":"success","data":{"resultType":"matrix","result":[]}}', "malformed"),
    ],
    ids=["bad-query", "not-json", "not-a-vector"],
)
async def test_errors_name_their_reason(
    fake: tuple[FakePrometheus, str], status: int, body: str, reason: str
) -> None:
    prometheus, url = fake

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    prometheus.handler = answer
    source = make_source(url, Clock())
    try:
        with pytest.raises(PrometheusError) as raised:
            await source.client.query("up", T0)
    finally:
        await source.close()
    assert raised.value.reason == reason


async def test_a_slow_prometheus_times_out(fake: tuple[FakePrometheus, str]) -> None:
    prometheus, url = fake
    never = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    prometheus.handler = hang
    source = make_source(url, Clock(), timeout_seconds=0.3)
    try:
        with pytest.raises(PrometheusError) as raised:
            await source.client.query("up", T0)
    finally:
        never.set()  # let the handler end, so the fake's shutdown does not wait for it
        await source.close()
    assert raised.value.reason == "timeout"


async def test_https_is_verified_with_the_ca_file(tmp_path: Path) -> None:
    cert, key = generate_self_signed(["prometheus.test"])
    (tmp_path / "ca.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "ca.pem", tmp_path / "key.pem")
    prometheus = FakePrometheus()
    runner = await serve(prometheus, context)
    url = f"https://{LOOPBACK}:{port_of(runner)}/prefix"
    trusted = make_source(url, Clock(), ca_file=str(tmp_path / "ca.pem"))
    untrusted = make_source(url, Clock())
    try:
        assert await trusted.client.query("up", T0)
        with pytest.raises(PrometheusError) as raised:
            await untrusted.client.query("up", T0)
        assert raised.value.reason == "connection" and "CERTIFICATE_VERIFY_FAILED" in str(
            raised.value
        )
    finally:
        await trusted.close()
        await untrusted.close()
        await runner.cleanup()


async def test_warm_history_reads_one_range_query_per_group(
    fake: tuple[FakePrometheus, str],
) -> None:
    prometheus, url = fake

    def series(part: str, labels: dict[str, str], values: list[float]) -> dict[str, Any]:
        return {
            "metric": {**labels, SIGNAL_LABEL: part},
            "values": [[T0 - 10 + 5 * i, str(v)] for i, v in enumerate(values)],
        }

    pod, model = {"pod": "p-0"}, {"pod": "p-0", "model": "m"}
    prometheus.answer = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                series("up", pod, [1, 1, 0]),
                series("seen", pod, [T0 - 10, T0 - 5, T0]),
                series("present", model, [1, 1, 1]),
                series("pending", model, [0, 4, 4]),
                series("completed", model, [10, 20, 30]),
                series("pending_delta", model, [0, 0, 0]),
                series("success", model, [600, 1200, 1800]),
            ],
        },
    }
    source = make_source(url, Clock(), warm_start_seconds=600, query_interval_seconds=5)
    try:
        history = await source.warm_history(now=T0)
    finally:
        await source.close()
    (_, _, form) = prometheus.requests[0]
    assert prometheus.requests[0][0] == "/prefix/api/v1/query_range"
    assert (form["start"], form["end"], form["step"]) == (
        f"{T0 - 600:.3f}",
        f"{T0:.3f}",
        "5.000",
    )
    assert "DCGM" not in form["query"]
    (samples,) = history.values()
    # the last step has its target down: no sample, never a guess
    assert [(s.wall, s.arrival_rate, s.queue_depth, s.replicas) for s in samples] == [
        (T0 - 10, 10.0, 0.0, 1),
        (T0 - 5, 20.0, 4.0, 1),
    ]


@pytest.mark.parametrize("setting", ["ca_file", "bearer_token_file"])
def test_an_unreadable_file_fails_the_start_naming_it(tmp_path: Path, setting: str) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(PrometheusSourceError, match=f"{setting}.*missing.pem"):
        make_source("https://prometheus:9090", Clock(), **{setting: missing})


def test_serve_with_only_a_prometheus_source_starts_and_a_bad_ca_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tritonscale.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "signals: {max_age_seconds: 40}\n"
        "sources:\n"
        "  prometheus:\n"
        "    - url: https://prometheus:9090\n"
        f"      ca_file: {tmp_path / 'missing.pem'}\n"
        "      groups:\n"
        "        - labels: {namespace: prod, deployment: llm}\n"
        "          matchers: 'job=\"triton\"'\n"
    )
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "no targets" not in err
    assert err.startswith(
        "tritonscale serve: sources.prometheus (https://prometheus:9090): ca_file"
    )


def test_check_config_loads_the_ca_and_notes_absent_files(tmp_path: Path) -> None:
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate\n")
    config = load_config(
        None,
        {
            "signals": {"max_age_seconds": 40},
            "sources": {
                "prometheus": [
                    {
                        "url": "https://prometheus:9090",
                        "ca_file": str(not_a_ca),
                        "bearer_token_file": str(tmp_path / "absent-token"),
                        "groups": [{"labels": GROUP, "matchers": 'job="t"'}],
                    }
                ]
            },
        },
    )
    found = check_files(config)
    assert len(found.problems) == 1 and found.problems[0].startswith(
        f"sources.prometheus.0.ca_file {str(not_a_ca)!r}: cannot load"
    )
    assert found.absent == (
        f"sources.prometheus.0.bearer_token_file {str(tmp_path / 'absent-token')!r} is not here",
    )
