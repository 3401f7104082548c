"""Scraping: one async loop per target, each on its own interval.

Every loop has its own timeout and jittered exponential backoff, so a slow or dead
target never delays the others. Responses are read in chunks up to a size cap and
parsed with the fast family-filtering parser; a failed or malformed scrape records
an error and keeps the previous readings (nothing is lost, nothing is zeroed).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from adapter.exposition import ExpositionError, ExpositionParser
from adapter.readings import Reading, reading_from_families
from adapter.signals import ReadingHistory
from adapter.targets import Target

log = logging.getLogger(__name__)

ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


class ScrapeError(Exception):
    """A scrape failed; ``reason`` is a short label for metrics (timeout, http_503, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


async def fetch_text(
    session: aiohttp.ClientSession, url: str, timeout_seconds: float, max_bytes: int
) -> str:
    """GET ``url`` and return the body, refusing bodies larger than ``max_bytes``."""
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            headers={"Accept": ACCEPT},
        ) as response:
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
            return b"".join(chunks).decode("utf-8", errors="replace")
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
    last_attempt: float | None = None
    last_error_detail: str | None = None


ScrapeObserver = Callable[[Target, float, str | None], None]  # target, seconds, error reason


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
    ) -> None:
        self.state = state
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

    async def scrape_once(self) -> Reading:
        target = self.state.target
        started = time.monotonic()
        reason: str | None = None
        try:
            text = await fetch_text(self._session, target.url, self._timeout, self._max_bytes)
            try:
                families = self._parser.parse(text)
            except ExpositionError as err:
                raise ScrapeError("malformed", f"{target.url}: {err}") from None
            reading = reading_from_families(
                families, target.kind, time.monotonic(), time.time(), self._sum_versions
            )
        except ScrapeError as err:
            reason = err.reason
            raise
        finally:
            if self._observer is not None:
                self._observer(target, time.monotonic() - started, reason)
        return reading

    def next_delay(self) -> float:
        """Interval when healthy; full-jitter exponential backoff after failures."""
        failures = self.state.consecutive_failures
        if failures == 0:
            return self._interval
        ceiling = min(self._backoff_max, self._interval * 2 ** min(failures, 16))
        return self._rng.uniform(self._interval, max(self._interval, ceiling))

    async def run(self) -> None:
        # Spread first scrapes so many targets do not fire in lockstep.
        await asyncio.sleep(self._rng.uniform(0, min(self._interval, 1.0) * 0.2))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._tick()
            delay = self.next_delay()
            await asyncio.sleep(max(0.0, started + delay - loop.time()))

    async def _tick(self) -> None:
        state = self.state
        try:
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
        if state.history.add(reading):
            log.warning(
                "counter reset: target restarted; rate window restarts",
                extra={"target": state.target.url},
            )
        self._on_reading()
