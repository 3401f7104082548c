"""KEDA's external scaler over gRPC with mutual TLS, called by a real gRPC client generated
from the same proto (as KEDA's operator calls it), including the StreamIsActive stream."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tests.support.api_support import MAX_AGE_SECONDS
from tests.support.helpers import async_wait_until
from tests.support.keda_support import (
    KEDA_CN,
    ScalerPKI,
    Snapshots,
    channel,
    make_scaler,
    make_scaler_pki,
    metrics_request,
    point,
    ref,
    series,
    start_scaler,
    stub,
)

LLM = {"labelSelector": "deployment=llm,model=resnet"}
DEADLINE = 30.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def pki() -> ScalerPKI:
    return make_scaler_pki()


@pytest.fixture
def snapshots() -> Snapshots:
    return Snapshots()


@pytest.fixture
async def keda(pki: ScalerPKI, snapshots: Snapshots) -> AsyncIterator[Any]:
    """A client with KEDA's certificate, connected to a scaler that requires one."""
    server = await start_scaler(make_scaler(snapshots, allowed_names=(KEDA_CN,)), pki)
    ch = channel(server.port, pki, pki.keda)
    try:
        yield stub(ch)
    finally:
        await ch.close()
        await server.stop()


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


# --- GetMetricSpec / GetMetrics ------------------------------------------------------------


async def test_metric_spec_carries_the_target(keda: Any) -> None:
    answer = await keda.GetMetricSpec(
        ref(metric="triton_desired_replicas", targetValue="1.5", **LLM)
    )
    (spec,) = answer.metricSpecs
    assert (spec.metricName, spec.targetSizeFloat, spec.targetSize) == (
        "triton_desired_replicas",
        1.5,
        2,
    )


async def test_metrics_are_the_sum_of_the_selected_series(keda: Any) -> None:
    one = await keda.GetMetrics(
        metrics_request("triton_desired_replicas", metric="triton_desired_replicas", **LLM)
    )
    (value,) = one.metricValues
    assert (value.metricName, value.metricValueFloat, value.metricValue) == (
        "triton_desired_replicas",
        3.0,
        3,
    )
    both = await keda.GetMetrics(
        metrics_request(
            "triton_desired_replicas",
            metric="triton_desired_replicas",
            labelSelector="deployment=llm",
        )
    )
    assert both.metricValues[0].metricValueFloat == 5.0


@pytest.mark.parametrize(
    ("metadata", "code", "fragment"),
    [
        (
            {"metric": "triton_desired_replicas", "labelSelector": "deployment=stale"},
            grpc.StatusCode.UNAVAILABLE,
            f"have no data younger than {MAX_AGE_SECONDS:g}s",
        ),
        (
            {"metric": "triton_queue_compute_ratio", **LLM},
            grpc.StatusCode.UNAVAILABLE,
            "have no value yet",
        ),
        (
            {"metric": "triton_desired_replicas", "labelSelector": "deployment=gone"},
            grpc.StatusCode.NOT_FOUND,
            "wake from zero with another trigger",
        ),
        (
            {"metric": "triton_nonexistent"},
            grpc.StatusCode.NOT_FOUND,
            "scalerMetadata.metric: 'triton_nonexistent' is not a served metric",
        ),
        (
            {"metric": "triton_desired_replicas", "labelSelector": "model in ("},
            grpc.StatusCode.INVALID_ARGUMENT,
            "scalerMetadata.labelSelector: invalid label selector",
        ),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "scalerMetadata.metric is required"),
    ],
)
async def test_an_unknown_value_is_an_error_status_never_zero(
    keda: Any, metadata: dict[str, str], code: grpc.StatusCode, fragment: str
) -> None:
    name = metadata.get("metric", "x")
    error = await failure(keda.GetMetrics(metrics_request(name, **metadata)))
    assert error.code() == code
    assert fragment in (error.details() or "")


async def test_metrics_for_another_name_than_the_triggers_are_refused(keda: Any) -> None:
    error = await failure(
        keda.GetMetrics(metrics_request("triton_queue_depth", metric="triton_desired_replicas"))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "is not this trigger's" in (error.details() or "")


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({"metric": "triton_desired_replicas"}, "scalerMetadata.targetValue is required"),
        ({"metric": "triton_desired_replicas", "targetValue": "0"}, "must be a finite number"),
        ({"metric": "triton_desired_replicas", "targetValue": "x"}, "'x' is not a number"),
        (
            {"metric": "triton_desired_replicas", "targetValue": "1", "activationThreshold": "-1"},
            "scalerMetadata.activationThreshold",
        ),
    ],
)
async def test_bad_metadata_is_invalid_argument_naming_the_key(
    keda: Any, metadata: dict[str, str], fragment: str
) -> None:
    error = await failure(keda.GetMetricSpec(ref(**metadata)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (error.details() or "")


async def test_stream_metric_spec_is_unimplemented_so_keda_polls(keda: Any) -> None:
    stream = keda.StreamMetricSpec(ref(metric="triton_desired_replicas", targetValue="1"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.read()
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- activation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "active"),
    [
        ({"labelSelector": "deployment=llm"}, True),  # 12 req/s > 0
        ({"labelSelector": "deployment=idle"}, False),  # 0 req/s: scale to zero may follow
        ({"labelSelector": "deployment=llm", "activationThreshold": "12"}, False),
        ({"labelSelector": "deployment=llm", "activationThreshold": "11.5"}, True),
    ],
)
async def test_activity_is_the_arrival_rate_above_the_threshold(
    keda: Any, metadata: dict[str, str], active: bool
) -> None:
    answer = await keda.IsActive(ref(metric="triton_desired_replicas", **metadata))
    assert answer.result is active


async def test_activity_of_a_stale_or_absent_deployment_is_unknown(keda: Any) -> None:
    stale = await failure(
        keda.IsActive(ref(metric="triton_desired_replicas", labelSelector="deployment=stale"))
    )
    assert stale.code() == grpc.StatusCode.UNAVAILABLE
    at_zero = await failure(
        keda.IsActive(ref(metric="triton_desired_replicas", labelSelector="deployment=gone"))
    )
    assert at_zero.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_sends_activity_now_and_on_each_change_and_holds_when_unknown(
    keda: Any, snapshots: Snapshots
) -> None:
    stream = keda.StreamIsActive(ref(metric="triton_desired_replicas", **LLM))

    async def next_result() -> bool:
        message = await asyncio.wait_for(stream.read(), DEADLINE)
        assert message is not grpc.aio.EOF
        return bool(message.result)

    try:
        assert await next_result() is True
        snapshots.current = Snapshots.of(series(triton_arrival_rate=(point("llm", 0.0),)))
        assert await next_result() is False
        # unknown (stale): the stream stays silent, KEDA keeps its last state...
        stale = (point("llm", 9.0, age=MAX_AGE_SECONDS + 5),)
        snapshots.current = Snapshots.of(series(triton_arrival_rate=stale))
        pending = asyncio.ensure_future(stream.read())
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done, "nothing may be sent while activity is not known"
        # ...and speaks again once it is known
        snapshots.current = Snapshots.of(series(triton_arrival_rate=(point("llm", 4.0),)))
        message = await asyncio.wait_for(pending, DEADLINE)
        assert message.result is True
    finally:
        stream.cancel()


async def test_stream_with_a_bad_trigger_ends_with_the_error(keda: Any) -> None:
    stream = keda.StreamIsActive(ref(metric="triton_nonexistent"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.read()
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


# --- transport security -------------------------------------------------------------------


async def test_clients_without_a_certificate_from_the_ca_are_refused(
    pki: ScalerPKI, snapshots: Snapshots
) -> None:
    server = await start_scaler(make_scaler(snapshots), pki)
    try:
        for client in (None, pki.stranger):
            ch = channel(server.port, pki, client)
            try:
                error = await failure(
                    stub(ch).IsActive(ref(metric="triton_desired_replicas", **LLM), timeout=10)
                )
                assert error.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                await ch.close()
        ch = channel(server.port, pki, pki.other_cn)  # any CN from the CA: no allow-list here
        try:
            answer = await stub(ch).IsActive(ref(metric="triton_desired_replicas", **LLM))
            assert answer.result is True
        finally:
            await ch.close()
    finally:
        await server.stop()


async def test_allowed_names_refuse_other_common_names(
    pki: ScalerPKI, snapshots: Snapshots
) -> None:
    server = await start_scaler(make_scaler(snapshots, allowed_names=(KEDA_CN,)), pki)
    ch = channel(server.port, pki, pki.other_cn)
    try:
        error = await failure(stub(ch).IsActive(ref(metric="triton_desired_replicas", **LLM)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "CN ['someone-else'] is not in keda_scaler.client_allowed_names" in (
            error.details() or ""
        )
    finally:
        await ch.close()
        await server.stop()


async def test_the_client_must_be_able_to_verify_the_server(
    pki: ScalerPKI, snapshots: Snapshots
) -> None:
    """KEDA verifies with caCert; a client trusting another CA must not connect."""
    server = await start_scaler(make_scaler(snapshots), pki, mutual=False)
    stranger_trust = make_scaler_pki()
    ch = channel(server.port, stranger_trust, None)
    try:
        error = await failure(
            stub(ch).IsActive(ref(metric="triton_desired_replicas", **LLM), timeout=10)
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await ch.close()
        await server.stop()


# --- the server's life --------------------------------------------------------------------


async def test_a_taken_port_fails_readiness_until_it_is_free(
    pki: ScalerPKI, snapshots: Snapshots
) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    server = await start_scaler(make_scaler(snapshots), pki, listen=f"127.0.0.1:{port}")
    try:
        reason = server.readiness()
        assert reason is not None and reason.startswith(f"keda scaler on 127.0.0.1:{port}: cannot")
        blocker.close()
        await async_wait_until(lambda: server.readiness() is None, DEADLINE, 0.05, "a retry")
        ch = channel(port, pki, pki.keda)
        try:
            answer = await stub(ch).IsActive(ref(metric="triton_desired_replicas", **LLM))
            assert answer.result is True
        finally:
            await ch.close()
    finally:
        blocker.close()
        await server.stop()
    assert server.readiness() is not None
