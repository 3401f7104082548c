"""The snapshot feed: how the main process hands each published snapshot to the API process.

With ``server.api_process`` the metrics APIs are answered by a process of their own (README:
"The API in a process of its own"), so scraping and serving no longer share one core and one
event loop. The main process writes every published snapshot, and its health, to a socket
pair it made for its child; the API process rebuilds the snapshot and swaps it in whole.

Wire format: frames of a 4-byte big-endian length and a pickle of one message. Pickle is safe
here because the socket is a ``socketpair`` inherited by the main process's own child: no one
else can write to it. A snapshot travels as many small frames (at most ``FRAME_POINTS``
points each), and the API process decodes one frame at a time between requests: a request
waits on at most one frame's decoding (well under a millisecond), never on a whole snapshot,
and never sees a half-received one.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from adapter.snapshot import PodKey, SeriesIndexBuilder, SeriesPoint, Snapshot

FRAME_POINTS = 500
"""Points (or pods) per frame: about 0.3-0.6 ms to decode on one core."""

MAX_FRAME_BYTES = 64 * 1024 * 1024
"""A frame longer than this is not from our own main process: the feed is broken."""

_LENGTH = struct.Struct(">I")

# message kinds (the first item of every message)
CONFIG = "config"  # (CONFIG, config): the first frame, the API process's settings
BEGIN = "begin"  # (BEGIN, built_at): a snapshot starts
SERIES = "series"  # (SERIES, metric, points): group series, in the snapshot's order
POD_SERIES = "pod_series"  # (POD_SERIES, metric, points): per-pod series
PODS = "pods"  # (PODS, [(pod key, labels), ...]): pods' Kubernetes labels
END = "end"  # (END, health): the snapshot is whole
HEALTH = "health"  # (HEALTH, health): the main process is alive (sent every second)
METRICS_WANTED = "metrics_wanted"  # (METRICS_WANTED,): the API process asks for the next
METRICS = "metrics"  # (METRICS, exposition): the main process's /metrics, as bytes


class FeedClosedError(ConnectionError):
    """The other process closed the feed (it exited) or sent something that is not a frame."""


@dataclass(frozen=True, slots=True)
class Health:
    """The main process's readiness and liveness: None when good, else the reason."""

    not_ready: str | None
    not_live: str | None


def frame(message: tuple[Any, ...]) -> bytes:
    """One message as a length-prefixed frame."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def _wire_points(points: tuple[SeriesPoint, ...]) -> list[tuple[Any, ...]]:
    """Points as plain tuples (a named tuple unpickles through its Python ``__new__``) with
    plain-dict labels (a read-only mapping does not pickle); a labels dict shared by several
    points is written once per frame."""
    return [
        (labels if type(labels) is dict else dict(labels), value, stamp, window, source)
        for labels, value, stamp, window, source in points
    ]


def snapshot_frames(snapshot: Snapshot, health: Health) -> Iterator[bytes]:
    """The frames of one snapshot, ``FRAME_POINTS`` points at most each, then its END."""
    yield frame((BEGIN, snapshot.built_at))
    for kind, series in ((SERIES, snapshot.series), (POD_SERIES, snapshot.pod_series)):
        for metric, points in series.items():
            for first in range(0, len(points), FRAME_POINTS):
                chunk = _wire_points(points[first : first + FRAME_POINTS])
                yield frame((kind, metric, chunk))
    pods = [(key, dict(labels)) for key, labels in snapshot.pods.items()]
    for first in range(0, len(pods), FRAME_POINTS):
        yield frame((PODS, pods[first : first + FRAME_POINTS]))
    yield frame((END, health))


async def read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    """The next message; FeedClosedError at the end of the stream or on a bad frame."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_FRAME_BYTES:
            raise ValueError(f"a frame of {length} bytes (at most {MAX_FRAME_BYTES})")
        message = pickle.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError) as err:
        raise FeedClosedError(f"snapshot feed closed: {err or type(err).__name__}") from None
    except (ValueError, pickle.UnpicklingError) as err:
        raise FeedClosedError(f"snapshot feed: {err}") from None
    if not isinstance(message, tuple) or not message:
        raise FeedClosedError(f"snapshot feed: not a message: {type(message).__name__}")
    return message


class FeedWriter:
    """The main process's end: writes each published snapshot, and the health every second.
    A snapshot published while the API process is still reading the one before is not sent
    (``skipped`` counts them): the child takes the next, so the feed never queues."""

    def __init__(self, writer: asyncio.StreamWriter, health: Callable[[], Health]) -> None:
        self._writer = writer
        self._health = health
        self.sent = 0
        self.skipped = 0

    def send(self, message: tuple[Any, ...]) -> None:
        self._writer.write(frame(message))

    def publish(self, snapshot: Snapshot) -> None:
        """An ``on_publish`` subscriber of the pipeline."""
        if self._writer.is_closing():
            return
        if self._writer.transport.get_write_buffer_size() > 0:
            self.skipped += 1  # the API process is still reading the last one
            return
        self._writer.write(b"".join(snapshot_frames(snapshot, self._health())))
        self.sent += 1

    async def heartbeat(self, interval_seconds: float = 1.0) -> None:
        """Send the health every ``interval_seconds`` until cancelled or the feed closes."""
        while not self._writer.is_closing():
            self.send((HEALTH, self._health()))
            await asyncio.sleep(interval_seconds)


class FeedReader:
    """The API process's end: the snapshot in force and the main process's health.

    ``silence_seconds``: no frame for this long and the main process is taken as hung
    (liveness fails, so the kubelet restarts the pod). Its values age on their own: a
    snapshot not renewed goes stale after ``signals.max_age_seconds``, and is then not served.
    """

    def __init__(self, silence_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._silence = silence_seconds
        self._clock = clock
        self._snapshot = Snapshot()
        self._received_any = False
        self._health = Health(None, None)  # readiness waits for the first snapshot anyway
        self._heard_at = clock()
        self._building: _Assembly | None = None
        self._metrics_wanted: list[asyncio.Future[bytes]] = []
        self.received = 0

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def readiness(self) -> str | None:
        if not self._received_any:
            return "waiting for the first snapshot from the main process"
        return self._health.not_ready or self.liveness()

    def liveness(self) -> str | None:
        silent = self._clock() - self._heard_at
        if silent > self._silence:
            return f"no word from the main process for {silent:.0f} s"
        return self._health.not_live

    def apply(self, message: tuple[Any, ...]) -> None:
        """One message: part of a snapshot, its end (swap it in), or a heartbeat."""
        self._heard_at = self._clock()
        kind = message[0]
        if kind == BEGIN:
            self._building = _Assembly(float(message[1]))
        elif kind == HEALTH:
            self._health = message[1]
        elif kind == METRICS:
            for waiting in self._metrics_wanted:
                if not waiting.done():
                    waiting.set_result(message[1])
            self._metrics_wanted.clear()
        elif self._building is None:
            raise FeedClosedError(f"snapshot feed: {kind!r} outside a snapshot")
        elif kind == END:
            self._snapshot = self._building.snapshot()
            self._building = None
            self._health = message[1]
            self._received_any = True
            self.received += 1
        else:
            self._building.add(kind, message)

    async def main_metrics(
        self, writer: asyncio.StreamWriter, timeout_seconds: float
    ) -> bytes | None:
        """The main process's /metrics exposition, asked for over the feed; None when it does
        not answer within ``timeout_seconds`` (``run`` must be reading the feed)."""
        waiting = asyncio.get_running_loop().create_future()
        self._metrics_wanted.append(waiting)
        writer.write(frame((METRICS_WANTED,)))
        try:
            return await asyncio.wait_for(waiting, timeout_seconds)
        except TimeoutError:
            return None

    async def run(self, reader: asyncio.StreamReader) -> None:
        """Read until the feed closes (FeedClosedError), one frame per turn of the loop."""
        while True:
            self.apply(await read_frame(reader))
            await asyncio.sleep(0)  # let requests in between frames


_new_point = tuple.__new__


class _Assembly:
    """A snapshot being received."""

    def __init__(self, built_at: float) -> None:
        self.built_at = built_at
        self.series: dict[str, list[SeriesPoint]] = {}
        self.pod_series: dict[str, list[SeriesPoint]] = {}
        self.pods: dict[PodKey, Mapping[str, str]] = {}
        self.pod_index = SeriesIndexBuilder("pod")  # built as the frames come

    def add(self, kind: str, message: tuple[Any, ...]) -> None:
        if kind == PODS:
            self.pods.update((key, MappingProxyType(labels)) for key, labels in message[1])
            return
        if kind not in (SERIES, POD_SERIES):
            raise FeedClosedError(f"snapshot feed: unknown message {kind!r}")
        _, metric, wire = message
        points = [_new_point(SeriesPoint, p) for p in wire]
        if kind == SERIES:
            self.series.setdefault(metric, []).extend(points)
        else:
            self.pod_series.setdefault(metric, []).extend(points)
            self.pod_index.add(metric, points)

    def snapshot(self) -> Snapshot:
        return Snapshot.with_pod_index(
            self.built_at,
            MappingProxyType({m: tuple(p) for m, p in self.series.items()}),
            MappingProxyType({m: tuple(p) for m, p in self.pod_series.items()}),
            MappingProxyType(self.pods),
            self.pod_index.build(),
        )


def silence_limit(interval_seconds: float) -> float:
    """How long the API process waits on a silent main process before failing liveness:
    ten heartbeats or three scrape intervals, whichever is longer."""
    return max(10.0, 3 * interval_seconds)
