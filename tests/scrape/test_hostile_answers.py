"""Every hostile answer is either a valid reading or a failed scrape with a bounded reason;
invalid samples are rejected (never clamped), and each state change is logged once."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator

import pytest

from adapter.exposition import DCGM_FAMILIES, TRITON_FAMILIES, ExpositionParser, Families
from adapter.readings import Reading
from adapter.scrape import ScrapeError, ScrapeLoop, TargetState
from adapter.signals import ReadingHistory
from adapter.targets import Target
from loadtest.harness.hostile_triton import MODES, FakeTarget, HostileApp, start

PARSER = ExpositionParser(TRITON_FAMILIES + DCGM_FAMILIES)
M = ("m", "")


@pytest.fixture
async def fake() -> AsyncIterator[tuple[HostileApp, str]]:
    app = HostileApp({mode: FakeTarget(mode) for mode in MODES})
    runner, (port,) = await start(app)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        app.closing.set()
        await runner.cleanup()


def make_loop(
    url: str,
    *,
    max_series: int | None = 25_000,
    max_models: int | None = 1_000,
    parser: ExpositionParser = PARSER,
    max_bytes: int = 4 << 20,
) -> ScrapeLoop:
    state = TargetState(Target.create(url, "triton", {"namespace": "t"}), ReadingHistory(60))
    return ScrapeLoop(
        state,
        parser,
        interval_seconds=0.05,
        timeout_seconds=0.5,
        max_bytes=max_bytes,
        backoff_max_seconds=1.0,
        sum_versions=True,
        on_reading=lambda: None,
        rng=random.Random(1),
        max_series=max_series,
        max_models=max_models,
    )


FAILING = {
    "duplicate": "duplicate",
    "html": "not_exposition",
    "foreign": "not_exposition",
    "binary": "not_exposition",
    "drip": "timeout",
    "hang": "timeout",
    "huge": "too_large",
    "flood": "too_many_models",
}


@pytest.mark.parametrize("mode", sorted(FAILING))
async def test_answers_that_are_not_a_usable_exposition_fail_the_scrape(
    fake: tuple[HostileApp, str], mode: str
) -> None:
    _app, base = fake
    seen: list[tuple[str | None, Reading | None]] = []
    loop = make_loop(f"{base}/{mode}/metrics")
    loop._observer = lambda _t, _s, reason, reading: seen.append((reason, reading))
    with pytest.raises(ScrapeError) as caught:
        await loop.scrape_once()
    assert caught.value.reason == FAILING[mode]
    assert seen == [(FAILING[mode], None)]  # counted by reason, no reading


@pytest.mark.parametrize(
    ("mode", "family", "reason"),
    [
        ("nan", "nv_inference_request_success", "nan"),
        ("inf", "nv_inference_request_success", "inf"),
        ("negative", "nv_inference_pending_request_count", "negative"),
    ],
)
async def test_invalid_samples_are_rejected_and_the_model_left_out(
    fake: tuple[HostileApp, str], mode: str, family: str, reason: str
) -> None:
    _app, base = fake
    reading = await make_loop(f"{base}/{mode}/metrics").scrape_once()
    assert reading.models == {}  # not a zero, not a clamped value: absent
    assert reading.rejected_models == {M}
    ((got_family, got_reason),) = [(r.family, r.reason) for r in reading.rejections]
    assert (got_family, got_reason) == (family, reason)
    assert not reading.clean


async def test_healthy_fake_reads_exactly(fake: tuple[HostileApp, str]) -> None:
    app, base = fake
    reading = await make_loop(f"{base}/healthy/metrics").scrape_once()
    counters = reading.models[M]
    assert reading.clean and counters.pending == 5
    assert counters.queue_us == counters.success * 1000
    assert app.targets["healthy"].scrapes == 1


async def test_model_flood_under_a_lower_series_cap_stops_parsing_early(
    fake: tuple[HostileApp, str],
) -> None:
    _app, base = fake
    with pytest.raises(ScrapeError, match="more than 500 series") as caught:
        await make_loop(f"{base}/flood/metrics", max_series=500).scrape_once()
    assert caught.value.reason == "too_many_series"


async def test_churn_under_the_caps_is_read(fake: tuple[HostileApp, str]) -> None:
    _app, base = fake
    reading = await make_loop(f"{base}/churn/metrics").scrape_once()
    with pytest.raises(ScrapeError, match="more than 100 ") as caught:
        await make_loop(f"{base}/churn/metrics", max_models=100).scrape_once()
    assert len(reading.models) == 201
    assert caught.value.reason == "too_many_models"


class ClockedParser(ExpositionParser):
    """Records when parsing starts, to show the reading's time is taken before it."""

    parse_started: float = 0.0

    def parse(self, text: str, max_series: int | None = None) -> Families:
        ClockedParser.parse_started = time.monotonic()
        return super().parse(text, max_series)


async def test_reading_time_is_taken_at_receipt_not_after_parsing(
    fake: tuple[HostileApp, str],
) -> None:
    _app, base = fake
    parser = ClockedParser(TRITON_FAMILIES)
    before = time.monotonic()
    reading = await make_loop(f"{base}/healthy/metrics", parser=parser).scrape_once()
    assert before <= reading.mono <= ClockedParser.parse_started


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(text)]


async def test_rejections_are_logged_once_per_state_change(
    fake: tuple[HostileApp, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, base = fake
    caplog.set_level(logging.INFO, logger="adapter.scrape")
    loop = make_loop(f"{base}/nan/metrics")
    for _ in range(5):
        await loop._tick()
    assert len(messages(caplog, "rejecting samples")) == 1
    (record,) = messages(caplog, "rejecting samples")
    assert "nan nv_inference_request_success" in record.__dict__["rejected"]
    app.targets["nan"].mode = "healthy"
    for _ in range(3):
        await loop._tick()
    app.targets["nan"].mode = "inf"  # a different rejection is a new state
    for _ in range(3):
        await loop._tick()
    assert len(messages(caplog, "samples valid again")) == 1
    assert len(messages(caplog, "rejecting samples")) == 2
    assert loop.state.scrapes == 11  # rejected samples do not fail the scrape


async def test_counters_going_backwards_every_scrape_log_one_line(
    fake: tuple[HostileApp, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, base = fake
    caplog.set_level(logging.INFO, logger="adapter.scrape")
    loop = make_loop(f"{base}/backwards/metrics")
    for _ in range(8):
        await loop._tick()
    assert loop.state.history.restarts == 7  # every scrape after the first is a reset
    assert len(messages(caplog, "counter reset")) == 1
    app.targets["backwards"].mode = "healthy"  # far below: one more reset, then steady
    for _ in range(3):
        await loop._tick()
    assert len(messages(caplog, "counter reset")) == 1
    assert len(messages(caplog, "counters increasing again")) == 1


async def test_a_single_restart_is_one_line(
    fake: tuple[HostileApp, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, base = fake
    caplog.set_level(logging.INFO, logger="adapter.scrape")
    loop = make_loop(f"{base}/healthy/metrics")
    app.targets["healthy"].created -= 100  # 1000 requests done
    await loop._tick()
    app.targets["healthy"] = FakeTarget("healthy")  # restarted: counters from zero
    for _ in range(3):
        await loop._tick()
    assert loop.state.history.restarts == 1
    assert len(messages(caplog, "counter reset")) == 1
    assert messages(caplog, "counters increasing again") == []


async def test_cancelling_the_loop_of_a_hanging_target_always_ends_it(
    fake: tuple[HostileApp, str],
) -> None:
    """The scrape's deadline racing the loop's cancellation must not swallow the latter
    (it did with aiohttp's own timeout: shutdown hung, removed targets kept scraping)."""
    _app, base = fake
    rng = random.Random(3)
    survived = 0
    for _ in range(150):
        loop = make_loop(f"{base}/hang/metrics")
        loop._timeout = 0.02  # a deadline that keeps firing around the cancellation
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(rng.uniform(0.0, 0.06))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2.0)
        if not done:
            survived += 1
            task.cancel()
            await asyncio.wait([task], timeout=2.0)
    assert survived == 0, f"{survived} of 150 scrape loops survived their cancellation"
