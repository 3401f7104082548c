"""The ``sources.prometheus`` section: what it accepts, and errors that name the line and
field to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.config import ConfigError, load_config

GOOD = """\
signals:
  max_age_seconds: 40
targets:
  - url: http://10.0.0.5:8002/metrics
    labels: {namespace: prod, deployment: scraped}
sources:
  prometheus:
    - url: https://mimir.monitoring.svc:8080/prometheus/
      tenant: team-a
      bearer_token_file: /var/run/secrets/tokens/prometheus
      ca_file: /etc/ca/ca.crt
      scrape_interval_seconds: 15
      rate_window_seconds: 60
      gpu_pod_label: exported_pod
      groups:
        - labels: {namespace: prod, deployment: triton-llm}
          matchers: 'namespace="prod", pod=~"triton-llm-.+"'
          pod_labels: {app.kubernetes.io/name: triton-llm}
        - labels: {namespace: prod, deployment: scraped}
          matchers: '{job="triton", namespace="prod"}'
          live: false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tritonscale.yaml"
    path.write_text(text)
    return path


def test_a_full_source_loads(tmp_path: Path) -> None:
    (source,) = load_config(write(tmp_path, GOOD)).sources.prometheus
    assert source.url == "https://mimir.monitoring.svc:8080/prometheus"  # paths are appended
    assert (source.tenant, source.query_interval_seconds, source.warm_start_seconds) == (
        "team-a",
        5.0,
        3600.0,
    )
    assert source.groups[0].group_labels() == {"namespace": "prod", "deployment": "triton-llm"}
    assert source.groups[1].live is False
    assert not source.partial_response


def _with(replace: str, by: str) -> str:
    assert replace in GOOD
    return GOOD.replace(replace, by)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            _with("rate_window_seconds: 60", "rate_window_seconds: 20"),
            ":8: sources.prometheus.0: rate_window_seconds (20) must be at least twice "
            "scrape_interval_seconds (15)",
        ),
        (
            _with("https://mimir", "https://u:p@mimir"),
            ":8: sources.prometheus.0.url: must not carry user:password@ credentials",
        ),
        (
            _with("""pod=~"triton-llm-.+\"'""", """model=\"resnet\"'"""),
            ":17: sources.prometheus.0.groups.0.matchers: 'model': select targets by target "
            "labels only",
        ),
        (
            _with("""'namespace="prod", pod""", """'namespace=prod, pod"""),
            ":17: sources.prometheus.0.groups.0.matchers: not PromQL label matchers near "
            "'namespace=prod, pod",
        ),
        (
            _with("""'{job="triton", namespace="prod"}'""", "''"),
            ":20: sources.prometheus.0.groups.1.matchers: give at least one matcher",
        ),
        (
            _with("gpu_pod_label: exported_pod", "gpu_pod_label: exported-pod"),
            ":14: sources.prometheus.0.gpu_pod_label: 'exported-pod' is not a Prometheus label",
        ),
        (
            _with("live: false", "live: true"),
            ":1: (top level): targets.0: its group {'deployment': 'scraped', 'namespace': "
            "'prod'} is read from Prometheus (sources.prometheus.0.groups.1)",
        ),
        (
            _with("deployment: triton-llm}", "deployment: scraped}"),
            ":1: (top level): sources.prometheus.0.groups.1: the group",
        ),
        (
            _with("max_age_seconds: 40", "max_age_seconds: 30"),
            ":1: (top level): sources.prometheus.0: signals.max_age_seconds (30) must be at "
            "least twice scrape_interval_seconds (15) plus query_interval_seconds (5), 35 s: "
            "otherwise one missed Prometheus scrape makes every value stale",
        ),
        (
            _with("tenant: team-a", "tenant: team-a\n      query_interval_seconds: 0.01"),
            "sources.prometheus.0.query_interval_seconds: Input should be greater than or "
            "equal to 0.5: how often each group is queried",
        ),
        (
            _with("tenant: team-a", "tenant: team-a\n      timeout_seconds: .nan"),
            "sources.prometheus.0.timeout_seconds: Input should be a finite number",
        ),
        (
            _with(
                "rate_window_seconds: 60",
                "rate_window_seconds: 60\n      warm_start_seconds: 86400",
            ),
            "above 11000 points",
        ),
        (
            _with("      groups:\n", "      groups: []\n      unused:\n"),
            "sources.prometheus.0.groups: Tuple should have at least 1 item",
        ),
    ],
)
def test_errors_name_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems
