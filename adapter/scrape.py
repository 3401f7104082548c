"""Scraping: one async loop per target, each on its own interval.

Every loop has its own timeout and jittered exponential backoff, so a slow or dead
target never delays the others. Responses are read in chunks up to a size cap and
parsed with the fast family-filtering parser; a failed or malformed scrape records
an error and keeps the previous readings (nothing is lost, nothing is zeroed).

A scrape fails (reason in brackets) unless the answer is an exposition of the target's
kind: HTTP 200 with a text content type (``text/plain`` or OpenMetrics, or none) and a
UTF-8 body [not_exposition] holding at least one sample of a family named ``nv_...``
for Triton or ``DCGM_...`` for dcgm-exporter [not_exposition] (a Triton with no model
loaded still exposes ``nv_pinned_memory_pool_*``), whose kept lines parse [malformed],
with no series twice [duplicate], and within the per-target caps on series
[too_many_series] and models [too_many_models]. The reading's time is taken when the
body has been received, before decoding and parsing, so the time spent parsing does
not skew rates.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from adapter.exposition import ExpositionError, ExpositionParser, has_family_with_prefix
from adapter.readings import Reading, ReadingError, reading_from_families
from adapter.scrape_pacing import ScrapePacing, next_start
from adapter.signals import ReadingHistory
from adapter.targets import Target, TargetKind

log = logging.getLogger(__name__)

ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
EXPOSITION_CONTENT_TYPES = frozenset({"", "text/plain", "application/openmetrics-text"})
FAMILY_PREFIX: dict[TargetKind, str] = {"triton": "nv_", "dcgm": "DCGM_"}
_NO_AIOHTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None)
_REQUEST_HEADERS = CIMultiDict({"Accept": ACCEPT})  # a multidict: aiohttp uses it as it is


class ScrapeError(Exception):
    """A scrape failed; ``reason`` is a short label for metrics (timeout, http_503, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Body:
    """A response body, its media type ("" if the header is absent) and when it was
    received: ``received_mono`` (monotonic s) and ``received_wall`` (Unix s) are taken
    as the last byte has been read."""

    data: bytes
    content_type: str
    received_mono: float
    received_wall: float


async def fetch_text(
    session: aiohttp.ClientSession, url: str, timeout_seconds: float, max_bytes: int
) -> str:
    """GET ``url`` and return the body, refusing bodies larger than ``max_bytes``."""
    body = await fetch_body(session, url, timeout_seconds, max_bytes)
    return body.data.decode("utf-8", errors="replace")


async def fetch_body(
    session: aiohttp.ClientSession, url: str | URL, timeout_seconds: float, max_bytes: int
) -> Body:
    """GET ``url`` and return the body with its receipt time, refusing bodies larger than
    ``max_bytes`` and answers other than 200. A scrape loop passes its target's URL parsed
    once (a string is parsed again at every request).

    The deadline is ``asyncio.timeout``, not aiohttp's ``ClientTimeout``: aiohttp 3.14
    enters one timer twice per request and, when it fires as the task is being cancelled,
    uncancels twice, turning the cancellation into a TimeoutError. A scrape loop of a
    hanging target then survives its cancellation (found with the hostile test bed:
    shutdown hung, removed targets kept being scraped).
    """
    try:
        async with (
            asyncio.timeout(timeout_seconds),
            session.get(url, timeout=_NO_AIOHTTP_TIMEOUT, headers=_REQUEST_HEADERS) as response,
        ):
            if response.status != 200:
                raise ScrapeError(f"http_{response.status}", f"HTTP {response.status} from {url}")
            if response.content_length is not None and response.content_length > max_bytes:
                raise ScrapeError(
                    "too_large", f"{url}: body of {response.content_length} bytes > {max_bytes}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise ScrapeError("too_large", f"{url}: body exceeds {max_bytes} bytes")
                chunks.append(chunk)
            received_mono, received_wall = time.monotonic(), time.time()
            media_type = response.headers.get("Content-Type", "").partition(";")[0]
            return Body(b"".join(chunks), media_type.strip(), received_mono, received_wall)
    except TimeoutError:
        raise ScrapeError("timeout", f"{url}: no answer within {timeout_seconds:g}s") from None
    except aiohttp.ClientError as err:
        raise ScrapeError("connection", f"{url}: {type(err).__name__}: {err}") from None


@dataclass(slots=True)
class TargetState:
    """What the pipeline knows about one target.

    ``last_attempt``: Unix time (s) the last scrape ended, None before the first;
    ``last_error`` / ``last_error_detail``: the reason label and message of the last failed
    scrape, None after a success.
    """

    target: Target
    history: ReadingHistory
    last_error: str | None = None
    consecutive_failures: int = 0
    scrapes: int = 0
    rejecting: frozenset[tuple[str, str]] = frozenset()  # (family, reason) being rejected
    consecutive_resets: int = 0
    last_attempt: float | None = None
    last_error_detail: str | None = None


# target, seconds, error reason (None: success), the reading (None on failure)
ScrapeObserver = Callable[[Target, float, str | None, Reading | None], None]


def exposition_text(body: Body, kind: TargetKind, url: str) -> str:
    """The body as text if it can be an exposition of ``kind``; ScrapeError otherwise."""
    if body.content_type.lower() not in EXPOSITION_CONTENT_TYPES:
        raise ScrapeError(
            "not_exposition",
            f"{url}: Content-Type {body.content_type!r} is not a metrics exposition "
            "(expected text/plain)",
        )
    try:
        return body.data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScrapeError(
            "not_exposition", f"{url}: body is not UTF-8 text (invalid byte at {err.start})"
        ) from None


class ScrapeLoop:
    """Scrapes one target forever on its own schedule."""

    def __init__(
        self,
        state: TargetState,
        session: aiohttp.ClientSession,
        parser: ExpositionParser,
        *,
        interval_seconds: float,
        timeout_seconds: float,
        max_bytes: int,
        backoff_max_seconds: float,
        sum_versions: bool,
        on_reading: Callable[[], None],
        observer: ScrapeObserver | None = None,
        rng: random.Random | None = None,
        max_series: int | None = None,
        max_models: int | None = None,
        pacing: ScrapePacing | None = None,
    ) -> None:
        self.state = state
        self._pacing = pacing
        self._session = session
        self._parser = parser
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._backoff_max = backoff_max_seconds
        self._sum_versions = sum_versions
        self._on_reading = on_reading
        self._observer = observer
        self._rng = rng or random.Random()
        self._max_series = max_series
        self._max_models = max_models
        self._url = URL(state.target.url)  # parsed once; a relabel keeps the URL

    async def scrape_once(self) -> Reading:
        target = self.state.target
        started = time.monotonic()
        reason: str | None = None
        reading: Reading | None = None
        try:
            body = await fetch_body(self._session, self._url, self._timeout, self._max_bytes)
            text = exposition_text(body, target.kind, target.url)
            try:
                families = self._parser.parse(text, self._max_series)
            except ExpositionError as err:
                raise ScrapeError(err.reason, f"{target.url}: {err}") from None
            prefix = FAMILY_PREFIX[target.kind]
            if not any(name.startswith(prefix) for name in families) and (
                not has_family_with_prefix(text, prefix)
            ):
                raise ScrapeError(
                    "not_exposition",
                    f"{target.url}: no {prefix}* sample: not a {target.kind} exposition "
                    f"(body starts {text[:60]!r})",
                )
            try:
                reading = reading_from_families(
                    families,
                    target.kind,
                    body.received_mono,
                    body.received_wall,
                    self._sum_versions,
                    self._max_models,
                )
            except ReadingError as err:
                raise ScrapeError(err.reason, f"{target.url}: {err}") from None
        except ScrapeError as err:
            reason = err.reason
            raise
        finally:
            if self._observer is not None:
                self._observer(target, time.monotonic() - started, reason, reading)
        return reading

    def next_delay(self) -> float:
        """Interval when healthy; full-jitter exponential backoff after failures."""
        failures = self.state.consecutive_failures
        if failures == 0:
            return self._interval
        ceiling = min(self._backoff_max, self._interval * 2 ** min(failures, 16))
        return self._rng.uniform(self._interval, max(self._interval, ceiling))

    async def run(self) -> None:
        """Scrape on this target's grid of start times (see :mod:`adapter.scrape_pacing`):
        first starts spread over the interval (at most 1 s) so that many targets do not fire
        in lockstep; a cycle that overruns skips the start times already past; a failing
        target waits its backoff."""
        loop = asyncio.get_running_loop()
        scheduled = loop.time() + self._rng.uniform(0, min(self._interval, 1.0))
        while True:
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            await self._tick()
            now = loop.time()
            if self.state.consecutive_failures:
                scheduled = max(now, scheduled + self.next_delay())
                continue
            scheduled, skipped = next_start(scheduled, now, self._interval)
            if self._pacing is not None:
                self._pacing.record(skipped)

    async def _tick(self) -> None:
        state = self.state
        try:
            if self._pacing is None:
                reading = await self.scrape_once()
            else:
                async with self._pacing.slot():  # the timeout starts once a slot is held
                    reading = await self.scrape_once()
        except asyncio.CancelledError:
            raise
        except Exception as raised:  # a bug must not end this target's loop for good
            state.last_attempt = time.time()
            if isinstance(raised, ScrapeError):
                err = raised
            else:
                log.exception("scrape raised", extra={"target": state.target.url})
                err = ScrapeError("internal", f"{type(raised).__name__}: {raised}")
            state.consecutive_failures += 1
            if state.last_error != err.reason or state.consecutive_failures in (1, 10, 100):
                log.warning(
                    "scrape failed",
                    extra={
                        "target": state.target.url,
                        "reason": err.reason,
                        "detail": str(err),
                        "consecutive_failures": state.consecutive_failures,
                    },
                )
            state.last_error = err.reason
            state.last_error_detail = str(err)
            return
        state.last_attempt = time.time()
        if state.consecutive_failures:
            log.info(
                "scrape recovered",
                extra={"target": state.target.url, "after_failures": state.consecutive_failures},
            )
        state.consecutive_failures = 0
        state.last_error = None
        state.last_error_detail = None
        state.scrapes += 1
        self._note_rejections(reading)
        self._note_reset(state.history.add(reading))
        self._on_reading()

    def _note_rejections(self, reading: Reading) -> None:
        """Log when the set of rejected (family, reason) pairs changes, not every scrape."""
        state = self.state
        rejecting = frozenset((r.family, r.reason) for r in reading.rejections)
        if rejecting == state.rejecting:
            return
        state.rejecting = rejecting
        if rejecting:
            log.warning(
                "rejecting samples: their series are held, then stale, never 0",
                extra={
                    "target": state.target.url,
                    "rejected": "; ".join(r.describe() for r in reading.rejections),
                },
            )
        else:
            log.info("samples valid again", extra={"target": state.target.url})

    def _note_reset(self, reset: bool) -> None:
        """One line when counters start going backwards, one when they stop doing so
        after repeated resets (a single restart is one line)."""
        state = self.state
        if reset:
            state.consecutive_resets += 1
            if state.consecutive_resets == 1:
                log.warning(
                    "counter reset: target restarted; rate window restarts",
                    extra={"target": state.target.url},
                )
            return
        if state.consecutive_resets > 1:
            log.info(
                "counters increasing again",
                extra={"target": state.target.url, "consecutive_resets": state.consecutive_resets},
            )
        state.consecutive_resets = 0
