"""``server.api_process``: the metrics APIs answered by a child process fed every snapshot.

The child serves exactly what the main process published (external and custom metrics,
per-pod series and pods' labels included), its probes follow the main process's health, the
main process serves its full app on ``main_listen``, and either process ending ends the
other: as a user runs it, ``tritonscale serve --api-process``."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter.config import Config, ConfigError, load_config
from adapter.kube.quantity import parse_quantity
from adapter.listener import StartupError
from adapter.service import running_service
from adapter.snapshot import Snapshot
from loadtest.harness.fake_triton import FakeTritonProcess, start_fake_targets
from loadtest.harness.triton_server import free_port
from tests.support.helpers import async_wait_until, wait_until
from tests.support.paths import REPO_ROOT

DEADLINE = 120.0
EXTERNAL = "/apis/external.metrics.k8s.io/v1beta1/namespaces/prod"
CUSTOM = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/prod"
PODS = 4


def split_config(urls: list[str], **overrides: Any) -> Config:
    targets = [
        {
            "url": url,
            "labels": {"namespace": "prod", "deployment": "llm"},
            "pod": f"llm-{index}",
            "pod_labels": {"app": "llm", "index": str(index)},
        }
        for index, url in enumerate(urls)
    ]
    return load_config(
        None,
        {
            "listen": "127.0.0.1:0",
            "server": {"api_process": True, "main_listen": "127.0.0.1:0"},
            "targets": targets,
            "scrape": {"interval_seconds": 0.5},
            "predictive": {"readiness_max_wait_seconds": 0},
            **overrides,
        },
    )


async def get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    async with session.get(f"https://127.0.0.1:{port}{path}", ssl=False) as response:
        return response.status, await response.text()


def points_by_labels(snapshot: Snapshot, metric: str) -> dict[tuple[tuple[str, str], ...], Any]:
    return {tuple(sorted(p.labels.items())): p for p in snapshot.points(metric)}


async def test_the_api_process_serves_exactly_what_was_published() -> None:
    runner, ports, _ = await start_fake_targets(PODS, rate_rps=20.0, pending=3.0)
    published: list[Snapshot] = []
    try:
        async with (
            aiohttp.ClientSession() as session,
            running_service(split_config([f"http://127.0.0.1:{p}/metrics" for p in ports])) as svc,
        ):
            assert svc.api_process is not None and svc.port != svc.main_port
            svc.pipeline.subscribe(published.append)

            async def answered() -> dict[str, Any] | None:
                status, text = await get(session, svc.port, f"{EXTERNAL}/triton_queue_depth")
                return json.loads(text) if status == 200 else None

            body = await async_wait_until(answered, DEADLINE, message="the child answers")
            # every item is a value of a snapshot the main process published
            for item in body["items"]:
                key = tuple(sorted(item["metricLabels"].items()))
                value = float(parse_quantity(item["value"]))
                assert any(
                    key in (found := points_by_labels(s, "triton_queue_depth"))
                    and found[key].value == value
                    for s in published
                ), (item, len(published))
                assert value == 3.0 * PODS  # the fakes' truth: 3 waiting per model per pod

            # per-pod series and the pods' own labels came through the feed too
            status, text = await get(
                session, svc.port, f"{CUSTOM}/pods/*/triton_queue_depth?labelSelector=app%3Dllm"
            )
            assert status == 200, text
            pods = {item["describedObject"]["name"] for item in json.loads(text)["items"]}
            assert pods == {f"llm-{i}" for i in range(PODS)}
            status, text = await get(
                session, svc.port, f"{CUSTOM}/pods/*/triton_queue_depth?labelSelector=index%3D2"
            )
            assert status == 200 and '"name":"llm-2"' in text.replace(" ", "")

            # probes follow the main process; the main process's full app is on main_listen
            await async_wait_until(
                lambda: _ok(session, svc.port, "/readyz"), DEADLINE, message="child ready"
            )
            assert (await get(session, svc.port, "/livez"))[0] == 200
            status, metrics = await get(session, svc.main_port, "/metrics")
            assert status == 200
            assert _sample(metrics, "tritonscale_api_process_snapshots_sent_total") >= 1
            assert (await get(session, svc.main_port, "/ui"))[0] == 200
            # one scrape of the API port sees both processes, each sample labelled
            status, merged = await get(session, svc.port, "/metrics")
            assert status == 200
            by_process = _processes_by_family(merged)
            assert by_process["tritonscale_api_process_snapshots_sent"] == {"main"}
            assert by_process["tritonscale_scrape_duration_seconds"] == {"main"}
            assert by_process["tritonscale_signal_value"] == {"main"}  # exported once
            assert "api" in by_process["tritonscale_api_requests"]
            assert by_process["process_resident_memory_bytes"] == {"api", "main"}

            # the child exiting is seen at once, so `serve` can stop and the pod restart
            svc.api_process.process.kill()
            code = await async_wait_until(
                lambda: svc.api_process.exited.done() and svc.api_process.exited.result(),
                DEADLINE,
                message="the main process sees the API process exit",
            )
            assert code == -signal.SIGKILL
    finally:
        await runner.cleanup()


async def _ok(session: aiohttp.ClientSession, port: int, path: str) -> bool:
    return (await get(session, port, path))[0] == 200


def _processes_by_family(text: str) -> dict[str, set[str]]:
    """Which processes' samples each family of a merged /metrics holds (parsing it whole:
    the merge must stay a valid exposition)."""
    return {
        family.name: {sample.labels["process"] for sample in family.samples}
        for family in text_string_to_metric_families(text)
    }


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_a_port_the_api_process_cannot_bind_stops_the_start_with_its_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = split_config(["http://127.0.0.1:1/metrics"], listen=f"127.0.0.1:{port}")
        with pytest.raises(StartupError, match=f"API process: cannot listen on 127.0.0.1:{port}"):
            async with running_service(config):
                pass


def test_main_listen_must_differ_from_listen() -> None:
    with pytest.raises(ConfigError, match=r"server\.main_listen"):
        load_config(
            None,
            {"listen": "127.0.0.1:6443", "server": {"api_process": True, "main_listen": ":6443"}},
        )
    config = load_config(None, {"listen": "127.0.0.1:6443", "server": {"main_listen": ":6443"}})
    assert not config.server.api_process  # unused without api_process: no clash


# --- as a user runs it: `tritonscale serve --api-process` ---------------------------------


@pytest.fixture(scope="module")
def fake_target() -> Iterator[str]:
    fake = FakeTritonProcess(1)
    fake.start()
    try:
        yield fake.urls[0]
    finally:
        fake.stop()


class Serve:
    """``python -m adapter serve --api-process``; its log, and its API process's pid."""

    def __init__(self, target: str) -> None:
        self.port, self.main_port = free_port(), free_port()
        command = [sys.executable, "-m", "adapter", "serve", "--api-process"]
        command += ["--target", f"{target},namespace=prod,deployment=llm"]
        command += ["--listen", f"127.0.0.1:{self.port}"]
        command += ["--main-listen", f"127.0.0.1:{self.main_port}", "--scrape-interval", "0.5"]
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.child = self._child_pid()

    def _child_pid(self) -> int:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if '"API process serving"' in line:
                return int(json.loads(line)["pid"])
        raise AssertionError(f"serve exited ({self.process.wait()}) before its API process served")

    def answers(self, path: str) -> int:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.port}{path}", context=context, timeout=10
            ) as response:
                return int(response.status)
        except urllib.error.HTTPError as err:
            return err.code

    def rest_of_log(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def test_sigterm_stops_both_processes_cleanly(fake_target: str) -> None:
    serve = Serve(fake_target)
    assert wait_until(lambda: serve.answers("/livez") == 200, DEADLINE, message="serving")
    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(DEADLINE) == 0
    assert "API process shutting down" in serve.rest_of_log()
    wait_until(lambda: not alive(serve.child), DEADLINE, message="the API process gone")


def test_the_api_process_dying_stops_serve_with_an_error(fake_target: str) -> None:
    serve = Serve(fake_target)
    os.kill(serve.child, signal.SIGKILL)
    assert serve.process.wait(DEADLINE) == 2
    assert "the API process exited (code -9)" in serve.rest_of_log()


def test_the_main_process_dying_ends_the_api_process(fake_target: str) -> None:
    serve = Serve(fake_target)
    assert wait_until(lambda: serve.answers("/livez") == 200, DEADLINE, message="serving")
    serve.process.kill()
    serve.process.wait(DEADLINE)
    wait_until(lambda: not alive(serve.child), DEADLINE, message="the API process gone")
    assert "the main process is gone" in serve.rest_of_log()
