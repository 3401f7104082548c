"""Slowloris against ``tritonscale serve`` (``python -m loadtest.bench.slowloris``).

A real ``serve`` (TLS, one unreachable target) runs as a child process. An attacker process
opens ``--connections`` connections that never finish a request and reopens each one the server
closes, for ``--hold`` seconds; then closes them all. Modes: ``headers`` completes the TLS
handshake and sends partial headers; ``handshake`` opens TCP and never starts TLS.

Meanwhile it samples the server's RSS (``/proc/PID/status``) and, once a second, a normal
client: a fresh TLS connection from 127.0.0.2, ``GET /healthz``. The attack runs in its own
process, so that its load does not delay the probes' clock. It reports the RSS before, at
peak and 10 s after the attack ends, the connections the server held, and whether the
normal client got its answers. ``--unbounded`` first runs the same attack against limits
raised out of reach (header timeout 300 s, 100,000 connections): the baseline of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.harness.triton_server import free_port

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: tritonscale\r\nUser-Agent: slowloris\r\nX-a: "
UNBOUNDED = {"header_timeout_seconds": 300, "idle_timeout_seconds": 3600, "max_connections": 100000}


@functools.cache
def _client_tls() -> ssl.SSLContext:
    """One context for every connection (making one loads the CA store: ~20 ms each)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Server:
    """``tritonscale serve`` in a child process, with the given ``server:`` limits and, if
    given, ``targets_yaml`` (a ``targets:`` section) instead of one unreachable target."""

    def __init__(self, limits: dict[str, Any] | None, targets_yaml: str | None = None) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="slowloris-")
        config = Path(self._dir.name) / "config.yaml"
        server = json.dumps(limits) if limits else "{}"
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f"server: {server}\n"
            + (targets_yaml or "targets: [{url: 'http://127.0.0.1:9/metrics'}]\n")
            + "log: {level: warning}\n"
        )
        self._log = open(Path(self._dir.name) / "serve.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adapter", "serve", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log_tail()}")
            if await probe(self.port) is not None:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"serve did not answer within {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        self._log.flush()
        return (Path(self._dir.name) / "serve.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
        self._dir.cleanup()


PROBE_ADDRESS = "127.0.0.2"
"""The normal client connects from another loopback address than the attack (127.0.0.1), as
the aggregator or the kubelet do from theirs."""


async def probe(port: int, timeout: float = 5.0) -> float | None:
    """Seconds for a fresh TLS connection to get ``GET /healthz`` = 200; None if it did not."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=_client_tls(), local_addr=(PROBE_ADDRESS, 0)
            ),
            timeout,
        )
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    return time.perf_counter() - started if answer.startswith(b"HTTP/1.1 200") else None


@dataclass
class Attack:
    port: int
    mode: str
    connections: int
    opened: int = 0
    failed_opens: int = 0
    closed_by_server: int = 0
    held: int = 0
    max_held: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def slot(self) -> None:
        """One slowloris connection, reopened whenever the server closes it."""
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        "127.0.0.1",
                        self.port,
                        ssl=_client_tls() if self.mode == "headers" else None,
                    ),
                    30,
                )
            except (OSError, TimeoutError, ssl.SSLError):
                self.failed_opens += 1
                await asyncio.sleep(0.5)
                continue
            self.opened += 1
            self.held += 1
            self.max_held = max(self.max_held, self.held)
            self.writers.add(writer)
            try:
                if self.mode == "headers":
                    writer.write(PARTIAL)
                stopping = asyncio.ensure_future(self.stop.wait())
                reading = asyncio.ensure_future(reader.read(1024))
                done, _ = await asyncio.wait(
                    {stopping, reading}, return_when=asyncio.FIRST_COMPLETED
                )
                stopping.cancel()
                reading.cancel()
                if reading in done:
                    self.closed_by_server += 1
            except (OSError, ssl.SSLError):
                self.closed_by_server += 1
            finally:
                self.held -= 1
                self.writers.discard(writer)
                writer.close()


async def attack_child(port: int, mode: str, connections: int, hold: float) -> dict[str, Any]:
    """The attack, run in its own process (``--attack-child``) so that its load does not
    delay the probes' clock: holds the connections for ``hold`` s, then reports."""
    attack = Attack(port, mode, connections)
    slots = []
    for index in range(connections):  # ramp up in batches, as a client can
        slots.append(asyncio.create_task(attack.slot()))
        if index % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.sleep(hold)
    held_at_end = attack.held
    attack.stop.set()
    await asyncio.gather(*slots, return_exceptions=True)
    return {
        "opened": attack.opened,
        "failed_opens": attack.failed_opens,
        "closed_by_server": attack.closed_by_server,
        "max_held_client_side": attack.max_held,
        "held_at_end": held_at_end,
    }


async def run(args: argparse.Namespace, limits: dict[str, Any] | None) -> dict[str, Any]:
    server = Server(limits)
    try:
        await server.wait_ready()
        pid = server.process.pid
        await asyncio.sleep(1.0)
        before = rss_mib(pid)
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "loadtest.bench.slowloris",
            "--attack-child",
            str(server.port),
            "--mode",
            args.mode,
            "--connections",
            str(args.connections),
            "--hold",
            str(args.hold),
            stdout=asyncio.subprocess.PIPE,
        )
        peak = before
        probes: list[asyncio.Task[float | None]] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + args.hold
        next_probe = loop.time() + 2.0  # once the attack has ramped up
        while loop.time() < end:
            peak = max(peak, rss_mib(pid))
            if loop.time() >= next_probe:  # one normal client a second, each on its own
                next_probe += 1.0
                probes.append(asyncio.create_task(probe(server.port)))
            await asyncio.sleep(0.2)
        latencies = [t for t in await asyncio.gather(*probes) if t is not None]
        out, _ = await attacker.communicate()
        attack: dict[str, Any] = json.loads(out)
        after_deadline = loop.time() + 10.0
        while loop.time() < after_deadline:
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.5)
        after = rss_mib(pid)
        alive = server.process.poll() is None
        return {
            "limits": limits or "defaults",
            "mode": args.mode,
            "connections": args.connections,
            "hold_s": args.hold,
            "rss_before_mib": round(before, 1),
            "rss_peak_mib": round(peak, 1),
            "rss_10s_after_mib": round(after, 1),
            **attack,
            "probes_ok": f"{len(latencies)}/{len(probes)}",
            "probe_p50_ms": round(statistics.median(latencies) * 1e3, 1) if latencies else None,
            "probe_max_ms": round(max(latencies) * 1e3, 1) if latencies else None,
            "server_alive": alive,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--mode", choices=["headers", "handshake"], default="headers")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the attack lasts")
    parser.add_argument(
        "--unbounded", action="store_true", help="also run against limits out of reach"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--attack-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack_child:
        result = asyncio.run(
            attack_child(args.attack_child, args.mode, args.connections, args.hold)
        )
        print(json.dumps(result), flush=True)
        return
    results = []
    for limits in ([UNBOUNDED] if args.unbounded else []) + [None]:
        result = asyncio.run(run(args, limits))
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
    os._exit(0)  # do not wait on connections the interpreter still tracks
