"""docs/config-reference.md is generated from the typed config: it lists every setting with
its description, and a test fails when the committed file is stale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from adapter.config import Config
from adapter.config_reference import DEFAULT_PATH, _model_of, main, render
from tests.support.paths import REPO_ROOT


def settings(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(section, setting, description) of every leaf setting."""
    for name, info in model.model_fields.items():
        found = _model_of(info.annotation)
        if found is not None:
            section, is_list = found
            yield from settings(section, f"{path}{name}{'[]' if is_list else ''}.")
        else:
            yield path.rstrip("."), name, info.description


def test_the_committed_reference_is_current() -> None:
    assert DEFAULT_PATH == REPO_ROOT / "docs" / "config-reference.md"
    assert main(["--check"]) == 0, "run: python -m adapter.config_reference"


def test_every_setting_has_a_description() -> None:
    missing = [f"{section}.{name}" for section, name, text in settings(Config) if not text]
    assert missing == [], "add Field(..., description=...) in adapter/config.py"


def test_every_setting_is_in_its_section() -> None:
    text = render()
    sections = {
        block.split("`")[1] if block.startswith("`") else "": block
        for block in text.split("\n## ")[1:]
    }
    for section, name, _ in settings(Config):
        assert f"| `{name}` |" in sections[section], f"{section}.{name}"


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "config-reference.md"
    current = render()
    assert "lowest level logged" in current
    stale.write_text(current.replace("lowest level logged", "old words"), encoding="utf-8")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0
