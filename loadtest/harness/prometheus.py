"""A local Prometheus reproducing NVIDIA's Triton autoscaling signal path, for lag benchmarks.

NVIDIA's reference (triton-inference-server/tutorials, TensorRT-LLM_Autoscaling_and_Load_Balancing
and EKS_Multinode_Triton_TRTLLM) scrapes Triton's ``/metrics`` (default every 15 s here, like a
kube-prometheus-stack PodMonitor), evaluates the recording rules below in group ``autoscaling``
every 6 s, and the HPA reads ``triton:queue_compute:ratio`` through prometheus-adapter.
``PrometheusProcess`` runs ``/usr/bin/prometheus`` on a free 127.0.0.1 port with that config and
a throw-away TSDB directory; ``query()`` runs an instant query over the HTTP API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from loadtest.harness.process import ManagedProcess
from loadtest.harness.triton_server import LOOPBACK, free_port

PROMETHEUS_BINARY = "/usr/bin/prometheus"
PROMTOOL_BINARY = "/usr/bin/promtool"
NVIDIA_SCRAPE_INTERVAL_S = 15.0
NVIDIA_RULE_INTERVAL_S = 6.0
NVIDIA_RATE_WINDOW = "1m"
RULE_GROUP_NAME = "autoscaling"


def nvidia_recording_rules(rate_window: str = NVIDIA_RATE_WINDOW) -> dict[str, str]:
    """NVIDIA's PrometheusRule ``triton-metrics`` (record name -> PromQL expression).

    Source: EKS_Multinode_Triton_TRTLLM/multinode_helm_chart/triton-metrics_prometheus-rule.yaml.
    ``rate_window`` is ``1m`` there; tests may shorten it.
    """

    def rate(metric: str) -> str:
        return f"rate({metric}[{rate_window}])"

    success = f"clamp_min({rate('nv_inference_request_success')},1)"
    return {
        "triton:compute_duration:average": (
            f"{rate('nv_inference_compute_infer_duration_us')} / {success}"
        ),
        "triton:queue_duration:average": f"{rate('nv_inference_queue_duration_us')} / {success}",
        "triton:request_duration:average": (
            f"{rate('nv_inference_request_duration_us')} / {success}"
        ),
        "triton:queue_compute:ratio": (
            f"{rate('nv_inference_queue_duration_us')} / "
            f"clamp_min({rate('nv_inference_compute_infer_duration_us')},1)"
        ),
    }


def _duration(seconds: float) -> str:
    """Prometheus duration string; whole milliseconds."""
    if seconds <= 0:
        raise ValueError(f"interval {seconds} s must be > 0")
    return f"{round(seconds * 1000)}ms"


def recording_rules_yaml(
    rule_interval_s: float = NVIDIA_RULE_INTERVAL_S, rate_window: str = NVIDIA_RATE_WINDOW
) -> str:
    """The rule file: one group ``autoscaling`` evaluated every ``rule_interval_s`` seconds."""
    group = {
        "name": RULE_GROUP_NAME,
        "interval": _duration(rule_interval_s),
        "rules": [
            {"record": name, "expr": expr}
            for name, expr in nvidia_recording_rules(rate_window).items()
        ],
    }
    return yaml.safe_dump({"groups": [group]}, sort_keys=False)


StaticConfig = Mapping[str, Any]
"""One ``static_configs`` entry: ``{"targets": ["host:port"], "labels": {...}}``."""


def prometheus_config_yaml(
    targets: Sequence[str],
    *,
    scrape_interval_s: float = NVIDIA_SCRAPE_INTERVAL_S,
    rule_files: Sequence[str] = (),
    job_name: str = "triton",
    static_configs: Sequence[StaticConfig] = (),
    extra_jobs: Mapping[str, Sequence[StaticConfig]] | None = None,
) -> str:
    """prometheus.yml scraping ``targets`` (``host:port``, path /metrics) as job ``job_name``.

    ``static_configs`` replace ``targets`` when given (to attach target labels, e.g. the
    ``namespace`` and ``pod`` a PodMonitor would add); ``extra_jobs`` are more jobs by name.
    """
    if not targets and not static_configs:
        raise ValueError("prometheus config: give at least one scrape target host:port")
    scrape_timeout_s = min(scrape_interval_s, 10.0)
    jobs = {job_name: list(static_configs) or [{"targets": list(targets)}], **(extra_jobs or {})}
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": _duration(scrape_interval_s),
            "scrape_timeout": _duration(scrape_timeout_s),
            "evaluation_interval": _duration(NVIDIA_RULE_INTERVAL_S),
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            {
                "job_name": name,
                "metrics_path": "/metrics",
                "static_configs": [
                    {key: (list(v) if key == "targets" else dict(v)) for key, v in entry.items()}
                    for entry in entries
                ],
            }
            for name, entries in jobs.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def check_rules(path: Path, promtool: str = PROMTOOL_BINARY) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check rules path``; the caller inspects returncode/stdout."""
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclasses.dataclass(frozen=True)
class PromSample:
    """One instant-vector element: labels, evaluation timestamp (unix s), value."""

    labels: Mapping[str, str]
    timestamp_s: float
    value: float


class PrometheusQueryError(RuntimeError):
    """The HTTP API answered with an error (bad PromQL, timeout)."""


class PrometheusStartError(RuntimeError):
    """Prometheus did not become ready; the message carries the log tail."""


class PrometheusProcess(ManagedProcess):
    """``/usr/bin/prometheus`` scraping Triton with NVIDIA's recording rules, on loopback.

    Sync ``start()``/``stop()`` or ``with``; the config, rules, TSDB and log live in a temp
    directory removed by ``stop()``.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        scrape_interval_s: float = NVIDIA_SCRAPE_INTERVAL_S,
        rule_interval_s: float = NVIDIA_RULE_INTERVAL_S,
        rate_window: str = NVIDIA_RATE_WINDOW,
        port: int | None = None,
        binary: str = PROMETHEUS_BINARY,
        static_configs: Sequence[StaticConfig] = (),
        extra_jobs: Mapping[str, Sequence[StaticConfig]] | None = None,
    ) -> None:
        self.targets = list(targets)
        self.static_configs = list(static_configs)
        self.extra_jobs = dict(extra_jobs or {})
        self.scrape_interval_s = scrape_interval_s
        self.rule_interval_s = rule_interval_s
        self.rate_window = rate_window
        self.port = port or free_port()
        self.binary = binary
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("PrometheusProcess: not started")
        return self.workdir / "prometheus.log"

    def write_config(self, workdir: Path) -> Path:
        """Write prometheus.yml and the rule file into ``workdir``; returns prometheus.yml."""
        rules = workdir / "triton-rules.yml"
        rules.write_text(recording_rules_yaml(self.rule_interval_s, self.rate_window))
        config = workdir / "prometheus.yml"
        config.write_text(
            prometheus_config_yaml(
                self.targets,
                scrape_interval_s=self.scrape_interval_s,
                rule_files=[str(rules)],
                static_configs=self.static_configs,
                extra_jobs=self.extra_jobs,
            )
        )
        return config

    def start(self, timeout_s: float = 30.0) -> float:
        """Launch and wait for ``/-/ready``; returns seconds taken."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("PrometheusProcess.start(): already running")
        self.workdir = Path(tempfile.mkdtemp(prefix="tritonscale-prometheus-"))
        config = self.write_config(self.workdir)
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
        ]
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                tail = self.log_tail()
                self.stop()
                raise PrometheusStartError(f"prometheus exited with code {code}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        self.startup_s = time.monotonic() - started
                        return self.startup_s
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise PrometheusStartError(f"prometheus not ready after {timeout_s:.0f} s:\n{tail}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout_s``) and remove the temp directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_tail(self, max_chars: int = 4000) -> str:
        with contextlib.suppress(OSError, RuntimeError):
            return self.log_path.read_text(errors="replace")[-max_chars:]
        return "<no prometheus log>"

    async def query(
        self,
        promql: str,
        *,
        at_unix_s: float | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> list[PromSample]:
        """Instant query; an empty list means no series (never a 0 stand-in).

        Without ``session`` each call opens and closes its own; callers that poll pass one
        session for all their queries.
        """
        params = {"query": promql}
        if at_unix_s is not None:
            params["time"] = f"{at_unix_s:.3f}"
        owned = session is None
        client = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with client.get(f"{self.url}/api/v1/query", params=params) as response:
                body = await response.json(content_type=None)
        finally:
            if owned:
                await client.close()
        if body.get("status") != "success":
            raise PrometheusQueryError(
                f"query {promql!r}: {body.get('errorType')}: {body.get('error')}"
            )
        data = body["data"]
        if data["resultType"] == "scalar":
            timestamp, value = data["result"]
            return [PromSample({}, float(timestamp), float(value))]
        if data["resultType"] != "vector":
            raise PrometheusQueryError(
                f"query {promql!r}: expected an instant vector, got {data['resultType']}"
            )
        return [
            PromSample(dict(item["metric"]), float(item["value"][0]), float(item["value"][1]))
            for item in data["result"]
        ]
