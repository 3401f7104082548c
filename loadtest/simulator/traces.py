"""Request-arrival traces for the simulator: the project's own CSVs and the public raw formats.

A trace is one of two things:

* :class:`ArrivalTrace`: one timestamp (seconds from the trace start) and one ``work`` value per
  request. ``work`` is the request's relative cost (mean 1 over the trace): a replica of
  capacity ``C`` requests/s serves a request in ``work / C`` seconds.
* :class:`RateTrace`: piecewise-constant arrival rates, optionally per client with a renewal
  inter-arrival law (ServeGen). Arrivals are drawn from it with a seeded ``numpy`` Generator,
  in chunks, so a 14-day ServeGen trace (about 240 M requests) can be reduced to per-step counts
  for the fluid model without holding every arrival in memory.

Formats (``--format``): ``requests`` (CSV ``timestamp[,work]``), ``rates`` (CSV ``start,rate``),
``azure`` (Azure LLM inference CSV), ``mooncake`` (JSONL), ``servegen`` (chunk CSVs, a directory
or a ``.tar.xz``/``.tar.gz`` of them; ``ARCHIVE#sub/dir`` picks one dataset), ``alibaba``
(GenTD26 LoRA CSV). ``auto`` detects the format from the extension and the header.

Every error is a :class:`TraceError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

TraceFormat = Literal["requests", "rates", "azure", "mooncake", "servegen", "alibaba"]
FORMATS: tuple[str, ...] = ("requests", "rates", "azure", "mooncake", "servegen", "alibaba")

DECODE_TOKEN_WEIGHT = 5.0
"""Cost of one generated token relative to one prompt token when ``work`` comes from token
counts (Azure, Mooncake): work = prompt_tokens + 5 * generated_tokens, then normalised to mean 1.
An assumption (decode is memory-bound and sequential, prefill is batched), not a measurement."""

SERVEGEN_WINDOW_SECONDS = 600.0

# Inter-arrival families of a rate-trace segment (ServeGen column 4).
FAMILY_POISSON = 0
FAMILY_GAMMA = 1
FAMILY_WEIBULL = 2


class TraceError(ValueError):
    """A trace file cannot be used; the message names the file (and line) and what is wrong."""


def _normalise_work(raw: FloatArray, source: str) -> FloatArray:
    """Scale per-request costs to mean 1 (a trace with no cost information gets all ones)."""
    if raw.size == 0:
        return raw
    mean = float(raw.mean())
    if not math.isfinite(mean) or mean <= 0:
        raise TraceError(f"{source}: request costs must have a positive mean, got {mean!r}")
    return raw / mean


@dataclass(frozen=True)
class ArrivalTrace:
    """Per-request arrivals: ``times`` in seconds from the trace start (sorted), ``work`` (mean 1).

    ``duration`` (s) is the span the simulation covers; it is at least the last arrival.
    """

    name: str
    times: FloatArray
    work: FloatArray
    duration: float

    def __post_init__(self) -> None:
        if self.times.shape != self.work.shape:
            raise ValueError("ArrivalTrace.times and .work must have the same length")

    @property
    def n_requests(self) -> int:
        return int(self.times.size)

    @property
    def mean_rate(self) -> float:
        """Mean arrival rate over the trace (requests/s)."""
        return self.n_requests / self.duration if self.duration > 0 else 0.0


@dataclass(frozen=True)
class RateTrace:
    """Piecewise-constant arrival rates, optionally split into clients with renewal arrivals.

    ``starts``/``ends`` (s) delimit the segments; ``client_rates[c, s]`` is client ``c``'s rate
    (requests/s) in segment ``s``; ``family``/``shape`` give its inter-arrival law (Poisson,
    Gamma or Weibull with that shape), scaled so the mean inter-arrival time is ``1/rate``.
    A plain ``start,rate`` CSV is one Poisson client.
    """

    name: str
    starts: FloatArray
    ends: FloatArray
    client_rates: FloatArray
    family: NDArray[np.int8]
    shape: FloatArray
    rate_scale: float = 1.0
    time_scale: float = 1.0

    @property
    def duration(self) -> float:
        return float(self.ends[-1]) / self.time_scale if self.ends.size else 0.0

    @property
    def total_rates(self) -> FloatArray:
        """Summed rate per segment after rate and time scaling (requests/s)."""
        rates: FloatArray = self.client_rates.sum(axis=0) * (self.rate_scale * self.time_scale)
        return rates

    @property
    def expected_requests(self) -> float:
        lengths = (self.ends - self.starts) / self.time_scale
        return float((self.total_rates * lengths).sum())

    @property
    def mean_rate(self) -> float:
        return self.expected_requests / self.duration if self.duration > 0 else 0.0

    def iter_arrival_chunks(
        self, rng: np.random.Generator, segments_per_chunk: int = 36
    ) -> Iterator[FloatArray]:
        """Arrival times (s, scaled), chunk by chunk in time order; unsorted inside a chunk.

        Each client draws a renewal process per segment, restarted at the segment start: IATs
        from Gamma(shape) or Weibull(shape) rescaled to mean 1/rate (ServeGen's construction)
        or exponential. A rate scale X multiplies every client's rate by X.
        """
        n_segments = self.starts.size
        for first in range(0, n_segments, segments_per_chunk):
            pieces: list[FloatArray] = []
            for seg in range(first, min(first + segments_per_chunk, n_segments)):
                start = float(self.starts[seg])
                length = float(self.ends[seg] - start)
                for client in np.flatnonzero(self.client_rates[:, seg] > 0):
                    rate = float(self.client_rates[client, seg]) * self.rate_scale
                    times = _renewal_times(
                        rng,
                        int(self.family[client, seg]),
                        float(self.shape[client, seg]),
                        rate,
                        length,
                    )
                    pieces.append(times + start)
            chunk = np.concatenate(pieces) if pieces else np.empty(0)
            yield chunk / self.time_scale

    def sample_arrivals(self, rng: np.random.Generator) -> ArrivalTrace:
        """Materialise every arrival (only for traces small enough to hold in memory)."""
        times = np.sort(np.concatenate([*self.iter_arrival_chunks(rng), np.empty(0)]))
        return ArrivalTrace(self.name, times, np.ones_like(times), self.duration)

    def sample_step_counts(
        self, rng: np.random.Generator, step: float, n_steps: int
    ) -> tuple[IntArray, FloatArray]:
        """Requests (and work, all ones) per step, drawn chunk by chunk; same draws as
        :meth:`sample_arrivals` for the same generator state."""
        counts = np.zeros(n_steps, dtype=np.int64)
        for chunk in self.iter_arrival_chunks(rng):
            index = np.minimum((chunk // step).astype(np.int64), n_steps - 1)
            counts += np.bincount(index, minlength=n_steps)
        return counts, counts.astype(np.float64)


def _renewal_times(
    rng: np.random.Generator, family: int, shape: float, rate: float, length: float
) -> FloatArray:
    """Arrival offsets in ``[0, length)`` of a renewal process with mean IAT ``1/rate``."""
    expected = rate * length
    n = int(expected + 6.0 * math.sqrt(expected + 1.0) + 8.0)
    out: list[FloatArray] = []
    offset = 0.0
    while True:
        if family == FAMILY_GAMMA and shape > 0:
            iat = rng.gamma(shape, 1.0 / (rate * shape), n)
        elif family == FAMILY_WEIBULL and shape > 0:
            iat = rng.weibull(shape, n) / (rate * math.gamma(1.0 + 1.0 / shape))
        else:
            iat = rng.standard_exponential(n) / rate
        times = offset + np.cumsum(iat)
        if times[-1] >= length:
            out.append(times[times < length])
            break
        out.append(times)
        offset = float(times[-1])
    return np.concatenate(out) if len(out) > 1 else out[0]


Trace = ArrivalTrace | RateTrace


# --------------------------------------------------------------------------- scaling


def scale_trace(
    trace: Trace, *, time_scale: float, rate_scale: float, rng: np.random.Generator
) -> Trace:
    """Compress time by ``time_scale`` (X > 1 replays X times faster) and multiply the arrival
    rate by ``rate_scale`` (thinning below 1, duplication above 1).

    Duplicated requests are placed uniformly between the original request and the next one, so
    the rate curve is kept at the trace's own resolution without creating simultaneous bursts.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"--time-scale must be a positive number, got {time_scale}")
    if not (math.isfinite(rate_scale) and rate_scale > 0):
        raise ValueError(f"--rate-scale must be a positive number, got {rate_scale}")
    if isinstance(trace, RateTrace):
        return replace(
            trace,
            time_scale=trace.time_scale * time_scale,
            rate_scale=trace.rate_scale * rate_scale,
        )
    times, work = trace.times, trace.work
    if rate_scale != 1.0:
        whole = math.floor(rate_scale)
        copies = np.full(times.size, whole, dtype=np.int64)
        copies += rng.random(times.size) < (rate_scale - whole)
        gaps = np.diff(times, append=trace.duration)
        original = np.repeat(np.arange(times.size), copies)
        first_copy = np.zeros(original.size, dtype=bool)
        starts = np.cumsum(copies) - copies
        first_copy[starts[copies > 0]] = True
        jitter = np.where(first_copy, 0.0, rng.random(original.size) * gaps[original])
        new_times = times[original] + jitter
        order = np.argsort(new_times, kind="stable")
        times, work = new_times[order], work[original][order]
    return ArrivalTrace(trace.name, times / time_scale, work, trace.duration / time_scale)


# --------------------------------------------------------------------------- detection


def detect_format(path: str | Path) -> TraceFormat:
    """Guess the format from the extension and the first line; raise TraceError if unknown."""
    text_path, member = _split_member(str(path))
    lower = text_path.lower()
    if lower.endswith((".tar.xz", ".tar.gz", ".tgz", ".txz")) or member is not None:
        return "servegen"
    p = Path(text_path)
    if p.is_dir():
        return "servegen"
    if lower.endswith(".jsonl"):
        return "mooncake"
    first = _first_line(p)
    header = [h.strip() for h in first.split(",")]
    lowered = [h.lower() for h in header]
    if "TIMESTAMP" in header and "ContextTokens" in header:
        return "azure"
    if "gmt_create" in lowered:
        return "alibaba"
    if "timestamp" in lowered:
        return "requests"
    if "start" in lowered and "rate" in lowered:
        return "rates"
    if first.lstrip().startswith("{"):
        return "mooncake"
    if len(header) == 6 and _is_number(header[0]) and _is_number(header[1]):
        return "servegen"
    raise TraceError(
        f"{path}:1: cannot tell the trace format from this header ({first[:80]!r}); pass --format "
        f"with one of: {', '.join(FORMATS)}"
    )


def _first_line(path: Path) -> str:
    try:
        with path.open("r", encoding="utf-8") as fh:
            line = fh.readline()
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except OSError as err:
        raise TraceError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}:1: not a text file (pass --format for archives)") from None
    if not line.strip():
        raise TraceError(f"{path}: empty trace (no header line)")
    return line.rstrip("\r\n")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _split_member(path: str) -> tuple[str, str | None]:
    if "#" in path:
        base, member = path.split("#", 1)
        return base, member.strip("/") or None
    return path, None


# --------------------------------------------------------------------------- loaders


def load_trace(
    path: str | Path, fmt: str = "auto", *, decode_token_weight: float = DECODE_TOKEN_WEIGHT
) -> Trace:
    """Load ``path`` in format ``fmt`` (``auto`` detects it)."""
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise TraceError(f"unknown trace format {fmt!r}; use auto or one of: {', '.join(FORMATS)}")
    if fmt == "servegen":
        return load_servegen(path)
    p = Path(path)
    if not p.exists():
        raise TraceError(f"{p}: no such file")
    if fmt == "requests":
        return load_requests_csv(p)
    if fmt == "rates":
        return load_rates_csv(p)
    if fmt == "azure":
        return load_azure(p, decode_token_weight=decode_token_weight)
    if fmt == "mooncake":
        return load_mooncake(p, decode_token_weight=decode_token_weight)
    return load_alibaba(p)


def _open_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The stripped header and the non-blank rows as ``(line, fields)``, each with as many
    fields as the header (TraceError naming the line otherwise)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TraceError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a UTF-8 text file") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(f"{path}: empty trace (no header line)") from None
    header = [h.strip() for h in header]

    def rows() -> Iterator[tuple[int, list[str]]]:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise TraceError(
                    f"{path}:{line}: malformed row: {len(row)} fields, header has {len(header)}"
                )
            yield line, row

    return header, rows()


def _column(header: Sequence[str], name: str, path: Path, *, required: bool = True) -> int | None:
    lowered = [h.lower() for h in header]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    if required:
        raise TraceError(f"{path}:1: missing column {name!r} (header is {','.join(header)})")
    return None


def _float(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}:{line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{path}:{line}: {column} {text!r} is not finite")
    return value


def _dated_rows(
    rows: Iterator[tuple[int, list[str]]],
    path: Path,
    column: int,
    name: str,
    normalise: Callable[[str], str] = str,
) -> Iterator[tuple[int, list[str], float]]:
    """``(line, fields, seconds since the first row)`` from a datetime column ``name``.

    ``normalise`` rewrites the stripped stamp before ``datetime.fromisoformat``.
    """
    epoch: datetime | None = None
    for line, row in rows:
        stamp = row[column].strip()
        try:
            when = datetime.fromisoformat(normalise(stamp))
        except ValueError:
            raise TraceError(f"{path}:{line}: {name} {stamp!r} is not a datetime") from None
        if epoch is None:
            epoch = when
        yield line, row, (when - epoch).total_seconds()


def _check_sorted(times: Sequence[float], lines: Sequence[int], path: Path, what: str) -> None:
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            raise TraceError(
                f"{path}:{lines[i]}: {what} {times[i]} is earlier than the previous row's "
                f"{times[i - 1]}; the trace must be sorted by time"
            )


def _arrivals(
    name: str,
    path: Path,
    times: list[float],
    lines: list[int],
    work: FloatArray,
    what: str,
    *,
    rebase: bool = True,
) -> ArrivalTrace:
    """Checks and builds an ArrivalTrace; ``rebase`` moves the first request to t = 0."""
    if not times:
        raise TraceError(f"{path}: empty trace (no request rows)")
    _check_sorted(times, lines, path, what)
    t = np.asarray(times, dtype=np.float64)
    if rebase:
        t = t - t[0]
    # The last request opens a final interval as long as the mean gap, so it is not at the edge.
    duration = float(t[-1]) + (float(t[-1]) / max(t.size - 1, 1) if t.size > 1 else 1.0)
    return ArrivalTrace(name, t, _normalise_work(work, str(path)), duration)


def load_requests_csv(path: Path) -> ArrivalTrace:
    """Project CSV: header ``timestamp[,work]``; timestamp in seconds, work > 0 (relative cost)."""
    header, rows = _open_csv(path)
    ts_col = _column(header, "timestamp", path)
    work_col = _column(header, "work", path, required=False)
    assert ts_col is not None
    times: list[float] = []
    lines: list[int] = []
    work: list[float] = []
    for line, row in rows:
        t = _float(row[ts_col], path, line, "timestamp")
        if t < 0:
            raise TraceError(f"{path}:{line}: timestamp {t} is negative")
        times.append(t)
        lines.append(line)
        if work_col is not None:
            w = _float(row[work_col], path, line, "work")
            if w <= 0:
                raise TraceError(f"{path}:{line}: work {w} must be > 0")
            work.append(w)
        else:
            work.append(1.0)
    return _arrivals(path.stem, path, times, lines, np.asarray(work), "timestamp", rebase=False)


def load_rates_csv(path: Path) -> RateTrace:
    """Project CSV: header ``start,rate`` (s, requests/s); Poisson arrivals in each interval.

    An interval runs to the next row's start; the last one is as long as the one before it
    (1 s when there is a single row).
    """
    header, rows = _open_csv(path)
    start_col = _column(header, "start", path)
    rate_col = _column(header, "rate", path)
    assert start_col is not None and rate_col is not None
    starts: list[float] = []
    rates: list[float] = []
    for line, row in rows:
        start = _float(row[start_col], path, line, "start")
        rate = _float(row[rate_col], path, line, "rate")
        if rate < 0:
            raise TraceError(f"{path}:{line}: rate {rate} must be >= 0")
        if starts and start <= starts[-1]:
            raise TraceError(
                f"{path}:{line}: start {start} is not after the previous row's {starts[-1]}; "
                "intervals must be sorted and distinct"
            )
        starts.append(start)
        rates.append(rate)
    if not starts:
        raise TraceError(f"{path}: empty trace (no rate rows)")
    s = np.asarray(starts) - starts[0]
    last = float(s[-1] - s[-2]) if s.size > 1 else 1.0
    ends = np.append(s[1:], s[-1] + last)
    n = s.size
    return RateTrace(
        name=path.stem,
        starts=s,
        ends=ends,
        client_rates=np.asarray(rates, dtype=np.float64)[None, :],
        family=np.zeros((1, n), dtype=np.int8),
        shape=np.zeros((1, n)),
    )


def _token_work(prompt: list[float], generated: list[float], weight: float) -> FloatArray:
    work: FloatArray = np.asarray(prompt, dtype=np.float64) + weight * np.asarray(
        generated, dtype=np.float64
    )
    return work


def load_azure(path: Path, *, decode_token_weight: float = DECODE_TOKEN_WEIGHT) -> ArrivalTrace:
    """Azure LLM inference CSV ``TIMESTAMP,ContextTokens,GeneratedTokens`` (one row a request).

    TIMESTAMP is a datetime string with up to 7 fractional digits (100 ns); the 7th digit is
    dropped (Python datetimes hold microseconds).
    """
    header, rows = _open_csv(path)
    ts_col = _column(header, "TIMESTAMP", path)
    ctx_col = _column(header, "ContextTokens", path)
    gen_col = _column(header, "GeneratedTokens", path)
    assert ts_col is not None and ctx_col is not None and gen_col is not None
    times: list[float] = []
    lines: list[int] = []
    prompt: list[float] = []
    generated: list[float] = []
    for line, row, seconds in _dated_rows(rows, path, ts_col, "TIMESTAMP", _trim_fraction):
        times.append(seconds)
        lines.append(line)
        prompt.append(_float(row[ctx_col], path, line, "ContextTokens"))
        generated.append(_float(row[gen_col], path, line, "GeneratedTokens"))
    work = _token_work(prompt, generated, decode_token_weight)
    return _arrivals(path.stem, path, times, lines, work, "TIMESTAMP")


def _trim_fraction(stamp: str) -> str:
    """``2023-11-16 18:15:46.6805900`` -> 6 fractional digits for ``fromisoformat``."""
    head, dot, frac = stamp.partition(".")
    if not dot:
        return stamp
    digits = len(frac) - len(frac.lstrip("0123456789"))
    return f"{head}.{frac[: min(digits, 6)]}{frac[digits:]}" if digits else stamp


def load_mooncake(path: Path, *, decode_token_weight: float = DECODE_TOKEN_WEIGHT) -> ArrivalTrace:
    """Mooncake JSONL: ``timestamp`` (ms from the start), ``input_length``, ``output_length``."""
    times: list[float] = []
    lines: list[int] = []
    prompt: list[float] = []
    generated: list[float] = []
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as err:
        raise TraceError(f"{path}: cannot read: {err.strerror}") from None
    with fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise TraceError(f"{path}:{number}: malformed JSON: {err.msg}") from None
            if not isinstance(record, dict) or "timestamp" not in record:
                raise TraceError(f"{path}:{number}: malformed row: no 'timestamp' field")
            try:
                t = float(record["timestamp"]) / 1000.0
                p = float(record.get("input_length", 1.0))
                g = float(record.get("output_length", 0.0))
            except (TypeError, ValueError):
                raise TraceError(
                    f"{path}:{number}: timestamp/input_length/output_length must be numbers"
                ) from None
            if not all(math.isfinite(v) for v in (t, p, g)):
                raise TraceError(f"{path}:{number}: non-finite number")
            times.append(t)
            lines.append(number)
            prompt.append(p)
            generated.append(g)
    work = _token_work(prompt, generated, decode_token_weight)
    return _arrivals(path.stem, path, times, lines, work, "timestamp")


def load_alibaba(path: Path) -> ArrivalTrace:
    """Alibaba GenTD26 LoRA CSV: ``gmt_create`` (1 s resolution) and ``exec_time_seconds``.

    Requests sharing a second are spread evenly across it (the k-th of n at +k/n s), so the
    1-s rounding does not create simultaneous bursts. work = exec_time_seconds (mean 1 after
    normalising); a request with exec time 0 costs nothing.
    """
    header, rows = _open_csv(path)
    ts_col = _column(header, "gmt_create", path)
    exec_col = _column(header, "exec_time_seconds", path)
    assert ts_col is not None and exec_col is not None
    times: list[float] = []
    lines: list[int] = []
    work: list[float] = []
    for line, row, seconds in _dated_rows(rows, path, ts_col, "gmt_create"):
        exec_time = _float(row[exec_col], path, line, "exec_time_seconds")
        if exec_time < 0:
            raise TraceError(f"{path}:{line}: exec_time_seconds {exec_time} is negative")
        times.append(seconds)
        lines.append(line)
        work.append(exec_time)
    if not times:
        raise TraceError(f"{path}: empty trace (no request rows)")
    _check_sorted(times, lines, path, "gmt_create")
    t = np.asarray(times)
    _, first_index, counts = np.unique(t, return_index=True, return_counts=True)
    rank = np.arange(t.size) - np.repeat(first_index, counts)
    t = t + rank / np.repeat(counts, counts)
    return _arrivals(path.stem, path, list(t), lines, np.asarray(work), "gmt_create")


# --------------------------------------------------------------------------- ServeGen


def load_servegen(path: str | Path) -> RateTrace:
    """ServeGen client traces: headerless CSV rows ``window_start_s, rate_rps, cv, family,
    shape, scale`` per client, 600 s windows; accepts one chunk CSV, a directory of them, or a
    ``.tar.xz``/``.tar.gz`` archive (``ARCHIVE#language/m-large`` selects one dataset when the
    archive holds several). All clients are kept; their rates add up.
    """
    text_path, member = _split_member(str(path))
    base = Path(text_path)
    if not base.exists():
        raise TraceError(f"{base}: no such file or directory")
    files: dict[str, str] = {}
    if base.is_dir():
        for f in sorted(base.rglob("*.csv")):
            files[str(f.relative_to(base))] = f.read_text(encoding="utf-8")
    elif tarfile.is_tarfile(base):
        try:
            with tarfile.open(base) as archive:
                for info in archive.getmembers():
                    if info.isfile() and info.name.endswith(".csv"):
                        handle = archive.extractfile(info)
                        if handle is not None:
                            files[info.name] = handle.read().decode("utf-8")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise TraceError(f"{base}: cannot read the archive: {err}") from None
    else:
        files[base.name] = _read_text(base)
    if member is not None:
        files = {k: v for k, v in files.items() if k.startswith(member + "/") or k == member}
    if not files:
        raise TraceError(f"{path}: no ServeGen chunk CSV files found")
    groups = sorted({k.rsplit("/", 1)[0] if "/" in k else "" for k in files})
    if len(groups) > 1:
        raise TraceError(
            f"{path}: holds several ServeGen datasets ({', '.join(groups)}); "
            f"pick one as {text_path}#<dataset>"
        )
    return _parse_servegen(str(path), files, groups[0] or base.stem)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise TraceError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a UTF-8 text file") from None


_FAMILIES = {"": FAMILY_POISSON, "gamma": FAMILY_GAMMA, "weibull": FAMILY_WEIBULL}


def _parse_servegen(source: str, files: dict[str, str], name: str) -> RateTrace:
    per_client: list[dict[int, tuple[float, int, float]]] = []
    window_ids: set[int] = set()
    for fname in sorted(files):
        rows: dict[int, tuple[float, int, float]] = {}
        for number, text in enumerate(files[fname].splitlines(), start=1):
            if not text.strip():
                continue
            fields = [f.strip() for f in text.split(",")]
            where = f"{source}:{fname}:{number}"
            if len(fields) != 6:
                raise TraceError(f"{where}: malformed row: {len(fields)} fields, expected 6")
            try:
                start, rate = float(fields[0]), float(fields[1])
                shape = float(fields[4]) if fields[4] else 0.0
            except ValueError:
                raise TraceError(f"{where}: malformed row: non-numeric field") from None
            family = _FAMILIES.get(fields[3].lower())
            if family is None:
                raise TraceError(
                    f"{where}: unknown inter-arrival family {fields[3]!r} "
                    "(expected Gamma, Weibull or empty)"
                )
            if not (math.isfinite(start) and math.isfinite(rate)) or rate < 0 or start < 0:
                raise TraceError(f"{where}: window start and rate must be finite and >= 0")
            if start % SERVEGEN_WINDOW_SECONDS:
                raise TraceError(f"{where}: window start {start} is not a multiple of 600 s")
            if family != FAMILY_POISSON and rate > 0 and not shape > 0:
                raise TraceError(f"{where}: {fields[3]} shape must be > 0, got {fields[4]!r}")
            window = int(start // SERVEGEN_WINDOW_SECONDS)
            if window in rows:
                raise TraceError(f"{where}: window {start:g} s appears twice")
            rows[window] = (rate, family, shape)
            window_ids.add(window)
        per_client.append(rows)
    if not window_ids:
        raise TraceError(f"{source}: empty trace (no ServeGen rows)")
    n_windows = max(window_ids) + 1
    n_clients = len(per_client)
    rates = np.zeros((n_clients, n_windows))
    family_grid = np.zeros((n_clients, n_windows), dtype=np.int8)
    shape_grid = np.zeros((n_clients, n_windows))
    for c, client_rows in enumerate(per_client):
        for w, (rate_w, family_w, shape_w) in client_rows.items():
            rates[c, w] = rate_w
            family_grid[c, w] = family_w
            shape_grid[c, w] = shape_w
    if not rates.any():
        raise TraceError(f"{source}: empty trace (every window has rate 0)")
    starts = np.arange(n_windows, dtype=np.float64) * SERVEGEN_WINDOW_SECONDS
    return RateTrace(
        name=name.replace("/", "-"),
        starts=starts,
        ends=starts + SERVEGEN_WINDOW_SECONDS,
        client_rates=rates,
        family=family_grid,
        shape=shape_grid,
    )


def crop(trace: Trace, start: float, end: float) -> Trace:
    """The part of ``trace`` in ``[start, end)`` seconds, re-based to start at 0 (for slices).

    Times are the trace's own (before :func:`scale_trace`)."""
    if isinstance(trace, ArrivalTrace):
        keep = (trace.times >= start) & (trace.times < end)
        end = min(end, trace.duration)
        return ArrivalTrace(trace.name, trace.times[keep] - start, trace.work[keep], end - start)
    keep = (trace.ends > start) & (trace.starts < end)
    starts = np.maximum(trace.starts[keep], start) - start
    ends = np.minimum(trace.ends[keep], end) - start
    return replace(
        trace,
        starts=starts,
        ends=ends,
        client_rates=trace.client_rates[:, keep],
        family=trace.family[:, keep],
        shape=trace.shape[:, keep],
    )
