"""Kubernetes pod discovery behind :class:`~adapter.targets.TargetSource`.

Like Prometheus' ``kubernetes_sd_configs`` (role ``pod``) and prometheus-adapter: LIST the pods
matching a label selector (in each configured namespace, or in all), then WATCH from the list's
``resourceVersion`` with bookmarks, applying ADDED / MODIFIED / DELETED to an in-memory map.
A pod is a target only while the HPA would count it: phase Running, condition Ready=True, a
pod IP, and no ``deletionTimestamp``.

Every target carries ``namespace`` and ``deployment`` (the owner ReplicaSet's name without its
pod-template-hash suffix, the controller's name otherwise, or a configured pod label) plus the
copied pod labels, and never the pod name: the pods of one Deployment have identical labels and
so form one group whose values the pipeline aggregates. The pod's name and its own labels ride
along as :class:`~adapter.targets.PodRef`, outside the labels, for the custom metrics API
(per-pod values and ``labelSelector`` over pods).

Failures never shrink the set: a 410 Gone (an ERROR watch event or the HTTP status) re-LISTs at
once; any other error (connection refused or dropped, 5xx, 403, malformed JSON) is logged and
retried with jittered exponential back-off and a fresh LIST, keeping the last known targets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client

from adapter.config import KubernetesDiscoveryConfig
from adapter.kube.client import api_client, server_for_logs
from adapter.targets import Target, TargetSource

__all__ = [
    "CombinedTargets",
    "DiscoveryError",
    "PodDiscovery",
    "Skip",
    "discovery_from_config",
    "pod_target",
    "workload_name",
]

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
"""Pods per LIST page (client-go's reflector uses 500 too)."""

_POD_TEMPLATE_HASH = re.compile(r"^[bcdf4-9]{6,10}$")
"""A pod-template-hash: ``rand.SafeEncodeString`` of a uint32's decimal digits, which maps the
digits '0'-'9' onto 4-9 and b, c, d, f; usually 9-10 characters."""


# --- one pod -> one target ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a pod is not a target; ``misconfigured`` when the operator should fix something."""

    reason: str
    misconfigured: bool = False


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def workload_name(pod: Mapping[str, Any], deployment_label: str | None = None) -> str:
    """The ``deployment`` label of a pod's targets.

    The ``deployment_label`` pod label when configured and present; else the controlling
    ReplicaSet's name minus ``-<pod-template-hash>`` (the Deployment's name); else the
    controller's name (StatefulSet, DaemonSet, ...); a pod without a controller is its own
    workload and gets its own name.
    """
    metadata = _dict(pod.get("metadata"))
    labels = _dict(metadata.get("labels"))
    if deployment_label is not None and isinstance(labels.get(deployment_label), str):
        return str(labels[deployment_label])
    owners = [_dict(o) for o in _list(metadata.get("ownerReferences"))]
    controller = next((o for o in owners if o.get("controller") is True), None)
    if controller is None or not isinstance(controller.get("name"), str):
        return str(metadata.get("name", ""))
    name = str(controller["name"])
    if controller.get("kind") == "ReplicaSet":
        head, sep, tail = name.rpartition("-")
        template_hash = labels.get("pod-template-hash")
        if sep and head and (tail == template_hash or _POD_TEMPLATE_HASH.match(tail)):
            return head
    return name


def _is_ready(pod: Mapping[str, Any]) -> bool:
    status = _dict(pod.get("status"))
    return any(
        _dict(c).get("type") == "Ready" and _dict(c).get("status") == "True"
        for c in _list(status.get("conditions"))
    )


def _container_port(pod: Mapping[str, Any], port: int | str) -> tuple[int, str | None] | None:
    """(port number, container name) of the container port named or numbered ``port``;
    a number no container declares is still that number, of an unknown container."""
    for container in _list(_dict(pod.get("spec")).get("containers")):
        for entry in _list(_dict(container).get("ports")):
            declared = _dict(entry)
            number = declared.get("containerPort")
            if isinstance(number, int) and port in (declared.get("name"), number):
                name = _dict(container).get("name")
                return number, name if isinstance(name, str) else None
    return (port, None) if isinstance(port, int) else None


def pod_target(pod: Mapping[str, Any], settings: KubernetesDiscoveryConfig) -> Target | Skip:
    """The target of a pod (a ``v1.Pod`` as JSON), or why it is not one."""
    metadata = _dict(pod.get("metadata"))
    status = _dict(pod.get("status"))
    if metadata.get("deletionTimestamp"):
        return Skip("being deleted")
    phase = status.get("phase")
    if phase != "Running":
        return Skip(f"phase {phase}")
    if not _is_ready(pod):
        return Skip("not Ready")
    ip = status.get("podIP")
    if not isinstance(ip, str) or not ip:
        return Skip("no pod IP")
    found = _container_port(pod, settings.port)
    if found is None:
        return Skip(f"no container port named {settings.port!r}", misconfigured=True)
    port, container = found
    pod_labels = _dict(metadata.get("labels"))
    labels = {
        target: str(pod_labels[source])
        for source, target in settings.copy_labels.items()
        if source in pod_labels
    }
    labels["namespace"] = str(metadata.get("namespace", "default"))
    labels["deployment"] = workload_name(pod, settings.deployment_label)
    host = f"[{ip}]" if ":" in ip else ip
    url = f"{settings.scheme}://{host}:{port}{settings.path}"
    return Target.create(
        url=url,
        kind=settings.kind,
        labels=labels,
        pod=str(metadata.get("name", "")) or None,
        pod_labels={str(k): str(v) for k, v in pod_labels.items()},
        container=container,
    )


# --- the watch ------------------------------------------------------------------------------


class DiscoveryError(RuntimeError):
    """A LIST or WATCH failed; the message names the request and the status or error."""


class _Gone(Exception):
    """410 Gone: the resourceVersion is too old (compacted); only a fresh LIST helps."""


PodKey = tuple[str, str]  # (namespace, name)


@dataclass
class _Scope:
    """One LIST+WATCH: a namespace, or every namespace (``None``)."""

    namespace: str | None
    pods: dict[PodKey, Target] = field(default_factory=dict)
    resource_version: str = ""
    synced: bool = False
    failures: int = 0  # errors since the last watch event (sets the back-off)
    gone_streak: int = 0  # 410s since the last watch event
    warned: set[tuple[PodKey, str]] = field(default_factory=set)  # misconfigured pods logged

    @property
    def where(self) -> str:
        return f"namespace {self.namespace}" if self.namespace else "all namespaces"


def _status_message(status: Mapping[str, Any]) -> str:
    return str(status.get("message") or status.get("reason") or "no message")


def _http_error(what: str, code: int, body: bytes) -> Exception:
    try:
        message = _status_message(_dict(json.loads(body)))
    except ValueError:
        message = body.decode(errors="replace").strip()[:200] or "no body"
    if code == 410:
        return _Gone(f"{what}: HTTP 410: {message}")
    hint = ""
    if code in (401, 403):
        hint = (
            " (grant the adapter's service account list and watch on pods: "
            "a ClusterRole, or a Role per namespace)"
        )
    return DiscoveryError(f"{what}: HTTP {code}: {message}{hint}")


class PodDiscovery:
    """The targets of the ready pods matching ``settings``, kept current by a WATCH.

    ``api_client`` is a configured kubernetes-asyncio client; :meth:`close` closes it when
    ``owns_client``. ``rng`` jitters the back-off and ``sleep`` waits it out (tests pass a
    seeded one and a recording one). The back-off resets only when a watch delivers an event,
    so a LIST that works followed by a WATCH that fails (RBAC without ``watch``) still backs off.
    """

    def __init__(
        self,
        settings: KubernetesDiscoveryConfig,
        api_client: k8s_client.ApiClient,
        *,
        owns_client: bool = True,
        rng: random.Random | None = None,
        min_watch_seconds: float = 1.0,
        page_size: int = LIST_PAGE_SIZE,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._api_client = api_client
        self._owns_client = owns_client
        self._core: Any = k8s_client.CoreV1Api(api_client)
        self._rng = rng or random.Random()
        self._min_watch_seconds = min_watch_seconds
        self._page_size = page_size
        self._changed = asyncio.Event()

    @property
    def host(self) -> str:
        return server_for_logs(self._api_client)

    async def close(self) -> None:
        if self._owns_client:
            await self._api_client.close()

    async def watch(self) -> AsyncIterator[frozenset[Target]]:
        """Yield the targets once the first LIST succeeded, then after every change.

        With several namespaces a set is yielded as each namespace is listed: the pods of one
        workload share a namespace, so a group is never seen half-listed.
        """
        names = self.settings.namespaces or (None,)
        scopes = [_Scope(namespace) for namespace in names]
        tasks = [
            asyncio.create_task(self._follow(scope), name=f"pod discovery {scope.where}")
            for scope in scopes
        ]
        last: frozenset[Target] | None = None
        try:
            while True:
                await self._changed.wait()  # set only once a scope has listed
                self._changed.clear()
                targets = frozenset(t for scope in scopes for t in scope.pods.values())
                if targets != last:
                    last = targets
                    yield targets
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- one scope ----------------------------------------------------------------------
    async def _follow(self, scope: _Scope) -> None:
        """LIST then WATCH forever; errors keep the last targets and retry with back-off."""
        while True:
            try:
                await self._list(scope)
                while True:
                    await self._watch(scope)  # returns when the server ends the watch cleanly
            except _Gone as exc:
                scope.gone_streak += 1
                log.info(
                    "pod watch expired; listing again",
                    extra={"scope": scope.where, "error": str(exc)},
                )
                if scope.gone_streak > 1:  # 410 again before any event: do not spin
                    await self._sleep(self._backoff(scope.gone_streak - 2))
            except Exception as exc:
                delay = self._backoff(scope.failures)
                scope.failures += 1
                log.warning(
                    "pod discovery failed; keeping the last targets and retrying",
                    extra={
                        "scope": scope.where,
                        "api": self.host,
                        "error": f"{type(exc).__name__}: {exc}",
                        "retry_in_seconds": round(delay, 3),
                    },
                )
                await self._sleep(delay)

    def _backoff(self, failures: int) -> float:
        """Exponential from backoff_initial_seconds, capped, with "equal jitter" (50-100 %)."""
        settings = self.settings
        growth = 2.0 ** min(failures, 30)  # capped: a long outage must not overflow
        ceiling = min(settings.backoff_max_seconds, settings.backoff_initial_seconds * growth)
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def _call(self, scope: _Scope, **params: Any) -> Any:
        params["label_selector"] = self.settings.label_selector or None
        params = {k: v for k, v in params.items() if v is not None}
        if scope.namespace is None:
            return self._core.list_pod_for_all_namespaces(_preload_content=False, **params)
        return self._core.list_namespaced_pod(scope.namespace, _preload_content=False, **params)

    async def _list(self, scope: _Scope) -> None:
        """LIST every page, then replace the scope's pods at once (no half-listed groups)."""
        what = f"LIST pods in {scope.where}"
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_seconds)
        pods: dict[PodKey, Target] = {}
        listed: set[PodKey] = set()
        continue_token: str | None = None
        while True:
            response: aiohttp.ClientResponse = await self._call(
                scope, limit=self._page_size, _continue=continue_token, _request_timeout=timeout
            )
            try:
                body = await response.read()
            finally:
                response.release()
            if response.status != 200:
                raise _http_error(what, response.status, body)
            try:
                pod_list = _dict(json.loads(body))
            except ValueError as exc:
                raise DiscoveryError(f"{what}: the answer is not JSON: {exc}") from None
            for item in _list(pod_list.get("items")):
                pod = _dict(item)
                listed.add(_pod_key(pod))
                self._upsert(scope, pods, pod)
            metadata = _dict(pod_list.get("metadata"))
            continue_token = metadata.get("continue") or None
            if continue_token is None:
                break
        version = metadata.get("resourceVersion")
        if not isinstance(version, str) or not version:
            raise DiscoveryError(f"{what}: the PodList has no metadata.resourceVersion")
        if not scope.synced:
            log.info(
                "pod discovery listed",
                extra={"scope": scope.where, "pods": len(listed), "targets": len(pods)},
            )
        scope.pods = pods
        scope.resource_version = version
        scope.synced = True
        scope.warned = {w for w in scope.warned if w[0] in listed}
        self._changed.set()

    async def _watch(self, scope: _Scope) -> None:
        """One WATCH from the scope's resourceVersion until the server ends it cleanly."""
        what = f"WATCH pods in {scope.where}"
        server_timeout = round(self.settings.watch_timeout_seconds * (1 + self._rng.random()))
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.settings.request_timeout_seconds,
            sock_read=server_timeout + self.settings.request_timeout_seconds,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        events = 0
        response: aiohttp.ClientResponse = await self._call(
            scope,
            watch=True,
            resource_version=scope.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=server_timeout,
            _request_timeout=timeout,
        )
        try:
            if response.status != 200:
                raise _http_error(what, response.status, await response.read())
            while line := await response.content.readline():
                if not line.strip():
                    continue
                try:
                    event = _dict(json.loads(line))
                except ValueError as exc:
                    raise DiscoveryError(f"{what}: an event is not JSON: {exc}") from None
                self._apply(scope, event, what)
                events += 1
        finally:
            response.close()
        if events == 0 and loop.time() - started < self._min_watch_seconds:
            raise DiscoveryError(f"{what}: the server ended the watch at once, with no event")

    def _apply(self, scope: _Scope, event: Mapping[str, Any], what: str) -> None:
        kind = event.get("type")
        obj = _dict(event.get("object"))
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone(f"{what}: {_status_message(obj)}")
            raise DiscoveryError(
                f"{what}: ERROR event {obj.get('code', '?')}: {_status_message(obj)}"
            )
        version = _dict(obj.get("metadata")).get("resourceVersion")
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK") or not isinstance(version, str):
            raise DiscoveryError(
                f"{what}: malformed event (type {kind!r}, resourceVersion {version!r})"
            )
        if kind == "DELETED":
            key = _pod_key(obj)
            if scope.pods.pop(key, None) is not None:
                self._changed.set()
            scope.warned = {w for w in scope.warned if w[0] != key}
        elif kind != "BOOKMARK":
            before = scope.pods.get(_pod_key(obj))
            self._upsert(scope, scope.pods, obj)
            if scope.pods.get(_pod_key(obj)) != before:
                self._changed.set()
        scope.resource_version = version
        scope.failures = scope.gone_streak = 0  # the watch works: start the back-off over

    def _upsert(self, scope: _Scope, pods: dict[PodKey, Target], pod: Mapping[str, Any]) -> None:
        """Put ``pod``'s target into ``pods``, or drop it; warn once per misconfigured pod."""
        key = _pod_key(pod)
        target = pod_target(pod, self.settings)
        if isinstance(target, Target):
            pods[key] = target
            return
        pods.pop(key, None)
        if target.misconfigured and (key, target.reason) not in scope.warned:
            scope.warned.add((key, target.reason))
            log.warning("pod skipped", extra={"pod": f"{key[0]}/{key[1]}", "reason": target.reason})


def _pod_key(pod: Mapping[str, Any]) -> PodKey:
    metadata = _dict(pod.get("metadata"))
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


async def discovery_from_config(
    settings: KubernetesDiscoveryConfig,
    kubeconfig: str | None = None,
    *,
    rng: random.Random | None = None,
    min_watch_seconds: float = 1.0,
    page_size: int = LIST_PAGE_SIZE,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PodDiscovery:
    """Connect (``kubeconfig`` if given, else in-cluster, else the default kubeconfig) and
    build a discovery that owns the client.

    Async so that an unusable Kubernetes configuration fails at start, naming what to fix.
    """
    client = await api_client(
        kubeconfig,
        purpose="discovery.kubernetes",
        hint=(
            "pod discovery needs the API server; set discovery.kubeconfig / --kubeconfig "
            "or run in a pod"
        ),
    )
    return PodDiscovery(
        settings,
        client,
        rng=rng,
        min_watch_seconds=min_watch_seconds,
        page_size=page_size,
        sleep=sleep,
    )


# --- several sources as one -----------------------------------------------------------------


class CombinedTargets:
    """The union of several sources (static targets, several pod discoveries).

    Yields once any source has yielded, then whenever the union changes. A source that
    ends (static targets) keeps its last set; one that fails ends the whole watch.
    """

    def __init__(self, sources: Iterable[TargetSource]) -> None:
        self._sources = tuple(sources)

    async def watch(self) -> AsyncIterator[frozenset[Target]]:
        latest: list[frozenset[Target] | None] = [None] * len(self._sources)
        changed = asyncio.Event()

        async def follow(index: int, source: TargetSource) -> None:
            async for targets in source.watch():
                latest[index] = targets
                changed.set()

        tasks = [
            asyncio.create_task(follow(i, source), name=f"target source {i}")
            for i, source in enumerate(self._sources)
        ]
        for task in tasks:
            task.add_done_callback(lambda _: changed.set())
        last: frozenset[Target] | None = None
        try:
            while True:
                await changed.wait()
                changed.clear()
                for task in tasks:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        task.result()  # re-raise the source's failure
                known = [targets for targets in latest if targets is not None]
                if not known:
                    continue
                union = frozenset().union(*known)
                if union != last:
                    last = union
                    yield union
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
