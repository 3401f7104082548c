"""Kubernetes pod discovery against an in-process fake API server speaking the real wire format:
initial LIST, WATCH events, bookmarks, 410 Gone, dropped connections, failing requests."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapter.discovery import (
    CombinedTargets,
    KubernetesDiscoveryConfig,
    PodDiscovery,
    Skip,
    discovery_from_config,
    pod_target,
    workload_name,
)
from adapter.kube.client import KubernetesClientError
from adapter.targets import PodRef, StaticTargets, Target
from loadtest.harness.kube_api import TOKEN, FakePodAPI, make_pod
from tests.support.helpers import async_wait_until

DEADLINE = 5.0
TRITON_GROUP = {"namespace": "prod", "deployment": "triton"}


def settings(**overrides: Any) -> KubernetesDiscoveryConfig:
    base: dict[str, Any] = {
        "namespaces": ["prod"],
        "label_selector": "app=triton",
        "backoff_initial_seconds": 0.01,
        "backoff_max_seconds": 0.05,
    }
    return KubernetesDiscoveryConfig.model_validate({**base, **overrides})


def target(ip: str, labels: dict[str, str] | None = None, port: int = 8002) -> Target:
    return Target.create(f"http://{ip}:{port}/metrics", "triton", labels or TRITON_GROUP)


def urls(targets: Iterable[Target]) -> set[str]:
    return {t.url for t in targets}


class Collector:
    """Iterates a source's watch in a task and keeps every yielded set."""

    def __init__(self, discovery: PodDiscovery | CombinedTargets) -> None:
        # ``sets`` drop each target's pod (name and labels), so the tests compare what the
        # pipeline groups on; ``with_pods`` keeps them as yielded.
        self.sets: list[frozenset[Target]] = []
        self.with_pods: list[frozenset[Target]] = []
        self._task = asyncio.create_task(self._run(discovery.watch()))

    async def _run(self, sets: AsyncIterator[frozenset[Target]]) -> None:
        async for targets in sets:
            self.with_pods.append(targets)
            self.sets.append(frozenset(replace(t, pod=None) for t in targets))

    @property
    def latest(self) -> frozenset[Target] | None:
        return self.sets[-1] if self.sets else None

    async def until(
        self, predicate: Callable[[frozenset[Target]], bool], what: str
    ) -> frozenset[Target]:
        def check() -> bool:
            if self._task.done():
                self._task.result()  # surface a crash instead of timing out
            latest = self.latest
            return latest is not None and predicate(latest)

        await async_wait_until(check, DEADLINE, 0.005, what)
        assert self.latest is not None
        return self.latest

    async def until_urls(self, expected: set[str]) -> frozenset[Target]:
        return await self.until(
            lambda s: urls(s) == expected, f"targets {sorted(expected)} (last {self.sets[-1:]})"
        )

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def api() -> AsyncIterator[FakePodAPI]:
    fake = FakePodAPI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def watching(
    api: FakePodAPI, tmp_path: Path
) -> AsyncIterator[Callable[[KubernetesDiscoveryConfig], Any]]:
    """``await watching(settings, **options)`` -> a Collector over a PodDiscovery on the fake
    (generated kubeconfig, seeded jitter); stopped and closed at teardown."""
    kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
    started: list[tuple[Collector, PodDiscovery]] = []

    async def start(config: KubernetesDiscoveryConfig, **options: Any) -> Collector:
        discovery = await discovery_from_config(config, kubeconfig, rng=random.Random(7), **options)
        collector = Collector(discovery)
        started.append((collector, discovery))
        return collector

    try:
        yield start
    finally:
        for collector, discovery in started:
            await collector.stop()
            await discovery.close()


# --- LIST -------------------------------------------------------------------------------------


async def test_initial_list_yields_ready_matching_pods_with_one_group(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("triton-7d9f8b6c5d-aaaaa", ip="10.0.0.1"))
    api.put(make_pod("triton-7d9f8b6c5d-bbbbb", ip="10.0.0.2"))
    api.put(make_pod("other-5f6c7d8b9c-ccccc", ip="10.0.0.3", labels={"app": "other"}))
    api.put(make_pod("triton-7d9f8b6c5d-ddddd", ip=None, phase="Pending", ready=False))
    api.put(make_pod("triton-7d9f8b6c5d-eeeee", ip="10.0.0.5", ready=False))
    api.put(make_pod("triton-7d9f8b6c5d-fffff", ip="10.0.0.6", deleting=True))
    api.put(make_pod("triton-7d9f8b6c5d-ggggg", ip="10.0.0.7", namespace="staging"))
    list_version = str(api.version)

    collector = await watching(settings())
    first = await collector.until(bool, "a non-empty target set")

    assert first == {target("10.0.0.1"), target("10.0.0.2")}
    assert len({t.group for t in first}) == 1, "pods of one Deployment must form one group"
    (listed,) = api.lists()
    assert listed.path == "/api/v1/namespaces/prod/pods"
    assert listed.query["labelSelector"] == "app=triton"
    await async_wait_until(api.watches, DEADLINE, 0.005, "a WATCH request")
    watch = api.watches()[0]
    assert watch.path == "/api/v1/namespaces/prod/pods"
    assert watch.query["labelSelector"] == "app=triton"
    assert watch.query["resourceVersion"] == list_version
    assert watch.query["allowWatchBookmarks"] in {"true", "True"}
    assert int(watch.query["timeoutSeconds"]) >= 300
    assert api.credentials[0] == f"Bearer {TOKEN}"


async def test_empty_namespace_list_watches_all_namespaces(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("a", ip="10.0.0.1", namespace="prod"))
    api.put(make_pod("b", ip="10.0.1.1", namespace="staging"))
    collector = await watching(settings(namespaces=[]))
    found = await collector.until(lambda s: len(s) == 2, "targets in both namespaces")
    assert {t.namespace for t in found} == {"prod", "staging"}
    assert [r.path for r in api.lists()] == ["/api/v1/pods"]


async def test_several_namespaces_are_listed_and_watched_each(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("a", ip="10.0.0.1", namespace="prod"))
    api.put(make_pod("b", ip="10.0.1.1", namespace="staging"))
    api.put(make_pod("c", ip="10.0.2.1", namespace="dev"))
    collector = await watching(settings(namespaces=["prod", "staging"]))
    await collector.until_urls({target("10.0.0.1").url, target("10.0.1.1").url})
    assert sorted(r.path for r in api.lists()) == [
        "/api/v1/namespaces/prod/pods",
        "/api/v1/namespaces/staging/pods",
    ]
    api.put(make_pod("d", ip="10.0.1.2", namespace="staging"))
    await collector.until_urls({target(ip).url for ip in ("10.0.0.1", "10.0.1.1", "10.0.1.2")})


async def test_list_follows_continue_pages(api: FakePodAPI, tmp_path: Path) -> None:
    for i in range(5):
        api.put(make_pod(f"p{i}", ip=f"10.0.0.{i + 1}"))
    kubeconfig = str(api.write_kubeconfig(tmp_path / "kubeconfig"))
    discovery = await discovery_from_config(settings(), kubeconfig, page_size=2)
    collector = Collector(discovery)
    try:
        await collector.until(lambda s: len(s) == 5, "all five pods")
        assert len(collector.sets) == 1, "pages must not be yielded one by one"
        pages = api.lists()
        assert [r.query.get("limit") for r in pages] == ["2", "2", "2"]
        assert [bool(r.query.get("continue")) for r in pages] == [False, True, True]
    finally:
        await collector.stop()
        await discovery.close()


# --- WATCH events -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "present_before", "present_after"),
    [
        ({"ready": False}, {"ready": True}, False, True),  # became Ready
        ({"ready": True}, {"ready": False}, True, False),  # readiness probe failing
        ({}, {"deleting": True}, True, False),  # terminating: stop before it dies
        ({}, {"phase": "Failed", "ready": False}, True, False),
        ({"ip": None, "ready": False, "phase": "Pending"}, {}, False, True),  # started
        ({}, {"labels": {"app": "not-triton"}}, True, False),  # left the selector: DELETED
        ({}, {"ip": "10.0.0.99"}, True, True),  # same pod name, new IP: the new URL only
    ],
)
async def test_pod_changes_update_the_set(
    api: FakePodAPI,
    watching: Callable[..., Any],
    before: dict[str, Any],
    after: dict[str, Any],
    present_before: bool,
    present_after: bool,
) -> None:
    steady = target("10.0.0.1").url
    api.put(make_pod("steady", ip="10.0.0.1"))
    api.put(make_pod("changing", **{"ip": "10.0.0.2", **before}))
    collector = await watching(settings())
    await collector.until_urls({steady} | ({target("10.0.0.2").url} if present_before else set()))
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")

    api.put(make_pod("changing", **{"ip": "10.0.0.2", **after}))
    new_url = target(after.get("ip", "10.0.0.2")).url
    await collector.until_urls({steady} | ({new_url} if present_after else set()))
    assert len(api.lists()) == 1, "a watch event must not cause a relist"


async def test_deleted_pod_leaves_and_a_new_one_joins_the_group(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("triton-7d9f8b6c5d-aaaaa", ip="10.0.0.1"))
    collector = await watching(settings())
    await collector.until_urls({target("10.0.0.1").url})
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")
    api.put(make_pod("triton-7d9f8b6c5d-bbbbb", ip="10.0.0.2"))
    both = await collector.until_urls({target("10.0.0.1").url, target("10.0.0.2").url})
    assert len({t.group for t in both}) == 1
    api.delete("prod", "triton-7d9f8b6c5d-aaaaa")
    await collector.until_urls({target("10.0.0.2").url})


async def test_unrelated_changes_do_not_yield(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("a", ip="10.0.0.1"))
    api.put(make_pod("b", ip="10.0.0.2", ready=False))
    collector = await watching(settings())
    await collector.until_urls({target("10.0.0.1").url})
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")
    api.put(make_pod("b", ip="10.0.0.2", ready=False, labels={"note": "still starting"}))
    api.put(make_pod("c", ip="10.0.0.3"))  # a real change after it, as a marker
    await collector.until_urls({target("10.0.0.1").url, target("10.0.0.3").url})
    assert [len(s) for s in collector.sets] == [1, 2]


async def test_a_pod_label_change_yields_the_same_group_with_the_new_labels(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    """labelSelector over pods (custom metrics) needs a pod's current labels; the group (what
    the pipeline aggregates on) does not change, since the label is not copied."""
    api.put(make_pod("a", ip="10.0.0.1"))
    collector = await watching(settings())
    await collector.until_urls({target("10.0.0.1").url})
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")
    api.put(make_pod("a", ip="10.0.0.1", labels={"restarts": "1"}))
    await async_wait_until(lambda: len(collector.sets) == 2, DEADLINE, 0.005, "a second set")
    assert collector.sets[0] == collector.sets[1]
    (relabelled,) = collector.with_pods[1]
    assert relabelled.pod is not None and dict(relabelled.pod.labels)["restarts"] == "1"


async def test_bookmark_moves_the_resource_version_without_a_relist(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("a", ip="10.0.0.1"))
    collector = await watching(settings())
    await collector.until_urls({target("10.0.0.1").url})
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")
    bookmark_version = api.bookmark()
    api.end_watches()  # as when timeoutSeconds expires: resume from the bookmark, no relist
    await async_wait_until(lambda: len(api.watches()) >= 2, DEADLINE, 0.005, "a second WATCH")
    assert api.watches()[1].query["resourceVersion"] == str(bookmark_version)
    assert len(api.lists()) == 1
    api.put(make_pod("b", ip="10.0.0.2"))
    await collector.until_urls({target("10.0.0.1").url, target("10.0.0.2").url})


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gone_as_http_status", [False, True], ids=["error-event", "http-410"])
async def test_gone_relists_without_missing_or_duplicate_targets(
    api: FakePodAPI, watching: Callable[..., Any], gone_as_http_status: bool
) -> None:
    api.gone_as_http_status = gone_as_http_status
    steady, leaving, joining = (
        make_pod("steady", ip="10.0.0.1"),
        make_pod("leaving", ip="10.0.0.2"),
        make_pod("joining", ip="10.0.0.3"),
    )
    api.put(steady)
    api.put(leaving)
    # min_watch_seconds=0: a watch ended before any event is a normal end here, so the
    # re-WATCH from the old resourceVersion meets the 410. A 410 is routine: the relist must
    # come at once, not after the (here 30 s) error back-off.
    slow_backoff = settings(backoff_initial_seconds=30, backoff_max_seconds=60)
    collector = await watching(slow_backoff, min_watch_seconds=0)
    await collector.until_urls({target("10.0.0.1").url, target("10.0.0.2").url})
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")

    # changes the client can only learn from a fresh LIST: the history is compacted
    api.replace_silently([steady, joining])
    if gone_as_http_status:
        api.compact()
        api.end_watches()  # the re-WATCH from the old resourceVersion gets HTTP 410
    else:
        api.expire()  # the open watch gets an ERROR event with code 410

    final = await collector.until_urls({target("10.0.0.1").url, target("10.0.0.3").url})
    assert len(final) == 2
    assert len(api.lists()) == 2
    assert all(target("10.0.0.1") in s for s in collector.sets), "steady pod must never vanish"
    await async_wait_until(
        lambda: len(api.watches()) >= 2 + gone_as_http_status, DEADLINE, 0.005, "a new WATCH"
    )
    resumed_from = int(api.watches()[-1].query["resourceVersion"])
    assert resumed_from >= api.compacted_below, "must watch from the fresh LIST's version"


async def test_dropped_connection_and_failing_lists_keep_the_last_set(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("a", ip="10.0.0.1"))
    api.put(make_pod("b", ip="10.0.0.2"))
    collector = await watching(settings())
    before = await collector.until_urls({target("10.0.0.1").url, target("10.0.0.2").url})
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")

    api.fail_lists = 3
    api.drop_watches()
    await async_wait_until(lambda: api.fail_lists == 0, DEADLINE, 0.005, "three failed LISTs")
    assert collector.sets == [before], "errors must not change or empty the set"

    # the pods changed during the outage; the successful relist shows it
    api.delete("prod", "b")
    await collector.until_urls({target("10.0.0.1").url})
    assert len(api.lists()) == 5  # 1 initial + 3 failed + 1 recovered
    assert all(s for s in collector.sets)


async def test_unreachable_api_yields_nothing_until_it_answers(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("a", ip="10.0.0.1"))
    api.fail_lists = 2
    collector = await watching(settings())
    await collector.until_urls({target("10.0.0.1").url})
    assert len(collector.sets) == 1, "no (empty) set may be yielded before the first LIST"
    assert len(api.lists()) == 3


async def test_watches_that_end_at_once_back_off_and_relist(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("a", ip="10.0.0.1"))
    api.end_watches_at_once = True
    collector = await watching(settings())
    await collector.until_urls({target("10.0.0.1").url})
    await async_wait_until(lambda: len(api.lists()) >= 3, DEADLINE, 0.005, "relists")
    # a WATCH that ends with no event is an error: one relist per watch, not a spin of WATCHes
    assert len(api.watches()) <= len(api.lists())
    assert collector.sets == [frozenset({target("10.0.0.1")})]


async def test_forbidden_list_names_the_fix(
    api: FakePodAPI, watching: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    api.fail_lists = 2
    api.fail_with = (403, "Forbidden", 'pods is forbidden: User "x" cannot list pods')
    collector = await watching(settings(namespaces=["prod"]))
    # allowed again and no pods: a real (empty) set, unlike the errors before it
    assert await collector.until(lambda s: s == frozenset(), "the empty set") == frozenset()
    errors = [str(getattr(r, "error", "")) for r in caplog.records]
    assert any(
        "LIST pods in namespace prod: HTTP 403: pods is forbidden" in e
        and "list and watch on pods" in e
        for e in errors
    ), errors
    assert len(collector.sets) == 1


async def test_backoff_grows_while_watches_fail_and_resets_on_an_event(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    """LIST allowed but WATCH forbidden: each relist must not reset the back-off."""
    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    api.put(make_pod("a", ip="10.0.0.1"))
    api.fail_watches = 6
    api.fail_with = (403, "Forbidden", 'pods is forbidden: cannot watch resource "pods"')
    config = settings(backoff_initial_seconds=1, backoff_max_seconds=8)
    collector = await watching(config, sleep=record)
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "a watch once allowed")
    ceilings = [1, 2, 4, 8, 8, 8]
    assert len(delays) == len(ceilings)
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling  # "equal jitter"
    assert len(set(delays)) == len(delays), "jittered, not fixed"

    api.put(make_pod("b", ip="10.0.0.2"))  # an event: the watch works again
    await collector.until_urls({target("10.0.0.1").url, target("10.0.0.2").url})
    api.fail_watches = 1
    api.drop_watches()
    await async_wait_until(lambda: len(delays) == 8, DEADLINE, 0.005, "two more back-offs")
    # the drop, then the forbidden WATCH: the sequence starts over at 1 s
    assert 0.5 <= delays[6] <= 1 and 1 <= delays[7] <= 2, delays
    assert collector.sets[0] == {target("10.0.0.1")}


async def test_misconfigured_port_is_warned_once_per_pod(
    api: FakePodAPI, watching: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    api.put(make_pod("a", ip="10.0.0.1", ports=[("triton-metrics", 8002)]))
    api.put(make_pod("b", ip="10.0.0.2", ports=[("http", 8000)]))  # no such port name
    collector = await watching(settings(port="triton-metrics"))
    await collector.until_urls({target("10.0.0.1").url})
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")
    api.put(make_pod("b", ip="10.0.0.2", ports=[("http", 8000)], labels={"x": "1"}))
    api.put(make_pod("c", ip="10.0.0.3", ports=[("triton-metrics", 8002)]))  # a marker
    await collector.until_urls({target("10.0.0.1").url, target("10.0.0.3").url})
    skipped = [r for r in caplog.records if r.getMessage() == "pod skipped"]
    assert [(getattr(r, "pod", ""), getattr(r, "reason", "")) for r in skipped] == [
        ("prod/b", "no container port named 'triton-metrics'")
    ]


# --- one pod -> one target (table tests) ---------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "deployment_label", "expected"),
    [
        (make_pod("triton-7d9f8b6c5d-x"), None, "triton"),
        (
            make_pod("x", owner=("ReplicaSet", "llm-serve-5b8c9d"), template_hash=None),
            None,
            "llm-serve",
        ),  # no hash label: a hash-alphabet suffix is still stripped
        (make_pod("x", owner=("ReplicaSet", "manual-rs"), template_hash=None), None, "manual-rs"),
        (make_pod("x", owner=("StatefulSet", "triton-sts")), None, "triton-sts"),
        (make_pod("solo", owner=None), None, "solo"),
        (
            make_pod("x", labels={"app.kubernetes.io/instance": "llm"}),
            "app.kubernetes.io/instance",
            "llm",
        ),
        (make_pod("x"), "app.kubernetes.io/instance", "triton"),  # label absent: the owner
    ],
)
def test_workload_name(pod: dict[str, Any], deployment_label: str | None, expected: str) -> None:
    assert workload_name(pod, deployment_label) == expected


@pytest.mark.parametrize(
    ("pod", "overrides", "expected"),
    [
        (make_pod("x", ip=None), {}, Skip("no pod IP")),
        (make_pod("x", ready=False), {}, Skip("not Ready")),
        (make_pod("x", phase="Succeeded"), {}, Skip("phase Succeeded")),
        (make_pod("x", deleting=True), {}, Skip("being deleted")),
        (make_pod("x", ip="10.1.2.3"), {"port": "metrics"}, "http://10.1.2.3:8002/metrics"),
        (
            make_pod("x", ip="10.1.2.3", ports=[("prom", 9400)]),
            {"port": "prom", "kind": "dcgm"},
            "http://10.1.2.3:9400/metrics",
        ),
        (make_pod("x"), {"port": "nope"}, Skip("no container port named 'nope'", True)),
        (make_pod("x", ip="fd00::7"), {}, "http://[fd00::7]:8002/metrics"),
        (
            make_pod("x", ip="10.1.2.3"),
            {"path": "/stats", "port": 9000},
            "http://10.1.2.3:9000/stats",
        ),
    ],
)
def test_pod_target(pod: dict[str, Any], overrides: dict[str, Any], expected: object) -> None:
    result = pod_target(pod, settings(**overrides))
    if isinstance(expected, Skip):
        assert result == expected
    else:
        assert isinstance(result, Target) and result.url == expected
        assert result.kind == overrides.get("kind", "triton")


def test_pod_name_and_labels_ride_outside_the_group() -> None:
    pod = make_pod("triton-7d9f8b6c5d-abcde", labels={"tier": "gpu"})
    result = pod_target(pod, settings())
    assert isinstance(result, Target)
    assert result.pod == PodRef(
        "triton-7d9f8b6c5d-abcde",
        (("app", "triton"), ("pod-template-hash", "7d9f8b6c5d"), ("tier", "gpu")),
        "triton",
    )
    assert result.pod_key == ("prod", "triton-7d9f8b6c5d-abcde")
    assert "pod" not in dict(result.group)


@pytest.mark.parametrize(
    ("port", "container"),
    [("metrics", "triton"), (8002, "triton"), (9000, None)],
    ids=["named", "numbered", "undeclared-number"],
)
def test_the_scraped_container_is_known_when_a_container_declares_the_port(
    port: int | str, container: str | None
) -> None:
    """The container serving the metrics port picks that container's GPUs from dcgm-exporter."""
    result = pod_target(make_pod("triton-7d9f8b6c5d-abcde"), settings(port=port))
    assert isinstance(result, Target) and result.pod is not None
    assert result.pod.container == container
    assert result.url.endswith(f":{port if isinstance(port, int) else 8002}/metrics")
    other = pod_target(make_pod("triton-7d9f8b6c5d-fghij", ip="10.0.0.9"), settings())
    assert isinstance(other, Target) and other.group == result.group


async def test_a_pod_replaced_on_the_same_ip_is_a_new_target(
    api: FakePodAPI, watching: Callable[..., Any]
) -> None:
    api.put(make_pod("triton-7d9f8b6c5d-aaaaa", ip="10.0.0.1"))
    collector = await watching(settings())
    await collector.until(bool, "the first pod")
    await async_wait_until(lambda: api.open_watches, DEADLINE, 0.005, "an open watch")
    api.delete("prod", "triton-7d9f8b6c5d-aaaaa")
    api.put(make_pod("triton-7d9f8b6c5d-zzzzz", ip="10.0.0.1"))

    def names() -> set[str]:
        latest = collector.with_pods[-1] if collector.with_pods else frozenset()
        return {t.pod.name for t in latest if t.pod is not None}

    await async_wait_until(
        lambda: names() == {"triton-7d9f8b6c5d-zzzzz"}, DEADLINE, 0.005, "the new pod's name"
    )


def test_copied_labels_and_no_pod_name() -> None:
    pod = make_pod(
        "triton-7d9f8b6c5d-abcde",
        labels={"app.kubernetes.io/name": "llm", "team": "search", "tier": "gpu"},
    )
    result = pod_target(
        pod, settings(copy_labels={"app.kubernetes.io/name": "model_family", "team": "team"})
    )
    assert isinstance(result, Target)
    assert dict(result.labels) == {
        "namespace": "prod",
        "deployment": "triton",
        "model_family": "llm",
        "team": "search",
    }
    listed = pod_target(pod, settings(copy_labels=["tier"]))
    assert isinstance(listed, Target) and dict(listed.labels)["tier"] == "gpu"


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("namespaces", ["Prod"], "not a namespace name"),
        ("namespaces", ["a", "a"], "listed twice"),
        ("label_selector", "app in (", "not a Kubernetes label selector"),
        ("port", 0, "not in 1..65535"),
        ("port", "8002", "write numbers without quotes"),
        ("port", "Metrics", "neither a port number nor a container port name"),
        ("path", "metrics", "absolute URL path"),
        ("kind", "prometheus", "'triton' or 'dcgm'"),
        ("copy_labels", ["pod-template-hash"], "split a Deployment"),
        ("copy_labels", {"app": "namespace"}, "set by discovery itself"),
        ("copy_labels", {"app": "deployment"}, "use deployment_label"),
        ("copy_labels", {"bad key!": "x"}, "not a Kubernetes label key"),
        ("copy_labels", {"a": "x", "b": "x"}, "same target label"),
        ("deployment_label", "pod-template-hash", "differs between pods"),
        ("backoff_initial_seconds", 100, "less than or equal to 60"),
        ("scrape_interval", 1, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        KubernetesDiscoveryConfig.model_validate({field: value})
    assert message in str(info.value)
    assert field in str(info.value)


def test_config_defaults_and_list_form() -> None:
    config = KubernetesDiscoveryConfig.model_validate({"copy_labels": ["app.kubernetes.io/name"]})
    assert (config.namespaces, config.label_selector, config.port, config.path) == (
        (),
        "",
        8002,
        "/metrics",
    )
    assert config.copy_labels == {"app.kubernetes.io/name": "app.kubernetes.io/name"}
    with pytest.raises(ValidationError):
        config.port = 9  # type: ignore[misc]  # frozen


async def test_unusable_kubeconfig_names_discovery(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    with pytest.raises(KubernetesClientError, match=r"discovery\.kubernetes: .*no-such-kubeconfig"):
        await discovery_from_config(KubernetesDiscoveryConfig(), str(missing))


# --- several sources --------------------------------------------------------------------------


class _Queue:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[frozenset[Target] | Exception] = asyncio.Queue()

    async def watch(self) -> AsyncIterator[frozenset[Target]]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item


async def test_combined_targets_union_and_failure() -> None:
    static = StaticTargets([target("10.9.9.9")])
    dynamic = _Queue()
    collector = Collector(CombinedTargets([static, dynamic]))
    try:
        await collector.until_urls({target("10.9.9.9").url})
        dynamic.queue.put_nowait(frozenset({target("10.0.0.1")}))
        await collector.until_urls({target("10.9.9.9").url, target("10.0.0.1").url})
        dynamic.queue.put_nowait(frozenset({target("10.0.0.1")}))  # unchanged: no yield
        dynamic.queue.put_nowait(frozenset())
        await collector.until_urls({target("10.9.9.9").url})
        assert len(collector.sets) == 3
        dynamic.queue.put_nowait(RuntimeError("source broke"))
        with pytest.raises(RuntimeError, match="source broke"):
            await collector.until(lambda s: False, "the failure")
    finally:
        await collector.stop()
