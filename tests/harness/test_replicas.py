"""The replica manager runs real Triton processes as a Deployment's pods."""

from __future__ import annotations

import time

import aiohttp
import pytest

from loadtest.harness.balancer import Balancer
from loadtest.harness.kube_api import FakePodAPI
from loadtest.harness.replicas import ReplicaManager
from loadtest.harness.triton_server import ModelSpec
from tests.support.helpers import async_wait_until

pytestmark = pytest.mark.triton

START_DELAY_S = 4.0


def pod_states(api: FakePodAPI) -> dict[str, tuple[str, bool, bool]]:
    """name -> (phase, Ready, being deleted), as the apiserver lists them."""
    states = {}
    for pod in api.stored():
        name = pod["metadata"]["name"]
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"]
        )
        states[name] = (pod["status"]["phase"], ready, "deletionTimestamp" in pod["metadata"])
    return states


async def infer_through(port: int, count: int) -> int:
    """``count`` HTTP inferences through the balancer, one connection each; successes."""
    body = {"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
    ok = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.post(
                f"http://127.0.0.1:{port}/v2/models/bert/infer",
                json=body,
                headers={"Connection": "close"},
            ) as response:
                ok += response.status == 200
    return ok


async def test_replicas_start_after_the_delay_serve_and_drain() -> None:
    api, balancer = FakePodAPI(), Balancer("round-robin")
    await api.start()
    port = await balancer.start()
    manager = ReplicaManager(
        ModelSpec("bert", 20.0, 4), start_delay_s=START_DELAY_S, balancer=balancer, pods=api
    )
    try:
        asked = time.monotonic()
        manager.scale(1)
        assert manager.existing == 1 and manager.ready == 0
        (state,) = pod_states(api).values()
        assert state[1] is False  # not Ready before it serves
        await manager.wait_ready(1, timeout_s=120)
        assert time.monotonic() - asked >= START_DELAY_S
        assert manager.cold_starts()[0] >= START_DELAY_S
        assert list(pod_states(api).values()) == [("Running", True, False)]

        manager.scale(2)
        assert manager.existing == 2 and manager.ready == 1 and len(balancer.backends) == 1
        await manager.wait_ready(2, timeout_s=120)
        assert len(balancer.backends) == 2
        assert await infer_through(port, 8) == 8
        assert all(balancer.connections[b] == 4 for b in balancer.backends)  # both serve

        newest = manager.replicas[1]
        manager.scale(1)  # the replica ready for the shortest time goes
        assert manager.existing == 1 and newest.state == "draining"
        assert balancer.backends == (manager.replicas[0].backend,)
        assert pod_states(api)[newest.name][2] is True  # deletionTimestamp: discovery drops it
        await async_wait_until(lambda: newest.state == "stopped", timeout=60)
        assert not newest.process.is_running() and newest.name not in pod_states(api)

        manager.scale(2)
        starting = manager.replicas[2]
        manager.scale(1)  # removed while it starts: never Ready, never in the balancer
        await async_wait_until(lambda: starting.state == "stopped", timeout=120)
        assert starting.ready_at is None and not starting.process.is_running()
        assert manager.processes_started == 3
        assert manager.replica_seconds() > 2 * START_DELAY_S
    finally:
        await manager.close()
        await balancer.stop()
        await api.stop()
    assert not any(r.process.is_running() for r in manager.replicas)
    assert all(r.state == "stopped" for r in manager.replicas)
