"""``tritonscale check-config`` and ``serve`` at the command line, and ``python -m adapter``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapter.cli import main
from tests.config.test_config import GOOD, write


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(write(tmp_path, GOOD))]) == 0
    assert "ok (2 targets)" in capsys.readouterr().out
    assert main(["check-config", str(write(tmp_path, "scrape: {timeout_seconds: 0}\n"))]) == 1
    assert "tritonscale.yaml:1: scrape.timeout_seconds" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_python_dash_m_adapter_works(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adapter", "check-config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_serve_without_targets_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--listen", "127.0.0.1:0"]) == 2
    assert "no targets" in capsys.readouterr().err


def test_check_config_warns_about_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["check-config", str(empty)]) == 0  # valid: every setting has a default
    captured = capsys.readouterr()
    assert "ok (0 targets)" in captured.out
    assert "warning: the file sets nothing" in captured.err
    assert "no `targets:` and no `discovery:" in captured.err
    assert "--target" in captured.err
    assert main(["check-config", str(write(tmp_path, GOOD))]) == 0
    assert "warning" not in capsys.readouterr().err


def test_every_serve_flag_has_help_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    options = text.split("options:", 1)[1]
    flags = [line.split()[0] for line in options.splitlines() if line.startswith("  -")]
    assert len(flags) >= 12
    for line in options.splitlines():
        if line.startswith("  -"):
            # a flag's help follows on its line (after two spaces) or on the next line
            following = options.split(line, 1)[1].splitlines()[1:2]
            rest = line.strip().split("  ", 1)
            assert len(rest) == 2 or (following and following[0].startswith(" " * 10)), line
