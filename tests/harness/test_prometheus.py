"""NVIDIA's Prometheus signal path, reproduced: config, rules (promtool-valid) and a live scrape."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import aiohttp
import pytest
import yaml

from loadtest.harness.loadgen import RateSegment, run_schedule
from loadtest.harness.prometheus import (
    PrometheusQueryError,
    check_rules,
    prometheus_config_yaml,
    recording_rules_yaml,
)
from loadtest.harness.triton_server import TritonProcess
from tests.conftest import PrometheusFactory
from tests.support.helpers import async_wait_until

# Verbatim from NVIDIA's triton-metrics_prometheus-rule.yaml (EKS_Multinode_Triton_TRTLLM).
NVIDIA_RULES = {
    "triton:compute_duration:average": "rate(nv_inference_compute_infer_duration_us[1m]) / "
    "clamp_min(rate(nv_inference_request_success[1m]),1)",
    "triton:queue_duration:average": "rate(nv_inference_queue_duration_us[1m]) / "
    "clamp_min(rate(nv_inference_request_success[1m]),1)",
    "triton:request_duration:average": "rate(nv_inference_request_duration_us[1m]) / "
    "clamp_min(rate(nv_inference_request_success[1m]),1)",
    "triton:queue_compute:ratio": "rate(nv_inference_queue_duration_us[1m]) / "
    "clamp_min(rate(nv_inference_compute_infer_duration_us[1m]),1)",
}


def _rule_group() -> dict[str, object]:
    groups = yaml.safe_load(recording_rules_yaml())["groups"]
    assert len(groups) == 1
    group: dict[str, object] = groups[0]
    return group


@pytest.mark.parametrize(("record", "expr"), sorted(NVIDIA_RULES.items()))
def test_default_rules_are_nvidias(record: str, expr: str) -> None:
    rules = {rule["record"]: rule["expr"] for rule in _rule_group()["rules"]}  # type: ignore[attr-defined]
    assert rules[record] == expr


def test_default_intervals_are_nvidias() -> None:
    assert _rule_group()["name"] == "autoscaling"
    assert _rule_group()["interval"] == "6000ms"
    config = yaml.safe_load(prometheus_config_yaml(["127.0.0.1:8002"]))
    assert config["global"]["scrape_interval"] == "15000ms"
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:8002"]}]


@pytest.mark.parametrize("bad_interval", [0.0, -6.0])
def test_nonpositive_rule_interval_is_rejected(bad_interval: float) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        recording_rules_yaml(rule_interval_s=bad_interval)


@pytest.mark.prometheus
@pytest.mark.parametrize("rate_window", ["1m", "10s"])
def test_promtool_accepts_rules(tmp_path: Path, rate_window: str) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(recording_rules_yaml(rate_window=rate_window))
    checked = check_rules(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(NVIDIA_RULES)} rules found" in checked.stdout


@pytest.mark.prometheus
def test_promtool_rejects_broken_rules(tmp_path: Path) -> None:
    """The check can fail: a malformed expression is reported."""
    path = tmp_path / "rules.yml"
    path.write_text(recording_rules_yaml().replace("clamp_min(", "clamp_min((", 1))
    assert check_rules(path).returncode != 0


@pytest.mark.prometheus
@pytest.mark.triton
async def test_recording_rule_sees_resnet_queue_under_overload(
    triton: TritonProcess, prometheus_factory: PrometheusFactory
) -> None:
    """Scrape every 1 s, rules every 1 s over 10 s windows (NVIDIA: 15 s, 6 s, 1 m)."""
    prometheus = prometheus_factory(
        [triton.metrics_host_port], scrape_interval_s=1.0, rule_interval_s=1.0, rate_window="10s"
    )
    # One connection pool for the polling queries; the one-off queries use query()'s own.
    async with aiohttp.ClientSession() as session:

        async def target_up() -> bool:
            samples = await prometheus.query('up{job="triton"}', session=session)
            return bool(samples) and samples[0].value == 1.0

        await async_wait_until(target_up, timeout=30, interval=0.5, message="Triton target up")
        assert await prometheus.query("nv_no_such_metric") == []  # absent, not 0
        with pytest.raises(PrometheusQueryError, match="parse error"):
            await prometheus.query("rate(")

        load = asyncio.create_task(
            run_schedule(
                triton.grpc_url, "resnet", [RateSegment(0.0, 160.0)], duration_s=3.0, seed=11
            )
        )

        async def resnet_ratio_above_one() -> float | None:
            samples = await prometheus.query(
                'triton:queue_compute:ratio{model="resnet"}', session=session
            )
            return samples[0].value if samples and samples[0].value > 1.0 else None

        try:
            # overload: requests wait seconds in queue vs ~50 ms compute, so the ratio passes 1
            ratio = await async_wait_until(
                resnet_ratio_above_one, timeout=30, interval=0.5, message="resnet ratio > 1"
            )
            assert ratio is not None and math.isfinite(ratio)
        finally:
            result = await load
    assert result.failed == 0, result.summary()
