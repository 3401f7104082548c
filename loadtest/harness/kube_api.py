"""A small local Kubernetes API for pod discovery: LIST and WATCH of pods in the real wire
format (PodList with ``metadata.resourceVersion``, ``continue`` pagination, newline-delimited
watch events including BOOKMARK and ERROR 410), label selectors filtered as the apiserver does,
and knobs to expire the history, drop or end watches and fail requests. Every request is
recorded (path and query) so tests assert what the client sent.

One implementation for two users: the discovery tests drive it by hand, and the closed-loop
demo's replica manager (:mod:`loadtest.harness.replicas`) keeps it current with the Triton
processes it runs, so the adapter finds them through the same list + watch code a cluster
runs (``adapter/discovery.py``)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from adapter.api.status import status_response
from adapter.api.tls import bound_port, start_server
from adapter.kube.selectors import Selector

TOKEN = "discovery-test-token"
PodKey = tuple[str, str]

_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # strconv.ParseBool


def make_pod(
    name: str,
    *,
    namespace: str = "prod",
    ip: str | None = "10.0.0.1",
    ready: bool = True,
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    owner: tuple[str, str] | None = ("ReplicaSet", "triton-7d9f8b6c5d"),
    template_hash: str | None = "7d9f8b6c5d",
    ports: Iterable[tuple[str, int]] = (("http", 8000), ("metrics", 8002)),
    deleting: bool = False,
) -> dict[str, Any]:
    """A ``v1.Pod`` as the apiserver serialises it (only the fields discovery reads, plus a few
    it must ignore)."""
    pod_labels = {"app": "triton", **(labels or {})}
    if template_hash is not None:
        pod_labels["pod-template-hash"] = template_hash
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "labels": pod_labels,
        "creationTimestamp": "2024-05-01T10:00:00Z",
    }
    if owner is not None:
        kind, owner_name = owner
        metadata["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": owner_name,
                "uid": f"uid-{owner_name}",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    if deleting:
        metadata["deletionTimestamp"] = "2024-05-01T11:00:00Z"
        metadata["deletionGracePeriodSeconds"] = 30
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
            {"type": "PodScheduled", "status": "True"},
        ],
        "hostIP": "192.168.1.10",
    }
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "metadata": metadata,
        "spec": {
            "nodeName": "gpu-node-1",
            "containers": [
                {
                    "name": "triton",
                    "image": "nvcr.io/nvidia/tritonserver:24.05-py3",
                    "ports": [
                        {"name": port_name, "containerPort": number, "protocol": "TCP"}
                        for port_name, number in ports
                    ],
                }
            ],
        },
        "status": status,
    }


@dataclass
class Recorded:
    path: str
    query: dict[str, str]

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "") in _GO_TRUE


@dataclass
class _Watcher:
    namespace: str | None
    selector: Selector
    bookmarks: bool
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)


@dataclass
class _Change:
    version: int
    old: dict[str, Any] | None
    new: dict[str, Any] | None


@dataclass
class FakePodAPI:
    """The pods part of the kube-apiserver. Mutate with :meth:`put` / :meth:`delete`; every
    open watch that matches receives the event, as does any later watch from an older
    resourceVersion (until :meth:`expire` compacts the history)."""

    gone_as_http_status: bool = False  # a too-old watch: HTTP 410 instead of an ERROR event
    end_watches_at_once: bool = False  # every watch ends cleanly with no event
    fail_lists: int = 0  # the next N LISTs fail with ``fail_with``
    fail_watches: int = 0  # the next N WATCHes fail with ``fail_with``
    fail_with: tuple[int, str, str] = (500, "InternalError", "etcdserver: request timed out")
    requests: list[Recorded] = field(default_factory=list)
    credentials: list[str | None] = field(default_factory=list)
    version: int = 1000
    compacted_below: int = 0
    port: int = 0
    _pods: dict[PodKey, dict[str, Any]] = field(default_factory=dict)
    _history: list[_Change] = field(default_factory=list)
    _watchers: list[_Watcher] = field(default_factory=list)
    _pages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    # -- the test's controls ------------------------------------------------------------
    def put(self, pod: dict[str, Any]) -> int:
        """Create or update ``pod``; returns its new resourceVersion."""
        pod = copy.deepcopy(pod)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.version += 1
        pod["metadata"]["resourceVersion"] = str(self.version)
        old = self._pods.get(key)
        self._pods[key] = pod
        self._record(_Change(self.version, old, pod))
        return self.version

    def delete(self, namespace: str, name: str) -> None:
        old = self._pods.pop((namespace, name))
        self.version += 1
        self._record(_Change(self.version, old, None))

    def replace_silently(self, pods: Iterable[dict[str, Any]]) -> None:
        """Change the pods with no watch event (what happened while history was compacted)."""
        self._pods = {}
        for pod in pods:
            pod = copy.deepcopy(pod)
            self.version += 1
            pod["metadata"]["resourceVersion"] = str(self.version)
            self._pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = pod

    def bookmark(self) -> int:
        """Progress elsewhere (unwatched objects changed); a BOOKMARK to every watch that asked."""
        self.version += 1
        for watcher in self._watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(("event", _bookmark(self.version)))
        return self.version

    def compact(self) -> None:
        """Forget the history: a watch from an older resourceVersion is refused with 410 (as
        an ERROR event, or the HTTP status with ``gone_as_http_status``)."""
        self.compacted_below = self.version
        self._history.clear()

    def expire(self) -> None:
        """:meth:`compact`, and every open watch gets an ERROR 410 event and ends."""
        self.compact()
        for watcher in self._watchers:
            watcher.queue.put_nowait(("event", _expired_event(self.compacted_below)))
            watcher.queue.put_nowait(("end", None))

    def end_watches(self) -> None:
        """End every open watch cleanly (as when timeoutSeconds expires)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(("end", None))

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(("drop", None))

    def stored(self) -> list[dict[str, Any]]:
        """Every pod as stored now (copies), ordered by namespace and name."""
        return [copy.deepcopy(pod) for _key, pod in sorted(self._pods.items())]

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    def lists(self) -> list[Recorded]:
        return [r for r in self.requests if not r.is_watch]

    def watches(self) -> list[Recorded]:
        return [r for r in self.requests if r.is_watch]

    # -- serving --------------------------------------------------------------------------
    def _record(self, change: _Change) -> None:
        self._history.append(change)
        for watcher in self._watchers:
            event = _event_for(watcher, change)
            if event is not None:
                watcher.queue.put_nowait(("event", event))

    async def _pods_handler(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(request.path, dict(request.query)))
        self.credentials.append(request.headers.get("Authorization"))
        namespace = request.match_info.get("namespace")
        selector = Selector.parse(request.query.get("labelSelector", ""))
        if request.query.get("watch", "") in _GO_TRUE:
            return await self._watch(request, namespace, selector)
        return self._list(request, namespace, selector)

    def _list(
        self, request: web.Request, namespace: str | None, selector: Selector
    ) -> web.Response:
        if self.fail_lists > 0:
            self.fail_lists -= 1
            return status_error(*self.fail_with)
        token = request.query.get("continue")
        if token:
            if token not in self._pages:
                return status_error(410, "Expired", "the continue token has expired")
            remaining = self._pages.pop(token)
        else:
            remaining = [
                copy.deepcopy(pod)
                for key, pod in sorted(self._pods.items())
                if _in_scope(pod, namespace, selector)
            ]
        limit = int(request.query.get("limit", "0") or 0)
        items, rest = (remaining[:limit], remaining[limit:]) if limit > 0 else (remaining, [])
        metadata: dict[str, Any] = {"resourceVersion": str(self.version)}
        if rest:
            next_token = f"page-{len(self._pages)}-{self.version}"
            self._pages[next_token] = rest
            metadata["continue"] = next_token
            metadata["remainingItemCount"] = len(rest)
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items}
        )

    async def _watch(
        self, request: web.Request, namespace: str | None, selector: Selector
    ) -> web.StreamResponse:
        if self.fail_watches > 0:
            self.fail_watches -= 1
            return status_error(*self.fail_with)
        since = int(request.query.get("resourceVersion", "0") or 0)
        if since < self.compacted_below and self.gone_as_http_status:
            return status_error(410, "Expired", f"too old resource version: {since}")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if self.end_watches_at_once:
            await response.write_eof()
            return response
        watcher = _Watcher(
            namespace,
            selector,
            request.query.get("allowWatchBookmarks", "") in _GO_TRUE,
        )
        if since < self.compacted_below:
            watcher.queue.put_nowait(("event", _expired_event(self.compacted_below)))
            watcher.queue.put_nowait(("end", None))
        else:
            for change in self._history:
                event = _event_for(watcher, change) if change.version > since else None
                if event is not None:
                    watcher.queue.put_nowait(("event", event))
        self._watchers.append(watcher)
        timeout = float(request.query.get("timeoutSeconds", "3600"))
        try:
            while True:
                try:
                    command, event = await asyncio.wait_for(watcher.queue.get(), timeout)
                except TimeoutError:
                    break
                if command == "end":
                    break
                if command == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away first
        finally:
            self._watchers.remove(watcher)
        return response

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/pods", self._pods_handler)
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods_handler)
        self._runner = await start_server(app, "127.0.0.1:0", None)
        self.port = bound_port(self._runner)
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "adapter", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "adapter"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path


def _in_scope(pod: dict[str, Any] | None, namespace: str | None, selector: Selector) -> bool:
    if pod is None:
        return False
    metadata = pod["metadata"]
    if namespace is not None and metadata["namespace"] != namespace:
        return False
    return selector.matches(metadata.get("labels", {}))


def _event_for(watcher: _Watcher, change: _Change) -> dict[str, Any] | None:
    """What the apiserver sends a filtered watch: a pod leaving the selector is DELETED."""
    was = _in_scope(change.old, watcher.namespace, watcher.selector)
    now = _in_scope(change.new, watcher.namespace, watcher.selector)
    if change.new is None:
        if not was or change.old is None:
            return None
        gone = copy.deepcopy(change.old)
        gone["metadata"]["resourceVersion"] = str(change.version)
        return {"type": "DELETED", "object": gone}
    if was and now:
        return {"type": "MODIFIED", "object": change.new}
    if now:
        return {"type": "ADDED", "object": change.new}
    if was:
        return {"type": "DELETED", "object": change.new}
    return None


def _bookmark(version: int) -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(version)},
        },
    }


def _expired_event(version: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: 1 ({version})",
            "reason": "Expired",
            "code": 410,
        },
    }


def status_error(code: int, reason: str, message: str) -> web.Response:
    """A metav1.Status failure, as the kube-apiserver answers."""
    return status_response(code, reason, message)
