"""CPU per scrape GET: the scrape's own HTTP client against aiohttp's, in the same run
(``python -m loadtest.bench.scrape_client``).

Both clients GET the same fake Triton targets (``loadtest.harness.fake_triton``, in a process
of their own so that their work is not counted) one after the other, round-robin over
``--targets`` kept-alive connections, each GET under an ``asyncio.timeout`` as a scrape loop
does, and the body read whole. aiohttp is set up as the scrape used it before
``adapter.scrape_http`` (``TCPConnector(limit=0, limit_per_host=2, keepalive_timeout=30)``,
``auto_decompress``, the same ``Accept``, the body read in 64 KiB chunks). The number is this
process's CPU time per GET (``time.process_time``), which does not depend on how long the
target took; the clients alternate ``--repeats`` times on each event loop, and the median
is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from adapter.event_loop import run
from adapter.scrape_http import ACCEPT, TargetConnection
from loadtest.harness.fake_triton import FakeTritonProcess

Client = Callable[[int], Awaitable[int]]  # GET target i, return the body's size


async def cpu_per_get(client: Client, targets: int, gets: int) -> float:
    """ms of this process's CPU per GET, after one warm-up GET per target."""
    for i in range(targets):
        await client(i)
    before = time.process_time()
    for n in range(gets):
        async with asyncio.timeout(5):
            await client(n % targets)
    return (time.process_time() - before) / gets * 1e3


async def measure(urls: list[str], gets: int, repeats: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"aiohttp": [], "scrape_http": []}
    parsed = [URL(url) for url in urls]
    headers = CIMultiDict({"Accept": ACCEPT})
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=2, keepalive_timeout=30)
    connections = [TargetConnection(url) for url in urls]
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:

        async def with_aiohttp(i: int) -> int:
            async with session.get(parsed[i], headers=headers) as response:
                chunks = [chunk async for chunk in response.content.iter_chunked(65536)]
                assert response.status == 200
                return sum(map(len, chunks))

        async def with_scrape_http(i: int) -> int:
            return len((await connections[i].get(1 << 22)).data)

        try:
            for _ in range(repeats):
                results["aiohttp"].append(await cpu_per_get(with_aiohttp, len(urls), gets))
                results["scrape_http"].append(await cpu_per_get(with_scrape_http, len(urls), gets))
        finally:
            for connection in connections:
                connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=50, help="fake targets (connections)")
    parser.add_argument("--gets", type=int, default=5000, help="GETs per client per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="alternations per event loop")
    parser.add_argument(
        "--event-loops", type=lambda text: text.split(","), default=["asyncio", "uvloop"]
    )
    args = parser.parse_args()
    fakes = FakeTritonProcess(args.targets)
    fakes.start()
    try:
        print(f"Command: `python -m loadtest.bench.scrape_client --targets {args.targets} "
              f"--gets {args.gets} --repeats {args.repeats}`\n")  # fmt: skip
        print("| event loop | aiohttp ms CPU/GET | scrape_http ms CPU/GET | ratio | runs |")
        print("| --- | ---: | ---: | ---: | --- |")
        for event_loop in args.event_loops:
            results = run(measure(fakes.urls, args.gets, args.repeats), event_loop)
            old, new = (statistics.median(results[k]) for k in ("aiohttp", "scrape_http"))
            runs = "; ".join(
                f"{a:.3f} / {b:.3f}"
                for a, b in zip(results["aiohttp"], results["scrape_http"], strict=True)
            )
            print(f"| {event_loop} | {old:.3f} | {new:.3f} | {old / new:.2f}x | {runs} |")
    finally:
        fakes.stop()


if __name__ == "__main__":
    main()
