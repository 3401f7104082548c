"""The image's dependency step, replayed without a container engine: a clean venv of Debian's
python3.11 (the interpreter of the build and runtime images) installs requirements/runtime.lock
with the Dockerfile's flags (hashes required, no dependency resolution, wheels only), loses
pip and setuptools as the image's venv does, and then runs the service from the image's
sources alone (adapter/ and policies/, no loadtest/). The wheels of both image platforms
(amd64 and arm64) must match the lock's hashes.

Needs PyPI (marker ``network``; CI has it): about half a minute with pip's cache warm, a few
minutes cold. Select or skip these with ``-m network`` / ``-m "not network"``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.manifests.lockfile import (
    LOCK,
    LOCK_INSTALL_FLAGS,
    REPO_ROOT,
    VENV_BOOTSTRAP,
    extra_only_names,
    lock_names,
)

pytestmark = [pytest.mark.network, pytest.mark.timeout(900)]

# The venv's interpreter: the one this test suite runs on is Debian's python3.11 (`make
# venv`), which is what debian:12-slim and distroless/python3-debian12 ship.
PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
SERVICE_PACKAGES = ("adapter", "policies")
# Debian 12 has glibc 2.36: pip there accepts manylinux wheels up to manylinux_2_36.
IMAGE_ARCHES = ("x86_64", "aarch64")  # linux/amd64, linux/arm64


@dataclass(frozen=True)
class RuntimeVenv:
    root: Path
    python: Path
    sources: Path  # a copy of adapter/ and policies/ only, like /opt/tritonscale
    pip_check: str  # `pip check` before pip was removed

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m adapter ARGS`` as the image's ENTRYPOINT runs it."""
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(self.sources), "HOME": "/tmp"}
        return subprocess.run(
            [str(self.python), "-m", "adapter", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.sources.parent,  # not the repository: nothing else is importable
            env=env,
        )


def run_checked(command: Sequence[str], what: str, timeout: float = 600) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> RuntimeVenv:
    root = tmp_path_factory.mktemp("runtime") / "venv"
    run_checked([str(PYTHON), "-m", "venv", str(root)], "python3.11 -m venv")
    python = root / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    run_checked([*pip, "install", *LOCK_INSTALL_FLAGS, "-r", str(LOCK)], "installing the lock")
    pip_check = run_checked([*pip, "check"], "pip check")
    run_checked([*pip, "uninstall", "--yes", *VENV_BOOTSTRAP], "removing pip and setuptools")
    sources = root.parent / "tritonscale"
    for package in SERVICE_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, sources / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return RuntimeVenv(root, python, sources, pip_check)


def installed_names(venv: RuntimeVenv) -> set[str]:
    script = (
        "import importlib.metadata as m, json, re; "
        "print(json.dumps(sorted({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() "
        "for d in m.distributions()})))"
    )
    done = subprocess.run(
        [str(venv.python), "-I", "-c", script], capture_output=True, text=True, check=True
    )
    names: list[str] = json.loads(done.stdout)
    return set(names)


def test_the_lock_is_complete(runtime_venv: RuntimeVenv) -> None:
    # --no-deps installed only what the lock names; pip check proves nothing is missing.
    assert "No broken requirements found" in runtime_venv.pip_check


def test_the_runtime_set_is_exactly_the_lock(runtime_venv: RuntimeVenv) -> None:
    installed = installed_names(runtime_venv)
    assert installed == lock_names()
    assert not installed & (extra_only_names() | set(VENV_BOOTSTRAP) | {"wheel"})
    assert not (runtime_venv.root / "bin" / "pip").exists()


def test_the_service_starts_from_the_image_sources(runtime_venv: RuntimeVenv) -> None:
    done = runtime_venv.run("--help")
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "check-config" in done.stdout
    done = runtime_venv.run("serve", "--help")
    assert done.returncode == 0, done.stderr
    assert "--tls-cert-file" in done.stdout


@pytest.mark.parametrize(
    "config", ["manifests/base/config.yaml", "manifests/examples/adapter/config.yaml"]
)
def test_check_config_accepts_the_shipped_configs(runtime_venv: RuntimeVenv, config: str) -> None:
    done = runtime_venv.run("check-config", str(REPO_ROOT / config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{REPO_ROOT / config}: ok")


def test_check_config_reports_a_broken_config(runtime_venv: RuntimeVenv, tmp_path: Path) -> None:
    broken = tmp_path / "config.yaml"
    broken.write_text("scrape:\n  interval_seconds: -1\n", encoding="utf-8")
    done = runtime_venv.run("check-config", str(broken))
    assert done.returncode == 1
    assert "interval_seconds" in done.stderr


def manylinux_platforms(arch: str) -> list[str]:
    """What pip on Debian 12 (glibc 2.36) accepts: manylinux_2_5 .. manylinux_2_36."""
    return [f"manylinux_2_{minor}_{arch}" for minor in range(36, 4, -1)]


@pytest.mark.parametrize("arch", IMAGE_ARCHES)
def test_every_platform_wheel_is_in_the_lock(arch: str, tmp_path: Path) -> None:
    # pip download checks each file against the lock's hashes, as the image build on that
    # architecture will.
    platforms = [word for p in manylinux_platforms(arch) for word in ("--platform", p)]
    run_checked(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
         *LOCK_INSTALL_FLAGS, "--python-version", "3.11", *platforms,
         "--dest", str(tmp_path), "-r", str(LOCK)],
        f"downloading the {arch} wheels",
    )  # fmt: skip
    wheels = list(tmp_path.glob("*.whl"))
    assert len(wheels) == len(lock_names())
    native = [w.name for w in wheels if not w.name.endswith("-none-any.whl")]
    assert native and all(arch in name for name in native), native
