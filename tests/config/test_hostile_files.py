"""Config files built to break the loader: one clear FILE:LINE line, exit 1, bounded memory.

The heavy cases run ``tritonscale check-config`` in a child process limited to 1 GiB of
address space, and read the child's own peak RSS (``wait4``): without the loader's bounds the
alias bomb alone took 3.6 GB.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapter.cli import main
from adapter.config import MAX_CONFIG_BYTES
from tests.support.paths import REPO_ROOT

CHILD_ADDRESS_SPACE = 1024 * 2**20
PEAK_RSS_LIMIT_KB = 300 * 1024  # check-config of a good file peaks near 110 MB


def _alias_bomb() -> str:
    """Nine levels of nine aliases: 350 bytes that stand for 9**9 (387 million) strings."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    return "\n".join(lines) + "\n"


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))


def _check_config_child(path: Path) -> tuple[int, str, int, float]:
    """Run check-config on ``path``: (exit code, stderr, peak RSS in KB, seconds)."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "adapter", "check-config", str(path)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_limit_address_space,
    )
    assert child.stderr is not None
    try:
        stderr = child.stderr.read(1_000_000).decode(errors="replace")
    finally:
        child.stderr.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    return child.returncode, stderr, usage.ru_maxrss, time.monotonic() - started


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        pytest.param("bomb.yaml", _alias_bomb(), ":6: ", id="alias-bomb"),
        pytest.param("deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", ":1: ", id="5000-deep"),
        pytest.param(
            "digits.yaml",
            "scrape:\n  max_response_bytes: " + "9" * 10_000 + "\n",
            ":2: ",
            id="10000-digit-integer",
        ),
    ],
)
def test_hostile_yaml_is_one_line_exit_1_in_bounded_memory(
    tmp_path: Path, name: str, content: str, where: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    code, stderr, peak_kb, seconds = _check_config_child(path)
    assert code == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith(f"{path}{where}"), stderr[:500]
    assert peak_kb < PEAK_RSS_LIMIT_KB, f"peak RSS {peak_kb} KB"
    assert seconds < 60


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            b'listen: "0.0.0.0:6443"\n# caf\xe9\n',
            ":2: not UTF-8 text (byte 0xe9)",
            id="latin-1",
        ),
        pytest.param(b"\xff\xfe\x00\x00", ":1: not UTF-8 text", id="binary"),
        pytest.param(
            b"listen: 2024-02-30\n", ":1: not valid YAML: cannot read this value", id="date"
        ),
        pytest.param(b"? [a, b]\n: 1\n", ":1: not valid YAML", id="unhashable-key"),
        pytest.param(b"a: !!python/object:os.system x\n", ":1: not valid YAML", id="python-tag"),
        pytest.param(b"a: *nowhere\n", ":1: not valid YAML", id="unknown-alias"),
        pytest.param(
            b"a: 1\n" * (MAX_CONFIG_BYTES // 5 + 1), ": larger than 4 MiB", id="over-4-MiB"
        ),
    ],
)
def test_unreadable_content_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "tritonscale.yaml"
    path.write_bytes(content)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}{expected}"), err[:500]
    assert err.count("\n") == 1


def test_a_directory_is_not_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"{tmp_path}: cannot read: Is a directory\n"
