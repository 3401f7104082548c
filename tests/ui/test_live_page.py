"""The live page in headless Chromium against a running adapter scraping two fake Tritons.

What a person would check: the page of a namespace shows that namespace's series only, with
the last minutes of the arrival rate, the forecast band drawn at the time it forecasts and the
desired replicas; it updates by itself; and the numbers it shows are the numbers the API
serves for the same series. Screenshots are kept under out/test-artifacts/ui/ (and tmp_path).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapter.config import load_config
from adapter.service import running_service
from tests.support.browser import ARTIFACTS, Page, chromium_binary, chromium_page
from tests.support.fake_triton import FakeTriton, serving
from tests.support.helpers import async_wait_until


@pytest.fixture
async def tritons() -> AsyncIterator[tuple[FakeTriton, ...]]:
    async with serving(FakeTriton(30.0, 15.0, 3.0), FakeTriton(8.0, 4.0, 0.0)) as fakes:
        yield fakes


async def get_json(base: str, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session,
        session.get(base + path) as response,
    ):
        return response.status, await response.json()


async def api_values(base: str) -> dict[str, float] | None:
    """What the API serves now for prod's series (KEDA's JSON: exact floats), None if any
    metric is not served."""
    values = {}
    for field, metric in (
        ("arrival", "triton_arrival_rate"),
        ("upper", "triton_arrival_rate_forecast"),
        ("desired", "triton_desired_replicas"),
        ("queue_depth", "triton_queue_depth"),
    ):
        code, body = await get_json(base, f"/keda/v1/namespaces/prod/{metric}")
        if code != 200:
            return None
        (item,) = body["items"]
        values[field] = item["value"]
    return values


PAGE_VALUES = """
(() => {
  const cards = [...document.querySelectorAll('.card')];
  return cards.map((card) => ({
    labels: JSON.parse(card.dataset.labels),
    values: Object.fromEntries([...card.querySelectorAll('.stat')].map(
      (s) => [s.dataset.field, s.dataset.value === '' ? null : Number(s.dataset.value)])),
    texts: Object.fromEntries([...card.querySelectorAll('.stat')].map(
      (s) => [s.dataset.field, s.querySelector('.value').textContent])),
    aim: Object.fromEntries([...card.querySelectorAll('.aim-part')].map(
      (s) => [s.dataset.field, s.dataset.value === '' ? null : Number(s.dataset.value)])),
    paths: Object.fromEntries([...card.querySelectorAll('path')].map(
      (p) => [p.getAttribute('class'), p.getAttribute('d').length])),
  }));
})()
"""


def shown(value: float) -> str:
    """The page's number format (app.js fmt)."""
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


async def page_cards(page: Page) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = await page.evaluate(PAGE_VALUES)
    return cards


async def test_the_live_page_shows_what_the_api_serves(
    tritons: tuple[FakeTriton, ...], tmp_path: Path
) -> None:
    chromium_binary()  # skip early, naming the package, when Chromium is missing
    prod, staging = tritons
    config = load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "targets": [
                {"url": prod.url, "labels": {"namespace": "prod", "deployment": "llm"}},
                {"url": staging.url, "labels": {"namespace": "staging", "deployment": "bert"}},
            ],
            "scrape": {"interval_seconds": 0.25, "timeout_seconds": 1.0},
            "signals": {
                "rate_window_seconds": 1.0,
                "max_age_seconds": 600,
                "forget_after_seconds": 1200,
            },
            "predictive": {
                "defaults": {
                    "step_seconds": 1,
                    "cold_start_seconds": 3,
                    "hpa_sync_period_seconds": 1,
                    "capacity_rps": 10,
                }
            },
            "ui": {"history_seconds": 60},
        },
    )
    async with running_service(config) as service:
        base = f"https://127.0.0.1:{service.port}"

        async def recorded_rows() -> int:
            code, body = await get_json(base, "/ui/api/v1/namespaces/prod/series")
            if code != 200 or not body["series"]:
                return 0
            (series,) = body["series"]
            known = [u for u in series["upper"] if u is not None]
            return len(known) if series["latest"]["desired"] is not None else 0

        # ~20 s of live data: a full period of the rate, forecasts and their band
        await async_wait_until(lambda: _at_least(recorded_rows, 60), timeout=120, interval=0.5)

        async with chromium_page(tmp_path / "chromium") as page:
            await page.navigate(f"{base}/ui/namespaces/prod")
            await async_wait_until(
                lambda: _count_cards(page), timeout=60, interval=0.25, message="a series card"
            )
            # it updates by itself
            first = float(await page.evaluate("document.body.dataset.recordedAt"))
            await async_wait_until(
                lambda: _recorded_after(page, first), timeout=30, message="a newer poll"
            )
            cards = await page_cards(page)
            assert [c["labels"] for c in cards] == [
                {"namespace": "prod", "deployment": "llm", "model": "resnet"}
            ]
            aim = cards[0]["aim"]
            assert aim["slo_attainment"] == 0.995  # what the policy aims for, shown
            assert 0 < aim["budget"] < 1 and aim["margin"] >= 0 and 0 < aim["utilisation"] <= 1
            paths = cards[0]["paths"]
            for drawn in ("actual", "band", "point", "desired", "replicas"):
                assert paths[drawn] > 20, f"nothing drawn for {drawn}: {paths}"
            nav = await page.evaluate(
                "[...document.querySelectorAll('#namespaces a')].map((a) => a.textContent)"
            )
            assert nav == ["prod", "staging"]
            live = await page.screenshot(tmp_path / "live-page.png")
            kept = await page.screenshot(ARTIFACTS / "ui" / "live-page.png")
            print(f"\nlive page screenshot: {kept} (and {live})")

            # freeze the data (the target fails; the last values are held), then the page
            # must show exactly what the API serves for the same series
            prod.failing = True
            matched: dict[str, Any] = {}

            async def same_as_api() -> bool:
                served = await api_values(base)
                (card,) = await page_cards(page)
                matched.update(served=served, page=card["values"], texts=card["texts"])
                if served is None:
                    return False
                return all(card["values"][k] == v for k, v in served.items())

            await async_wait_until(
                same_as_api,
                timeout=60,
                interval=0.5,
                message=lambda: f"page values equal to the API's ({matched})",
            )
            served = matched["served"]
            texts = matched["texts"]
            assert texts["arrival"] == f"{shown(served['arrival'])} req/s"
            assert texts["upper"] == f"{shown(served['upper'])} req/s"
            assert texts["desired"] == shown(served["desired"])
            assert texts["queue_depth"] == f"{shown(served['queue_depth'])} req"
            assert served["upper"] >= served["arrival"] * 0.5  # a forecast, not a placeholder
            assert served["desired"] >= math.ceil(served["arrival"] / 10) - 1

            # the other namespace's page shows its own series only
            await page.navigate(f"{base}/ui/namespaces/staging")
            await async_wait_until(lambda: _count_cards(page), timeout=60, interval=0.25)
            (card,) = await page_cards(page)
            assert card["labels"]["namespace"] == "staging"
            print(f"staging screenshot: {await page.screenshot(ARTIFACTS / 'ui' / 'staging.png')}")


async def _at_least(rows: Any, minimum: int) -> bool:
    return bool(await rows() >= minimum)


async def _count_cards(page: Page) -> bool:
    return bool(await page.evaluate("document.querySelectorAll('.card').length") > 0)


async def _recorded_after(page: Page, first: float) -> bool:
    return bool(float(await page.evaluate("document.body.dataset.recordedAt")) > first)
