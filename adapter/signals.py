"""Signals: from per-target reading histories to one value per series.

A series is one model (versions summed unless configured otherwise) in one group of
targets with the same labels. Rates come from counter deltas over a short window.
A counter that goes down means the target restarted: its history is cleared so no
window spans the restart (no negative rate, no spike); until two post-restart
readings exist the group's rate series is not recomputed, and the last published
value ages towards its max age instead of being replaced by a guess or a zero.

A model whose newest reading on any member was rejected (an invalid sample) is held
the same way. A member that has had no usable reading for a while is left out of its
group as if its pod had left (:func:`members_in_service`), so one broken pod cannot
freeze a deployment's series for ever.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from adapter.gpus import GpuSample, PodGpus, PodKey, mean_utilization
from adapter.readings import ModelCounters, ModelKey, Reading
from adapter.snapshot import SeriesPoint
from adapter.targets import TargetKind

QUEUE_DEPTH = "triton_queue_depth"
REQUEST_RATE = "triton_request_rate"
ARRIVAL_RATE = "triton_arrival_rate"
QUEUE_TIME = "triton_queue_time_seconds"
QUEUE_COMPUTE_RATIO = "triton_queue_compute_ratio"
GPU_UTILIZATION = "gpu_utilization"

POD_LABEL = "pod"
"""The label that names the pod of a per-pod series (the custom metrics API's Pods metrics)."""

Labels = tuple[tuple[str, str], ...]


class ReadingHistory:
    """Recent readings of one target, oldest first, kept for ``keep_seconds``.

    ``max_models`` bounds the models remembered for restart detection (least recently
    seen forgotten first), so a target that names new models at every scrape cannot
    grow it without end. ``started_mono`` (monotonic s) is when tracking began: a
    target that never answered usefully counts as failing from then.

    ``settle_seconds`` (the rate window): after a restart Triton exports a model's counters,
    at zero, before the model serves (while it loads: about 2 s for a Python model, minutes
    for a large one), and rejects requests meanwhile without counting them. A window based
    in that phase reads a false 0 and then a ramp. So after a reset no window is given until
    the target completes its first request (the last reading before that becomes the base),
    or until ``settle_seconds`` pass without one (an idle model: its zeros are true).
    """

    def __init__(
        self,
        keep_seconds: float,
        max_models: int | None = None,
        started_mono: float | None = None,
        *,
        settle_seconds: float = 0.0,
    ) -> None:
        self._keep = keep_seconds
        self._max_models = max_models
        self._settle = settle_seconds
        self._readings: deque[Reading] = deque()
        self._last_seen: dict[ModelKey, ModelCounters] = {}
        self._since_reset = 0
        self._settling_since: float | None = None  # mono of the reset, until the target serves
        self.restarts = 0
        self.started_mono = started_mono
        self.last_usable_mono: float | None = None
        # (seconds, the window) of the last window() call; every add() clears it. A group's
        # and a pod's series ask each member for the same window once per model.
        self._window: tuple[float, tuple[Reading, Reading] | None] | None = None

    def add(self, reading: Reading) -> bool:
        """Append ``reading``; return True if it shows a counter reset (history cleared).

        Counters are compared with the last reading that had each model, so a restart is
        caught even when the first readings after it come before the models are loaded.
        A reading is *usable* when no sample was rejected and it is not the first since a
        reset (it can give a rate): ``last_usable_mono`` is the newest such reading's time.
        """
        self._window = None
        reset = _is_reset(self._last_seen, reading)
        if reset:
            self._readings.clear()
            self._last_seen.clear()
            self._since_reset = 0
            self.restarts += 1
            if self._settle > 0:
                self._settling_since = reading.mono
        self._remember(reading.models)
        if self._settling_since is not None:
            if any(c.completed > 0 for c in reading.models.values()):
                while len(self._readings) > 1:  # serving began after the newest of them
                    self._readings.popleft()
                self._settling_since = None
            elif reading.mono - self._settling_since >= self._settle:
                self._settling_since = None
        self._readings.append(reading)
        self._since_reset += 1
        if reading.clean and self._since_reset >= 2:
            self.last_usable_mono = reading.mono
        horizon = reading.mono - self._keep
        while len(self._readings) > 2 and self._readings[1].mono <= horizon:
            self._readings.popleft()
        return reset

    def _remember(self, models: Mapping[ModelKey, ModelCounters]) -> None:
        last_seen = self._last_seen
        for key, counters in models.items():
            last_seen.pop(key, None)  # re-insert: dict order is least recently seen first
            last_seen[key] = counters
        if self._max_models is not None:
            while len(last_seen) > self._max_models:
                del last_seen[next(iter(last_seen))]

    @property
    def remembered_models(self) -> int:
        return len(self._last_seen)

    @property
    def newest(self) -> Reading | None:
        return self._readings[-1] if self._readings else None

    def readings(self) -> tuple[Reading, ...]:
        """Every kept reading, oldest first (a copy: for explanations, not the hot path)."""
        return tuple(self._readings)

    def window(self, seconds: float) -> tuple[Reading, Reading] | None:
        """(base, newest): base is the oldest reading within ``seconds`` of the newest,
        or the one just before the newest if none is; None with fewer than two readings and
        while a restarted target has not served yet (see the class docstring)."""
        remembered = self._window
        if remembered is not None and remembered[0] == seconds:
            return remembered[1]
        window = self._find_window(seconds)
        self._window = (seconds, window)
        return window

    def _find_window(self, seconds: float) -> tuple[Reading, Reading] | None:
        if len(self._readings) < 2 or self._settling_since is not None:
            return None
        newest = self._readings[-1]
        base = self._readings[-2]
        for reading in self._readings:
            if newest.mono - reading.mono <= seconds + 1e-9:
                if reading is not newest:
                    base = reading
                break
        return base, newest


def _is_reset(last_seen: Mapping[ModelKey, ModelCounters], after: Reading) -> bool:
    def dropped(new: float | None, old: float | None) -> bool:
        return new is not None and old is not None and new < old

    for key, new in after.models.items():
        old = last_seen.get(key)
        if old is None:
            continue
        if (
            dropped(new.success, old.success)
            or dropped(new.failure, old.failure)
            or dropped(new.queue_us, old.queue_us)
            or dropped(new.compute_infer_us, old.compute_infer_us)
        ):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ModelWindow:
    """One model's activity over the rate window, summed over a group's members.

    Rates are summed per member (each over its own window length); the duration and
    request deltas are summed as they are, since only their ratios are served. None
    means a member did not report the family.
    """

    completed_rate: float  # requests finished (success + failure) per second
    pending_growth_rate: float | None  # change of the backlog per second
    success: float  # successful requests in the windows
    queue_us: float | None
    compute_us: float | None


def model_signals(
    window: ModelWindow | None, pending_now: float | None, window_seconds: float
) -> dict[str, float]:
    """The served signals of one model in one group. NaN means 'cannot be known'."""
    values: dict[str, float] = {}
    if pending_now is not None:
        values[QUEUE_DEPTH] = pending_now
    if window is None:
        return _finite(values)
    values[REQUEST_RATE] = window.completed_rate
    if window.pending_growth_rate is not None:
        # Offered load: what finished plus what piled up. Not capped at capacity.
        values[ARRIVAL_RATE] = max(0.0, window.completed_rate + window.pending_growth_rate)
    waiting = pending_now is not None and pending_now > 0
    if window.queue_us is not None:
        if window.success > 0:
            values[QUEUE_TIME] = window.queue_us / window.success / 1e6
        elif waiting:
            # Requests are waiting and none finished: they have waited at least the window.
            values[QUEUE_TIME] = window_seconds
        elif pending_now is not None:
            values[QUEUE_TIME] = 0.0  # nothing arrived, nothing waited
    if window.queue_us is not None and window.compute_us is not None:
        if window.compute_us > 0:
            values[QUEUE_COMPUTE_RATIO] = window.queue_us / window.compute_us
        elif pending_now == 0 and window.queue_us == 0:
            values[QUEUE_COMPUTE_RATIO] = 0.0
        else:
            values[QUEUE_COMPUTE_RATIO] = math.nan  # queue but no compute: unknown, hold
    return _finite(values)


def _finite(values: dict[str, float]) -> dict[str, float]:
    """Only finite, non-negative values, or NaN ('unknown': held, never served).

    Inputs are validated when read; this guards arithmetic on extreme valid inputs
    (e.g. deltas of counters near the float limit) so nothing else can leak out.
    """
    return {
        metric: value
        for metric, value in values.items()
        if value != value or (0.0 <= value < math.inf)
    }


@dataclass(frozen=True, slots=True)
class Member:
    """One target of a group: its kind decides which signals it feeds; ``name`` (its URL)
    is what logs and a stale answer name. ``pod`` is the ``(namespace, pod)`` a Triton member
    scrapes, ``container`` its Triton container, when known: they pick the GPUs dcgm-exporter
    assigns to it."""

    kind: TargetKind
    history: ReadingHistory
    name: str = ""
    pod: PodKey | None = None
    container: str | None = None

    def failing_for(self, now_mono: float) -> float:
        """Seconds since this member's last usable reading (or since it was tracked,
        if it never had one); 0 when neither is known."""
        since = self.history.last_usable_mono
        if since is None:
            since = self.history.started_mono
        return 0.0 if since is None else now_mono - since


def members_in_service(
    members: Sequence[Member], now_mono: float, drop_after_seconds: float
) -> list[Member]:
    """The members a group is computed from.

    A member without a usable reading for more than ``drop_after_seconds`` is left out,
    as if its pod had left, while at least one member of the same kind is healthy; until
    then (and for ever if every member fails) the group holds: its series age with the
    failing member and go stale, rather than shrink. See SignalsConfig.
    """
    failing = [m.failing_for(now_mono) > drop_after_seconds for m in members]
    healthy_kinds = {m.kind for m, bad in zip(members, failing, strict=True) if not bad}
    return [
        m for m, bad in zip(members, failing, strict=True) if not bad or m.kind not in healthy_kinds
    ]


def _stalest(members: Sequence[Member]) -> tuple[float, str]:
    """(timestamp, name) of the member whose newest reading is oldest; -inf for a member
    without any reading yet. A series built from these members is as old as that one."""
    stamps = [
        (m.history.newest.wall if m.history.newest is not None else -math.inf, m.name)
        for m in members
    ]
    return min(stamps, key=lambda stamp: stamp[0])


def group_series(
    group_labels: Labels,
    members: Sequence[Member],
    window_seconds: float,
    pod_gpus: Mapping[PodKey, PodGpus] | None = None,
) -> dict[str, list[SeriesPoint]]:
    """Compute every raw signal of one group of targets.

    Model signals come from the Triton members: summed over members (queue depth, rates)
    or derived from summed deltas (queue time, ratio). GPU utilisation is the mean over the
    members' own GPUs (:func:`member_gpus`), each device once. A series' timestamp is the
    oldest newest-reading among the members it is built from, so one dead member makes
    the series age out (held by the API), never shrink.
    """
    out: dict[str, list[SeriesPoint]] = {}
    base_labels = dict(group_labels)
    window_int = max(1, round(window_seconds))
    triton_members = [m for m in members if m.kind == "triton"]
    tritons = [m.history for m in triton_members]
    live = [h.newest for h in tritons if h.newest is not None]
    if live:
        timestamp, source = _stalest(triton_members)
        held = {key for reading in live for key in reading.rejected_models}
        model_keys = sorted({key for reading in live for key in reading.models} - held)
        for key in model_keys:
            model, version = key
            labels = {**base_labels, "model": model}
            if version:
                labels["version"] = version
            pending_now = _sum_known(_counters(r, key).pending for r in live)
            window = _aggregate_window(tritons, key, window_seconds)
            for metric, value in model_signals(window, pending_now, window_seconds).items():
                window_field = None if metric == QUEUE_DEPTH else window_int
                point = SeriesPoint(labels, value, timestamp, window_field, source)
                out.setdefault(metric, []).append(point)

    devices: list[GpuSample] = []
    stamp, source = math.inf, ""
    for index, member in enumerate(members):
        found = member_gpus(member, index, pod_gpus or {})
        wall, own = (-math.inf, ()) if found is None else found  # no reading: fewer GPUs
        devices.extend(own)
        if wall < stamp:
            stamp, source = wall, member.name
    utilization = mean_utilization(devices)  # NaN when any device's value was rejected
    if utilization is not None and 0.0 <= utilization <= 1.0:
        out[GPU_UTILIZATION] = [SeriesPoint(base_labels, utilization, stamp, source=source)]
    return out


def member_gpus(
    member: Member, index: int, pod_gpus: Mapping[PodKey, PodGpus]
) -> tuple[float, tuple[GpuSample, ...]] | None:
    """(Unix s, devices) of one member's own GPUs; None before its first reading.

    A Triton pod's GPUs are those dcgm-exporter assigns to it (the kubelet's pod-resources
    mapping) when it assigns any; else Triton's own ``nv_gpu_utilization``. A dcgm-exporter
    member (a static target naming the group its node serves) gives the devices no pod holds.
    """
    if member.kind == "triton" and member.pod is not None:
        assigned = pod_gpus.get(member.pod)
        if assigned is not None:
            own = assigned.for_container(member.container)
            if own:
                return assigned.wall, own
    reading = member.history.newest
    if reading is None:
        return None
    if reading.gpu_rejected and not reading.gpus:  # an invalid sample: the set is unknown
        return reading.wall, (GpuSample(f"member{index}/rejected", math.nan),)
    if reading.gpus:
        devices = reading.gpus
        if member.kind == "dcgm":
            devices = tuple(d for d in devices if d.pod is None)
        return reading.wall, devices
    # readings built without device identities: each value is its own device
    return reading.wall, tuple(
        GpuSample(f"member{index}/gpu{n}", u) for n, u in enumerate(reading.gpu_utilization)
    )


@dataclass(frozen=True, slots=True)
class SourcedSeries:
    """Signals computed outside the scrape path (e.g. from Prometheus queries), to publish.

    ``series``: group series by metric; ``pod_series``: per-pod series by metric (labels: the
    group's plus ``pod``); ``pods``: each pod's own Kubernetes labels (custom metrics'
    ``labelSelector``); ``replicas``: Triton pods per group (the predictive stage's input).
    Every point carries the time of the data it is built from, so it ages like a scraped one.
    """

    series: Mapping[str, Sequence[SeriesPoint]] = field(default_factory=dict)
    pod_series: Mapping[str, Sequence[SeriesPoint]] = field(default_factory=dict)
    pods: Mapping[PodKey, Mapping[str, str]] = field(default_factory=dict)
    replicas: Mapping[Labels, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WarmSample:
    """One past moment of a series, read back to warm its forecast at start: ``wall`` (Unix
    s), the arrival rate (req/s, NaN when unknown), the queue depth (requests, NaN when
    unknown) and the group's Triton pods then."""

    wall: float
    arrival_rate: float
    queue_depth: float
    replicas: int


def pod_group(group_labels: Labels, pod: str) -> Labels:
    """The labels of one pod's series: its group's plus ``pod``.

    A pod's signals are :func:`group_series` over that pod's own members (its Triton target,
    and any other target whose readings belong to that pod alone), with the same rules: a
    member without two readings holds the rates, absent families are not served.
    """
    return tuple(sorted({**dict(group_labels), POD_LABEL: pod}.items()))


_ABSENT = ModelCounters(0.0, 0.0, 0.0, 0.0, 0.0)


def _counters(reading: Reading, key: ModelKey) -> ModelCounters:
    return reading.models.get(key, _ABSENT)


def _sum_known(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _delta(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else new - old


def _aggregate_window(
    members: Iterable[ReadingHistory], key: ModelKey, seconds: float
) -> ModelWindow | None:
    """Sum one model's window over the members that serve it; None to hold."""
    completed_rate = 0.0
    growth_rate: float | None = 0.0
    success = 0.0
    queue: float | None = 0.0
    compute: float | None = 0.0
    contributors = 0
    for history in members:
        pair = history.window(seconds)
        if pair is None:
            return None  # a member without two readings (new or just restarted)
        base, newest = pair
        in_base, in_newest = key in base.models, key in newest.models
        if not in_base and not in_newest:
            continue  # this member does not serve the model
        if in_base != in_newest:
            return None  # the model just appeared or vanished on a member: hold
        old, new = base.models[key], newest.models[key]
        span = newest.mono - base.mono
        if span <= 0:
            return None
        completed_rate += (new.completed - old.completed) / span
        growth = _delta(new.pending, old.pending)
        growth_rate = None if growth_rate is None or growth is None else growth_rate + growth / span
        success += new.success - old.success
        queue_delta = _delta(new.queue_us, old.queue_us)
        queue = None if queue is None or queue_delta is None else queue + queue_delta
        compute_delta = _delta(new.compute_infer_us, old.compute_infer_us)
        compute = None if compute is None or compute_delta is None else compute + compute_delta
        contributors += 1
    if contributors == 0:
        return None
    return ModelWindow(completed_rate, growth_rate, success, queue, compute)
