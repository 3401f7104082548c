"""A real Triton Inference Server with synthetic models, for load tests and live tests.

Run as a module (it must run under the project venv's Debian python3.11: Triton's Python-backend
stub links against that interpreter's libpython)::

    python -m loadtest.harness.triton_server --http-port 8000 --grpc-port 8001 --metrics-port 8002 \
        --model resnet:50:4 --model bert:20:4

Each ``--model name:service_ms:max_batch`` is a pytriton model whose inference callable sleeps
``service_ms`` milliseconds per *batch* and echoes its input. pytriton gives every model one
instance whose callable runs serially, so a model's capacity is ``max_batch / service_ms``
requests per millisecond (resnet 50 ms, batch 4 -> 80 req/s) and load above that builds a real
queue in Triton's dynamic batcher (``nv_inference_pending_request_count``).

``TritonProcess`` launches the module as a subprocess on free 127.0.0.1 ports and waits until the
server and every model report ready; ``stop()`` then ``start()`` restarts on the same ports
(Triton's cumulative counters start again from zero).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from loadtest.harness.process import ManagedProcess

LOGGER = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_MAX_QUEUE_DELAY_US = 1000
DEFAULT_METRICS_INTERVAL_MS = 1000
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One synthetic model: ``service_ms`` of sleep per batch of up to ``max_batch`` requests."""

    name: str
    service_ms: float
    max_batch: int

    @property
    def capacity_rps(self) -> float:
        """Requests per second one instance serves when every batch is full."""
        return self.max_batch * 1000.0 / self.service_ms

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse ``name:service_ms:max_batch`` (the ``--model`` flag); errors name the flag."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[0]:
            raise ValueError(
                f"--model {text!r}: expected name:service_ms:max_batch, e.g. resnet:50:4"
            )
        name, service_text, batch_text = parts
        try:
            service_ms = float(service_text)
        except ValueError:
            raise ValueError(
                f"--model {text!r}: service_ms {service_text!r} is not a number"
            ) from None
        try:
            max_batch = int(batch_text)
        except ValueError:
            raise ValueError(
                f"--model {text!r}: max_batch {batch_text!r} is not an integer"
            ) from None
        if service_ms <= 0:
            raise ValueError(f"--model {text!r}: service_ms must be > 0")
        if max_batch < 1:
            raise ValueError(f"--model {text!r}: max_batch must be >= 1")
        return cls(name=name, service_ms=service_ms, max_batch=max_batch)

    def flag(self) -> str:
        """The ``--model`` flag value that reproduces this spec."""
        return f"{self.name}:{self.service_ms:g}:{self.max_batch}"


DEMO_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("resnet", service_ms=50.0, max_batch=4),
    ModelSpec("bert", service_ms=20.0, max_batch=4),
)

INPUT_NAME = "INPUT"
OUTPUT_NAME = "OUTPUT"


def _make_infer_fn(service_s: float) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """A pytriton callable: sleep once per batch, echo each request's input."""

    def infer(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        time.sleep(service_s)
        return [{OUTPUT_NAME: request[INPUT_NAME]} for request in requests]

    return infer


def serve(
    models: Sequence[ModelSpec],
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    metrics_interval_ms: int = DEFAULT_METRICS_INTERVAL_MS,
    stop_event: threading.Event | None = None,
) -> None:
    """Start Triton with ``models`` and block until SIGTERM/SIGINT (or ``stop_event``)."""
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    stop = stop_event or threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        LOGGER.info("signal %d received; stopping Triton", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    config = TritonConfig(
        http_address=LOOPBACK,
        http_port=http_port,
        grpc_address=LOOPBACK,
        grpc_port=grpc_port,
        allow_metrics=True,
        allow_cpu_metrics=True,
        allow_gpu_metrics=False,
        metrics_address=LOOPBACK,
        metrics_port=metrics_port,
        metrics_interval_ms=metrics_interval_ms,
        metrics_config=["summary_latencies=true", "histogram_latencies=true"],
        exit_timeout_secs=5,
    )
    # Loopback-only test server: no access token on the statistics/repository endpoints.
    triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[]))
    try:
        for spec in models:
            triton.bind(
                model_name=spec.name,
                infer_func=_make_infer_fn(spec.service_ms / 1000.0),
                inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(1,))],
                outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(1,))],
                config=ModelConfig(
                    batching=True,
                    max_batch_size=spec.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=max_queue_delay_us),
                ),
            )
        triton.run()
        LOGGER.info(
            "Triton ready: http %d grpc %d metrics %d models %s",
            http_port,
            grpc_port,
            metrics_port,
            ", ".join(spec.flag() for spec in models),
        )
        while not stop.wait(timeout=1.0):
            if not triton.is_alive():
                raise RuntimeError("Triton server or a model proxy died; see the log above")
    finally:
        triton.stop()


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.harness.triton_server",
        description="Run Triton with synthetic sleep models (service_ms per batch).",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME:SERVICE_MS:MAX_BATCH",
        help="repeatable; default: resnet:50:4 and bert:20:4",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=DEFAULT_MAX_QUEUE_DELAY_US,
        help="dynamic batcher wait for a fuller batch (microseconds)",
    )
    parser.add_argument("--metrics-interval-ms", type=int, default=DEFAULT_METRICS_INTERVAL_MS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        models = [ModelSpec.parse(text) for text in args.model] if args.model else list(DEMO_MODELS)
    except ValueError as error:
        parser.error(str(error))
    names = [spec.name for spec in models]
    if len(set(names)) != len(names):
        parser.error(f"--model: duplicate model names in {names}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(
        models,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_queue_delay_us=args.max_queue_delay_us,
        metrics_interval_ms=args.metrics_interval_ms,
    )
    return 0


# --------------------------------------------------------------------------- subprocess API


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _http_status(url: str, timeout_s: float = 2.0) -> int | None:
    """HTTP status of GET ``url``; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


class TritonStartError(RuntimeError):
    """Triton did not become ready; the message carries the server log tail."""


_RUNNING: set[TritonProcess] = set()
"""Started and not yet stopped. Each server runs in its own session (so stop() can reap its
process group), which also means a Ctrl-C in the terminal does not reach it: whatever is
still here when the interpreter exits is killed (atexit), so no server outlives its owner."""


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_RUNNING):
        process._kill_group()


class TritonProcess(ManagedProcess):
    """``python -m loadtest.harness.triton_server`` as a subprocess on given (default: free) ports.

    Sync ``start()``/``stop()``, usable as a context manager. ``start()`` after ``stop()``
    reuses the same ports, so a restarted server is at the same URLs with counters at zero.
    The server log goes to ``log_path``; ``log_tail()`` returns its end for error messages.
    """

    def __init__(
        self,
        models: Sequence[ModelSpec] = DEMO_MODELS,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
        metrics_interval_ms: int = DEFAULT_METRICS_INTERVAL_MS,
        python: str = sys.executable,
        log_path: Path | None = None,
    ) -> None:
        self.models = tuple(models)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.max_queue_delay_us = max_queue_delay_us
        self.metrics_interval_ms = metrics_interval_ms
        self.python = python
        self._owns_log = log_path is None
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonscale-triton-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        self.log_path = log_path
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def http_host_port(self) -> str:
        """``host:port`` form that tritonclient's HTTP clients take as ``url``."""
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` form that tritonclient's gRPC clients take as ``url``."""
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_host_port(self) -> str:
        """``host:port`` of /metrics, the form a Prometheus static target takes."""
        return f"{LOOPBACK}:{self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The argv that starts the server module."""
        argv = [
            self.python,
            "-m",
            "loadtest.harness.triton_server",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--max-queue-delay-us",
            str(self.max_queue_delay_us),
            "--metrics-interval-ms",
            str(self.metrics_interval_ms),
        ]
        for spec in self.models:
            argv += ["--model", spec.flag()]
        return argv

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def is_ready(self) -> bool:
        """Server ready and every model ready (HTTP 200 on the KServe v2 health endpoints)."""
        if _http_status(f"{self.http_url}/v2/health/ready") != 200:
            return False
        return all(
            _http_status(f"{self.http_url}/v2/models/{spec.name}/ready") == 200
            for spec in self.models
        )

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> float:
        """Launch and wait until ready; returns seconds taken. Raises TritonStartError."""
        if self.is_running():
            raise RuntimeError("TritonProcess.start(): already running; call stop() first")
        project_root = Path(__file__).resolve().parent.parent
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(project_root), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        started = time.monotonic()
        _RUNNING.add(self)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {' '.join(self.command())}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=project_root,
                start_new_session=True,  # own process group: stop() reaps tritonserver too
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                code = self._process.returncode
                self._kill_group()
                _RUNNING.discard(self)
                raise TritonStartError(
                    f"Triton exited with code {code} before ready "
                    f"(log {self.log_path}):\n{self.log_tail()}{self._hint()}"
                )
            if self.is_ready():
                self.startup_s = time.monotonic() - started
                return self.startup_s
            time.sleep(0.2)
        self._stop_process(timeout_s=DEFAULT_STOP_TIMEOUT_S)
        raise TritonStartError(
            f"Triton not ready after {timeout_s:.0f} s (log {self.log_path}):\n"
            f"{self.log_tail()}{self._hint()}"
        )

    def _hint(self) -> str:
        if "_recursion_count" in self.log_tail():
            return (
                f"\nhint: {self.python} is not the Debian python3.11 that Triton's Python-backend"
                " stub links against; run from the project venv (.venv/bin/python)."
            )
        return ""

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL the process group. Returns exit code.

        A log file this object created is deleted after a clean (code 0) exit and kept otherwise.
        """
        code = self._stop_process(timeout_s)
        _RUNNING.discard(self)
        if code == 0 and self._owns_log:
            self.log_path.unlink(missing_ok=True)
        return code

    def _stop_process(self, timeout_s: float) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                LOGGER.warning("Triton pid %d ignored SIGTERM for %.0f s", process.pid, timeout_s)
        self._kill_group()
        process.wait()
        _RUNNING.discard(self)
        self._wait_ports_free(timeout_s)
        return process.returncode

    def _kill_group(self) -> None:
        """Kill anything left in the server's process group (tritonserver, stubs)."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    def _wait_ports_free(self, timeout_s: float) -> None:
        """Wait until our ports can be bound again so start() can reuse them."""
        deadline = time.monotonic() + timeout_s
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            while True:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind((LOOPBACK, port))
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise RuntimeError(
                                f"port {port} still busy {timeout_s:.0f} s after Triton stopped"
                            ) from None
                time.sleep(0.1)

    def log_tail(self, max_chars: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"<no log at {self.log_path}: {error}>"
        return text[-max_chars:]


if __name__ == "__main__":
    sys.exit(main())
