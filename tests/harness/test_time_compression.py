"""Time compression of the closed loop: every duration is the cluster's divided by X, and the
adapter accepts the resulting config at every speed the demo offers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from adapter.config import load_config
from loadtest.harness.closed_loop import BATCH_OVERHEAD_S, ClusterTime, LoopRun, adapter_config
from loadtest.harness.hpa_manifest import load_hpa
from loadtest.harness.replay import ReplayPlan
from tests.support.paths import REPO_ROOT


@pytest.mark.parametrize("x", [15.0, 20.0, 30.0, 60.0])
def test_adapter_config_is_the_cluster_divided_by_x(x: float, tmp_path: Path) -> None:
    clock = ClusterTime(time_scale=x, scrape_s=max(2.0, float(math.ceil(0.1 * x - 1e-9))))
    hpa = load_hpa(REPO_ROOT / "manifests/examples/hpa/desired-replicas.yaml")
    run = LoopRun(
        "tritonscale", hpa.with_max_replicas(6), clock, ReplayPlan("t", np.zeros(1), 1, x, 1, 0)
    )
    path = tmp_path / "c.yaml"
    path.write_text(adapter_config(run, 6443, tmp_path / "kubeconfig"))
    config = load_config(path)
    settings = config.predictive.for_series({"namespace": "prod"})
    assert config.scrape.interval_seconds == pytest.approx(clock.scrape_s / x)
    assert config.signals.rate_window_seconds == pytest.approx(clock.rate_window_s / x)
    assert config.signals.max_age_seconds == pytest.approx(clock.max_age_s / x)
    assert settings.step_seconds == pytest.approx(clock.predictive_step_s / x)
    assert settings.horizon_seconds == pytest.approx((clock.cold_start_s + clock.hpa_sync_s) / x)
    assert settings.scale_down_delay_seconds == pytest.approx(clock.scale_down_delay_s / x)
    assert settings.slo_seconds == pytest.approx(clock.slo_s / x)
    assert settings.capacity_rps == pytest.approx(clock.capacity_rps_real)
    assert clock.capacity_rps == pytest.approx(
        clock.max_batch / (clock.batch_service_s + BATCH_OVERHEAD_S * x)
    )  # per cluster second: the overhead is the one part that does not compress
    assert clock.model.service_ms == pytest.approx(clock.batch_service_s / x * 1000)
