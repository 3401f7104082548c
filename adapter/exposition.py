"""A fast Prometheus text-exposition parser that keeps only the families it needs.

Triton's ``/metrics`` carries dozens of families (CPU, pinned memory, summaries,
histograms) the adapter never reads. Lines are first filtered with one C-level
``str.startswith(tuple)`` per line, and only kept lines are parsed. Comments, label
escapes, timestamps, ``NaN`` and ``±Inf`` are accepted (syntax only: whether a value is
valid for its family is decided in :mod:`adapter.readings`); a malformed line in a kept
family raises :class:`ExpositionError` naming the line, so a bad scrape is rejected
whole instead of being half-read. Two samples with the same name and label set are an
error (summing them would double the value), and so is a scrape with more kept samples
than the caller's cap: parsing stops there, so the work per scrape is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar, NamedTuple

# name{labels} value [timestamp]
_SAMPLE = re.compile(
    r"([a-zA-Z_:][a-zA-Z0-9_:]*)"  # metric name
    r"(?:\{(.*)\})?"  # labels, matched greedily up to the last brace
    r"[ \t]+(\S+)"  # value
    r"(?:[ \t]+(-?\d+))?[ \t]*\Z"  # optional timestamp (ms)
)
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(,|\Z)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE = re.compile(r"\\[\\\"n]")

Labels = dict[str, str]


class ExpositionError(ValueError):
    """A kept line could not be parsed; the message names the line number and why.

    ``reason`` is a short, bounded label for the scrape-error metric.
    """

    reason: ClassVar[str] = "malformed"


class DuplicateSeriesError(ExpositionError):
    """The same family and label set appear twice in one exposition."""

    reason = "duplicate"


class TooManySeriesError(ExpositionError):
    """More samples of the kept families than the per-target cap."""

    reason = "too_many_series"


class Sample(NamedTuple):
    """One kept sample. ``labels`` may be shared with other samples of the same series
    (see :class:`ExpositionParser`): read it, never change it."""

    labels: Labels
    value: float


Families = dict[str, list[Sample]]
_SeriesKey = tuple[str, frozenset[tuple[str, str]]]
_Head = tuple[str, Labels, _SeriesKey]  # name, labels, series key

MAX_REMEMBERED_HEADS = 10_000
"""Line heads (name and labels) an :class:`ExpositionParser` remembers: about 3 MB."""


class ExpositionParser:
    """Parses only the families named in ``families`` (exact metric names).

    Kept lines are mostly the same from one scrape to the next but for their value (the
    same models, the same label sets, on every target of a fleet), so the name and labels
    parsed from a line's text before its value are remembered (at most
    :data:`MAX_REMEMBERED_HEADS`; all forgotten when full, so a target that invents names
    at every scrape costs the full parse, not memory): a line whose head is known costs a
    dictionary look-up and a ``float``. Whatever is remembered, :meth:`parse` gives the same
    result, or the same error, as a parser that remembers nothing.
    """

    def __init__(self, families: Iterable[str]) -> None:
        self._names = frozenset(families)
        # Order longest first so no name shadows a longer one in the prefix test.
        self._prefixes = tuple(sorted(self._names, key=len, reverse=True))
        self._heads: dict[str, _Head] = {}

    def parse(self, text: str, max_series: int | None = None) -> Families:
        """Return ``{family: [Sample, ...]}`` for the kept families present in ``text``.

        Families absent from the text are absent from the result (never zero-filled).
        Raises :class:`DuplicateSeriesError` for a repeated series and
        :class:`TooManySeriesError` as soon as more than ``max_series`` kept samples
        are seen (None: no cap).
        """
        out: Families = {}
        prefixes = self._prefixes
        heads = self._heads
        seen: set[_SeriesKey] = set()
        cap = -1 if max_series is None else max_series
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.startswith(prefixes):
                continue
            # Fast path: "<known head> <value>", the value a number with no white space (a
            # timestamp, or any other spacing, takes the full path: see _remember).
            head, _, raw_value = line.rpartition(" ")
            known = heads.get(head)
            if known is not None and raw_value and raw_value.strip() == raw_value:
                try:
                    value = float(raw_value)
                except ValueError:
                    known = None  # the full parse says what is wrong, as it would have
            else:
                known = None
            if known is None:
                parsed = self._parse_line(line, number)
                if parsed is None:
                    continue  # a longer name sharing a kept prefix, e.g. *_summary_us
                name, labels, series, value = parsed
            else:
                name, labels, series = known
            if series in seen:
                raise DuplicateSeriesError(
                    f"line {number}: {name}{_show(labels)} appears twice in one exposition"
                )
            seen.add(series)
            if len(seen) == cap + 1:
                raise TooManySeriesError(
                    f"line {number}: more than {cap} series of the families the adapter reads "
                    "(scrape.max_series_per_target)"
                )
            samples = out.get(name)
            if samples is None:
                samples = out[name] = []
            samples.append(Sample(labels, value))
        return out

    @property
    def remembered_heads(self) -> int:
        return len(self._heads)

    def _parse_line(self, line: str, number: int) -> tuple[str, Labels, _SeriesKey, float] | None:
        """The full parse of one line that starts with a kept prefix: (name, labels, series
        key, value), or None when its name is not kept. Remembers its head when the line is
        ``head + " " + value`` exactly."""
        line = line.rstrip("\r")
        match = _SAMPLE.match(line)
        if match is None:
            raise ExpositionError(f"line {number}: not a valid sample: {line[:120]!r}")
        name, raw_labels, raw_value, _timestamp = match.groups()
        if name not in self._names:
            return None
        try:
            value = float(raw_value)
        except ValueError:
            raise ExpositionError(
                f"line {number}: {name}: value {raw_value!r} is not a number"
            ) from None
        labels = _parse_labels(raw_labels, number) if raw_labels else {}
        series = (name, frozenset(labels.items()))
        value_start = match.start(3)
        if match.end(3) == len(line) and line[value_start - 1] == " ":
            self._remember(line[: value_start - 1], (name, labels, series))
        return name, labels, series, value

    def _remember(self, head: str, parsed: _Head) -> None:
        """Remember a head whose parse does not depend on the value after it.

        Sound because for ``head + " " + v``, ``v`` non-empty without white space, the
        sample pattern matches with the same name and labels and ``v`` as the value: the
        labels end at the last ``}`` followed by white space, and ``v`` has none.
        """
        heads = self._heads
        if len(heads) >= MAX_REMEMBERED_HEADS:
            heads.clear()
        heads[head] = parsed


def _show(labels: Labels) -> str:
    inner = ",".join(f"{k}={v!r}" for k, v in sorted(labels.items()))
    return "{" + inner[:120] + "}"


def has_family_with_prefix(text: str, prefix: str) -> bool:
    """True if ``text`` has at least one sample line (name, optional labels, a number) of
    a family whose name starts with ``prefix`` (``nv_`` for Triton, ``DCGM_`` for
    dcgm-exporter)."""
    pattern = rf"^{re.escape(prefix)}[a-zA-Z0-9_:]+(?:\{{[^\n]*\}})?[ \t]+[-+]?(?:[0-9.]|Inf|NaN)"
    return re.search(pattern, text, re.MULTILINE) is not None


def _parse_labels(raw: str, number: int) -> Labels:
    labels: Labels = {}
    position = 0
    end = len(raw)
    while position < end:
        match = _LABEL.match(raw, position)
        if match is None:
            if raw[position:].strip(" \t,") == "":
                break  # trailing comma or spaces are allowed
            raise ExpositionError(f"line {number}: malformed labels near {raw[position:][:60]!r}")
        key, value, _sep = match.groups()
        if key in labels:
            raise ExpositionError(f"line {number}: label {key!r} given twice")
        if "\\" in value:
            value = _ESCAPE.sub(lambda m: _ESCAPES[m.group(0)], value)
        labels[key] = value
        position = match.end()
    return labels


TRITON_FAMILIES = (
    "nv_inference_pending_request_count",
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_request_duration_us",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
)
DCGM_FAMILIES = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")
