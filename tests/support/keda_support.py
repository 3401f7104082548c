"""KEDA's side of the external scaler, for tests: a certificate authority, KEDA's client
certificate, a snapshot the test can change, and a real gRPC client from the same proto."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc
import trustme

from adapter.keda.proto.externalscaler_pb2 import GetMetricsRequest, ScaledObjectRef
from adapter.keda.proto.externalscaler_pb2_grpc import ExternalScalerStub
from adapter.keda.scaler import ExternalScaler
from adapter.keda.server import ScalerServer
from adapter.metrics_catalog import SERVED_METRICS
from adapter.provider import SnapshotProvider
from adapter.snapshot import SeriesPoint, Snapshot
from tests.support.api_support import MAX_AGE_SECONDS, NOW, FakeClock

KEDA_CN = "keda-operator"


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class ScalerPKI:
    """One CA issues the serving certificate and KEDA's client certificate (as the keda-scaler
    overlay's ClusterIssuer does); a stranger CA issues one the server must refuse."""

    ca_pem: bytes
    serving: Pem
    keda: Pem
    other_cn: Pem
    stranger: Pem


def _pem(ca: trustme.CA, *identities: str, common_name: str | None = None) -> Pem:
    leaf = ca.issue_cert(*identities, common_name=common_name)
    return Pem(leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())


def make_scaler_pki() -> ScalerPKI:
    ca, stranger = trustme.CA(), trustme.CA()
    return ScalerPKI(
        ca_pem=ca.cert_pem.bytes(),
        serving=_pem(ca, "127.0.0.1", "localhost"),
        keda=_pem(ca, "keda.invalid", common_name=KEDA_CN),
        other_cn=_pem(ca, "someone.invalid", common_name="someone-else"),
        stranger=_pem(stranger, "keda.invalid", common_name=KEDA_CN),
    )


def labels(deployment: str, model: str = "resnet") -> dict[str, str]:
    return {"namespace": "prod", "deployment": deployment, "model": model}


def point(deployment: str, value: float, *, model: str = "resnet", age: float = 2.0) -> SeriesPoint:
    return SeriesPoint(labels(deployment, model), value, NOW - age, 5)


def series(**overrides: tuple[SeriesPoint, ...]) -> dict[str, tuple[SeriesPoint, ...]]:
    """What the scaler reads, per metric; ``overrides`` replace whole metrics."""
    base: dict[str, tuple[SeriesPoint, ...]] = {
        "triton_arrival_rate": (
            point("llm", 12.0),
            point("idle", 0.0),
            point("stale", 3.0, age=MAX_AGE_SECONDS + 5),
        ),
        "triton_desired_replicas": (
            point("llm", 3.0),
            point("llm", 2.0, model="bert"),
            point("stale", 4.0, age=MAX_AGE_SECONDS + 5),
        ),
        "triton_queue_compute_ratio": (point("llm", float("nan")),),
    }
    return {**base, **overrides}


@dataclass
class Snapshots:
    """The snapshot in force; tests swap it as the pipeline would."""

    current: Snapshot = field(default_factory=lambda: Snapshots.of(series()))

    @staticmethod
    def of(by_metric: Mapping[str, tuple[SeriesPoint, ...]]) -> Snapshot:
        return Snapshot(built_at=NOW, series=MappingProxyType(dict(by_metric)))

    def __call__(self) -> Snapshot:
        return self.current


def make_scaler(snapshots: Snapshots, allowed_names: tuple[str, ...] = ()) -> ExternalScaler:
    provider = SnapshotProvider(SERVED_METRICS, snapshots, FakeClock(), MAX_AGE_SECONDS)
    return ExternalScaler(provider, stream_check_seconds=0.02, allowed_names=allowed_names)


async def start_scaler(
    scaler: ExternalScaler, pki: ScalerPKI, *, mutual: bool = True, listen: str = "127.0.0.1:0"
) -> ScalerServer:
    server = ScalerServer(
        scaler,
        listen,
        certificate=(pki.serving.cert, pki.serving.key),
        client_ca_pem=pki.ca_pem if mutual else None,
        retry_seconds=0.05,
    )
    await server.start()
    return server


def channel(port: int, pki: ScalerPKI, client: Pem | None) -> grpc.aio.Channel:
    """A channel as KEDA opens it: ``caCert`` to verify the server, and ``tlsClientCert`` /
    ``tlsClientKey`` when given."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_pem,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


def ref(**metadata: str) -> ScaledObjectRef:
    return ScaledObjectRef(name="triton-llm", namespace="prod", scalerMetadata=metadata)


def metrics_request(name: str, /, **metadata: str) -> GetMetricsRequest:
    return GetMetricsRequest(scaledObjectRef=ref(**metadata), metricName=name)


def stub(ch: grpc.aio.Channel) -> ExternalScalerStub:
    return ExternalScalerStub(ch)


async def next_message(stream: AsyncIterator[object]) -> object:
    return await stream.__anext__()
