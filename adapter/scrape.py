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
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from adapter.exposition import ExpositionError, ExpositionParser, has_family_with_prefix
from adapter.readings import Reading, ReadingError, reading_from_families
from adapter.scrape_http import Body, HttpScrapeError, TargetConnection
from adapter.scrape_pacing import ScrapePacing, next_start
from adapter.signals import ReadingHistory
from adapter.targets import Target, TargetKind

__all__ = ["Body", "ScrapeError", "ScrapeLoop", "TargetState", "fetch_body", "fetch_text"]

log = logging.getLogger(__name__)

EXPOSITION_CONTENT_TYPES = frozenset({"", "text/plain", "application/openmetrics-text"})
FAMILY_PREFIX: dict[TargetKind, str] = {"triton": "nv_", "dcgm": "DCGM_"}


class ScrapeError(Exception):
    """A scrape failed; ``reason`` is a short label for metrics (timeout, http_503, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


async def fetch_text(
    url: str, timeout_seconds: float, max_bytes: int, tls: ssl.SSLContext | None = None
) -> str:
    """GET ``url`` once on a connection of its own and return the body, refusing bodies
    larger than ``max_bytes``."""
    connection = TargetConnection(url, tls)
    try:
        body = await fetch_body(connection, url, timeout_seconds, max_bytes)
    finally:
        connection.close()
    return body.data.decode("utf-8", errors="replace")


async def fetch_body(
    connection: TargetConnection, url: str, timeout_seconds: float, max_bytes: int
) -> Body:
    """GET ``connection``'s URL and return the body with its receipt time, refusing bodies
    larger than ``max_bytes`` and answers other than 200, within ``timeout_seconds`` for
    connect, request and answer together. ``url`` names the target in errors."""
    try:
        async with asyncio.timeout(timeout_seconds):
            return await connection.get(max_bytes)
    except TimeoutError:
        raise ScrapeError("timeout", f"{url}: no answer within {timeout_seconds:g}s") from None
    except HttpScrapeError as err:
        if err.reason.startswith("http_"):  # "HTTP 503 from URL", as operators grep for
            raise ScrapeError(err.reason, f"{err} from {url}") from None
        raise ScrapeError(err.reason, f"{url}: {err}") from None


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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.state = state
        self._pacing = pacing
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
        # one kept-alive connection for the loop's life; a relabel keeps the URL
        self._connection = TargetConnection(state.target.url, tls)

    async def scrape_once(self) -> Reading:
        target = self.state.target
        started = time.monotonic()
        reason: str | None = None
        reading: Reading | None = None
        try:
            body = await fetch_body(self._connection, target.url, self._timeout, self._max_bytes)
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
        try:
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
        finally:
            self.close()

    def close(self) -> None:
        """Close the target's connection (:meth:`run` does when it ends)."""
        self._connection.close()

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
