"""The Grafana dashboard parses, every panel queries the templated Prometheus datasource,
and queries use only metrics that exist: the adapter's own (``adapter.selfmetrics``), the
served signals (``adapter.metrics_catalog``), Triton's own (scraped by the PodMonitor) and a
few kube-state-metrics series. tests/service/test_monitoring_live.py runs every query against
a real Prometheus."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pytest

from adapter.api.tls import make_server_ssl_context
from adapter.exposition import TRITON_FAMILIES
from adapter.metrics_catalog import SERVED_METRIC_NAMES
from adapter.selfmetrics import SelfMetrics
from adapter.snapshot import Snapshot
from tests.manifests.test_validate import GRAFANA, MANIFESTS, one_of, render

DASHBOARD = MANIFESTS / "grafana" / "tritonscale-dashboard.json"
README = MANIFESTS / "grafana" / "README.md"
DATASOURCE_UID = "${DS_PROMETHEUS}"
KUBE_STATE_METRICS = frozenset(
    {
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_deployment_status_replicas_ready",
    }
)
TRITON_METRICS = frozenset(TRITON_FAMILIES)  # Triton's own names (PodMonitor)
PROMETHEUS_SERIES = frozenset({"up"})  # written by Prometheus for every target
# kubectl apply (client side) stores the object in an annotation limited to 256 KiB.
MAX_CONFIGMAP_BYTES = 262_144


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
}


@functools.cache
def self_metric_families() -> dict[str, str]:
    """Family name -> type of every metric the adapter exports about itself."""
    metrics = SelfMetrics(max_age_seconds=30.0)  # every hook the service wires
    metrics.serve_snapshots(Snapshot)  # the served values are exported from the snapshot
    metrics.serve_forecast_checks(lambda: ())
    metrics.observe_serving_certificate(make_server_ssl_context(None, None, hostnames=[]))
    families = metrics.registry.collect()
    return {family.name: family.type for family in families}


def self_metric_names() -> set[str]:
    """tritonscale's own names as written in the README (counters with their ``_total``)."""
    return {
        name + {"counter": "_total", "info": "_info"}.get(kind, "")
        for name, kind in self_metric_families().items()
        if name.startswith("tritonscale_")
    }


def queryable_series() -> set[str]:
    """Series names Prometheus will hold for the adapter's own metrics."""
    return {
        name + suffix for name, kind in self_metric_families().items() for suffix in SUFFIXES[kind]
    }


_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
     "unless", "offset", "inf", "nan"}
)  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers that are not functions, keywords,
    label names, strings, durations or Grafana variables)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range / subquery windows
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # function call
            continue
        if match.group().lower() in _PROMQL_WORDS:
            continue
        if match.start() > 0 and (
            text[match.start() - 1].isdigit() or text[match.start() - 1] == "."
        ):
            continue  # part of a number such as 1e3
        names.add(match.group())
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le, target) (rate(foo_bucket{a="b", c=~"$x"}[$__rate_interval]))',
         {"foo_bucket"}),
        ('$capacity_rps * sum by (ns) (bar{ns=~"$namespace"}) / on(ns) baz', {"bar", "baz"}),
        ("histogram_quantile(0.99, sum without (pod) (rate(q_bucket[5m])))", {"q_bucket"}),
        ('up{job="a b"} > bool 1e3', {"up"}),
    ],
)  # fmt: skip
def test_promql_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


@functools.cache
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def query_panels() -> list[dict[str, Any]]:
    panels = dashboard()["panels"]
    nested = [inner for panel in panels for inner in panel.get("panels", [])]
    return [panel for panel in panels + nested if panel["type"] != "row"]


def all_exprs() -> list[str]:
    return [target["expr"] for panel in query_panels() for target in panel["targets"]]


PANEL_IDS = [panel["title"] for panel in query_panels()]


def test_dashboard_is_a_current_grafana_dashboard() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    variables = {var["name"]: var for var in board["templating"]["list"]}
    datasource_var = variables[DATASOURCE_UID.strip("${}")]
    assert (datasource_var["type"], datasource_var["query"]) == ("datasource", "prometheus")


@pytest.mark.parametrize("panel", query_panels(), ids=PANEL_IDS)
def test_panel_queries_the_templated_prometheus_datasource(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
    assert panel["targets"], "a panel without a query"
    for target in panel["targets"]:
        assert target["datasource"]["uid"] == DATASOURCE_UID
        assert target["expr"].strip()


@pytest.mark.parametrize("panel", query_panels(), ids=PANEL_IDS)
def test_panel_uses_only_known_metric_names(panel: dict[str, Any]) -> None:
    allowed = queryable_series() | KUBE_STATE_METRICS | TRITON_METRICS | PROMETHEUS_SERIES
    for target in panel["targets"]:
        names = promql_metric_names(target["expr"])
        assert names, f"no metric found in {target['expr']!r}"
        assert names <= allowed, f"unknown metric(s) {names - allowed} in {target['expr']!r}"


def test_signal_panels_ask_for_served_metrics() -> None:
    asked = {
        name
        for expr in all_exprs()
        for name in re.findall(r'tritonscale_signal_value\{metric="([^"]+)"', expr)
    }
    assert asked, "no panel shows a served signal"
    assert asked <= set(SERVED_METRIC_NAMES)


def test_every_adapter_self_metric_is_on_the_dashboard() -> None:
    used = set().union(*(promql_metric_names(expr) for expr in all_exprs()))
    unused = {
        family
        for family, kind in self_metric_families().items()
        if family.startswith("tritonscale_")
        and not {family + suffix for suffix in SUFFIXES[kind]} & used
    }
    assert not unused
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= used


def test_every_served_metric_is_on_the_dashboard() -> None:
    asked = {
        name
        for expr in all_exprs()
        for name in re.findall(r'tritonscale_signal_value\{metric="([^"]+)"', expr)
    }
    assert asked == set(SERVED_METRIC_NAMES)


def test_one_panel_draws_the_forecast_at_the_time_it_forecasts_against_what_arrived() -> None:
    wanted = {"tritonscale_forecast_due_arrival_rate", "tritonscale_forecast_actual_arrival_rate"}
    panels = [
        panel["title"]
        for panel in query_panels()
        if wanted <= set().union(*(promql_metric_names(t["expr"]) for t in panel["targets"]))
    ]
    assert panels
    bounds = {
        bound
        for panel in query_panels()
        if panel["title"] in panels
        for target in panel["targets"]
        for bound in re.findall(r'bound="(\w+)"', target["expr"])
    }
    assert bounds == {"point", "upper"}  # the error band


def test_triton_panels_filter_like_the_signal_panels() -> None:
    """Triton's series (PodMonitor) carry namespace and deployment as the adapter's do."""
    for expr in all_exprs():
        if promql_metric_names(expr) & TRITON_METRICS:
            for label in ("job", "namespace", "deployment", "model"):
                assert f'{label}=~"$' in expr, (label, expr)


def test_query_variables_use_the_templated_datasource() -> None:
    query_vars = [v for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    assert query_vars
    assert {var["datasource"]["uid"] for var in query_vars} == {DATASOURCE_UID}
    for var in query_vars:
        names = promql_metric_names(
            re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", var["definition"])
        )
        allowed = queryable_series() | KUBE_STATE_METRICS | TRITON_METRICS
        assert names <= allowed, var["name"]


def test_template_variables_used_in_queries_are_defined() -> None:
    defined = {var["name"] for var in dashboard()["templating"]["list"]}
    used = {name for expr in all_exprs() for name in re.findall(r"\$\{?(\w+)", expr)}
    assert used - {"__rate_interval", "__interval", "__range"} <= defined


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_readme_lists_exactly_the_adapter_self_metrics() -> None:
    text = README.read_text(encoding="utf-8")
    table_names = set(re.findall(r"^\| `(tritonscale_\w+)` \|", text, flags=re.MULTILINE))
    assert table_names == self_metric_names()
    others = {name.split("_")[0] for name in self_metric_families()} - {"tritonscale"}
    assert others == {"process", "python"}
    assert "`process_*`" in text and "`python_*`" in text


def test_readme_lists_the_kube_state_metrics_used() -> None:
    text = README.read_text(encoding="utf-8")
    assert {name for name in KUBE_STATE_METRICS if f"`{name}`" in text} == KUBE_STATE_METRICS


def test_sidecar_configmap_carries_the_dashboard() -> None:
    config_map = one_of(render(GRAFANA), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key, value), *rest = config_map["data"].items()
    assert not rest and key.endswith(".json")
    assert json.loads(value) == dashboard()
    assert len(value.encode()) < MAX_CONFIGMAP_BYTES
