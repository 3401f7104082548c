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
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

from adapter.config import ScrapeConfig, SignalsConfig
from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser
from adapter.gpus import GpuSample, PodGpus, attribute, shared_devices
from adapter.scrape import ScrapeLoop, ScrapeObserver, TargetState
from adapter.scrape_pacing import ScrapePacing
from adapter.series_cache import GroupSeriesCache, Served
from adapter.signals import (
    Labels,
    Member,
    ReadingHistory,
    SourcedSeries,
    members_in_service,
    pod_group,
)
from adapter.snapshot import PodKey, SeriesPoint, Snapshot
from adapter.targets import Target, TargetSource

log = logging.getLogger(__name__)

UNREADY_AFTER_FAILED_PUBLISHES = 3
"""Publishes that fail in a row before /readyz fails (about 3 s at the default interval)."""

LIVENESS_AFTER_FAILING_SECONDS = 60.0
"""Publishing that keeps failing fails liveness after this long (or twice max age)."""

SeriesKey = tuple[str, Labels]  # (metric, sorted labels)
PointsByMetric = dict[str, list[SeriesPoint]]


class SignalStage(Protocol):
    """A stage after the raw signals (the predictive policies)."""

    def step(
        self, now_mono: float, raw: Mapping[str, list[SeriesPoint]], replicas: Mapping[Labels, int]
    ) -> PointsByMetric: ...


class SeriesSource(Protocol):
    """Signals read from elsewhere than the scrape loops (a Prometheus), merged into each
    published snapshot beside the scraped groups'."""

    refreshes: int  # completed refreshes: after the first, its series have appeared

    def latest(self) -> SourcedSeries: ...


class Pipeline:
    def __init__(
        self,
        scrape: ScrapeConfig,
        signals: SignalsConfig,
        source: TargetSource,
        *,
        stages: tuple[SignalStage, ...] = (),
        scrape_observer: ScrapeObserver | None = None,
        on_target_removed: Callable[[Target], None] | None = None,
        on_publish: Sequence[Callable[[Snapshot], None]] = (),
        series_sources: tuple[SeriesSource, ...] = (),
    ) -> None:
        self._scrape = scrape
        self._signals = signals
        self._source = source
        self._stages = stages
        self._observer = scrape_observer
        self._on_target_removed = on_target_removed
        self._on_publish = tuple(on_publish)  # downstream readers (the page's recorder)
        self._series_sources = series_sources
        self._shared_gpus: dict[str, tuple[PodKey, ...]] = {}
        self._parser = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
        self._states: dict[Target, TargetState] = {}
        self._loops: dict[Target, asyncio.Task[None]] = {}
        self._dirty = asyncio.Event()
        self._snapshot = Snapshot()
        self._published_once = False
        self._reconciled_once = False
        self._published_complete = False
        self._failure: str | None = None
        self._publish_failures = 0  # in a row
        self._failing_since: float | None = None  # monotonic time of the first of them
        self._publish_error: str | None = None
        self._last_points = _Published()
        self._last_pod_points = _Published()
        self._left_out: set[str] = set()  # URLs of members left out of their group
        self._stage_failing = False
        self.pacing = ScrapePacing(scrape.max_concurrent_scrapes)  # shared by every loop
        self._group_cache = GroupSeriesCache()  # series of groups with no new reading
        self._pod_cache = GroupSeriesCache()
        self._memberships: dict[Target, _Membership] = {}

    # -- what the API reads -------------------------------------------------------
    def subscribe(self, subscriber: Callable[[Snapshot], None]) -> None:
        """Also hand every snapshot published from now on to ``subscriber`` (the feed of the
        API process, started once the pipeline exists)."""
        self._on_publish = (*self._on_publish, subscriber)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def readiness(self) -> str | None:
        """None when ready; otherwise why not (for /readyz).

        Ready once the first snapshot is published, even if targets are down: a pod that is
        never Ready would make the APIService unavailable for every namespace (and stall
        namespace deletion), while missing data is already answered per metric with 503.
        Not ready while the last :data:`UNREADY_AFTER_FAILED_PUBLISHES` publishes have failed
        (a bug, not bad data): another replica serves fresh values, this one cannot.
        """
        if not self._published_once:
            return "no snapshot has been published yet"
        if self._publish_failures >= UNREADY_AFTER_FAILED_PUBLISHES:
            return (
                f"the last {self._publish_failures} publishes failed "
                f"({self._publish_error}); the values served are not being renewed"
            )
        return None

    def published_after_every_target_scraped(self) -> bool:
        """True once a snapshot (and the stages' step) was built after the target source had
        delivered, every target had been scraped at least once, successfully or not, and every
        series source (Prometheus) had been read at least once: from
        then on every series the targets give has appeared."""
        return self._published_complete

    def _every_target_scraped(self) -> bool:
        return (
            self._reconciled_once
            and all(
                state.scrapes > 0 or state.consecutive_failures > 0
                for state in self._states.values()
            )
            and all(source.refreshes > 0 for source in self._series_sources)
        )

    def liveness(self, now_mono: float | None = None) -> str | None:
        """None while the pipeline runs; why not otherwise (for /livez and every probe).

        Dead when the pipeline task stopped, or when publishing has failed without a break for
        :meth:`liveness_after_seconds`: by then every served value is past max age, and a
        restart (fresh policy state) is the one thing left to try.
        """
        if self._failure is not None:
            return self._failure
        if self._failing_since is not None:
            now = time.monotonic() if now_mono is None else now_mono
            failing = now - self._failing_since
            if failing >= self.liveness_after_seconds:
                return (
                    f"publishing has failed for {failing:.0f} s "
                    f"({self._publish_failures} times): {self._publish_error}"
                )
        return None

    @property
    def liveness_after_seconds(self) -> float:
        """Failing publishes kill liveness after max(60 s, 2 x signals.max_age_seconds)."""
        return max(LIVENESS_AFTER_FAILING_SECONDS, 2 * self._signals.max_age_seconds)

    @property
    def targets(self) -> Mapping[Target, TargetState]:
        return MappingProxyType(self._states)

    def _interval(self, target: Target) -> float:
        return target.scrape_interval_seconds or self._scrape.interval_seconds

    def track(self, target: Target, now_mono: float | None = None) -> TargetState:
        """Start keeping readings for ``target`` (the scrape loop feeds its history);
        ``now_mono`` (default now) is when it counts as failing from if it never answers."""
        interval = self._interval(target)
        keep = self._signals.rate_window_seconds + 3 * interval
        started = time.monotonic() if now_mono is None else now_mono
        history = ReadingHistory(
            keep,
            self._scrape.max_models_per_target,
            started,
            settle_seconds=self._signals.rate_window_seconds,
        )
        state = TargetState(target, history)
        self._states[target] = state
        return state

    def untrack(self, target: Target) -> None:
        """Forget ``target``'s readings (it left discovery); its series age out as stale."""
        del self._states[target]
        self._memberships.pop(target, None)
        self._left_out.discard(target.url)
        if self._on_target_removed is not None:
            self._on_target_removed(target)
        log.info("target removed", extra={"target": target.url})

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
        publisher = asyncio.create_task(self._publish_forever(), name="publisher")
        try:
            async for targets in self._source.watch():
                self._reconcile(targets)
            await asyncio.Future()  # static sources end; keep scraping
        finally:
            publisher.cancel()
            for task in self._loops.values():
                task.cancel()
            await asyncio.gather(publisher, *self._loops.values(), return_exceptions=True)

    def _reconcile(self, targets: frozenset[Target]) -> None:
        scrape = self._scrape
        self._relabel(targets)
        for gone in set(self._states) - targets:
            self._loops.pop(gone).cancel()
            self.untrack(gone)
        for target in targets - set(self._states):
            state = self.track(target)
            loop = ScrapeLoop(
                state,
                self._parser,
                interval_seconds=self._interval(target),
                timeout_seconds=scrape.timeout_seconds,
                max_bytes=scrape.max_response_bytes,
                backoff_max_seconds=scrape.backoff_max_seconds,
                sum_versions=self._signals.sum_versions,
                on_reading=self._dirty.set,
                observer=self._observer,
                max_series=scrape.max_series_per_target,
                max_models=scrape.max_models_per_target,
                pacing=self.pacing,
            )
            self._loops[target] = asyncio.create_task(loop.run(), name=f"scrape {target.url}")
            log.info("target added", extra={"target": target.url, "labels": dict(target.labels)})
        self._reconciled_once = True
        self._dirty.set()

    def _relabel(self, targets: frozenset[Target]) -> None:
        """Hand a target's scrape loop and history to its successor when only its pod's
        labels changed (the scrape is the same: same URL, group and pod), so a relabelled
        pod keeps its rate window."""
        gone = set(self._states) - targets
        if not gone:
            return
        successors = {_scrape_identity(t): t for t in targets - set(self._states)}
        for old in gone:
            new = successors.get(_scrape_identity(old))
            if new is None:
                continue
            state = self._states.pop(old)
            self._memberships.pop(old, None)
            state.target = new
            self._states[new] = state
            self._loops[new] = self._loops.pop(old)
            log.info("target relabelled", extra={"target": new.url})

    async def _publish_forever(self) -> None:
        """Publish soon after new readings, at most every 1/4 interval, at least every interval."""
        interval = self._scrape.interval_seconds
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # lands as the event is set, and shutdown then waits on this loop for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._dirty.wait()
            self._dirty.clear()
            self.try_publish(time.monotonic())
            await asyncio.sleep(interval / 4)

    def try_publish(self, now_mono: float) -> Snapshot | None:
        """:meth:`publish`, recording a failure for readiness and liveness instead of raising.

        Logs once per state change: the first failure with its traceback, a different error
        again, the recovery; the same error every second is not logged again.
        """
        try:
            snapshot = self.publish(now_mono)
        except Exception as err:  # a bug in one pass must not stop publishing
            error = f"{type(err).__name__}: {err}"
            self._publish_failures += 1
            if self._failing_since is None:
                self._failing_since = now_mono
                log.exception("publish failed; serving the last snapshot until one succeeds")
            elif error != self._publish_error:
                log.error("publish failed differently", extra={"error": error})
            self._publish_error = error
            return None
        if self._failing_since is not None:
            log.info(
                "publish recovered",
                extra={
                    "failed_publishes": self._publish_failures,
                    "failing_seconds": round(now_mono - self._failing_since, 1),
                },
            )
        self._publish_failures = 0
        self._failing_since = None
        self._publish_error = None
        return snapshot

    def publish(self, now_mono: float, now_wall: float | None = None) -> Snapshot:
        """Build and swap in a new snapshot from the current histories.

        ``now_mono`` drives the policies' steps; ``now_wall`` (Unix s, default now) decides
        how long a series that can no longer be computed is carried forward.
        """
        now_wall = time.time() if now_wall is None else now_wall
        complete = self._published_complete or self._every_target_scraped()
        groups: dict[Labels, list[Member]] = {}
        pods: dict[Labels, list[Member]] = {}  # keyed by the group's labels plus the pod's
        pod_labels: dict[PodKey, Mapping[str, str]] = {}
        exporters: list[tuple[float, tuple[GpuSample, ...]]] = []
        for target, state in self._states.items():
            if target.node_scoped:  # a node's dcgm-exporter: its GPUs join pods below
                newest = state.history.newest
                if newest is not None:
                    exporters.append((newest.wall, newest.gpus))
                continue
            membership = self._membership(target, state)
            groups.setdefault(target.group, []).append(membership.member)
            if membership.pod_owner is not None and membership.pod_key is not None:
                pods.setdefault(membership.pod_owner, []).append(membership.member)
                pod_labels[membership.pod_key] = membership.pod_labels
        groups = {group: self._in_service(members, now_mono) for group, members in groups.items()}

        pod_gpus = attribute(exporters)
        self._note_shared_gpus(pod_gpus)
        self._last_points, points = self._with_carried(
            self._last_points, groups, now_wall, pod_gpus, self._group_cache
        )
        self._last_pod_points, per_pod = self._with_carried(
            self._last_pod_points, pods, now_wall, pod_gpus, self._pod_cache, keep_vanished=False
        )

        replicas = {
            group: sum(1 for member in members if member.kind == "triton")
            for group, members in groups.items()
        }
        for source in self._series_sources:
            sourced = source.latest()
            for metric, series in sourced.series.items():
                points.setdefault(metric, []).extend(series)
            for metric, series in sourced.pod_series.items():
                per_pod.setdefault(metric, []).extend(series)
            pod_labels.update(sourced.pods)
            replicas.update(sourced.replicas)
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
            pod_series=MappingProxyType({m: tuple(p) for m, p in per_pod.items()}),
            pods=MappingProxyType(pod_labels),
        )
        self._snapshot = snapshot
        self._published_once = True
        self._published_complete = complete
        for subscriber in self._on_publish:
            try:
                subscriber(snapshot)
            except Exception:  # a reader's bug must not stop publishing
                log.exception("publish subscriber failed")
        return snapshot

    def _membership(self, target: Target, state: TargetState) -> _Membership:
        """What ``target`` contributes to its group and pod, built once per target (and again
        after a relabel hands its state to a new target), not at every publish."""
        found = self._memberships.get(target)
        if found is not None and found.member.history is state.history:
            return found
        container = target.pod.container if target.pod is not None else None
        member = Member(target.kind, state.history, target.url, target.pod_key, container)
        membership = _Membership(member, None, None, MappingProxyType({}))
        if target.pod is not None and target.kind == "triton":
            membership = _Membership(
                member,
                pod_group(target.group, target.pod.name),
                (target.namespace, target.pod.name),
                MappingProxyType(dict(target.pod.labels)),
            )
        self._memberships[target] = membership
        return membership

    def _with_carried(
        self,
        last: _Published,
        owners: Mapping[Labels, list[Member]],
        now_wall: float,
        pod_gpus: Mapping[PodKey, PodGpus],
        cache: GroupSeriesCache,
        *,
        keep_vanished: bool = True,
    ) -> tuple[_Published, PointsByMetric]:
        """This pass's series of each owner (a group, or one pod), plus the carried ones.

        A series that had data and cannot be recomputed this pass (its targets stopped
        answering or left discovery, a target restarted) is carried with its old value and
        timestamp: the API serves it while younger than max age, then answers 503 naming where
        the data stopped, and after forget_after_seconds it is dropped (404). A model that the
        owner's live targets no longer report (unloaded) is dropped at max age, so wider
        selectors recover. Without ``keep_vanished`` (per-pod series) a series is carried only
        while its pod is there and at most max age: a deleted or silent pod must not hold its
        Deployment's Pods metrics for minutes.

        Cost: the owners' series are merged by their stored hashes; only the series of owners
        recomputed or gone since the last pass, and those carried then, are looked at one by
        one to find what is no longer computed (a series key is not hashed again otherwise).
        """
        window = self._signals.rate_window_seconds
        current = cache.owner_series(owners.items(), window, pod_gpus)
        fresh: Served = {}
        for _owner, series in current:
            fresh.update(series)
        max_age = self._signals.max_age_seconds
        forget = self._signals.forget_after_seconds
        gone = self._no_longer_computed(last, current, owners, fresh)
        carried: set[SeriesKey] = set()
        for key in (k for k in last.series if k in gone) if gone else ():
            owner, point = last.series[key]
            age = now_wall - point.timestamp
            if not keep_vanished:  # per pod: carried while the pod is there, up to max age
                if owner in owners and age <= max_age:
                    fresh[key] = (owner, point)
                    carried.add(key)
                continue
            if not age <= forget:
                continue
            if age > max_age and _no_longer_reported(point, owners.get(owner), now_wall, max_age):
                continue
            fresh[key] = (owner, point)
            carried.add(key)
        forgotten: list[SeriesKey] = []
        points: PointsByMetric = {}
        for key, entry in fresh.items():  # one pass: drop the forgotten, group by metric
            point = entry[1]
            if now_wall - point.timestamp > forget and math.isfinite(point.timestamp):
                forgotten.append(key)
                continue
            points.setdefault(key[0], []).append(point)
        for key in forgotten:
            del fresh[key]
            carried.discard(key)
        return _Published(fresh, carried, dict(current)), points

    @staticmethod
    def _no_longer_computed(
        last: _Published,
        current: list[tuple[Labels, Served]],
        owners: Mapping[Labels, list[Member]],
        fresh: Served,
    ) -> set[SeriesKey]:
        """``last.series.keys() - fresh.keys()``, looking only at the series carried at the last
        pass and those of the owners recomputed or gone since (an owner whose series mapping
        is the same object as at the last pass still computes every one of them)."""
        gone = {key for key in last.carried if key not in fresh}
        before = last.by_owner
        for owner, series in current:
            previous = before.get(owner)
            if previous is not None and previous is not series:
                gone.update(key for key in previous if key not in fresh)
        for owner, previous in before.items():
            if owner not in owners:  # the owner is gone: its pods left, or its group did
                gone.update(key for key in previous if key not in fresh)
        gone &= last.series.keys()  # series forgotten at the last pass stay forgotten
        return gone

    def _in_service(self, members: list[Member], now_mono: float) -> list[Member]:
        """The group's members minus those failing too long; logs each change once."""
        drop_after = self._signals.member_failure_drop_seconds
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

    def _note_shared_gpus(self, pod_gpus: Mapping[PodKey, PodGpus]) -> None:
        """Log when the set of GPUs that several pods hold (time-slicing) changes: each of
        those pods' ``gpu_utilization`` is the whole GPU's, its neighbours' work included."""
        shared = shared_devices(pod_gpus)
        if shared != self._shared_gpus:
            self._shared_gpus = shared
            log.info(
                "GPUs shared by several pods",
                extra={"gpus": {d: [f"{ns}/{pod}" for ns, pod in p] for d, p in shared.items()}},
            )


@dataclasses.dataclass(frozen=True, slots=True)
class _Published:
    """What one pass of :meth:`Pipeline._with_carried` served: ``series`` (computed and
    carried, the forgotten dropped), the keys of those ``carried``, and each owner's computed
    series as the cache gave them (``by_owner``: compared by identity at the next pass)."""

    series: Served = dataclasses.field(default_factory=dict)
    carried: set[SeriesKey] = dataclasses.field(default_factory=set)
    by_owner: dict[Labels, Served] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class _Membership:
    """A scraped target's place in the published series: its member (one object for as
    long as the target is tracked, so an unchanged group compares by identity), and for a
    Triton pod its per-pod owner labels, ``(namespace, pod)`` and the pod's own labels."""

    member: Member
    pod_owner: Labels | None
    pod_key: PodKey | None
    pod_labels: Mapping[str, str]


def _scrape_identity(target: Target) -> tuple[object, ...]:
    """What makes two targets the same scrape: all but the pod's labels."""
    pod_name = target.pod.name if target.pod is not None else None
    return (target.url, target.kind, target.labels, target.scrape_interval_seconds, pod_name)


def _unknown_if_invalid(point: SeriesPoint) -> SeriesPoint:
    """A stage's value that is infinite or negative (e.g. a forecast from extreme rates)
    is published as 'not known' (NaN: answered 503, the HPA holds), never as it is."""
    if point.value != point.value or 0.0 <= point.value < math.inf:
        return point
    return point._replace(value=math.nan)


def _no_longer_reported(
    point: SeriesPoint, members: list[Member] | None, now_wall: float, max_age: float
) -> bool:
    """True when every Triton target of the point's group answers (data younger than
    ``max_age``) and none of them reports the point's model (or GPUs) any more: the model
    was unloaded, which is not staleness. A vanished group or a silent target is not this."""
    if not members:
        return False
    tritons = [m for m in members if m.kind == "triton"]
    newest = [m.history.newest for m in (tritons or members)]
    if any(r is None or now_wall - r.wall > max_age for r in newest):
        return False
    model = point.labels.get("model")
    if model is None:
        return not any(r is not None and (r.gpu_utilization or r.gpus) for r in newest)
    return not any(r is not None and any(key[0] == model for key in r.models) for r in newest)
