"""The shipped monitoring works when applied: a real Prometheus scrapes a running adapter (in
delegated auth, through the shipped RBAC) and a live Triton the way the shipped ServiceMonitor
and PodMonitor make it, loads the shipped alert rules, and every query of the dashboard (each
panel target and each variable) returns data, with every namespace and with one selected.

What is not real here: no Kubernetes (the Operator's target labels are emulated from the
shipped manifests: ``tests/service/prometheus_operator.py``; TokenReview and
SubjectAccessReview come from an in-process fake API that decides with the shipped
ClusterRole/ClusterRoleBinding), kube-state-metrics is a small fake exposition, and there is no
GPU (a fake dcgm-exporter exposition feeds ``gpu_utilization``). Scrapes run every second
instead of 15 s. Polls with a deadline; no fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from adapter.config import Config
from adapter.service import RunningService, running_service
from loadtest.harness.api_client import read_metric
from loadtest.harness.loadgen import RateSegment, run_schedule
from loadtest.harness.prometheus import PrometheusProcess, PrometheusStartError
from loadtest.harness.triton_server import LOOPBACK, TritonProcess, free_port
from tests.manifests.test_validate import BASE, EXAMPLES, one_of, render
from tests.service.prometheus_operator import DiscoveredEndpoint, DiscoveredPod, scrape_config
from tests.support.auth_support import FakeKubeAPI, config_map_data, make_pki
from tests.support.helpers import async_wait_until

pytestmark = [pytest.mark.triton, pytest.mark.prometheus]

MONITORING = "manifests/monitoring"
DASHBOARD = Path(__file__).resolve().parents[2] / "manifests/grafana/tritonscale-dashboard.json"
SCRAPE_INTERVAL = "1s"
DEADLINE_S = 240.0  # one-minute SLO windows need a minute boundary with data behind it

SCRAPER_TOKEN = "scraper-token"  # what the token controller would put in the Secret
READER_TOKEN = "reader-token"  # the test's own metric reads (system:masters: no SAR)
NAMESPACE, DEPLOYMENT, HPA = "prod", "triton-llm", "triton-llm"
GONE_DEPLOYMENT = "triton-gone"  # a target nothing listens on: scrape failures
NAN_DEPLOYMENT = "triton-nan"  # a Triton whose success counter reads NaN: rejected samples

FAKE_KUBE_STATE_METRICS = f"""\
# TYPE kube_horizontalpodautoscaler_status_desired_replicas gauge
kube_horizontalpodautoscaler_status_desired_replicas{{namespace="{NAMESPACE}",horizontalpodautoscaler="{HPA}"}} 2
# TYPE kube_horizontalpodautoscaler_status_current_replicas gauge
kube_horizontalpodautoscaler_status_current_replicas{{namespace="{NAMESPACE}",horizontalpodautoscaler="{HPA}"}} 1
# TYPE kube_horizontalpodautoscaler_spec_max_replicas gauge
kube_horizontalpodautoscaler_spec_max_replicas{{namespace="{NAMESPACE}",horizontalpodautoscaler="{HPA}"}} 10
# TYPE kube_deployment_status_replicas_ready gauge
kube_deployment_status_replicas_ready{{namespace="{NAMESPACE}",deployment="{DEPLOYMENT}"}} 1
"""  # noqa: E501
FAKE_DCGM_EXPORTER = 'DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-0"} 0.42\n'
NAN_TRITON = (
    'nv_inference_request_success{model="m",version="1"} NaN\n'
    'nv_inference_request_failure{model="m",version="1",reason="OTHER"} 0\n'
    'nv_inference_pending_request_count{model="m",version="1"} 0\n'
)

# Grafana's built-in variables, as Grafana would expand them for a 10-minute view.
BUILTIN_VARIABLES = {"__rate_interval": "10s", "__interval": "5s", "__range": "10m"}


# --- RBAC as the kube-apiserver would evaluate the shipped objects -------------------------------


def _subject_matches(subject: Mapping[str, str], user: str, groups: list[str]) -> bool:
    if subject["kind"] == "ServiceAccount":
        return user == f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
    if subject["kind"] == "User":
        return user == subject["name"]
    return subject["kind"] == "Group" and subject["name"] in groups


def rbac_decider(objects: list[dict[str, Any]]) -> Any:
    """A SubjectAccessReview decision from the ClusterRoles and bindings in ``objects``
    (non-resource URLs only: the adapter asks nothing else of a /metrics scrape)."""
    roles = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ClusterRole"}
    bindings = [obj for obj in objects if obj["kind"] == "ClusterRoleBinding"]

    def decide(spec: dict[str, Any]) -> tuple[bool, str]:
        attributes = spec.get("nonResourceAttributes")
        if attributes is None:
            return False, "only non-resource URLs are granted here"
        for binding in bindings:
            if not any(
                _subject_matches(s, spec.get("user", ""), spec.get("groups", []))
                for s in binding["subjects"]
            ):
                continue
            for rule in roles[binding["roleRef"]["name"]]["rules"]:
                urls, verbs = rule.get("nonResourceURLs", []), rule.get("verbs", [])
                if any(fnmatch.fnmatchcase(attributes["path"], url) for url in urls) and (
                    attributes["verb"] in verbs or "*" in verbs
                ):
                    return True, f"allowed by ClusterRoleBinding {binding['metadata']['name']}"
        return False, "no ClusterRoleBinding allows it"

    return decide


# --- fakes on loopback ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def exposition_server() -> AsyncIterator[int]:
    """Fake kube-state-metrics at /ksm/metrics and dcgm-exporter at /dcgm/metrics."""

    def text(body: str) -> Any:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(text=body, content_type="text/plain")

        return handler

    app = web.Application()
    app.router.add_get("/ksm/metrics", text(FAKE_KUBE_STATE_METRICS))
    app.router.add_get("/dcgm/metrics", text(FAKE_DCGM_EXPORTER))
    app.router.add_get("/nan-triton/metrics", text(NAN_TRITON))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


class MonitoringPrometheus(PrometheusProcess):
    """The Debian Prometheus with the given scrape configs and the shipped alert rules."""

    def __init__(self, scrape_configs: list[dict[str, Any]], rules: dict[str, Any]) -> None:
        super().__init__(["unused:0"])
        self.scrape_configs = scrape_configs
        self.rules = rules

    def write_config(self, workdir: Path) -> Path:
        rules = workdir / "tritonscale-rules.yaml"
        rules.write_text(yaml.safe_dump(self.rules))
        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "scrape_configs": self.scrape_configs,
                }
            )
        )
        return config


# --- the set-up ----------------------------------------------------------------------------------


def triton_pod(triton: TritonProcess) -> DiscoveredPod:
    """The live Triton as a pod of the example Deployment (its labels and port names)."""
    deployment = one_of(render(EXAMPLES), "Deployment", DEPLOYMENT)
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    (port_name,) = [p["name"] for p in container["ports"] if p["containerPort"] == 8002]
    return DiscoveredPod(
        address=triton.metrics_host_port,
        namespace=deployment["metadata"]["namespace"],
        name=f"{DEPLOYMENT}-5d4f8b7c9d-x2x7q",
        labels=template["metadata"]["labels"],
        container=container["name"],
        port_name=port_name,
        controller_name=f"{DEPLOYMENT}-5d4f8b7c9d",
    )


def adapter_endpoint(port: int) -> DiscoveredEndpoint:
    """The running adapter as an endpoint of the base Service (its labels and port names)."""
    base = render(BASE)
    service = one_of(base, "Service", "tritonscale")
    deployment = one_of(base, "Deployment", "tritonscale")
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    (service_port,) = service["spec"]["ports"]
    pod = DiscoveredPod(
        address=f"{LOOPBACK}:{port}",
        namespace=service["metadata"]["namespace"],
        name="tritonscale-7c9f6b5d8-4kq2p",
        labels=template["metadata"]["labels"],
        container=container["name"],
        port_name=service_port["targetPort"],
        controller_name="tritonscale-7c9f6b5d8",
    )
    return DiscoveredEndpoint(
        pod=pod,
        service_name=service["metadata"]["name"],
        service_labels=service["metadata"].get("labels", {}),
        endpoint_port_name=service_port["name"],
    )


def adapter_config(
    triton: TritonProcess, exposition_port: int, kubeconfig: Path, gone_url: str
) -> Config:
    return Config.model_validate(
        {
            "listen": f"{LOOPBACK}:0",
            "auth": {"mode": "delegated", "kubeconfig": str(kubeconfig)},
            "scrape": {"interval_seconds": 0.5, "timeout_seconds": 0.4, "backoff_max_seconds": 1},
            "signals": {"rate_window_seconds": 5},
            "targets": [
                {
                    "url": triton.metrics_url,
                    "labels": {"namespace": NAMESPACE, "deployment": DEPLOYMENT},
                },
                {
                    "url": f"http://{LOOPBACK}:{exposition_port}/dcgm/metrics",
                    "kind": "dcgm",
                    "labels": {"namespace": NAMESPACE, "deployment": DEPLOYMENT},
                },
                {
                    "url": gone_url,
                    "labels": {"namespace": NAMESPACE, "deployment": GONE_DEPLOYMENT},
                },
                {
                    "url": f"http://{LOOPBACK}:{exposition_port}/nan-triton/metrics",
                    "labels": {"namespace": NAMESPACE, "deployment": NAN_DEPLOYMENT},
                },
            ],
            "predictive": {
                "defaults": {
                    "step_seconds": 1,
                    "cold_start_seconds": 2,
                    "hpa_sync_period_seconds": 1,
                    "capacity_rps": 40,
                }
            },
        }
    )


# --- the dashboard's queries ---------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str  # panel title and refId, or variable name
    expr: str


def dashboard_queries() -> tuple[list[Query], list[tuple[str, str, str]]]:
    """Panel queries, and (variable, series selector, label) of every query variable."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in board["panels"] if p["type"] != "row"]
    queries = [
        Query(f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in panels
        for target in panel["targets"]
    ]
    variables = []
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
            assert match, var["definition"]
            variables.append((var["name"], match.group(1), match.group(2)))
    return queries, variables


def expand(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's variable expansion: ``$name`` and ``${name}``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def variable_values(job: str, triton_job: str, *, one_namespace: bool) -> dict[str, str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    text_values = {
        var["name"]: var["query"] for var in board["templating"]["list"] if var["type"] == "textbox"
    }
    selected = (
        {"namespace": NAMESPACE, "deployment": DEPLOYMENT, "model": "resnet", "hpa": HPA}
        if one_namespace
        else {"namespace": ".*", "deployment": ".*", "model": ".*", "hpa": ".*"}
    )
    return {
        **BUILTIN_VARIABLES,
        **text_values,
        **selected,
        "job": job,
        "triton_job": triton_job,
    }


# --- the test ------------------------------------------------------------------------------------


@contextlib.contextmanager
def started(prometheus: PrometheusProcess) -> Iterator[PrometheusProcess]:
    try:
        prometheus.start(timeout_s=60)
    except PrometheusStartError as error:
        pytest.fail(f"Prometheus did not start: {error}", pytrace=False)
    try:
        yield prometheus
    finally:
        prometheus.stop()


async def keep_loading(triton: TritonProcess, stop: asyncio.Event) -> None:
    """Light load (well under capacity) in short rounds until ``stop``."""
    while not stop.is_set():
        await asyncio.gather(
            run_schedule(triton.grpc_url, "resnet", [RateSegment(0, 20)], 3.0, seed=3),
            run_schedule(triton.grpc_url, "bert", [RateSegment(0, 20)], 3.0, seed=4),
        )


async def series_label_values(
    session: aiohttp.ClientSession, prometheus: PrometheusProcess, selector: str, label: str
) -> set[str]:
    async with session.get(
        f"{prometheus.url}/api/v1/series", params={"match[]": selector}
    ) as response:
        body = await response.json(content_type=None)
    assert body["status"] == "success", body
    return {series[label] for series in body["data"] if label in series}


@pytest.fixture
async def kube_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeKubeAPI]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    sa = one_of(render(MONITORING), "ServiceAccount")
    namespace, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
    api = FakeKubeAPI(
        config_map_data=config_map_data(make_pki(tmp_path)),
        decide=rbac_decider(render(MONITORING)),
        tokens={
            SCRAPER_TOKEN: {
                "username": f"system:serviceaccount:{namespace}:{name}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            },
            READER_TOKEN: {"username": "test-reader", "groups": ["system:masters"]},
        },
    )
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


@pytest.mark.timeout(480)
async def test_every_dashboard_query_returns_data_from_the_shipped_monitoring(
    triton: TritonProcess, kube_api: FakeKubeAPI, tmp_path: Path
) -> None:
    monitoring = render(MONITORING)
    service_monitor = one_of(monitoring, "ServiceMonitor")
    pod_monitor = one_of(monitoring, "PodMonitor")
    token_secret = one_of(monitoring, "Secret")
    secrets = {
        (token_secret["metadata"]["namespace"], token_secret["metadata"]["name"], "token"): (
            SCRAPER_TOKEN
        )
    }
    rules = one_of(monitoring, "PrometheusRule")["spec"]
    queries, variables = dashboard_queries()
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    gone_url = f"http://{LOOPBACK}:{free_port()}/metrics"  # nothing listens there

    async with exposition_server() as exposition_port:
        config = adapter_config(triton, exposition_port, kubeconfig, gone_url)
        async with running_service(config) as service:
            scrape_configs = [
                scrape_config(
                    service_monitor,
                    [adapter_endpoint(service.port)],
                    secrets=secrets,
                    interval=SCRAPE_INTERVAL,
                ),
                scrape_config(
                    pod_monitor, [triton_pod(triton)], secrets={}, interval=SCRAPE_INTERVAL
                ),
                {  # kube-prometheus scrapes kube-state-metrics with honorLabels too
                    "job_name": "kube-state-metrics",
                    "honor_labels": True,
                    "metrics_path": "/ksm/metrics",
                    "static_configs": [{"targets": [f"{LOOPBACK}:{exposition_port}"]}],
                },
            ]
            with started(MonitoringPrometheus(scrape_configs, rules)) as prometheus:
                stop = asyncio.Event()
                load = asyncio.create_task(keep_loading(triton, stop))
                try:
                    await poll_until_every_query_has_data(prometheus, service, queries, variables)
                    await check_rules_and_alerts(prometheus, gone_url)
                finally:
                    stop.set()
                    await load


async def poll_until_every_query_has_data(
    prometheus: PrometheusProcess,
    service: RunningService,
    queries: list[Query],
    variables: list[tuple[str, str, str]],
) -> None:
    headers = {"Authorization": f"Bearer {READER_TOKEN}"}
    job, triton_job = "tritonscale", "tritonscale/triton"
    bindings = {
        "every namespace": variable_values(job, triton_job, one_namespace=False),
        f"namespace {NAMESPACE} selected": variable_values(job, triton_job, one_namespace=True),
    }
    missing: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    async with (
        aiohttp.ClientSession(headers=headers) as reader,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client,
    ):
        while True:
            # the HPA's reads: metric read panels (requests, latency, errors) need some
            for metric in ("triton_desired_replicas", "triton_queue_depth"):
                await read_metric(reader, service.port, NAMESPACE, metric)
            missing = []
            for name, selector, label in variables:
                found = await series_label_values(
                    client, prometheus, expand(selector, bindings["every namespace"]), label
                )
                expected = {"job": job, "triton_job": triton_job, "namespace": NAMESPACE}
                want = expected.get(name)
                if not found or (want is not None and want not in found):
                    missing.append(f"variable {name}: {sorted(found)}")
            for binding, values in bindings.items():
                for query in queries:
                    samples = await prometheus.query(expand(query.expr, values), session=client)
                    if not samples:
                        missing.append(f"{query.where} ({binding}): {query.expr}")
            if not missing:
                return
            if loop.time() >= deadline:
                targets = await prometheus_targets(client, prometheus)
                pytest.fail(
                    f"no data within {DEADLINE_S:.0f} s for {len(missing)} queries:\n"
                    + "\n".join(missing)
                    + f"\nPrometheus targets: {targets}",
                    pytrace=False,
                )
            await asyncio.sleep(2.0)  # poll interval (the deadline bounds the wait)


async def prometheus_targets(
    client: aiohttp.ClientSession, prometheus: PrometheusProcess
) -> list[tuple[str, str, str]]:
    async with client.get(f"{prometheus.url}/api/v1/targets") as response:
        body = await response.json(content_type=None)
    return [
        (t["labels"].get("job", ""), t["health"], t.get("lastError", ""))
        for t in body["data"]["activeTargets"]
    ]


async def check_rules_and_alerts(prometheus: PrometheusProcess, gone_url: str) -> None:
    """Every alert evaluates without error against the real series; the adapter is up (no
    TritonscaleDown) and the dead target's scrapes fail (TritonscaleTargetScrapesFailing is
    pending for it, and only for it)."""
    async with aiohttp.ClientSession() as client:

        async def rule_states() -> list[dict[str, Any]] | None:
            async with client.get(f"{prometheus.url}/api/v1/rules") as response:
                body = await response.json(content_type=None)
            rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
            return rules if rules and all(r["health"] != "unknown" for r in rules) else None

        evaluated = await async_wait_until(
            rule_states, timeout=30, interval=0.5, message="every rule evaluated"
        )
    assert [(r["name"], r.get("lastError", "")) for r in evaluated if r["health"] != "ok"] == []
    active = {
        (alert["labels"]["alertname"], alert["labels"].get("target", ""))
        for rule in evaluated
        for alert in rule.get("alerts", [])
    }
    assert ("TritonscaleDown", "") not in active
    failing = {target for name, target in active if name == "TritonscaleTargetScrapesFailing"}
    assert failing == {gone_url}
