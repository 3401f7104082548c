"""The pipeline: discovery -> scrape -> signals -> policies -> published snapshot.

Scrape loops write readings into per-target histories; one publisher task turns
them into a fresh immutable :class:`Snapshot` shortly after new readings arrive and
swaps it in. The API reads ``pipeline.snapshot`` and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

import aiohttp

from adapter.config import Config
from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.scrape import ScrapeLoop, ScrapeObserver, TargetState
from adapter.signals import Labels, Member, ReadingHistory, group_series, members_in_service
from adapter.snapshot import SeriesPoint, Snapshot
from adapter.targets import Target, TargetSource

log = logging.getLogger(__name__)

SeriesKey = tuple[str, Labels]  # (metric, sorted labels)
PointsByMetric = dict[str, list[SeriesPoint]]


class SignalStage(Protocol):
    """A stage after the raw signals (the predictive policies)."""

    def step(
        self, now_mono: float, raw: Mapping[str, list[SeriesPoint]], replicas: Mapping[Labels, int]
    ) -> PointsByMetric: ...


class Pipeline:
    def __init__(
        self,
        config: Config,
        source: TargetSource,
        *,
        stages: tuple[SignalStage, ...] = (),
        scrape_observer: ScrapeObserver | None = None,
        on_target_removed: Callable[[Target], None] | None = None,
    ) -> None:
        self._config = config
        self._source = source
        self._stages = stages
        self._observer = scrape_observer
        self._on_target_removed = on_target_removed
        self._parser = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
        self._states: dict[Target, TargetState] = {}
        self._loops: dict[Target, asyncio.Task[None]] = {}
        self._dirty = asyncio.Event()
        self._snapshot = Snapshot()
        self._published_once = False
        self._failure: str | None = None
        self._last_points: dict[SeriesKey, tuple[Labels, SeriesPoint]] = {}
        self._left_out: set[str] = set()  # URLs of members left out of their group
        self._stage_failing = False

    # -- what the API reads -------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def readiness(self) -> str | None:
        """None when ready; otherwise why not (for /readyz).

        Ready once the first snapshot is published, even if targets are down: a pod that is
        never Ready would make the APIService unavailable for every namespace (and stall
        namespace deletion), while missing data is already answered per metric with 503.
        """
        if not self._published_once:
            return "no snapshot has been published yet"
        return None

    def liveness(self) -> str | None:
        """None while the pipeline runs; why it stopped otherwise (for /livez)."""
        return self._failure

    @property
    def targets(self) -> Mapping[Target, TargetState]:
        return MappingProxyType(self._states)

    def _interval(self, target: Target) -> float:
        return target.scrape_interval_seconds or self._config.scrape.interval_seconds

    def track(self, target: Target, now_mono: float | None = None) -> TargetState:
        """Start keeping readings for ``target`` (the scrape loop feeds its history);
        ``now_mono`` (default now) is when it counts as failing from if it never answers."""
        interval = self._interval(target)
        keep = self._config.signals.rate_window_seconds + 3 * interval
        started = time.monotonic() if now_mono is None else now_mono
        history = ReadingHistory(keep, self._config.scrape.max_models_per_target, started)
        state = TargetState(target, history)
        self._states[target] = state
        return state

    # -- running --------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._failure = f"pipeline stopped: {type(err).__name__}: {err}"
            log.exception("pipeline stopped")
            raise

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=2, keepalive_timeout=30)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            publisher = asyncio.create_task(self._publish_forever(), name="publisher")
            try:
                async for targets in self._source.watch():
                    self._reconcile(targets, session)
                await asyncio.Future()  # static sources end; keep scraping
            finally:
                publisher.cancel()
                for task in self._loops.values():
                    task.cancel()
                await asyncio.gather(publisher, *self._loops.values(), return_exceptions=True)

    def _reconcile(self, targets: frozenset[Target], session: aiohttp.ClientSession) -> None:
        scrape = self._config.scrape
        for gone in set(self._states) - targets:
            self._loops.pop(gone).cancel()
            del self._states[gone]
            self._left_out.discard(gone.url)
            if self._on_target_removed is not None:
                self._on_target_removed(gone)
            log.info("target removed", extra={"target": gone.url})
        for target in targets - set(self._states):
            state = self.track(target)
            loop = ScrapeLoop(
                state,
                session,
                self._parser,
                interval_seconds=self._interval(target),
                timeout_seconds=scrape.timeout_seconds,
                max_bytes=scrape.max_response_bytes,
                backoff_max_seconds=scrape.backoff_max_seconds,
                sum_versions=self._config.signals.sum_versions,
                on_reading=self._dirty.set,
                observer=self._observer,
                max_series=scrape.max_series_per_target,
                max_models=scrape.max_models_per_target,
            )
            self._loops[target] = asyncio.create_task(loop.run(), name=f"scrape {target.url}")
            log.info("target added", extra={"target": target.url, "labels": dict(target.labels)})
        self._dirty.set()

    async def _publish_forever(self) -> None:
        """Publish soon after new readings, at most every 1/4 interval, at least every interval."""
        interval = self._config.scrape.interval_seconds
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # lands as the event is set, and shutdown then waits on this loop for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                self.publish(time.monotonic())
            except Exception:  # a bug in one pass must not stop publishing
                log.exception("publish failed")
            await asyncio.sleep(interval / 4)

    def publish(self, now_mono: float, now_wall: float | None = None) -> Snapshot:
        """Build and swap in a new snapshot from the current histories.

        ``now_mono`` drives the policies' steps; ``now_wall`` (Unix s, default now) decides
        how long a series that can no longer be computed is carried forward.
        """
        now_wall = time.time() if now_wall is None else now_wall
        groups: dict[Labels, list[Member]] = {}
        for target, state in self._states.items():
            member = Member(target.kind, state.history, target.url)
            groups.setdefault(target.group, []).append(member)
        groups = {group: self._in_service(members, now_mono) for group, members in groups.items()}

        window = self._config.signals.rate_window_seconds
        points: PointsByMetric = {}
        fresh: dict[SeriesKey, tuple[Labels, SeriesPoint]] = {}
        for group, members in groups.items():
            for metric, series in group_series(group, members, window).items():
                for point in series:
                    key = (metric, tuple(sorted(point.labels.items())))
                    fresh[key] = (group, point)
        # Carry forward series whose group still exists but could not be recomputed this
        # pass (e.g. one reading since a restart): the old value keeps its old timestamp
        # and the API holds it once it is older than max age. Past max age it is dropped,
        # so a model that was unloaded stops blocking wider selectors.
        max_age = self._config.signals.max_age_seconds
        for key, (group, point) in self._last_points.items():
            if key not in fresh and group in groups and now_wall - point.timestamp <= max_age:
                fresh[key] = (group, point)
        self._last_points = fresh
        for key, (_group, point) in fresh.items():
            points.setdefault(key[0], []).append(point)

        replicas = {
            group: sum(1 for member in members if member.kind == "triton")
            for group, members in groups.items()
        }
        for stage in self._stages:
            try:
                produced = stage.step(now_mono, points, replicas)
            except Exception:  # extreme input to one series must not stop all publishing
                if not self._stage_failing:
                    log.exception("signal stage failed: its outputs are not served this pass")
                self._stage_failing = True
                continue
            self._stage_failing = False
            for metric, extra in produced.items():
                points.setdefault(metric, []).extend(map(_unknown_if_invalid, extra))

        snapshot = Snapshot(
            built_at=time.time(),
            series=MappingProxyType({m: tuple(p) for m, p in points.items()}),
        )
        self._snapshot = snapshot
        self._published_once = True
        return snapshot

    def _in_service(self, members: list[Member], now_mono: float) -> list[Member]:
        """The group's members minus those failing too long; logs each change once."""
        drop_after = self._config.signals.member_failure_drop_seconds
        kept = members_in_service(members, now_mono, drop_after)
        for member in members:
            out = member not in kept
            if out == (member.name in self._left_out):
                continue
            if out:
                self._left_out.add(member.name)
                log.warning(
                    "group member left out: no usable scrape; its group is served without it",
                    extra={"target": member.name, "after_seconds": drop_after},
                )
            else:
                self._left_out.discard(member.name)
                log.info("group member back in service", extra={"target": member.name})
        return kept


def _unknown_if_invalid(point: SeriesPoint) -> SeriesPoint:
    """A stage's value that is infinite or negative (e.g. a forecast from extreme rates)
    is published as 'not known' (NaN: answered 503, the HPA holds), never as it is."""
    if point.value != point.value or 0.0 <= point.value < math.inf:
        return point
    return dataclasses.replace(point, value=math.nan)
