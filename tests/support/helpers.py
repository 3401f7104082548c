"""Test helpers: polling with a deadline (not sleeps), reading Triton /metrics."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

# Minimal exposition-line reader: tests must not depend on the adapter's parser under test, and
# prometheus_client's parser renames counter samples to *_total, which Triton does not emit.
_SAMPLE_LINE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([A-Za-z_]\w*)="((?:[^"\\]|\\.)*)"')


def _describe(message: str | Callable[[], str]) -> str:
    return message() if callable(message) else message


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns a truthy value; return that value.

    Raises TimeoutError after ``timeout`` s naming ``message`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{_describe(message)} not met within {timeout} s (last value {value!r})"
            )
        time.sleep(interval)


@overload
async def async_wait_until(
    predicate: Callable[[], Awaitable[T]],
    timeout: float,
    interval: float = ...,
    message: str | Callable[[], str] = ...,
) -> T: ...


@overload
async def async_wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = ...,
    message: str | Callable[[], str] = ...,
) -> T: ...


async def async_wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Async ``wait_until``: ``predicate`` may be a plain or an async callable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        if loop.time() >= deadline:
            raise TimeoutError(
                f"{_describe(message)} not met within {timeout} s (last value {value!r})"
            )
        await asyncio.sleep(interval)


def scrape(metrics_url: str) -> str:
    """GET a Prometheus text exposition."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def model_samples(text: str, metric: str) -> dict[str, float]:
    """``{model: value}`` of ``metric``, summed over other labels (e.g. failure ``reason``).

    A model without any sample is an absent key, never 0.
    """
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match is None or match.group(1) != metric:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        if "model" in labels:
            model = labels["model"]
            values[model] = values.get(model, 0.0) + float(match.group(3))
    return values


def model_value(metrics_url: str, metric: str, model: str) -> float:
    """Scrape and return ``metric{model=...}``; KeyError (not 0) when the series is absent."""
    values = model_samples(scrape(metrics_url), metric)
    if model not in values:
        raise KeyError(f"{metric}{{model={model!r}}} absent from {metrics_url}")
    return values[model]
