"""The repository stands on its own: no path of a developer's machine, and a fresh clone with
nothing beside it collects every test (.ci/run then runs the whole suite in such a clone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

# assembled, so this file does not match itself
FORBIDDEN = ("../" + "shared", "/" + "work/", "/" + "home/", "/" + "Users/")


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [REPO_ROOT / name for name in listed.split("\0") if name]


def test_no_tracked_file_names_a_machine_path() -> None:
    found = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary (trace archives, images)
        for number, line in enumerate(text.splitlines(), start=1):
            for needle in FORBIDDEN:
                if needle in line:
                    found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()[:120]}")
    assert not found, "\n".join(found)


def test_ci_tests_a_fresh_clone_in_an_empty_directory() -> None:
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert "mktemp -d" in script and "git clone" in script
    assert script.index("git clone") < script.index("make test PYTEST_ARGS")
    assert "make lint typecheck imports" in script


def test_a_fresh_clone_collects_every_test(tmp_path: Path) -> None:
    tracked_files()
    clone = tmp_path / "tritonscale"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-local", str(REPO_ROOT), str(clone)], check=True
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITONSCALE_TRACES", "PYTHONPATH")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "error" not in result.stdout.lower().split("tests collected")[-1]
