"""The committed gRPC code is what ``make proto`` generates from the committed proto, and the
proto is KEDA's (the service names KEDA's operator calls)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.keda.proto import externalscaler_pb2
from tests.support.paths import REPO_ROOT

PROTO_DIR = REPO_ROOT / "adapter" / "keda" / "proto"
GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py")


def test_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates the code")
    target = tmp_path / "adapter" / "keda" / "proto"
    target.mkdir(parents=True)
    shutil.copy(PROTO_DIR / "externalscaler.proto", target)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            "adapter/keda/proto/externalscaler.proto",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stale = [
        name
        for name in GENERATED
        if (target / name).read_bytes() != (PROTO_DIR / name).read_bytes()
    ]
    assert not stale, f"run `make proto`: {stale} differ from what the proto generates"


def test_the_service_is_keda_externalscaler() -> None:
    service = externalscaler_pb2.DESCRIPTOR.services_by_name["ExternalScaler"]
    assert service.full_name == "externalscaler.ExternalScaler"
    assert [m.name for m in service.methods] == [
        "IsActive",
        "StreamIsActive",
        "GetMetricSpec",
        "GetMetrics",
        "StreamMetricSpec",
    ]
    readme = (PROTO_DIR / "README.md").read_text(encoding="utf-8")
    assert "kedacore/keda" in readme and "Apache" in readme
    assert (PROTO_DIR / "LICENSE").read_text(encoding="utf-8").lstrip().startswith("Apache License")
