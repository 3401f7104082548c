"""Headless Chromium driven over the Chrome DevTools Protocol (a websocket, spoken by aiohttp).

Debian's ``chromium`` (``make system-deps`` installs it); tests that need it skip naming the
package when it is missing. Every run gets a fresh ``--user-data-dir`` and the flags a closed
network needs (no background networking, component updates or sync), and the process is
ended when the context exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.paths import REPO_ROOT

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "out" / "test-artifacts"
"""Screenshots land here (git-ignored), besides pytest's tmp_path."""
CALL_TIMEOUT_SECONDS = 120.0
"""One DevTools command, answer included (generous: a first start builds font caches)."""


def chromium_binary() -> str:
    """The Chromium executable, or skip naming the Debian package to install."""
    explicit = os.environ.get("TRITONSCALE_CHROMIUM")
    for candidate in ((explicit,) if explicit else ()) + CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.skip("needs Chromium: apt-get install chromium (make system-deps installs it)")


@dataclass
class Page:
    """One page target: ``call`` sends a CDP command and returns its result."""

    socket: aiohttp.ClientWebSocketResponse
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self.socket.send_str(
            json.dumps({"id": message_id, "method": method, "params": params})
        )
        async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
            return await self._answer(method, message_id)

    async def _answer(self, method: str, message_id: int) -> dict[str, Any]:
        while True:
            message = await self.socket.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection closed during {method}: {message!r}")
            body = json.loads(message.data)
            if body.get("id") != message_id:
                continue  # an event, or an earlier answer
            if "error" in body:
                raise RuntimeError(f"{method} failed: {body['error']}")
            result: dict[str, Any] = body.get("result", {})
            return result

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited), as JSON."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        result = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path


async def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """Chromium writes the port it chose (``--remote-debugging-port=0``) into the profile."""
    marker = profile / "DevToolsActivePort"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CALL_TIMEOUT_SECONDS
    while loop.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before it listened")
        if marker.exists():
            lines = marker.read_text().splitlines()
            if lines and lines[0].isdigit():
                return int(lines[0])
        await asyncio.sleep(0.1)
    raise TimeoutError(f"chromium did not open its DevTools port in {CALL_TIMEOUT_SECONDS:g} s")


@contextlib.asynccontextmanager
async def chromium_page(profile: Path, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """A fresh headless Chromium (profile in ``profile``) and its first page."""
    binary = chromium_binary()
    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--ignore-certificate-errors",  # the adapter's self-signed certificate
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = await _devtools_port(profile, process)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with session.ws_connect(page_url, max_msg_size=64 * 1024 * 1024) as socket:
                page = Page(socket)
                await page.call("Page.enable")
                await page.call("Runtime.enable")
                await page.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=width,
                    height=height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                yield page
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
