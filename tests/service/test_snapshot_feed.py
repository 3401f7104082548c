"""The snapshot feed from the main process to the API process: a snapshot arrives whole and
exact, in bounded frames, is swapped in only when complete; a slow reader makes the writer
skip (counted), never queue without bound; a silent main process fails liveness."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from types import MappingProxyType

import pytest

from adapter.snapshot import SeriesIndex, SeriesPoint, Snapshot
from adapter.snapshot_feed import (
    BEGIN,
    END,
    FRAME_POINTS,
    MAX_FRAME_BYTES,
    SERIES,
    FeedClosedError,
    FeedReader,
    FeedWriter,
    Health,
    read_frame,
    snapshot_frames,
)

GOOD = Health(None, None)


def messages(snapshot: Snapshot, health: Health = GOOD) -> list[tuple[object, ...]]:
    return [pickle.loads(f[4:]) for f in snapshot_frames(snapshot, health)]


def sample_snapshot(points: int = 1234, built_at: float = 1_700_000_000.0) -> Snapshot:
    """Group series of two metrics, per-pod series and pods' labels; labels shared between
    metrics and read-only mappings among them, as the pipeline builds them."""
    series: dict[str, tuple[SeriesPoint, ...]] = {}
    pod_series: dict[str, tuple[SeriesPoint, ...]] = {}
    for metric in ("triton_queue_depth", "triton_arrival_rate"):
        series[metric] = tuple(
            SeriesPoint(
                {"namespace": f"ns-{i % 7}", "deployment": f"d-{i}", "model": "m"},
                i / 3,
                built_at - i % 5,
                None if metric == "triton_queue_depth" else 30,
                f"http://10.0.{i // 250}.{i % 250}:8002/metrics",
            )
            for i in range(points)
        )
        pod_series[metric] = tuple(
            SeriesPoint(
                MappingProxyType({"namespace": "ns-0", "deployment": "d-0", "pod": f"p-{i}"}),
                float("nan") if i == 3 else float(i),
                built_at,
            )
            for i in range(points // 2)
        )
    pods = {
        ("ns-0", f"p-{i}"): MappingProxyType({"app": "triton", "i": str(i)}) for i in range(700)
    }
    return Snapshot(
        built_at=built_at,
        series=MappingProxyType(series),
        pod_series=MappingProxyType(pod_series),
        pods=MappingProxyType(pods),
    )


def same_points(a: tuple[SeriesPoint, ...], b: tuple[SeriesPoint, ...]) -> bool:
    """Equal, NaN values included (NaN != NaN)."""
    return len(a) == len(b) and all(
        dict(x.labels) == dict(y.labels)
        and (x.value == y.value or (x.value != x.value and y.value != y.value))
        and x[2:] == y[2:]
        for x, y in zip(a, b, strict=True)
    )


def test_a_snapshot_arrives_whole_and_exact_in_bounded_frames() -> None:
    sent = sample_snapshot()
    reader = FeedReader(silence_seconds=10.0)
    sizes = []
    for message in messages(sent):
        if message[0] not in (BEGIN, END):
            sizes.append(len(message[-1]))
        reader.apply(message)
    received = reader.snapshot()
    assert max(sizes) <= FRAME_POINTS and len(sizes) > 6
    assert received.built_at == sent.built_at
    for metric in sent.series:
        assert same_points(received.series[metric], sent.series[metric])
        assert same_points(received.pod_series[metric], sent.pod_series[metric])
        assert all(type(p) is SeriesPoint for p in received.series[metric])
    assert {k: dict(v) for k, v in received.pods.items()} == {
        k: dict(v) for k, v in sent.pods.items()
    }
    # the indexes a request reads are built for the received snapshot
    assert same_points(
        received.points_in("triton_arrival_rate", "ns-3"),
        sent.points_in("triton_arrival_rate", "ns-3"),
    )
    assert received.pods_in("ns-0") == sent.pods_in("ns-0")


def test_the_per_pod_index_is_built_as_the_frames_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    """No request in the API process pays for indexing the per-pod series of a snapshot."""
    sent = sample_snapshot()
    reader = FeedReader(silence_seconds=10.0)
    for message in messages(sent):
        reader.apply(message)
    received = reader.snapshot()

    def not_at_request_time(*_args: object) -> SeriesIndex:
        raise AssertionError("the per-pod index was built by a request")

    monkeypatch.setattr(SeriesIndex, "of", not_at_request_time)
    for metric in sent.pod_series:
        assert same_points(
            received.pod_points_in(metric, "ns-0"), sent.pod_series[metric]
        )  # every pod series is in ns-0
        assert same_points(
            received.pod_points_of(metric, "ns-0", "pod", "p-7"),
            tuple(p for p in sent.pod_series[metric] if p.labels["pod"] == "p-7"),
        )


def test_a_half_received_snapshot_is_never_served() -> None:
    first, second = sample_snapshot(built_at=100.0), sample_snapshot(built_at=200.0)
    reader = FeedReader(silence_seconds=10.0)
    for message in messages(first):
        reader.apply(message)
    *body, end = messages(second)
    for message in body:
        reader.apply(message)
        assert reader.snapshot().built_at == 100.0
    reader.apply(end)
    assert reader.snapshot().built_at == 200.0


def test_health_comes_with_each_snapshot_and_silence_fails_liveness() -> None:
    now = [0.0]
    reader = FeedReader(silence_seconds=10.0, clock=lambda: now[0])
    assert reader.readiness() == "waiting for the first snapshot from the main process"
    assert reader.liveness() is None
    for message in messages(sample_snapshot(10), Health("2 of 2 forecasts not warm yet", None)):
        reader.apply(message)
    assert reader.readiness() == "2 of 2 forecasts not warm yet"
    for message in messages(sample_snapshot(10)):
        reader.apply(message)
    assert reader.readiness() is None and reader.liveness() is None
    now[0] = 10.5
    assert reader.liveness() == "no word from the main process for 10 s"
    assert reader.readiness() == "no word from the main process for 10 s"
    reader.apply(("health", Health(None, "pipeline stopped: boom")))
    assert reader.liveness() == "pipeline stopped: boom"


def test_a_message_outside_a_snapshot_breaks_the_feed() -> None:
    reader = FeedReader(silence_seconds=10.0)
    with pytest.raises(FeedClosedError, match="outside a snapshot"):
        reader.apply((SERIES, "triton_queue_depth", []))


async def test_an_oversized_or_truncated_frame_closes_the_feed() -> None:
    oversized = asyncio.StreamReader()
    oversized.feed_data(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(FeedClosedError, match="a frame of"):
        await read_frame(oversized)
    truncated = asyncio.StreamReader()
    truncated.feed_data(struct.pack(">I", 100) + b"abc")
    truncated.feed_eof()
    with pytest.raises(FeedClosedError, match="closed"):
        await read_frame(truncated)


async def test_a_slow_reader_makes_the_writer_skip_not_queue() -> None:
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=ours)
    their_reader, their_writer = await asyncio.open_connection(sock=theirs)
    feed = FeedWriter(writer, lambda: GOOD)
    big = sample_snapshot(20_000)  # megabytes: more than the socket buffers hold
    try:
        feed.publish(big)
        feed.publish(big)
        assert (feed.sent, feed.skipped) == (1, 1)
        reader = FeedReader(silence_seconds=10.0)
        while reader.received == 0:
            reader.apply(await read_frame(their_reader))
        await writer.drain()
        feed.publish(sample_snapshot(10, built_at=5.0))
        assert (feed.sent, feed.skipped) == (2, 1)
        while reader.received == 1:
            reader.apply(await read_frame(their_reader))
        assert reader.snapshot().built_at == 5.0
    finally:
        writer.close()
        their_writer.close()
